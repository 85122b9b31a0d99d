"""The gRPC layer: thin servicers (proto -> domain call -> proto), auth and error mapping.
The only package of pushreachd that imports grpc."""

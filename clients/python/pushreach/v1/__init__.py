"""Generated code for the pushreach.v1 protos (scripts/gen_protos.py)."""

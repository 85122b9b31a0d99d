"""Push channels: how a push reaches devices. The engine sees only PushChannel."""

"""pushreach: the Python client of the pushreach service.

`pushreach.Client` is an asyncio client over the generated stubs in `pushreach.v1`
(see `pushreach.client` for an example). This package never imports the server.
"""

from .client import Client, FieldViolation, PushreachError, TimeLike, basic_auth, timestamp

__all__ = ["Client", "FieldViolation", "PushreachError", "TimeLike", "basic_auth", "timestamp"]

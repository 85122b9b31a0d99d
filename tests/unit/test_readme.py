"""The README's grpcurl bodies must be valid requests of the methods they are sent to."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor_pool import Default
from google.protobuf.message_factory import GetMessageClass
from pushreach.v1 import admin_pb2, device_pb2, event_pb2, push_pb2, sms_pb2  # noqa: F401  (registers types)

README = Path(__file__).resolve().parents[2] / "README.md"
CALL = re.compile(r"-d '(?P<body>.*?)'\s*\\?\s*127\.0\.0\.1:50051 (?P<method>[\w.]+/\w+)", re.S)


def _calls() -> list[tuple[str, str]]:
    return [(m["method"], m["body"]) for m in CALL.finditer(README.read_text())]


def test_readme_has_the_walk_through() -> None:
    methods = {m for m, _ in _calls()}
    assert {"pushreach.v1.DeviceService/BindPhone", "pushreach.v1.PushService/Push",
            "pushreach.v1.EventService/ReportEvent"} <= methods


@pytest.mark.parametrize(("method", "body"), _calls())
def test_readme_body_parses_as_the_request(method: str, body: str) -> None:
    if method.startswith("grpc.health"):
        pytest.skip("standard service")
    service_name, rpc = method.split("/")
    service = Default().FindServiceByName(service_name)
    request_cls = GetMessageClass(service.methods_by_name[rpc].input_type)
    json_format.Parse(body.replace("9f1c...", "9f1c"), request_cls())

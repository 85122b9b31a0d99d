"""deploy/kubernetes/ names only settings that exist and health names the server serves."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from pushreachd.api.server import LIVENESS
from pushreachd.config import Settings

K8S = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"


def test_every_pushreach_variable_in_the_manifests_is_a_setting() -> None:
    settings = {f"PUSHREACH_{f.name.upper()}" for f in dataclasses.fields(Settings)}
    named = set()
    for path in K8S.glob("*.yaml"):
        named |= set(re.findall(r"\b(PUSHREACH_[A-Z0-9_]+)", path.read_text()))
    assert named and named <= settings, sorted(named - settings)


def test_the_probes_read_grpc_health_names_the_server_sets() -> None:
    text = (K8S / "deployment.yaml").read_text()
    services = re.findall(r"grpc: \{port: 50051(?:, service: (\w+))?\}", text)
    assert len(services) == 3, "readiness, liveness and startup probes use grpc.health.v1"
    assert set(services) == {"", LIVENESS}, "readiness reads the overall status, liveness its own name"
    kustomized = re.findall(r"- (\S+\.yaml)", (K8S / "kustomization.yaml").read_text())
    assert sorted(kustomized) == sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")

"""The Grafana dashboard and the Prometheus alert rules in deploy/ install as they are: promtool
accepts the rules and their unit tests pass, the dashboard is what its builder makes, and every
series either names is exported by a running server."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.harness import start_service, test_settings

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "pushreach.json"
BUILDER = ROOT / "deploy" / "grafana" / "build_dashboard.py"
SERIES = re.compile(r"\bpushreach_[a-z0-9_]+")
SUFFIXES = ("_bucket", "_sum", "_count", "_created")


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return found


def test_promtool_accepts_the_rules() -> None:
    done = subprocess.run([promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    done = subprocess.run(
        [promtool(), "test", "rules", ALERTS_TEST.name], cwd=ALERTS_TEST.parent, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_is_unit_tested() -> None:
    alerts = set(re.findall(r"- alert: (\w+)", ALERTS.read_text()))
    tested = set(re.findall(r"alertname: (\w+)", ALERTS_TEST.read_text()))
    assert alerts and alerts == tested


def test_the_committed_dashboard_is_what_the_builder_makes(tmp_path: Path) -> None:
    out = tmp_path / "dashboard.json"
    subprocess.run([sys.executable, str(BUILDER), str(out)], check=True)
    assert json.loads(out.read_text()) == json.loads(DASHBOARD.read_text()), "run deploy/grafana/build_dashboard.py"


def test_dashboard_panels_have_queries_and_do_not_overlap() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    cells: set[tuple[int, int]] = set()
    for p in panels:
        if p["type"] != "row":
            assert p["targets"] and all(t["expr"] for t in p["targets"]), p["title"]
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps another panel"
                cells.add((x, y))


async def test_every_series_the_dashboard_and_rules_name_is_exported(tmp_path: Path) -> None:
    running = await start_service(test_settings(tmp_path, metrics_listen="127.0.0.1:0"))
    try:
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{running.service.metrics_port}/metrics")).text
    finally:
        await running.close()
        await running.service.stop()
    families = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    assert "pushreach_rpc_requests_total" in families  # the format this test reads

    def exported(name: str) -> bool:
        return name in families or any(name.endswith(s) and name[: -len(s)] in families for s in SUFFIXES)

    named = set(SERIES.findall(DASHBOARD.read_text())) | set(SERIES.findall(ALERTS.read_text()))
    missing = sorted(n for n in named if not exported(n))
    assert named and not missing, f"named in deploy/ but not in /metrics: {missing}"

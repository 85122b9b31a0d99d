"""docs/DEVICES.md's curl examples, run as written against a real server: each answers 200
with the outcome the doc promises, and the reports reach the store."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from pushreach.v1 import device_pb2

from tests.harness import sms_push, start_service, test_settings
from tests.integration.test_device_reports_e2e import delivered_receipts

DOC = Path(__file__).resolve().parents[2] / "docs" / "DEVICES.md"


def curl_examples() -> list[str]:
    text = DOC.read_text()
    section = text.split("## With curl", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


async def test_the_curl_examples_work_as_written(tmp_path: Path) -> None:
    if not (shutil.which("curl") and shutil.which("openssl")):
        if os.environ.get("CI"):
            pytest.fail("curl and openssl are needed (.ci/run installs them)")
        pytest.skip("needs curl and openssl")
    examples = curl_examples()
    assert len(examples) == 5
    running = await start_service(test_settings(tmp_path, http_listen="127.0.0.1:0"))
    try:
        app = await running.new_app()
        bound = await app.bind("a3f1" * 16, "+8613800000001")
        pushed = await app.push.Push(sms_push(["a3f1" * 16], delay=60), metadata=app.metadata)
        receipt = (await delivered_receipts(running, pushed.push_id))["a3f1" * 16]
        unreported = await app.push.Push(sms_push(["a3f1" * 16], delay=60), metadata=app.metadata)
        env = dict(
            os.environ,
            PUSHREACH_URL=f"http://127.0.0.1:{running.service.http_port}",
            RECEIPT=receipt,
            PUSH_ID=unreported.push_id,
            ACCESS_ID=app.access_id,
            TOKEN="a3f1" * 16,
            DEVICE_KEY=bound.device_key,
        )
        answers = []
        for script in examples:
            proc = await asyncio.create_subprocess_exec(
                "bash", "-euo", "pipefail", "-c", script, env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, (script, err.decode())
            answers.append(json.loads(out))
        assert answers[0] == {"outcome": "ACCEPTED", "push_id": pushed.push_id}
        assert answers[1] == {"outcome": "ACCEPTED", "push_id": pushed.push_id}
        assert [r["outcome"] for r in answers[2]["results"]] == ["DUPLICATE", "DUPLICATE"]
        assert answers[3] == {"outcome": "ACCEPTED", "push_id": unreported.push_id}  # signed, no receipt
        assert answers[4] == {"outcome": "ACCEPTED"}
        got = await app.device.GetDevice(device_pb2.GetDeviceRequest(token="a3f1" * 16), metadata=app.metadata)
        assert got.device.notification_state == device_pb2.NOTIFICATION_STATE_DISABLED
    finally:
        await running.close()
        await running.service.stop()

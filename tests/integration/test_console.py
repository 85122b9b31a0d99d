"""The console on a real server: its JSON API (sessions, CSRF, isolation, masking) over HTTP,
and the pages in Debian's chromium driven by playwright-core (console/tests/browser.mjs)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
from pathlib import Path

import httpx
import pytest
from pushreach import basic_auth
from pushreach.v1 import event_pb2, push_pb2, sms_pb2

from tests.harness import (
    ADMIN_TOKEN,
    Caller,
    Running,
    sms_push,
    start_service,
    test_settings,
    wait_done,
)
from tests.integration.test_fallback_e2e import report

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = ROOT / "console"
STATIC = ROOT / "server" / "pushreachd" / "http" / "console_static"
PHONES = ["+8613800000001", "+8613800000002", "+8613800000003"]


@pytest.fixture
async def running(tmp_path: Path) -> Running:  # type: ignore[misc]
    r = await start_service(test_settings(tmp_path, http_listen="127.0.0.1:0"))
    yield r
    await r.close()
    await r.service.stop()


def url(running: Running, path: str = "") -> str:
    return f"http://127.0.0.1:{running.service.http_port}/console/{path}"


async def scenario(app: Caller) -> dict[str, str]:
    """Three phones; push A (NOT_ARRIVED) to all three, tok0 arrives, the others get an SMS;
    push B waits an hour (pending fallback)."""
    for i, phone in enumerate(PHONES):
        await app.bind(f"tok{i}", phone)
    a = await app.push.Push(sms_push(["tok0", "tok1", "tok2"], delay=1), metadata=app.metadata)
    await report(app, a.push_id, "tok0", event_pb2.EVENT_TYPE_ARRIVED)
    await wait_done(app, a.push_id)
    b = await app.push.Push(sms_push(["tok0", "tok1"], delay=3600), metadata=app.metadata)
    return {"a": a.push_id, "b": b.push_id}


async def sign_in(client: httpx.AsyncClient, running: Running, **body: str) -> httpx.Response:
    return await client.post(url(running, "api/session"), json=body)


async def test_api_sessions_csrf_and_the_domain_figures(running: Running) -> None:
    app = await running.new_app("console")
    ids = await scenario(app)
    access_id, secret_key = base64.b64decode(dict(app.metadata)["authorization"].split()[1]).decode().split(":", 1)
    async with httpx.AsyncClient() as client:
        assert (await client.get(url(running, "api/overview"))).status_code == 401
        wrong = await sign_in(client, running, access_id=access_id, secret_key="nope")
        assert wrong.status_code == 401 and "pushreach_console" not in wrong.cookies
        missing = await sign_in(client, running, access_id=access_id)
        assert missing.status_code == 400 and missing.json()["error"]["field"] == "secret_key"

        signed = await sign_in(client, running, access_id=access_id, secret_key=secret_key)
        assert signed.status_code == 200
        cookie = signed.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console/" in cookie
        csrf = signed.json()["csrf"]

        overview = (await client.get(url(running, "api/overview"), params={"interval": "hour"})).json()
        stats = await app.sms.GetStatistics(sms_pb2.GetStatisticsRequest(), metadata=app.metadata)
        s = overview["statistics"]
        assert (s["push_count"], s["target_count"], s["arrived_count"]) == (
            stats.push_count, stats.target_count, stats.arrived_count
        )
        assert s["sms"]["sent"] == stats.sms.sent == 2 and s["pending_fallback_count"] == 1
        # The same status mapping as GetStatistics, field by field.
        assert s["sms"] == {f.name: getattr(stats.sms, f.name) for f in stats.sms.DESCRIPTOR.fields}
        assert sum(b["push_count"] for b in overview["buckets"]) == 2

        listed = (await client.get(url(running, "api/pushes"))).json()
        assert [p["push_id"] for p in listed["pushes"]] == [ids["b"], ids["a"]]
        push = (await client.get(url(running, f"api/pushes/{ids['a']}"))).json()
        assert push["funnel"]["sms_sent_count"] == 2 and len(push["targets"]) == 3
        sms = (await client.get(url(running, "api/sms"), params={"status": ["SENT"]})).json()
        assert len(sms["records"]) == 2
        text = json.dumps([push, sms])
        assert not any(p in text for p in PHONES), "phones are masked"
        bad = await client.get(url(running, "api/sms"), params={"status": "SENDING_TWICE"})
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "status[0]"

        # Changing state needs the CSRF token, even with the cookie.
        refused = await client.post(url(running, f"api/pushes/{ids['b']}/cancel"))
        assert refused.status_code == 403
        got = await app.push.GetPush(push_pb2.GetPushRequest(push_id=ids["b"]), metadata=app.metadata)
        assert got.push.fallback_state == push_pb2.FALLBACK_STATE_PENDING
        done = await client.post(url(running, f"api/pushes/{ids['b']}/cancel"), headers={"X-CSRF-Token": csrf})
        assert done.json() == {"fallback_state": "CANCELLED"}

        # Another app's push is not found, as over gRPC; a forged cookie is no session.
        other = await running.new_app("other")
        foreign = await other.push.Push(sms_push(["x"], delay=3600), metadata=other.metadata)
        assert (await client.get(url(running, f"api/pushes/{foreign.push_id}"))).status_code == 404
        client.cookies.set("pushreach_console", signed.cookies["pushreach_console"][:-2] + "AA", path="/console/")
        assert (await client.get(url(running, "api/session"))).status_code == 401


async def test_rotating_the_secret_ends_sessions_and_admins_choose_the_app(running: Running) -> None:
    app_record, secret = await running.service.apps.create_app("rotating")
    async with httpx.AsyncClient() as client:
        assert (await sign_in(client, running, access_id=app_record.access_id, secret_key=secret)).status_code == 200
        assert (await client.get(url(running, "api/session"))).status_code == 200
        await running.service.apps.rotate_secret(app_record.access_id)
        assert (await client.get(url(running, "api/session"))).status_code == 401

    async with httpx.AsyncClient() as admin:
        assert (await sign_in(admin, running, admin_token="wrong")).status_code == 401
        assert (await sign_in(admin, running, admin_token=ADMIN_TOKEN)).status_code == 200
        apps = (await admin.get(url(running, "api/apps"))).json()["apps"]
        assert app_record.access_id in [a["access_id"] for a in apps]
        need = await admin.get(url(running, "api/pushes"))
        assert need.status_code == 400 and need.json()["error"]["field"] == "app"
        chosen = await admin.get(url(running, "api/pushes"), params={"app": app_record.access_id})
        assert chosen.status_code == 200 and chosen.json()["pushes"] == []


def browser_tools() -> tuple[str, Path]:
    chromium = shutil.which("chromium")
    node = shutil.which("node")
    ready = chromium and node and (CONSOLE / "node_modules" / "playwright-core").is_dir() and (STATIC / "app.js").is_file()
    if not ready:
        if os.environ.get("CI") == "true":
            pytest.fail("the browser test needs chromium, node, `make console` (.ci/run installs them)")
        pytest.skip("needs Debian's chromium and `make console`")
    return str(chromium), Path(str(node))


async def test_the_console_in_a_real_browser(running: Running, tmp_path: Path) -> None:
    chromium, node = browser_tools()
    app_record, secret = await running.service.apps.create_app("browser")
    app = Caller(running.channel, basic_auth(app_record.access_id, secret), app_record.access_id)
    ids = await scenario(app)
    stats = await app.sms.GetStatistics(sms_pb2.GetStatisticsRequest(), metadata=app.metadata)
    shots = Path(os.environ.get("CONSOLE_SCREENSHOTS", tmp_path))
    spec = {
        "url": url(running),
        "chromium": chromium,
        "access_id": app_record.access_id,
        "secret_key": secret,
        "expected": {
            "push_count": stats.push_count,
            "target_count": stats.target_count,
            "sms_sent": stats.sms.sent,
            "pending_fallback_count": stats.pending_fallback_count,
            "arrival_rate": f"{100 * stats.arrival_rate:.1f}%",
        },
        "push_count": 2,
        "pending_push_id": ids["b"],
        "pending_targets": 2,
        "sms_records": 2,
        "full_phone": PHONES[1],
        "device_token": "tok1",
        "screenshots": str(shots),
    }
    # The server answers from this event loop: the browser runs beside it, not blocking it.
    proc = await asyncio.create_subprocess_exec(
        str(node),
        str(CONSOLE / "tests" / "browser.mjs"),
        env={**os.environ, "CONSOLE_TEST": json.dumps(spec)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=180)
    assert proc.returncode == 0, (out + err).decode()
    got = await app.push.GetPush(push_pb2.GetPushRequest(push_id=ids["b"]), metadata=app.metadata)
    assert got.push.fallback_state == push_pb2.FALLBACK_STATE_CANCELLED  # the browser's cancel reached the store
    print(out.decode())  # the pages' load times


async def test_hostile_queries_and_bodies_never_answer_500(running: Running) -> None:
    """Hypothesis-made query strings and sign-in bodies: a clear 4xx, never a 500."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    app_record, secret = await running.service.apps.create_app("hostile")
    paths = ["api/overview", "api/pushes", "api/pushes/x", "api/sms", "api/devices/x", "api/apps"]
    text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
    async with httpx.AsyncClient() as client:
        assert (await sign_in(client, running, access_id=app_record.access_id, secret_key=secret)).status_code == 200

        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
        @given(path=st.sampled_from(paths), params=st.dictionaries(
            st.sampled_from(["start", "end", "interval", "time_zone", "query", "page_token", "page_size",
                             "status", "push_id", "phone_number", "app"]), text, max_size=5))
        def queries(path: str, params: dict[str, str]) -> None:
            answers.append((path, params))

        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
        @given(body=st.recursive(st.none() | st.booleans() | st.integers() | text,
                                 lambda c: st.lists(c, max_size=3) | st.dictionaries(text, c, max_size=3), max_leaves=6))
        def bodies(body: object) -> None:
            sign_ins.append(body)

        answers: list[tuple[str, dict[str, str]]] = []
        sign_ins: list[object] = []
        queries()
        bodies()
        for path, params in answers:
            got = await client.get(url(running, path), params=params)
            assert got.status_code < 500, (path, params, got.text)
        for body in sign_ins:
            got = await client.post(url(running, "api/session"), json=body)
            assert got.status_code < 500, (body, got.text)

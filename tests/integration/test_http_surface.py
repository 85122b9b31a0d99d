"""The HTTP surface's shared parts on a real server: one error shape, size limits, budgets
with Retry-After, app authentication shared with gRPC, metrics, health and a graceful stop."""

from __future__ import annotations

import asyncio
import base64
import datetime
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from pushreachd.errors import InvalidArgument, NotFound
from pushreachd.http import (
    Fields,
    Violations,
    authenticate_app,
    check_address_budget,
    check_key_budget,
    json_response,
    read_json,
)
from pushreachd.wiring import Overrides

from tests.fakes import FakeClock
from tests.harness import Running, start_service, test_settings


class Probe:
    """A part as another engineer would add one (see http/__init__.py)."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    def mount(self, app: web.Application) -> None:
        app.router.add_post("/test/echo", self.echo)
        app.router.add_get("/test/whoami", self.whoami)
        app.router.add_get("/test/missing", self.missing)
        app.router.add_get("/test/boom", self.boom)
        app.router.add_get("/test/slow", self.slow)
        app.router.add_post("/test/device", self.device)
        app.router.add_post("/test/raw", self.raw)
        sub = web.Application()
        sub.router.add_get("/ping", self.ping)
        app.add_subapp("/sub/", sub)

    async def echo(self, request: web.Request) -> web.Response:
        v = Violations()
        f = Fields.root(await read_json(request, 1024), v)
        name = f.string("name", required=True, max_length=8)
        when = f.time("when")
        items = f.objects("items", max_items=2)
        for item in items:
            item.integer("n", required=True, low=1, high=9)
        v.raise_if_any()
        return json_response({"name": name, "when": when})

    async def whoami(self, request: web.Request) -> web.Response:
        app = await authenticate_app(request)
        return json_response({"access_id": app.access_id})

    async def missing(self, request: web.Request) -> web.Response:
        raise NotFound("thing 'x' not found")

    async def boom(self, request: web.Request) -> web.Response:
        raise RuntimeError("secret detail that must not leak")

    async def slow(self, request: web.Request) -> web.Response:
        self.entered.set()
        await self.release.wait()
        return json_response({"done": True})

    async def device(self, request: web.Request) -> web.Response:
        check_address_budget(request)
        check_key_budget(request, ("token", "t1"))
        return json_response({})

    async def raw(self, request: web.Request) -> web.Response:
        return json_response({"bytes": len(await request.read())})

    async def ping(self, request: web.Request) -> web.Response:
        if request.query.get("bad"):
            raise InvalidArgument.one("bad", "not allowed")
        return json_response({"pong": True})


async def _serve(tmp_path: Path, clock: FakeClock | None = None, **settings: object) -> tuple[Running, Probe, str]:
    probe = Probe()
    overrides = Overrides(clock=clock) if clock is not None else None
    from pushreachd.wiring import Service

    service = Service(test_settings(tmp_path, http_listen="127.0.0.1:0", **settings), overrides)
    service.http_parts.append(probe)
    await service.start()
    return Running(service), probe, f"http://127.0.0.1:{service.http_port}"


@pytest.fixture
async def served(tmp_path: Path):  # type: ignore[no-untyped-def]
    running, probe, base = await _serve(tmp_path)
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        yield running, probe, client
    await running.close()
    await running.service.stop()


def _epoch(*parts: int) -> float:
    return datetime.datetime(*parts, tzinfo=datetime.timezone.utc).timestamp()


def _error(response: httpx.Response) -> dict[str, object]:
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert {"code", "message", "field"} <= set(body["error"])
    return body["error"]


async def test_http_is_off_by_default(tmp_path: Path) -> None:
    running = await start_service(test_settings(tmp_path))
    try:
        assert running.service.http_server is None and running.service.http_port == 0
    finally:
        await running.close()
        await running.service.stop()


async def test_every_failure_answers_the_same_json_shape(served) -> None:  # type: ignore[no-untyped-def]
    _, _, client = served
    ok = await client.post("/test/echo", json={"name": "a", "when": "2026-12-02T09:30:00+08:00"})
    assert ok.status_code == 200 and ok.json() == {"name": "a", "when": _epoch(2026, 12, 2, 1, 30)}

    bad = await client.post("/test/echo", json={"name": 5, "items": [{"n": 0}, "x"]})
    assert bad.status_code == 400
    err = _error(bad)
    assert err["code"] == "INVALID_ARGUMENT" and err["field"] == "name"
    assert [v["field"] for v in err["violations"]] == ["name", "items[1]", "items[0].n"]

    when = _error(await client.post("/test/echo", json={"name": "a", "when": "2026-12-02 09:30"}))
    assert when["field"] == "when"
    not_json = await client.post("/test/echo", content=b"{nope", headers={"content-type": "application/json"})
    assert not_json.status_code == 400 and _error(not_json)["message"].endswith("not valid JSON")
    not_object = await client.post("/test/echo", json=[1, 2])
    assert not_object.status_code == 400 and "JSON object" in _error(not_object)["message"]
    empty = await client.post("/test/echo")
    assert empty.status_code == 400

    big = await client.post("/test/echo", content=b"{" + b" " * 2000 + b"}")
    assert big.status_code == 413 and _error(big)["code"] == "PAYLOAD_TOO_LARGE"

    nf = await client.get("/test/missing")
    assert nf.status_code == 404 and _error(nf)["code"] == "NOT_FOUND"
    route = await client.get("/no/such/route")
    assert route.status_code == 404 and _error(route)["code"] == "NOT_FOUND"
    method = await client.get("/test/echo")
    assert method.status_code == 405 and _error(method)["code"] == "METHOD_NOT_ALLOWED"
    assert "POST" in method.headers["allow"]

    boom = await client.get("/test/boom")
    assert boom.status_code == 500
    err = _error(boom)
    assert err["code"] == "INTERNAL" and "secret" not in boom.text

    sub = await client.get("/sub/ping", params={"bad": "1"})
    assert sub.status_code == 400 and _error(sub)["field"] == "bad"  # the root's middleware covers sub-apps
    assert (await client.get("/sub/ping")).json() == {"pong": True}


async def test_the_global_body_limit_is_http_max_body_bytes(tmp_path: Path) -> None:
    running, _, base = await _serve(tmp_path, http_max_body_bytes=2048)
    try:
        async with httpx.AsyncClient(base_url=base) as client:
            # A route that reads the body with aiohttp's own reader is held to the app's limit.
            assert (await client.post("/test/raw", content=b"x" * 2000)).json() == {"bytes": 2000}
            huge = await client.post("/test/raw", content=b"x" * 4096)
            assert huge.status_code == 413 and _error(huge)["code"] == "PAYLOAD_TOO_LARGE"
    finally:
        await running.close()
        await running.service.stop()


async def test_app_credentials_work_as_on_grpc(served) -> None:  # type: ignore[no-untyped-def]
    running, _, client = served
    app, secret = await running.service.apps.create_app("web")
    good = base64.b64encode(f"{app.access_id}:{secret}".encode()).decode()
    me = await client.get("/test/whoami", headers={"Authorization": f"Basic {good}"})
    assert me.status_code == 200 and me.json() == {"access_id": app.access_id}
    for header in ({}, {"Authorization": "Basic !!!"}, {"Authorization": f"Basic {good[:-4]}AAAA"}):
        refused = await client.get("/test/whoami", headers=header)
        assert refused.status_code == 401 and _error(refused)["code"] == "UNAUTHENTICATED"


async def test_budgets_answer_429_with_retry_after(tmp_path: Path) -> None:
    clock = FakeClock()
    running, _, base = await _serve(tmp_path, clock, http_address_rate_limit=2, http_token_rate_limit=100)
    try:
        async with httpx.AsyncClient(base_url=base) as client:
            assert [(await client.post("/test/device")).status_code for _ in range(2)] == [200, 200]
            limited = await client.post("/test/device")
            assert limited.status_code == 429 and _error(limited)["code"] == "RESOURCE_EXHAUSTED"
            assert limited.headers["retry-after"] == "1"
            await clock.advance(1.0)
            assert (await client.post("/test/device")).status_code == 200
    finally:
        await running.close()
        await running.service.stop()

    clock = FakeClock()
    running, _, base = await _serve(tmp_path, clock, http_address_rate_limit=0, http_token_rate_limit=0.5)
    try:
        async with httpx.AsyncClient(base_url=base) as client:
            codes = [(await client.post("/test/device")).status_code for _ in range(6)]
            assert codes == [200] * 5 + [429]  # burst: 10 s worth of the token's budget
            limited = await client.post("/test/device")
            assert limited.headers["retry-after"] == "2" and "device" in _error(limited)["message"]
    finally:
        await running.close()
        await running.service.stop()


async def test_metrics_count_each_endpoint_and_status(tmp_path: Path) -> None:
    running, _, base = await _serve(tmp_path, metrics_listen="127.0.0.1:0")
    try:
        async with httpx.AsyncClient(base_url=base) as client:
            await client.post("/test/echo", json={"name": "a"})
            await client.post("/test/echo", json={})
            await client.get("/no/such/thing/zqxjvw")
        text = running.service.metrics.exposition().decode()
        assert 'pushreach_http_requests_total{code="200",endpoint="/test/echo"} 1.0' in text
        assert 'pushreach_http_requests_total{code="400",endpoint="/test/echo"} 1.0' in text
        assert 'pushreach_http_requests_total{code="404",endpoint="unmatched"} 1.0' in text
        assert "zqxjvw" not in text  # raw paths never become labels
    finally:
        await running.close()
        await running.service.stop()


async def test_health_and_a_graceful_stop(tmp_path: Path) -> None:
    running, probe, base = await _serve(tmp_path)
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        health = await client.get("/healthz")
        assert health.status_code == 200 and health.json() == {"status": "SERVING"}
        await running.service.grpc.not_serving()  # e.g. a background task died: both doors say so
        assert (await client.get("/healthz")).status_code == 503
        await running.service.grpc._set_all(1)  # SERVING again
        assert (await client.get("/healthz")).status_code == 200

        slow = asyncio.create_task(client.get("/test/slow"))
        await asyncio.wait_for(probe.entered.wait(), 10)
        await running.close()
        stopping = asyncio.create_task(running.service.stop())
        for _ in range(100):  # health turns first, before requests in flight finish
            if not running.service.http_context.serving:
                break
            await asyncio.sleep(0.01)
        assert not running.service.http_context.serving
        probe.release.set()
        answer = await asyncio.wait_for(slow, 10)
        assert answer.status_code == 200 and answer.json() == {"done": True}
        await asyncio.wait_for(stopping, 10)
        with pytest.raises(httpx.TransportError):
            await client.get("/healthz")

"""vivo Push emulator: /message/auth, /message/send, /message/saveListPayload, /message/pushToList.

Auth checks the MD5 sign of appId + appKey + timestamp + appSecret (result 10200 when it
does not match: the emulator's code, vivo documents its own); sends check the `authToken`
header (result 10000 when unknown or expired) and that the body's appId is the token's
(10094). Flow control is HTTP 503; an exhausted daily total result 10070. Regids marked
invalid: a single send answers 10302, pushToList lists them in `invalidUsers` (status 1).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ..vivo import sign
from .android import EmulatorState

VENDOR = "vivo"


def _answer(result: int, desc: str, **extra: Any) -> web.Response:
    return web.json_response({"result": result, "desc": desc, **extra})


def add_routes(app: web.Application, state: EmulatorState) -> None:
    saved: dict[str, dict[str, Any]] = {}

    async def body_of(request: web.Request) -> dict[str, Any] | None:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    async def auth(request: web.Request) -> web.Response:
        state.auth_requests[VENDOR] += 1
        body = await body_of(request) or {}
        app_id, app_key, timestamp = str(body.get("appId", "")), str(body.get("appKey", "")), str(body.get("timestamp", ""))
        known = state.app(VENDOR, app_id)
        if known is None or known.get("app_key") != app_key:
            return _answer(10101, "appId or appKey not valid")
        if body.get("sign") != sign(app_id, app_key, timestamp, known.get("app_secret", "")):
            return _answer(10200, "sign not valid")
        return _answer(0, "success", authToken=state.issue(VENDOR, app_id, 24 * 3600))

    def check(request: web.Request, body: dict[str, Any] | None) -> tuple[web.Response | None, str]:
        status, app_id = state.auth(VENDOR, request.headers.get("authToken", ""))
        if status != "ok":
            return _answer(10000, "authToken not valid"), ""
        if body is None:
            return _answer(10050, "body not valid"), ""
        if str(body.get("appId", "")) != app_id:
            return _answer(10094, "appId does not match the authToken"), ""
        return None, app_id

    def fault() -> web.Response | None:
        f = state.next_fault(VENDOR)
        if f == "flow_control":
            return web.Response(status=503, text="flow control")
        if f == "quota":
            return _answer(10070, "total sends exceed the daily limit")
        return None

    def classification(m: dict[str, Any]) -> dict[str, Any]:
        return {"classification": m.get("classification"), "category": m.get("category", ""), "timeToLive": m.get("timeToLive")}

    async def send(request: web.Request) -> web.Response:
        body = await body_of(request)
        refused, app_id = check(request, body)
        if refused is not None:
            return refused
        assert body is not None
        if (answer := fault()) is not None:
            return answer
        if not body.get("title") or not body.get("content") or not body.get("regId"):
            return _answer(10050, "title, content and regId are required")
        ok, _ = state.deliver(VENDOR, app_id, [str(body["regId"])], body["title"], body["content"],
                              {str(k): str(v) for k, v in (body.get("clientCustomMap") or {}).items()}, classification(body))
        if not ok:
            return _answer(10302, "regId not valid")
        return _answer(0, "success", taskId=state.next_id("vt"))

    async def save_list_payload(request: web.Request) -> web.Response:
        body = await body_of(request)
        refused, _ = check(request, body)
        if refused is not None:
            return refused
        assert body is not None
        if not body.get("title") or not body.get("content"):
            return _answer(10050, "title and content are required")
        task_id = state.next_id("vt")
        saved[task_id] = body
        return _answer(0, "success", taskId=task_id)

    async def push_to_list(request: web.Request) -> web.Response:
        body = await body_of(request)
        refused, app_id = check(request, body)
        if refused is not None:
            return refused
        assert body is not None
        if (answer := fault()) is not None:
            return answer
        message = saved.get(str(body.get("taskId", "")))
        regs = body.get("regIds")
        if message is None:
            return _answer(10051, "taskId not valid")
        if not isinstance(regs, list) or not 2 <= len(regs) <= 1000:
            return _answer(10052, "regIds must hold 2 to 1,000 regIds")
        _, bad = state.deliver(VENDOR, app_id, [str(r) for r in regs], message["title"], message["content"],
                               {str(k): str(v) for k, v in (message.get("clientCustomMap") or {}).items()}, classification(message))
        return _answer(0, "success", taskId=body["taskId"], invalidUsers=[{"status": 1, "userid": r} for r in bad])

    app.router.add_post("/message/auth", auth)
    app.router.add_post("/message/send", send)
    app.router.add_post("/message/saveListPayload", save_list_payload)
    app.router.add_post("/message/pushToList", push_to_list)

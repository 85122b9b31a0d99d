"""Huawei Push Kit emulator: POST /oauth2/v3/token and POST /v1/{app_id}/messages:send.

Answers as Huawei documents: {"code", "msg", "requestId"} with 80000000 success, 80100000
partial success (`msg` a JSON string with `illegal_tokens`), 80300007 all tokens invalid,
80300010 token count out of range, 80300008 message over 4 KB, 80200001 OAuth failure,
80200003 OAuth token expired; HTTP 503 for flow control. A wrong client secret at the token
endpoint gets HTTP 400 {"error": 1101, "error_description": "invalid client"}.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .android import EmulatorState, parse_data

VENDOR = "hms"
MAX_BODY = 4096


def add_routes(app: web.Application, state: EmulatorState) -> None:
    async def token(request: web.Request) -> web.Response:
        state.auth_requests[VENDOR] += 1
        form = await request.post()
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": 1102, "error_description": "unsupported grant_type"}, status=400)
        client_id = str(form.get("client_id", ""))
        known = state.app(VENDOR, client_id)
        if known is None or known.get("client_secret") != form.get("client_secret"):
            return web.json_response({"error": 1101, "error_description": "invalid client"}, status=400)
        return web.json_response(
            {"access_token": state.issue(VENDOR, client_id), "expires_in": 3600, "token_type": "Bearer"}
        )

    async def send(request: web.Request) -> web.Response:
        app_id = request.match_info["app_id"]
        request_id = state.next_id("1690")
        auth = request.headers.get("Authorization", "")
        status, token_app = state.auth(VENDOR, auth.removeprefix("Bearer ").strip()) if auth.startswith("Bearer ") else ("unknown", "")
        if status == "expired" and token_app == app_id:
            return _answer("80200003", "Oauth Token expired", request_id, 401)
        if status != "ok" or token_app != app_id:
            return _answer("80200001", "Oauth authentication error", request_id, 401)
        fault = state.next_fault(VENDOR)
        if fault == "flow_control":
            return web.Response(status=503, text="flow control")
        if fault == "quota":  # emulator's stand-in: Huawei caps marketing messages per device per day
            return _answer("80300013", "push quota exhausted for this category", request_id)
        raw = await request.read()
        try:
            body = json.loads(raw)
            message = body["message"]
            tokens = message["token"]
            notification = message["android"]["notification"]
            title, text = notification["title"], notification["body"]
        except (ValueError, KeyError, TypeError):
            return _answer("80100003", "Illegal payload", request_id, 400)
        if not isinstance(tokens, list) or not 1 <= len(tokens) <= 1000:
            return _answer("80300010", "the number of tokens is out of range", request_id, 400)
        if len(raw) - len(json.dumps(tokens)) > MAX_BODY:
            return _answer("80300008", "the message body size exceeds the default value", request_id, 400)
        android: dict[str, Any] = message["android"]
        classification = {
            "category": android.get("category", ""),
            "importance": notification.get("importance", ""),
            "channel_id": notification.get("channel_id", ""),
            "ttl": android.get("ttl", ""),
        }
        ok, bad = state.deliver(VENDOR, app_id, [str(t) for t in tokens], title, text, parse_data(message.get("data")), classification)
        if not bad:
            return _answer("80000000", "Success", request_id)
        if not ok:
            return _answer("80300007", "All the tokens are invalid", request_id)
        detail = {"success": len(ok), "failure": len(bad), "illegal_tokens": bad}
        return _answer("80100000", json.dumps(detail), request_id)

    app.router.add_post("/oauth2/v3/token", token)
    app.router.add_post("/v1/{app_id}/messages:send", send)


def _answer(code: str, msg: str, request_id: str, status: int = 200) -> web.Response:
    return web.json_response({"code": code, "msg": msg, "requestId": request_id}, status=status)

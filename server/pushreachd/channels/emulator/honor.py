"""Honor Push emulator: POST /auth/token and POST /api/v1/{app_id}/sendMessage.

Answers {"code": 200, "message": "success", "data": {"sendResult", "requestId",
"failTokens", "expireTokens"}}; tokens marked invalid come back in `expireTokens`. An
expired auth token gets HTTP 401 {"code": 80200003}; an unknown one 401 {"code": 80200001};
flow control HTTP 503; a wrong client secret HTTP 400 {"error": 1101}.
"""

from __future__ import annotations

import json

from aiohttp import web

from .android import EmulatorState, parse_data

VENDOR = "honor"


def add_routes(app: web.Application, state: EmulatorState) -> None:
    async def token(request: web.Request) -> web.Response:
        state.auth_requests[VENDOR] += 1
        form = await request.post()
        client_id = str(form.get("client_id", ""))
        match = [key for (vendor, key), s in state.apps.items() if vendor == VENDOR and s.get("client_id") == client_id]
        known = state.app(VENDOR, match[0]) if match else None
        if form.get("grant_type") != "client_credentials" or known is None or known.get("client_secret") != form.get("client_secret"):
            return web.json_response({"error": 1101, "error_description": "invalid client"}, status=400)
        return web.json_response({"access_token": state.issue(VENDOR, match[0]), "expires_in": 3600, "token_type": "Bearer"})

    async def send(request: web.Request) -> web.Response:
        app_id = request.match_info["app_id"]
        auth = request.headers.get("Authorization", "")
        status, token_app = state.auth(VENDOR, auth.removeprefix("Bearer ").strip())
        if status == "expired" and token_app == app_id:
            return web.json_response({"code": 80200003, "message": "token expired"}, status=401)
        if status != "ok" or token_app != app_id or not request.headers.get("timestamp", "").isdigit():
            return web.json_response({"code": 80200001, "message": "authentication failed"}, status=401)
        fault = state.next_fault(VENDOR)
        if fault == "flow_control":
            return web.Response(status=503, text="flow control")
        if fault == "quota":
            return web.json_response({"code": 80300013, "message": "quota exhausted"})
        try:
            body = json.loads(await request.read())
            tokens = body["token"]
            notification = body["android"]["notification"]
            title, text = notification["title"], notification["body"]
        except (ValueError, KeyError, TypeError):
            return web.json_response({"code": 80100003, "message": "illegal payload"}, status=400)
        if not isinstance(tokens, list) or not 1 <= len(tokens) <= 1000:
            return web.json_response({"code": 80300010, "message": "token count out of range"}, status=400)
        classification = {"importance": notification.get("importance", ""), "ttl": body["android"].get("ttl", "")}
        _, bad = state.deliver(VENDOR, app_id, [str(t) for t in tokens], title, text, parse_data(body.get("data")), classification)
        return web.json_response(
            {
                "code": 200,
                "message": "success",
                "data": {"sendResult": True, "requestId": state.next_id("hn"), "failTokens": [], "expireTokens": bad},
            }
        )

    app.router.add_post("/auth/token", token)
    app.router.add_post("/api/v1/{app_id}/sendMessage", send)

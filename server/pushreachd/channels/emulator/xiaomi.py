"""Xiaomi Push emulator: POST /v3/message/regid with `Authorization: key=<app_secret>`.

The app is found by `restricted_package_name`; a wrong or missing key answers
{"result": "error", "code": 21301, "reason": "Authentication failed"}. Regids marked invalid
come back in `data.bad_regids`; flow control is HTTP 503.
"""

from __future__ import annotations

from aiohttp import web

from .android import EmulatorState, parse_data

VENDOR = "xiaomi"


def _error(code: int, reason: str, status: int = 200) -> web.Response:
    return web.json_response({"result": "error", "code": code, "reason": reason, "description": reason}, status=status)


def add_routes(app: web.Application, state: EmulatorState) -> None:
    async def regid(request: web.Request) -> web.Response:
        form = await request.post()
        package = str(form.get("restricted_package_name", ""))
        known = state.app(VENDOR, package)
        key = request.headers.get("Authorization", "").removeprefix("key=")
        if known is None or key != known.get("app_secret"):
            return _error(21301, "Authentication failed")
        fault = state.next_fault(VENDOR)
        if fault == "flow_control":
            return web.Response(status=503, text="flow control")
        if fault == "quota":
            return _error(200002, "quota exhausted")
        regids = [r for r in str(form.get("registration_id", "")).split(",") if r]
        title, description = str(form.get("title", "")), str(form.get("description", ""))
        if not regids or len(regids) > 1000:
            return _error(20301, "registration_id count out of range")
        if not title or not description:
            return _error(22002, "title and description are required")
        extras = {k.removeprefix("extra."): str(v) for k, v in form.items() if k.startswith("extra.")}
        data = parse_data(str(form.get("payload", "")))
        data.update({k: v for k, v in extras.items() if k.startswith("pushreach_")})
        classification = {"channel_id": extras.get("channel_id", ""), "time_to_live": str(form.get("time_to_live", ""))}
        _, bad = state.deliver(VENDOR, package, regids, title, description, data, classification)
        result: dict[str, object] = {"id": state.next_id("scm")}
        if bad:
            result["bad_regids"] = ",".join(bad)
        return web.json_response(
            {"result": "ok", "code": 0, "data": result, "description": "success", "info": f"Received push messages for {len(regids)} REGID"}
        )

    app.router.add_post("/v3/message/regid", regid)

"""OPPO Push emulator: POST /server/v1/auth and /server/v1/message/notification/unicast_batch.

Auth checks the SHA-256 sign of app_key + timestamp + master_secret (code 16 "Invalid
Signature" when it does not match, 14 for an unknown app key). Sends check the auth token
(code 11 "Invalid AuthToken" when unknown or expired); flow control answers code -2 and
an exhausted daily quota code 33; registration ids marked invalid get errorCode 10000.
"""

from __future__ import annotations

import json

from aiohttp import web

from ..oppo import sign
from .android import EmulatorState, parse_data

VENDOR = "oppo"


def _answer(code: int, message: str, data: object = None) -> web.Response:
    body: dict[str, object] = {"code": code, "message": message}
    if data is not None:
        body["data"] = data
    return web.json_response(body)


def add_routes(app: web.Application, state: EmulatorState) -> None:
    async def auth(request: web.Request) -> web.Response:
        state.auth_requests[VENDOR] += 1
        form = await request.post()
        key, timestamp = str(form.get("app_key", "")), str(form.get("timestamp", ""))
        known = state.app(VENDOR, key)
        if not key:
            return _answer(15, "Missing App Key")
        if known is None:
            return _answer(14, "Invalid App Key")
        if not timestamp.isdigit():
            return _answer(19, "Invalid Timestamp")
        if form.get("sign") != sign(key, timestamp, known.get("master_secret", "")):
            return _answer(16, "Invalid Signature")
        return _answer(0, "", {"auth_token": state.issue(VENDOR, key, 24 * 3600), "create_time": int(timestamp)})

    async def unicast_batch(request: web.Request) -> web.Response:
        form = await request.post()
        status, key = state.auth(VENDOR, str(form.get("auth_token", "")))
        if not form.get("auth_token"):
            return _answer(29, "Missing Auth Token")
        if status != "ok":
            return _answer(11, "Invalid AuthToken")
        fault = state.next_fault(VENDOR)
        if fault == "flow_control":
            return _answer(-2, "Service in Flow Control")
        if fault == "quota":
            return _answer(33, "The number of messages exceeds the daily limit")
        try:
            messages = json.loads(str(form.get("messages", "")))
            assert isinstance(messages, list) and 1 <= len(messages) <= 1000
        except (ValueError, AssertionError):
            return _answer(41, "Invalid Arguments")
        results = []
        for m in messages:
            try:
                reg, n = str(m["target_value"]), m["notification"]
                title, content = n["title"], n["content"]
            except (KeyError, TypeError):
                return _answer(40, "Missing Required Arguments")
            message_id = state.next_id("oppo-1-1-")
            classification = {"channel_id": n.get("channel_id", ""), "category": n.get("category", ""), "off_line_ttl": n.get("off_line_ttl")}
            ok, _ = state.deliver(VENDOR, key, [reg], title, content, parse_data(n.get("action_parameters")), classification)
            state.send_calls[VENDOR] -= 1  # one call for the whole batch, counted below
            item: dict[str, object] = {"messageId": message_id, "registrationId": reg}
            if not ok:
                item.update(errorCode=10000, errorMessage="Invalid Registration_id")
            results.append(item)
        state.send_calls[VENDOR] += 1
        return _answer(0, "", results)

    app.router.add_post("/server/v1/auth", auth)
    app.router.add_post("/server/v1/message/notification/unicast_batch", unicast_batch)

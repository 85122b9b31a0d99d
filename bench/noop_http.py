"""The HTTP baseline: an aiohttp server whose `POST /v1/receipts` reads the JSON body and
answers at once (one outcome per receipt), storing and checking nothing.

    python -m bench.noop_http 127.0.0.1:PORT
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from aiohttp import web


async def receipts(request: web.Request) -> web.Response:
    body = await request.json()
    if "receipts" in body:
        answer = {"results": [{"outcome": "ACCEPTED", "push_id": ""} for _ in body["receipts"]]}
    else:
        answer = {"outcome": "ACCEPTED", "push_id": ""}
    return web.Response(body=json.dumps(answer).encode(), content_type="application/json")


async def serve(listen: str) -> None:
    host, _, port = listen.rpartition(":")
    app = web.Application()
    app.router.add_post("/v1/receipts", receipts)
    app.router.add_get("/healthz", lambda request: web.json_response({"status": "SERVING"}))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, int(port)).start()
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopped.set)
    loop.add_signal_handler(signal.SIGINT, stopped.set)
    await stopped.wait()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))

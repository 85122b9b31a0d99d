"""`pushreach push-emulator`: every push channel's loopback emulator in one process.

One HTTP port serves the Android vendors (Huawei, Honor, Xiaomi, OPPO, vivo), FCM (its OAuth2
token endpoint and messages:send) and a webhook receiver (the app's own sender); APNs, which
needs HTTP/2 over TLS, has a port of its own with a CA the emulator makes (give its path to
pushreach as `channel_ca_file`). Once serving, one JSON line on stdout says where each one is
and which `pushreach serve` settings point at them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from typing import Any

from . import android, apns, fcm, serving, webhook


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", default="127.0.0.1:8088", metavar="HOST:PORT",
                        help="HTTP address of the vendors', FCM's and the webhook receiver's endpoints")
    parser.add_argument("--apns-listen", default="127.0.0.1:8443", metavar="HOST:PORT",
                        help="HTTP/2 + TLS address of the APNs emulator (production; sandbox under /sandbox)")
    parser.add_argument("--apns-keys", default="", metavar="PATH",
                        help='JSON file: [{"team_id", "key_id", "public_key" or "private_key" (PEM), '
                        '"topics": [bundle ids]}]; without it APNs refuses every provider token')
    parser.add_argument("--apns-unregistered", action="append", default=[], metavar="TOKEN",
                        help="a device token APNs answers 410 Unregistered")
    parser.add_argument("--ca-file", default="", metavar="PATH",
                        help="where to write the APNs emulator's CA (PEM), for `serve --channel-ca-file`; "
                        "default a temporary file")
    android.add_vendor_arguments(parser, apps_required=False)
    fcm.add_arguments(parser)
    webhook.add_arguments(parser)
    parser.add_argument("--seconds", type=float, default=0, metavar="SECONDS",
                        help="stop after this long (0 = until SIGINT/SIGTERM)")


def where(http_url: str, apns_url: str, ca_file: str, webhooks: list[str]) -> dict[str, Any]:
    """The ready line: each endpoint, and the `pushreach serve` settings that use them."""
    return {
        "http": http_url,
        "apns": apns_url,
        "apns_sandbox": apns.sandbox_url(apns_url),
        "ca_file": ca_file,
        "fcm_token_uri": f"{http_url}{fcm.TOKEN_PATH}",
        "webhooks": {name: f"{http_url}/webhook/{name}" for name in webhooks},
        "serve_settings": {
            "apns_endpoint": apns_url,
            "apns_sandbox_endpoint": apns.sandbox_url(apns_url),
            "fcm_endpoint": http_url,
            "hms_endpoint": http_url,
            "hms_token_endpoint": f"{http_url}/oauth2/v3/token",
            "honor_endpoint": http_url,
            "honor_token_endpoint": f"{http_url}/auth/token",
            "xiaomi_endpoint": http_url,
            "oppo_endpoint": http_url,
            "vivo_endpoint": http_url,
            "channel_ca_file": ca_file,
        },
    }


async def serve_from_args(args: argparse.Namespace) -> None:
    from ...config import parse_host_port

    host, port = parse_host_port(args.listen)
    apns_host, apns_port = parse_host_port(args.apns_listen)
    vendors = android.EmulatorState()
    android.configure(vendors, args)
    fcm_state = fcm.FcmEmulatorState()
    fcm.configure(fcm_state, args)
    receiver = webhook.WebhookReceiverState()
    webhook.configure(receiver, args)
    apns_state = apns.ApnsEmulatorState()
    if args.apns_keys:
        with open(args.apns_keys, encoding="utf-8") as f:
            apns.load_keys(apns_state, json.load(f))
    apns_state.unregister(*args.apns_unregistered)

    app = android.create_app(vendors)
    fcm.add_routes(app, fcm_state)
    webhook.add_routes(app, receiver)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    ca_target = os.path.abspath(args.ca_file) if args.ca_file else ""
    async with serving(app, host, port) as http_url, apns.running(apns_state, apns_host, apns_port, ca_target) as (
        apns_url,
        ca_file,
    ):
        print(json.dumps(where(http_url, apns_url, ca_file, sorted(receiver.secrets))), flush=True)
        print(f"push emulator on {http_url} (vendors, FCM, webhooks) and {apns_url} (APNs)", file=sys.stderr,
              flush=True)
        if args.seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.seconds)
        else:
            await stop.wait()

"""The `pushreach` command: run the service, manage apps on a database, run the SMS emulator."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence

from . import config
from .apps import AppService
from .clock import SystemClock
from .errors import DomainError
from .secrets import SecretBox, SecretError, load_master_key
from .sms import emulator
from .store.sqlite import SqliteStore

log = logging.getLogger("pushreach")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


# -- serve --------------------------------------------------------------------------------


async def _serve(settings: config.Settings) -> None:
    from .wiring import Service  # imports grpc; keep `apps` commands light

    service = Service(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await service.start()
    print(f"pushreach serving gRPC on {settings.listen} (port {service.port})", flush=True)
    await stop.wait()
    log.info("shutting down: health NOT_SERVING, finishing calls in flight, flushing the store")
    await service.stop()


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        settings = config.load_settings(args)
    except config.ConfigError as exc:
        print(f"pushreach: {exc}", file=sys.stderr)
        return 2
    _setup_logging(settings.log_level)
    try:
        asyncio.run(_serve(settings))
    except (OSError, SecretError) as exc:
        print(f"pushreach: {exc}", file=sys.stderr)
        return 1
    return 0


# -- apps ---------------------------------------------------------------------------------


def _db_and_key(args: argparse.Namespace) -> tuple[str, bytes]:
    master = os.environ.get("PUSHREACH_MASTER_KEY", "")
    key_file = args.master_key_file or os.environ.get("PUSHREACH_MASTER_KEY_FILE", "") or f"{args.db}.key"
    return args.db, load_master_key(master, key_file)


async def _with_apps(args: argparse.Namespace, action):  # type: ignore[no-untyped-def]
    db, key = _db_and_key(args)
    store = SqliteStore(db)
    await store.open()
    try:
        return await action(AppService(store, SecretBox(key), SystemClock()))
    finally:
        await store.close()


def cmd_apps_create(args: argparse.Namespace) -> int:
    app, secret = asyncio.run(_with_apps(args, lambda apps: apps.create_app(args.name)))
    if args.json:
        print(json.dumps({"access_id": app.access_id, "secret_key": secret}))
    else:
        print(f"access_id:  {app.access_id}\nsecret_key: {secret}\n(the secret key is shown only now)")
    return 0


def cmd_apps_set_sms_credentials(args: argparse.Namespace) -> int:
    secret_key = args.secret_key or os.environ.get("PUSHREACH_TENCENT_SECRET_KEY", "")
    app = asyncio.run(
        _with_apps(args, lambda apps: apps.set_sms_credentials(args.access_id, args.secret_id, secret_key))
    )
    print(f"Tencent Cloud SMS credentials set for app {app.access_id} (stored encrypted)")
    return 0


def cmd_apps_list(args: argparse.Namespace) -> int:
    apps = asyncio.run(_with_apps(args, lambda a: a.list_apps(0, 100_000)))
    rows = [
        {"access_id": a.access_id, "name": a.name, "sms_credentials_set": a.sms_credentials_blob is not None}
        for a in apps
    ]
    if args.json:
        print(json.dumps(rows))
    else:
        for r in rows:
            print(f"{r['access_id']}  {r['name']}  sms_credentials={'set' if r['sms_credentials_set'] else 'unset'}")
    return 0


def cmd_apps_rotate_secret(args: argparse.Namespace) -> int:
    secret = asyncio.run(_with_apps(args, lambda apps: apps.rotate_secret(args.access_id)))
    print(json.dumps({"access_id": args.access_id, "secret_key": secret}) if args.json else f"secret_key: {secret}")
    return 0


# -- sms-emulator -------------------------------------------------------------------------


def cmd_sms_emulator(args: argparse.Namespace) -> int:
    _setup_logging("INFO")
    asyncio.run(emulator.serve_from_args(args))
    return 0


# -- parser -------------------------------------------------------------------------------


def _add_db_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default=os.environ.get("PUSHREACH_DB", "./pushreach.db"),
                   help="SQLite database of the service (default ./pushreach.db, env PUSHREACH_DB)")
    p.add_argument("--master-key-file", default="",
                   help="master key file that encrypts SMS credentials (default <db>.key; "
                        "PUSHREACH_MASTER_KEY, if set, is used instead)")
    p.add_argument("--json", action="store_true", help="print JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pushreach",
        description="Push notifications with supplementary SMS (a self-hosted TPNS-style service).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="run the gRPC service",
        description="Run the gRPC service: push, devices, events, SMS fallback, health and reflection. "
        "Settings come from flags, then PUSHREACH_* environment variables, then the --config TOML file.",
    )
    config.add_serve_arguments(serve)
    serve.set_defaults(func=cmd_serve)

    apps = sub.add_parser("apps", help="manage apps on a database", description="Manage apps directly on the database.")
    apps_sub = apps.add_subparsers(dest="apps_command", required=True)
    create = apps_sub.add_parser("create", help="create an app and print its access id and secret key",
                                 description="Create an app; prints its access_id and secret_key (shown only once).")
    create.add_argument("name", help="display name of the app")
    _add_db_arguments(create)
    create.set_defaults(func=cmd_apps_create)

    creds = apps_sub.add_parser(
        "set-sms-credentials",
        help="store an app's Tencent Cloud SecretId/SecretKey (encrypted)",
        description="Store an app's Tencent Cloud SMS credentials, encrypted with the master key. "
        "Prefer PUSHREACH_TENCENT_SECRET_KEY over --secret-key: flags show in `ps`.",
    )
    creds.add_argument("access_id", help="the app's access id")
    creds.add_argument("--secret-id", required=True, help="Tencent Cloud SecretId")
    creds.add_argument("--secret-key", default="", help="Tencent Cloud SecretKey (or PUSHREACH_TENCENT_SECRET_KEY)")
    _add_db_arguments(creds)
    creds.set_defaults(func=cmd_apps_set_sms_credentials)

    lst = apps_sub.add_parser("list", help="list apps", description="List apps (never their secrets).")
    _add_db_arguments(lst)
    lst.set_defaults(func=cmd_apps_list)

    rotate = apps_sub.add_parser("rotate-secret", help="give an app a new secret key",
                                 description="Give an app a new secret key; the old one stops working at once.")
    rotate.add_argument("access_id", help="the app's access id")
    _add_db_arguments(rotate)
    rotate.set_defaults(func=cmd_apps_rotate_secret)

    emu = sub.add_parser(
        "sms-emulator",
        help="run a loopback Tencent Cloud SMS endpoint for tests and trials",
        description="Run a local endpoint that speaks Tencent Cloud SMS (SendSms, PullSmsSendStatus) with "
        "signature checks and injectable faults. Point `serve --sms-provider tencent "
        "--tencent-sms-endpoint http://HOST:PORT` at it.",
    )
    emulator.add_arguments(emu)
    emu.set_defaults(func=cmd_sms_emulator)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (DomainError, SecretError) as exc:
        print(f"pushreach: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

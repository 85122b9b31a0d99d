"""The `pushreach` command: run the service, manage apps on a database, run the SMS emulator,
and operate a running service (push, status, sms list, stats) through `pushreach.Client`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from pushreach.v1 import device_pb2, push_pb2, sms_pb2  # messages only: no grpc import here

from . import config
from .channels.registry import ChannelContext
from .clock import SystemClock
from .errors import DomainError
from .logcontext import RequestIdFilter
from .model import App
from .phone import PhoneMaskingFilter
from .ports import AddressUnavailable
from .secrets import SecretBox, SecretError, load_master_key
from .services.apps import AppService
from .services.channels import AppChannels, parse_channel
from .services.receipts import Receipts
from .sms import emulator
from .store import is_postgres_url, make_store
from .store.instance_lock import InstanceLock, InstanceLocked

log = logging.getLogger("pushreach")


# Libraries that log every request at INFO (httpx logs each receipt poll, aiohttp each
# request served): kept at WARNING unless log_level is DEBUG.
CHATTY_LIBRARIES = ("httpx", "httpcore", "hpack", "h2", "aiohttp", "asyncio", "grpc", "tencentcloud_sdk_common")


def _setup_logging(level: str) -> None:
    level_number = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(
        level=level_number,
        format="%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s",
    )
    logging.getLogger().setLevel(level_number)  # also when a handler existed before (basicConfig did nothing)
    for handler in logging.getLogger().handlers:  # phone numbers masked in every line, whoever logs
        handler.addFilter(PhoneMaskingFilter())
        handler.addFilter(RequestIdFilter())
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(level_number if level_number <= logging.DEBUG else max(level_number, logging.WARNING))


# -- serve --------------------------------------------------------------------------------


async def _serve(settings: config.Settings) -> int:
    """Serve until SIGTERM/SIGINT (exit status 0) or a background task's death (1)."""
    from .wiring import Service  # imports grpc; keep `apps` commands light

    service = Service(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await service.start()
    print(f"pushreach serving gRPC on {settings.listen} (port {service.port})", flush=True)
    signalled = asyncio.ensure_future(stop.wait())
    died = asyncio.ensure_future(service.supervisor.failed.wait())
    await asyncio.wait((signalled, died), return_when=asyncio.FIRST_COMPLETED)
    signalled.cancel()
    died.cancel()
    failure = service.supervisor.failure
    if failure is not None:
        log.critical("stopping: background task %s died (%r)", service.supervisor.failed_task, failure)
    log.info("shutting down: health NOT_SERVING, finishing calls in flight, flushing the store")
    await service.stop()
    return 1 if service.supervisor.failure is not None else 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        settings = config.load_settings(args)
    except config.ConfigError as exc:
        print(f"pushreach: {exc}", file=sys.stderr)
        return 2
    _setup_logging(settings.log_level)
    try:
        return asyncio.run(_serve(settings))
    except (InstanceLocked, AddressUnavailable) as exc:  # a setting to change: like a bad setting
        print(f"pushreach: {exc}", file=sys.stderr)
        return 2
    except (OSError, SecretError) as exc:
        print(f"pushreach: {exc}", file=sys.stderr)
        return 1


# -- apps ---------------------------------------------------------------------------------


def _check_db(args: argparse.Namespace) -> None:
    """Refuse a --db in a directory that does not exist (naming the directory, not the key file
    beside it), and, for commands that only work on existing apps, a database that does not
    exist: a typo must not silently create an empty database and a new master key."""
    if "://" in args.db:
        return  # a database URL: the store says what is wrong with it
    directory = os.path.dirname(os.path.abspath(args.db))
    if not os.path.isdir(directory):
        raise _UsageError(f"--db {args.db}: directory {directory} does not exist; create it, or give another --db")
    if args.db_must_exist and not os.path.exists(args.db):
        raise _UsageError(
            f"--db {args.db}: no such database; give the database of the service (--db or PUSHREACH_DB), "
            f"or create it with `pushreach apps create NAME --db {args.db}`"
        )


def _db_and_key(args: argparse.Namespace) -> tuple[str, bytes]:
    _check_db(args)
    master = os.environ.get("PUSHREACH_MASTER_KEY", "")
    key_file = args.master_key_file or os.environ.get("PUSHREACH_MASTER_KEY_FILE", "")
    if not key_file and not master and is_postgres_url(args.db):
        # "<db>.key" means nothing beside a URL, and every instance must share one key.
        raise SecretError(
            "a PostgreSQL --db needs --master-key-file (or PUSHREACH_MASTER_KEY / PUSHREACH_MASTER_KEY_FILE): "
            "the key every instance of the service is given"
        )
    return args.db, load_master_key(master, key_file or f"{args.db}.key")


async def _with_apps(args: argparse.Namespace, action):  # type: ignore[no-untyped-def]
    db, key = _db_and_key(args)
    store = make_store(db)
    await store.open()
    try:
        return await action(AppService(store, SecretBox(key), SystemClock()))
    finally:
        await store.close()


def cmd_apps_create(args: argparse.Namespace) -> int:
    app, secret = asyncio.run(_with_apps(args, lambda apps: apps.create_app(args.name)))
    if args.export:  # for `eval "$(pushreach apps create NAME --export)"`: the operator commands read these
        print(f"export PUSHREACH_ACCESS_ID={shlex.quote(app.access_id)}\nexport PUSHREACH_SECRET_KEY={shlex.quote(secret)}")
    elif args.json:
        print(json.dumps({"access_id": app.access_id, "secret_key": secret}))
    else:
        print(f"access_id:  {app.access_id}\nsecret_key: {secret}\n(the secret key is shown only now)")
    return 0


def cmd_apps_set_sms_credentials(args: argparse.Namespace) -> int:
    secret_key = args.secret_key or os.environ.get("PUSHREACH_TENCENT_SECRET_KEY", "")
    if not secret_key:
        raise _UsageError(
            "the Tencent Cloud SecretKey is missing: set PUSHREACH_TENCENT_SECRET_KEY "
            "(preferred: flags show in `ps`) or give --secret-key"
        )
    app = asyncio.run(
        _with_apps(args, lambda apps: apps.set_sms_credentials(args.access_id, args.secret_id, secret_key))
    )
    print(f"Tencent Cloud SMS credentials set for app {app.access_id} (stored encrypted)")
    return 0


def cmd_apps_set_channel(args: argparse.Namespace) -> int:
    try:
        with open(args.file, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise _UsageError(f"--file {args.file}: {exc}") from None
    channel = parse_channel(args.channel)

    async def run(apps: AppService) -> App:
        app = await apps.get_app(args.access_id)
        store, box = apps.parts()
        return await AppChannels(store, box, SystemClock(), ChannelContext(SystemClock())).set_credentials(
            app, channel, text
        )

    app = asyncio.run(_with_apps(args, run))
    names = ", ".join(c.name.lower() for c in sorted(app.channels))
    print(f"{channel.name.lower()} credentials set for app {app.access_id} (stored encrypted); channels: {names}")
    return 0


def cmd_apps_list(args: argparse.Namespace) -> int:
    apps = asyncio.run(_with_apps(args, lambda a: a.list_apps(0, 100_000)))
    rows = [
        {
            "access_id": a.access_id,
            "name": a.name,
            "sms_credentials_set": a.sms_credentials_blob is not None,
            "channels": [c.name.lower() for c in sorted(a.channels)],
        }
        for a in apps
    ]
    if args.json:
        print(json.dumps(rows))
    else:
        for r in rows:
            sms = "set" if r["sms_credentials_set"] else "unset"
            print(f"{r['access_id']}  {r['name']}  sms_credentials={sms}  channels={','.join(r['channels']) or 'none'}")
    return 0


def cmd_apps_rotate_secret(args: argparse.Namespace) -> int:
    secret = asyncio.run(_with_apps(args, lambda apps: apps.rotate_secret(args.access_id)))
    print(json.dumps({"access_id": args.access_id, "secret_key": secret}) if args.json else f"secret_key: {secret}")
    return 0


def cmd_apps_rotate_receipt_key(args: argparse.Namespace) -> int:
    """A new receipt key for the app; receipts and device keys of the older ones keep working
    for the overlap (7 days), then stop."""

    db, key = _db_and_key(args)

    async def rotate() -> tuple[int, float]:
        store = make_store(db)
        await store.open()
        try:
            app = await AppService(store, SecretBox(key), SystemClock()).get_app(args.access_id)
            receipts = Receipts(store, SecretBox(key), SystemClock())
            return await receipts.rotate(app.id), receipts.overlap
        finally:
            await store.close()

    key_id, overlap = asyncio.run(rotate())
    if args.json:
        print(json.dumps({"access_id": args.access_id, "receipt_key_id": key_id, "overlap_seconds": overlap}))
    else:
        print(
            f"receipt key {key_id} of app {args.access_id} signs from now on (a running service switches "
            f"within 30 s); older keys keep verifying for {overlap / 86400:g} days. Hand out new device "
            "keys (BindPhone) before then."
        )
    return 0


def cmd_apps_rotate_master_key(args: argparse.Namespace) -> int:
    """Re-seal every app's SMS credentials under the key in --new-key-file (created if absent).
    The database is changed in one transaction; the operator then puts the new key in place."""
    db, old_key = _db_and_key(args)
    # A running service holds the old key in memory: refuse while one runs (SQLite: its instance
    # lock), and keep one from starting while the credentials are re-sealed.
    lock = InstanceLock(db, "pushreach apps rotate-master-key") if "://" not in db else None
    try:
        if lock is not None:
            lock.acquire()
    except InstanceLocked as exc:
        raise _UsageError(f"stop the service first: database {db} is in use by {exc.holder}") from None
    try:
        new_key = load_master_key("", args.new_key_file)  # creates it (0600) on first use
        if new_key == old_key:
            raise SecretError("the new key file holds the current master key; nothing to rotate")

        async def run() -> int:
            store = make_store(db)
            await store.open()
            try:
                apps = await AppService(store, SecretBox(old_key), SystemClock()).rotate_master_key(SecretBox(new_key))
                await Receipts(store, SecretBox(old_key), SystemClock()).reseal(SecretBox(new_key))
                return apps
            finally:
                await store.close()

        count = asyncio.run(run())
    finally:
        if lock is not None:
            lock.release()
    if args.json:
        print(json.dumps({"resealed_apps": count, "new_key_id": SecretBox(new_key).key_id}))
    else:
        print(
            f"re-sealed the SMS credentials of {count} app(s) under key {SecretBox(new_key).key_id}.\n"
            f"Now make {args.new_key_file} the master key (replace the key file, or set "
            "PUSHREACH_MASTER_KEY to its content) and start the service; keep the old key until it runs."
        )
    return 0


# -- operator commands (through pushreach.Client) -----------------------------------------

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, now: float | None = None) -> float:
    """ISO 8601 (`2025-06-01`, `2025-06-01T08:00:00+08:00`; no zone = UTC) or an age like
    `30m`, `24h`, `7d` (that long before now). Seconds since the epoch."""
    text = text.strip()
    if text[:-1].isdigit() and text[-1:] in _DURATION_UNITS:
        return (time.time() if now is None else now) - int(text[:-1]) * _DURATION_UNITS[text[-1]]
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither ISO 8601 nor an age like 30m, 24h, 7d") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def to_json(message: Any) -> dict[str, Any]:
    """A proto message as plain JSON: field names as in the proto, every field present, enums by
    name, timestamps as RFC 3339 (null when unset), 64-bit integers as numbers."""

    def value(field: Any, v: Any) -> Any:
        if field.message_type is not None:
            if field.message_type.full_name == "google.protobuf.Timestamp":
                return v.ToJsonString()
            return to_json(v)
        if field.enum_type is not None:
            known = field.enum_type.values_by_number.get(v)
            return known.name if known is not None else v
        return v

    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        v = getattr(message, field.name)
        if field.is_repeated:
            out[field.name] = [value(field, x) for x in v]
        elif field.message_type is not None and not message.HasField(field.name):
            out[field.name] = None
        else:
            out[field.name] = value(field, v)
    return out


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip() for r in [headers, *rows]]
    return "\n".join(lines)


def _when(ts: Any) -> str:
    return ts.ToDatetime(tzinfo=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if ts is not None else "-"


def _enum_short(name: str, prefix: str) -> str:
    return name.removeprefix(prefix).lower()


def _client(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from pushreach import Client

    access_id = args.access_id or os.environ.get("PUSHREACH_ACCESS_ID", "")
    secret_key = args.secret_key or os.environ.get("PUSHREACH_SECRET_KEY", "")
    if not access_id or not secret_key:
        raise _UsageError("credentials needed: --access-id/--secret-key or PUSHREACH_ACCESS_ID/PUSHREACH_SECRET_KEY")
    if bool(args.cert_file) != bool(args.key_file):
        raise _UsageError("--cert-file and --key-file go together (mutual TLS): give both")
    pem = {}
    for option, path in (("--ca-file", args.ca_file), ("--cert-file", args.cert_file), ("--key-file", args.key_file)):
        if path:
            try:
                with open(path, "rb") as f:
                    pem[option] = f.read()
            except OSError as exc:
                raise _UsageError(f"{option} {path}: cannot read: {exc.strerror or exc}") from None
    return Client(
        args.server,
        access_id,
        secret_key,
        tls=args.tls or bool(args.server_name),
        ca=pem.get("--ca-file"),
        cert=pem.get("--cert-file"),
        key=pem.get("--key-file"),
        server_name=args.server_name or None,
        timeout=args.timeout,
    )


def _uses_tls(args: argparse.Namespace) -> bool:
    return bool(args.tls or args.ca_file or args.cert_file or args.server_name)


def _unavailable_hint(args: argparse.Namespace) -> str:
    """What to check when the service could not be reached at all."""
    hint = f"could not reach the service at {args.server}: is it running there? Give its address with --server (or PUSHREACH_SERVER)"
    if _uses_tls(args):
        return hint + "; with TLS, check --ca-file (the CA that signed its certificate), --server-name (a name in its certificate) and, if it requires client certificates, --cert-file and --key-file"
    return hint + "; if it uses TLS, add --tls or --ca-file"


class _UsageError(Exception):
    pass


def _run_op(args: argparse.Namespace, action) -> int:  # type: ignore[no-untyped-def]
    """Run an operator command; errors print the status code and field violations, exit 1."""
    from pushreach import PushreachError

    async def run() -> int:
        async with _client(args) as client:
            return int(await action(client))

    try:
        return asyncio.run(run())
    except _UsageError as exc:
        print(f"pushreach: {exc}", file=sys.stderr)
        return 2
    except PushreachError as exc:
        print(f"pushreach: {exc.code.name}: {exc.message}", file=sys.stderr)
        for v in exc.violations:
            print(f"  {v.field}: {v.description}", file=sys.stderr)
        if exc.code.name == "UNAVAILABLE":
            print(f"pushreach: {_unavailable_hint(args)}", file=sys.stderr)
        return 1


def _load_push_body(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from google.protobuf import json_format

    from .services.tpns import TpnsBodyError, from_tpns

    try:
        with (sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")) as f:
            body = json.load(f)
    except (OSError, ValueError) as exc:
        raise _UsageError(f"cannot read {args.file}: {exc}") from None
    if args.tpns:
        try:
            body, ignored = from_tpns(body)
        except TpnsBodyError as exc:
            raise _UsageError(f"TPNS body: {exc}") from None
        if ignored:
            print(f"pushreach: TPNS fields ignored: {', '.join(ignored)}", file=sys.stderr)
    try:
        return json_format.ParseDict(body, push_pb2.PushRequest())
    except json_format.ParseError as exc:
        tpns_sign = None if args.tpns else tpns_evidence(body)
        if tpns_sign:
            raise _UsageError(f"push body: this looks like a TPNS body ({tpns_sign}): use --tpns") from None
        raise _UsageError(f"push body: {exc}") from None


# TPNS /v3/push/app fields that pushreach's PushRequest does not have.
_TPNS_ONLY_FIELDS = ("seq", "tag_list", "push_id", "upload_id", "plan_id", "collapse_id", "badge_type")


def tpns_evidence(body: Any) -> str | None:
    """What makes `body` a TPNS push body rather than pushreach's (a TPNS enum spelling such as
    audience_type "token_list", a TPNS-only field), or None."""
    if not isinstance(body, dict):
        return None
    from .services.tpns import (
        AUDIENCE_TYPES,
        ENVIRONMENTS,
        MESSAGE_TYPES,
        UNSUPPORTED_AUDIENCES,
    )

    for field, names in (("audience_type", (*AUDIENCE_TYPES, *UNSUPPORTED_AUDIENCES)),
                         ("message_type", MESSAGE_TYPES), ("environment", ENVIRONMENTS)):
        value = body.get(field)
        if isinstance(value, str) and value.lower() in names:
            return f"{field} {value!r}"
    for field in _TPNS_ONLY_FIELDS:
        if field in body:
            return f"field {field!r}"
    sms = body.get("sms_info")
    if isinstance(sms, dict) and sms.get("trigger_condition") == 0:
        return "sms_info.trigger_condition 0"
    return None


def cmd_push(args: argparse.Namespace) -> int:
    try:
        request = _load_push_body(args)
    except _UsageError as exc:
        print(f"pushreach: {exc}", file=sys.stderr)
        return 2

    async def action(client) -> int:  # type: ignore[no-untyped-def]
        pushed = await client.push(request)
        if args.json:
            print(json.dumps(to_json(pushed)))
            return 0
        print(f"push_id:      {pushed.push_id}")
        print(f"targets:      {pushed.target_count}")
        print(f"accepted:     {_when(pushed.accept_time)}")
        if pushed.HasField("fallback_due_time"):
            print(f"SMS fallback: {_when(pushed.fallback_due_time)}")
        for u in pushed.unused_targets:
            reason = _enum_short(push_pb2.UnusedTargetReason.Name(u.reason), "UNUSED_TARGET_REASON_")
            print(f"unused:       {u.value} ({reason})")
        return 0

    return _run_op(args, action)


def cmd_status(args: argparse.Namespace) -> int:
    async def action(client) -> int:  # type: ignore[no-untyped-def]
        first = await client.get_push(args.push_id, page_size=1000)
        targets = list(first.targets)
        token = first.next_page_token
        while token:
            page = await client.get_push(args.push_id, page_size=1000, page_token=token)
            targets.extend(page.targets)
            token = page.next_page_token
        if args.json:
            out = to_json(first)
            out["targets"] = [to_json(t) for t in targets]
            del out["next_page_token"]
            print(json.dumps(out))
            return 0
        p, f = first.push, first.funnel
        state = _enum_short(push_pb2.FallbackState.Name(p.fallback_state), "FALLBACK_STATE_")
        print(f"push {p.push_id}  accepted {_when(p.accept_time)}")
        due = f"  due {_when(p.fallback_due_time)}" if p.HasField("fallback_due_time") else ""
        end = f"  ended {_when(p.fallback_end_time)}" if p.HasField("fallback_end_time") else ""
        print(f"SMS fallback: {state}{due}{end}")
        print()
        funnel = [[name.removesuffix("_count"), str(getattr(f, name))] for name in FUNNEL_ORDER]
        print(_table(funnel, ["funnel", "count"]))
        print()
        rows = [
            [
                t.token,
                _enum_short(device_pb2.Channel.Name(t.channel), "CHANNEL_") if t.channel else "-",
                _push_outcome(t),
                t.account or "-",
                t.phone_number or "-",
                _when(t.arrive_time) if t.HasField("arrive_time") else "-",
                _when(t.click_time) if t.HasField("click_time") else "-",
                _enum_short(sms_pb2.SmsStatus.Name(t.sms_status), "SMS_STATUS_") if t.sms_status else "-",
            ]
            for t in targets
        ]
        print(_table(rows, ["token", "channel", "push", "account", "phone", "arrived", "clicked", "sms"]))
        return 0

    return _run_op(args, action)


def _push_outcome(t: push_pb2.PushTarget) -> str:
    outcome = _enum_short(push_pb2.PushOutcome.Name(t.push_outcome), "PUSH_OUTCOME_") if t.push_outcome else "-"
    return f"{outcome} {t.push_outcome_code}" if t.push_outcome_code else outcome


FUNNEL_ORDER = (
    "target_count",
    "push_accepted_count",
    "push_invalid_token_count",
    "push_failed_count",
    "push_expired_count",
    "push_no_channel_count",
    "push_pending_count",
    "arrived_count",
    "clicked_count",
    "sms_sent_count",
    "sms_delivered_count",
    "sms_failed_count",
    "sms_rate_limited_count",
    "sms_unknown_count",
    "no_phone_count",
    "arrived_after_sms_count",
)


def cmd_sms_list(args: argparse.Namespace) -> int:
    try:
        statuses = [sms_pb2.SmsStatus.Value("SMS_STATUS_" + s.upper()) for s in args.status]
    except ValueError:
        known = ", ".join(_enum_short(n, "SMS_STATUS_") for n in sms_pb2.SmsStatus.keys()[1:])
        print(f"pushreach: --status takes {known}", file=sys.stderr)
        return 2
    if args.limit < 1:
        print("pushreach: --limit must be at least 1", file=sys.stderr)
        return 2

    async def action(client) -> int:  # type: ignore[no-untyped-def]
        records = []
        async for r in client.iter_sms_records(
            push_id=args.push_id,
            phone_number=args.phone,
            statuses=statuses,
            start_time=args.since,
            end_time=args.until,
            show_full_phone_number=args.full_numbers,
            page_size=min(args.limit, 1000),
        ):
            records.append(r)
            if len(records) >= args.limit:
                break
        if args.json:
            print(json.dumps([to_json(r) for r in records]))
            return 0
        rows = [
            [
                _when(r.create_time),
                r.push_id,
                r.phone_number,
                _enum_short(sms_pb2.SmsStatus.Name(r.status), "SMS_STATUS_"),
                r.rate_limit_rule or r.provider_code or "-",
                str(r.fee),
            ]
            for r in records
        ]
        print(_table(rows, ["created", "push_id", "phone", "status", "code/rule", "fee"]))
        return 0

    return _run_op(args, action)


def cmd_stats(args: argparse.Namespace) -> int:
    async def action(client) -> int:  # type: ignore[no-untyped-def]
        s = await client.get_statistics(start_time=args.since, end_time=args.until)
        if args.json:
            print(json.dumps(to_json(s)))
            return 0
        print(f"from {_when(s.start_time)} to {_when(s.end_time)}")
        rows = [
            ["pushes", str(s.push_count)],
            ["targets", str(s.target_count)],
            ["arrived", f"{s.arrived_count} ({s.arrival_rate:.1%})"],
            ["clicked", f"{s.clicked_count} ({s.click_rate:.1%})"],
            ["fallbacks pending", str(s.pending_fallback_count)],
            *[[f"sms {f.name}", str(getattr(s.sms, f.name))] for f in sms_pb2.SmsOutcomeCounts.DESCRIPTOR.fields],
            ["sms fee", str(s.sms_fee)],
        ]
        print(_table(rows, ["", "count"]))
        return 0

    return _run_op(args, action)



# -- sms-emulator -------------------------------------------------------------------------


def cmd_sms_emulator(args: argparse.Namespace) -> int:
    _setup_logging("INFO")
    asyncio.run(emulator.serve_from_args(args))
    return 0


def cmd_push_emulator(args: argparse.Namespace) -> int:
    from .channels.emulator import push as push_emulator  # loads h2/jwt only for this command

    _setup_logging("INFO")
    try:
        asyncio.run(push_emulator.serve_from_args(args))
    except (OSError, ValueError, KeyError) as exc:
        raise _UsageError(f"push emulator: {exc}") from None
    return 0


# -- parser -------------------------------------------------------------------------------


def _add_db_arguments(p: argparse.ArgumentParser, *, create: bool = False) -> None:
    """The database options of an `apps` command. Only a command that `create`s may start a new
    database; every other one refuses a path where no database exists."""
    p.set_defaults(db_must_exist=not create)
    p.add_argument("--db", default=os.environ.get("PUSHREACH_DB", "./pushreach.db"),
                   help="database of the service: an SQLite path or a postgresql://user@host:port/db URL "
                        "(default ./pushreach.db, env PUSHREACH_DB)"
                   + ("; an SQLite file is created if it does not exist" if create else "; an SQLite file must exist"))
    p.add_argument("--master-key-file", default="",
                   help="master key file that encrypts SMS credentials (default <db>.key; required "
                        "with a PostgreSQL --db; "
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
    create.add_argument("--export", action="store_true",
                        help="print shell export lines for PUSHREACH_ACCESS_ID and PUSHREACH_SECRET_KEY, "
                             "for eval \"$(pushreach apps create NAME --export)\"")
    _add_db_arguments(create, create=True)
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

    set_channel = apps_sub.add_parser(
        "set-channel",
        help="store an app's credentials for one push channel (encrypted)",
        description="Store an app's credentials for one push channel, encrypted with the master key; they "
        "replace any set before for that channel. FILE is JSON: apns {key_id, team_id, topic, private_key}, "
        "fcm the service-account JSON as Firebase gives it, webhook {url, secret}, hms {app_id, client_secret}, "
        "honor {app_id, client_id, client_secret}, xiaomi {app_secret, package_name}, oppo {app_key, "
        "master_secret}, vivo {app_id, app_key, app_secret}. See docs/CHANNELS.md.",
    )
    set_channel.add_argument("access_id", help="the app's access id")
    set_channel.add_argument("channel", help="apns, fcm, hms, honor, xiaomi, oppo, vivo or webhook")
    set_channel.add_argument("--file", required=True, help="the credentials file (JSON)")
    _add_db_arguments(set_channel)
    set_channel.set_defaults(func=cmd_apps_set_channel)

    lst = apps_sub.add_parser("list", help="list apps", description="List apps (never their secrets).")
    _add_db_arguments(lst)
    lst.set_defaults(func=cmd_apps_list)

    rotate = apps_sub.add_parser("rotate-secret", help="give an app a new secret key",
                                 description="Give an app a new secret key. The old one stops working; a service "
                                 "already running on the database may accept it for up to 2 s more.")
    rotate.add_argument("access_id", help="the app's access id")
    _add_db_arguments(rotate)
    rotate.set_defaults(func=cmd_apps_rotate_secret)

    rotate_receipt = apps_sub.add_parser(
        "rotate-receipt-key",
        help="give an app a new receipt key (receipts and device keys)",
        description="Give an app a new receipt key: receipts in new pushes and new device keys use it. "
        "Receipts and device keys made with the older keys keep working for 7 days, then are refused. "
        "See docs/DEVICES.md.",
    )
    rotate_receipt.add_argument("access_id", help="the app's access id")
    _add_db_arguments(rotate_receipt)
    rotate_receipt.set_defaults(func=cmd_apps_rotate_receipt_key)

    rotate_key = apps_sub.add_parser(
        "rotate-master-key",
        help="re-seal all stored SMS and channel credentials and receipt keys under a new master key",
        description="Re-seal every app's SMS and push-channel credentials and receipt keys under the key in --new-key-file (a new random "
        "key is written there, mode 0600, if the file does not exist), in one transaction. Stop the "
        "service first; afterwards replace the master key file with the new one and start it again. "
        "Running it again after a crash is safe. See docs/SECURITY.md.",
    )
    rotate_key.add_argument("--new-key-file", required=True, help="file with the new master key (created if absent)")
    _add_db_arguments(rotate_key)
    rotate_key.set_defaults(func=cmd_apps_rotate_master_key)

    emu = sub.add_parser(
        "sms-emulator",
        help="run a loopback Tencent Cloud SMS endpoint for tests and trials",
        description="Run a local endpoint that speaks Tencent Cloud SMS (SendSms, PullSmsSendStatus) with "
        "signature checks and injectable faults. Point `serve --sms-provider tencent "
        "--tencent-sms-endpoint http://HOST:PORT` at it.",
    )
    emulator.add_arguments(emu)
    emu.set_defaults(func=cmd_sms_emulator)

    from .channels.emulator import push as push_emulator

    push_emu = sub.add_parser(
        "push-emulator",
        help="run loopback emulators of every push channel for tests and trials",
        description="Run loopback endpoints that speak APNs (HTTP/2 + TLS, ES256 provider tokens checked), "
        "FCM HTTP v1 (OAuth2 JWT-bearer grant checked), the Huawei, Honor, Xiaomi, OPPO and vivo push APIs "
        "(their auth checked) and a webhook receiver (signatures checked), with injectable faults. Once "
        "serving it prints one JSON line: each endpoint and the `serve` settings that point at them "
        "(see docs/CHANNELS.md).",
    )
    push_emulator.add_arguments(push_emu)
    push_emu.set_defaults(func=cmd_push_emulator)
    _add_operator_commands(sub)
    return parser


def _add_connection_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", default=os.environ.get("PUSHREACH_SERVER", "127.0.0.1:50051"),
                   help="gRPC address of the service (default 127.0.0.1:50051, env PUSHREACH_SERVER)")
    p.add_argument("--access-id", default="", help="app access id (or PUSHREACH_ACCESS_ID)")
    p.add_argument("--secret-key", default="",
                   help="app secret key (or PUSHREACH_SECRET_KEY; prefer the variable: flags show in `ps`)")
    p.add_argument("--tls", action="store_true", help="connect with TLS (system root certificates)")
    p.add_argument("--ca-file", default="", help="connect with TLS, trusting this CA certificate (PEM)")
    p.add_argument("--server-name", default="",
                   help="connect with TLS and check the server's certificate against this name instead of "
                        "the host of --server (e.g. --server 10.0.0.5:50051 --server-name pushreach.internal)")
    p.add_argument("--cert-file", default="",
                   help="client certificate chain (PEM) for a server that requires client certificates (mutual TLS); "
                        "needs --key-file")
    p.add_argument("--key-file", default="", help="private key (PEM) of --cert-file")
    p.add_argument("--timeout", type=float, default=10.0, help="deadline of each call in seconds (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _add_operator_commands(sub: Any) -> None:
    push = sub.add_parser(
        "push", help="send a push from a JSON file",
        description="Send a push. FILE (or - for stdin) is a JSON PushRequest in pushreach's field names "
        "(enums by name or number); with --tpns it is a TPNS /v3/push/app body as is (audience_type "
        "\"token_list\", message_type \"notify\", trigger_condition 0/1/2). A request_id is added when the "
        "body has none, so retries never push twice.",
    )
    push.add_argument("file", help="JSON push body, or - for stdin")
    push.add_argument("--tpns", action="store_true", help="FILE is a TPNS /v3/push/app body")
    _add_connection_arguments(push)
    push.set_defaults(func=cmd_push)

    status = sub.add_parser(
        "status", help="show a push: fallback state, funnel counts, targets",
        description="Show a push: its SMS fallback state (pending with due time, firing, done, cancelled), "
        "funnel counts (targets, arrived, clicked, SMS by outcome, no phone, arrived after SMS) and every target.",
    )
    status.add_argument("push_id", help="the push id that `push` printed")
    _add_connection_arguments(status)
    status.set_defaults(func=cmd_status)

    sms = sub.add_parser("sms", help="supplementary SMS records", description="Supplementary SMS records.")
    sms_sub = sms.add_subparsers(dest="sms_command", required=True)
    lst = sms_sub.add_parser(
        "list", help="list SMS records, newest first",
        description="List the app's SMS records, newest first. Times are ISO 8601 (no zone = UTC) or an age "
        "such as 30m, 24h, 7d. Phone numbers are masked unless --full-numbers.",
    )
    lst.add_argument("--push-id", default="", help="only this push")
    lst.add_argument("--phone", default="", help="only this phone number")
    lst.add_argument("--status", action="append", default=[],
                     help="only this status (sent, delivered, failed, rate_limited, unknown, undelivered, sending); "
                          "repeat for several")
    lst.add_argument("--since", type=parse_time, default=None, help="created at or after this time")
    lst.add_argument("--until", type=parse_time, default=None, help="created before this time")
    lst.add_argument("--full-numbers", action="store_true", help="show phone numbers in full")
    lst.add_argument("--limit", type=int, default=100, help="at most this many records (default 100)")
    _add_connection_arguments(lst)
    lst.set_defaults(func=cmd_sms_list)

    stats = sub.add_parser(
        "stats", help="the app's statistics over a time range",
        description="The app's figures for pushes accepted in a time range (default: the last 7 days): pushes, "
        "targets, arrival and click rates, SMS by outcome, SMS fee, pending fallbacks. Times are ISO 8601 "
        "(no zone = UTC) or an age such as 30m, 24h, 7d.",
    )
    stats.add_argument("--since", type=parse_time, default=None, help="pushes accepted at or after this time")
    stats.add_argument("--until", type=parse_time, default=None, help="pushes accepted before this time")
    _add_connection_arguments(stats)
    stats.set_defaults(func=cmd_stats)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except _UsageError as exc:
        print(f"pushreach: {exc}", file=sys.stderr)
        return 2
    except (DomainError, SecretError) as exc:
        print(f"pushreach: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

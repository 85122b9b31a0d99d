"""TPNS's REST API v3 spoken over plain HTTP, as TPNS server SDKs do, against a real server."""

from __future__ import annotations

import base64
import copy
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web
from pushreach import basic_auth
from pushreach.v1 import device_pb2, push_pb2, sms_pb2
from pushreachd.http.tpns import TpnsApi, tpns_sign

from tests.harness import Caller, Running, start_service, test_settings, wait_done
from tests.unit.test_tpns import TPNS_SAMPLE


def test_sign_matches_tpns_documented_sample() -> None:
    # TPNS signature doc (product 1024, 34213): its AccessId, SecretKey, TimeStamp and body.
    body = (
        '{"audience_type": "account","platform": "android","message": {"title": "test title",'
        '"content": "test content","android": { "action": {"action_type": 3,'
        '"intent": "xgscheme://com.xg.push/notify_detail?param1=xg"}}},"message_type": "notify",'
        '"account_list": ["5822f0eee44c3625ef0000bb"] }'
    )
    sign = tpns_sign("1452fcebae9f3115ba794fb0fff2fd73", "1565314789", "1500001048", body.encode())
    assert sign == "Y2QyMDc3NDY4MmJmNzhiZmRiNDNlMTdkMWQ1ZDU2YjNlNWI3ODlhMTY3MGZjMTUyN2VmNTRjNjVkMmQ3Yjc2ZA=="
    assert len(base64.b64decode(sign)) == 64  # the hex digest, Base64-encoded


class Tpns:
    """A plain HTTP client holding one app's TPNS credentials."""

    def __init__(self, http: httpx.AsyncClient, access_id: str, secret: str) -> None:
        self.http, self.access_id, self.secret = http, access_id, secret

    async def basic(self, path: str, body: dict | bytes, **headers: str) -> dict:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        token = base64.b64encode(f"{self.access_id}:{self.secret}".encode()).decode()
        r = await self.http.post(path, content=raw, headers={"Authorization": f"Basic {token}", **headers})
        assert r.status_code == 200
        return r.json()

    async def signed(self, path: str, body: dict | bytes, *, at: float | None = None, sent: bytes | None = None,
                     sign: str | None = None) -> dict:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        stamp = str(int(time.time() if at is None else at))
        headers = {
            "Content-Type": "application/json",
            "AccessId": self.access_id,
            "TimeStamp": stamp,
            "Sign": sign if sign is not None else tpns_sign(self.secret, stamp, self.access_id, raw),
        }
        r = await self.http.post(path, content=raw if sent is None else sent, headers=headers)
        assert r.status_code == 200
        return r.json()


@pytest.fixture
async def tpns(tmp_path) -> AsyncIterator[tuple[Tpns, Caller]]:  # type: ignore[no-untyped-def]
    """`pushreach serve` with its HTTP surface on: TPNS's routes are served there."""
    server = await start_service(test_settings(tmp_path, http_listen="127.0.0.1:0", auth_failure_limit=0))
    s = server.service
    app, secret = await s.apps.create_app("tpns")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{s.http_port}") as http:
            yield Tpns(http, app.access_id, secret), Caller(server.channel, basic_auth(app.access_id, secret), app.access_id)
    finally:
        await server.close()
        await s.stop()


async def test_the_stand_alone_application_answers_too(server: Running) -> None:
    """TpnsApi.application(): the same routes without the HTTP surface (its own auth only)."""
    s = server.service
    api = TpnsApi(s.apps, s.pushes, s.devices, s.clock)
    runner = web.AppRunner(api.application())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        app, secret = await s.apps.create_app("alone")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{runner.addresses[0][1]}") as http:
            client = Tpns(http, app.access_id, secret)
            assert (await client.basic("/v3/push/app", TPNS_SAMPLE))["ret_code"] == 0
            assert (await client.signed("/v3/push/app", TPNS_SAMPLE))["ret_code"] == 0
            assert (await client.signed("/v3/push/app", TPNS_SAMPLE, sign="eA=="))["ret_code"] == 1008003
    finally:
        await runner.cleanup()


async def test_the_seed_sample_with_basic_auth_is_the_same_push_as_over_grpc(tpns: tuple[Tpns, Caller]) -> None:
    client, grpc_app = tpns
    for i, token in enumerate(TPNS_SAMPLE["token_list"]):
        await grpc_app.bind(token, f"+86138000000{i}1")
    answer = await client.basic("/v3/push/app", TPNS_SAMPLE)
    assert answer["ret_code"] == 0 and answer["err_msg"] == "" and answer["seq"] == 0
    assert answer["environment"] == "product" and json.loads(answer["result"])["target_count"] == 2
    got = await grpc_app.push.GetPush(push_pb2.GetPushRequest(push_id=answer["push_id"]), metadata=grpc_app.metadata)
    assert got.push.request.sms_info.trigger_condition == push_pb2.TRIGGER_CONDITION_NOT_ARRIVED
    assert got.push.fallback_state == push_pb2.FALLBACK_STATE_PENDING
    assert [t.token for t in got.targets] == TPNS_SAMPLE["token_list"]


async def test_signed_push_fires_its_fallback_per_phone_with_the_sms_info_template(tpns: tuple[Tpns, Caller]) -> None:
    client, grpc_app = tpns
    await grpc_app.bind("tokA", "+8613800000001")
    await grpc_app.bind("tokB", "+8613800000002")
    body = copy.deepcopy(TPNS_SAMPLE)
    body["token_list"] = ["tokA", "tokB", "tokC"]  # tokC has no phone: counted, not sent
    body["sms_info"]["delay_trigger_time"] = 1
    body["seq"] = 42
    answer = await client.signed("/v3/push/app", body)
    assert answer["ret_code"] == 0 and answer["seq"] == 42, answer
    done = await wait_done(grpc_app, answer["push_id"])
    assert done.funnel.sms_sent_count == 2 and done.funnel.no_phone_count == 1
    records = await grpc_app.sms.ListSmsRecords(
        sms_pb2.ListSmsRecordsRequest(push_id=answer["push_id"], show_full_phone_number=True), metadata=grpc_app.metadata
    )
    assert sorted(r.phone_number for r in records.records) == ["+8613800000001", "+8613800000002"]
    for r in records.records:
        assert (r.sms_template_id, r.sms_sign_name, r.sms_app_id) == ("123", "signe_name", "appId")
        assert list(r.sms_template_params) == ["param1", "param2"]


async def test_signature_failures_get_tpns_auth_code(tpns: tuple[Tpns, Caller]) -> None:
    client, _ = tpns
    body = json.dumps(TPNS_SAMPLE).encode()
    assert (await client.signed("/v3/push/app", body, sign="d3Jvbmc="))["ret_code"] == 1008003
    stale = await client.signed("/v3/push/app", body, at=time.time() - 3600)
    assert stale["ret_code"] == 1008003 and "TimeStamp" in stale["err_msg"]
    changed = body.replace(b"test loop", b"test LOOP")
    altered = await client.signed("/v3/push/app", body, sent=changed)
    assert altered["ret_code"] == 1008003 and "Sign" in altered["err_msg"]
    wrong_key = Tpns(client.http, client.access_id, "not-the-secret")
    assert (await wrong_key.signed("/v3/push/app", body))["ret_code"] == 1008003
    assert (await wrong_key.basic("/v3/push/app", body))["ret_code"] == 1008003
    r = await client.http.post("/v3/push/app", content=body)
    assert r.json()["ret_code"] == 1008003
    # A correct signed request works once; the same bytes again are a replay.
    stamp = str(int(time.time()))
    sign = tpns_sign(client.secret, stamp, client.access_id, body)
    headers = {"AccessId": client.access_id, "TimeStamp": stamp, "Sign": sign}
    first = (await client.http.post("/v3/push/app", content=body, headers=headers)).json()
    again = (await client.http.post("/v3/push/app", content=body, headers=headers)).json()
    assert first["ret_code"] == 0 and again["ret_code"] == 1008003


async def test_bad_bodies_get_tpns_codes_naming_the_field(tpns: tuple[Tpns, Caller]) -> None:
    client, _ = tpns
    assert (await client.basic("/v3/push/app", b"{not json"))["ret_code"] == 1008001
    missing = {k: v for k, v in TPNS_SAMPLE.items() if k != "message"}
    answer = await client.basic("/v3/push/app", missing)
    assert answer["ret_code"] == 1008002 and "message" in answer["err_msg"]
    bad = {**TPNS_SAMPLE, "sms_info": {**TPNS_SAMPLE["sms_info"], "trigger_condition": 7}}
    answer = await client.basic("/v3/push/app", bad)
    assert answer["ret_code"] == 1008007 and "sms_info.trigger_condition" in answer["err_msg"]
    long_title = {**TPNS_SAMPLE, "message": {"title": "x" * 300, "content": "c"}}
    answer = await client.basic("/v3/push/app", long_title)
    assert answer["ret_code"] == 1008007 and "message.title" in answer["err_msg"]


async def test_request_id_header_makes_the_push_idempotent(tpns: tuple[Tpns, Caller]) -> None:
    client, _ = tpns
    first = await client.basic("/v3/push/app", TPNS_SAMPLE, **{"X-Request-Id": "order-42"})
    again = await client.basic("/v3/push/app", TPNS_SAMPLE, **{"X-Request-Id": "order-42"})
    assert first["ret_code"] == again["ret_code"] == 0 and first["push_id"] == again["push_id"]
    other = await client.basic("/v3/push/app", {**TPNS_SAMPLE, "multi_pkg": False}, **{"X-Request-Id": "order-42"})
    assert other["ret_code"] == 1008007


async def test_device_endpoints_then_account_tag_and_all_pushes(tpns: tuple[Tpns, Caller]) -> None:
    client, grpc_app = tpns
    bound = await client.basic("/v3/device/account/batchoperate", {
        "operator_type": 2,
        "token_accounts": [
            {"token": "t1", "account_list": [{"account": "alice"}, {"account": "+8613800000011", "account_type": 1002}]},
            {"token": "t2", "account_list": [{"account": "bob"}]},
        ],
    })
    assert bound["ret_code"] == 0 and bound["result"] == ["0", "0"]
    device = (await grpc_app.device.GetDevice(device_pb2.GetDeviceRequest(token="t1"), metadata=grpc_app.metadata)).device
    assert list(device.accounts) == ["alice"] and device.phone_number == "+8613800000011"
    tagged = await client.basic("/v3/device/tag", {"operator_type": 7, "token_list": ["t1", "t2"], "tag_list": ["vip"]})
    assert tagged["ret_code"] == 0
    await client.basic("/v3/device/tag", {"operator_type": 10, "tag_token_list": [{"tag": "vip", "token": "t2"}]})
    device = (await grpc_app.device.GetDevice(device_pb2.GetDeviceRequest(token="t2"), metadata=grpc_app.metadata)).device
    assert list(device.tags) == []

    message = {"message_type": "notify", "message": {"title": "t", "content": "c"}}
    by_account = await client.basic("/v3/push/app", {**message, "audience_type": "account_list", "account_list": ["alice", "bob"]})
    assert json.loads(by_account["result"])["target_count"] == 2
    by_tag = await client.basic("/v3/push/app", {**message, "audience_type": "tag", "tag_rules": [
        {"tag_items": [{"tags": ["vip"], "is_not": False, "tags_operator": "OR", "items_operator": "OR",
                        "tag_type": "xg_user_define"}], "operator": "OR", "is_not": False}]})
    everyone = await client.basic("/v3/push/app", {**message, "audience_type": "all"})
    auto = await client.basic("/v3/push/app", {**message, "audience_type": "tag", "tag_rules": [
        {"tag_items": [{"tags": ["guangdong"], "tag_type": "xg_auto_province"}]}]})
    assert auto["ret_code"] == 1008007 and "tag_type" in auto["err_msg"]
    await tpns_drain(grpc_app, by_tag["push_id"], everyone["push_id"])
    record = await client.basic("/v3/statistics/get_push_record", {"pushIds": [by_tag["push_id"], everyone["push_id"]]})
    assert record["retCode"] == 0 and record["errMsg"] == ""
    counts = {r["pushId"]: r["targetCount"] for r in record["pushRecords"]}
    assert counts == {by_tag["push_id"]: 1, everyone["push_id"]: 2}
    unknown = await client.basic("/v3/statistics/get_push_record", {"pushId": "nope"})
    assert unknown["retCode"] == 1008015

    await client.basic("/v3/device/account/batchoperate", {"operator_type": 5, "account_list": [{"account": "alice"}]})
    device = (await grpc_app.device.GetDevice(device_pb2.GetDeviceRequest(token="t1"), metadata=grpc_app.metadata)).device
    assert list(device.accounts) == []
    refused = await client.basic("/v3/device/tag", {"operator_type": 11})
    assert refused["ret_code"] == 1008007 and "operator_type" in refused["err_msg"]


async def tpns_drain(app: Caller, *push_ids: str) -> None:
    import asyncio

    for push_id in push_ids:
        for _ in range(200):
            got = await app.push.GetPush(push_pb2.GetPushRequest(push_id=push_id), metadata=app.metadata)
            if not got.push.targets_pending:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError(f"push {push_id} still resolving")


async def test_account_push_type_as_tpns(tpns: tuple[Tpns, Caller]) -> None:
    client, _ = tpns
    for token in ("old-phone", "new-phone"):  # bound in this order: new-phone is the latest
        await client.basic("/v3/device/account/batchoperate", {
            "operator_type": 2, "token_accounts": [{"token": token, "account_list": [{"account": "carol"}]}]})
    body = {"audience_type": "account", "account_list": ["carol"], "message_type": "notify",
            "message": {"title": "t", "content": "c"}}
    latest = await client.basic("/v3/push/app", body)  # TPNS's default 0: the latest device
    every = await client.basic("/v3/push/app", {**body, "account_push_type": 1})
    assert json.loads(latest["result"])["target_count"] == 1
    assert json.loads(every["result"])["target_count"] == 2

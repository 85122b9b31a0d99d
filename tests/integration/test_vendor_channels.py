"""The vendor channels (Huawei, Honor, Xiaomi, OPPO, vivo) against the loopback emulator:
real HTTP, the vendors' wire protocols and auth, a fake clock for token lifetimes and
retries (backoff delays of 0, so nothing sleeps)."""

from __future__ import annotations

import pytest
from pushreachd.channels import hms, honor, oppo, vivo, xiaomi
from pushreachd.channels.base import Backoff, PushDelivery, TargetPayload
from pushreachd.channels.emulator.android import EmulatorState, running
from pushreachd.model import AudienceType, PushOutcome, PushSpec, VendorOptions

from tests.fakes import FakeClock

NO_WAIT = Backoff(base=0.0, attempts=3)

CREDS = {
    "hms": {"app_id": "10086", "client_secret": "hms-secret"},
    "honor": {"app_id": "104400", "client_id": "honor-client", "client_secret": "honor-secret"},
    "xiaomi": {"app_secret": "xm-secret==", "package_name": "com.example.app"},
    "oppo": {"app_key": "oppo-key", "master_secret": "oppo-master"},
    "vivo": {"app_id": "1001", "app_key": "vivo-key", "app_secret": "vivo-secret"},
}
APP_KEY = {"hms": "app_id", "honor": "app_id", "xiaomi": "package_name", "oppo": "app_key", "vivo": "app_id"}
VENDORS = tuple(CREDS)


def open_channel(vendor: str, url: str, clock: FakeClock, **creds: str):  # type: ignore[no-untyped-def]
    c = {**CREDS[vendor], **creds}
    if vendor == "hms":
        return hms.HmsChannel(c, endpoint=url, token_endpoint=f"{url}/oauth2/v3/token", clock=clock, backoff=NO_WAIT)
    if vendor == "honor":
        return honor.HonorChannel(c, endpoint=url, token_endpoint=f"{url}/auth/token", clock=clock, backoff=NO_WAIT)
    if vendor == "xiaomi":
        return xiaomi.XiaomiChannel(c, endpoint=url, clock=clock, backoff=NO_WAIT)
    if vendor == "oppo":
        return oppo.OppoChannel(c, endpoint=url, clock=clock, backoff=NO_WAIT)
    return vivo.VivoChannel(c, endpoint=url, clock=clock, backoff=NO_WAIT)


def delivery(clock: FakeClock, tokens: list[str], *, push_id: str = "p-1", shared_receipt: bool = False,
             vendor_options: VendorOptions | None = None, ttl: float = 3600) -> PushDelivery:
    spec = PushSpec(
        audience_type=AudienceType.TOKEN_LIST,
        token_list=tuple(tokens),
        account_list=(),
        title="Approval needed",
        content="Expense #42 waits for you",
        vendor=vendor_options,
    )
    targets = tuple(TargetPayload(t, "r-shared" if shared_receipt else f"r-{t}") for t in tokens)
    return PushDelivery("acc-1", push_id, spec, targets, clock.time() + ttl)


@pytest.fixture
async def emulator():  # type: ignore[no-untyped-def]
    state = EmulatorState()
    for vendor, creds in CREDS.items():
        state.add_app(vendor, creds[APP_KEY[vendor]], **creds)
    async with running(state) as url:
        yield state, url


@pytest.mark.parametrize("vendor", VENDORS)
async def test_push_reaches_device_with_receipt_and_classification(emulator, vendor) -> None:  # type: ignore[no-untyped-def]
    state, url = emulator
    clock = FakeClock()
    ch = open_channel(vendor, url, clock)
    opts = VendorOptions(hw_category="WORK", hw_importance=2, xm_ch_id="service", oppo_ch_id="orders",
                         oppo_category="ORDER", vivo_ch_id="1", vivo_category="ORDER")
    try:
        outcomes = await ch.send(delivery(clock, ["tok-a", "tok-b"], vendor_options=opts))
    finally:
        await ch.aclose()
    assert sorted((o.token, o.outcome) for o in outcomes) == [("tok-a", PushOutcome.ACCEPTED), ("tok-b", PushOutcome.ACCEPTED)]
    got = state.delivered_to(vendor, "tok-a")
    assert len(got) == 1
    assert got[0].title == "Approval needed"
    assert got[0].data["pushreach_push_id"] == "p-1"
    assert got[0].data["pushreach_receipt"] == "r-tok-a"
    expected = {
        "hms": {"category": "WORK", "importance": "NORMAL"},
        "honor": {"importance": "NORMAL"},
        "xiaomi": {"channel_id": "service"},
        "oppo": {"channel_id": "orders", "category": "ORDER"},
        "vivo": {"classification": 1, "category": "ORDER"},
    }[vendor]
    assert {k: got[0].classification[k] for k in expected} == expected


@pytest.mark.parametrize("vendor", VENDORS)
async def test_app_default_classification_from_credentials(emulator, vendor) -> None:  # type: ignore[no-untyped-def]
    state, url = emulator
    clock = FakeClock()
    defaults = {
        "hms": {"category": "ACCOUNT"},
        "honor": {"importance": "LOW"},
        "xiaomi": {"channel_id": "default-ch"},
        "oppo": {"channel_id": "default-ch", "category": "ACCOUNT"},
        "vivo": {"classification": 1, "category": "ACCOUNT"},
    }[vendor]
    ch = open_channel(vendor, url, clock, **defaults)
    try:
        [outcome] = await ch.send(delivery(clock, ["tok-a"]))
    finally:
        await ch.aclose()
    assert outcome.outcome == PushOutcome.ACCEPTED
    [got] = state.delivered_to(vendor, "tok-a")
    assert {k: got.classification[k] for k in defaults} == defaults


@pytest.mark.parametrize("vendor", VENDORS)
async def test_invalid_token_is_reported_per_token(emulator, vendor) -> None:  # type: ignore[no-untyped-def]
    state, url = emulator
    clock = FakeClock()
    state.mark_invalid(vendor, "tok-gone")
    ch = open_channel(vendor, url, clock)
    try:
        outcomes = await ch.send(delivery(clock, ["tok-ok", "tok-gone"], shared_receipt=True))
        alone = await ch.send(delivery(clock, ["tok-gone"], push_id="p-2"))
    finally:
        await ch.aclose()
    by_token = {o.token: o.outcome for o in outcomes}
    assert by_token == {"tok-ok": PushOutcome.ACCEPTED, "tok-gone": PushOutcome.INVALID_TOKEN}
    assert [o.outcome for o in alone] == [PushOutcome.INVALID_TOKEN]
    assert state.delivered_to(vendor, "tok-gone") == []


@pytest.mark.parametrize("vendor", VENDORS)
async def test_flow_control_is_retried(emulator, vendor) -> None:  # type: ignore[no-untyped-def]
    state, url = emulator
    clock = FakeClock()
    state.fail_next(vendor, "flow_control", times=2)
    ch = open_channel(vendor, url, clock)
    try:
        [outcome] = await ch.send(delivery(clock, ["tok-a"]))
    finally:
        await ch.aclose()
    assert outcome.outcome == PushOutcome.ACCEPTED
    assert len(state.delivered_to(vendor, "tok-a")) == 1


@pytest.mark.parametrize("vendor", VENDORS)
async def test_flow_control_gives_up_after_backoff(emulator, vendor) -> None:  # type: ignore[no-untyped-def]
    state, url = emulator
    clock = FakeClock()
    state.fail_next(vendor, "flow_control", times=10)
    ch = open_channel(vendor, url, clock)
    try:
        [outcome] = await ch.send(delivery(clock, ["tok-a"]))
    finally:
        await ch.aclose()
    assert outcome.outcome == PushOutcome.FAILED
    assert state.delivered_to(vendor, "tok-a") == []


@pytest.mark.parametrize("vendor", ["hms", "honor", "oppo", "vivo"])
async def test_expired_auth_token_is_renewed(emulator, vendor) -> None:  # type: ignore[no-untyped-def]
    state, url = emulator
    clock = FakeClock()
    ch = open_channel(vendor, url, clock)
    try:
        await ch.send(delivery(clock, ["tok-a"]))
        assert state.auth_calls[vendor] == 1
        state.expire_auth_tokens(vendor)  # the vendor expires it early; our cache still trusts it
        [outcome] = await ch.send(delivery(clock, ["tok-b"], push_id="p-2"))
        assert outcome.outcome == PushOutcome.ACCEPTED
        assert state.auth_calls[vendor] == 2
        await ch.send(delivery(clock, ["tok-c"], push_id="p-3"))
        assert state.auth_calls[vendor] == 2  # the renewed token is cached
    finally:
        await ch.aclose()


@pytest.mark.parametrize("vendor", ["hms", "honor", "oppo", "vivo"])
async def test_auth_token_renewed_before_it_expires(emulator, vendor) -> None:  # type: ignore[no-untyped-def]
    state, url = emulator
    clock = FakeClock()
    ch = open_channel(vendor, url, clock)
    try:
        await ch.send(delivery(clock, ["tok-a"]))
        await clock.advance(25 * 3600)  # past every vendor's token lifetime (1 h to 24 h)
        await ch.send(delivery(clock, ["tok-b"], push_id="p-2"))
    finally:
        await ch.aclose()
    assert state.auth_calls[vendor] == 2


WRONG_SECRET = {
    "hms": ({"client_secret": "nope"}, "oauth:1101"),
    "honor": ({"client_secret": "nope"}, "oauth:1101"),
    "xiaomi": ({"app_secret": "nope"}, "21301"),
    "oppo": ({"master_secret": "nope"}, "16"),
    "vivo": ({"app_secret": "nope"}, "10200"),
}


@pytest.mark.parametrize("vendor", VENDORS)
async def test_wrong_secret_surfaces_vendor_code(emulator, vendor) -> None:  # type: ignore[no-untyped-def]
    state, url = emulator
    clock = FakeClock()
    creds, code = WRONG_SECRET[vendor]
    ch = open_channel(vendor, url, clock, **creds)
    try:
        outcomes = await ch.send(delivery(clock, ["tok-a", "tok-b"], shared_receipt=True))
    finally:
        await ch.aclose()
    assert {(o.outcome, o.code) for o in outcomes} == {(PushOutcome.FAILED, code)}
    assert state.delivered == []


@pytest.mark.parametrize(("vendor", "code"), [("oppo", "33"), ("vivo", "10070")])
async def test_quota_exhausted_fails_with_vendor_code(emulator, vendor, code) -> None:  # type: ignore[no-untyped-def]
    state, url = emulator
    clock = FakeClock()
    state.fail_next(vendor, "quota")
    ch = open_channel(vendor, url, clock)
    try:
        [outcome] = await ch.send(delivery(clock, ["tok-a"]))
    finally:
        await ch.aclose()
    assert (outcome.outcome, outcome.code) == (PushOutcome.FAILED, code)
    assert state.send_calls[vendor] <= 1  # not retried


@pytest.mark.parametrize("vendor", VENDORS)
async def test_channel_rules_disable_skips_the_vendor(emulator, vendor) -> None:  # type: ignore[no-untyped-def]
    state, url = emulator
    clock = FakeClock()
    ch = open_channel(vendor, url, clock)
    disabled = VendorOptions(disabled_channels=frozenset({ch.channel}))
    try:
        [outcome] = await ch.send(delivery(clock, ["tok-a"], vendor_options=disabled))
    finally:
        await ch.aclose()
    assert (outcome.outcome, outcome.code) == (PushOutcome.NO_CHANNEL, "channel_rules")
    assert state.send_calls[vendor] == 0


async def test_expired_push_is_not_sent(emulator) -> None:  # type: ignore[no-untyped-def]
    state, url = emulator
    clock = FakeClock()
    ch = open_channel("hms", url, clock)
    try:
        [outcome] = await ch.send(delivery(clock, ["tok-a"], ttl=-1))
    finally:
        await ch.aclose()
    assert outcome.outcome == PushOutcome.EXPIRED
    assert state.send_calls["hms"] == 0


async def test_huawei_3000_tokens_go_out_in_3_calls(emulator) -> None:  # type: ignore[no-untyped-def]
    state, url = emulator
    clock = FakeClock()
    tokens = [f"tok-{i:04d}" for i in range(3000)]
    ch = open_channel("hms", url, clock)
    try:
        outcomes = await ch.send(delivery(clock, tokens, shared_receipt=True))
    finally:
        await ch.aclose()
    assert state.send_calls["hms"] == 3
    assert len(outcomes) == 3000
    assert {o.outcome for o in outcomes} == {PushOutcome.ACCEPTED}
    assert len({d.token for d in state.delivered}) == 3000


async def test_huawei_partial_success_marks_only_illegal_tokens(emulator) -> None:  # type: ignore[no-untyped-def]
    state, url = emulator
    clock = FakeClock()
    tokens = [f"tok-{i}" for i in range(10)]
    state.mark_invalid("hms", "tok-3", "tok-7")
    ch = open_channel("hms", url, clock)
    try:
        outcomes = await ch.send(delivery(clock, tokens, shared_receipt=True))
    finally:
        await ch.aclose()
    invalid = sorted(o.token for o in outcomes if o.outcome == PushOutcome.INVALID_TOKEN)
    assert invalid == ["tok-3", "tok-7"]
    assert {o.code for o in outcomes if o.outcome == PushOutcome.INVALID_TOKEN} == {"80100000"}
    assert state.send_calls["hms"] == 1


async def test_per_token_receipts_each_reach_their_device(emulator) -> None:  # type: ignore[no-untyped-def]
    """Huawei sends one payload per call, so targets with different receipts cannot share
    a call: each device still gets its own receipt."""
    state, url = emulator
    clock = FakeClock()
    ch = open_channel("hms", url, clock)
    try:
        await ch.send(delivery(clock, ["tok-a", "tok-b", "tok-c"]))
    finally:
        await ch.aclose()
    assert {d.token: d.data["pushreach_receipt"] for d in state.delivered} == {
        "tok-a": "r-tok-a", "tok-b": "r-tok-b", "tok-c": "r-tok-c"}


async def test_oppo_batches_per_token_receipts_in_one_call(emulator) -> None:  # type: ignore[no-untyped-def]
    state, url = emulator
    clock = FakeClock()
    tokens = [f"tok-{i}" for i in range(1500)]
    ch = open_channel("oppo", url, clock)
    try:
        outcomes = await ch.send(delivery(clock, tokens))
    finally:
        await ch.aclose()
    assert state.send_calls["oppo"] == 2  # 1,000 messages per unicast_batch call
    assert {o.outcome for o in outcomes} == {PushOutcome.ACCEPTED}
    assert state.delivered_to("oppo", "tok-1499")[0].data["pushreach_receipt"] == "r-tok-1499"


@pytest.mark.parametrize("vendor", VENDORS)
async def test_create_takes_endpoints_clock_from_the_context(emulator, vendor) -> None:  # type: ignore[no-untyped-def]
    """What the channel registry calls: module.create(credentials, context)."""
    from types import SimpleNamespace

    state, url = emulator
    clock = FakeClock()
    endpoints = {f"{v}_endpoint": url for v in VENDORS}
    endpoints |= {"hms_token_endpoint": f"{url}/oauth2/v3/token", "honor_token_endpoint": f"{url}/auth/token"}
    context = SimpleNamespace(endpoints=endpoints, ca_file="", timeout=5.0, clock=clock)
    module = {"hms": hms, "honor": honor, "xiaomi": xiaomi, "oppo": oppo, "vivo": vivo}[vendor]
    ch = module.create(module.validate_credentials(CREDS[vendor]), context)
    try:
        [outcome] = await ch.send(delivery(clock, ["tok-a"]))
    finally:
        await ch.aclose()
    assert ch.http.is_closed
    assert outcome.outcome == PushOutcome.ACCEPTED
    assert len(state.delivered_to(vendor, "tok-a")) == 1


async def test_emulator_control_endpoints(emulator) -> None:  # type: ignore[no-untyped-def]
    import httpx

    state, url = emulator
    clock = FakeClock()
    async with httpx.AsyncClient(base_url=url) as http:
        assert (await http.post("/_emulator/faults", json={"vendor": "xiaomi", "fault": "quota"})).status_code == 200
        assert (await http.post("/_emulator/faults", json={"vendor": "nokia", "fault": "quota"})).status_code == 400
        assert (await http.post("/_emulator/faults", json={"vendor": "hms", "fault": "invalid_token",
                                                           "tokens": ["tok-x"]})).status_code == 200
        ch = open_channel("xiaomi", url, clock)
        try:
            [refused] = await ch.send(delivery(clock, ["tok-a"]))
            [accepted] = await ch.send(delivery(clock, ["tok-a"], push_id="p-2"))
        finally:
            await ch.aclose()
        assert (refused.outcome, refused.code) == (PushOutcome.FAILED, "200002")
        assert accepted.outcome == PushOutcome.ACCEPTED
        got = (await http.get("/_emulator/delivered", params={"vendor": "xiaomi", "token": "tok-a"})).json()
    assert [d["data"]["pushreach_push_id"] for d in got["delivered"]] == ["p-2"]
    assert "tok-x" in state.invalid["hms"]


async def test_wrong_secret_asks_the_token_endpoint_once_for_a_big_push(emulator) -> None:  # type: ignore[no-untyped-def]
    state, url = emulator
    clock = FakeClock()
    ch = open_channel("hms", url, clock, client_secret="nope")
    try:
        outcomes = await ch.send(delivery(clock, [f"tok-{i}" for i in range(50)]))  # 50 receipts: 50 batches
    finally:
        await ch.aclose()
    assert {(o.outcome, o.code) for o in outcomes} == {(PushOutcome.FAILED, "oauth:1101")}
    assert state.auth_requests["hms"] == 1
    assert state.auth_calls["hms"] == 0  # refused requests issue no token

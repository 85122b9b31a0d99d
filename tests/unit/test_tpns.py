"""TPNS /v3/push/app bodies become pushreach PushRequests, the sample from TPNS's docs included."""

from __future__ import annotations

import copy
import re

import pytest
from google.protobuf import json_format
from pushreach.v1 import push_pb2
from pushreachd.services.tpns import TpnsBodyError, from_tpns

# From TPNS's supplementary-SMS documentation, unchanged.
TPNS_SAMPLE = {
    "resend_by_sms": True,
    "sms_info": {
        "delay_trigger_time": 3600,
        "trigger_condition": 1,
        "sms_sign_name": "signe_name",
        "sms_template_id": "123",
        "sms_template_params": ["param1", "param2"],
        "sms_app_id": "appId",
    },
    "audience_type": "token_list",
    "message": {"title": " test loop", "content": "test loop"},
    "token_list": ["025ae31e59b3**********a5866354b3", "06dee08efed***********31ef23bba"],
    "message_type": "notify",
    "multi_pkg": True,
}


def parse(body: dict) -> push_pb2.PushRequest:
    ours, ignored = from_tpns(body)
    assert ignored == []
    return json_format.ParseDict(ours, push_pb2.PushRequest())


def test_the_tpns_sample_becomes_the_same_push() -> None:
    r = parse(TPNS_SAMPLE)
    assert r.audience_type == push_pb2.AUDIENCE_TYPE_TOKEN_LIST
    assert list(r.token_list) == TPNS_SAMPLE["token_list"]
    assert (r.message.title, r.message.content) == (" test loop", "test loop")
    assert r.message_type == push_pb2.MESSAGE_TYPE_NOTIFY
    assert r.multi_pkg and r.resend_by_sms
    i = r.sms_info
    assert i.delay_trigger_time == 3600
    assert i.trigger_condition == push_pb2.TRIGGER_CONDITION_NOT_ARRIVED
    assert (i.sms_sign_name, i.sms_template_id, i.sms_app_id) == ("signe_name", "123", "appId")
    assert list(i.sms_template_params) == ["param1", "param2"]


@pytest.mark.parametrize(
    ("tpns", "ours"),
    [
        (0, push_pb2.TRIGGER_CONDITION_NOTIFICATION_DISABLED),
        (1, push_pb2.TRIGGER_CONDITION_NOT_ARRIVED),
        (2, push_pb2.TRIGGER_CONDITION_NOT_CLICKED),
    ],
)
def test_trigger_condition_is_shifted_by_one(tpns: int, ours: int) -> None:
    body = copy.deepcopy(TPNS_SAMPLE)
    body["sms_info"]["trigger_condition"] = tpns
    assert parse(body).sms_info.trigger_condition == ours == tpns + 1


@pytest.mark.parametrize(
    ("field", "tpns", "ours"),
    [
        ("audience_type", "token", push_pb2.AUDIENCE_TYPE_TOKEN),
        ("audience_type", "account", push_pb2.AUDIENCE_TYPE_ACCOUNT),
        ("audience_type", "account_list", push_pb2.AUDIENCE_TYPE_ACCOUNT_LIST),
        ("message_type", "message", push_pb2.MESSAGE_TYPE_MESSAGE),
        ("environment", "dev", push_pb2.ENVIRONMENT_DEV),
        ("environment", "product", push_pb2.ENVIRONMENT_PRODUCT),
    ],
)
def test_string_enums(field: str, tpns: str, ours: int) -> None:
    assert getattr(parse({**TPNS_SAMPLE, field: tpns}), field) == ours


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ({"sms_info": {**TPNS_SAMPLE["sms_info"], "trigger_condition": 3}}, "sms_info.trigger_condition"),
        ({"sms_info": {**TPNS_SAMPLE["sms_info"], "trigger_condition": "1"}}, "sms_info.trigger_condition"),
        ({"sms_info": {**TPNS_SAMPLE["sms_info"], "trigger_condition": True}}, "sms_info.trigger_condition"),
        ({"audience_type": "package_account_push"}, "audience_type"),
        ({"audience_type": "everyone"}, "audience_type"),
        ({"expire_time": "3600"}, "expire_time"),
        ({"multi_pkg": 1}, "multi_pkg"),
        ({"token_list": "token1"}, "token_list"),
        ({"tag_rules": [{"tag_items": [{"tags": ["a"], "tags_operator": "XOR"}]}]}, r"tag_rules[0].tag_items[0].tags_operator"),
        ({"tag_rules": [{"operator": "OR"}]}, "tag_rules[0].tag_items"),
        ({"tag_list": {"tags": ["a"], "op": "NAND"}}, "tag_list.op"),
        ({"message_type": 1}, "message_type"),
        ({"message": "hello"}, "message"),
    ],
)
def test_what_cannot_be_mapped_is_refused_by_field(change: dict, names: str) -> None:
    with pytest.raises(TpnsBodyError, match=re.escape(names)):
        from_tpns({**TPNS_SAMPLE, **change})


def test_fields_without_an_equivalent_are_reported_not_sent() -> None:
    body = {
        **TPNS_SAMPLE,
        "seq": 7,
        "message": {**TPNS_SAMPLE["message"], "android": {"n_id": 0}},
        "sms_info": {**TPNS_SAMPLE["sms_info"], "extra": 1},
    }
    ours, ignored = from_tpns(body)
    assert sorted(ignored) == ["message.android.n_id", "seq", "sms_info.extra"]
    json_format.ParseDict(ours, push_pb2.PushRequest())  # nothing unknown left in it


def test_vendor_fields_of_tpns_push_api_example() -> None:
    # From TPNS's push API doc (Android push by account): channel_rules and message.android.
    body = {
        **TPNS_SAMPLE,
        "channel_rules": [{"channel": "mz", "disable": True}, {"channel": "xm", "disable": False}],
        "message": {**TPNS_SAMPLE["message"], "android": {
            "n_ch_id": "default_message", "hw_ch_id": "hw1", "hw_importance": 2, "xm_ch_id": "xm1",
            "vivo_ch_id": "1", "custom_content": "{\"key\":\"value\"}",
        }},
    }
    ours, ignored = from_tpns(body)
    r = json_format.ParseDict(ours, push_pb2.PushRequest())
    assert [(c.channel, c.disable) for c in r.channel_rules] == [("xm", False)]
    a = r.message.android
    assert (a.hw_ch_id, a.hw_importance, a.xm_ch_id, a.vivo_ch_id) == ("hw1", 2, "xm1", "1")
    assert sorted(ignored) == ["channel_rules[0]", "message.android.custom_content", "message.android.n_ch_id"]


def test_the_input_is_not_changed() -> None:
    body = copy.deepcopy(TPNS_SAMPLE)
    from_tpns(body)
    assert body == TPNS_SAMPLE


# TPNS's tag push sample (push API doc), with the custom tag type pushreach offers.
TPNS_TAG_SAMPLE = {
    "audience_type": "tag",
    "tag_rules": [
        {
            "tag_items": [
                {"tags": ["guangdong", "hunan"], "is_not": False, "tags_operator": "OR", "items_operator": "OR", "tag_type": "xg_user_define"},
                {"tags": ["20200408"], "is_not": False, "tags_operator": "OR", "items_operator": "AND", "tag_type": "xg_user_define"},
                {"tags": ["male"], "is_not": True, "tags_operator": "OR", "items_operator": "AND", "tag_type": "xg_user_define"},
            ],
            "operator": "OR",
            "is_not": False,
        }
    ],
    "message_type": "notify",
    "message": {"title": "t", "content": "c"},
}


def test_tag_rules_map_field_for_field() -> None:
    r = parse(TPNS_TAG_SAMPLE)
    assert r.audience_type == push_pb2.AUDIENCE_TYPE_TAG
    (rule,) = r.tag_rules
    assert rule.operator == push_pb2.TAG_OPERATOR_OR and not rule.is_not
    items = rule.tag_items
    assert [list(i.tags) for i in items] == [["guangdong", "hunan"], ["20200408"], ["male"]]
    assert [i.items_operator for i in items] == [push_pb2.TAG_OPERATOR_OR, push_pb2.TAG_OPERATOR_AND, push_pb2.TAG_OPERATOR_AND]
    assert [i.is_not for i in items] == [False, False, True]
    assert {i.tag_type for i in items} == {"xg_user_define"}


def test_all_and_the_older_tag_list() -> None:
    assert parse({**TPNS_TAG_SAMPLE, "audience_type": "all", "tag_rules": []}).audience_type == push_pb2.AUDIENCE_TYPE_ALL
    body = {k: v for k, v in TPNS_TAG_SAMPLE.items() if k != "tag_rules"}
    r = parse({**body, "tag_list": {"tags": ["a", "b"], "op": "AND"}})
    (item,) = r.tag_rules[0].tag_items
    assert list(item.tags) == ["a", "b"] and item.tags_operator == push_pb2.TAG_OPERATOR_AND
    # Both given: TPNS ignores tag_list.
    ours, ignored = from_tpns({**TPNS_TAG_SAMPLE, "tag_list": {"tags": ["x"], "op": "OR"}})
    assert ignored == ["tag_list"] and ours["tag_rules"][0]["tag_items"][0]["tags"] == ["guangdong", "hunan"]


@pytest.mark.parametrize(("given", "kept"), [(0, 800), (1, 800), (799, 800), (800, 800), (3600, 3600), (259200, 259200)])
def test_expire_time_below_tpns_floor_is_raised_to_it(given: int, kept: int) -> None:
    assert parse({**TPNS_SAMPLE, "expire_time": given}).expire_time == kept


def test_single_token_and_account_audiences_keep_the_first_entry_as_tpns() -> None:
    assert list(parse({**TPNS_SAMPLE, "audience_type": "token"}).token_list) == TPNS_SAMPLE["token_list"][:1]
    body = {**TPNS_SAMPLE, "audience_type": "account", "account_list": ["a1", "a2"]}
    del body["token_list"]
    assert list(parse(body).account_list) == ["a1"]


def test_account_push_type_defaults_to_the_latest_device_as_tpns() -> None:
    body = {**TPNS_SAMPLE, "audience_type": "account_list", "account_list": ["a1"]}
    del body["token_list"]
    assert parse(body).account_push_type == push_pb2.ACCOUNT_PUSH_TYPE_LATEST_DEVICE
    assert parse({**body, "account_push_type": 0}).account_push_type == push_pb2.ACCOUNT_PUSH_TYPE_LATEST_DEVICE
    assert parse({**body, "account_push_type": 1}).account_push_type == push_pb2.ACCOUNT_PUSH_TYPE_ALL_DEVICES
    with pytest.raises(TpnsBodyError, match="account_push_type"):
        from_tpns({**body, "account_push_type": 2})
    ours, ignored = from_tpns({**TPNS_SAMPLE, "account_push_type": 1})  # a token push: not used
    assert ignored == ["account_push_type"] and "account_push_type" not in ours

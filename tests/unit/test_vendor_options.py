"""A push's per-vendor fields survive the stored JSON, and leave bodies without them as they were."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from pushreachd.model import AudienceType, Channel, PushSpec, VendorOptions

BASE = PushSpec(audience_type=AudienceType.TOKEN, token_list=("t",), account_list=(), title="a", content="b")

text = st.text(alphabet="ABCXYZ_019", max_size=8)
options = st.builds(
    VendorOptions,
    disabled_channels=st.frozensets(st.sampled_from(list(Channel))),
    hw_ch_id=text,
    hw_category=text,
    hw_importance=st.sampled_from([0, 1, 2]),
    xm_ch_id=text,
    oppo_ch_id=text,
    oppo_category=text,
    vivo_ch_id=st.sampled_from(["", "0", "1"]),
    vivo_category=text,
)


@given(options)
def test_vendor_options_round_trip(opts: VendorOptions) -> None:
    spec = PushSpec(**{**{f: getattr(BASE, f) for f in BASE.__slots__}, "vendor": opts})  # type: ignore[attr-defined]
    back = PushSpec.from_json(spec.to_json())
    assert (back.vendor or VendorOptions()) == opts


def test_default_options_do_not_change_the_fingerprint() -> None:
    with_defaults = PushSpec(**{**{f: getattr(BASE, f) for f in BASE.__slots__}, "vendor": VendorOptions()})  # type: ignore[attr-defined]
    assert with_defaults.to_json() == BASE.to_json()
    assert "vendor" not in BASE.to_json()

"""AdminService.RotateReceiptKey on a real server: a new key signs new receipts and device
keys; what the older key made keeps working for the overlap; app credentials are refused."""

from __future__ import annotations

import time

import grpc
import pytest
from pushreach.v1 import admin_pb2
from pushreachd.services.receipts import ReceiptError, state_mac

from tests.harness import ADMIN_TOKEN, Running

ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)


async def test_rotating_the_receipt_key_changes_device_keys_and_keeps_the_old_ones_for_the_overlap(
    server: Running,
) -> None:
    app = await server.new_app()
    before = (await app.bind("tok-1", "+8613800138000")).device_key
    rotated = await app.admin.RotateReceiptKey(
        admin_pb2.RotateReceiptKeyRequest(access_id=app.access_id), metadata=ADMIN
    )
    assert rotated.receipt_key_id == 2  # the first key was made on the first BindPhone
    overlap = rotated.older_keys_expire_time.ToSeconds() - time.time()
    assert 7 * 86400 - 60 < overlap <= 7 * 86400
    after = (await app.bind("tok-1", "+8613800138000")).device_key
    assert after != before and after.startswith("2.") and before.startswith("1.")
    # Both device keys sign notification-state reports during the overlap.
    receipts = server.service.receipts
    app_row = await server.service.apps.get_app(app.access_id)
    now = int(time.time())
    for key in (before, after):
        mac = state_mac(key, app.access_id, "tok-1", "disabled", now)
        await receipts.check_state_mac(app_row.id, app.access_id, "tok-1", "disabled", now, mac)
    with pytest.raises(ReceiptError):
        forged = state_mac("1.not-the-key", app.access_id, "tok-1", "disabled", now)
        await receipts.check_state_mac(app_row.id, app.access_id, "tok-1", "disabled", now, forged)

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await app.admin.RotateReceiptKey(
            admin_pb2.RotateReceiptKeyRequest(access_id=app.access_id), metadata=app.metadata
        )
    assert err.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await app.admin.RotateReceiptKey(admin_pb2.RotateReceiptKeyRequest(access_id="nope"), metadata=ADMIN)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

"""PostgreSQL goes away mid-run and comes back: the instance recovers by itself.

The server restarted is a private cluster in a temporary directory on its own loopback port
(initdb + pg_ctl), never the shared one other tests use. While it is down: calls answer
UNAVAILABLE, health is NOT_SERVING (liveness stays SERVING), due fallbacks wait. When it is
back, without a restart of pushreach: calls succeed, health is SERVING, the fallback fires,
and everything answered before is there.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pushreach.v1 import push_pb2
from pushreachd.api.server import LIVENESS

from tests.harness import start_service, test_settings
from tests.integration.test_crash_recovery import free_port
from tests.stores import require_postgres

BIN = Path("/usr/lib/postgresql/15/bin")


class Cluster:
    """A throwaway PostgreSQL cluster: trust auth, loopback only, on a free port."""

    def __init__(self, root: Path) -> None:
        self.data = root / "pgdata"
        self.log = root / "pg.log"
        self.port = free_port()
        self._as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self._as_postgres, *args], capture_output=True, timeout=120, text=True)
        if done.returncode:
            raise RuntimeError(f"{Path(args[0]).name} failed: {done.stderr.strip() or done.stdout.strip()}")

    def init(self) -> None:
        if self._as_postgres:  # initdb refuses root: the cluster belongs to postgres
            shutil.chown(self.data.parent, "postgres")
            self.log.touch()
            shutil.chown(self.log, "postgres")
        self._run(str(BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def start(self) -> None:
        opts = f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.data}"
        self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w", "start")

    def stop(self) -> None:
        self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    require_postgres()  # the binaries come with the shared server's package
    if not (BIN / "initdb").exists():
        pytest.skip(f"no {BIN / 'initdb'} (Debian's postgresql-15)")
    # Not under pytest's tmp_path: as root, the cluster runs as postgres, who cannot enter it.
    root = Path(tempfile.mkdtemp(prefix="pushreach-pg-"))
    c = Cluster(root)
    try:
        c.init()
        c.start()
        yield c
    finally:
        try:
            c.stop()
        except RuntimeError:
            pass  # already stopped
        shutil.rmtree(root, ignore_errors=True)


async def health_of(channel: grpc.aio.Channel, service: str = "") -> int:
    answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return answer.status


async def eventually(check, what: str, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if await check():
            return
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_the_database_restarting_mid_run_is_survived_without_a_restart(cluster: Cluster, tmp_path: Path) -> None:
    running = await start_service(test_settings(tmp_path, db=cluster.dsn))
    try:
        app = await running.new_app()
        await app.bind("tok", "+8613800000001")
        before = await app.push.Push(_push(delay=1), metadata=app.metadata)
        later = await app.push.Push(_push(delay=4), metadata=app.metadata)

        cluster.stop()
        SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING

        async def refused() -> bool:
            try:
                await app.push.GetPush(push_pb2.GetPushRequest(push_id=before.push_id), metadata=app.metadata,
                                       timeout=10)
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.UNAVAILABLE, err
                return True
            return False

        await eventually(refused, "a call answered UNAVAILABLE")
        await eventually(lambda: _is(health_of(running.channel), NOT_SERVING), "health NOT_SERVING")
        assert await health_of(running.channel, LIVENESS) == SERVING, "alive: no reason to restart it"
        with pytest.raises(grpc.aio.AioRpcError) as refused_push:
            await app.push.Push(_push(delay=1), metadata=app.metadata, timeout=10)
        assert refused_push.value.code() == grpc.StatusCode.UNAVAILABLE

        cluster.start()
        await eventually(lambda: _is(health_of(running.channel), SERVING), "health SERVING again")

        async def done(push_id: str) -> bool:
            got = await app.push.GetPush(push_pb2.GetPushRequest(push_id=push_id), metadata=app.metadata, timeout=10)
            return got.push.fallback_state == push_pb2.FALLBACK_STATE_DONE

        # Both fallbacks fire: the one due while the database was down, and the later one.
        await eventually(lambda: done(before.push_id), "the overdue fallback fired")
        await eventually(lambda: done(later.push_id), "the later fallback fired")
        after = await app.push.Push(_push(delay=1), metadata=app.metadata)
        await eventually(lambda: done(after.push_id), "a push accepted after the restart fired")
    finally:
        await running.close()
        await running.service.stop()


async def _is(status: object, wanted: int) -> bool:
    return await status == wanted  # type: ignore[misc]


def _push(delay: int) -> push_pb2.PushRequest:
    from tests.harness import sms_push

    return sms_push(["tok"], delay=delay)

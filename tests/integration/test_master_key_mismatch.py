"""A master key that cannot open the stored SMS credentials stops `serve` at start, with a
message naming the setting (instead of a service that records every SMS FAILED)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PUSHREACH = [sys.executable, "-m", "pushreachd"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PUSHREACH, *args], capture_output=True, text=True, timeout=60)


def test_serve_refuses_a_master_key_that_cannot_open_the_stored_credentials(tmp_path: Path) -> None:
    db = str(tmp_path / "k.db")
    created = run("apps", "create", "k", "--db", db, "--json")
    assert created.returncode == 0, created.stderr
    access_id = created.stdout.split('"access_id": "')[1].split('"')[0]
    stored = run("apps", "set-sms-credentials", access_id, "--secret-id", "AKIDx", "--secret-key", "y", "--db", db)
    assert stored.returncode == 0, stored.stderr
    other = str(tmp_path / "other.key")  # a fresh key file: not the key the credentials were sealed with
    served = run("serve", "--db", db, "--listen", "127.0.0.1:0", "--master-key-file", other)
    assert served.returncode == 1
    assert f"master_key_file ({other}) cannot open the stored SMS credentials of app {access_id}" in served.stderr

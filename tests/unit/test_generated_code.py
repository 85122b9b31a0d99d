"""The committed generated code must be exactly what the protos give (scripts/gen_protos.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "clients" / "python" / "pushreach" / "v1"
COMMITTED_TS = ROOT / "clients" / "typescript" / "src" / "gen"


def _load_generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_protos"] = module
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_match_the_protos(tmp_path: Path) -> None:
    gen = _load_generator()
    gen.generate(tmp_path)
    fresh = tmp_path / "pushreach" / "v1"
    fresh_files = {p.name: p.read_bytes() for p in fresh.iterdir() if p.is_file()}
    committed_files = {p.name: p.read_bytes() for p in COMMITTED.iterdir() if p.is_file()}
    assert sorted(fresh_files) == sorted(committed_files), "files differ: run `make protos`"
    drifted = [name for name in fresh_files if fresh_files[name] != committed_files[name]]
    assert not drifted, f"generated code drifted from protos/ in {drifted}: run `make protos`"


def test_committed_typescript_matches_the_protos(tmp_path: Path) -> None:
    gen = _load_generator()
    gen.generate_typescript(tmp_path)  # needs `npm ci` at the root and in clients/typescript (make does)
    fresh = tmp_path / "src" / "gen"
    fresh_files = {str(p.relative_to(fresh)): p.read_bytes() for p in fresh.rglob("*") if p.is_file()}
    committed_files = {str(p.relative_to(COMMITTED_TS)): p.read_bytes() for p in COMMITTED_TS.rglob("*") if p.is_file()}
    assert sorted(fresh_files) == sorted(committed_files), "files differ: run `make protos`"
    drifted = [name for name in fresh_files if fresh_files[name] != committed_files[name]]
    assert not drifted, f"generated TypeScript drifted from protos/ in {drifted}: run `make protos`"

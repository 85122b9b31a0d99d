"""Regenerate the committed code for the protos under protos/: Python and TypeScript.

    python scripts/gen_protos.py            # write clients/python/pushreach/v1/ and clients/typescript/src/gen/
    python scripts/gen_protos.py --out DIR  # write elsewhere (the drift test compares)

Python: the pinned grpcio-tools (protoc + gRPC plugin) and mypy-protobuf (.pyi stubs).
TypeScript: the pinned buf (root package.json) with the pinned protoc-gen-es
(clients/typescript/package.json), per clients/typescript/buf.gen.yaml; `npm ci` in both first
(`make protos` does). google/rpc/error_details.proto, whose BadRequest the TypeScript client
decodes, is taken from the pinned googleapis-common-protos, the same one the server uses.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
DEFAULT_OUT = ROOT / "clients" / "python"
TS_DIR = ROOT / "clients" / "typescript"
TS_GEN = Path("src") / "gen"
BUF = ROOT / "node_modules" / ".bin" / "buf"
PROTOC_GEN_ES = TS_DIR / "node_modules" / ".bin" / "protoc-gen-es"
PACKAGE_DIR = Path("pushreach") / "v1"
INIT = '"""Generated code for the pushreach.v1 protos (scripts/gen_protos.py)."""\n'


def generate(out: Path) -> list[Path]:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    target = out / PACKAGE_DIR
    target.mkdir(parents=True, exist_ok=True)
    for old in list(target.glob("*_pb2*.py")) + list(target.glob("*_pb2*.pyi")):
        old.unlink()
    well_known = Path(protoc.__file__).parent / "_proto"
    plugin = shutil.which("protoc-gen-mypy", path=str(Path(sys.executable).parent))
    plugin_grpc = shutil.which("protoc-gen-mypy_grpc", path=str(Path(sys.executable).parent))
    if not plugin or not plugin_grpc:
        raise SystemExit("mypy-protobuf is not installed next to this Python")
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={plugin}",
        f"--plugin=protoc-gen-mypy_grpc={plugin_grpc}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    (target / "__init__.py").write_text(INIT)
    return sorted(target.iterdir())


def generate_typescript(out: Path) -> list[Path]:
    """Write the TypeScript code to `out`/src/gen (`out` plays clients/typescript)."""
    for tool, install in ((BUF, "npm ci"), (PROTOC_GEN_ES, "npm ci --prefix clients/typescript")):
        if not tool.exists():
            raise SystemExit(f"{tool.relative_to(ROOT)} is missing: run `{install}` (or `make protos`)")
    target = out / TS_GEN
    if target.exists():
        shutil.rmtree(target)
    template = str(TS_DIR / "buf.gen.yaml")
    _run([str(BUF), "generate", "--template", template, "-o", str(out)])
    from google.rpc import error_details_pb2  # the pinned googleapis-common-protos ships the .proto

    with tempfile.TemporaryDirectory() as tmp:
        rpc = Path(tmp) / "google" / "rpc"
        rpc.mkdir(parents=True)
        shutil.copy(Path(error_details_pb2.__file__).with_name("error_details.proto"), rpc)
        _run([str(BUF), "generate", tmp, "--template", template, "-o", str(out)])
    return sorted(p for p in target.rglob("*") if p.is_file())


def _run(args: list[str]) -> None:
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stdout}{done.stderr}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT, help="repository root to write under (default: this one)")
    args = parser.parse_args()
    out = args.out.resolve()
    for path in generate(out / "clients" / "python"):
        print(path.relative_to(out))
    for path in generate_typescript(out / "clients" / "typescript"):
        print(path.relative_to(out))


if __name__ == "__main__":
    main()

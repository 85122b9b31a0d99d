"""Regenerate the committed Python code for the protos under protos/.

    python scripts/gen_protos.py            # write clients/python/pushreach/v1/
    python scripts/gen_protos.py --out DIR  # write elsewhere (the drift test compares)

Uses the pinned grpcio-tools (protoc + gRPC plugin) and mypy-protobuf (.pyi stubs).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
DEFAULT_OUT = ROOT / "clients" / "python"
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output root (default: clients/python)")
    args = parser.parse_args()
    for path in generate(args.out):
        print(path.relative_to(args.out))


if __name__ == "__main__":
    main()

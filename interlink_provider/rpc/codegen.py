"""Generate the Python stubs of `proto/` into `interlink_provider/rpc/` (committed).

    .venv/bin/python -m interlink_provider.rpc.codegen          # regenerate
    .venv/bin/python -m interlink_provider.rpc.codegen --check  # fail if they drifted

The proto tree is mapped under the package path, so generated modules import each
other as `interlink_provider.rpc.offloader.v1...` without touching sys.path.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO / "proto"
PACKAGE = "interlink_provider/rpc"


def protos() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def generate(out: Path) -> list[Path]:
    """Run protoc (grpcio-tools) into `out`; returns the files written, relative to it."""
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    files = [f"{PACKAGE}/{p.relative_to(PROTO_ROOT)}" for p in protos()]
    code = protoc.main(
        [
            "protoc",
            f"-I{PACKAGE}={PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            *files,
        ]
    )
    if code != 0:
        raise SystemExit(f"protoc failed ({code})")
    return sorted(p.relative_to(out) for p in (out / PACKAGE).rglob("*_pb2*.py*"))


def drifted() -> list[str]:
    """Generated files that differ from (or are missing in) the committed ones."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        committed = sorted(p.relative_to(REPO) for p in (REPO / PACKAGE).rglob("*_pb2*.py*"))
        problems = [
            str(p) for p in fresh if not (REPO / p).exists() or not filecmp.cmp(Path(tmp) / p, REPO / p, shallow=False)
        ]
        problems += [f"{p} (not generated from proto/)" for p in committed if p not in fresh]
        return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    if args.check:
        problems = drifted()
        if problems:
            sys.exit("stubs drifted from proto/ (regenerate): " + ", ".join(problems))
        print("stubs match proto/")
        return
    written = generate(REPO)
    for package in {p.parent for p in written}:
        for directory in [package, *package.parents]:
            if str(directory).startswith(PACKAGE) and not (REPO / directory / "__init__.py").exists():
                (REPO / directory / "__init__.py").write_text("")
    print("\n".join(str(p) for p in written))


if __name__ == "__main__":
    main()

"""Generates the Python code for protos/ into zsd/v1 (and checks it is current).

Usage: python protos/generate.py [--check]

Generated code is committed so that `zsctl` can ship without grpcio-tools; the
test suite runs `--check` so a proto change without regeneration fails.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PACKAGE_DIR = Path("zsd") / "v1"
INIT_TEXT = (
    '"""Generated protobuf and gRPC code for the zsd.v1 API. Do not edit: run protos/generate.py."""\n'
)


def _include_dirs() -> list[str]:
    import grpc_tools
    from google.rpc import status_pb2

    # googleapis-common-protos ships the .proto sources next to its modules.
    google_protos = Path(status_pb2.__file__).resolve().parent.parent.parent
    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    return [str(HERE), str(google_protos), str(well_known)]


def generate(out_root: Path) -> list[Path]:
    """Writes generated modules under out_root/zsd/v1 and returns their paths."""
    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(HERE)) for p in (HERE / "zsd" / "v1").glob("*.proto"))
    out = str(out_root)
    # mypy-protobuf's plugins live beside the interpreter, which may not be on PATH.
    bindir = Path(sys.executable).parent
    plugins = [f"--plugin=protoc-gen-{n}={bindir / ('protoc-gen-' + n)}" for n in ("mypy", "mypy_grpc")]
    args = [
        "protoc",
        *plugins,
        *(f"-I{d}" for d in _include_dirs()),
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    (out_root / PACKAGE_DIR / "__init__.py").write_text(INIT_TEXT)
    (out_root / PACKAGE_DIR / "py.typed").write_text("")
    return sorted((out_root / PACKAGE_DIR).iterdir())


def stale_files(current: Path = REPO / PACKAGE_DIR) -> list[str]:
    """Names of files in ``current`` that differ from what protos/ produces now
    (changed, missing or extra)."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        wanted = {p.name for p in fresh}
        have = {p.name for p in current.iterdir() if p.is_file()} if current.is_dir() else set()
        stale = sorted(wanted ^ have)
        stale += [
            p.name for p in fresh if p.name in have and not filecmp.cmp(p, current / p.name, shallow=False)
        ]
        return sorted(set(stale))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if zsd/v1 is stale")
    ns = parser.parse_args()
    if ns.check:
        stale = stale_files()
        if stale:
            print(
                "stale generated code in zsd/v1 (run protos/generate.py):", ", ".join(stale), file=sys.stderr
            )
            return 1
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        target = REPO / PACKAGE_DIR
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for p in fresh:
            shutil.copy2(p, target / p.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())

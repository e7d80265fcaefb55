"""Generates the Python code for protos/ into zsd/v1 and zsd/peer/v1 (and checks it is current).

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
# Each generated package and the docstring of its __init__.py.
PACKAGES = {
    Path("zsd") / "v1": "Generated protobuf and gRPC code for the zsd.v1 API.",
    Path("zsd") / "peer" / "v1": "Generated protobuf and gRPC code for zsd.peer.v1, the host-to-host calls.",
}


def _include_dirs() -> list[str]:
    import grpc_tools
    from google.rpc import status_pb2

    # googleapis-common-protos ships the .proto sources next to its modules.
    google_protos = Path(status_pb2.__file__).resolve().parent.parent.parent
    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    return [str(HERE), str(google_protos), str(well_known)]


def generate(out_root: Path) -> list[Path]:
    """Writes generated modules under out_root/<package> and returns their paths
    relative to out_root."""
    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(HERE)) for pkg in PACKAGES for p in (HERE / pkg).glob("*.proto"))
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
    files: list[Path] = []
    for pkg, doc in PACKAGES.items():
        (out_root / pkg / "__init__.py").write_text(f'"""{doc} Do not edit: run protos/generate.py."""\n')
        (out_root / pkg / "py.typed").write_text("")
        files += [p.relative_to(out_root) for p in (out_root / pkg).iterdir() if p.is_file()]
    return sorted(files)


def _generated(root: Path) -> set[Path]:
    return {
        p.relative_to(root)
        for pkg in PACKAGES
        if (root / pkg).is_dir()
        for p in (root / pkg).iterdir()
        if p.is_file()
    }


def stale_files(root: Path = REPO) -> list[str]:
    """Paths (relative to ``root``) of generated files that differ from what protos/
    produces now (changed, missing or extra)."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh_root = Path(tmp)
        fresh = set(generate(fresh_root))
        have = _generated(root)
        stale = fresh ^ have
        stale |= {p for p in fresh & have if not filecmp.cmp(fresh_root / p, root / p, shallow=False)}
        return sorted(str(p) for p in stale)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if zsd/v1 is stale")
    ns = parser.parse_args()
    if ns.check:
        stale = stale_files()
        if stale:
            print("stale generated code (run protos/generate.py):", ", ".join(stale), file=sys.stderr)
            return 1
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        for pkg in PACKAGES:
            if (REPO / pkg).exists():
                shutil.rmtree(REPO / pkg)
        for p in fresh:
            (REPO / p).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(tmp) / p, REPO / p)
    return 0


if __name__ == "__main__":
    sys.exit(main())

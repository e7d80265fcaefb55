"""Files that ship beside the code: generated protobuf modules and the systemd unit."""

from __future__ import annotations

import configparser
import importlib.util
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _generator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("protos_generate", REPO / "protos" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_current() -> None:
    stale = _generator().stale_files()
    assert stale == [], f"generated code is stale, run `python protos/generate.py`: {stale}"


def test_staleness_check_notices_changed_missing_and_extra_files(tmp_path: Path) -> None:
    for pkg in ("zsd/v1", "zsd/peer/v1"):
        shutil.copytree(REPO / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    gen = _generator()
    assert gen.stale_files(tmp_path) == []
    v1 = tmp_path / "zsd/v1"
    (v1 / "host_pb2.py").write_text((v1 / "host_pb2.py").read_text() + "# edited by hand\n")
    (v1 / "cluster_pb2.pyi").unlink()
    (tmp_path / "zsd/peer/v1/old_pb2.py").write_text("")
    assert gen.stale_files(tmp_path) == [
        "zsd/peer/v1/old_pb2.py",
        "zsd/v1/cluster_pb2.pyi",
        "zsd/v1/host_pb2.py",
    ]


def test_systemd_unit() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(REPO / "systemd" / "zsd.service")
    service = unit["Service"]
    assert service["Type"] == "notify"
    assert service["Restart"] == "on-failure"
    assert service["WatchdogSec"].endswith("s") and int(service["WatchdogSec"][:-1]) > 0
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    after = unit["Unit"]["After"].split()
    assert "libvirtd.service" in after and "sanlock.service" in after
    # SIGTERM drains for at most 4.5 s (config) and exits within 5 s; systemd waits longer.
    assert int(service["TimeoutStopSec"].rstrip("s")) > 5

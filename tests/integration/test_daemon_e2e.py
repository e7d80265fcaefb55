"""The real daemon as a subprocess, driven by zsctl and by a raw gRPC client that
knows nothing but what server reflection tells it. Also: systemd notify protocol,
SIGHUP reload, SIGTERM within 5 s, bad configuration, TLS and mutual TLS on TCP."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from tests.integration.zsdproc import ZsdProcess, start_zsd, zsctl
from tests.pki import make_pki

pytestmark = pytest.mark.integration
QEMU = ("--set", "hypervisor.kind=qemu", "--set", "host.name=e2e-host", "--set", "log.level=debug")


@pytest.fixture
def zsd(tmp_path: Path) -> Iterator[ZsdProcess]:
    proc = start_zsd(tmp_path / "root", *QEMU, watchdog_usec=400_000)
    try:
        proc.wait_for("READY=1")
        yield proc
    finally:
        proc.stop()


def test_notify_ready_status_and_watchdog(zsd: ZsdProcess) -> None:
    msgs = zsd.drain_notify(1.0)
    statuses = [m for m in msgs if m.startswith("STATUS=")]
    assert "STATUS=starting" in statuses
    assert any("serving on unix:" in s and "hypervisor qemu" in s for s in statuses)
    ready_at = msgs.index("READY=1")
    assert any(s.startswith("STATUS=collecting") for s in msgs[:ready_at])  # STATUS before READY
    # WATCHDOG_USEC=0.4 s -> a ping every 0.2 s: ~5 in one second.
    assert msgs.count("WATCHDOG=1") >= 3


def test_zsctl_json_table_yaml(zsd: ZsdProcess) -> None:
    out = zsctl(zsd.endpoint, "-o", "json", "host", "list")
    assert out.returncode == 0, out.stderr
    hosts = json.loads(out.stdout)
    assert isinstance(hosts, list) and [h["name"] for h in hosts] == ["hosts/e2e-host"]
    h = hosts[0]
    assert h["hypervisor"]["kind"] == "QEMU"
    assert int(h["cpu"]["count"]) > 0 and int(h["memory"]["total_bytes"]) > 0
    table = zsctl(zsd.endpoint, "host", "list")
    assert table.returncode == 0 and "e2e-host" in table.stdout and "NAME" in table.stdout
    shown = yaml.safe_load(zsctl(zsd.endpoint, "-o", "yaml", "host", "show").stdout)
    assert shown["name"] == "hosts/e2e-host"
    cluster = json.loads(zsctl(zsd.endpoint, "-o", "json", "cluster", "show").stdout)
    assert cluster["leader"]["host"] == "hosts/e2e-host"


def test_zsctl_operation_flow(zsd: ZsdProcess) -> None:
    refreshed = zsctl(zsd.endpoint, "-o", "json", "host", "refresh")
    assert refreshed.returncode == 0, refreshed.stderr
    assert json.loads(refreshed.stdout)["name"] == "hosts/e2e-host"
    started = zsctl(zsd.endpoint, "-o", "json", "host", "refresh", "--no-wait", "--request-id", "e2e-1")
    op = json.loads(started.stdout)
    assert op["name"].startswith("operations/")
    again = json.loads(
        zsctl(zsd.endpoint, "-o", "json", "host", "refresh", "--no-wait", "--request-id", "e2e-1").stdout
    )
    assert again["name"] == op["name"]
    waited = json.loads(zsctl(zsd.endpoint, "-o", "json", "operation", "wait", op["name"]).stdout)
    assert waited["done"] is True
    ops = json.loads(zsctl(zsd.endpoint, "-o", "json", "operation", "list").stdout)
    assert op["name"] in [o["name"] for o in ops] and len(ops) == 2
    cancel = zsctl(zsd.endpoint, "operation", "cancel", op["name"])
    assert cancel.returncode == 1 and "already ended" in cancel.stderr and "Traceback" not in cancel.stderr


def test_zsctl_api_error_is_a_message(zsd: ZsdProcess) -> None:
    bad = zsctl(zsd.endpoint, "host", "show", "hosts/NOT_VALID")
    assert bad.returncode == 1
    assert "INVALID_NAME" in bad.stderr and "field: name" in bad.stderr and "Traceback" not in bad.stderr
    usage = zsctl(zsd.endpoint, "host", "frobnicate")
    assert usage.returncode == 2


def test_raw_client_via_reflection_and_health(zsd: ZsdProcess) -> None:
    with grpc.insecure_channel(zsd.endpoint) as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        services = set(db.get_services())
        assert {
            "zsd.v1.HostService",
            "zsd.v1.ClusterService",
            "zsd.v1.OperationService",
            "grpc.health.v1.Health",
        } <= services
        pool = descriptor_pool.DescriptorPool(db)
        method = pool.FindServiceByName("zsd.v1.HostService").FindMethodByName("ListHosts")
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        call = channel.unary_unary(
            "/zsd.v1.HostService/ListHosts",
            request_serializer=request_cls.SerializeToString,
            response_deserializer=response_cls.FromString,
        )
        response = call(request_cls(), timeout=10)
        assert [h.name for h in response.hosts] == ["hosts/e2e-host"]  # type: ignore[attr-defined]
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "zsd.v1.HostService"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING


def test_sighup_reloads_and_keeps_running_on_bad_config(zsd: ZsdProcess) -> None:
    config = zsd.root / "etc/zsd/zsd.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('[log]\nlevel = "info"\n[hypervisor]\nlibvirt_uri = "qemu:///session"\n')
    zsd.proc.send_signal(signal.SIGHUP)
    wait_log(zsd, "take effect after a restart: hypervisor")
    config.write_text("[api]\nshutdown_grace = 99\n")
    zsd.proc.send_signal(signal.SIGHUP)
    wait_log(zsd, "keeping the running configuration")
    assert "api.shutdown_grace = 99 is not allowed" in zsd.log()
    assert zsctl(zsd.endpoint, "host", "list").returncode == 0
    assert "RELOADING=1" in zsd.drain_notify(0.2)


def test_sigterm_exits_within_5s_and_removes_socket(zsd: ZsdProcess) -> None:
    started = time.monotonic()
    zsd.proc.send_signal(signal.SIGTERM)
    assert zsd.proc.wait(10) == 0
    assert time.monotonic() - started < 5.0
    assert "STOPPING=1" in zsd.drain_notify(0.1)
    assert not zsd.socket_path.exists()


def test_bad_config_stops_with_a_clear_message(tmp_path: Path) -> None:
    proc = start_zsd(tmp_path / "root", "--set", "api.shutdown_grace=9")
    try:
        assert proc.proc.wait(20) == 1
    finally:
        proc.stop()
    assert "api.shutdown_grace = '9' is not allowed; expected seconds between 0 and 4.5" in proc.log()


def test_second_daemon_on_same_socket_is_refused(zsd: ZsdProcess) -> None:
    other = start_zsd(zsd.root, *QEMU)
    try:
        assert other.proc.wait(20) == 1
    finally:
        other.stop()
    assert "already serving" in other.log()
    assert zsctl(zsd.endpoint, "host", "list").returncode == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_tcp_with_mutual_tls(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    port = free_port()
    proc = start_zsd(
        tmp_path / "root",
        *QEMU,
        "--set",
        f"api.tcp_listen=127.0.0.1:{port}",
        "--set",
        f"api.tls_cert={pki.server_cert}",
        "--set",
        f"api.tls_key={pki.server_key}",
        "--set",
        f"api.tls_client_ca={pki.ca}",
    )
    try:
        proc.wait_for("READY=1")
        endpoint = f"127.0.0.1:{port}"
        ok = zsctl(
            endpoint,
            "--ca",
            str(pki.ca),
            "--cert",
            str(pki.client_cert),
            "--key",
            str(pki.client_key),
            "-o",
            "json",
            "host",
            "list",
        )
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout)[0]["name"] == "hosts/e2e-host"
        no_cert = zsctl(endpoint, "--ca", str(pki.ca), "--timeout", "5", "host", "list")
        assert no_cert.returncode == 1 and "Traceback" not in no_cert.stderr
    finally:
        assert proc.stop() == 0


def wait_log(zsd: ZsdProcess, needle: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while needle not in zsd.log():
        if time.monotonic() > deadline:
            raise AssertionError(f"{needle!r} not in log:\n{zsd.log()}")
        time.sleep(0.05)

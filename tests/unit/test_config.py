"""Configuration: sources, precedence, and errors that name key, value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from zsd.config import load
from zsd.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "etc/zsd/zsd.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_embedded_defaults_need_no_file(tmp_path: Path) -> None:
    cfg = load(root=tmp_path, env={}, hostname="node1")
    assert cfg.host_name == "node1"
    assert cfg.api.socket == tmp_path / "run/zsd/zsd.sock"
    assert cfg.api.tcp_listen is None
    assert cfg.hypervisor.kind == "auto"
    assert cfg.source == ()
    assert cfg.dhcp_state_dir is None  # the daemon's default: <root>/run/zsd-dhcp
    moved = load(root=tmp_path, env={}, overrides=["network.dhcp_state_dir=/run/x/dhcp"], hostname="n")
    assert moved.dhcp_state_dir == Path("/run/x/dhcp")


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    write(tmp_path, '[log]\nlevel = "debug"\n[hypervisor]\nkind = "qemu"\nprobe_timeout = 5\n')
    cfg = load(
        root=tmp_path,
        env={"ZSD_LOG_LEVEL": "warning", "ZSD_HYPERVISOR_KIND": "kvm"},
        overrides=["hypervisor.kind=auto"],
        hostname="n",
    )
    assert cfg.log_level == "warning"  # env beats file
    assert cfg.hypervisor.kind == "auto"  # flag beats env
    assert cfg.hypervisor.probe_timeout == 5.0  # file beats default


@pytest.mark.parametrize(
    ("text", "key", "needle"),
    [
        ('[log]\nlevel = "loud"\n', "log.level", "one of debug, info, warning, error"),
        ('[host]\nname = "Bad_Name"\n', "host.name", "RFC 1123 label"),
        ('[api]\ntcp_listen = "nowhere"\n', "api.tcp_listen", "'IP:PORT'"),
        ("[api]\nshutdown_grace = 10\n", "api.shutdown_grace", "between 0 and 4.5"),
        ("[hypervisor]\nkind = 3\n", "hypervisor.kind", "one of auto, kvm, qemu"),
        ('[api]\nsocket = "relative/path"\n', "api.socket", "absolute path"),
        ('[network]\ndhcp_state_dir = "run/dhcp"\n', "network.dhcp_state_dir", "others may enter"),
        ("[cluster]\ngossip_port = 0\n", "cluster.gossip_port", "between 1 and 65535"),
        ('[compute]\nplacement = "random"\n', "compute.placement", "one of spread, pack"),
        ("[compute]\nmemory_overcommit = 9\n", "compute.memory_overcommit", "between 0.1 and 4"),
        ('[hypervisor]\nmigration_uri = "qemu:///system"\n', "hypervisor.migration_uri", "{address}"),
    ],
)
def test_bad_value_names_key_value_and_allowed(tmp_path: Path, text: str, key: str, needle: str) -> None:
    write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(root=tmp_path, env={}, hostname="n")
    assert info.value.field == key
    message = str(info.value)
    assert key in message and needle in message
    value = text.split("=", 1)[1].strip()
    assert value.strip('"') in message


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, '[log]\nlevle = "debug"\n')
    with pytest.raises(ConfigError, match=r"unknown key 'log\.levle'"):
        load(root=tmp_path, env={}, hostname="n")


def test_invalid_toml_and_missing_explicit_file(tmp_path: Path) -> None:
    bad = write(tmp_path, "[log\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(root=tmp_path, env={}, hostname="n")
    with pytest.raises(ConfigError, match="does not exist"):
        load(root=tmp_path, config_file=bad.with_name("nope.toml"), env={}, hostname="n")


def test_tcp_requires_tls(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(root=tmp_path, env={}, overrides=["api.tcp_listen=127.0.0.1:7443"], hostname="n")
    assert info.value.field == "api.tcp_listen"
    cfg = load(
        root=tmp_path,
        env={},
        hostname="n",
        overrides=["api.tcp_listen=127.0.0.1:7443", "api.tls_cert=/c.pem", "api.tls_key=/k.pem"],
    )
    assert cfg.api.tls is not None and cfg.api.tls.client_ca is None


def test_half_tls_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(root=tmp_path, env={}, overrides=["api.tls_cert=/c.pem"], hostname="n")
    assert info.value.field == "api.tls_key"


def test_flag_without_equals(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"expected section\.key=value"):
        load(root=tmp_path, env={}, overrides=["log.level"], hostname="n")


def test_gossip_port_default_file_env_and_flag(tmp_path: Path) -> None:
    assert load(root=tmp_path, env={}, hostname="n").gossip_port == 7946
    write(tmp_path, "[cluster]\ngossip_port = 8946\n")
    assert load(root=tmp_path, env={}, hostname="n").gossip_port == 8946
    assert load(root=tmp_path, env={"ZSD_CLUSTER_GOSSIP_PORT": "9946"}, hostname="n").gossip_port == 9946
    cfg = load(root=tmp_path, env={}, overrides=["cluster.gossip_port=65535"], hostname="n")
    assert cfg.gossip_port == 65535


@pytest.mark.parametrize(
    "text",
    ["65536", "-1", "true", "7946.5", '"7946x"', '""', "[7946]"],
)
def test_gossip_port_refuses_non_ports(tmp_path: Path, text: str) -> None:
    write(tmp_path, f"[cluster]\ngossip_port = {text}\n")
    with pytest.raises(ConfigError) as info:
        load(root=tmp_path, env={}, hostname="n")
    assert info.value.field == "cluster.gossip_port"
    assert "expected a port number between 1 and 65535" in str(info.value)

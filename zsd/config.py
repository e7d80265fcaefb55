"""Configuration: TOML file, then ``ZSD_<SECTION>_<KEY>`` environment variables,
then ``--set section.key=value`` flags, validated once into a frozen ``Config``.

Every key is declared once in ``_SCHEMA`` with its parser and a description of
what is allowed, so a bad value (or an unknown key, usually a typo) stops the
daemon with a message naming the key, the value and what is allowed.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zsd.compute.settings import STRATEGIES, PlacementSettings
from zsd.errors import ConfigError
from zsd.paths import Paths

HOST_NAME_RE = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
LOG_LEVELS = ("debug", "info", "warning", "error")
HYPERVISORS = ("auto", "kvm", "qemu")


@dataclass(frozen=True, kw_only=True)
class TlsConfig:
    cert: Path
    key: Path
    # When set, clients must present a certificate signed by this CA (mutual TLS).
    client_ca: Path | None = None


@dataclass(frozen=True, kw_only=True)
class ApiConfig:
    socket: Path
    # "host:port" for TCP with TLS; None disables TCP.
    tcp_listen: str | None = None
    tls: TlsConfig | None = None
    # Seconds SIGTERM waits for in-flight RPCs before cancelling them.
    shutdown_grace: float = 3.0


@dataclass(frozen=True, kw_only=True)
class HypervisorConfig:
    kind: str = "auto"
    libvirt_uri: str = "qemu:///system"
    probe_timeout: float = 3.0
    migration_uri: str = "qemu+tls://{address}/system"
    """How peers' libvirtds reach this host's for live migration ({address}: this host's)."""
    vm_leases: bool = False
    """This host's libvirtd uses sanlock as its lock manager (qemu.conf lock_manager =
    "sanlock"): HA VMs get a VM lease, and only such VMs are restarted elsewhere."""


@dataclass(frozen=True, kw_only=True)
class Config:
    root: Path
    cluster_name: str
    host_name: str
    host_address: str
    api: ApiConfig
    hypervisor: HypervisorConfig
    log_level: str = "info"
    # How often the host inventory is re-collected in the background (seconds).
    facts_interval: float = 60.0
    # SWIM membership: UDP for gossip, TCP on the same number for state exchange.
    gossip_port: int = 7946
    # A host with no membership founds its own cluster of one on first start
    # (when a sanlock daemon answers); see zsd.cluster.autoinit.
    auto_init: bool = False
    # How often every pool is checked again (marker, mount) and its state updated (seconds).
    storage_check_interval: float = 30.0
    placement: PlacementSettings = field(default_factory=PlacementSettings)
    # Network namespaces named so are this host's DHCP/DNS services (one per port group).
    dhcp_netns_prefix: str = "zsd-dhcp-"
    # The DHCP services' files (dnsmasq re-reads them as nobody, so every directory on
    # the way must let others enter); None: <root>/run/zsd-dhcp.
    dhcp_state_dir: Path | None = None
    source: tuple[str, ...] = field(default=())


# --- value parsers: each raises ValueError with the "allowed" text left to the schema


def _str(v: object) -> str:
    if not isinstance(v, str):
        raise ValueError
    return v


def _migration_uri(v: object) -> str:
    text = _str(v)
    scheme = text.split("://", 1)[0]
    if scheme not in ("qemu+tls", "qemu+tcp", "qemu+ssh") or "{address}" not in text:
        raise ValueError
    return text


def _host_name(v: object) -> str:
    s = _str(v)
    if not HOST_NAME_RE.match(s):
        raise ValueError
    return s


def _choice(options: Sequence[str]) -> Callable[[object], str]:
    def parse(v: object) -> str:
        s = _str(v).lower()
        if s not in options:
            raise ValueError
        return s

    return parse


def _float_range(lo: float, hi: float) -> Callable[[object], float]:
    def parse(v: object) -> float:
        if isinstance(v, bool):
            raise ValueError
        f = float(v) if isinstance(v, (int, float, str)) else float("nan")
        if not lo <= f <= hi:
            raise ValueError
        return f

    return parse


def _int_range(lo: int, hi: int) -> Callable[[object], int]:
    def parse(v: object) -> int:
        # TOML gives int; env and --set give str. bool is an int subclass: refuse it.
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            raise ValueError
        i = int(v)
        if not lo <= i <= hi:
            raise ValueError
        return i

    return parse


def _netns_prefix(v: object) -> str:
    s = _str(v)
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,59}", s):
        raise ValueError
    return s


def _bool(v: object) -> bool:
    # TOML gives bool; env and --set give str.
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("true", "false"):
        return v.strip().lower() == "true"
    raise ValueError


def _listen(v: object) -> str | None:
    s = _str(v).strip()
    if not s:
        return None
    host, sep, port = s.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError
    ipaddress.ip_address(host.strip("[]"))  # ValueError if not an IP literal
    return s


def _address(v: object) -> str:
    s = _str(v)
    if s:
        ipaddress.ip_address(s)
    return s


def _path(v: object) -> Path:
    s = _str(v)
    if not s.startswith("/"):
        raise ValueError
    return Path(s)


def _opt_path(v: object) -> Path | None:
    return _path(v) if _str(v) else None


@dataclass(frozen=True)
class _Key:
    parse: Callable[[object], Any]
    allowed: str
    default: Any


def _schema(hostname: str) -> dict[str, _Key]:
    return {
        "cluster.name": _Key(_host_name, "an RFC 1123 label: a-z, 0-9 and '-', 1-63 chars", "zsd"),
        "cluster.gossip_port": _Key(_int_range(1, 65535), "a port number between 1 and 65535", 7946),
        "cluster.auto_init": _Key(_bool, "true or false", False),
        "host.name": _Key(_host_name, "an RFC 1123 label: a-z, 0-9 and '-', 1-63 chars", hostname),
        "host.address": _Key(_address, "an IPv4 or IPv6 address, or empty for automatic", ""),
        "api.socket": _Key(_opt_path, "an absolute path, or empty for <root>/run/zsd/zsd.sock", ""),
        "api.tcp_listen": _Key(_listen, "'IP:PORT' (e.g. '0.0.0.0:7443', '[::]:7443') or empty", ""),
        "api.tls_cert": _Key(_opt_path, "an absolute path to a PEM certificate, or empty", ""),
        "api.tls_key": _Key(_opt_path, "an absolute path to a PEM private key, or empty", ""),
        "api.tls_client_ca": _Key(_opt_path, "an absolute path to a PEM CA bundle, or empty", ""),
        "api.shutdown_grace": _Key(_float_range(0.0, 4.5), "seconds between 0 and 4.5", 3.0),
        "hypervisor.kind": _Key(_choice(HYPERVISORS), "one of " + ", ".join(HYPERVISORS), "auto"),
        "hypervisor.libvirt_uri": _Key(_str, "a libvirt URI such as qemu:///system", "qemu:///system"),
        "hypervisor.probe_timeout": _Key(_float_range(0.5, 60.0), "seconds between 0.5 and 60", 3.0),
        "hypervisor.migration_uri": _Key(
            _migration_uri,
            "a libvirt URI template for peers to reach this host's libvirtd, such as qemu+tls://{address}/system",
            "qemu+tls://{address}/system",
        ),
        "hypervisor.vm_leases": _Key(_bool, "true or false", False),
        "log.level": _Key(_choice(LOG_LEVELS), "one of " + ", ".join(LOG_LEVELS), "info"),
        "host.facts_interval": _Key(_float_range(5.0, 86400.0), "seconds between 5 and 86400", 60.0),
        "storage.check_interval": _Key(_float_range(0.2, 3600.0), "seconds between 0.2 and 3600", 30.0),
        "compute.cpu_overcommit": _Key(_float_range(0.1, 32.0), "a ratio between 0.1 and 32", 4.0),
        "compute.memory_overcommit": _Key(_float_range(0.1, 4.0), "a ratio between 0.1 and 4", 1.0),
        "compute.placement": _Key(_choice(STRATEGIES), "one of " + ", ".join(STRATEGIES), "spread"),
        "network.dhcp_netns_prefix": _Key(
            _netns_prefix, "1-60 of a-z, 0-9 and '-', starting with a letter", "zsd-dhcp-"
        ),
        "network.dhcp_state_dir": _Key(
            _opt_path, "an absolute path others may enter (o+x), or empty for <root>/run/zsd-dhcp", ""
        ),
    }


def default_host_name() -> str:
    """The machine's short host name, lower-cased and made into a valid label."""
    raw = socket.gethostname().split(".")[0].lower()
    cleaned = re.sub(r"[^a-z0-9-]", "-", raw).strip("-")[:63] or "host"
    return cleaned if cleaned[0].isalpha() else f"h-{cleaned}"[:63]


def _flatten(doc: Mapping[str, Any], origin: str) -> dict[str, tuple[object, str]]:
    out: dict[str, tuple[object, str]] = {}
    for section, body in doc.items():
        if not isinstance(body, Mapping):
            raise ConfigError(
                f"{origin}: top-level key {section!r} must be a [section] table",
                field=section,
            )
        for key, value in body.items():
            out[f"{section}.{key}"] = (value, origin)
    return out


def _from_env(env: Mapping[str, str], known: Sequence[str]) -> dict[str, tuple[object, str]]:
    by_var = {"ZSD_" + k.replace(".", "_").upper(): k for k in known}
    out: dict[str, tuple[object, str]] = {}
    for var, value in env.items():
        if var in by_var:
            out[by_var[var]] = (value, f"environment {var}")
    return out


def _from_flags(pairs: Sequence[str]) -> dict[str, tuple[object, str]]:
    out: dict[str, tuple[object, str]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--set {pair!r}: expected section.key=value", field="--set")
        out[key.strip()] = (value, f"--set {key.strip()}")
    return out


def load(
    *,
    root: Path = Path("/"),
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Sequence[str] = (),
    hostname: str | None = None,
) -> Config:
    """Reads and validates the configuration. A missing default file means embedded defaults;
    a missing file that was named explicitly is an error."""
    paths = Paths(root=root)
    schema = _schema(hostname or default_host_name())
    explicit = config_file is not None
    path = config_file or paths.config_file
    raw: dict[str, tuple[object, str]] = {}
    sources: list[str] = []
    if path.exists():
        try:
            doc = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid TOML: {e}", field=str(path)) from e
        raw.update(_flatten(doc, str(path)))
        sources.append(str(path))
    elif explicit:
        raise ConfigError(f"config file {path} does not exist", field="--config")
    raw.update(_from_env(os.environ if env is None else env, list(schema)))
    raw.update(_from_flags(overrides))

    values: dict[str, Any] = {k: spec.parse(spec.default) for k, spec in schema.items()}
    for key, (value, origin) in raw.items():
        spec = schema.get(key)
        if spec is None:
            raise ConfigError(
                f"{origin}: unknown key {key!r}; known keys: {', '.join(sorted(schema))}",
                field=key,
            )
        try:
            values[key] = spec.parse(value)
        except (ValueError, TypeError, OverflowError):
            raise ConfigError(
                f"{origin}: {key} = {value!r} is not allowed; expected {spec.allowed}",
                field=key,
            ) from None
    return _build(paths, values, tuple(sources))


def _build(paths: Paths, v: Mapping[str, Any], sources: tuple[str, ...]) -> Config:
    tls_parts = (v["api.tls_cert"], v["api.tls_key"])
    tls: TlsConfig | None = None
    if any(tls_parts) and not all(tls_parts):
        missing = "api.tls_key" if v["api.tls_cert"] else "api.tls_cert"
        raise ConfigError(f"{missing} must be set together with the other TLS file", field=missing)
    if all(tls_parts):
        tls = TlsConfig(cert=v["api.tls_cert"], key=v["api.tls_key"], client_ca=v["api.tls_client_ca"])
    elif v["api.tls_client_ca"]:
        raise ConfigError("api.tls_client_ca needs api.tls_cert and api.tls_key", field="api.tls_client_ca")
    if v["api.tcp_listen"] and tls is None:
        # Plain TCP would expose a root-equivalent API to the network.
        raise ConfigError(
            f"api.tcp_listen = {v['api.tcp_listen']!r} needs api.tls_cert and api.tls_key "
            "(the API is never served over plain TCP)",
            field="api.tcp_listen",
        )
    return Config(
        root=paths.root,
        cluster_name=v["cluster.name"],
        host_name=v["host.name"],
        host_address=v["host.address"],
        api=ApiConfig(
            socket=v["api.socket"] or paths.api_socket,
            tcp_listen=v["api.tcp_listen"],
            tls=tls,
            shutdown_grace=v["api.shutdown_grace"],
        ),
        hypervisor=HypervisorConfig(
            kind=v["hypervisor.kind"],
            libvirt_uri=v["hypervisor.libvirt_uri"],
            probe_timeout=v["hypervisor.probe_timeout"],
            migration_uri=v["hypervisor.migration_uri"],
            vm_leases=v["hypervisor.vm_leases"],
        ),
        log_level=v["log.level"],
        facts_interval=v["host.facts_interval"],
        gossip_port=v["cluster.gossip_port"],
        auto_init=v["cluster.auto_init"],
        storage_check_interval=v["storage.check_interval"],
        dhcp_netns_prefix=v["network.dhcp_netns_prefix"],
        dhcp_state_dir=v["network.dhcp_state_dir"],
        placement=PlacementSettings(
            cpu_overcommit=v["compute.cpu_overcommit"],
            memory_overcommit=v["compute.memory_overcommit"],
            strategy=v["compute.placement"],
        ),
        source=sources,
    )

"""Where zsctl connects and how: endpoint resolution and channel construction.

Part of the stand-alone ``zsctl`` client: imports only the standard library and grpc.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import grpc

DEFAULT_ENDPOINT = "unix:///run/zsd/zsd.sock"
ENDPOINT_ENV = "ZSD_ENDPOINT"
CA_ENV = "ZSD_CA"
CERT_ENV = "ZSD_CERT"
KEY_ENV = "ZSD_KEY"

# zsd messages are small, but a host with many disks/NICs and long lists of operations
# should never hit grpc's 4 MiB default.
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class EndpointError(ValueError):
    """The endpoint or its TLS settings are unusable; a usage error (exit 2)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Tls:
    """PEM file paths for a TLS connection; ``cert``/``key`` only for mutual TLS."""

    ca: str
    cert: str | None = None
    key: str | None = None
    server_name: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Endpoint:
    """A resolved endpoint: ``target`` is what grpc dials, ``display`` what people see."""

    display: str
    target: str
    unix: bool
    tls: Tls | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConnectOptions:
    """Connection settings from the command line; ``None`` means "not given, ask the environment"."""

    endpoint: str | None = None
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    server_name: str | None = None
    insecure: bool = False


def resolve_endpoint(options: ConnectOptions, env: Mapping[str, str]) -> Endpoint:
    """Pick the endpoint: the flag, else ``$ZSD_ENDPOINT``, else the local socket.

    TCP endpoints need TLS (``--ca``/``$ZSD_CA``, optionally a client certificate) or an
    explicit ``--insecure``; TLS settings are ignored for Unix sockets, whose access is
    controlled by file permissions.
    """
    raw = options.endpoint or env.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT
    raw = raw.strip()
    if raw.startswith("unix:"):
        return Endpoint(display=raw, target=_unix_target(raw), unix=True)
    _check_host_port(raw)
    ca = options.ca or env.get(CA_ENV) or None
    cert = options.cert or env.get(CERT_ENV) or None
    key = options.key or env.get(KEY_ENV) or None
    if (cert is None) != (key is None):
        raise EndpointError("a client certificate needs both --cert and --key (or ZSD_CERT and ZSD_KEY)")
    if ca is None:
        if cert is not None:
            raise EndpointError("--cert/--key need --ca FILE (or ZSD_CA) to verify the server")
        if not options.insecure:
            raise EndpointError(
                f"TCP endpoint {raw} needs TLS: give --ca FILE (or ZSD_CA), "
                "or --insecure for an unencrypted connection"
            )
        return Endpoint(display=raw, target=raw, unix=False)
    tls = Tls(ca=ca, cert=cert, key=key, server_name=options.server_name)
    return Endpoint(display=raw, target=raw, unix=False, tls=tls)


def _unix_target(raw: str) -> str:
    rest = raw.removeprefix("unix:")
    if rest.startswith("//"):
        # unix://host/path has an authority, which grpc does not support for sockets.
        path = rest[2:]
        if not path.startswith("/"):
            raise EndpointError(f"bad endpoint {raw!r}: use unix:/absolute/path or unix:///absolute/path")
    else:
        path = rest
    if not path:
        raise EndpointError(f"bad endpoint {raw!r}: the socket path is empty")
    return f"unix:{path}"


def _check_host_port(raw: str) -> None:
    host, sep, port = raw.rpartition(":")
    usage = f"bad endpoint {raw!r}: use host:port, [ipv6]:port, unix:/path or unix:///path"
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise EndpointError(usage)
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise EndpointError(usage)


def open_channel(endpoint: Endpoint) -> grpc.Channel:
    """Create (but do not connect) the channel; file errors become ``EndpointError``."""
    options: list[tuple[str, str | int]] = [
        ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
        # One short call per invocation: do not let a proxy from the environment hijack it.
        ("grpc.enable_http_proxy", 0),
    ]
    if endpoint.tls is None:
        return grpc.insecure_channel(endpoint.target, options=options)
    tls = endpoint.tls
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read_pem(tls.ca, "--ca"),
        private_key=_read_pem(tls.key, "--key") if tls.key else None,
        certificate_chain=_read_pem(tls.cert, "--cert") if tls.cert else None,
    )
    if tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.secure_channel(endpoint.target, credentials, options=options)


def _read_pem(path: str, flag: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise EndpointError(f"cannot read {flag} {path}: {e.strerror}") from e

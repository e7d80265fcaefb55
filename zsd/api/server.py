"""The gRPC server: grpc.aio on the API thread, with health checking and reflection.

Listens on the local Unix socket (root only) and, when configured, on TCP with
TLS (mutual TLS when a client CA is set). Started and stopped from trio.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path

import grpc
import trio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer  # the asyncio flavour (health.aio)
from grpc_reflection.v1alpha import reflection

from zsd.config import ApiConfig
from zsd.errors import FailedPrecondition, Unavailable
from zsd.util.apithread import Bridge

log = logging.getLogger(__name__)

# Registers servicers on the server; returns the full names of the services it added.
Registrar = Callable[[grpc.aio.Server], list[str]]


def _claim_socket_path(path: Path) -> None:
    """Makes ``path`` free for a new listener without stealing it from a live zsd."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)  # only root may reach the socket, whatever the umask did
    if not path.exists() and not path.is_symlink():
        return
    if not stat.S_ISSOCK(path.lstat().st_mode):
        raise FailedPrecondition(
            f"{path} exists and is not a socket; refusing to replace it", field="api.socket"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()  # stale socket of a zsd that died
        return
    finally:
        probe.close()
    raise FailedPrecondition(f"another process is already serving on {path}", field="api.socket")


def _tls_credentials(config: ApiConfig) -> grpc.ServerCredentials:
    assert config.tls is not None
    try:
        key, cert = config.tls.key.read_bytes(), config.tls.cert.read_bytes()
        ca = config.tls.client_ca.read_bytes() if config.tls.client_ca else None
    except OSError as e:
        raise FailedPrecondition(
            f"cannot read TLS file {e.filename}: {e.strerror}", field="api.tls_cert"
        ) from e
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
    )


_SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.so_reuseport", 0),
    # Peers ping every 2 s to notice a dead leader quickly, also on a state feed
    # with nothing to send (zsd.cluster.peerclient). gRPC's server default tolerates
    # a ping without data every 5 min only and answers more with GOAWAY
    # "too_many_pings", which cut every follower's feed every ~10 s.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 1000),
)


class ApiServer:
    def __init__(self, *, bridge: Bridge, config: ApiConfig, register: Registrar) -> None:
        self._bridge = bridge
        self._config = config
        self._register = register
        self._server: grpc.aio.Server | None = None
        self._health: HealthServicer | None = None
        self.tcp_port: int | None = None

    async def run(self, *, task_status: trio.TaskStatus[ApiServer] = trio.TASK_STATUS_IGNORED) -> None:
        """Serves until cancelled; ``started`` once every listener is bound."""
        await trio.to_thread.run_sync(_claim_socket_path, self._config.socket)
        await self._bridge.to_asyncio.run(self._start())
        try:
            task_status.started(self)
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await self.stop(grace=0)

    async def _start(self) -> None:
        server = grpc.aio.server(options=_SERVER_OPTIONS)
        services = self._register(server)
        self._health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        for name in ["", *services]:
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        reflection.enable_server_reflection(
            [*services, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            server,
        )
        server.add_insecure_port(f"unix:{self._config.socket}")
        if self._config.tcp_listen:
            try:
                self.tcp_port = server.add_secure_port(
                    self._config.tcp_listen, _tls_credentials(self._config)
                )
            except RuntimeError as e:
                raise Unavailable(
                    f"cannot listen on {self._config.tcp_listen}: {e}", field="api.tcp_listen"
                ) from e
        await server.start()
        os.chmod(self._config.socket, 0o600)
        self._server = server
        log.info(
            "API serving on unix:%s%s",
            self._config.socket,
            f" and {self._config.tcp_listen} (TLS)" if self._config.tcp_listen else "",
        )

    async def stop(self, *, grace: float) -> None:
        """Refuses new calls, lets in-flight ones finish for ``grace`` seconds, then cancels them."""
        server, self._server = self._server, None
        if server is None:
            return

        async def stop_on_loop() -> None:
            if self._health is not None:
                await self._health.enter_graceful_shutdown()
            await server.stop(grace)

        try:
            await self._bridge.to_asyncio.run(stop_on_loop())
        except (RuntimeError, asyncio.CancelledError):
            log.warning("API loop gone before the server stopped cleanly")
        self._config.socket.unlink(missing_ok=True)

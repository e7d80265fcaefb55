"""The baseline for ``api_bench``: a bare grpc.aio server with one unary method.

It takes raw bytes in and answers with a fixed payload (the serialized ``Host`` that
the zsd under test returned), so both servers move the same bytes over the same
transports, each a Python grpc.aio server in its own process. Nothing else runs in it:
no servicer classes, no protobuf (de)serialization, no thread hop.

python -m tests.bench._echo_server --unix PATH --tcp PORT --cert PEM --key PEM --payload FILE
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc

SERVICE = "bench.Echo"
METHOD = f"/{SERVICE}/Echo"


async def _serve(ns: argparse.Namespace) -> None:
    payload: bytes = ns.payload.read_bytes()

    async def echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return payload

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    # No (de)serializers: the handler sees and returns bytes.
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(echo)}),)
    )
    server.add_insecure_port(f"unix:{ns.unix}")
    creds = grpc.ssl_server_credentials([(ns.key.read_bytes(), ns.cert.read_bytes())])
    server.add_secure_port(f"127.0.0.1:{ns.tcp}", creds)
    await server.start()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench._echo_server")
    parser.add_argument("--unix", type=Path, required=True, help="Unix socket path to listen on")
    parser.add_argument("--tcp", type=int, required=True, help="TCP port on 127.0.0.1 (TLS)")
    parser.add_argument("--cert", type=Path, required=True)
    parser.add_argument("--key", type=Path, required=True)
    parser.add_argument("--payload", type=Path, required=True, help="file whose bytes every call returns")
    asyncio.run(_serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The load generator for ``api_bench``: grpc.aio in a process of its own.

It reads one JSON job per line on stdin and answers each with one JSON line on stdout,
so ``api_bench`` itself never touches gRPC (and forks its servers from a process
without gRPC threads). Jobs (every job has ``target``, ``method`` and optionally
``ca``, a PEM file that turns on TLS):

``{"op": "call", "request": HEX, "timeout": S}``
    one unary call; answers ``{"ok": true, "response": HEX}`` or ``{"ok": false, "error": ...}``.
``{"op": "load", "request": HEX, "concurrency": N, "warmup": S, "duration": S}``
    N calls in flight at all times on one fresh channel, for ``warmup + duration``
    seconds; only calls that start after the warm-up and finish before the end count.
    Answers ``{"ok": true, "latencies": [seconds, ...], "errors": N, "error": str|null,
    "response_bytes": N, "duration": S}``.

Calls carry raw bytes both ways (no client-side protobuf work), so the client does the
same work for zsd and for the echo server.

python -m tests.bench._load_client   (driven by api_bench)
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import grpc


def _channel(job: dict[str, Any]) -> grpc.aio.Channel:
    if job.get("ca"):
        creds = grpc.ssl_channel_credentials(root_certificates=Path(job["ca"]).read_bytes())
        return grpc.aio.secure_channel(job["target"], creds)
    return grpc.aio.insecure_channel(job["target"])


async def _call(job: dict[str, Any]) -> dict[str, Any]:
    try:
        async with _channel(job) as channel:
            method = channel.unary_unary(job["method"], None, None)  # no (de)serializers: bytes in and out
            response: bytes = await method(bytes.fromhex(job["request"]), timeout=job.get("timeout", 2.0))
    except grpc.aio.AioRpcError as e:
        return {"ok": False, "error": f"{e.code().name}: {e.details()}"}
    return {"ok": True, "response": response.hex()}


async def _load(job: dict[str, Any]) -> dict[str, Any]:
    request = bytes.fromhex(job["request"])
    concurrency: int = job["concurrency"]
    latencies: list[float] = []
    errors = 0
    first_error: str | None = None
    response_bytes = 0
    async with _channel(job) as channel:
        method = channel.unary_unary(job["method"], None, None)
        await asyncio.wait_for(channel.channel_ready(), timeout=10)
        measure_from = time.perf_counter() + job["warmup"]
        end = measure_from + job["duration"]

        async def worker() -> None:
            nonlocal errors, first_error, response_bytes
            while (start := time.perf_counter()) < end:
                try:
                    response: bytes = await method(request, timeout=10)
                except grpc.aio.AioRpcError as e:
                    errors += 1
                    first_error = first_error or f"{e.code().name}: {e.details()}"
                    if e.code() == grpc.StatusCode.UNAVAILABLE:
                        await asyncio.sleep(0.01)  # server gone: don't spin
                    continue
                done = time.perf_counter()
                if start >= measure_from and done <= end:
                    latencies.append(done - start)
                response_bytes = len(response)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {
        "ok": True,
        "latencies": latencies,
        "errors": errors,
        "error": first_error,
        "response_bytes": response_bytes,
        "duration": job["duration"],
    }


async def _main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        job: dict[str, Any] = json.loads(line)
        try:
            result = await (_load(job) if job["op"] == "load" else _call(job))
        except Exception as e:  # reported to api_bench, which decides what to do
            result = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(_main())

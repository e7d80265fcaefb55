"""A client load for cluster fault tests and benchmarks: label writes through
different hosts, each retried with its own request_id until a definitive answer.

Every mutation sets one label key (``w<n>``) on one host entry, so the store's
final labels say exactly which mutations took effect, and the change log says
how many times each did.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
from google.protobuf import field_mask_pb2

from zsd.v1 import host_pb2, host_pb2_grpc

RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


@dataclass(frozen=True, kw_only=True)
class Outcome:
    key: str
    request_id: str
    via: str
    ok: bool
    attempts: int
    latency: float
    """Seconds from the first attempt to the definitive answer."""
    error: str = ""


@dataclass
class LoadResult:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def acknowledged(self) -> set[str]:
        return {o.key for o in self.outcomes if o.ok}

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]


def label_write(
    endpoint: str, *, host: str, key: str, value: str, request_id: str, timeout: float
) -> host_pb2.Host:
    with grpc.insecure_channel(endpoint) as channel:
        stub = host_pb2_grpc.HostServiceStub(channel)
        return stub.UpdateHost(
            host_pb2.UpdateHostRequest(
                host=host_pb2.Host(name=f"hosts/{host}", labels={key: value}),
                update_mask=field_mask_pb2.FieldMask(paths=[f"labels.{key}"]),
                request_id=request_id,
            ),
            timeout=timeout,
        )


def write_until_answered(
    endpoints: Sequence[str],
    *,
    host: str,
    key: str,
    first: int,
    give_up: float,
    call_timeout: float = 5.0,
    pause: float = 0.2,
) -> Outcome:
    """Sends one mutation, starting at ``endpoints[first]``; on a retryable error
    sends it again (same request_id) through the next endpoint, until ``give_up``
    seconds have passed."""
    request_id = str(uuid.uuid4())
    start = time.monotonic()
    attempts = 0
    last = ""
    while time.monotonic() - start < give_up:
        endpoint = endpoints[(first + attempts) % len(endpoints)]
        attempts += 1
        try:
            label_write(endpoint, host=host, key=key, value="1", request_id=request_id, timeout=call_timeout)
            return Outcome(
                key=key,
                request_id=request_id,
                via=endpoint,
                ok=True,
                attempts=attempts,
                latency=time.monotonic() - start,
            )
        except grpc.RpcError as e:
            code = e.code() if isinstance(e, grpc.Call) else None
            last = f"{code.name if code else 'ERROR'}: {e.details() if isinstance(e, grpc.Call) else e}"
            if code not in RETRYABLE:
                break
            time.sleep(pause)
    return Outcome(
        key=key,
        request_id=request_id,
        via="",
        ok=False,
        attempts=attempts,
        latency=time.monotonic() - start,
        error=last,
    )


def run_load(
    endpoints: Sequence[str],
    *,
    host: str,
    count: int,
    threads: int,
    prefix: str = "w",
    give_up: float = 120.0,
    spacing: float = 0.0,
    stop: Callable[[], bool] | None = None,
) -> LoadResult:
    """``count`` mutations from ``threads`` threads, spread over ``endpoints``;
    ``spacing`` seconds between starts within a thread stretches the load over
    time (so faults land in the middle of it)."""
    result = LoadResult()
    lock = threading.Lock()

    def worker(index: int) -> None:
        for n in range(index, count, threads):
            if stop is not None and stop():
                return
            outcome = write_until_answered(endpoints, host=host, key=f"{prefix}{n}", first=n, give_up=give_up)
            with lock:
                result.outcomes.append(outcome)
            if spacing:
                time.sleep(spacing)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for future in [pool.submit(worker, i) for i in range(threads)]:
            future.result()
    return result

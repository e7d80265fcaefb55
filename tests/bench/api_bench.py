"""API benchmark: HostService.GetHost ("hosts/-") on a real zsd next to a bare grpc.aio server.

    .venv/bin/python -m tests.bench.api_bench [--duration 3] [--warmup 0.5] [--repeats 3] [--json FILE]

Three processes besides this one, so nothing here touches gRPC:

- ``zsd run`` on a throwaway root, serving the Unix socket and TCP with TLS (a throwaway
  CA and a server certificate for 127.0.0.1), ``hypervisor.kind=qemu`` (no KVM probe) and
  the inventory refresh pushed out past the run (it would land in some cells only);
- ``tests.bench._echo_server``: one grpc.aio unary method that answers the very bytes of
  a real GetHost response from that zsd, on the same two transports with the same TLS;
- ``tests.bench._load_client``: grpc.aio, N calls in flight on one channel, raw bytes both
  ways so that the client does the same work against either server.

Each cell (transport x concurrency) is measured ``--repeats`` times, zsd and echo
alternately (and in alternating order), and the table shows the median of each figure,
because a shared machine is noisy. The ratio is zsd req/s / echo req/s of the two runs
made back to back in one repeat, median over the repeats; the target is 0.8.
Every process and the temp dir are removed on every way out. SIGKILL of this process
included: the children get SIGTERM from the kernel when it dies, and the next run
removes the temp dir (its name carries the dead process's pid).

This is a benchmark, not a test: it exits 0 whether or not the target is met, and 1
when it could not measure.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import json
import os
import platform
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from grpc_health.v1 import health_pb2

from tests.pki import Pki, make_pki
from zsd.v1 import host_pb2

GET_HOST = "/zsd.v1.HostService/GetHost"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
ECHO_METHOD = "/bench.Echo/Echo"  # tests.bench._echo_server.METHOD (not imported: it imports grpc)
TARGET_RATIO = 0.8
SERVERS = ("zsd", "echo")
TRANSPORTS = ("unix", "tcp+tls")
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
TMP_PREFIX = "zsd-bench-"

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)


class BenchError(Exception):
    """The benchmark could not be run; the message says why."""


class _Stop(BaseException):
    """SIGTERM to this process: unwinds through every ``finally`` like Ctrl-C does."""


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if this process is SIGKILLed, the kernel
    # sends the child SIGTERM, so no server outlives the benchmark.
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _spawn(argv: Sequence[str], log: Path, **kw: Any) -> subprocess.Popen[str]:
    with log.open("w") as out:
        return subprocess.Popen(
            list(argv),
            stdin=kw.pop("stdin", subprocess.DEVNULL),
            stdout=kw.pop("stdout", out),
            stderr=out,
            text=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - single-threaded here (no gRPC in this process)
            **kw,
        )


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM, wait, SIGKILL on timeout; always reaps."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def _running(argv: Sequence[str], log: Path, **kw: Any) -> Iterator[subprocess.Popen[str]]:
    proc = _spawn(argv, log, **kw)
    try:
        yield proc
    finally:
        _stop(proc)


def _tail(log: Path, lines: int = 25) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _sweep_stale_dirs() -> None:
    """Removes the temp dirs of earlier runs that were SIGKILLed (nothing could clean up then)."""
    for d in Path(tempfile.gettempdir()).glob(f"{TMP_PREFIX}*-*"):
        pid = d.name.removeprefix(TMP_PREFIX).split("-")[0]
        if not pid.isdigit() or not d.is_dir():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:
            pass  # alive, someone else's


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _zsd_command() -> list[str]:
    beside = Path(sys.executable).with_name("zsd")
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "zsd.cli.zsd_main"]


class LoadClient:
    """The ``_load_client`` process: one JSON job out, one JSON result back."""

    def __init__(self, proc: subprocess.Popen[str], log: Path) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self._proc, self._log = proc, log
        self._stdin, self._stdout = proc.stdin, proc.stdout

    def run(self, job: dict[str, Any], timeout: float) -> dict[str, Any]:
        try:
            self._stdin.write(json.dumps(job) + "\n")
            self._stdin.flush()
        except BrokenPipeError:
            raise BenchError(f"the load client died:\n{_tail(self._log)}") from None
        ready, _, _ = select.select([self._stdout], [], [], timeout)
        line = self._stdout.readline() if ready else ""
        if not line:
            why = "died" if self._proc.poll() is not None else f"gave no answer within {timeout:.0f} s"
            raise BenchError(
                f"the load client {why} (job {job['op']} on {job['target']}):\n{_tail(self._log)}"
            )
        result: dict[str, Any] = json.loads(line)
        return result


@dataclass(frozen=True)
class Endpoint:
    target: str
    ca: str | None  # PEM of the CA for TLS; None for the Unix socket


@dataclass(frozen=True)
class Server:
    name: str
    method: str
    request: bytes
    endpoints: dict[str, Endpoint]  # by transport


def _wait_until(
    what: str, proc: subprocess.Popen[str], log: Path, probe: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """Polls ``probe`` until it answers ok; fails early if ``proc`` exits."""
    deadline = time.monotonic() + READY_TIMEOUT
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            hint = ""
            if "zsd.host.facts" in _tail(log, 200):
                hint = "\n(zsd.host.facts is being written right now? retry in a few minutes)"
            raise BenchError(f"{what} exited with status {proc.returncode}:\n{_tail(log)}{hint}")
        last = probe()
        if last.get("ok"):
            return last
        time.sleep(0.2)
    raise BenchError(
        f"{what} not ready within {READY_TIMEOUT:.0f} s (last: {last.get('error')}):\n{_tail(log)}"
    )


def _call_job(endpoint: Endpoint, method: str, request: bytes) -> dict[str, Any]:
    return {
        "op": "call",
        "target": endpoint.target,
        "ca": endpoint.ca,
        "method": method,
        "request": request.hex(),
        "timeout": 1.0,
    }


@dataclass(frozen=True)
class Run:
    """One measurement of one server in one cell."""

    transport: str
    concurrency: int
    server: str
    repeat: int
    calls: int
    errors: int
    first_error: str | None
    p50_ms: float
    p99_ms: float
    rps: float
    response_bytes: int


def _quantiles(latencies: list[float]) -> tuple[float, float]:
    if not latencies:
        return float("nan"), float("nan")
    if len(latencies) == 1:
        return latencies[0], latencies[0]
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return q[49], q[98]


def _measure(
    client: LoadClient,
    server: Server,
    *,
    transport: str,
    concurrency: int,
    repeat: int,
    ns: argparse.Namespace,
) -> Run:
    endpoint = server.endpoints[transport]
    job = {
        "op": "load",
        "target": endpoint.target,
        "ca": endpoint.ca,
        "method": server.method,
        "request": server.request.hex(),
        "concurrency": concurrency,
        "warmup": ns.warmup,
        "duration": ns.duration,
    }
    result = client.run(job, timeout=ns.warmup + ns.duration + 30)
    if not result.get("ok"):
        raise BenchError(f"load on {server.name} over {transport} failed: {result.get('error')}")
    latencies: list[float] = result["latencies"]
    p50, p99 = _quantiles(latencies)
    return Run(
        transport=transport,
        concurrency=concurrency,
        server=server.name,
        repeat=repeat,
        calls=len(latencies),
        errors=result["errors"],
        first_error=result["error"],
        p50_ms=p50 * 1e3,
        p99_ms=p99 * 1e3,
        rps=len(latencies) / result["duration"],
        response_bytes=result["response_bytes"],
    )


@dataclass(frozen=True)
class Cell:
    """The median over the repeats of one server in one cell."""

    transport: str
    concurrency: int
    server: str
    p50_ms: float
    p99_ms: float
    rps: float
    errors: int


def _cells(runs: list[Run]) -> list[Cell]:
    out: list[Cell] = []
    keys = dict.fromkeys((r.transport, r.concurrency, r.server) for r in runs)
    for transport, concurrency, server in keys:
        mine = [r for r in runs if (r.transport, r.concurrency, r.server) == (transport, concurrency, server)]
        out.append(
            Cell(
                transport=transport,
                concurrency=concurrency,
                server=server,
                p50_ms=statistics.median(r.p50_ms for r in mine),
                p99_ms=statistics.median(r.p99_ms for r in mine),
                rps=statistics.median(r.rps for r in mine),
                errors=sum(r.errors for r in mine),
            )
        )
    return out


def _ratios(runs: list[Run]) -> dict[tuple[str, int], float]:
    """zsd req/s / echo req/s per cell: the median of the ratios of the runs made back to back
    in the same repeat, which cancels the machine's slow drift better than a ratio of medians."""
    by = {(r.transport, r.concurrency, r.repeat, r.server): r for r in runs}
    paired: dict[tuple[str, int], list[float]] = {}
    for (transport, concurrency, repeat, server), run in by.items():
        echo = by.get((transport, concurrency, repeat, "echo"))
        if server == "zsd" and echo is not None and echo.rps > 0:
            paired.setdefault((transport, concurrency), []).append(run.rps / echo.rps)
    return {cell: statistics.median(values) for cell, values in paired.items()}


def _table(cells: list[Cell], ratios: dict[tuple[str, int], float]) -> str:
    header = (
        f"{'transport':<10} {'conc':>4}  {'server':<6} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}  "
        f"{'zsd/echo':>8}"
    )
    lines = [header, "-" * len(header)]
    order = {name: i for i, name in enumerate(SERVERS)}
    for c in sorted(cells, key=lambda c: (TRANSPORTS.index(c.transport), c.concurrency, order[c.server])):
        ratio = ratios.get((c.transport, c.concurrency)) if c.server == "zsd" else None
        lines.append(
            f"{c.transport:<10} {c.concurrency:>4}  {c.server:<6} {c.p50_ms:>8.3f} {c.p99_ms:>8.3f} "
            f"{c.rps:>8.0f}  {f'{ratio:.2f}x' if ratio is not None else '':>8}"
            + (f"  ({c.errors} errors)" if c.errors else "")
        )
    verdicts = [
        f"{t} c={n}: {'met' if r >= TARGET_RATIO else 'NOT met'} ({r:.2f}x)"
        for (t, n), r in sorted(ratios.items(), key=lambda kv: (TRANSPORTS.index(kv[0][0]), kv[0][1]))
    ]
    lines.append("")
    lines.append(f"target zsd >= {TARGET_RATIO}x echo req/s: " + "; ".join(verdicts))
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tests.bench.api_bench",
        description="HostService.GetHost latency and throughput of a real zsd next to a bare grpc.aio server",
    )
    p.add_argument("--duration", type=float, default=3.0, help="measured seconds per run (default 3)")
    p.add_argument(
        "--warmup", type=float, default=0.5, help="unmeasured seconds before each run (default 0.5)"
    )
    p.add_argument("--repeats", type=int, default=3, help="runs per server and cell; the median is shown")
    p.add_argument(
        "--concurrency",
        default="1,64",
        help="comma-separated numbers of calls in flight on one channel (default 1,64)",
    )
    p.add_argument(
        "--json", type=Path, metavar="FILE", help="also write every run and cell as JSON ('-': stdout)"
    )
    return p


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _bench(ns: argparse.Namespace, concurrencies: list[int], tmp: Path, stack: contextlib.ExitStack) -> int:
    pki: Pki = make_pki(tmp / "pki")
    ca = str(pki.ca)
    client_log = tmp / "client.log"
    client_proc = stack.enter_context(
        _running(
            [sys.executable, "-m", "tests.bench._load_client"],
            client_log,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
    )
    client = LoadClient(client_proc, client_log)

    # zsd
    root, zsd_port, zsd_log = tmp / "zsd", _free_port(), tmp / "zsd.log"
    zsd_socket = root / "run/zsd/zsd.sock"
    _progress(f"starting zsd (root {root}, TLS on 127.0.0.1:{zsd_port})")
    zsd_proc = stack.enter_context(
        _running(
            [
                *_zsd_command(),
                "run",
                "--root",
                str(root),
                "--set",
                f"api.tcp_listen=127.0.0.1:{zsd_port}",
                "--set",
                f"api.tls_cert={pki.server_cert}",
                "--set",
                f"api.tls_key={pki.server_key}",
                "--set",
                "hypervisor.kind=qemu",
                "--set",
                "host.facts_interval=86400",
            ],
            zsd_log,
            env={k: v for k, v in os.environ.items() if not k.startswith(("ZSD_", "NOTIFY_", "WATCHDOG_"))},
        )
    )
    zsd_unix = Endpoint(f"unix:{zsd_socket}", None)
    health = health_pb2.HealthCheckRequest(service="").SerializeToString()
    answer = _wait_until(
        "zsd", zsd_proc, zsd_log, lambda: client.run(_call_job(zsd_unix, HEALTH_CHECK, health), 10)
    )
    status = health_pb2.HealthCheckResponse.FromString(bytes.fromhex(answer["response"])).status
    if status != health_pb2.HealthCheckResponse.SERVING:
        raise BenchError(f"zsd health is {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}")
    get_host = host_pb2.GetHostRequest(name="hosts/-").SerializeToString()
    zsd = Server(
        name="zsd",
        method=GET_HOST,
        request=get_host,
        endpoints={"unix": zsd_unix, "tcp+tls": Endpoint(f"127.0.0.1:{zsd_port}", ca)},
    )
    answers = {t: client.run(_call_job(e, GET_HOST, get_host), 10) for t, e in zsd.endpoints.items()}
    for transport, ans in answers.items():
        if not ans.get("ok"):
            raise BenchError(f"GetHost over {transport} failed: {ans.get('error')}\n{_tail(zsd_log)}")
    payload = bytes.fromhex(answers["unix"]["response"])
    host = host_pb2.Host.FromString(payload)
    _progress(f"zsd ready: {host.name}, GetHost response {len(payload)} bytes")

    # the echo server, answering those very bytes
    (tmp / "host.bin").write_bytes(payload)
    echo_socket, echo_port, echo_log = tmp / "echo.sock", _free_port(), tmp / "echo.log"
    echo_proc = stack.enter_context(
        _running(
            [
                sys.executable,
                "-m",
                "tests.bench._echo_server",
                "--unix",
                str(echo_socket),
                "--tcp",
                str(echo_port),
                "--cert",
                str(pki.server_cert),
                "--key",
                str(pki.server_key),
                "--payload",
                str(tmp / "host.bin"),
            ],
            echo_log,
        )
    )
    echo = Server(
        name="echo",
        method=ECHO_METHOD,
        request=get_host,
        endpoints={
            "unix": Endpoint(f"unix:{echo_socket}", None),
            "tcp+tls": Endpoint(f"127.0.0.1:{echo_port}", ca),
        },
    )
    for endpoint in echo.endpoints.values():
        _wait_until(
            "echo server",
            echo_proc,
            echo_log,
            functools.partial(client.run, _call_job(endpoint, ECHO_METHOD, get_host), 10),
        )

    cells = [(t, c) for t in TRANSPORTS for c in concurrencies]
    total = ns.repeats * len(cells) * len(SERVERS)
    per_run = ns.warmup + ns.duration
    _progress(f"measuring: {total} runs of {per_run:g} s (about {total * per_run:.0f} s)")
    runs: list[Run] = []
    for repeat in range(ns.repeats):
        for i, (transport, concurrency) in enumerate(cells):
            # Alternate which server goes first, so slow drift on the machine hits both alike.
            order = (zsd, echo) if (repeat + i) % 2 == 0 else (echo, zsd)
            for server in order:
                run = _measure(
                    client, server, transport=transport, concurrency=concurrency, repeat=repeat, ns=ns
                )
                runs.append(run)
                _progress(
                    f"[{len(runs)}/{total}] {transport} c={concurrency} {server.name}: {run.rps:.0f} req/s, "
                    f"p50 {run.p50_ms:.3f} ms, p99 {run.p99_ms:.3f} ms"
                    + (f", {run.errors} errors ({run.first_error})" if run.errors else "")
                )
                if run.calls == 0:
                    raise BenchError(f"no call succeeded: {run.first_error}\n{_tail(zsd_log)}")

    summary = _cells(runs)
    meta = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "grpc": _grpc_version(),
        "duration": ns.duration,
        "warmup": ns.warmup,
        "repeats": ns.repeats,
        "request_bytes": len(get_host),
        "response_bytes": len(payload),
    }
    print(
        f"HostService.GetHost(hosts/-) vs a bare grpc.aio server answering the same {len(payload)} bytes\n"
        f"{meta['cpus']} CPUs shared by client, zsd and echo (one server loaded at a time); "
        f"Python {meta['python']}, grpcio {meta['grpc']}; "
        f"median of {ns.repeats} runs x {ns.duration:g} s (after {ns.warmup:g} s warm-up) per row; "
        "zsd/echo = median of the req/s ratios of runs made back to back\n"
    )
    ratios = _ratios(runs)
    print(_table(summary, ratios))
    if ns.json:
        doc = {
            "meta": meta,
            "cells": [asdict(c) for c in summary],
            "ratios": [{"transport": t, "concurrency": c, "ratio": r} for (t, c), r in ratios.items()],
            "runs": [asdict(r) for r in runs],
        }
        text = json.dumps(doc, indent=2)
        if str(ns.json) == "-":
            print(text)
        else:
            ns.json.write_text(text + "\n")
    return 0


def _grpc_version() -> str:
    from importlib.metadata import version

    return version("grpcio")


def main(argv: Sequence[str] | None = None) -> int:
    ns = _parser().parse_args(argv)
    try:
        concurrencies = [int(c) for c in ns.concurrency.split(",") if c.strip()]
    except ValueError:
        _parser().error(f"--concurrency {ns.concurrency!r}: expected numbers such as 1,64")
    if not concurrencies or min(concurrencies) < 1 or ns.duration <= 0 or ns.warmup < 0 or ns.repeats < 1:
        _parser().error("--concurrency must be >= 1, --duration > 0, --warmup >= 0, --repeats >= 1")

    def on_sigterm(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup short
        raise _Stop

    signal.signal(signal.SIGTERM, on_sigterm)
    _sweep_stale_dirs()
    try:
        with contextlib.ExitStack() as stack:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"{TMP_PREFIX}{os.getpid()}-")))
            return _bench(ns, concurrencies, tmp, stack)
    except BenchError as e:
        print(f"api_bench: {e}", file=sys.stderr)
        return 1
    except (_Stop, KeyboardInterrupt):
        print("api_bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

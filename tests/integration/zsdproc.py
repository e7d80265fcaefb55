"""Runs the real ``zsd`` as a subprocess, with a notify socket standing in for systemd."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent


@dataclass
class ZsdProcess:
    root: Path
    proc: subprocess.Popen[str]
    notify: socket.socket
    log_path: Path
    messages: list[str] = field(default_factory=list)

    @property
    def socket_path(self) -> Path:
        return self.root / "run/zsd/zsd.sock"

    @property
    def endpoint(self) -> str:
        return f"unix:{self.socket_path}"

    def drain_notify(self, wait: float = 0.0) -> list[str]:
        """Collects notify datagrams (for up to ``wait`` seconds) and returns all so far."""
        deadline = time.monotonic() + wait
        while True:
            self.notify.settimeout(max(deadline - time.monotonic(), 0.001))
            try:
                self.messages.extend(self.notify.recv(4096).decode().split("\n"))
            except (TimeoutError, BlockingIOError):
                if time.monotonic() >= deadline:
                    return self.messages

    def wait_for(self, line: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while line not in self.drain_notify(0.05):
            if self.proc.poll() is not None:
                raise AssertionError(f"zsd exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no {line!r} from zsd within {timeout} s; got {self.messages}\n{self.log()}"
                )

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.notify.close()
        return self.proc.returncode


def start_zsd(
    root: Path, *args: str, env: dict[str, str] | None = None, watchdog_usec: int = 0
) -> ZsdProcess:
    root.mkdir(parents=True, exist_ok=True)
    notify_path = root / "notify.sock"
    notify_path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify_path))
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("ZSD_", "NOTIFY_", "WATCHDOG_"))}
    full_env["NOTIFY_SOCKET"] = str(notify_path)
    if watchdog_usec:
        full_env["WATCHDOG_USEC"] = str(watchdog_usec)
    full_env.update(env or {})
    log_path = root / "zsd.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [str(BIN / "zsd"), "run", "--root", str(root), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            text=True,
        )
    return ZsdProcess(root=root, proc=proc, notify=sock, log_path=log_path)


def zsctl(endpoint: str, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "zsctl"), "--endpoint", endpoint, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )

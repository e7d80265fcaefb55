"""systemd's notify protocol (READY, STATUS, WATCHDOG, STOPPING) behind a small interface."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import sdnotify


class Notifier(Protocol):
    def notify(self, message: str) -> None: ...


class SystemdNotifier:
    """Sends to $NOTIFY_SOCKET; does nothing when zsd is not run by systemd."""

    def __init__(self) -> None:
        self._impl = sdnotify.SystemdNotifier()

    def notify(self, message: str) -> None:
        self._impl.notify(message)


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC, as sd_watchdog_enabled(3)
    advises), or None when systemd expects none (unset, or meant for another pid)."""
    usec = env.get("WATCHDOG_USEC", "")
    owner = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (owner and owner != str(pid)):
        return None
    return int(usec) / 2 / 1e6

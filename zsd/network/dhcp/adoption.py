"""Whether a dnsmasq found running is the one to keep: a pure decision, so every case
is tested without processes.

A running dnsmasq is adopted (zsd restarted, dnsmasq kept serving) only when it is
provably ours and current: its executable is dnsmasq, it runs in the scope's
namespace, and its command line names the config file of the desired content (configs
are named by digest). The pidfile says which process to look at first; when it is
missing or stale, a process in the namespace that passes the same test is adopted.

Everything else in the namespace is stopped (the namespace is zsd's own, so nothing
else belongs there), including a dnsmasq with an older config. A process outside the
namespace is never touched, even when the pidfile names it: that pid was reused;
unless it is a dnsmasq running this scope's own config file (a path in zsd's state
directory no one else uses): that one was stranded in a namespace zsd can no longer
enter (its name went stale), and serves nothing; it is stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from zsd.network.dhcp.drivers import ProcessInfo

DNSMASQ = "dnsmasq"


@dataclass(frozen=True, kw_only=True)
class Adoption:
    keep: ProcessInfo | None
    """The dnsmasq to adopt; None: start one (after stopping ``stop``)."""
    stop: tuple[ProcessInfo, ...]
    reason: str
    """For the log."""


def is_current(process: ProcessInfo, args: Sequence[str]) -> bool:
    """The scope's dnsmasq, started with the desired config."""
    return process.in_netns and _runs(process, args)


def _runs(process: ProcessInfo, args: Sequence[str]) -> bool:
    name = process.name.removesuffix(" (deleted)")  # the package was upgraded under it
    return name == DNSMASQ and process.argv[1:] == tuple(args)


def decide(
    *,
    args: Sequence[str],
    from_pidfile: ProcessInfo | None,
    in_netns: Sequence[ProcessInfo],
    remembered: ProcessInfo | None = None,
    may_keep: bool = True,
) -> Adoption:
    """``args``: the desired dnsmasq's arguments; ``from_pidfile``: the live process the
    pidfile names, if any; ``in_netns``: every live process in the scope's namespace;
    ``remembered``: a dnsmasq this manager started or adopted (stopped too if it is not
    kept, wherever it runs: its identity is known); ``may_keep`` False: nothing running
    is kept (its interface was made again)."""
    keep: ProcessInfo | None = None
    if not may_keep:
        reason = "the namespace's interface was made again"
    elif from_pidfile is not None and is_current(from_pidfile, args):
        keep, reason = from_pidfile, "the pidfile's dnsmasq runs the desired config"
    else:
        keep = next((p for p in sorted(in_netns, key=lambda p: p.pid) if is_current(p, args)), None)
        if keep is not None:
            reason = "a dnsmasq in the namespace runs the desired config (the pidfile did not say so)"
        elif any(p.name == DNSMASQ for p in in_netns):
            reason = "the dnsmasq in the namespace runs another config"
        elif from_pidfile is not None and not from_pidfile.in_netns:
            reason = f"the pidfile names pid {from_pidfile.pid}, which is not in the namespace"
        else:
            reason = "no dnsmasq runs"
    candidates = {p.pid: p for p in in_netns}
    stranded = from_pidfile is not None and not from_pidfile.in_netns and _runs(from_pidfile, args)
    if stranded and from_pidfile is not None:
        candidates.setdefault(from_pidfile.pid, from_pidfile)
    if remembered is not None:
        candidates.setdefault(remembered.pid, remembered)
    stop = tuple(p for pid, p in sorted(candidates.items()) if keep is None or pid != keep.pid)
    return Adoption(keep=keep, stop=stop, reason=reason)

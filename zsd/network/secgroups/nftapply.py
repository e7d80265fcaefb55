"""Applying compiled rulesets with libnftables, reading hit counters back.

Every change is one nftables transaction: the kernel applies all of it or none of
it, so a failed apply leaves the previous ruleset enforcing. The applier keeps
what it applied last; the next apply is a diff against it (a one-rule change costs
a few commands whatever the size of the ruleset) and falls back to a full reload
of zsd's tables when a diff cannot express the change, when the diff fails (the
tables were changed behind zsd's back) and on the first apply after a start (a
restarted zsd cannot know what is loaded). A full reload carries the named
counters' values over.

These calls block (netlink); the daemon runs them through ``trio.to_thread``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from zsd.errors import FailedPrecondition, Internal, Unsupported, ZsdError
from zsd.network.secgroups.compiler import TABLE
from zsd.network.secgroups.hostmodel import CompiledRuleset, HitCount
from zsd.network.secgroups.nftobjects import Command, CounterKey, diff_transaction, full_transaction

_T = TypeVar("_T")


class NftRunner(Protocol):
    """What zsd needs of ``nftables.Nftables`` (python3-nftables)."""

    def json_cmd(self, json_root: Mapping[str, Any]) -> tuple[int, Any, str]: ...


def in_netns(name: str, fn: Callable[[], _T]) -> _T:
    """``fn()`` run by a short-lived thread that entered network namespace ``name``
    (``ip netns`` naming). Netlink sockets stay bound to the namespace they were made
    in, so an ``Nftables()`` made this way acts there whoever uses it later."""
    from pyroute2 import netns  # type: ignore[import-untyped]

    box: dict[str, Any] = {}

    def run() -> None:
        try:
            netns.setns(name)
            box["result"] = fn()
        except BaseException as e:
            box["error"] = e

    thread = threading.Thread(target=run, name=f"netns-{name}")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    result: _T = box["result"]
    return result


def libnftables(netns: str | None = None) -> NftRunner:
    """A libnftables context in this process's namespace or in ``netns``."""
    import nftables

    def make() -> NftRunner:
        nft = nftables.Nftables()
        nft.set_json_output(True)
        nft.set_handle_output(False)
        runner: NftRunner = nft
        return runner

    return make() if netns is None else in_netns(netns, make)


def enable_bridge_netfilter(procfs: Path) -> None:
    """Makes bridged IPv4/IPv6 traffic traverse the inet hooks (br_netfilter) in the
    caller's network namespace; without it the inet chains never see VM traffic."""
    base = procfs / "sys/net/bridge"
    if not base.is_dir():
        raise Unsupported(
            "the kernel has no br_netfilter (no /proc/sys/net/bridge): security groups cannot be stateful",
            reason="BR_NETFILTER_MISSING",
        )
    for name in ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables"):
        (base / name).write_text("1\n")


@dataclass(frozen=True, kw_only=True)
class ApplyResult:
    mode: Literal["full", "diff", "unchanged"]
    commands: int


class RulesetApplier:
    """Applies compiled rulesets to one host's kernel (one network namespace)."""

    def __init__(self, nft: NftRunner) -> None:
        self._nft = nft
        self._applied: CompiledRuleset | None = None

    @property
    def applied(self) -> CompiledRuleset | None:
        """What the kernel enforces, as far as this applier knows."""
        return self._applied

    def apply(self, compiled: CompiledRuleset) -> ApplyResult:
        """Enforces ``compiled`` atomically, or raises (the previous ruleset stays)."""
        if self._applied is not None:
            commands = diff_transaction(self._applied.ruleset, compiled.ruleset)
            if commands == []:
                self._applied = compiled
                return ApplyResult(mode="unchanged", commands=0)
            if commands is not None:
                try:
                    self._run(commands)
                except ZsdError:
                    pass  # somebody changed the tables: reload them whole below
                else:
                    self._applied = compiled
                    return ApplyResult(mode="diff", commands=len(commands))
        return self.apply_full(compiled)

    def apply_full(self, compiled: CompiledRuleset) -> ApplyResult:
        """Deletes and recreates zsd's tables in one transaction; counters keep their values."""
        commands = full_transaction(compiled.ruleset, self._counter_values())
        self._run(commands)
        self._applied = compiled
        return ApplyResult(mode="full", commands=len(commands))

    def remove(self) -> None:
        """Deletes zsd's tables (nothing filtered any more)."""
        commands: list[Command] = []
        for family in ("bridge", "inet"):
            table = {"family": family, "name": TABLE}
            commands += [{"add": {"table": table}}, {"delete": {"table": table}}]
        self._run(commands)
        self._applied = None

    def hits(self) -> tuple[HitCount, ...]:
        """Every named counter of the applied ruleset with what it counts: each rule
        of each group in use (by group and current priority), each group's built-in
        rule and each NIC's default, per direction."""
        if self._applied is None:
            return ()
        values = self._counter_values()
        out = []
        for name, ref in self._applied.counters.items():
            packets, nbytes = values.get(("inet", TABLE, name), (0, 0))
            out.append(HitCount(ref=ref, packets=packets, bytes=nbytes))
        return tuple(out)

    def _counter_values(self) -> dict[CounterKey, tuple[int, int]]:
        rc, output, _error = self._nft.json_cmd(
            {"nftables": [{"list": {"counters": {"family": "inet", "table": TABLE}}}]}
        )
        if rc != 0:
            return {}  # no table yet
        values: dict[CounterKey, tuple[int, int]] = {}
        for item in output.get("nftables", ()) if isinstance(output, dict) else ():
            c = item.get("counter")
            if c is not None:
                values[(c["family"], c["table"], c["name"])] = (int(c["packets"]), int(c["bytes"]))
        return values

    def _run(self, commands: list[Command]) -> None:
        rc, _output, error = self._nft.json_cmd({"nftables": commands})
        if rc != 0:
            raise translate_nft_error(error)


def translate_nft_error(text: str) -> ZsdError:
    """nft's error output as a zsd error; the first lines go into the message."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    first = next((line for line in lines if line.startswith("Error")), lines[0] if lines else "no message")
    metadata = {"nft_error": text.strip()[:2000]}
    if "Operation not permitted" in text:
        return FailedPrecondition(
            f"nftables refused zsd (no CAP_NET_ADMIN here?): {first}",
            reason="NFT_NOT_PERMITTED",
            metadata=metadata,
        )
    if "Operation not supported" in text or "not supported" in first:
        return Unsupported(
            f"the kernel lacks an nftables feature zsd needs: {first}",
            reason="NFT_UNSUPPORTED",
            metadata=metadata,
        )
    return Internal(
        f"nftables refused the ruleset: {first}", reason="NFT_TRANSACTION_FAILED", metadata=metadata
    )

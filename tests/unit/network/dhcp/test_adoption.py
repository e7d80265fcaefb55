"""Which running dnsmasq a manager keeps, and what it stops."""

from __future__ import annotations

from pathlib import Path

from zsd.network.dhcp.adoption import decide, is_current
from zsd.network.dhcp.drivers import ProcessInfo, expected_args

ARGS = expected_args(Path("/run/zsd-dhcp/lab+web/dnsmasq-aaaa.conf"))
OLD_ARGS = expected_args(Path("/run/zsd-dhcp/lab+web/dnsmasq-bbbb.conf"))


def proc(
    pid: int, *, name: str = "dnsmasq", args: tuple[str, ...] = ARGS, in_netns: bool = True
) -> ProcessInfo:
    return ProcessInfo(pid=pid, started_at=float(pid), name=name, argv=(name, *args), in_netns=in_netns)


def test_the_pidfiles_current_dnsmasq_is_kept() -> None:
    current = proc(10)
    decision = decide(args=ARGS, from_pidfile=current, in_netns=[current])
    assert decision.keep == current and decision.stop == ()


def test_an_upgraded_binary_still_counts() -> None:
    assert is_current(proc(10, name="dnsmasq (deleted)"), ARGS)


def test_another_config_is_replaced() -> None:
    old = proc(10, args=OLD_ARGS)
    decision = decide(args=ARGS, from_pidfile=old, in_netns=[old])
    assert decision.keep is None and decision.stop == (old,)
    assert "another config" in decision.reason


def test_a_reused_pid_outside_the_namespace_is_never_touched() -> None:
    stranger = proc(10, name="bash", args=(), in_netns=False)
    decision = decide(args=ARGS, from_pidfile=stranger, in_netns=[])
    assert decision.keep is None and decision.stop == ()
    assert "not in the namespace" in decision.reason


def test_a_dnsmasq_stranded_outside_the_namespace_is_stopped_not_adopted() -> None:
    # The scope's own config file, in a namespace zsd cannot enter any more (its name
    # went stale): it serves nothing, and a new one is started.
    stranded = proc(10, in_netns=False)
    decision = decide(args=ARGS, from_pidfile=stranded, in_netns=[])
    assert decision.keep is None and decision.stop == (stranded,)
    # An older config's dnsmasq outside the namespace: the pid may have been reused.
    other = proc(11, args=OLD_ARGS, in_netns=False)
    assert decide(args=ARGS, from_pidfile=other, in_netns=[]).stop == ()


def test_without_pidfile_the_namespace_is_searched() -> None:
    current, helper = proc(12), proc(11, name="sleep", args=("100",))
    decision = decide(args=ARGS, from_pidfile=None, in_netns=[helper, current])
    assert decision.keep == current and decision.stop == (helper,)
    assert "pidfile did not say so" in decision.reason


def test_two_current_dnsmasqs_keep_one() -> None:
    a, b = proc(20), proc(21)
    decision = decide(args=ARGS, from_pidfile=b, in_netns=[a, b])
    assert decision.keep == b and decision.stop == (a,)


def test_nothing_running() -> None:
    decision = decide(args=ARGS, from_pidfile=None, in_netns=[])
    assert decision == decision.__class__(keep=None, stop=(), reason="no dnsmasq runs")


def test_a_remembered_process_is_stopped_wherever_it_runs() -> None:
    lost = proc(30, args=OLD_ARGS, in_netns=False)
    decision = decide(args=ARGS, from_pidfile=None, in_netns=[], remembered=lost)
    assert decision.keep is None and decision.stop == (lost,)


def test_may_keep_false_replaces_even_a_current_one() -> None:
    current = proc(10)
    decision = decide(args=ARGS, from_pidfile=current, in_netns=[current], remembered=current, may_keep=False)
    assert decision.keep is None and decision.stop == (current,)
    assert "made again" in decision.reason

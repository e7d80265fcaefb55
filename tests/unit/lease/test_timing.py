"""timing(): sanlock's formulas, checked against the table in sanlock's src/timeouts.h."""

from __future__ import annotations

from pathlib import Path

import pytest

from zsd.cluster.lease import LeaseConfig, timing
from zsd.cluster.lease.authority import renewal_status
from zsd.errors import InvalidArgument


@pytest.mark.parametrize(
    "row",
    [
        # The "fast", "norm" and "slow" columns of sanlock's table (watchdog 60 s):
        # io, renewal, fail, warn, host dead, delta_acquire_free_max, paxos_acquire_held_max
        (5, 10, 40, 30, 100, 25, 135),
        (10, 20, 80, 60, 140, 50, 210),
        (20, 40, 160, 120, 220, 100, 360),
    ],
)
def test_matches_sanlocks_table(row: tuple[int, int, int, int, int, int, int]) -> None:
    io, renewal, fail, warn, dead, join_max, takeover_max = row
    t = timing(io)
    assert (t.renewal_interval, t.renewal_fail, t.renewal_warn, t.host_dead) == (renewal, fail, warn, dead)
    assert (t.join_min, t.join_max, t.takeover_max) == (2 * io, join_max, takeover_max)


def test_watchdog_fire_timeout_moves_host_dead_only() -> None:
    t = timing(5, watchdog_fire_timeout=30)
    assert (t.renewal_fail, t.host_dead) == (40, 70)  # sanlock's 5 s / 30 s example


def test_small_io_timeouts_keep_stale_threshold_above_normal_lag() -> None:
    # A client sees renewals one renewal late, plus whole-second rounding.
    assert timing(1).stale_after == 8
    assert timing(2).stale_after == 12
    assert timing(10).stale_after == 60


def test_rejects_nonsense() -> None:
    with pytest.raises(InvalidArgument):
        timing(0)
    with pytest.raises(InvalidArgument):
        timing(1, watchdog_fire_timeout=0)


def test_renewal_status_deadline_and_health() -> None:
    t = timing(10)
    ok = renewal_status(t, now=1000.0, last_renewal=990.0)
    assert ok.healthy and ok.reason == ""
    assert ok.valid_until == 990.0 + 140 - t.safety_margin
    assert 1.0 < t.safety_margin < 1.1
    stale = renewal_status(t, now=990.0 + 61, last_renewal=990.0)
    assert (stale.healthy, stale.reason, stale.valid_until) == (False, "RENEWAL_STALE", ok.valid_until)
    failed = renewal_status(t, now=1000.0, last_renewal=990.0, failure="LEASE_DAEMON_UNAVAILABLE")
    assert (failed.healthy, failed.reason, failed.valid_until) == (
        False,
        "LEASE_DAEMON_UNAVAILABLE",
        ok.valid_until,
    )
    unknown = renewal_status(t, now=1000.0, last_renewal=None)
    assert (unknown.healthy, unknown.valid_until, unknown.reason) == (False, 1000.0, "NO_RENEWAL_SEEN")


def test_lease_config_validates_and_lays_out_files() -> None:
    cfg = LeaseConfig(shared_dir=Path("/shared"), io_timeout=2)
    assert (cfg.ids_path, cfg.leader_path) == (Path("/shared/leases/ids"), Path("/shared/leases/leader"))
    assert cfg.timing == timing(2)
    for bad in (
        {"lockspace": ""},
        {"lockspace": "x" * 49},
        {"max_hosts": 0},
        {"max_hosts": 2001},
        {"io_timeout": 0},
    ):
        with pytest.raises(InvalidArgument):
            LeaseConfig(shared_dir=Path("/shared"), **bad)

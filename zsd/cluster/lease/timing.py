"""sanlock's timing bounds for one io timeout, as numbers the rest of zsd can reason with.

The formulas are sanlock's own (verified in sanlock 3.8.5, the release Debian 12
ships: ``src/timeouts.c`` ``calc_*_seconds`` and the derivation comment in
``src/timeouts.h``; host states in ``src/lockspace.c`` ``get_host_flag``; the
takeover wait in ``src/paxos_lease.c`` ``paxos_lease_acquire``):

- a host renews its delta lease every ``id_renewal_seconds = 2 * io_timeout``;
- ``id_renewal_fail_seconds = 8 * io_timeout`` after its last successful renewal
  sanlock enters recovery: it kills the local processes holding leases in that
  lockspace (SIGTERM, or the killpath program; SIGKILL after kill_grace_seconds);
  other hosts report it FAIL from then on;
- ``host_dead_seconds = 8 * io_timeout + watchdog_fire_timeout``: only after another
  host has watched the delta lease stay unchanged this long does it report the host
  DEAD and take over its paxos leases (the watchdog is assumed to have reset it).

In 3.8.5 ``watchdog_fire_timeout`` is the compile-time constant 60; it became a
``sanlock.conf`` setting only after that release (upstream commit 748e832). All hosts
must use the same value, so it is a parameter here rather than a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

from zsd.errors import InvalidArgument

SANLOCK_WATCHDOG_FIRE_TIMEOUT = 60


@dataclass(frozen=True, kw_only=True)
class LeaseTiming:
    """All in seconds. Measured failover times are judged against these."""

    io_timeout: float
    watchdog_fire_timeout: float
    renewal_interval: float
    """id_renewal_seconds: the pause between two renewals of a host's delta lease."""
    renewal_warn: float
    """id_renewal_warn_seconds: sanlock logs a warning this long after the last renewal."""
    renewal_fail: float
    """id_renewal_fail_seconds: recovery starts (lease holders are killed); peers say FAIL."""
    host_dead: float
    """host_dead_seconds: peers say DEAD and may take the host's leases."""
    join_min: float
    """delta_acquire_free_min: the shortest add_lockspace of a free host id."""
    join_max: float
    """delta_acquire_free_max: the longest add_lockspace of a free host id (every io slow)."""
    takeover_max: float
    """paxos_acquire_held_max: the longest acquire of a lease whose owner died."""
    stale_after: float
    """zsd's own threshold: our renewal is called unhealthy when the newest renewal we
    can observe is older than this (see :func:`timing`)."""
    safety_margin: float
    """Subtracted from the takeover moment to get ``valid_until`` (see :func:`timing`)."""


def timing(io_timeout: float, *, watchdog_fire_timeout: float = SANLOCK_WATCHDOG_FIRE_TIMEOUT) -> LeaseTiming:
    """sanlock's bounds for a lockspace with this io timeout."""
    if io_timeout <= 0:
        raise InvalidArgument("io timeout must be positive", reason="INVALID_IO_TIMEOUT", field="io_timeout")
    if watchdog_fire_timeout <= 0:
        raise InvalidArgument(
            "watchdog fire timeout must be positive",
            reason="INVALID_WATCHDOG_FIRE_TIMEOUT",
            field="watchdog_fire_timeout",
        )
    renewal_interval = 2 * io_timeout
    renewal_fail = 8 * io_timeout
    host_dead = renewal_fail + watchdog_fire_timeout
    # The newest renewal a client can see (get_hosts) is the one read back at the
    # start of the following renewal, so in normal operation it is up to two renewal
    # intervals old, plus about 1.5 s per interval of sanlock's whole-second sleeps and
    # timestamps, plus our poll. sanlock's warning threshold (6 * io) covers that from
    # io_timeout 4 s up; below, the floor keeps small test io timeouts free of false alarms.
    stale_after = max(6 * io_timeout, 4 * io_timeout + 4)
    # Monotonic clocks of two hosts may run apart by up to 500 ppm (NTP's maximum
    # slew), and the stopping leader needs a moment; one second covers both for any
    # host_dead sanlock allows.
    safety_margin = 1.0 + host_dead * 0.0005
    return LeaseTiming(
        io_timeout=io_timeout,
        watchdog_fire_timeout=watchdog_fire_timeout,
        renewal_interval=renewal_interval,
        renewal_warn=6 * io_timeout,
        renewal_fail=renewal_fail,
        host_dead=host_dead,
        join_min=2 * io_timeout,
        join_max=5 * io_timeout,
        takeover_max=host_dead + 7 * io_timeout,
        stale_after=stale_after,
        safety_margin=safety_margin,
    )

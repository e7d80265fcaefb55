"""The cluster's authority: sanlock leases on shared storage.

A host is in the cluster while its lease daemon renews its host-id (delta) lease
in the cluster's lockspace; the leader is whoever holds the ``leader`` (paxos)
lease, and the lease version at acquisition is the epoch stamped on every write.
Nothing sanlock-specific crosses this package's boundary: errors are
:mod:`zsd.errors` categories, values are the types in :mod:`.authority`.

Layout (one job per module):

- ``timing``            sanlock's timing bounds for an io timeout (LeaseTiming, timing())
- ``authority``         the Authority protocol and its value types (LeaseConfig, HostState,
                        LeaderRecord, Renewal) and the valid_until rule
- ``sanlock_authority`` SanlockAuthority: the Authority on a real sanlock daemon
- ``_sanlockapi``       the only importer of ``sanlock``: typed calls, SanlockError
- ``_translate``        SanlockError -> zsd.errors
- ``monitor``           RenewalMonitor: polls renewal health for the leader
- ``fake``              FakeLeaseStorage / FakeAuthority: stateful fake for unit tests
- ``daemon``            SanlockDaemon: a private sanlock daemon for tests and the dev
                        cluster (real hosts run sanlock.service)
"""

from zsd.cluster.lease._sanlockapi import LibSanlock, SanlockApi
from zsd.cluster.lease.authority import (
    Authority,
    HostState,
    HostStatus,
    LeaderRecord,
    LeaseConfig,
    Renewal,
)
from zsd.cluster.lease.monitor import RenewalMonitor
from zsd.cluster.lease.sanlock_authority import SanlockAuthority
from zsd.cluster.lease.timing import LeaseTiming, timing

__all__ = [
    "Authority",
    "HostState",
    "HostStatus",
    "LeaderRecord",
    "LeaseConfig",
    "LeaseTiming",
    "LibSanlock",
    "Renewal",
    "RenewalMonitor",
    "SanlockApi",
    "SanlockAuthority",
    "timing",
]

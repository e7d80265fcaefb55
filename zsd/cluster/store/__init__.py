"""The cluster's desired state: cluster.db on shared storage, and each host's copy.

Only the leader opens cluster.db (:class:`ClusterDb`, stamped with its lease epoch);
every committed transaction gets the next revision. Followers never open the file:
they apply the leader's change feed to a :class:`StateCache`. Nothing here does
networking; the leader serves the feed through :class:`StoreService`.

Layout (one job per module):

- ``model``    value types: Record, Change, ChangeSet, Snapshot, the mutations
               (Create, Update, Put, Delete), CommitResult, EpochRecord
- ``errors``   Fenced, ResyncRequired and its Compacted / RevisionGap cases
- ``schema``   the tables, the schema version and migrations
- ``db``       ClusterDb: epoch fencing, revisions, request ids, etags, change log
- ``_apply``   one commit's mutations as rows and changes
- ``_sqlite``  connection settings (and why), transactions, sqlite3 errors -> zsd.errors
- ``verify``   consistency checks of a file's history (fault tests, operators)
- ``cache``    StateCache: a host's in-memory copy, fed in revision order
- ``service``  StoreService: ClusterDb for trio, and the live watch feed
"""

from zsd.cluster.store.cache import StateCache
from zsd.cluster.store.db import ClusterDb, Guard, StoreOptions
from zsd.cluster.store.errors import Compacted, Fenced, ResyncRequired, RevisionGap
from zsd.cluster.store.model import (
    Change,
    ChangeSet,
    CommitResult,
    Create,
    Delete,
    EpochRecord,
    Mutation,
    Op,
    Put,
    Record,
    ResponseBuilder,
    Snapshot,
    Update,
)
from zsd.cluster.store.service import StoreService
from zsd.cluster.store.verify import verify

__all__ = [
    "Change",
    "ChangeSet",
    "ClusterDb",
    "CommitResult",
    "Compacted",
    "Create",
    "Delete",
    "EpochRecord",
    "Fenced",
    "Guard",
    "Mutation",
    "Op",
    "Put",
    "Record",
    "ResponseBuilder",
    "ResyncRequired",
    "RevisionGap",
    "Snapshot",
    "StateCache",
    "StoreOptions",
    "StoreService",
    "Update",
    "verify",
]

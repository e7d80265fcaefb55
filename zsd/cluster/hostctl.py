"""Leader-side changes to host entries: labels, removal, and hosts' self-reports.

Each function commits through the leader's StoreService with the caller's
request_id, so a retry (also through another host, also after a leader change)
applies once and returns the first result. Label updates are read-modify-write
under the caller's lock (one per leader), so concurrent writers of different keys
queue instead of failing each other; a race that slips past it (another path
writing the entry) is retried, since writers of different keys do not conflict
in meaning. With a client etag nothing is retried: the etag is the client's lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import trio

from zsd.cluster.records import KIND_HOST, KIND_HOST_ID, KIND_HOST_STATUS, HostEntry
from zsd.cluster.store import Delete, Put, Record, StoreService, Update
from zsd.errors import Conflict, FailedPrecondition, InvalidArgument, NotFound

KIND_VM = "vm"
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_.-]{0,63}$")
_MAX_LABELS = 256
_RACE_RETRIES = 8


@dataclass(frozen=True, kw_only=True)
class Committed:
    revision: int
    replayed: bool


def fingerprint(*parts: object) -> bytes:
    """What makes two requests with one request_id the same request."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).digest()


def validate_labels(labels: Mapping[str, str], *, field: str = "host.labels") -> None:
    if len(labels) > _MAX_LABELS:
        raise InvalidArgument(f"at most {_MAX_LABELS} labels are allowed, got {len(labels)}", field=field)
    for key, value in labels.items():
        if not _LABEL_KEY.match(key):
            raise InvalidArgument(
                f"label key {key!r} is not allowed: 1-63 of a-z 0-9 _ . - starting with a letter",
                field=f"{field}.{key}",
            )
        if not _LABEL_VALUE.match(value):
            raise InvalidArgument(
                f"label value {value!r} is not allowed: up to 63 of a-z 0-9 _ . -", field=f"{field}.{key}"
            )


def apply_label_mask(
    current: Mapping[str, str], given: Mapping[str, str], paths: Sequence[str]
) -> dict[str, str]:
    """The labels after an update: "labels" replaces all of them; "labels.{key}" sets
    that key to ``given[key]``, or removes it when ``given`` has no such key."""
    if not paths:
        raise InvalidArgument(
            'update_mask is required: "labels" or "labels.{key}" paths', field="update_mask"
        )
    result = dict(current)
    for path in paths:
        if path == "labels":
            result = dict(given)
        elif path.startswith("labels.") and len(path) > len("labels."):
            key = path[len("labels.") :]
            if key in given:
                result[key] = given[key]
            else:
                result.pop(key, None)
        else:
            raise InvalidArgument(
                f'update_mask path {path!r} is not updatable: only "labels" and "labels.{{key}}"',
                field="update_mask",
            )
    return result


async def update_labels(
    store: StoreService,
    *,
    host: str,
    labels: Mapping[str, str],
    paths: Sequence[str],
    etag: int | None,
    request_id: str | None,
    lock: trio.Lock | None = None,
) -> Committed:
    validate_labels(labels)
    apply_label_mask({}, labels, paths)  # mask errors before touching the store
    fp = fingerprint("UpdateHost", host, dict(labels), list(paths), etag)
    async with lock if lock is not None else contextlib.nullcontext():
        return await _update_labels(
            store, host=host, labels=labels, paths=paths, etag=etag, request_id=request_id, fp=fp
        )


async def _update_labels(
    store: StoreService,
    *,
    host: str,
    labels: Mapping[str, str],
    paths: Sequence[str],
    etag: int | None,
    request_id: str | None,
    fp: bytes,
) -> Committed:
    if request_id:
        replay = await store.replay(request_id, fingerprint=fp)
        if replay is not None:
            return Committed(revision=replay.revision, replayed=True)
    for _ in range(_RACE_RETRIES):
        record = await _host_record(store, host, field="host.name")
        entry = HostEntry.decode(record.data)
        new_labels = apply_label_mask(entry.label_dict(), labels, paths)
        validate_labels(new_labels)
        updated = replace(entry, labels=tuple(sorted(new_labels.items())))
        try:
            result = await store.commit(
                [
                    Update(
                        kind=KIND_HOST,
                        name=host,
                        data=updated.encode(),
                        expected_revision=etag or record.revision,
                    )
                ],
                request_id=request_id,
                fingerprint=fp,
            )
        except Conflict as e:
            if e.reason == "ETAG_MISMATCH" and etag is None:
                continue  # a concurrent writer got there first: read again, apply again
            raise
        return Committed(revision=result.revision, replayed=result.replayed)
    raise Conflict(
        f"hosts/{host} kept changing under this update; retry", reason="CONTENDED", field="host.name"
    )


async def check_removal(store: StoreService, *, host: str, force: bool) -> HostEntry:
    """Why ``host`` cannot be removed now, if it cannot: not a member, the last one,
    or VMs still placed on it (unless ``force``). Checked when the removal is asked
    for and again when it takes effect."""
    record = await _host_record(store, host, field="name")
    if len(await store.list(KIND_HOST)) == 1:
        raise FailedPrecondition(
            f"hosts/{host} is the cluster's last member; a cluster cannot remove its last host",
            reason="LAST_MEMBER",
            field="name",
        )
    if not force:
        running = [r.name for r in await store.list(KIND_VM) if _vm_host(r) == host]
        if running:
            raise FailedPrecondition(
                f"hosts/{host} still runs {len(running)} VM(s) ({', '.join(running[:5])}); migrate them "
                "away first, or remove with force (they are then left to HA)",
                reason="HOST_NOT_EMPTY",
                field="force",
            )
    return HostEntry.decode(record.data)


async def removal(store: StoreService, *, host: str, force: bool) -> list[Delete]:
    """The mutations that remove ``host``: its entry, its host id and its status,
    in one revision (after the checks of :func:`check_removal`)."""
    entry = await check_removal(store, host=host, force=force)
    record = await _host_record(store, host, field="name")
    mutations = [Delete(kind=KIND_HOST, name=host, expected_revision=record.revision)]
    if await store.get(KIND_HOST_ID, str(entry.host_id)) is not None:
        mutations.append(Delete(kind=KIND_HOST_ID, name=str(entry.host_id)))
    if await store.get(KIND_HOST_STATUS, host) is not None:
        mutations.append(Delete(kind=KIND_HOST_STATUS, name=host))
    return mutations


async def report_status(store: StoreService, *, host: str, status: bytes) -> Committed:
    """Stores a host's report of itself; only members report."""
    await _host_record(store, host, field="host.name")
    current = await store.get(KIND_HOST_STATUS, host)
    if current is not None and current.data == status:
        return Committed(revision=store.revision, replayed=True)  # unchanged: no new revision
    result = await store.commit([Put(kind=KIND_HOST_STATUS, name=host, data=status)])
    return Committed(revision=result.revision, replayed=False)


async def _host_record(store: StoreService, host: str, *, field: str) -> Record:
    record = await store.get(KIND_HOST, host)
    if record is None:
        raise NotFound(f"hosts/{host} is not a member of this cluster", field=field)
    return record


def _vm_host(record: Record) -> str:
    try:
        return str(json.loads(record.data).get("host", ""))
    except (ValueError, AttributeError):
        return ""

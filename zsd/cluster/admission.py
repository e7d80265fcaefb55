"""Admitting a host into the cluster (the leader's side of ``zsd cluster join``).

A join is allowed by a join token whose secret hash is in the cluster state. The
host gets a stable sanlock host id and a host certificate for the key it sent
(a CSR: its private key never leaves it).

Host ids are handed out exactly once:

- each allocated id is a ``host_id`` record named by the id, created in the same
  commit as the host entry, so the store's unique names keep two concurrent joins
  from both getting it (the loser tries the next free id);
- the commit carries a request_id made of the host name, its identity and its
  CSR, so a retried call (the response was lost, or the call went through another
  host) replays the first result;
- a host that joins again with the identity it joined with (it lost its
  membership file) gets its old id back; another machine asking for a taken
  name is refused.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
from dataclasses import dataclass, replace

from zsd.cluster import pki
from zsd.cluster.records import KIND_HOST, KIND_HOST_ID, KIND_JOIN_TOKEN, MAX_HOST_ID, HostEntry, free_host_id
from zsd.cluster.store import Create, StoreService, Update
from zsd.config import HOST_NAME_RE
from zsd.errors import AlreadyExists, Conflict, InvalidArgument, ResourceExhausted

log = logging.getLogger(__name__)

_ID_ATTEMPTS = 32
"""Ids tried per join when concurrent joins keep taking the one chosen."""


@dataclass(frozen=True, kw_only=True)
class JoinApplication:
    """What a joining host sends (PeerService.Join)."""

    token: str
    host_name: str
    address: str
    csr_pem: bytes
    host_uid: str


@dataclass(frozen=True, kw_only=True)
class Admission:
    host_id: int
    cert_pem: bytes
    ca_pem: bytes
    cluster_uid: str
    revision: int
    """The revision that holds the host's entry (wait for it before reading it elsewhere)."""
    rejoined: bool
    """The host was a member already (same name and identity) and kept its id."""


def claim(entry: HostEntry) -> list[Create]:
    """The mutations that make ``entry`` a member: its entry and its host id record,
    both unique by name. (Also used by ``zsd cluster init`` for the founder.)"""
    return [
        Create(kind=KIND_HOST, name=entry.name, data=entry.encode()),
        Create(kind=KIND_HOST_ID, name=str(entry.host_id), data=json.dumps({"host": entry.name}).encode()),
    ]


def validate(request: JoinApplication) -> pki.JoinToken:
    """Checks what needs no cluster state; returns the parsed token."""
    token = pki.parse_join_token(request.token)
    if not HOST_NAME_RE.match(request.host_name):
        raise InvalidArgument(
            f"{request.host_name!r} is not a host name; use an RFC 1123 label "
            "(a-z, 0-9, '-', 1-63 chars, starting with a letter)",
            field="host_name",
        )
    try:
        ipaddress.ip_address(request.address)
    except ValueError:
        raise InvalidArgument(
            f"{request.address!r} is not an IP address; set host.address to the IPv4 or IPv6 "
            "address other hosts reach this one at",
            field="address",
        ) from None
    if not request.host_uid:
        raise InvalidArgument("the joining host's identity (its zsd host uid) is empty", field="host_uid")
    pki.check_csr(request.csr_pem)
    return token


async def admit(
    store: StoreService, *, ca: pki.KeyPair, cluster_uid: str, request: JoinApplication, now: float
) -> Admission:
    """Admits the host or says precisely why not (InvalidArgument for a bad request or
    token, AlreadyExists for a name or identity held by another member,
    ResourceExhausted when every sanlock host id is taken)."""
    token = validate(request)
    tokens = await store.list(KIND_JOIN_TOKEN)
    pki.check_join_token(
        token, cluster_uid=cluster_uid, ca_cert_pem=ca.cert_pem, secret_hashes=[r.name for r in tokens]
    )
    host_id, revision, rejoined = await _place(store, request, now)
    cert_pem = pki.sign_host_csr(
        ca, request.csr_pem, host_name=request.host_name, host_id=host_id, addresses=[request.address]
    )
    log.info(
        "%s %s (%s) as host %d",
        "re-admitted" if rejoined else "admitted",
        request.host_name,
        request.address,
        host_id,
    )
    return Admission(
        host_id=host_id,
        cert_pem=cert_pem,
        ca_pem=ca.cert_pem,
        cluster_uid=cluster_uid,
        revision=revision,
        rejoined=rejoined,
    )


async def _place(store: StoreService, request: JoinApplication, now: float) -> tuple[int, int, bool]:
    """(host id, revision, rejoined): the host's existing entry, or a new one."""
    digest = hashlib.sha256(request.csr_pem).hexdigest()
    # The CSR is in the id: retries of one join send the same CSR, while a later
    # join (a new key) must not replay an earlier one whose host was removed since.
    request_id = (
        "join-"
        + hashlib.sha256(json.dumps([request.host_name, request.host_uid, digest]).encode()).hexdigest()[:40]
    )
    fingerprint = hashlib.sha256(
        json.dumps([request.host_name, request.host_uid, request.address, digest]).encode()
    ).digest()
    entries = [HostEntry.decode(r.data) for r in await store.list(KIND_HOST)]
    existing = await _existing(store, request, entries)
    if existing is not None:
        return existing
    taken = {e.host_id for e in entries} | {
        int(r.name) for r in await store.list(KIND_HOST_ID) if r.name.isdigit()
    }
    for _ in range(_ID_ATTEMPTS):
        host_id = free_host_id(taken)
        if host_id is None:
            raise ResourceExhausted(
                f"all {MAX_HOST_ID} sanlock host ids of this cluster are in use; remove hosts that "
                "left for good (zsctl host delete) to free theirs",
                reason="NO_FREE_HOST_ID",
            )
        entry = HostEntry(
            name=request.host_name,
            host_id=host_id,
            uid=request.host_uid,
            address=request.address,
            joined_at=now,
        )
        try:
            result = await store.commit(
                claim(entry),
                request_id=request_id,
                fingerprint=fingerprint,
                response=str(host_id).encode(),
            )
        except AlreadyExists as e:
            if e.metadata.get("kind") == KIND_HOST_ID:
                taken.add(host_id)  # a concurrent join got this id first
                continue
            if e.metadata.get("kind") == KIND_HOST:
                # A concurrent join of the same name committed first: the same host
                # (a retry racing its original) or another one.
                entries = [HostEntry.decode(r.data) for r in await store.list(KIND_HOST)]
                existing = await _existing(store, request, entries)
                if existing is not None:
                    return existing
            raise
        # A replay answers with the id the first call committed.
        return int(result.response), result.revision, False
    raise Conflict(
        f"concurrent joins took {_ID_ATTEMPTS} host ids in a row from under this one; retry",
        reason="CONTENDED",
        field="host_name",
    )


async def _existing(
    store: StoreService, request: JoinApplication, entries: list[HostEntry]
) -> tuple[int, int, bool] | None:
    """The member this request is (same name and identity), its address brought up
    to date; None for a new host; AlreadyExists when the name or the identity is
    another member's."""
    by_name = next((e for e in entries if e.name == request.host_name), None)
    if by_name is not None and by_name.uid != request.host_uid:
        raise AlreadyExists(
            f"hosts/{request.host_name} is already a member of this cluster and is another machine "
            "(another host uid); give this host another host.name, or remove the old member first "
            "(zsctl host delete)",
            field="host_name",
        )
    by_uid = next((e for e in entries if e.uid == request.host_uid and e.name != request.host_name), None)
    if by_uid is not None:
        raise AlreadyExists(
            f"this machine (host uid {request.host_uid}) is already a member as hosts/{by_uid.name}; "
            f"join with host.name={by_uid.name}, or remove that member first (zsctl host delete)",
            field="host_uid",
        )
    if by_name is None:
        return None
    record = await store.get(KIND_HOST, by_name.name)
    if record is None or HostEntry.decode(record.data).uid != request.host_uid:
        # Changed since the list: decide again on what is there now.
        raise Conflict(
            f"hosts/{request.host_name} changed while joining; retry", reason="CONTENDED", field="host_name"
        )
    current = HostEntry.decode(record.data)
    if current.address == request.address:
        return current.host_id, record.revision, True
    moved = replace(current, address=request.address)
    result = await store.commit(
        [Update(kind=KIND_HOST, name=moved.name, data=moved.encode(), expected_revision=record.revision)]
    )
    return current.host_id, result.revision, True

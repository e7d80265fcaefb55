"""The leader admitting hosts: tokens, names, identities, host ids handed out once
(also to concurrent joins), retries answered again; on a real ClusterDb."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from zsd.cluster import pki
from zsd.cluster.admission import Admission, JoinApplication, admit, claim
from zsd.cluster.records import KIND_HOST, KIND_HOST_ID, KIND_JOIN_TOKEN, MAX_HOST_ID, HostEntry
from zsd.cluster.store import ClusterDb, CommitResult, Create, Delete, Mutation, StoreService
from zsd.errors import AlreadyExists, Conflict, InvalidArgument, ResourceExhausted, Unavailable

CLUSTER = "cluster-uid-1"
NOW = 1_700_000_000.0


@pytest.fixture(scope="module")
def ca() -> pki.KeyPair:
    return pki.create_ca("prod", CLUSTER)


@pytest.fixture(scope="module")
def token(ca: pki.KeyPair) -> pki.JoinToken:
    return pki.new_join_token(cluster_uid=CLUSTER, ca=ca)


class RacingStore(StoreService):
    """A StoreService where other joins commit first: before each of this join's
    commits, the next of ``rivals`` is committed (as a concurrent join would)."""

    def __init__(self, db: ClusterDb, rivals: Sequence[HostEntry]) -> None:
        super().__init__(db)
        self.rivals = list(rivals)

    async def commit(self, mutations: Sequence[Mutation], **kwargs: object) -> CommitResult:  # type: ignore[override]
        if self.rivals:
            await super().commit(claim(self.rivals.pop(0)))
        return await super().commit(mutations, **kwargs)  # type: ignore[arg-type]


class EchoStore(StoreService):
    """A StoreService where each commit has already been made once by the same
    request (the original call, whose answer was lost), so the call is a replay."""

    def __init__(self, db: ClusterDb) -> None:
        super().__init__(db)
        self.replayed: list[bool] = []

    async def commit(self, mutations: Sequence[Mutation], **kwargs: object) -> CommitResult:  # type: ignore[override]
        await super().commit(mutations, **kwargs)  # type: ignore[arg-type]
        result = await super().commit(mutations, **kwargs)  # type: ignore[arg-type]
        self.replayed.append(result.replayed)
        return result


def _founded(path: Path, token: pki.JoinToken) -> ClusterDb:
    """cluster.db as `zsd cluster init` leaves it: the founder h1 and one join token."""
    db = ClusterDb.create(path, epoch=1, owner="h1")
    founder = HostEntry(name="h1", host_id=1, uid="uid-h1", address="192.0.2.1", joined_at=NOW - 100)
    db.commit([*claim(founder), Create(kind=KIND_JOIN_TOKEN, name=token.secret_hash, data=b"{}")])
    return db


@pytest.fixture
async def store(tmp_path: Path, token: pki.JoinToken) -> AsyncIterator[StoreService]:
    service = StoreService(_founded(tmp_path / "cluster.db", token))
    yield service
    await service.aclose()


def application(join_token: pki.JoinToken, name: str = "h2", **changes: object) -> JoinApplication:
    _, csr = pki.make_key_and_csr(name, [])
    request = JoinApplication(
        token=join_token.encode(), host_name=name, address="192.0.2.2", csr_pem=csr, host_uid=f"uid-{name}"
    )
    return replace(request, **changes)  # type: ignore[arg-type]


async def _admit(store: StoreService, ca: pki.KeyPair, request: JoinApplication) -> Admission:
    return await admit(store, ca=ca, cluster_uid=CLUSTER, request=request, now=NOW)


async def _entries(store: StoreService) -> dict[str, HostEntry]:
    return {r.name: HostEntry.decode(r.data) for r in await store.list(KIND_HOST)}


async def _ids(store: StoreService) -> dict[int, str]:
    return {int(r.name): json.loads(r.data)["host"] for r in await store.list(KIND_HOST_ID)}


async def test_a_new_host_gets_the_next_id_and_a_certificate_for_its_key(
    store: StoreService, ca: pki.KeyPair, token: pki.JoinToken
) -> None:
    request = application(token)
    admission = await _admit(store, ca, request)
    assert (admission.host_id, admission.cluster_uid, admission.ca_pem) == (2, CLUSTER, ca.cert_pem)
    assert not admission.rejoined and admission.revision == store.revision == 2
    assert pki.verify_host_cert(ca.cert_pem, admission.cert_pem) == ("h2", 2)
    assert await _entries(store) == {
        "h1": HostEntry(name="h1", host_id=1, uid="uid-h1", address="192.0.2.1", joined_at=NOW - 100),
        "h2": HostEntry(name="h2", host_id=2, uid="uid-h2", address="192.0.2.2", joined_at=NOW),
    }
    assert await _ids(store) == {1: "h1", 2: "h2"}


async def test_tokens_are_checked_before_anything_else(
    store: StoreService, ca: pki.KeyPair, token: pki.JoinToken
) -> None:
    unknown = pki.new_join_token(cluster_uid=CLUSTER, ca=ca)
    other_cluster = pki.new_join_token(cluster_uid="cluster-uid-2", ca=ca)
    other_ca = pki.new_join_token(cluster_uid=CLUSTER, ca=pki.create_ca("prod", CLUSTER))
    for text, error, message in [
        ("zsdjoin1.garbage", InvalidArgument, "damaged"),
        (unknown.encode(), InvalidArgument, "no longer"),
        (other_cluster.encode(), InvalidArgument, "another cluster"),
        (other_ca.encode(), Unavailable, "does not match"),
    ]:
        # A taken name too: a caller without a valid token learns nothing about members.
        with pytest.raises(error, match=message) as info:
            await _admit(store, ca, application(token, "h1", token=text))
        assert info.value.field == "token"
    assert store.revision == 1


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"host_name": "H_2"}, "host_name"),
        ({"host_name": ""}, "host_name"),
        ({"address": "h2.example"}, "address"),
        ({"address": ""}, "address"),
        ({"host_uid": ""}, "host_uid"),
        ({"csr_pem": b"nope"}, "csr_pem"),
    ],
)
async def test_bad_requests_name_the_field(
    store: StoreService, ca: pki.KeyPair, token: pki.JoinToken, changes: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        await _admit(store, ca, application(token, **changes))
    assert info.value.field == field
    assert store.revision == 1


async def test_a_name_or_identity_of_another_member_is_refused(
    store: StoreService, ca: pki.KeyPair, token: pki.JoinToken
) -> None:
    with pytest.raises(AlreadyExists, match="another machine") as info:
        await _admit(store, ca, application(token, "h1", host_uid="uid-other"))
    assert info.value.field == "host_name"
    with pytest.raises(AlreadyExists, match="already a member as hosts/h1") as info:
        await _admit(store, ca, application(token, "h9", host_uid="uid-h1"))
    assert info.value.field == "host_uid"
    assert store.revision == 1


async def test_the_same_host_joining_again_keeps_its_id(
    store: StoreService, ca: pki.KeyPair, token: pki.JoinToken
) -> None:
    first = await _admit(store, ca, application(token))
    # It lost its membership file and joins again with a new key: same id, no new revision.
    again = await _admit(store, ca, application(token))
    assert (again.host_id, again.rejoined, again.revision) == (2, True, first.revision)
    assert pki.verify_host_cert(ca.cert_pem, again.cert_pem) == ("h2", 2)
    # From another address: the entry follows it.
    moved = await _admit(store, ca, application(token, address="192.0.2.22"))
    assert (moved.host_id, moved.rejoined, moved.revision) == (2, True, first.revision + 1)
    assert (await _entries(store))["h2"].address == "192.0.2.22"
    assert await _ids(store) == {1: "h1", 2: "h2"}


async def test_a_retried_call_is_answered_with_the_first_result(
    store: StoreService, ca: pki.KeyPair, token: pki.JoinToken, tmp_path: Path
) -> None:
    request = application(token)
    echo = EchoStore(_founded(tmp_path / "echo.db", token))
    try:
        admission = await _admit(echo, ca, request)
        assert (admission.host_id, admission.revision, echo.replayed) == (2, 2, [True])
    finally:
        await echo.aclose()
    # The same request several times at once (a retry racing its original).
    results: list[Admission] = []

    async def join() -> None:
        results.append(await _admit(store, ca, request))

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(join)
    assert [r.host_id for r in results] == [2, 2, 2]
    assert store.revision == 2 and await _ids(store) == {1: "h1", 2: "h2"}


async def test_concurrent_joins_get_distinct_ids(
    store: StoreService, ca: pki.KeyPair, token: pki.JoinToken
) -> None:
    names = [f"h{i}" for i in range(2, 12)]
    results: dict[str, int] = {}

    async def join(name: str) -> None:
        results[name] = (await _admit(store, ca, application(token, name))).host_id

    async with trio.open_nursery() as nursery:
        for name in names:
            nursery.start_soon(join, name)
    assert sorted(results.values()) == list(range(2, 12))
    assert await _ids(store) == {1: "h1", **{host_id: name for name, host_id in results.items()}}


async def test_a_join_that_loses_the_race_for_an_id_takes_the_next(
    tmp_path: Path, ca: pki.KeyPair, token: pki.JoinToken
) -> None:
    rival = HostEntry(name="rival", host_id=2, uid="uid-rival", address="192.0.2.9")
    store = RacingStore(_founded(tmp_path / "cluster.db", token), [rival])
    try:
        admission = await _admit(store, ca, application(token))
        assert admission.host_id == 3
        assert await _ids(store) == {1: "h1", 2: "rival", 3: "h2"}
    finally:
        await store.aclose()


async def test_a_join_that_loses_the_race_for_its_name(
    tmp_path: Path, ca: pki.KeyPair, token: pki.JoinToken
) -> None:
    # Another machine took the name: refused. The same machine (its own earlier
    # call): answered with that call's id.
    same = HostEntry(name="h2", host_id=2, uid="uid-h2", address="192.0.2.2")
    other = HostEntry(name="h3", host_id=2, uid="uid-other", address="192.0.2.3")
    store = RacingStore(_founded(tmp_path / "cluster.db", token), [same])
    store2 = RacingStore(_founded(tmp_path / "cluster2.db", token), [other])
    try:
        admission = await _admit(store, ca, application(token))
        assert (admission.host_id, admission.rejoined) == (2, True)
        with pytest.raises(AlreadyExists, match="another machine") as info:
            await _admit(store2, ca, application(token, "h3"))
        assert info.value.field == "host_name"
    finally:
        await store.aclose()
        await store2.aclose()


async def test_endless_contention_gives_up(tmp_path: Path, ca: pki.KeyPair, token: pki.JoinToken) -> None:
    rivals = [HostEntry(name=f"r{i}", host_id=i, uid=f"uid-r{i}") for i in range(2, 40)]
    store = RacingStore(_founded(tmp_path / "cluster.db", token), rivals)
    try:
        with pytest.raises(Conflict) as info:
            await _admit(store, ca, application(token))
        assert info.value.reason == "CONTENDED"
    finally:
        await store.aclose()


async def test_no_free_host_id(tmp_path: Path, ca: pki.KeyPair, token: pki.JoinToken) -> None:
    db = _founded(tmp_path / "cluster.db", token)
    db.commit([Create(kind=KIND_HOST_ID, name=str(i), data=b"{}") for i in range(2, MAX_HOST_ID + 1)])
    store = StoreService(db)
    try:
        with pytest.raises(ResourceExhausted) as info:
            await _admit(store, ca, application(token))
        assert info.value.reason == "NO_FREE_HOST_ID"
    finally:
        await store.aclose()


async def test_a_removed_host_joins_again_as_new(
    store: StoreService, ca: pki.KeyPair, token: pki.JoinToken
) -> None:
    # DeleteHost removes the entry and its id; the request_id of the first join must
    # not replay it (the new join has a new key, so a new request).
    await _admit(store, ca, application(token))
    await store.commit([Delete(kind=KIND_HOST, name="h2"), Delete(kind=KIND_HOST_ID, name="2")])
    again = await _admit(store, ca, application(token))
    assert (again.host_id, again.rejoined) == (2, False)
    assert "h2" in await _entries(store)

"""`zsd cluster init` on fake leases: the founder's records (its host id claimed
like a joined host's), its member files, and a join admitted right after."""

from __future__ import annotations

import json
from pathlib import Path

import trio
import trio.testing

from zsd.cluster import bootstrap, pki
from zsd.cluster.admission import JoinApplication, admit
from zsd.cluster.lease import LeaseConfig
from zsd.cluster.lease.fake import FakeAuthority, FakeLeaseStorage
from zsd.cluster.records import KIND_HOST, KIND_HOST_ID, HostEntry
from zsd.cluster.store import ClusterDb, StoreService
from zsd.paths import Paths


async def test_init_claims_host_id_1_and_a_joiner_gets_2(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    config = LeaseConfig(shared_dir=shared, lockspace="test", io_timeout=10)
    authority = FakeAuthority(storage=FakeLeaseStorage(clock=trio.current_time), config=config, host="h1")
    paths = Paths(root=tmp_path / "h1")
    result = await bootstrap.init_cluster(
        authority=authority,
        paths=paths,
        name="prod",
        host_name="h1",
        address="192.0.2.1",
        progress=lambda _line: None,
    )

    membership = bootstrap.load_membership(paths)
    assert membership == bootstrap.Membership(cluster_uid=result.info.uid, host_id=1, shared_dir=str(shared))
    layout = bootstrap.SharedLayout(root=shared)
    ca = bootstrap.load_ca(layout)
    cert, key, ca_copy = bootstrap.tls_paths(paths)
    assert ca_copy.read_bytes() == ca.cert_pem and key.stat().st_mode & 0o777 == 0o600
    assert pki.verify_host_cert(ca.cert_pem, cert.read_bytes()) == ("h1", 1)

    db = ClusterDb.open(layout.db, epoch=result.epoch + 1, owner="test")
    store = StoreService(db)
    try:
        assert [json.loads(r.data) for r in await store.list(KIND_HOST_ID)] == [{"host": "h1"}]
        [founder] = [HostEntry.decode(r.data) for r in await store.list(KIND_HOST)]
        assert (founder.name, founder.host_id, founder.address) == ("h1", 1, "192.0.2.1")
        _, csr = pki.make_key_and_csr("h2", [])
        request = JoinApplication(
            token=result.token, host_name="h2", address="192.0.2.2", csr_pem=csr, host_uid="uid-h2"
        )
        admission = await admit(store, ca=ca, cluster_uid=result.info.uid, request=request, now=0.0)
        assert admission.host_id == 2
    finally:
        await store.aclose()

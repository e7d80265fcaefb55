"""The cluster-member side of a running zsd, beyond the leader lease: the state
copy (Replica), where the leader is (for forwarding), announcing ourselves as
leader on shared storage, reporting this host's view of itself, and leaving when
the cluster removes us.

Each piece is a small trio task; :class:`MemberRuntime` holds what the API reads
(immutable values replaced wholesale, safe from the API thread).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import trio

from zsd.api.router import LeaderView
from zsd.api.status import from_rpc_error
from zsd.cluster import peerclient, pki
from zsd.cluster.admission import JoinApplication, admit
from zsd.cluster.bootstrap import SharedLayout, load_ca, load_cluster_info
from zsd.cluster.control import ClusterControl
from zsd.cluster.leaderhint import LeaderHint, read_hint, write_hint
from zsd.cluster.leadership import LeadershipState
from zsd.cluster.peerclient import PeerTarget, PeerTls
from zsd.cluster.records import KIND_HOST, HostEntry
from zsd.cluster.replica import LeadershipSource
from zsd.errors import ZsdError
from zsd.peer.v1 import peer_pb2, peer_pb2_grpc
from zsd.v1 import host_pb2

log = logging.getLogger(__name__)

REPORT_INTERVAL = 2.0
REFUSED_FOR = 5.0
"""Seconds of the leader refusing this host's certificate before it counts as removed
(a new leader's copy can lag a join by a moment; a removal is for good)."""


@dataclass(frozen=True, kw_only=True)
class MemberSettings:
    host_name: str
    host_id: int
    shared_dir: Path
    endpoint: str
    """``IP:PORT`` of this host's mutual-TLS listener."""
    tls: PeerTls


class MemberRuntime:
    def __init__(
        self,
        *,
        settings: MemberSettings,
        leadership: LeadershipSource,
        control: ClusterControl,
        own_host: Callable[[], host_pb2.Host],
        on_removed: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._leadership = leadership
        self.control = control
        self._own_host = own_host
        self._on_removed = on_removed
        self._leader_view = LeaderView(leading=False, target=None, epoch=0)

    async def admit(self, request: peer_pb2.JoinRequest) -> tuple[peer_pb2.JoinResponse, int]:
        """PeerService.Join on the leader: the CA comes from shared storage (every
        possible leader can sign), the decision from the cluster state."""
        store = self.control.store()
        layout = SharedLayout(root=self._settings.shared_dir)

        def load() -> tuple[pki.KeyPair, str]:
            return load_ca(layout), load_cluster_info(layout).uid

        ca, cluster_uid = await trio.to_thread.run_sync(load)
        admission = await admit(
            store,
            ca=ca,
            cluster_uid=cluster_uid,
            request=JoinApplication(
                token=request.token,
                host_name=request.host_name,
                address=request.address,
                csr_pem=request.csr_pem,
                host_uid=request.host_uid,
            ),
            now=time.time(),
        )
        response = peer_pb2.JoinResponse(
            host_id=admission.host_id,
            cert_pem=admission.cert_pem,
            ca_pem=admission.ca_pem,
            cluster_uid=admission.cluster_uid,
        )
        return response, admission.revision

    def leader_view(self) -> LeaderView:
        """Read from the API thread (an immutable value)."""
        return self._leader_view

    async def resolve(self, state: LeadershipState) -> PeerTarget | None:
        """Where the leader of ``state`` listens: its announcement on shared storage
        when that names it, else its entry in the state copy (same port as ours)."""
        if state.leader_host_id is None:
            return None
        try:
            hint: LeaderHint | None = await trio.to_thread.run_sync(read_hint, self._settings.shared_dir)
        except ZsdError:
            hint = None
        if hint is not None and hint.host_id == state.leader_host_id:
            return PeerTarget(endpoint=hint.endpoint, host_name=hint.host_name)
        for record in self.control.replica.cache.list(KIND_HOST):
            entry = HostEntry.decode(record.data)
            if entry.host_id == state.leader_host_id and entry.address:
                port = self._settings.endpoint.rsplit(":", 1)[1]
                return PeerTarget(endpoint=f"{entry.address}:{port}", host_name=entry.name)
        return None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.control.replica.run)
            nursery.start_soon(self.control.run_terms)
            nursery.start_soon(self._track_leader)
            nursery.start_soon(self._report)
            nursery.start_soon(self._watch_removal)
            task_status.started()

    async def _track_leader(self) -> None:
        while True:
            state = self._leadership.state
            if state.leading:
                s = self._settings
                hint = LeaderHint(
                    host_id=s.host_id, host_name=s.host_name, endpoint=s.endpoint, epoch=state.epoch
                )
                try:
                    await trio.to_thread.run_sync(write_hint, s.shared_dir, hint)
                except OSError as e:
                    log.warning("could not announce leadership in %s: %s", s.shared_dir, e)
                self._leader_view = LeaderView(leading=True, target=None, epoch=state.epoch)
            else:
                target = await self.resolve(state)
                self._leader_view = LeaderView(leading=False, target=target, epoch=state.epoch)
                if target is None and state.leader_host_id is not None:
                    # Not announced yet: look again soon, as well as on the next change.
                    with trio.move_on_after(0.5):
                        await self._leadership.wait_changed()
                    continue
            await self._leadership.wait_changed()

    async def _report(self) -> None:
        """Publishes this host's view of itself whenever it changes (and after every
        leader change, in case the report was lost with the old leader)."""
        last: bytes | None = None
        last_epoch = -1
        while True:
            host = self._own_host()
            host.ClearField("uptime")
            data = host.SerializeToString(deterministic=True)
            epoch = self._leadership.state.epoch
            if (data != last or epoch != last_epoch) and self.control.replica.synced.is_set():
                try:
                    await self._send_report(host, data)
                    last, last_epoch = data, epoch
                except ZsdError as e:
                    log.debug("host report not delivered yet: %s", e)
            await trio.sleep(REPORT_INTERVAL)

    async def _send_report(self, host: host_pb2.Host, data: bytes) -> None:
        if self._leadership.state.leading:
            await self.control.report_status(host=self._settings.host_name, status=data)
            return
        target = self._leader_view.target
        if target is None:
            return
        tls = self._settings.tls

        def call() -> None:
            with peerclient.sync_channel(target, tls) as channel:
                try:
                    peer_pb2_grpc.PeerServiceStub(channel).ReportHost(
                        peer_pb2.ReportHostRequest(host=host), timeout=5.0
                    )
                except grpc.RpcError as e:
                    raise from_rpc_error(e.code(), e.details() or "", e.trailing_metadata() or ()) from e

        await trio.to_thread.run_sync(call)

    async def _watch_removal(self) -> None:
        """Leaves once this host's record is gone from the copy after it was seen there,
        or the leader has refused this host's certificate for REFUSED_FOR seconds."""
        replica = self.control.replica
        await replica.synced.wait()
        seen = False
        while True:
            present = replica.cache.get(KIND_HOST, self._settings.host_name) is not None
            refused = replica.refused_since
            if refused is not None and trio.current_time() - refused >= REFUSED_FOR:
                # The leader has long refused our certificate: we were removed while
                # our feed was down, so the copy never showed it.
                present = False
            if present:
                seen = True
            elif seen:
                log.warning("this host was removed from the cluster; leaving it")
                self._on_removed()
                return
            await trio.sleep(0.5)

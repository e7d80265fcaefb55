"""The zsd process: one root nursery, subsystems started in order with
``nursery.start`` (READY=1 only when all are ready), signals, watchdog.

SIGTERM/SIGINT: STOPPING=1, drain in-flight RPCs for ``api.shutdown_grace``, exit
(well within 5 s). SIGHUP: re-read the configuration; apply what can change live,
log what needs a restart, keep the old configuration if the new one is invalid.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
import signal
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import grpc
import trio

import zsd
from zsd.api import computeconv, grouphits, peerauth, storageconv
from zsd.api.gateway import Gateway
from zsd.api.peers import Peers
from zsd.api.router import Router
from zsd.api.server import ApiServer, Registrar
from zsd.api.services.cluster import ClusterService
from zsd.api.services.compute import VmService
from zsd.api.services.hosts import HostMessageCache, HostService
from zsd.api.services.network import NetworkService
from zsd.api.services.operations import OperationService
from zsd.api.services.peer import Authorize, PeerService
from zsd.api.services.scheduling import SchedulingService
from zsd.api.services.storage import StorageService
from zsd.api.vmcluster import ClusterVms
from zsd.cluster import libvirtpki, peerclient
from zsd.cluster.autoinit import found_cluster_of_one
from zsd.cluster.bootstrap import (
    Membership,
    SharedLayout,
    load_cluster_info,
    load_membership,
    membership_path,
    tls_paths,
)
from zsd.cluster.control import ClusterControl
from zsd.cluster.controlplane import AuthorityFactory, ControlPlane, run_control_plane, sanlock_authority
from zsd.cluster.gossip import MAX_LEAVE_TIMEOUT, Gossip
from zsd.cluster.identity import ClusterIdentity, HostIdentity, cluster_identity, host_identity
from zsd.cluster.leadership import Leadership, LeadershipState
from zsd.cluster.lease._sanlockapi import LibSanlock
from zsd.cluster.lease.authority import LeaseConfig
from zsd.cluster.liveness import LeaseWatcher
from zsd.cluster.local import LocalCluster
from zsd.cluster.member import MemberRuntime, MemberSettings
from zsd.cluster.operations import OperationRegistry
from zsd.cluster.peerclient import ChannelPool, PeerTarget, PeerTls
from zsd.cluster.pki import CertKind
from zsd.cluster.records import KIND_HOST, HostEntry
from zsd.cluster.replica import Replica
from zsd.cluster.store import ChangeSet, Snapshot
from zsd.cluster.swim.codec import encode_meta
from zsd.cluster.swim.member import Address, Capacity, HostMeta
from zsd.compute import ha, janitor, restore
from zsd.compute.hostvms import HostVms
from zsd.compute.scheduler import Scheduler
from zsd.compute.settings import PlacementSettings
from zsd.compute.setup import run_compute
from zsd.compute.vmlease import VmLeases
from zsd.config import ApiConfig, Config, TlsConfig
from zsd.errors import ConfigError, InvalidArgument, PermissionDenied
from zsd.host.inventory import Collector, Inventory
from zsd.network.catalog import NetworkCatalog
from zsd.network.dhcp import DhcpManager, default_state_dir
from zsd.network.dhcpsync import DhcpReconciler
from zsd.network.firewall import FirewallReconciler
from zsd.network.links import Links
from zsd.network.reconciler import FabricReconciler
from zsd.paths import Paths
from zsd.peer.v1 import peer_pb2, peer_pb2_grpc
from zsd.storage import clusterpools
from zsd.storage.host import StorageHost
from zsd.storage.setup import open_storage
from zsd.util.apithread import Bridge, open_api_thread
from zsd.util.netaddr import advertised
from zsd.util.notify import Notifier, watchdog_interval
from zsd.v1 import (
    cluster_pb2,
    cluster_pb2_grpc,
    compute_pb2,
    compute_pb2_grpc,
    host_pb2,
    host_pb2_grpc,
    network_pb2,
    network_pb2_grpc,
    operation_pb2,
    operation_pb2_grpc,
    scheduling_pb2,
    scheduling_pb2_grpc,
    storage_pb2,
    storage_pb2_grpc,
)

log = logging.getLogger(__name__)

DEFAULT_PORT = 7443

# SIGTERM must end the process within 5 s: grace (<= 4.5 s, validated) plus this much
# for everything else, after which the remaining work is abandoned.
_STOP_SLACK = 0.4


@dataclass(frozen=True, kw_only=True)
class DaemonDeps:
    config: Config
    notifier: Notifier
    collector: Collector
    # Re-reads the configuration from the sources it was first read from.
    reload: Callable[[], Config]
    environ: dict[str, str]
    make_authority: AuthorityFactory = sanlock_authority


@dataclass(frozen=True, kw_only=True)
class _Core:
    cluster: LocalCluster
    inventory: Inventory
    operations: OperationRegistry
    storage: StorageHost
    vms: HostVms
    member: MemberRuntime | None = None
    tls: PeerTls | None = None
    compute: host_pb2.HostCompute | None = None
    """Where peers send VMs to this host (its migration URI, console log directory)."""
    placement: PlacementSettings = field(default_factory=PlacementSettings)
    peer_port: str = ""
    """The port every member's API listens on (peers reach each other there)."""
    scheduler: Scheduler | None = None
    """A member's placement: CreateVm and HA restarts share its lock."""
    network: NetworkCatalog | None = None
    """A member's switches and port groups (writes on the leader)."""
    firewall: FirewallReconciler | None = None
    """A member's security groups as this host enforces them (hit counters)."""


def _registrar(bridge: Bridge, core: _Core) -> Registrar:
    gateway = Gateway(bridge.to_trio)
    member = core.member
    router: Router | None = None
    peers: Peers | None = None
    vm_cluster: ClusterVms | None = None
    scheduler: Scheduler | None = None
    if member is not None:
        tls = core.tls
        assert tls is not None
        control = member.control
        channels = ChannelPool(tls)
        router = Router(
            leader=member.leader_view,
            channel=channels.get,
            wait_revision=lambda rev, timeout: bridge.to_trio.run(
                lambda: control.wait_revision(rev, timeout)
            ),
        )
        peers = Peers(
            gateway=gateway,
            control=control,
            channel=channels.get,
            host=core.cluster.host_name,
            port=core.peer_port,
        )
        vm_cluster = ClusterVms(
            gateway=gateway, control=control, router=router, peers=peers, placement=core.placement
        )
        scheduler = core.scheduler

    def register(server: grpc.aio.Server) -> list[str]:
        host_pb2_grpc.add_HostServiceServicer_to_server(
            HostService(
                gateway=gateway,
                cluster=core.cluster,
                inventory=core.inventory,
                operations=core.operations,
                control=member.control if member is not None else None,
                router=router,
                pools=lambda: storageconv.host_pools(core.storage.states),
                vms=lambda: computeconv.host_vms(core.vms.vms.summary, core.vms.creating),
                compute=core.compute,
                devices_in_use=lambda: {
                    a: s.spec.name for s in core.vms.vms.summary for a in s.spec.hostdevs
                },
            ),
            server,
        )
        extra: list[str] = []
        if member is not None and router is not None:
            peer_pb2_grpc.add_PeerServiceServicer_to_server(
                PeerService(
                    gateway=gateway,
                    control=member.control,
                    router=router,
                    authorize=_peer_authorizer(member.control),
                    admit=member.admit,
                ),
                server,
            )
            extra.append(peer_pb2.DESCRIPTOR.services_by_name["PeerService"].full_name)
        cluster_pb2_grpc.add_ClusterServiceServicer_to_server(
            ClusterService(
                gateway=gateway, cluster=core.cluster, control=member.control if member is not None else None
            ),
            server,
        )
        operation_pb2_grpc.add_OperationServiceServicer_to_server(
            OperationService(
                gateway=gateway,
                operations=core.operations,
                control=member.control if member is not None else None,
                peers=peers,
            ),
            server,
        )
        storage_pb2_grpc.add_StorageServiceServicer_to_server(
            StorageService(
                gateway=gateway,
                storage=core.storage,
                operations=core.operations,
                control=member.control if member is not None else None,
                router=router,
                qos_changed=core.vms.apply_volume_qos,
                snapshot_attached=core.vms.snapshot_volume,
            ),
            server,
        )
        compute_pb2_grpc.add_VmServiceServicer_to_server(
            VmService(
                gateway=gateway,
                vms=core.vms,
                operations=core.operations,
                host=core.cluster.host_name,
                cluster=vm_cluster,
                scheduler=scheduler,
                network=core.network,
            ),
            server,
        )
        network_pb2_grpc.add_NetworkServiceServicer_to_server(
            NetworkService(
                gateway=gateway,
                catalog=core.network,
                router=router,
                host=core.cluster.host_name,
                hits=core.firewall.hits if core.firewall is not None else None,
                peers=peers,
                members=(
                    (lambda: grouphits.member_states(member.control.host_views()))
                    if member is not None
                    else None
                ),
            ),
            server,
        )
        scheduling_pb2_grpc.add_SchedulingServiceServicer_to_server(
            SchedulingService(
                gateway=gateway,
                control=member.control if member is not None else None,
                router=router,
                scheduler=scheduler,
            ),
            server,
        )
        return [
            compute_pb2.DESCRIPTOR.services_by_name["VmService"].full_name,
            network_pb2.DESCRIPTOR.services_by_name["NetworkService"].full_name,
            scheduling_pb2.DESCRIPTOR.services_by_name["SchedulingService"].full_name,
            host_pb2.DESCRIPTOR.services_by_name["HostService"].full_name,
            storage_pb2.DESCRIPTOR.services_by_name["StorageService"].full_name,
            cluster_pb2.DESCRIPTOR.services_by_name["ClusterService"].full_name,
            operation_pb2.DESCRIPTOR.services_by_name["OperationService"].full_name,
            *extra,
        ]

    return register


async def serve(deps: DaemonDeps) -> None:
    config, notify = deps.config, deps.notifier.notify
    paths = Paths(root=config.root)
    notify("STATUS=starting")
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        host_ident, cluster_ident, membership = await _identities(deps, paths)
        async with open_api_thread() as bridge, trio.open_nursery() as nursery:
            life = _Lifecycle(deps=deps, config=config, startup=nursery.cancel_scope)
            nursery.start_soon(life.handle_signals, signals)
            plane: ControlPlane | None = None
            if membership is not None:
                plane = await nursery.start(
                    partial(
                        run_control_plane,
                        membership=membership,
                        status=lambda s: notify(f"STATUS={s}"),
                        make_authority=deps.make_authority,
                    )
                )
            leadership = plane.leadership if plane is not None else None
            notify("STATUS=collecting host inventory")
            inventory = Inventory(collector=deps.collector, interval=config.facts_interval)
            await nursery.start(inventory.run)
            operations = OperationRegistry(host=f"hosts/{config.host_name}")
            await nursery.start(operations.run)
            notify("STATUS=activating storage pools")
            storage = open_storage(paths=paths, host=config.host_name)
            await storage.start(default_dir=paths.default_pool_dir)
            nursery.start_soon(storage.monitor, config.storage_check_interval)
            vms = await nursery.start(
                partial(
                    run_compute,
                    uri=config.hypervisor.libvirt_uri,
                    domain_type=inventory.facts.hypervisor.kind.value,
                    paths=paths,
                    storage=storage,
                    leases=_vm_leases(config, membership),
                    pki_dir=_libvirt_pki(paths, membership),
                )
            )
            core = _Core(
                cluster=LocalCluster(
                    host_name=config.host_name,
                    address=config.host_address,
                    host_identity=host_ident,
                    cluster_identity=cluster_ident,
                    inventory=inventory,
                    version=zsd.__version__,
                    leadership=(lambda: leadership.state) if leadership is not None else None,
                ),
                inventory=inventory,
                operations=operations,
                storage=storage,
                vms=vms,
                placement=config.placement,
                compute=host_pb2.HostCompute(
                    migration_uri=config.hypervisor.migration_uri.replace(
                        "{address}", _bracket(config.host_address)
                    ),
                    console_dir=str(paths.console_dir),
                ),
            )
            api_config = config.api
            if membership is not None and plane is not None:
                notify("STATUS=following the cluster state")
                core, api_config = await _start_member(
                    nursery,
                    core=core,
                    config=config,
                    paths=paths,
                    membership=membership,
                    plane=plane,
                    life=life,
                )
            notify("STATUS=starting API")
            api = ApiServer(bridge=bridge, config=api_config, register=_registrar(bridge, core))
            await nursery.start(api.run)
            hv = inventory.facts.hypervisor.kind.value
            serving = f"serving on unix:{config.api.socket}" + (
                f" and {config.api.tcp_listen}" if config.api.tcp_listen else ""
            )
            _tune_gc()
            life.ready(inventory=inventory, status=serving)
            role = "cluster of 1" if leadership is None else f"member of {cluster_ident.name}"
            notify(f"READY=1\nSTATUS={serving}; {role}; hypervisor {hv}")
            log.info("ready: %s; hypervisor %s", serving, hv)
            interval = watchdog_interval(deps.environ, os.getpid())
            if interval is not None:
                nursery.start_soon(_watchdog, bridge, deps.notifier, interval)
            await life.stopping.wait()
            notify("STOPPING=1\nSTATUS=stopping: draining in-flight calls")
            log.info("stopping: draining in-flight calls for up to %.1f s", config.api.shutdown_grace)
            with trio.move_on_after(config.api.shutdown_grace + _STOP_SLACK):
                await api.stop(grace=config.api.shutdown_grace)
            nursery.cancel_scope.cancel()
    log.info("stopped")


async def _start_member(
    nursery: trio.Nursery,
    *,
    core: _Core,
    config: Config,
    paths: Paths,
    membership: Membership,
    plane: ControlPlane,
    life: _Lifecycle,
) -> tuple[_Core, ApiConfig]:
    """The member's state copy, leader tracking and self-report; the API listens on
    TCP with the host's cluster certificate (peers and clients alike)."""
    cert, key, ca = tls_paths(paths)
    tls = PeerTls.load(cert, key, ca)
    api_config = config.api
    if api_config.tls is None:
        api_config = replace(api_config, tls=TlsConfig(cert=cert, key=key, client_ca=ca))
    if not api_config.tcp_listen:
        api_config = replace(api_config, tcp_listen=f"{_bracket(core.cluster.address)}:{DEFAULT_PORT}")
    assert api_config.tcp_listen is not None
    settings = MemberSettings(
        host_name=config.host_name,
        host_id=membership.host_id,
        shared_dir=Path(membership.shared_dir),
        endpoint=_advertised(api_config.tcp_listen, core.cluster.address),
        tls=tls,
    )
    leadership = plane.leadership
    runtime: MemberRuntime | None = None

    async def resolve(state: LeadershipState) -> PeerTarget | None:
        assert runtime is not None
        return await runtime.resolve(state)

    def open_feed(
        target: PeerTarget, revision: int, snapshot: bool
    ) -> AsyncGenerator[Snapshot | ChangeSet, None]:
        return peerclient.watch_feed(target, tls, from_revision=revision, snapshot=snapshot)

    replica = Replica(leadership=leadership, resolve=resolve, open_feed=open_feed)
    gossip, gossip_meta = _gossip(
        config=config,
        membership=membership,
        endpoint=settings.endpoint,
        address=core.cluster.address,
        replica=replica,
        inventory=core.inventory,
    )
    leases = LeaseWatcher(plane.authority)
    control = ClusterControl(
        leadership=leadership,
        replica=replica,
        host_name=config.host_name,
        gossip=lambda: gossip.view().states(),
        leases=lambda: leases.states,
    )
    cluster = core.cluster
    cache = HostMessageCache(
        lambda: storageconv.host_pools(core.storage.states),
        lambda: computeconv.host_vms(core.vms.vms.summary, core.vms.creating),
        core.compute,
    )

    def own_host() -> host_pb2.Host:
        return cache.encode(cluster.host("-"), now=time.time())

    runtime = MemberRuntime(
        settings=settings,
        leadership=leadership,
        control=control,
        own_host=own_host,
        on_removed=lambda: life.removed(paths, plane),
    )
    await nursery.start(runtime.run)
    nursery.start_soon(clusterpools.follow, replica, core.storage)
    await nursery.start(leases.run)
    await nursery.start(gossip.run)
    nursery.start_soon(_announce, gossip, gossip_meta, leadership, replica, config.host_name)
    nursery.start_soon(janitor.run, control)
    scheduler = Scheduler(control, config.placement)
    nursery.start_soon(ha.run, control, scheduler)
    nursery.start_soon(restore.run, control, core.vms.vms, config.host_name, lambda: core.vms.creating)
    fabric = FabricReconciler(
        control=control, host=config.host_name, address=core.cluster.address, links=Links()
    )
    nursery.start_soon(fabric.run)
    dhcp = DhcpManager.on_host(
        state_dir=config.dhcp_state_dir or default_state_dir(paths), netns_prefix=config.dhcp_netns_prefix
    )
    nursery.start_soon(DhcpReconciler(control=control, host=config.host_name, manager=dhcp).run)
    firewall = FirewallReconciler(control=control, host=config.host_name)
    nursery.start_soon(firewall.run)
    port = api_config.tcp_listen.rsplit(":", 1)[1]
    network = NetworkCatalog(control)
    core = replace(
        core, member=runtime, tls=tls, peer_port=port, scheduler=scheduler, network=network, firewall=firewall
    )
    return core, api_config


def _gossip(
    *,
    config: Config,
    membership: Membership,
    endpoint: str,
    address: str,
    replica: Replica,
    inventory: Inventory,
) -> tuple[Gossip, HostMeta]:
    """SWIM over UDP on the host's address; seeds are the other members in the state
    copy (which fills in after start: Gossip asks again while it knows nobody)."""
    port = config.gossip_port
    facts = inventory.facts

    def seeds() -> list[Address]:
        entries = (HostEntry.decode(r.data) for r in replica.cache.list(KIND_HOST))
        return [
            Address(host=e.address, port=port) for e in entries if e.name != config.host_name and e.address
        ]

    meta = HostMeta(
        host_id=membership.host_id,
        addresses=(address,),
        ports=(("api", int(endpoint.rsplit(":", 1)[1])),),
        capacity=Capacity(cpus=facts.cpu.count, memory_bytes=facts.memory.total_bytes),
        version=zsd.__version__,
    )
    # Saying goodbye shares SIGTERM's 5 s with the API's drain (shutdown_grace <= 4.5 s).
    leave = max(0.0, min(MAX_LEAVE_TIMEOUT, 4.5 - config.api.shutdown_grace))
    gossip = Gossip(
        name=config.host_name, bind_host=address, port=port, meta=meta, seeds=seeds, leave_timeout=leave
    )
    return gossip, meta


def _fitting(meta: HostMeta) -> HostMeta:
    """``meta`` with as many labels as fit in a gossip packet's metadata (512 bytes):
    labels are a convenience for peers; the cluster state holds them all."""
    labels = meta.labels
    while True:
        candidate = dataclasses.replace(meta, labels=labels)
        try:
            encode_meta(candidate)
        except InvalidArgument:
            if not labels:
                raise
            labels = labels[: len(labels) // 2]
            continue
        return candidate


async def _announce(
    gossip: Gossip, meta: HostMeta, leadership: Leadership, replica: Replica, host_name: str
) -> None:
    """Keeps this host's gossip metadata current: whom it believes leads (and in
    which epoch) and its labels, from the state copy."""
    current = meta
    while True:
        state = leadership.state
        leader, labels = "", current.labels
        for record in replica.cache.list(KIND_HOST):
            entry = HostEntry.decode(record.data)
            if entry.host_id == state.leader_host_id:
                leader = entry.name
            if entry.name == host_name:
                labels = entry.labels
        wanted = _fitting(dataclasses.replace(meta, leader=leader, leader_epoch=state.epoch, labels=labels))
        if wanted != current:  # every update is a new incarnation gossiped to all
            gossip.update_meta(wanted)
            current = wanted
        with trio.move_on_after(2):  # names and labels arrive with the state copy
            await leadership.wait_changed()


def _peer_authorizer(control: ClusterControl) -> Authorize:
    """The caller's certificate must be of an allowed kind (see peerauth); a host
    caller must also still be a member in the state copy (a removed host keeps a
    valid certificate, not its membership)."""

    def authorize(context: grpc.aio.ServicerContext[object, object], kinds: tuple[str, ...]) -> str:
        allowed = [k for k in (CertKind.HOST, CertKind.JOIN) if k.value in kinds]
        identity = peerauth.require(context, *allowed)
        if identity.kind is CertKind.HOST and control.replica.cache.get(KIND_HOST, identity.name) is None:
            raise PermissionDenied(
                f"hosts/{identity.name} is not a member of this cluster",
                reason=peerauth.NOT_ALLOWED,
                field="certificate",
            )
        return identity.name

    return authorize


def _bracket(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _advertised(listen: str, address: str) -> str:
    """What peers dial: the listen address, unless it is a wildcard."""
    host, port = listen.rsplit(":", 1)
    if host.strip("[]") in ("0.0.0.0", "::", ""):
        host = _bracket(address)
    return f"{host}:{port}"


def _libvirt_pki(paths: Paths, membership: Membership | None) -> Path | None:
    """A member's certificates in libvirt's and QEMU's layouts (written at join; made
    here for hosts that joined before zsd wrote them), for migrations over TLS."""
    if membership is None:
        return None
    cert, key, ca = tls_paths(paths)
    libvirtpki.export(cert=cert, key=key, ca=ca)
    return libvirtpki.libvirt_dir(cert.parent)


async def _identities(
    deps: DaemonDeps, paths: Paths
) -> tuple[HostIdentity, ClusterIdentity, Membership | None]:
    """This host's and its cluster's identities, and its membership (founding the
    cluster of one first when configured to)."""
    config, notify = deps.config, deps.notifier.notify
    host_ident = host_identity(paths.identity_file)
    membership = load_membership(paths)
    if membership is None and config.auto_init:
        notify("STATUS=founding the cluster of one")
        membership = await found_cluster_of_one(
            paths=paths,
            cluster_name=config.cluster_name,
            host_name=config.host_name,
            address=advertised(config.host_address),
            environ=deps.environ,
            make_authority=deps.make_authority,
            progress=lambda line: notify(f"STATUS={line}"),
        )
    if membership is None:
        return host_ident, cluster_identity(paths.cluster_file, default_name=config.cluster_name), None
    info = load_cluster_info(SharedLayout(root=Path(membership.shared_dir)))
    cluster_ident = ClusterIdentity(uid=info.uid, name=info.name, created=info.created)
    return replace(host_ident, host_id=membership.host_id), cluster_ident, membership


def _vm_leases(config: Config, membership: Membership | None) -> VmLeases | None:
    """HA VMs' leases, when this host's libvirtd holds them (hypervisor.vm_leases)."""
    if membership is None or not config.hypervisor.vm_leases:
        return None
    info = load_cluster_info(SharedLayout(root=Path(membership.shared_dir)))
    lease = LeaseConfig(shared_dir=Path(membership.shared_dir), lockspace=info.lockspace)
    return VmLeases(
        lockspace=info.lockspace,
        directory=lease.lease_dir / "vms",
        writer=LibSanlock(),
        max_hosts=lease.max_hosts,
    )


class _Lifecycle:
    """Signals, from the first moment: SIGTERM during start-up abandons it at once
    (nothing is in flight yet); once ready it starts the drain. SIGHUP reloads."""

    def __init__(self, *, deps: DaemonDeps, config: Config, startup: trio.CancelScope) -> None:
        self._deps = deps
        self._config = config
        self._startup: trio.CancelScope | None = startup
        self._inventory: Inventory | None = None
        self._status = ""
        self.stopping = trio.Event()

    def removed(self, paths: Paths, plane: ControlPlane) -> None:
        """The cluster removed this host: release its host id, keep the membership
        file for the record (renamed), and stop; started again, zsd runs as a
        cluster of one."""
        plane.leaving.set()
        path = membership_path(paths)
        with contextlib.suppress(FileNotFoundError):
            path.rename(path.with_name(f"{path.name}.removed-{int(time.time())}"))
        log.warning("removed from the cluster: stopping (membership kept as %s.removed-*)", path)
        self.stopping.set()

    def ready(self, *, inventory: Inventory, status: str) -> None:
        self._startup = None
        self._inventory = inventory
        self._status = status

    async def handle_signals(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            if signum in (signal.SIGTERM, signal.SIGINT):
                log.info("received %s", signal.Signals(signum).name)
                if self._startup is not None:
                    log.info("stopping during start-up")
                    self._deps.notifier.notify("STOPPING=1\nSTATUS=stopping during start-up")
                    self._startup.cancel()
                self.stopping.set()
                return
            if self._inventory is None:
                log.warning("SIGHUP during start-up ignored: the configuration was read moments ago")
                continue
            self._deps.notifier.notify("RELOADING=1\nSTATUS=reloading configuration")
            self._config = _reload(self._deps, self._config, self._inventory)
            self._deps.notifier.notify(f"READY=1\nSTATUS={self._status}")


def _tune_gc() -> None:
    """Everything built at start-up lives as long as the process: freeze it out of
    the collector's sight, and collect the young generation less often. Each RPC
    allocates hundreds of short-lived objects; with the defaults the collector ran
    every few calls over the whole start-up heap (measured: GetHost throughput
    +25 % over the Unix socket, see tests/bench/api_bench.py)."""
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(10_000, gen1, gen2)


def _reload(deps: DaemonDeps, old: Config, inventory: Inventory) -> Config:
    try:
        new = deps.reload()
    except ConfigError as e:
        log.error("configuration reload failed, keeping the running configuration: %s", e)  # noqa: TRY400
        return old
    logging.getLogger().setLevel(new.log_level.upper())
    inventory.interval = new.facts_interval
    live = {"log_level", "facts_interval", "source"}
    restart = [k for k in vars(old) if k not in live and getattr(old, k) != getattr(new, k)]
    if restart:
        log.warning(
            "configuration reloaded; these changes take effect after a restart: %s", ", ".join(restart)
        )
    else:
        log.info("configuration reloaded")
    return new


async def _watchdog(bridge: Bridge, notifier: Notifier, interval: float) -> None:
    """Pings systemd only while both event loops (trio and the API's asyncio) respond."""

    async def pong() -> bool:
        return True

    while True:
        with trio.move_on_after(interval):
            if await bridge.to_asyncio.run(pong()):
                notifier.notify("WATCHDOG=1")
        await trio.sleep(interval)

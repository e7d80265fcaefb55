"""The leader's writes of switches and port groups: each checked against what the
cluster state holds (names taken, segment ids, the switch a port group belongs to,
users of what is deleted) and committed in one transaction, one at a time, so two
concurrent creates can never take the same VLAN id or VNI. A retry with the same
request id returns the first answer."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import trio

from zsd.cluster.control import ClusterControl
from zsd.cluster.hostctl import fingerprint
from zsd.cluster.store import Create, Delete, Update
from zsd.compute.records import KIND_VM, VmRecord
from zsd.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from zsd.network import nics, records, secrecords
from zsd.network.model import PortGroup, Switch, validate_port_group, validate_switch
from zsd.network.nics import KIND_NIC, NicRecord, allocate_addresses, allocate_mac
from zsd.network.records import KIND_PORT_GROUP, KIND_SWITCH
from zsd.network.secgroups.group import SecurityGroup, new_group
from zsd.network.secgroups.rules import RuleSpec
from zsd.network.secrecords import KIND_SECGROUP, GroupRecord
from zsd.storage import validate as names

Users = Callable[[PortGroup], list[str]]
"""Users of a port group besides its NICs, by name: a port group in use stays."""


def _no_users(_pg: PortGroup) -> list[str]:
    return []


class NetworkCatalog:
    def __init__(
        self,
        control: ClusterControl,
        *,
        users: Users = _no_users,
        clock: Callable[[], float] = time.time,
        new_mac: Callable[[set[str]], str] = lambda taken: allocate_mac("", taken),
    ) -> None:
        self._control = control
        self._users = users
        self._clock = clock
        self._new_mac = new_mac
        self._lock = trio.Lock()

    # -- reads (this host's copy) ---------------------------------------------------

    @property
    def revision(self) -> int:
        """This host's copy's revision: after a write here (the leader waits for its own
        copy to hold it), at least the write's, so a forwarding host can wait for it."""
        return self._control.revision

    def switches(self) -> list[Switch]:
        return records.switches(self._control.replica.cache.list(KIND_SWITCH))

    def port_groups(self, switch: str | None = None) -> list[PortGroup]:
        groups = records.port_groups(self._control.replica.cache.list(KIND_PORT_GROUP))
        return [g for g in groups if switch is None or g.switch == switch]

    def switch(self, name: str) -> Switch:
        stored = self._control.replica.cache.get(KIND_SWITCH, name)
        if stored is None:
            raise NotFound(
                f"switch 'switches/{name}' does not exist", field="name", reason="SWITCH_NOT_FOUND"
            )
        return records.decode_switch(stored.data)

    def port_group(self, switch: str, name: str) -> PortGroup:
        stored = self._control.replica.cache.get(KIND_PORT_GROUP, f"{switch}/{name}")
        if stored is None:
            raise NotFound(
                f"port group 'switches/{switch}/portGroups/{name}' does not exist",
                field="name",
                reason="PORT_GROUP_NOT_FOUND",
            )
        return records.decode_port_group(stored.data)

    # -- writes (leader) ------------------------------------------------------------

    async def create_switch(self, switch: Switch, *, request_id: str) -> tuple[Switch, int]:
        validate_switch(switch)
        store = self._control.store()
        fp = fingerprint("CreateSwitch", switch.name, records.encode_switch(switch))
        async with self._lock:
            replay = await store.replay(request_id, fingerprint=fp)
            if replay is not None:
                return self.switch(switch.name), replay.revision
            if self._control.replica.cache.get(KIND_SWITCH, switch.name) is not None:
                raise AlreadyExists(f"switch 'switches/{switch.name}' already exists", field="switch_id")
            switch = replace(switch, create_time=self._clock())
            result = await store.commit(
                [Create(kind=KIND_SWITCH, name=switch.name, data=records.encode_switch(switch))],
                request_id=request_id,
                fingerprint=fp,
            )
            await self._control.wait_revision(result.revision, 5.0)
            return switch, result.revision

    async def delete_switch(self, name: str, *, request_id: str) -> int:
        store = self._control.store()
        fp = fingerprint("DeleteSwitch", name)
        async with self._lock:
            replay = await store.replay(request_id, fingerprint=fp)
            if replay is not None:
                return replay.revision
            self.switch(name)
            groups = self.port_groups(name)
            if groups:
                listed = ", ".join(f"switches/{name}/portGroups/{g.name}" for g in groups)
                raise FailedPrecondition(
                    f"switch 'switches/{name}' still has port groups: {listed}",
                    field="name",
                    reason="SWITCH_IN_USE",
                )
            result = await store.commit(
                [Delete(kind=KIND_SWITCH, name=name)], request_id=request_id, fingerprint=fp
            )
            await self._control.wait_revision(result.revision, 5.0)
            return result.revision

    async def create_port_group(self, pg: PortGroup, *, request_id: str) -> tuple[PortGroup, int]:
        store = self._control.store()
        fp = fingerprint("CreatePortGroup", pg.key, records.encode_port_group(pg))
        async with self._lock:
            replay = await store.replay(request_id, fingerprint=fp)
            if replay is not None:
                return self.port_group(pg.switch, pg.name), replay.revision
            try:
                switch = self.switch(pg.switch)
            except NotFound as e:
                raise NotFound(e.message, field="parent", reason="SWITCH_NOT_FOUND") from None
            validate_port_group(pg, switch)
            if self._control.replica.cache.get(KIND_PORT_GROUP, pg.key) is not None:
                raise AlreadyExists(
                    f"port group 'switches/{pg.switch}/portGroups/{pg.name}' already exists",
                    field="port_group_id",
                )
            self._check_segment(pg, switch)
            pg = replace(pg, create_time=self._clock())
            result = await store.commit(
                [Create(kind=KIND_PORT_GROUP, name=pg.key, data=records.encode_port_group(pg))],
                request_id=request_id,
                fingerprint=fp,
            )
            await self._control.wait_revision(result.revision, 5.0)
            return pg, result.revision

    def _check_segment(self, pg: PortGroup, switch: Switch) -> None:
        """A VLAN id is one switch's (or one uplink's: two switches on one NIC share its
        tags); a VNI is the cluster's (the kernel keys VXLAN devices by it)."""
        by_name = {s.name: s for s in self.switches()}
        for other in self.port_groups():
            owner = by_name.get(other.switch)
            if owner is None or owner.kind != switch.kind:
                continue
            if switch.kind == "vxlan" and other.vni == pg.vni:
                taken_by, what, field_ = other, f"VNI {pg.vni}", "port_group.vni"
            elif (
                switch.kind == "vlan"
                and other.vlan_id == pg.vlan_id
                and (owner.name == switch.name or owner.uplink == switch.uplink)
            ):
                taken_by, what, field_ = (
                    other,
                    f"VLAN {pg.vlan_id} on uplink {switch.uplink}",
                    "port_group.vlan_id",
                )
            else:
                continue
            raise AlreadyExists(
                f"{what} is taken by port group 'switches/{taken_by.switch}/portGroups/{taken_by.name}'",
                field=field_,
                reason="SEGMENT_TAKEN",
            )

    async def delete_port_group(self, switch: str, name: str, *, request_id: str) -> int:
        store = self._control.store()
        fp = fingerprint("DeletePortGroup", f"{switch}/{name}")
        async with self._lock:
            replay = await store.replay(request_id, fingerprint=fp)
            if replay is not None:
                return replay.revision
            pg = self.port_group(switch, name)
            users = [f"nics/{n.name}" for n in self.nics() if n.port_group == pg.key] + self._users(pg)
            if users:
                listed = ", ".join(sorted(users))
                raise FailedPrecondition(
                    f"port group 'switches/{switch}/portGroups/{name}' is in use by {listed}",
                    field="name",
                    reason="PORT_GROUP_IN_USE",
                )
            result = await store.commit(
                [Delete(kind=KIND_PORT_GROUP, name=pg.key)], request_id=request_id, fingerprint=fp
            )
            await self._control.wait_revision(result.revision, 5.0)
            return result.revision

    # -- NICs -------------------------------------------------------------------------

    def nics(self) -> list[NicRecord]:
        return nics.decode_all(self._control.replica.cache.list(KIND_NIC))

    def nic(self, name: str) -> NicRecord:
        stored = self._control.replica.cache.get(KIND_NIC, name)
        if stored is None:
            raise NotFound(f"NIC 'nics/{name}' does not exist", field="name", reason="NIC_NOT_FOUND")
        return NicRecord.decode(stored.data)

    def nic_users(self) -> dict[str, VmRecord]:
        """NIC name -> the VM record listing it."""
        vms = (VmRecord.decode(r.data) for r in self._control.replica.cache.list(KIND_VM))
        return {nic: vm for vm in vms for nic in vm.nics}

    async def create_nic(
        self, record: NicRecord, *, ip_addresses: Sequence[str], request_id: str
    ) -> tuple[NicRecord, int]:
        """Allocates the MAC (unless ``record.mac``) and the addresses (``ip_addresses``
        checked, the rest chosen) against every other NIC, then commits."""
        store = self._control.store()
        fp = fingerprint("CreateNic", record.name, record.encode(), ",".join(ip_addresses).encode())
        async with self._lock:
            replay = await store.replay(request_id, fingerprint=fp)
            if replay is not None:
                return self.nic(record.name), replay.revision
            names.name(record.name, field="nic_id")
            if self._control.replica.cache.get(KIND_NIC, record.name) is not None:
                raise AlreadyExists(f"NIC 'nics/{record.name}' already exists", field="nic_id")
            switch, _, group = record.port_group.partition("/")
            try:
                pg = self.port_group(switch, group)
            except NotFound as e:
                raise NotFound(e.message, field="nic.port_group", reason="PORT_GROUP_NOT_FOUND") from None
            others = self.nics()
            macs = {n.mac for n in others}
            mac = allocate_mac(record.mac, macs) if record.mac else self._new_mac(macs)
            taken = {a: f"nics/{n.name}" for n in others if n.port_group == pg.key for a in n.addresses}
            addresses = allocate_addresses(pg, ip_addresses, taken)
            record = replace(record, mac=mac, addresses=addresses, create_time=self._clock())
            result = await store.commit(
                [Create(kind=KIND_NIC, name=record.name, data=record.encode())],
                request_id=request_id,
                fingerprint=fp,
            )
            await self._control.wait_revision(result.revision, 5.0)
            return record, result.revision

    async def delete_nic(self, name: str, *, request_id: str) -> int:
        store = self._control.store()
        fp = fingerprint("DeleteNic", name)
        async with self._lock:
            replay = await store.replay(request_id, fingerprint=fp)
            if replay is not None:
                return replay.revision
            self.nic(name)
            user = self.nic_users().get(name)
            if user is not None:
                raise FailedPrecondition(
                    f"NIC 'nics/{name}' is in use by VM 'vms/{user.name}' (on {user.host})",
                    field="name",
                    reason="NIC_IN_USE",
                )
            result = await store.commit(
                [Delete(kind=KIND_NIC, name=name)], request_id=request_id, fingerprint=fp
            )
            await self._control.wait_revision(result.revision, 5.0)
            return result.revision

    # -- security groups ----------------------------------------------------------------

    def security_groups(self) -> list[GroupRecord]:
        return secrecords.decode_all(self._control.replica.cache.list(KIND_SECGROUP))

    def security_group(self, name: str) -> GroupRecord:
        stored = self._control.replica.cache.get(KIND_SECGROUP, name)
        if stored is None:
            raise NotFound(
                f"security group 'securityGroups/{name}' does not exist",
                field="name",
                reason="SECURITY_GROUP_NOT_FOUND",
            )
        return GroupRecord.decode(stored.data)

    def _group_names(self) -> set[str]:
        return {r.name for r in self._control.replica.cache.list(KIND_SECGROUP)}

    async def _commit_group(self, record: GroupRecord, *, create: bool, request_id: str, fp: bytes) -> int:
        store = self._control.store()
        data = record.encode()
        mutation: Create | Update = (
            Create(kind=KIND_SECGROUP, name=record.group.name, data=data)
            if create
            else Update(kind=KIND_SECGROUP, name=record.group.name, data=data)
        )
        result = await store.commit([mutation], request_id=request_id, fingerprint=fp)
        await self._control.wait_revision(result.revision, 5.0)
        return result.revision

    async def create_security_group(
        self, name: str, specs: Sequence[RuleSpec], *, allow_members: bool, description: str, request_id: str
    ) -> GroupRecord:
        fp = fingerprint("CreateSecurityGroup", name, repr((specs, allow_members, description)).encode())
        async with self._lock:
            if await self._control.store().replay(request_id, fingerprint=fp) is not None:
                return self.security_group(name)
            if name in self._group_names():
                raise AlreadyExists(
                    f"security group 'securityGroups/{name}' already exists", field="security_group_id"
                )
            group = new_group(
                name,
                specs,
                known_groups=self._group_names(),
                allow_members=allow_members,
                description=description,
            )
            record = GroupRecord(group=group, create_time=self._clock())
            await self._commit_group(record, create=True, request_id=request_id, fp=fp)
            return record

    async def change_security_group(
        self,
        name: str,
        change: Callable[[SecurityGroup, set[str]], SecurityGroup],
        *,
        what: str,
        request_id: str,
    ) -> GroupRecord:
        """``change(group, known group names)`` -> the new group (the group's own
        checks raise on a bad change), committed; a retry returns the group as it is."""
        fp = fingerprint(what, name, request_id.encode())
        async with self._lock:
            if await self._control.store().replay(request_id, fingerprint=fp) is not None:
                return self.security_group(name)
            current = self.security_group(name)
            record = replace(current, group=change(current.group, self._group_names()))
            await self._commit_group(record, create=False, request_id=request_id, fp=fp)
            return record

    async def delete_security_group(self, name: str, *, request_id: str) -> int:
        store = self._control.store()
        fp = fingerprint("DeleteSecurityGroup", name)
        async with self._lock:
            replay = await store.replay(request_id, fingerprint=fp)
            if replay is not None:
                return replay.revision
            self.security_group(name)
            users = [f"nics/{n.name}" for n in self.nics() if name in n.security_groups]
            users += [
                f"securityGroups/{g.group.name}"
                for g in self.security_groups()
                if g.group.name != name and name in g.group.remote_groups()
            ]
            if users:
                raise FailedPrecondition(
                    f"security group 'securityGroups/{name}' is in use by {', '.join(sorted(users))}",
                    field="name",
                    reason="SECURITY_GROUP_IN_USE",
                )
            result = await store.commit(
                [Delete(kind=KIND_SECGROUP, name=name)], request_id=request_id, fingerprint=fp
            )
            await self._control.wait_revision(result.revision, 5.0)
            return result.revision

    async def update_nic(
        self,
        name: str,
        *,
        security_groups: Sequence[str] | None = None,
        ingress_default: str | None = None,
        egress_default: str | None = None,
        description: str | None = None,
        request_id: str,
    ) -> NicRecord:
        store = self._control.store()
        fp = fingerprint(
            "UpdateNic", name, repr((security_groups, ingress_default, egress_default, description)).encode()
        )
        async with self._lock:
            if await store.replay(request_id, fingerprint=fp) is not None:
                return self.nic(name)
            record = self.nic(name)
            if security_groups is not None:
                known = self._group_names()
                for i, group in enumerate(security_groups):
                    if group not in known:
                        raise NotFound(
                            f"security group 'securityGroups/{group}' does not exist",
                            field=f"nic.security_groups[{i}]",
                            reason="SECURITY_GROUP_NOT_FOUND",
                        )
                    if group in security_groups[:i]:
                        raise InvalidArgument(
                            f"securityGroups/{group} is listed twice", field=f"nic.security_groups[{i}]"
                        )
                record = replace(record, security_groups=tuple(security_groups))
            for field_, value in (("ingress_default", ingress_default), ("egress_default", egress_default)):
                if value is not None and value not in ("allow", "deny"):
                    raise InvalidArgument(f"{value!r} is not allow or deny", field=f"nic.{field_}")
            record = replace(
                record,
                ingress_default=ingress_default or record.ingress_default,
                egress_default=egress_default or record.egress_default,
            )
            if description is not None:
                record = replace(record, description=description)
            result = await store.commit(
                [Update(kind=KIND_NIC, name=name, data=record.encode())],
                request_id=request_id,
                fingerprint=fp,
            )
            await self._control.wait_revision(result.revision, 5.0)
            return record

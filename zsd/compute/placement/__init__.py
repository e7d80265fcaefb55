"""The leader's VM placement engine: pure Python, no I/O, no libvirt.

The leader builds one ``Engine`` from the cluster state it already holds and asks it
where each new VM goes; the engine remembers every decision so the next one sees it.

- ``model``: the typed boundary (HostState, VmDemand, Placement, Overcommit, Decision);
- ``policies``: VM scheduling policies (vm-exclusive, vm-aggregate, host-affinity,
  host-exclusion; mandatory or preferred), their validation and the rule or
  preference each one imposes on a placement;
- ``ledger``: the mutable bookkeeping (free capacity per host, the group -> host ->
  count index, the PCI devices the VMs on each host hold), updated incrementally on
  every placement and release;
- ``filters``: why a host cannot take a VM, one reason per rejected host;
- ``weighers``: which of the hosts that fit wins (spread or pack, preferred policies
  first);
- ``engine``: the ``Engine`` tying them together (``place``, ``place_many``, ``release``).
"""

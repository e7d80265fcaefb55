"""Compute: VMs on libvirt/QEMU.

- ``spec``: what a VM is (VmSpec, DiskSpec, NicSpec) and its validation;
- ``domxml``: libvirt domain XML as frozen element objects (no policy);
- ``designer``: spec + host traits -> domain objects (all device policy lives here);
- ``metadata``: zsd's facts inside a domain's <metadata> (adoption after a restart);
- ``hypervisor``: the libvirt connection, event thread and error translation;
- ``runtime``: this host's domains (lifecycle, hot-plug, live QoS, console, display);
- ``hostvms``: VMs joined with their volumes (attach records, root clones, undo);
- ``setup``: the daemon's compute subsystem;
- ``placement``: the leader's placement engine (filters, weighers, scheduling policies);
- ``pci``: host PCI inventory and exclusive passthrough assignment.
"""

"""Stand-ins and a lab for the DHCP service's tests and benchmarks.

- ``fakes``: in-memory link, firewall and process drivers that follow the kernel's and
  dnsmasq's rules that matter to the manager (tested themselves);
- ``lab``: throwaway namespaces on this machine for real packets: simulated hosts with
  a bridge, "VMs" with a NIC on it, DHCP clients and DNS queries run inside them;
- ``dhcp6probe``: a small DHCPv6 and router-advertisement client (busybox has none),
  run inside a VM namespace as ``python -m zsd.network.dhcp.testing.dhcp6probe``.
"""

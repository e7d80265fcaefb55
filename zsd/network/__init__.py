"""Distributed switches, port groups, DHCP/DNS and security groups."""

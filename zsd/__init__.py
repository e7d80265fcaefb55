"""zsd: one daemon per KVM host; together the daemons are the cluster.

Layout (each subpackage has one job; dependencies are passed in):

- ``zsd.v1``       generated protobuf/gRPC code for the public API (never edited by hand)
- ``zsd.errors``   the one error vocabulary (categories + reason + field)
- ``zsd.config``   configuration: file, environment, flags -> one validated frozen object
- ``zsd.paths``    every filesystem path, with a root override for many hosts on one machine
- ``zsd.util``     small helpers with no zsd knowledge (trio<->asyncio bridge, systemd notify)
- ``zsd.host``     facts about this machine (CPU, memory, NUMA, disks, NICs, KVM usability)
- ``zsd.cluster``  cluster identity, membership and long-running operations
- ``zsd.api``      the gRPC server and thin servicers (decode -> core -> encode)
- ``zsd.daemon``   the process: root nursery, subsystems, signals, readiness, watchdog
- ``zsd.cli``      console scripts: ``zsd`` (daemon and host admin) and ``zsctl`` (thin client)

``zsctl`` imports only ``zsd.v1``, grpc and this module, so this file must stay import-light.
"""

__version__ = "0.1.0"

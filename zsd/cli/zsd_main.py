"""``zsd``: the daemon and host administration.

zsd run [--config FILE] [--root DIR] [--set section.key=value ...]
zsd config check [same options]       validate and print the effective configuration
zsd host probe-kvm [--device PATH]    does hardware virtualization really work here?
zsd cluster init --shared-dir DIR     make an empty shared directory into a new cluster
zsd cluster join --shared-dir DIR --token T [--timeout S]
                                      make this host a member of the cluster there
zsd cluster client-cert --shared-dir DIR --name N --out DIR
                                      an operator's client certificate for zsctl over TCP
zsd version
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

import zsd
from zsd import config as config_mod
from zsd.errors import ZsdError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zsd", description="zsd host daemon and administration")
    sub = parser.add_subparsers(dest="command", required=True)

    def config_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", type=Path, help="configuration file (default: <root>/etc/zsd/zsd.toml)")
        p.add_argument(
            "--root",
            type=Path,
            default=Path("/"),
            help="prefix for every path zsd owns (several hosts on one machine)",
        )
        p.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="SECTION.KEY=VALUE",
            help="override one configuration key (repeatable; wins over file and environment)",
        )

    config_options(sub.add_parser("run", help="run the daemon in the foreground"))
    cfg = sub.add_parser("config", help="configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    config_options(cfg_sub.add_parser("check", help="validate and print the effective configuration"))
    host = sub.add_parser("host", help="host tools")
    host_sub = host.add_subparsers(dest="host_command", required=True)
    probe = host_sub.add_parser("probe-kvm", help="run a tiny guest under KVM; exit 0 if KVM is usable")
    probe.add_argument("--device", type=Path, default=Path("/dev/kvm"))
    probe.add_argument("--timeout", type=float, default=3.0)
    cluster = sub.add_parser("cluster", help="cluster membership")
    cluster_sub = cluster.add_subparsers(dest="cluster_command", required=True)
    init = cluster_sub.add_parser(
        "init", help="make an empty directory on shared storage into a new cluster with this host"
    )
    config_options(init)
    init.add_argument("--shared-dir", type=Path, required=True, help="empty directory on shared storage")
    init.add_argument(
        "--io-timeout",
        type=int,
        default=10,
        metavar="SECONDS",
        help="sanlock io timeout of the cluster lockspace (default 10; hosts are declared "
        "dead after 8x this + 60 s)",
    )
    join = cluster_sub.add_parser(
        "join", help="make this host a member of the cluster on shared storage (a leader must be running)"
    )
    config_options(join)
    join.add_argument(
        "--shared-dir", type=Path, required=True, help="the cluster's directory on shared storage"
    )
    join.add_argument("--token", required=True, help="a join token (printed by `zsd cluster init`)")
    join.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to keep asking while no leader answers (default 60)",
    )
    client = cluster_sub.add_parser(
        "client-cert", help="issue a client certificate for zsctl (TCP API) from the cluster CA"
    )
    client.add_argument(
        "--shared-dir", type=Path, required=True, help="the cluster's directory on shared storage"
    )
    client.add_argument("--name", required=True, help="who the certificate is for (e.g. alice, ci)")
    client.add_argument(
        "--out", type=Path, required=True, help="directory for client.pem, client.key, ca.pem"
    )
    sub.add_parser("version", help="print the zsd version")
    return parser


def _load(ns: argparse.Namespace) -> config_mod.Config:
    return config_mod.load(root=ns.root, config_file=ns.config, overrides=ns.overrides)


def _run(ns: argparse.Namespace) -> int:
    from zsd.daemon import DaemonDeps, serve
    from zsd.host.facts import default_collector
    from zsd.paths import Paths
    from zsd.util.notify import SystemdNotifier

    config = _load(ns)
    logging.basicConfig(
        level=config.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    _quiet_libvirt()
    paths = Paths(root=config.root)
    deps = DaemonDeps(
        config=config,
        notifier=SystemdNotifier(),
        collector=default_collector(
            sysfs=paths.sysfs,
            procfs=paths.procfs,
            libvirt_uri=config.hypervisor.libvirt_uri,
            hypervisor=config.hypervisor.kind,
            probe_timeout=config.hypervisor.probe_timeout,
        ),
        reload=lambda: _load(ns),
        environ=dict(os.environ),
    )
    trio.run(serve, deps)
    return 0


def _cluster_init(ns: argparse.Namespace) -> int:
    from zsd.cluster.bootstrap import init_cluster
    from zsd.cluster.controlplane import sanlock_authority
    from zsd.cluster.lease import LeaseConfig
    from zsd.paths import Paths
    from zsd.util.netaddr import advertised

    config = _load(ns)
    lease = LeaseConfig(shared_dir=ns.shared_dir.resolve(), io_timeout=ns.io_timeout)

    async def init() -> str:
        authority = sanlock_authority(lease)
        try:
            result = await init_cluster(
                authority=authority,
                paths=Paths(root=config.root),
                name=config.cluster_name,
                host_name=config.host_name,
                address=advertised(config.host_address),
                progress=lambda line: print(line, file=sys.stderr),
            )
        finally:
            await authority.aclose()
        return result.token

    token = trio.run(init)
    print(f"cluster created in {ns.shared_dir}; start zsd on this host to lead it")
    print(f"join token: {token}")
    return 0


def _cluster_join(ns: argparse.Namespace) -> int:
    from zsd.cluster.join import JoinSpec, join_cluster
    from zsd.paths import Paths
    from zsd.util.netaddr import advertised

    config = _load(ns)
    result = join_cluster(
        JoinSpec(
            shared_dir=ns.shared_dir.resolve(),
            token=ns.token,
            host_name=config.host_name,
            address=advertised(config.host_address),
            timeout=ns.timeout,
        ),
        paths=Paths(root=config.root),
        progress=lambda line: print(line, file=sys.stderr),
    )
    print(
        f"joined cluster {result.cluster_name!r} as host {result.host_id} (admitted by {result.leader}); "
        "start zsd on this host"
    )
    print(f"host id: {result.host_id}")
    return 0


def _cluster_client_cert(ns: argparse.Namespace) -> int:
    from zsd.cluster import pki
    from zsd.cluster.bootstrap import SharedLayout, load_ca
    from zsd.errors import AlreadyExists
    from zsd.util.fsutil import write_atomic

    files = {"client.pem": 0o644, "client.key": 0o600, "ca.pem": 0o644}
    existing = [name for name in files if (ns.out / name).exists()]
    if existing:
        raise AlreadyExists(
            f"{ns.out} already holds {', '.join(existing)}; remove them or choose another --out", field="out"
        )
    ca = load_ca(SharedLayout(root=ns.shared_dir.resolve()))
    pair = pki.issue_client_cert(ca, ns.name)
    for name, data in zip(files, (pair.cert_pem, pair.key_pem, ca.cert_pem), strict=True):
        write_atomic(ns.out / name, data, mode=files[name])
    print(f"client certificate for {ns.name!r} in {ns.out} (client.pem, client.key, ca.pem)")
    return 0


def _quiet_libvirt() -> None:
    """libvirt's default handler prints every error to stderr; zsd turns them into
    exceptions and logs them itself, so the duplicate output is dropped."""
    try:
        import libvirt
    except ImportError:
        return
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def _probe(ns: argparse.Namespace) -> int:
    from zsd.host.kvmprobe import probe_kvm

    result = probe_kvm(device=ns.device, timeout=ns.timeout)
    print(("usable: " if result.usable else "not usable: ") + result.reason)
    return 0 if result.usable else 1


def _first_zsd_error(e: BaseException) -> ZsdError | None:
    if isinstance(e, ZsdError):
        return e
    if isinstance(e, BaseExceptionGroup):
        for inner in e.exceptions:
            found = _first_zsd_error(inner)
            if found is not None:
                return found
    return None


def main(argv: Sequence[str] | None = None) -> int:
    ns = _parser().parse_args(argv)
    try:
        if ns.command == "run":
            return _run(ns)
        if ns.command == "config":
            cfg = _load(ns)
            print(json.dumps(dataclasses.asdict(cfg), indent=2, default=str))
            return 0
        if ns.command == "host":
            return _probe(ns)
        if ns.command == "cluster":
            commands = {"init": _cluster_init, "join": _cluster_join, "client-cert": _cluster_client_cert}
            return commands[ns.cluster_command](ns)
        print(zsd.__version__)
        return 0
    except (ZsdError, BaseExceptionGroup) as e:
        err = _first_zsd_error(e)
        if err is None:
            raise
        print(f"zsd: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""``contrib/devcluster``: the dev cluster's command line (see zsd.testing.devcluster).

    devcluster up N [--state-dir DIR] [--prefix P] [--set KEY=VALUE ...] [--timeout S] [--io-timeout S]
    devcluster status [--state-dir DIR]      exit 0 when every host is fine, else 1
    devcluster down [--state-dir DIR] [--prefix P]

``up`` prints the cluster as JSON on stdout (also in ``<state>/devcluster.json``);
progress and errors go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from zsd.testing.devcluster import DEFAULT_PREFIX, DEFAULT_STATE_DIR, IO_TIMEOUT, DevCluster, DevClusterError
from zsd.testing.devhosts import MAX_HOSTS, ClusterState


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state-dir", type=Path, default=DEFAULT_STATE_DIR, help=f"default {DEFAULT_STATE_DIR}"
    )
    parser = argparse.ArgumentParser(
        prog="devcluster", description="N simulated zsd hosts on this machine (network namespaces)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", parents=[common], help="start N hosts; prints their endpoints as JSON")
    up.add_argument("n", type=int, metavar="N", help=f"number of hosts, 1..{MAX_HOSTS}")
    up.add_argument(
        "--prefix", default=DEFAULT_PREFIX, help=f"namespace name prefix (default {DEFAULT_PREFIX})"
    )
    up.add_argument(
        "--set",
        dest="zsd_set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra `zsd run --set` for every host (e.g. log.level=debug)",
    )
    up.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for every zsd to be ready")
    up.add_argument(
        "--io-timeout",
        type=int,
        default=IO_TIMEOUT,
        help=f"sanlock io timeout of the cluster lockspace (default {IO_TIMEOUT})",
    )
    down = sub.add_parser("down", parents=[common], help="stop everything and remove the namespaces")
    down.add_argument(
        "--prefix", default=None, help="namespace prefix when the state dir has no record (default: recorded)"
    )
    sub.add_parser("status", parents=[common], help="liveness and health of each host, as JSON")
    return parser


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    # SIGTERM/SIGHUP during `up` must still run its cleanup.
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="devcluster: %(message)s", stream=sys.stderr)
    try:
        if args.command == "up":
            for sig in (signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, _raise_exit)
            cluster = DevCluster(
                state_dir=args.state_dir,
                prefix=args.prefix,
                zsd_set=args.zsd_set,
                ready_timeout=args.timeout,
                io_timeout=args.io_timeout,
            )
            print(json.dumps(cluster.up(args.n), indent=2))
            return 0
        if args.command == "down":
            if ClusterState.load(args.state_dir.absolute()) is not None:
                cluster = DevCluster.attach(args.state_dir)
            else:
                cluster = DevCluster(state_dir=args.state_dir, prefix=args.prefix or DEFAULT_PREFIX)
            cluster.down()
            return 0
        cluster = DevCluster.attach(args.state_dir)
        statuses = cluster.status()
        ok = cluster.phase == "up" and all(s.ok for s in statuses)
        doc = {"phase": cluster.phase, "ok": ok, "hosts": [s.to_json() for s in statuses]}
        print(json.dumps(doc, indent=2))
        return 0 if ok else 1
    except DevClusterError as e:
        print(f"devcluster: error: {e}", file=sys.stderr)
        return 1


def run() -> None:
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)  # Ctrl-C: `up` has already removed what it started

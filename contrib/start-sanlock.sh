#!/usr/bin/env bash
# Makes sure a sanlock daemon answers on /run/sanlock (what zsd's cluster of one,
# founded on first start, holds its leases with). Under systemd this is
# `systemctl start sanlock`. Without systemd as PID 1 (containers, CI) it starts
# `sanlock daemon` by hand through zsd's launcher, which also works without
# CAP_SYS_RESOURCE (see zsd/cluster/lease/daemon.py); it keeps running after
# this script, like a service would.
set -euo pipefail
cd "$(dirname "$0")/.."

answers() {
  .venv/bin/python - <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect("/run/sanlock/sanlock.sock")
except OSError:
    sys.exit(1)
PY
}

if answers; then
  exit 0
fi
if [ -d /run/systemd/system ]; then
  systemctl start sanlock.service
  exit 0
fi
.venv/bin/python - <<'PY'
from pathlib import Path
from zsd.cluster.lease.daemon import SanlockDaemon

daemon = SanlockDaemon(run_dir=Path("/run/sanlock"), shim_cache=Path("/var/cache/zsd"))
daemon.start()
print(f"start-sanlock: sanlock daemon running (pid {daemon.pid}, log {daemon.log_path})")
PY

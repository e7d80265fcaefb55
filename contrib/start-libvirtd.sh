#!/usr/bin/env bash
# Makes sure libvirtd answers on qemu:///system. Under systemd this is just
# `systemctl start`. Without systemd as PID 1 (containers, CI) it starts virtlogd
# and libvirtd by hand; when /dev/kvm exists but cannot run guests (zsd's KVM probe
# says so), libvirtd runs in a private mount namespace with /dev/kvm masked, or it
# would re-probe QEMU for ~40 s on every domain start.
set -euo pipefail
cd "$(dirname "$0")/.."

if virsh -c qemu:///system version >/dev/null 2>&1; then
  exit 0
fi
if [ -d /run/systemd/system ]; then
  systemctl start virtlogd.socket libvirtd.service
  exit 0
fi
mkdir -p /var/log/libvirt /run/libvirt
pgrep -x virtlogd >/dev/null || virtlogd -d
if [ -e /dev/kvm ] && ! .venv/bin/zsd host probe-kvm >/dev/null 2>&1; then
  unshare -m --propagation private sh -c 'mount --bind /dev/null /dev/kvm && exec libvirtd -d'
else
  libvirtd -d
fi
for _ in $(seq 50); do
  virsh -c qemu:///system version >/dev/null 2>&1 && exit 0
  sleep 0.2
done
echo "start-libvirtd: libvirtd did not answer within 10 s" >&2
exit 1

#!/usr/bin/env bash
# Installs what zsd needs on a Debian 12 host (as root) and prepares .venv.
# Idempotent: a second run installs nothing and finishes in a second or two.
#   contrib/setup.sh            system packages + venv
#   contrib/setup.sh --libvirtd also make sure libvirtd answers (starts it if needed)
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  python3 python3-venv python3-libvirt python3-sanlock python3-nftables
  libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils sanlock
  libvirt-sanlock          # libvirt's sanlock lock manager: HA VMs' leases
  iproute2 nftables procps
  dnsmasq-base             # DHCP/DNS per port group, in its own namespace (zsd.network.dhcp)
  lvm2 lvm2-lockd          # shared-block pools (LVM volume groups with lvmlockd + sanlock)
  ovmf                     # UEFI guests (OVMF code and variable templates)
  libxml2-utils            # xmllint, which virt-xml-validate runs: golden domain XML checks
  gcc libc6-dev            # tests: the LD_PRELOAD shim that lets sanlock run without CAP_SYS_RESOURCE
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's interpreter, so the distribution's libvirt/sanlock/nftables bindings are importable.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import libvirt' 2>/dev/null; then
  rm -rf .venv
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
stamp=.venv/.zsd-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing Python packages into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
  touch "$stamp"
fi

if [ "${1:-}" = "--libvirtd" ]; then
  contrib/start-libvirtd.sh
fi

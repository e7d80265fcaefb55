#!/usr/bin/env bash
# Builds the Debian 12 package of zsd with plain dpkg-deb (no debhelper, no debian/ tree):
#
#   packaging/build-deb.sh [OUTDIR]       -> OUTDIR/zsd_<version>_<arch>.deb (default OUTDIR: dist/)
#
# The last line on stdout is the path of the package. Needs /usr/bin/python3 with venv
# (python3-venv), dpkg-deb, and pip access to PyPI or a local wheel cache. Does not need root.
#
# Environment:
#   SOURCE_DATE_EPOCH   timestamps in the package (default: the last git commit's time)
#   ZSD_DEB_MAINTAINER  the Maintainer field (default below)
#   ZSD_DEB_XZ_LEVEL    xz level 0-9 (default 6, as Debian; 1 is ~7x faster, ~13% larger)
#   ZSD_DEB_KEEP=1      keep the temporary build directory (its path is printed) for debugging
#
# What goes into the package:
#   /usr/lib/zsd/venv                   a private venv of Debian's python3 (--system-site-packages,
#                                        so python3-libvirt/-sanlock/-nftables are importable) holding
#                                        zsd and every PyPI dependency it has
#   /usr/bin/zsd, /usr/bin/zsctl        relative symlinks into the venv
#   /lib/systemd/system/zsd.service     systemd/zsd.service (ExecStart=/usr/bin/zsd run)
#   /etc/zsd/zsd.toml                   conffile: every key commented out with its default
#   /usr/share/bash-completion/completions/zsctl
#   /usr/share/doc/zsd/{copyright,changelog.gz}
#
# The working tree is never written to: the sources are copied into a temporary directory,
# the wheel is built there, and the directory is removed on exit.
set -euo pipefail
umask 022
export LC_ALL=C.UTF-8 TZ=UTC

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUTDIR=${1:-$REPO/dist}
PYTHON=/usr/bin/python3
VENV=/usr/lib/zsd/venv
MAINTAINER=${ZSD_DEB_MAINTAINER:-zsd maintainers <maintainers@zsd.dev>}

log() { echo "build-deb: [${SECONDS}s] $*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in dpkg-deb dpkg "$PYTHON"; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || die "$PYTHON has no venv/ensurepip (apt-get install python3-venv)"

# --- reproducible-ish: one timestamp for everything -----------------------------------------------
if [ -z "${SOURCE_DATE_EPOCH:-}" ] && git -C "$REPO" rev-parse --verify -q HEAD >/dev/null 2>&1; then
  SOURCE_DATE_EPOCH=$(git -C "$REPO" log -1 --format=%ct)
fi
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(date +%s)}
export PYTHONHASHSEED=0

# --- temporary build directory, removed on any exit -----------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/zsd-deb.XXXXXX")
cleanup() {
  if [ "${ZSD_DEB_KEEP:-}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
SRC=$WORK/src
ROOT=$WORK/root          # becomes / on the target machine
STAGE_VENV=$ROOT$VENV
mkdir -p "$SRC" "$WORK/wheels" "$ROOT/DEBIAN"

# --- version: PEP 440 from pyproject.toml -> Debian (pre-/dev-releases sort before the release) ---
PY_VERSION=$("$PYTHON" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
  "$REPO/pyproject.toml")
DEB_VERSION=$(sed -E 's/[.-]?(a|b|rc|dev)([0-9]*)/~\1\2/; s/[.-]?post([0-9]+)/+post\1/' <<<"$PY_VERSION")
ARCH=$(dpkg --print-architecture)
DEB_NAME=zsd_${DEB_VERSION}_${ARCH}.deb
log "zsd $PY_VERSION -> $DEB_NAME (SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH)"

# --- sources: the working tree as git sees it (tracked + untracked-but-not-ignored files, so
#     uncommitted edits are packaged), without .venv, .git, build/ or *.egg-info -------------------
if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  (cd "$REPO" && git ls-files -z --cached --others --exclude-standard) |
    while IFS= read -r -d '' f; do
      # files deleted in the working tree but still in the index are skipped
      if [ -e "$REPO/$f" ] || [ -L "$REPO/$f" ]; then printf '%s\0' "$f"; fi
    done |
    tar -C "$REPO" --null -T - -cf - | tar -C "$SRC" -xf -
else
  tar -C "$REPO" --exclude=.git --exclude=.venv --exclude=build --exclude=dist --exclude='*.egg-info' \
    --exclude=__pycache__ -cf - . | tar -C "$SRC" -xf -
fi

# --- the venv -------------------------------------------------------------------------------------
# A venv hard-codes its own path (script shebangs, bin/activate*, pyvenv.cfg). We create it in the
# staging root and then rewrite the staging prefix to the final path. Why not build it in place at
# /usr/lib/zsd/venv inside an `unshare -m` namespace? That needs root, a mount point on the host
# (/usr/lib/zsd must exist), and breaks in containers that forbid mounts; the rewrite works as any
# user anywhere. It is made safe by (1) installing with --no-compile and compiling the bytecode
# only after the rewrite, with the final path as the recorded file name (-d), (2) refreshing the
# hashes in pip's RECORD files, and (3) refusing to build if the staging path still occurs in any
# file of the package afterwards. With the same dependency versions and SOURCE_DATE_EPOCH, two
# builds give bit-identical packages.
log "creating the venv"
"$PYTHON" -m venv --system-site-packages --without-pip "$STAGE_VENV"
VPY=$STAGE_VENV/bin/python
# pip is a build tool, not part of the package: Debian's pip wheel (python3-pip-whl, which
# python3-venv depends on), unpacked in the build directory and run by the venv's interpreter,
# installs into the venv without installing itself there. (Run from inside the .whl it works too,
# but imports from the zip make it twice as slow.)
PIP_WHL=$(find /usr/share/python-wheels -name 'pip-*.whl' 2>/dev/null | sort -V | tail -n 1)
[ -n "$PIP_WHL" ] || die "no pip wheel in /usr/share/python-wheels (apt-get install python3-pip-whl)"
"$PYTHON" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$PIP_WHL" "$WORK/pip"
PIP=("$VPY" "$WORK/pip/pip" --disable-pip-version-check --no-input -q)

log "building the zsd wheel"
"${PIP[@]}" wheel --no-deps -w "$WORK/wheels" "$SRC" >&2
WHEEL=$(find "$WORK/wheels" -name 'zsd-*.whl' -print -quit)
[ -n "$WHEEL" ] || die "no zsd wheel was built"

log "installing zsd and its dependencies into the venv"
# --ignore-installed: every PyPI dependency goes into the venv even when a Debian package in
# /usr/lib/python3/dist-packages would satisfy it, so the package does not silently depend on
# python3-yaml & co. that its Depends does not list. Only the bindings Depends does list
# (libvirt, sanlock, nftables) come from the system.
"${PIP[@]}" install --no-compile --ignore-installed "$WHEEL" >&2
# direct_url.json records the temporary wheel path: meaningless on the target, and not reproducible.
for dist_info in "$STAGE_VENV"/lib/python3*/site-packages/zsd-*.dist-info; do
  rm -f "$dist_info/direct_url.json"
  sed -i '/\/direct_url\.json,/d' "$dist_info/RECORD"
done
find "$STAGE_VENV" -name __pycache__ -type d -prune -exec rm -rf {} +
# Some wheels mark plain modules executable; only ELF files and #! scripts keep the x bits.
find "$STAGE_VENV" -type f -perm /111 -print0 | while IFS= read -r -d '' f; do
  case $(head -c 4 "$f" | od -An -c | tr -d ' ') in
    177ELF | '#!'*) ;;
    *) chmod a-x "$f" ;;
  esac
done

# Rewrite the staging prefix in text files (script shebangs, activate scripts, pyvenv.cfg).
grep -rlIF -- "$STAGE_VENV" "$STAGE_VENV" | while IFS= read -r f; do
  sed -i "s|$STAGE_VENV|$VENV|g" "$f"
done
[ "$(head -c 2 "$STAGE_VENV/bin/zsd")" = '#!' ] || die "venv/bin/zsd is not a script"
# The RECORD files (pip's manifests) hold the hashes of the scripts as first written: refresh them.
"$VPY" - "$STAGE_VENV" <<'EOF'
import base64, csv, hashlib, io, sys
from pathlib import Path

for record in Path(sys.argv[1]).glob("lib/python3*/site-packages/*.dist-info/RECORD"):
    site = record.parent.parent
    rows = list(csv.reader(io.StringIO(record.read_text())))
    for row in rows:
        path = site / row[0]
        if len(row) == 3 and row[1] and path.is_file():
            data = path.read_bytes()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            row[1:] = [f"sha256={digest}", str(len(data))]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    record.write_text(out.getvalue())
EOF

# --- files generated by running the staged zsd ----------------------------------------------------
run_staged() { PYTHONDONTWRITEBYTECODE=1 "$VPY" "$@"; }

install -d "$ROOT/etc/zsd"
run_staged - >"$ROOT/etc/zsd/zsd.toml" <<'EOF'
"""Every key of zsd.config's schema, commented out (as "#key = value") under its section."""
import json

from zsd.config import _schema

EXAMPLE_HOST = "node1"  # host.name defaults to the machine's host name; shown as an example

print("""\
# /etc/zsd/zsd.toml: configuration of the zsd host daemon.
#
# Every key is shown commented out with its built-in default: uncomment a line to change it.
# ZSD_<SECTION>_<KEY> environment variables and `zsd run --set section.key=value` override this
# file. `zsd config check` validates it and prints the effective configuration. A reload
# (systemctl reload zsd) applies log.level and host.facts_interval at once, other keys on the
# next restart; an invalid file is rejected and the running configuration kept.""")


def toml(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a valid TOML basic string
    raise TypeError(f"no TOML form for {value!r}")


sections = {}
for key, spec in _schema(EXAMPLE_HOST).items():
    section, name = key.split(".", 1)
    sections.setdefault(section, []).append((name, spec))
for section, keys in sections.items():
    print(f"\n[{section}]")
    for name, spec in keys:
        print(f"# {spec.allowed}")
        if f"{section}.{name}" == "host.name":
            print("# default: this machine's short host name, e.g.")
        print(f"#{name} = {toml(spec.default)}")
EOF

install -d "$ROOT/usr/share/bash-completion/completions"
run_staged "$STAGE_VENV/bin/zsctl" completion bash >"$ROOT/usr/share/bash-completion/completions/zsctl"

# The dependencies bundled in the venv, with versions and licenses, for the copyright file.
BUNDLED=$(run_staged - <<'EOF'
import importlib.metadata as md
import sys

venv_site = [p for p in sys.path if p.startswith(sys.prefix) and p.endswith("site-packages")]
seen = set()
for dist in sorted(md.distributions(path=venv_site), key=lambda d: d.metadata["Name"].lower()):
    name = dist.metadata["Name"]
    if name.lower() in seen or name.lower() == "zsd":
        continue
    seen.add(name.lower())
    lic = dist.metadata.get("License-Expression") or ""
    if not lic:
        short = (dist.metadata.get("License") or "").strip()
        lic = short if short and "\n" not in short and len(short) < 60 else ""
    if not lic:
        lic = ", ".join(c.split(" :: ")[-1] for c in dist.metadata.get_all("Classifier") or []
                        if c.startswith("License ::")) or "see its .dist-info directory"
    print(f" {name} {dist.version}: {lic}")
EOF
)

# The oldest glibc the bundled extension modules allow: the highest manylinux_2_X wheel tag.
GLIBC_MIN=$(run_staged - <<'EOF'
import re, sys
from pathlib import Path

legacy = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
need = (2, 17)
for wheel in Path(sys.prefix).glob("lib/python3*/site-packages/*.dist-info/WHEEL"):
    for tag in re.findall(r"^Tag: \S+-(\S+)$", wheel.read_text(), re.M):
        for platform in tag.split("."):
            m = re.match(r"manylinux_(\d+)_(\d+)_", platform)
            found = (int(m[1]), int(m[2])) if m else legacy.get(platform.split("_")[0])
            need = max(need, found or need)
print(f"{need[0]}.{need[1]}")
EOF
)

# --- bytecode: compiled after the path rewrite, recorded under the final path, validated by the
#     source's hash (not its mtime) so the .pyc files are reproducible and stay valid --------------
log "compiling bytecode"
"$VPY" -m compileall -q -f -j0 --invalidation-mode checked-hash -d "$VENV/lib" "$STAGE_VENV/lib" >&2 ||
  log "warning: some files did not compile (see above); they run from source"

# --- the rest of the tree -------------------------------------------------------------------------
install -d "$ROOT/usr/bin" "$ROOT/lib/systemd/system" "$ROOT/usr/share/doc/zsd"
ln -s "../lib/zsd/venv/bin/zsd" "$ROOT/usr/bin/zsd"
ln -s "../lib/zsd/venv/bin/zsctl" "$ROOT/usr/bin/zsctl"
grep -qx 'ExecStart=/usr/bin/zsd run' "$SRC/systemd/zsd.service" ||
  die "systemd/zsd.service: expected ExecStart=/usr/bin/zsd run"
install -m 0644 "$SRC/systemd/zsd.service" "$ROOT/lib/systemd/system/zsd.service"

cat >"$ROOT/usr/share/doc/zsd/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: zsd

Files: *
Copyright: $(date -u -d "@$SOURCE_DATE_EPOCH" +%Y) the zsd developers
License: Apache-2.0

Files: usr/lib/zsd/venv/*
Copyright: their respective authors
License: various
 zsd's private virtual environment bundles these Python packages from PyPI; each
 keeps its full license text in its *.dist-info directory under
 /usr/lib/zsd/venv/lib/python3*/site-packages/:
$BUNDLED

License: Apache-2.0
 On Debian systems the full text of the Apache License, Version 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
EOF

GIT_REV=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
gzip -9n >"$ROOT/usr/share/doc/zsd/changelog.gz" <<EOF
zsd ($DEB_VERSION) unstable; urgency=medium

  * zsd $PY_VERSION, built from git commit $GIT_REV.

 -- $MAINTAINER  $(date -u -R -d "@$SOURCE_DATE_EPOCH")
EOF

# --- maintainer scripts (packaging/deb/) and conffiles --------------------------------------------
for script in postinst prerm postrm; do
  install -m 0755 "$SRC/packaging/deb/$script" "$ROOT/DEBIAN/$script"
done
echo /etc/zsd/zsd.toml >"$ROOT/DEBIAN/conffiles"

# Relative, so the tree has no absolute symlink out of it; the staged venv is unusable from here on
# (its python3 now points at $ROOT/usr/bin/python3).
ln -sfn ../../../../bin/python3 "$STAGE_VENV/bin/python3"

# --- no trace of the build directory may remain (text or binary) ----------------------------------
if leaks=$(grep -rlaF -- "$WORK" "$ROOT"); then
  die "the temporary build path $WORK occurs in: $leaks"
fi

# --- normalised permissions and timestamps, md5sums, control --------------------------------------
chmod -R u+rwX,go+rX,go-w "$ROOT"
find "$ROOT" -newermt "@$SOURCE_DATE_EPOCH" -print0 | xargs -0r touch -h -d "@$SOURCE_DATE_EPOCH"
(cd "$ROOT" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z |
  xargs -0r md5sum) >"$ROOT/DEBIAN/md5sums"

PY_MINOR=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
PY_NEXT=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1] + 1}")')
INSTALLED_SIZE=$(du -sk --apparent-size --exclude=DEBIAN "$ROOT" | cut -f1)
# The venv is bound to this Python minor version (lib/pythonX.Y, cpXY extension modules): hence
# the upper bound on python3.
cat >"$ROOT/DEBIAN/control" <<EOF
Package: zsd
Version: $DEB_VERSION
Architecture: $ARCH
Maintainer: $MAINTAINER
Installed-Size: $INSTALLED_SIZE
Depends: python3 (>= $PY_MINOR), python3 (<< $PY_NEXT), libc6 (>= $GLIBC_MIN), python3-libvirt, python3-sanlock, python3-nftables, libvirt-daemon-system, qemu-system-x86, qemu-utils, sanlock, nftables, iproute2
Section: admin
Priority: optional
Description: KVM virtualization cluster host daemon
 zsd turns KVM hosts into one virtualization cluster with no management node:
 every hypervisor host runs the zsd daemon, and together the daemons are the
 cluster. Any host serves the gRPC API; zsctl is its command-line client.
 .
 zsd and its Python dependencies from PyPI live in a private virtual
 environment under /usr/lib/zsd/venv; the libvirt, sanlock and nftables
 bindings come from Debian.
EOF
touch -d "@$SOURCE_DATE_EPOCH" "$ROOT"/DEBIAN/*

log "building $DEB_NAME"
dpkg-deb --root-owner-group -Zxz -z"${ZSD_DEB_XZ_LEVEL:-6}" --build "$ROOT" "$WORK/$DEB_NAME" >&2
mkdir -p "$OUTDIR"
cp "$WORK/$DEB_NAME" "$OUTDIR/.$DEB_NAME.tmp"
mv -f "$OUTDIR/.$DEB_NAME.tmp" "$OUTDIR/$DEB_NAME"
echo "$(cd "$OUTDIR" && pwd)/$DEB_NAME"

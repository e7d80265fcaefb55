"""Storage: pools, images, volumes and snapshots.

Layout:
- ``qemuimg``: the one place qemu-img is run (info, create, convert with progress, commit, rebase).
- ``fetch``: streaming an image from an http(s) URL with sha256 and resume.
- ``lvm``: LVM commands (built, run and parsed) for shared-block pools.
- ``pools/``: the pool driver interface and its drivers (local-dir, shared-fs, shared-block).
- ``catalog``/``engine``: volumes, snapshots, clones and images on top of a pool driver.
"""

"""Storage: pools, images, volumes and snapshots.

Layout:
- ``model``: the records (pool kinds, capabilities, capacity, images, volumes, layers,
  snapshots, QoS) and their JSON form; ``validate``: checks of user input.
- ``pools/``: the pool driver interface (``base``) and its drivers (``local_dir``,
  ``shared_fs``, ``shared_block``); ``files`` is the on-disk layout of a file pool.
- ``qemuimg``: the one place qemu-img runs (info, create, convert, rebase, commit).
- ``volumes``: qcow2 volumes and their snapshot chains; ``images``: the image store
  and cache; ``journal`` and ``locks``: what makes their multi-step changes safe.
- ``pool``: one active pool (driver + volumes + images + capacity rules);
  ``host``: the pools this host defines, their states and the pool monitor.
- ``httpget``/``download``: image downloads; ``lvmcli``: LVM commands and the
  kernel's block-device facts; ``qos``: QoS as libvirt's ``<iotune>``.
- ``setup``: builds a host's storage from its paths.
"""

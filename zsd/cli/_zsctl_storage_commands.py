"""zsctl's storage nouns: ``pool``, ``image``, ``volume`` and ``snapshot``.

Short names are accepted everywhere: ``POOL/VOLUME`` for pools/POOL/volumes/VOLUME,
``POOL/VOLUME@SNAP`` for its snapshot, ``POOL/IMAGE`` for an image. Sizes take
binary units (``10G`` = 10 GiB). Slow calls (image import, volume create, flatten,
snapshot delete) return an operation, waited for with progress unless --no-wait.
"""

from __future__ import annotations

import argparse
import re
import uuid
from collections.abc import Callable, Sequence
from typing import Protocol

from google.protobuf import field_mask_pb2
from google.protobuf.message import Message

from zsd.v1 import operation_pb2, storage_pb2

from ._zsctl_commands import Api, CommandError, Console, Handler, await_operation, collect_pages
from ._zsctl_errors import decode_status
from ._zsctl_output import EMPTY, enum_label, human_bytes

POOL_COLUMNS = ("NAME", "KIND", "STATE", "SIZE", "USED", "FREE", "PROVISIONED", "OVERCOMMIT", "PATH")
IMAGE_COLUMNS = ("NAME", "FORMAT", "VIRTUAL", "SIZE", "SHA256")
VOLUME_COLUMNS = ("NAME", "SIZE", "ALLOCATED", "LINKED", "IMAGE", "SNAPSHOTS", "ATTACHED")
SNAPSHOT_COLUMNS = ("NAME", "CREATED", "SIZE", "CURRENT")
KINDS = {
    "local-dir": storage_pb2.Pool.LOCAL_DIR,
    "shared-fs": storage_pb2.Pool.SHARED_FS,
    "shared-block": storage_pb2.Pool.SHARED_BLOCK,
}
FORMATS = {"qcow2": storage_pb2.QCOW2, "raw": storage_pb2.RAW}
QOS_KEYS = tuple(f.name for f in storage_pb2.VolumeQos.DESCRIPTOR.fields)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_SIZE = re.compile(r"^(\d+)\s*([kmgtpb]?)(?:i?b)?$", re.IGNORECASE)


class NounFactory(Protocol):
    def __call__(self, name: str, help_text: str) -> VerbAdder: ...


class VerbAdder(Protocol):
    def verb(self, name: str, help_text: str, handler: Handler) -> argparse.ArgumentParser: ...


# -- argument types -----------------------------------------------------------------------------


def size(text: str) -> int:
    """``512``, ``10G``, ``1.5``-free binary units: K, M, G, T, P (optionally KiB/KB: all binary)."""
    m = _SIZE.match(text.strip())
    if m is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size: use bytes or a number with K, M, G, T or P"
        )
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def qos_setting(text: str) -> tuple[str, int]:
    key, equals, value = text.partition("=")
    if not equals or key not in QOS_KEYS:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE with KEY one of: {', '.join(QOS_KEYS)}")
    return key, size(value) if "bytes" in key else _count(value)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return int(text)


def pool_name(text: str) -> str:
    return text if text.startswith("pools/") else f"pools/{text}"


def child_name(text: str, collection: str) -> str:
    """``POOL/NAME`` -> ``pools/POOL/{collection}/NAME``; full names pass unchanged."""
    if text.startswith("pools/"):
        return text
    pool, slash, name = text.partition("/")
    if not slash or not pool or not name or "/" in name:
        raise CommandError(f"{text!r} is not POOL/NAME or pools/POOL/{collection}/NAME")
    return f"pools/{pool}/{collection}/{name}"


def snapshot_name(text: str) -> str:
    """``POOL/VOLUME@SNAP`` -> ``pools/POOL/volumes/VOLUME/snapshots/SNAP``."""
    if text.startswith("pools/"):
        return text
    volume, at, snap = text.rpartition("@")
    if not at or not snap:
        raise CommandError(f"{text!r} is not POOL/VOLUME@SNAPSHOT")
    return f"{child_name(volume, 'volumes')}/snapshots/{snap}"


# -- rows ---------------------------------------------------------------------------------------


def pool_rows(pools: Sequence[storage_pb2.Pool]) -> list[list[str]]:
    rows = []
    for p in pools:
        cap = p.capacity
        known = p.HasField("capacity")
        rows.append(
            [
                p.name.removeprefix("pools/"),
                enum_label(storage_pb2.Pool.Kind.DESCRIPTOR, p.kind),
                enum_label(storage_pb2.Pool.State.DESCRIPTOR, p.state),
                human_bytes(cap.size_bytes) if known else EMPTY,
                human_bytes(cap.used_bytes) if known else EMPTY,
                human_bytes(cap.free_bytes) if known else EMPTY,
                human_bytes(cap.provisioned_bytes) if known else EMPTY,
                f"{cap.overcommit:.2f}x/{p.max_overcommit:g}x" if known else EMPTY,
                p.path or p.vg_name or EMPTY,
            ]
        )
    return rows


def image_rows(images: Sequence[storage_pb2.Image]) -> list[list[str]]:
    return [
        [
            _short(i.name, "images"),
            enum_label(storage_pb2.ImageFormat.DESCRIPTOR, i.format),
            human_bytes(i.virtual_size_bytes),
            human_bytes(i.size_bytes),
            i.sha256[:12] or EMPTY,
        ]
        for i in images
    ]


def volume_rows(volumes: Sequence[storage_pb2.Volume]) -> list[list[str]]:
    return [
        [
            _short(v.name, "volumes"),
            human_bytes(v.size_bytes),
            human_bytes(v.allocated_bytes),
            "yes" if v.linked else "no",
            _short(v.image, "images") if v.image else EMPTY,
            str(v.snapshot_count),
            ",".join(v.attached_to) or EMPTY,
        ]
        for v in volumes
    ]


def snapshot_rows(snapshots: Sequence[storage_pb2.Snapshot]) -> list[list[str]]:
    """A tree: each snapshot under the one it was taken after, children indented."""
    by_parent: dict[str, list[storage_pb2.Snapshot]] = {}
    names = {s.name for s in snapshots}
    for s in snapshots:
        by_parent.setdefault(s.parent if s.parent in names else "", []).append(s)
    rows: list[list[str]] = []

    def walk(parent: str, depth: int) -> None:
        for s in sorted(
            by_parent.get(parent, []), key=lambda x: (x.create_time.seconds, x.create_time.nanos)
        ):
            leaf = s.name.rsplit("/", 1)[-1]
            rows.append(
                [
                    "  " * depth + ("* " if s.current else "") + leaf,
                    s.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"),
                    human_bytes(s.size_bytes),
                    "yes" if s.current else "",
                ]
            )
            walk(s.name, depth + 1)

    walk("", 0)
    return rows


def _short(name: str, collection: str) -> str:
    """``pools/p/volumes/v`` -> ``p/v``."""
    parts = name.split("/")
    if len(parts) == 4 and parts[0] == "pools" and parts[2] == collection:
        return f"{parts[1]}/{parts[3]}"
    return name


# -- handlers -----------------------------------------------------------------------------------


def _finish(
    args: argparse.Namespace,
    api: Api,
    console: Console,
    op: operation_pb2.Operation,
    result: type[Message] | None,
) -> int:
    if args.no_wait:
        console.one(op)
        return 0
    op = await_operation(api, console, op, limit=args.timeout_op)
    if op.HasField("error"):
        console.error(decode_status(op.error).line())
        return 1
    if result is None:
        console.line(f"done: {op.metadata.target}")
        return 0
    message = result()
    if not op.response.Unpack(message):
        raise CommandError(f"{op.name} finished without a {message.DESCRIPTOR.full_name} response")
    console.one(message)
    return 0


def cmd_pool_list(args: argparse.Namespace, api: Api, console: Console) -> int:
    def fetch(token: str) -> tuple[Sequence[storage_pb2.Pool], str]:
        r = api.storage.ListPools(storage_pb2.ListPoolsRequest(page_token=token), timeout=api.timeout)
        return r.pools, r.next_page_token

    pools = collect_pages(fetch)
    console.many(pools, POOL_COLUMNS, pool_rows(pools))
    return 0


def cmd_pool_show(args: argparse.Namespace, api: Api, console: Console) -> int:
    console.one(
        api.storage.GetPool(storage_pb2.GetPoolRequest(name=pool_name(args.name)), timeout=api.timeout)
    )
    return 0


def cmd_pool_create(args: argparse.Namespace, api: Api, console: Console) -> int:
    pool = storage_pb2.Pool(
        kind=KINDS[args.kind],
        path=args.path or "",
        vg_name=args.vg_name or "",
        wwids=args.wwid or [],
        max_overcommit=args.max_overcommit or 0.0,
        description=args.description or "",
    )
    request = storage_pb2.CreatePoolRequest(pool_id=args.name.removeprefix("pools/"), pool=pool)
    console.one(api.storage.CreatePool(request, timeout=api.timeout))
    return 0


def cmd_pool_update(args: argparse.Namespace, api: Api, console: Console) -> int:
    paths = [
        p
        for p, v in (("max_overcommit", args.max_overcommit), ("description", args.description))
        if v is not None
    ]
    if not paths:
        raise CommandError("nothing to change: give --max-overcommit and/or --description")
    pool = storage_pb2.Pool(
        name=pool_name(args.name),
        max_overcommit=args.max_overcommit or 0.0,
        description=args.description or "",
    )
    request = storage_pb2.UpdatePoolRequest(pool=pool, update_mask=field_mask_pb2.FieldMask(paths=paths))
    console.one(api.storage.UpdatePool(request, timeout=api.timeout))
    return 0


def cmd_pool_delete(args: argparse.Namespace, api: Api, console: Console) -> int:
    name = pool_name(args.name)
    api.storage.DeletePool(storage_pb2.DeletePoolRequest(name=name), timeout=api.timeout)
    console.line(f"deleted {name}")
    return 0


def cmd_image_list(args: argparse.Namespace, api: Api, console: Console) -> int:
    def fetch(token: str) -> tuple[Sequence[storage_pb2.Image], str]:
        request = storage_pb2.ListImagesRequest(parent=pool_name(args.pool), page_token=token)
        r = api.storage.ListImages(request, timeout=api.timeout)
        return r.images, r.next_page_token

    images = collect_pages(fetch)
    console.many(images, IMAGE_COLUMNS, image_rows(images))
    return 0


def cmd_image_show(args: argparse.Namespace, api: Api, console: Console) -> int:
    name = child_name(args.name, "images")
    console.one(api.storage.GetImage(storage_pb2.GetImageRequest(name=name), timeout=api.timeout))
    return 0


def cmd_image_import(args: argparse.Namespace, api: Api, console: Console) -> int:
    name = child_name(args.name, "images")
    parent, _, image_id = name.rpartition("/images/")
    source = storage_pb2.ImageSource(sha256=args.sha256 or "")
    if args.url:
        source.url = args.url
    else:
        source.path = args.path
    request = storage_pb2.ImportImageRequest(
        parent=parent,
        image_id=image_id,
        source=source,
        format=FORMATS[args.format] if args.format else storage_pb2.IMAGE_FORMAT_UNSPECIFIED,
        description=args.description or "",
        request_id=args.request_id or str(uuid.uuid4()),
    )
    return _finish(
        args, api, console, api.storage.ImportImage(request, timeout=api.timeout), storage_pb2.Image
    )


def cmd_image_delete(args: argparse.Namespace, api: Api, console: Console) -> int:
    name = child_name(args.name, "images")
    api.storage.DeleteImage(storage_pb2.DeleteImageRequest(name=name), timeout=api.timeout)
    console.line(f"deleted {name}")
    return 0


def _qos(settings: Sequence[tuple[str, int]] | None) -> storage_pb2.VolumeQos | None:
    if not settings:
        return None
    return storage_pb2.VolumeQos(**dict(settings))


def cmd_volume_list(args: argparse.Namespace, api: Api, console: Console) -> int:
    def fetch(token: str) -> tuple[Sequence[storage_pb2.Volume], str]:
        request = storage_pb2.ListVolumesRequest(parent=pool_name(args.pool), page_token=token)
        r = api.storage.ListVolumes(request, timeout=api.timeout)
        return r.volumes, r.next_page_token

    volumes = collect_pages(fetch)
    console.many(volumes, VOLUME_COLUMNS, volume_rows(volumes))
    return 0


def cmd_volume_show(args: argparse.Namespace, api: Api, console: Console) -> int:
    name = child_name(args.name, "volumes")
    console.one(api.storage.GetVolume(storage_pb2.GetVolumeRequest(name=name), timeout=api.timeout))
    return 0


def cmd_volume_create(args: argparse.Namespace, api: Api, console: Console) -> int:
    name = child_name(args.name, "volumes")
    parent, _, volume_id = name.rpartition("/volumes/")
    volume = storage_pb2.Volume(size_bytes=args.size or 0, description=args.description or "")
    qos = _qos(args.qos)
    if qos is not None:
        volume.qos.CopyFrom(qos)
    request = storage_pb2.CreateVolumeRequest(
        parent=parent, volume_id=volume_id, volume=volume, request_id=args.request_id or str(uuid.uuid4())
    )
    if args.image:
        request.image = child_name(args.image, "images")
    elif args.source:
        if "@" in args.source:
            request.source_snapshot = snapshot_name(args.source)
        else:
            request.source_volume = child_name(args.source, "volumes")
    elif not args.size:
        raise CommandError("an empty volume needs --size (or give --image or --from)")
    return _finish(
        args, api, console, api.storage.CreateVolume(request, timeout=api.timeout), storage_pb2.Volume
    )


def cmd_volume_resize(args: argparse.Namespace, api: Api, console: Console) -> int:
    request = storage_pb2.ResizeVolumeRequest(name=child_name(args.name, "volumes"), size_bytes=args.size)
    console.one(api.storage.ResizeVolume(request, timeout=api.timeout))
    return 0


def cmd_volume_update(args: argparse.Namespace, api: Api, console: Console) -> int:
    paths = []
    volume = storage_pb2.Volume(name=child_name(args.name, "volumes"))
    if args.qos is not None:
        paths.append("qos")
        volume.qos.CopyFrom(_qos([s for s in args.qos if s is not None]) or storage_pb2.VolumeQos())
    if args.description is not None:
        paths.append("description")
        volume.description = args.description
    if not paths:
        raise CommandError(
            "nothing to change: give --qos KEY=VALUE... (--qos none clears) and/or --description"
        )
    request = storage_pb2.UpdateVolumeRequest(
        volume=volume, update_mask=field_mask_pb2.FieldMask(paths=paths)
    )
    console.one(api.storage.UpdateVolume(request, timeout=api.timeout))
    return 0


def cmd_volume_delete(args: argparse.Namespace, api: Api, console: Console) -> int:
    name = child_name(args.name, "volumes")
    api.storage.DeleteVolume(
        storage_pb2.DeleteVolumeRequest(name=name, force=args.force), timeout=api.timeout
    )
    console.line(f"deleted {name}")
    return 0


def cmd_volume_flatten(args: argparse.Namespace, api: Api, console: Console) -> int:
    request = storage_pb2.FlattenVolumeRequest(
        name=child_name(args.name, "volumes"), request_id=args.request_id or str(uuid.uuid4())
    )
    return _finish(
        args, api, console, api.storage.FlattenVolume(request, timeout=api.timeout), storage_pb2.Volume
    )


def cmd_snapshot_list(args: argparse.Namespace, api: Api, console: Console) -> int:
    def fetch(token: str) -> tuple[Sequence[storage_pb2.Snapshot], str]:
        request = storage_pb2.ListSnapshotsRequest(
            parent=child_name(args.volume, "volumes"), page_token=token
        )
        r = api.storage.ListSnapshots(request, timeout=api.timeout)
        return r.snapshots, r.next_page_token

    snapshots = collect_pages(fetch)
    console.many(snapshots, SNAPSHOT_COLUMNS, snapshot_rows(snapshots))
    return 0


def cmd_snapshot_show(args: argparse.Namespace, api: Api, console: Console) -> int:
    request = storage_pb2.GetSnapshotRequest(name=snapshot_name(args.name))
    console.one(api.storage.GetSnapshot(request, timeout=api.timeout))
    return 0


def cmd_snapshot_create(args: argparse.Namespace, api: Api, console: Console) -> int:
    name = snapshot_name(args.name)
    parent, _, snap = name.rpartition("/snapshots/")
    request = storage_pb2.CreateSnapshotRequest(
        parent=parent, snapshot_id=snap, snapshot=storage_pb2.Snapshot(description=args.description or "")
    )
    console.one(api.storage.CreateSnapshot(request, timeout=api.timeout))
    return 0


def cmd_snapshot_revert(args: argparse.Namespace, api: Api, console: Console) -> int:
    request = storage_pb2.RevertSnapshotRequest(name=snapshot_name(args.name))
    console.one(api.storage.RevertSnapshot(request, timeout=api.timeout))
    return 0


def cmd_snapshot_delete(args: argparse.Namespace, api: Api, console: Console) -> int:
    request = storage_pb2.DeleteSnapshotRequest(
        name=snapshot_name(args.name), request_id=args.request_id or str(uuid.uuid4())
    )
    return _finish(args, api, console, api.storage.DeleteSnapshot(request, timeout=api.timeout), None)


# -- parsers ------------------------------------------------------------------------------------


def add_storage_nouns(
    noun: NounFactory, operation_options: Callable[[argparse.ArgumentParser], None]
) -> None:
    _pool_commands(noun("pool", "storage pools"))
    _image_commands(noun("image", "images in a pool's image store"), operation_options)
    _volume_commands(noun("volume", "volumes (virtual disks)"), operation_options)
    _snapshot_commands(noun("snapshot", "snapshots of a volume"), operation_options)


def _pool_commands(pools: VerbAdder) -> None:
    pools.verb("list", "list pools with their capacity", cmd_pool_list)
    pools.verb("show", "show one pool", cmd_pool_show).add_argument("name", metavar="POOL")
    create = pools.verb("create", "define a pool (prepares its directory or volume group)", cmd_pool_create)
    create.add_argument("name", metavar="POOL")
    create.add_argument("--kind", choices=sorted(KINDS), required=True)
    create.add_argument("--path", help="local-dir, shared-fs: absolute directory")
    create.add_argument("--vg-name", help="shared-block: LVM volume group")
    create.add_argument(
        "--wwid", action="append", metavar="WWID", help="shared-block: a LUN's WWID (repeatable)"
    )
    for leaf in (create, pools.verb("update", "change a pool's limits or description", cmd_pool_update)):
        if leaf is not create:
            leaf.add_argument("name", metavar="POOL")
        leaf.add_argument(
            "--max-overcommit", type=float, metavar="RATIO", help="provisioned / physical size limit"
        )
        leaf.add_argument("--description")
    pools.verb("delete", "forget an empty pool (its directory stays)", cmd_pool_delete).add_argument(
        "name", metavar="POOL"
    )


def _image_commands(images: VerbAdder, operation_options: Callable[[argparse.ArgumentParser], None]) -> None:
    images.verb("list", "list a pool's images", cmd_image_list).add_argument("--pool", required=True)
    images.verb("show", "show one image", cmd_image_show).add_argument("name", metavar="POOL/IMAGE")
    imp = images.verb("import", "import an image from a URL or a file on the serving host", cmd_image_import)
    imp.add_argument("name", metavar="POOL/IMAGE")
    source = imp.add_mutually_exclusive_group(required=True)
    source.add_argument("--url", help="http or https")
    source.add_argument("--path", help="absolute path on the host serving the call")
    imp.add_argument("--sha256", help="refuse the image unless its content has this digest")
    imp.add_argument("--format", choices=sorted(FORMATS), help="refuse the image unless it is of this format")
    imp.add_argument("--description")
    operation_options(imp)
    images.verb("delete", "delete an image (linked volumes keep working)", cmd_image_delete).add_argument(
        "name", metavar="POOL/IMAGE"
    )


def _volume_commands(
    volumes: VerbAdder, operation_options: Callable[[argparse.ArgumentParser], None]
) -> None:
    volumes.verb("list", "list a pool's volumes", cmd_volume_list).add_argument("--pool", required=True)
    volumes.verb("show", "show one volume", cmd_volume_show).add_argument("name", metavar="POOL/VOLUME")
    qos_help = f"KEY=VALUE limits; keys: {', '.join(QOS_KEYS)}; *bytes* values take units"
    create = volumes.verb("create", "create a volume: empty, from an image, or a copy", cmd_volume_create)
    create.add_argument("name", metavar="POOL/VOLUME")
    create.add_argument(
        "--size", type=size, help="virtual size, e.g. 20G (default with --image: the image's)"
    )
    source = create.add_mutually_exclusive_group()
    source.add_argument("--image", metavar="POOL/IMAGE", help="a linked clone of this image")
    source.add_argument(
        "--from", dest="source", metavar="POOL/VOLUME[@SNAP]", help="a copy of a volume or snapshot"
    )
    create.add_argument("--qos", type=qos_setting, nargs="+", metavar="KEY=VALUE", help=qos_help)
    create.add_argument("--description")
    operation_options(create)
    resize = volumes.verb("resize", "grow a volume", cmd_volume_resize)
    resize.add_argument("name", metavar="POOL/VOLUME")
    resize.add_argument("size", type=size, metavar="SIZE")
    update = volumes.verb("update", "change a volume's QoS or description", cmd_volume_update)
    update.add_argument("name", metavar="POOL/VOLUME")
    update.add_argument(
        "--qos", type=_qos_or_none, nargs="+", metavar="KEY=VALUE", help=qos_help + "; 'none' clears"
    )
    update.add_argument("--description")
    delete = volumes.verb("delete", "delete a volume", cmd_volume_delete)
    delete.add_argument("name", metavar="POOL/VOLUME")
    delete.add_argument("--force", action="store_true", help="even while attached to a VM")
    flatten = volumes.verb(
        "flatten", "copy the image data in; the volume stops depending on it", cmd_volume_flatten
    )
    flatten.add_argument("name", metavar="POOL/VOLUME")
    operation_options(flatten)


def _qos_or_none(text: str) -> tuple[str, int] | None:
    return None if text == "none" else qos_setting(text)


def _snapshot_commands(
    snapshots: VerbAdder, operation_options: Callable[[argparse.ArgumentParser], None]
) -> None:
    snapshots.verb("list", "a volume's snapshots as a tree", cmd_snapshot_list).add_argument(
        "volume", metavar="POOL/VOLUME"
    )
    snapshots.verb("show", "show one snapshot", cmd_snapshot_show).add_argument(
        "name", metavar="POOL/VOLUME@SNAP"
    )
    create = snapshots.verb("create", "snapshot a volume", cmd_snapshot_create)
    create.add_argument("name", metavar="POOL/VOLUME@SNAP")
    create.add_argument("--description")
    snapshots.verb("revert", "make the volume's content the snapshot's", cmd_snapshot_revert).add_argument(
        "name", metavar="POOL/VOLUME@SNAP"
    )
    delete = snapshots.verb("delete", "delete a snapshot, merging its data", cmd_snapshot_delete)
    delete.add_argument("name", metavar="POOL/VOLUME@SNAP")
    operation_options(delete)

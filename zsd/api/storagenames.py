"""Storage resource names (AIP-122): "pools/{pool}[/images/{image} | /volumes/{volume}
[/snapshots/{snapshot}]]", parsed with errors that name the field."""

from __future__ import annotations

from dataclasses import dataclass

from zsd.errors import InvalidArgument
from zsd.storage import validate

_SHAPES = {
    "pool": ("pools",),
    "image": ("pools", "images"),
    "volume": ("pools", "volumes"),
    "snapshot": ("pools", "volumes", "snapshots"),
}


@dataclass(frozen=True, kw_only=True)
class StorageName:
    pool: str
    image: str = ""
    volume: str = ""
    snapshot: str = ""

    def __str__(self) -> str:
        name = f"pools/{self.pool}"
        if self.image:
            return f"{name}/images/{self.image}"
        if self.volume:
            name += f"/volumes/{self.volume}"
        if self.snapshot:
            name += f"/snapshots/{self.snapshot}"
        return name


def parse(name: str, kind: str, *, field: str = "name") -> StorageName:
    """``kind`` is "pool", "image", "volume" or "snapshot"."""
    shape = _SHAPES[kind]
    parts = name.split("/")
    expected = "/".join(f"{c}/{{{c[:-1]}}}" for c in shape)
    if len(parts) != 2 * len(shape) or tuple(parts[0::2]) != shape:
        raise InvalidArgument(
            f"{name!r} is not a {kind} name; expected {expected!r}", field=field, reason="INVALID_NAME"
        )
    ids = parts[1::2]
    for value in ids:
        validate.name(value, field=field)
    keys = {"pools": "pool", "images": "image", "volumes": "volume", "snapshots": "snapshot"}
    return StorageName(**{keys[c]: v for c, v in zip(shape, ids, strict=True)})


def pool(name: str, *, field: str = "name") -> str:
    return parse(name, "pool", field=field).pool

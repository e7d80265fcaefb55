"""Create intents: what a VM create is in the middle of doing, on disk, so a zsd
killed mid-create can undo it when it starts again (no orphan domain, attach
record or root volume).

One small JSON file per create in progress, written (atomically) before the first
change and removed once the create has finished or been undone.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from zsd.errors import Internal


@dataclass(frozen=True, kw_only=True)
class CreateIntent:
    name: str
    uid: str
    volumes: tuple[str, ...]
    """"pool/volume" of every disk the create attaches (root included)."""
    root: str = ""
    """"pool/volume" of a root volume this create makes (and so may delete)."""


class IntentLog:
    def __init__(self, directory: Path) -> None:
        self._dir = directory

    def _path(self, name: str) -> Path:
        return self._dir / f"{name}.json"

    def begin(self, intent: CreateIntent) -> None:
        self._dir.mkdir(parents=True, exist_ok=True)
        tmp = self._dir / f".{intent.name}.tmp"
        tmp.write_text(json.dumps(asdict(intent), sort_keys=True))
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self._path(intent.name))

    def update(self, intent: CreateIntent) -> None:
        self.begin(intent)

    def end(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def pending(self) -> list[CreateIntent]:
        if not self._dir.is_dir():
            return []
        out = []
        for path in sorted(self._dir.glob("*.json")):
            try:
                raw = json.loads(path.read_text())
                out.append(
                    CreateIntent(
                        name=str(raw["name"]),
                        uid=str(raw["uid"]),
                        volumes=tuple(str(v) for v in raw["volumes"]),
                        root=str(raw.get("root", "")),
                    )
                )
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise Internal(f"damaged create intent {path}: {e}") from e
        return out

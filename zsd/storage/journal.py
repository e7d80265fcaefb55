"""Intent records of multi-step storage operations, kept in the pool itself.

Each step of a volume operation is either idempotent or guarded by a commit
point (an atomic rename or an atomic record write). The journal entry is written
before the first step and removed after the last, so whoever finds an entry —
this zsd after a crash or restart, or another host of a shared pool — can
finish it (roll forward) or undo it (roll back), as the operation's own
recovery decides. Undo only ever removes files no record points to.

On a shared pool another host may be running the operation right now: recovery
takes the operation's lock first (the running operation holds it throughout) and
skips an entry its operation ended meanwhile.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zsd.util.fsutil import write_atomic


@dataclass(frozen=True, kw_only=True)
class Entry:
    id: str
    verb: str
    subject: str
    data: dict[str, Any]


class Journal:
    def __init__(self, directory: Path) -> None:
        self._dir = directory

    def begin(self, verb: str, subject: str, **data: Any) -> Entry:
        entry = Entry(id=str(uuid.uuid4()), verb=verb, subject=subject, data=data)
        self._write(entry)
        return entry

    def _write(self, entry: Entry) -> None:
        payload = {"id": entry.id, "verb": entry.verb, "subject": entry.subject, "data": entry.data}
        write_atomic(self._dir / f"{entry.id}.json", json.dumps(payload).encode())

    def open(self, entry: Entry) -> bool:
        """Still pending (its operation has not ended it meanwhile)."""
        return (self._dir / f"{entry.id}.json").exists()

    def end(self, entry: Entry) -> None:
        (self._dir / f"{entry.id}.json").unlink(missing_ok=True)

    def pending(self) -> list[Entry]:
        entries = []
        for path in sorted(self._dir.glob("*.json"), key=os.path.getmtime):
            try:
                raw = json.loads(path.read_bytes())
            except (OSError, ValueError):
                path.unlink(missing_ok=True)  # torn write of the entry itself: nothing started
                continue
            entries.append(Entry(id=raw["id"], verb=raw["verb"], subject=raw["subject"], data=raw["data"]))
        return entries

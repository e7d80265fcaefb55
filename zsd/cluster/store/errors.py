"""The store's own error subclasses, each in a :mod:`zsd.errors` category, so callers
can catch the cases they act on (a fenced leader steps down, a follower resyncs)."""

from __future__ import annotations

from zsd.errors import FailedPrecondition


class Fenced(FailedPrecondition):
    """A leader with a higher epoch has opened the store: this writer is deposed.

    Final for the object that raised it; the host must stop acting as leader."""

    default_reason = "FENCED"

    def __init__(self, message: str, *, epoch: int, current_epoch: int) -> None:
        super().__init__(message, metadata={"epoch": str(epoch), "current_epoch": str(current_epoch)})
        self.epoch = epoch
        self.current_epoch = current_epoch


class ResyncRequired(FailedPrecondition):
    """A follower cannot continue from its revision; it must reload a snapshot."""

    default_reason = "RESYNC_REQUIRED"


class Compacted(ResyncRequired):
    """The change log no longer holds the revisions after the one asked for."""

    default_reason = "COMPACTED"

    def __init__(self, message: str, *, revision: int, compacted_revision: int) -> None:
        super().__init__(
            message,
            field="revision",
            metadata={"revision": str(revision), "compacted_revision": str(compacted_revision)},
        )
        self.revision = revision
        self.compacted_revision = compacted_revision


class RevisionGap(ResyncRequired):
    """A cache was handed a revision that does not directly follow its own."""

    default_reason = "REVISION_GAP"

    def __init__(self, message: str, *, expected: int, got: int) -> None:
        super().__init__(message, metadata={"expected": str(expected), "got": str(got)})
        self.expected = expected
        self.got = got

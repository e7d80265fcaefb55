"""List pagination (AIP-158): page sizes and opaque page tokens bound to their query."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from zsd.errors import InvalidArgument

T = TypeVar("T")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


@dataclass(frozen=True, kw_only=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str


def paginate(
    items: Sequence[T], *, key: Callable[[T], str], page_size: int, page_token: str, query: str = ""
) -> Page[T]:
    """``items`` must be in a stable order; the token remembers the last key returned,
    so concurrent inserts and deletes never repeat or skip surviving items."""
    if page_size < 0:
        raise InvalidArgument(
            f"page_size must be between 0 and {MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE}); got {page_size}",
            field="page_size",
        )
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    start = 0
    if page_token:
        after = _decode(page_token, query)
        keys = [key(i) for i in items]
        start = keys.index(after) + 1 if after in keys else _insertion_point(keys, after)
    chunk = list(items[start : start + size])
    more = start + size < len(items)
    return Page(items=chunk, next_page_token=_encode(key(chunk[-1]), query) if more and chunk else "")


def _insertion_point(keys: list[str], after: str) -> int:
    # The last returned item is gone: continue with the first key that sorts after it.
    for i, k in enumerate(keys):
        if k > after:
            return i
    return len(keys)


def _fingerprint(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()[:12]


def _encode(after: str, query: str) -> str:
    raw = json.dumps({"a": after, "q": _fingerprint(query)}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(token: str, query: str) -> str:
    try:
        doc = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        after, fp = doc["a"], doc["q"]
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument(
            "page_token is not a token this server issued; pass the next_page_token of the previous page",
            field="page_token",
        ) from None
    if fp != _fingerprint(query) or not isinstance(after, str):
        raise InvalidArgument(
            "page_token belongs to a list call with other filters; repeat the same filters or start over",
            field="page_token",
        )
    return after

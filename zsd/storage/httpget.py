"""Streaming an image from an http(s) URL into a file: sha256 while streaming,
resuming with Range after a broken connection, no redirects to other schemes.

Blocking (the image store runs it in a thread). Standard library only: one GET
with a Range header is all it takes, and urllib is always there.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from zsd.errors import Cancelled, FailedPrecondition, InvalidArgument, Unavailable

CHUNK = 1 << 20
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


def validate_url(url: str, *, field: str = "source.url") -> str:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise InvalidArgument(
            f"{url!r} is not an http:// or https:// URL with a host; only those can be imported",
            field=field,
            reason="BAD_URL",
        )
    return url


def validate_sha256(value: str, *, field: str = "source.sha256") -> str:
    if not _SHA256.match(value):
        raise InvalidArgument(
            f"{value!r} is not a sha256 digest: 64 hexadecimal characters", field=field, reason="BAD_SHA256"
        )
    return value.lower()


@dataclass(frozen=True, kw_only=True)
class GetSpec:
    url: str
    dest: Path
    sha256: str | None = None
    max_attempts: int = 5
    timeout: float = 30.0
    retry_delay: float = 1.0


@dataclass(frozen=True, kw_only=True)
class GetResult:
    size: int
    sha256: str
    attempts: int
    resumed_bytes: int
    """Bytes that were not fetched again thanks to Range requests."""


class _Retry(Exception):
    """A failure worth another attempt (connection, 5xx, short body)."""


class _SchemeRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(  # noqa: PLR0917 - urllib's signature
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        try:
            validate_url(newurl, field="source.url")  # urllib would follow ftp://
        except InvalidArgument:
            fp.close()
            raise
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def default_opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(_SchemeRedirects())


def http_get(
    spec: GetSpec,
    *,
    progress: Callable[[int, int | None], None] = lambda _d, _t: None,
    cancelled: Callable[[], bool] = lambda: False,
    opener: urllib.request.OpenerDirector | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> GetResult:
    validate_url(spec.url)
    opener = opener or default_opener()
    state = _State()
    try:
        with spec.dest.open("wb") as out:
            return _attempts(
                spec, out, state, _Io(opener=opener, progress=progress, cancelled=cancelled), sleep
            )
    except BaseException:
        spec.dest.unlink(missing_ok=True)
        raise


@dataclass(frozen=True, kw_only=True)
class _Io:
    opener: urllib.request.OpenerDirector
    progress: Callable[[int, int | None], None]
    cancelled: Callable[[], bool]


def _attempts(
    spec: GetSpec, out: IO[bytes], state: _State, io: _Io, sleep: Callable[[float], None]
) -> GetResult:
    last: Exception | None = None
    for attempt in range(1, spec.max_attempts + 1):
        try:
            _attempt(spec, out, state, io)
            out.flush()
            os.fsync(out.fileno())
            return _finish(spec, state, attempt)
        except _Retry as e:
            last = e
            if attempt < spec.max_attempts:
                sleep(spec.retry_delay * attempt)
    raise Unavailable(
        f"could not download {spec.url} in {spec.max_attempts} attempts: {last}", reason="FETCH_FAILED"
    )


class _State:
    def __init__(self) -> None:
        self.have = 0
        self.digest = hashlib.sha256()
        self.validator: str | None = None
        self.ranges = False
        self.total: int | None = None
        self.resumed = 0

    def restart(self, out: IO[bytes]) -> None:
        out.seek(0)
        out.truncate()
        self.have = 0
        self.digest = hashlib.sha256()


def _attempt(spec: GetSpec, out: IO[bytes], state: _State, io: _Io) -> None:
    request = urllib.request.Request(spec.url)
    resuming = state.have > 0 and state.ranges
    if resuming:
        request.add_header("Range", f"bytes={state.have}-")
        if state.validator:
            request.add_header("If-Range", state.validator)  # changed content → 200, full body
    elif state.have:
        state.restart(out)
    try:
        response = io.opener.open(request, timeout=spec.timeout)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code >= 500 or e.code in (408, 429):
            raise _Retry(f"HTTP {e.code} {e.reason}") from e
        raise FailedPrecondition(
            f"{spec.url} answered HTTP {e.code} {e.reason}", reason="FETCH_FAILED", field="source.url"
        ) from e
    except (urllib.error.URLError, OSError) as e:
        raise _Retry(str(getattr(e, "reason", e))) from e
    with response:
        status = response.status
        headers = response.headers
        if resuming and status == 206:
            match = _CONTENT_RANGE.match(headers.get("Content-Range", ""))
            if match is None or int(match.group(1)) != state.have:
                state.restart(out)  # not the range we asked for: start over cleanly
                raise _Retry("the server answered a different range")
            state.resumed += state.have
        elif resuming:
            state.restart(out)  # 200: the server ignored Range (or the content changed)
        if state.have == 0:
            state.ranges = headers.get("Accept-Ranges", "").lower() == "bytes"
            state.validator = headers.get("ETag") or headers.get("Last-Modified")
            length = headers.get("Content-Length")
            state.total = int(length) if length and length.isdigit() else None
        reported = state.have
        try:
            while chunk := response.read(CHUNK):
                if io.cancelled():
                    raise Cancelled("the download was cancelled")
                out.write(chunk)
                state.digest.update(chunk)
                state.have += len(chunk)
                if state.have - reported >= CHUNK:
                    io.progress(state.have, state.total)
                    reported = state.have
        except (http.client.IncompleteRead, OSError) as e:
            raise _Retry(f"connection broken after {state.have} bytes: {e}") from e
    if state.total is not None and state.have < state.total:
        raise _Retry(f"got {state.have} of {state.total} bytes")
    io.progress(state.have, state.total)


def _finish(spec: GetSpec, state: _State, attempts: int) -> GetResult:
    got = state.digest.hexdigest()
    if spec.sha256 is not None and got != spec.sha256.lower():
        raise InvalidArgument(
            f"sha256 of {spec.url} is {got}, not {spec.sha256.lower()}",
            field="source.sha256",
            reason="CHECKSUM_MISMATCH",
        )
    return GetResult(size=state.have, sha256=got, attempts=attempts, resumed_bytes=state.resumed)

"""http_get against a real HTTP server on loopback that breaks in the ways networks
and servers do: dropped connections, ignored Range, 5xx, 404, wrong content."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from zsd.errors import Cancelled, FailedPrecondition, InvalidArgument, Unavailable
from zsd.storage.httpget import GetSpec, http_get, validate_sha256, validate_url

BODY = bytes(range(256)) * 12_288  # 3 MiB, not all the same byte
DIGEST = hashlib.sha256(BODY).hexdigest()


@dataclass
class Faults:
    drop_after: list[int] = field(default_factory=list)
    """Per request (in order): close the connection after this many body bytes."""
    statuses: list[int] = field(default_factory=list)
    """Per request (in order): answer this status with no body instead."""
    ignore_range: bool = False
    redirect: str = ""
    requests: list[str | None] = field(default_factory=list)
    """The Range header of every request."""


class Handler(http.server.BaseHTTPRequestHandler):
    faults: Faults

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        f = self.server.faults  # type: ignore[attr-defined]
        f.requests.append(self.headers.get("Range"))
        if f.redirect:
            self.send_response(302)
            self.send_header("Location", f.redirect)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if f.statuses:
            status = f.statuses.pop(0)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = 0
        wanted = self.headers.get("Range")
        if wanted and not f.ignore_range and self.headers.get("If-Range") == '"v1"':
            start = int(wanted.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(BODY) - 1}/{len(BODY)}")
        else:
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", '"v1"')
        self.send_header("Content-Length", str(len(BODY) - start))
        self.end_headers()
        body = BODY[start:]
        if f.drop_after:
            cut = f.drop_after.pop(0)
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[tuple[str, Faults]]:
    faults = Faults()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.faults = faults  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/disk.img", faults
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def get(url: str, dest: Path, **kw: object) -> object:
    spec = GetSpec(url=url, dest=dest, sha256=kw.pop("sha256", None), retry_delay=0)  # type: ignore[arg-type]
    return http_get(spec, sleep=lambda _: None, **kw)  # type: ignore[arg-type]


def test_plain_download_with_progress_and_checksum(server: tuple[str, Faults], tmp_path: Path) -> None:
    url, _ = server
    seen: list[tuple[int, int | None]] = []
    result = http_get(
        GetSpec(url=url, dest=tmp_path / "d", sha256=DIGEST.upper()),
        progress=lambda d, t: seen.append((d, t)),
    )
    assert (tmp_path / "d").read_bytes() == BODY
    assert (result.size, result.sha256, result.attempts, result.resumed_bytes) == (len(BODY), DIGEST, 1, 0)
    assert seen[-1] == (len(BODY), len(BODY)) and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_a_dropped_connection_resumes_with_range(server: tuple[str, Faults], tmp_path: Path) -> None:
    url, faults = server
    faults.drop_after = [1_000_000]
    result = get(url, tmp_path / "d", sha256=DIGEST)
    assert (tmp_path / "d").read_bytes() == BODY
    assert result.attempts == 2 and result.resumed_bytes >= 1_000_000  # type: ignore[attr-defined]
    assert faults.requests[0] is None and faults.requests[1] == f"bytes={result.resumed_bytes}-"  # type: ignore[attr-defined]


def test_a_server_that_ignores_range_restarts_cleanly(server: tuple[str, Faults], tmp_path: Path) -> None:
    url, faults = server
    faults.drop_after = [500_000]
    faults.ignore_range = True
    result = get(url, tmp_path / "d", sha256=DIGEST)
    assert (tmp_path / "d").read_bytes() == BODY and result.resumed_bytes == 0  # type: ignore[attr-defined]


def test_5xx_is_retried_404_is_not(server: tuple[str, Faults], tmp_path: Path) -> None:
    url, faults = server
    faults.statuses = [503, 500]
    assert get(url, tmp_path / "d").attempts == 3  # type: ignore[attr-defined]
    faults.statuses = [404]
    with pytest.raises(FailedPrecondition) as e:
        get(url, tmp_path / "e")
    assert "404" in e.value.message and len(faults.requests) == 4
    assert not (tmp_path / "e").exists()


def test_gives_up_after_max_attempts(server: tuple[str, Faults], tmp_path: Path) -> None:
    url, faults = server
    faults.statuses = [502] * 10
    with pytest.raises(Unavailable) as e:
        get(url, tmp_path / "d")
    assert e.value.reason == "FETCH_FAILED" and "5 attempts" in e.value.message
    assert not (tmp_path / "d").exists()


def test_checksum_mismatch_removes_the_file(server: tuple[str, Faults], tmp_path: Path) -> None:
    url, _ = server
    with pytest.raises(InvalidArgument) as e:
        get(url, tmp_path / "d", sha256="0" * 64)
    assert (e.value.field, e.value.reason) == (
        "source.sha256",
        "CHECKSUM_MISMATCH",
    ) and DIGEST in e.value.message
    assert not (tmp_path / "d").exists()


def test_cancellation_between_chunks(server: tuple[str, Faults], tmp_path: Path) -> None:
    url, _ = server
    with pytest.raises(Cancelled):
        get(url, tmp_path / "d", cancelled=lambda: True)
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("target", ["ftp://127.0.0.1/x", "file:///etc/passwd"])
def test_redirects_to_other_schemes_are_refused(
    server: tuple[str, Faults], tmp_path: Path, target: str
) -> None:
    # urllib itself refuses file://; ftp:// it would follow, zsd's handler refuses it.
    url, faults = server
    faults.redirect = target
    with pytest.raises((InvalidArgument, FailedPrecondition)) as e:
        get(url, tmp_path / "d")
    assert e.value.field == "source.url" and target in e.value.message
    assert not (tmp_path / "d").exists() and len(faults.requests) == 1


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.org/x", "http://", "not a url", "https:///x"]
)
def test_only_http_urls(url: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        validate_url(url)
    assert e.value.field == "source.url" and "http" in e.value.message


def test_sha256_format() -> None:
    assert validate_sha256(DIGEST.upper()) == DIGEST
    with pytest.raises(InvalidArgument) as e:
        validate_sha256("abc")
    assert e.value.field == "source.sha256"

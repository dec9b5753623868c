"""Continuing and refreshing downloads: what is held of a body, and what a response means for it.

Three parts, all small and mostly pure:

- `Held` is the first `size` bytes of a body, with the validators of the response they came
  from. `continue_headers()` asks for the rest (`Range` + `If-Range`), and `decide()` judges the
  answer: append, replace, already complete, or ask again from byte 0.
- A kept partial body lives beside its target under a stable name (`partial_path()`), with a
  JSON sidecar (`sidecar_path()`) written atomically by `write_sidecar()` and read back by
  `load_partial()`, which trusts nothing it cannot check: a corrupt, foreign or stale sidecar
  gives None, and the caller starts over.
- `--update`: `update_headers()` builds `If-None-Match`/`If-Modified-Since`; `set_mtime()`
  gives a saved file the `Last-Modified` of its response; `hash_prefix()` hashes the kept
  prefix of a continued body, `hash_file()` a whole saved file (--skip-existing, a 304).

The rules follow RFC 9110 (sections 8.8, 13.1 and 14): `If-Range` carries a strong ETag, or a
Last-Modified date only when there is no ETag and the date is strong; a weak ETag is never sent
there. Bodies with a Content-Encoding are continued only under a strong ETag, which names the
exact encoded bytes that ranges count; anything less certain starts over.
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import errno
import functools
import hashlib
import json
import math
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, TypeGuard

if TYPE_CHECKING:
    from _hashlib import HASH

__all__ = [
    "PARTIAL_SUFFIX",
    "SIDECAR_SUFFIX",
    "SIDECAR_VERSION",
    "ContentRange",
    "Decision",
    "Held",
    "Verdict",
    "continue_headers",
    "decide",
    "discard_partial",
    "format_http_date",
    "hash_file",
    "hash_prefix",
    "is_strong_etag",
    "load_partial",
    "parse_content_range",
    "parse_etag",
    "parse_http_date",
    "partial_name",
    "partial_path",
    "read_sidecar",
    "set_mtime",
    "sidecar_name",
    "sidecar_path",
    "update_headers",
    "write_sidecar",
]

# Not `.fetchcli-part` (the suffix of a run's own temporary files, which carry a per-run token):
# no kept name can ever equal a temporary name, and a sweep of the one never takes the other.
PARTIAL_SUFFIX = ".fetchcli-partial"
SIDECAR_SUFFIX = ".json"
SIDECAR_VERSION = 1
SIDECAR_MAX_BYTES = 64 * 1024  # ours are ~300 bytes; a bigger file is someone else's
HASH_BLOCK = 1 << 20
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | getattr(os, "O_BINARY", 0)

# RFC 9110 8.8.3: entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE, etagc = %x21 / %x23-7E / obs-text.
_ETAG = re.compile(r'(W/)?"[\x21\x23-\x7e\x80-\xff]*"')
_CONTENT_RANGE = re.compile(r"bytes[ \t]+(?:([0-9]+)-([0-9]+)|\*)/([0-9]+|\*)", re.IGNORECASE)
_IDENTITY = ("", "identity")


# --- Validators and dates -----------------------------------------------------------------


def parse_etag(value: str | None) -> str | None:
    """The entity tag in a header value, verbatim, or None when absent or malformed."""
    if value is None:
        return None
    value = value.strip()
    return value if _ETAG.fullmatch(value) else None


def is_strong_etag(etag: str | None) -> bool:
    """Whether `etag` names exact bytes (not `W/`): only such a tag may go in `If-Range`."""
    return etag is not None and not etag.startswith("W/") and _ETAG.fullmatch(etag) is not None


# A run sees the same few dates (Date, Last-Modified) again and again; email.utils is slow.
@functools.lru_cache(maxsize=1024)
def parse_http_date(value: str | None) -> float | None:
    """POSIX seconds of an HTTP-date (any of the three RFC 9110 forms), or None."""
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        # asctime has no zone, and every HTTP-date is in GMT (RFC 9110 5.6.7).
        when = when.replace(tzinfo=datetime.UTC)
    seconds = when.timestamp()
    return seconds if math.isfinite(seconds) else None


def format_http_date(seconds: float) -> str:
    """The IMF-fixdate of POSIX `seconds` (whole seconds, rounded down), as HTTP wants."""
    return email.utils.formatdate(math.floor(seconds), usegmt=True)


def _strong_date(last_modified: str | None, date: str | None) -> str | None:
    """`last_modified` when usable as a strong validator, else None.

    RFC 9110 8.8.2.2: a Last-Modified is strong only when at least a second older than the
    response's Date; a file changed within the second it was served may change again unseen.
    Without a Date header the server's word is all there is, so the date is taken.
    """
    modified = parse_http_date(last_modified)
    if modified is None:
        return None
    served = parse_http_date(date)
    if served is not None and served - modified < 1:
        return None
    return last_modified.strip() if last_modified else None


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def _encoding(value: str | None) -> str | None:
    """A Content-Encoding, normalised; None for none or identity."""
    if value is None:
        return None
    value = ",".join(part.strip().lower() for part in value.split(","))
    return None if value in _IDENTITY else value


def _length(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    return int(value) if value.isascii() and value.isdigit() else None


# --- What is held, and the request for the rest ------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Held:
    """The first `size` bytes of the body of `url`, and what identifies that body.

    `size` counts the bytes a Range addresses: the encoded bytes when `content_encoding` is
    set. `total` is the full length when a response told it. The validators are those of the
    response the bytes came from, already checked (`from_response()`).
    """

    url: str
    size: int
    etag: str | None = None
    last_modified: str | None = None
    content_encoding: str | None = None
    total: int | None = None

    @classmethod
    def from_response(
        cls, url: str, status: int, headers: Mapping[str, str], size: int = 0
    ) -> Held:
        """What a 200 or 206 response lets us hold once `size` bytes of its body are in.

        Only validators fit for `If-Range` are kept (a strong ETag, a strong date), so a Held
        without either can only start over. The total comes from Content-Length (200) or the
        Content-Range total (206).
        """
        lower = _lower(headers)
        etag = parse_etag(lower.get("etag"))
        total: int | None = None
        if status == 206:
            content_range = parse_content_range(lower.get("content-range"))
            total = content_range.total if content_range is not None else None
        elif "transfer-encoding" not in lower:
            total = _length(lower.get("content-length"))
        return cls(
            url=url,
            size=size,
            etag=etag,
            last_modified=_strong_date(lower.get("last-modified"), lower.get("date")),
            content_encoding=_encoding(lower.get("content-encoding")),
            total=total,
        )

    def at(self, size: int) -> Held:
        """The same body, now held up to `size` bytes."""
        return Held(
            url=self.url,
            size=size,
            etag=self.etag,
            last_modified=self.last_modified,
            content_encoding=self.content_encoding,
            total=self.total,
        )


def continue_headers(held: Held) -> dict[str, str] | None:
    """`Range` and `If-Range` to ask for the rest of `held`; None when it must start over.

    Starting over is the answer when nothing is held, when more is held than the body has,
    and when no validator can make the server check that the rest belongs to the same bytes
    (no strong ETag, and for an encoded body not even a date will do).
    """
    if held.size <= 0 or (held.total is not None and held.size > held.total):
        return None
    if is_strong_etag(held.etag):
        validator = held.etag
    elif held.content_encoding is None and parse_http_date(held.last_modified) is not None:
        validator = held.last_modified
    else:
        return None
    assert validator is not None
    return {"Range": f"bytes={held.size}-", "If-Range": validator}


@dataclass(frozen=True, slots=True)
class ContentRange:
    """A parsed `Content-Range: bytes first-last/total`; first/last are None for `*/total`."""

    first: int | None
    last: int | None
    total: int | None

    @property
    def length(self) -> int:
        """Bytes in the range (0 for an unsatisfied `*/total`)."""
        if self.first is None or self.last is None:
            return 0
        return self.last - self.first + 1


def parse_content_range(value: str | None) -> ContentRange | None:
    """Parse a byte Content-Range (RFC 9110 14.4); None when absent, malformed or impossible."""
    if value is None:
        return None
    match = _CONTENT_RANGE.fullmatch(value.strip())
    if match is None:
        return None
    first_s, last_s, total_s = match.groups()
    total = None if total_s == "*" else int(total_s)
    if first_s is None:
        # "bytes */*" says nothing at all.
        return None if total is None else ContentRange(None, None, total)
    first, last = int(first_s), int(last_s)
    if last < first or (total is not None and last >= total):
        return None
    return ContentRange(first, last, total)


# --- The answer to a request for the rest ----------------------------------------------------


class Verdict(StrEnum):
    """What to do with the held bytes given the server's answer."""

    APPEND = "append"  # a 206 that is exactly the rest: write its body after the held bytes
    REPLACE = "replace"  # a 200: this body is the whole one; drop the held bytes, write it
    COMPLETE = "complete"  # a 416 for exactly what is held: the held bytes are the body
    REFETCH = "refetch"  # an answer that cannot be trusted: drop the held bytes, ask from 0


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reason: str  # a few words for logs and tests
    total: int | None = None  # the full length, when the answer told it


def decide(held: Held, status: int, headers: Mapping[str, str]) -> Decision | None:
    """Judge the answer to `continue_headers(held)`; None for any other status (an error, a
    redirect ...), which the caller handles as it would without a Range.

    206 is appended only when its Content-Range starts at `held.size` and runs to the end of
    a body of the known total, in the same Content-Encoding, under the same validator. 200
    replaces. 416 completes when its total equals what is held (and nothing says the body
    changed). Every other 206 or 416 asks again from byte 0.
    """
    lower = _lower(headers)
    if status == 200:
        etag = parse_etag(lower.get("etag"))
        changed = held.etag is not None and etag is not None and etag != held.etag
        reason = "the body changed" if changed else "the server ignored the Range"
        return Decision(Verdict.REPLACE, reason, _length(lower.get("content-length")))
    if status == 416:
        return _decide_416(held, lower)
    if status == 206:
        return _decide_206(held, lower)
    return None


def _decide_416(held: Held, lower: dict[str, str]) -> Decision:
    content_range = parse_content_range(lower.get("content-range"))
    total = content_range.total if content_range is not None else None
    if total is None:
        return Decision(Verdict.REFETCH, "416 without a total length")
    if total != held.size or (held.total is not None and held.total != total):
        return Decision(Verdict.REFETCH, f"416 for a body of {total} bytes, {held.size} held")
    etag = parse_etag(lower.get("etag"))
    if etag is not None and held.etag is not None and etag != held.etag:
        return Decision(Verdict.REFETCH, "416 under another ETag", total)
    return Decision(Verdict.COMPLETE, "everything is held already", total)


def _decide_206(held: Held, lower: dict[str, str]) -> Decision:
    content_range = parse_content_range(lower.get("content-range"))
    if content_range is None or content_range.first is None or content_range.last is None:
        # Includes multipart/byteranges, which has no Content-Range of its own.
        return Decision(Verdict.REFETCH, "206 without a usable Content-Range")
    total = content_range.total
    if content_range.first != held.size:
        return Decision(
            Verdict.REFETCH, f"206 from byte {content_range.first}, not {held.size}", total
        )
    if total is None or content_range.last != total - 1:
        return Decision(Verdict.REFETCH, "206 that does not run to the end of the body", total)
    if held.total is not None and total != held.total:
        return Decision(Verdict.REFETCH, f"206 of a {total}-byte body, not {held.total}", total)
    length = _length(lower.get("content-length"))
    if length is not None and length != content_range.length:
        return Decision(Verdict.REFETCH, "206 whose Content-Length and Content-Range differ")
    if _encoding(lower.get("content-encoding")) != held.content_encoding:
        return Decision(Verdict.REFETCH, "206 in another Content-Encoding", total)
    etag = parse_etag(lower.get("etag"))
    if held.etag is not None and etag is not None and etag != held.etag:
        return Decision(Verdict.REFETCH, "206 under another ETag", total)
    modified = lower.get("last-modified")
    if held.etag is None and modified is not None and modified.strip() != held.last_modified:
        return Decision(Verdict.REFETCH, "206 under another Last-Modified", total)
    return Decision(Verdict.APPEND, f"the rest from byte {held.size}", total)


# --- Kept partial bodies and their sidecars ---------------------------------------------------


def partial_name(name: str) -> str:
    """The stable name of a kept partial body of the file `name`: `.NAME.fetchcli-partial`."""
    return f".{name}{PARTIAL_SUFFIX}"


def sidecar_name(partial: str) -> str:
    """The name of the sidecar of the kept partial body `partial`: its name + `.json`."""
    return partial + SIDECAR_SUFFIX


def partial_path(target: Path) -> Path:
    """The stable name a kept partial body of `target` has: `.NAME.fetchcli-partial` beside it."""
    return target.with_name(partial_name(target.name))


def sidecar_path(partial: Path) -> Path:
    """The sidecar of a kept partial body: its name + `.json`."""
    return partial.with_name(sidecar_name(partial.name))


# Every function below that takes `dir_fd` reads `path` relative to that open directory when
# it is given (as os.open does), so that a caller walking a tree without following symlinks
# never writes through one.


def write_sidecar(path: str | Path, held: Held, *, temp: str, dir_fd: int | None = None) -> None:
    """Write the sidecar of `held` atomically (the temporary file `temp` renamed over it).

    A run gives one of its own temporary names (`Saver.write_sidecar`), which the sweep
    removes once the run is gone: a kill -9 between the write and the rename. Blocking.
    """
    document = {
        "fetchcli_partial": SIDECAR_VERSION,
        "url": held.url,
        "held": held.size,
        "etag": held.etag,
        "last_modified": held.last_modified,
        "content_encoding": held.content_encoding,
        "total": held.total,
    }
    data = json.dumps(document, ensure_ascii=True).encode() + b"\n"
    path = os.fspath(path)
    try:
        fd = os.open(temp, _NEW_FILE, 0o666, dir_fd=dir_fd)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(temp, path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        _unlink(temp, dir_fd)
        raise


def read_sidecar(path: str | Path, url: str, *, dir_fd: int | None = None) -> Held | None:
    """The Held a sidecar records for `url`, or None if it is missing, unreadable, too big,
    not ours, of another version or URL, or holds anything malformed. Never raises OSError."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW, dir_fd=dir_fd)
        try:
            data = os.read(fd, SIDECAR_MAX_BYTES + 1)
        finally:
            os.close(fd)
        document = json.loads(data) if len(data) <= SIDECAR_MAX_BYTES else None
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("fetchcli_partial") != SIDECAR_VERSION:
        return None
    size, total = document.get("held"), document.get("total")
    etag, modified = document.get("etag"), document.get("last_modified")
    encoding = document.get("content_encoding")
    if (
        document.get("url") != url
        or not _count(size)
        or not (total is None or (_count(total) and total >= size))
        or not (etag is None or (isinstance(etag, str) and parse_etag(etag) == etag))
        or not (modified is None or (isinstance(modified, str) and _is_date(modified)))
        or not (encoding is None or (isinstance(encoding, str) and _token_list(encoding)))
    ):
        return None
    return Held(
        url=url,
        size=size,
        etag=etag,
        last_modified=modified,
        content_encoding=encoding,
        total=total,
    )


def load_partial(partial: str | Path, url: str, *, dir_fd: int | None = None) -> Held | None:
    """What a kept partial body of `url` holds, or None when it cannot be continued. Blocking.

    The file must be a regular file (not a link) at least as long as the sidecar's count; its
    size is then what is held: writes are sequential appends, so after a kill the file holds
    a prefix that reached the kernel, possibly beyond the last count recorded. A body stored
    decoded cannot be continued by encoded offsets, so a sidecar with a Content-Encoding is
    refused here. On None the caller removes both files (`discard_partial`) and starts over.
    """
    partial = os.fspath(partial)
    held = read_sidecar(sidecar_name(partial), url, dir_fd=dir_fd)
    if held is None or held.content_encoding is not None:
        return None
    try:
        info = os.stat(partial, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode) or info.st_size < held.size:
        return None
    if held.total is not None and info.st_size > held.total:
        return None
    return held.at(info.st_size)


def discard_partial(partial: str | Path, *, dir_fd: int | None = None) -> None:
    """Remove a kept partial body and its sidecar, whichever exist. Blocking."""
    partial = os.fspath(partial)
    _unlink(sidecar_name(partial), dir_fd)
    _unlink(partial, dir_fd)


def hash_prefix(path: str | Path | int, size: int) -> HASH:
    """A sha256 fed with the first `size` bytes of the file (a path, or an open descriptor,
    read from offset 0 without moving it), to carry on with. Blocking.

    Raises OSError when the file cannot be read or is shorter than `size`.
    """
    digest = hashlib.sha256()
    fd = path if isinstance(path, int) else os.open(path, os.O_RDONLY | _NOFOLLOW)
    try:
        done = 0
        while done < size:
            block = os.pread(fd, min(HASH_BLOCK, size - done), done)
            if not block:
                msg = f"{path} holds {done} bytes, not {size}"
                raise OSError(msg)
            digest.update(block)
            done += len(block)
    finally:
        if not isinstance(path, int):
            os.close(fd)
    return digest


def hash_file(path: str | Path, *, dir_fd: int | None = None) -> tuple[int, str]:
    """(size, sha256 hex) of a regular file, never read through a symlink. Blocking.

    Raises OSError when it cannot be read or is not a regular file.
    """
    # O_NONBLOCK: a FIFO put where a file was does not hang the open (regular files ignore it).
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise IsADirectoryError(errno.EISDIR, "not a regular file", os.fspath(path))
        digest, size = hashlib.sha256(), 0
        while block := os.read(fd, HASH_BLOCK):
            digest.update(block)
            size += len(block)
        return size, digest.hexdigest()
    finally:
        os.close(fd)


def _count(value: object) -> TypeGuard[int]:
    return type(value) is int and value >= 0


def _is_date(value: str) -> bool:
    return not any(c in value for c in "\r\n\0") and parse_http_date(value) is not None


def _token_list(value: str) -> bool:
    return all(re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", p.strip()) for p in value.split(","))


def _unlink(path: str, dir_fd: int | None) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path, dir_fd=dir_fd)


# --- --update -----------------------------------------------------------------------------


def update_headers(etag: str | None, mtime: float | None) -> dict[str, str]:
    """`If-None-Match` (a well-formed ETag from the records, weak ones included: RFC 9110
    13.1.2 compares weakly) and `If-Modified-Since` (the saved file's mtime), as available."""
    headers: dict[str, str] = {}
    tag = parse_etag(etag)
    if tag is not None:
        headers["If-None-Match"] = tag
    if mtime is not None and math.isfinite(mtime) and mtime > 0:
        headers["If-Modified-Since"] = format_http_date(mtime)
    return headers


def set_mtime(path: str | Path | int, last_modified: str | None) -> bool:
    """Give a file (path or open descriptor) the time of `Last-Modified`, as `curl -R` and
    wget do; False when there is no usable date. Blocking; OSError from the filesystem."""
    when = parse_http_date(last_modified)
    if when is None:
        return False
    os.utime(path, (when, when))
    return True

"""URL -> a safe relative path under the output directory; pure functions.

`relative_path` is the `tree` layout, `host/path` (`cut_dirs` drops leading directories);
`flat_path` is the last segment alone; `row_path` is a name a manifest row asks for.

Every path component is decoded, then sanitized on its own: separators, control bytes,
characters Windows forbids, `.`/`..`, reserved device names, trailing dots and over-long
names are replaced. A name that had to change (or that carries a query) gets `~` and a short
hash of the original, so two different URLs never map to one file. Names that come through
unchanged never contain `~` plus ten hex digits, so they cannot collide with a hashed one, nor
end like a temporary file (`.fetchcli-part`).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import PurePosixPath
from urllib.parse import quote, unquote

import httpx

from fetchcli.config import LAYOUTS, Layout
from fetchcli.partial import PARTIAL_SUFFIX, SIDECAR_SUFFIX
from fetchcli.tree import TEMP_SUFFIX

__all__ = ["INDEX_NAME", "LAYOUTS", "Layout", "flat_path", "relative_path", "row_path", "with_hash"]

INDEX_NAME = "index.html"
_OWN_SUFFIXES = (TEMP_SUFFIX, PARTIAL_SUFFIX, PARTIAL_SUFFIX + SIDECAR_SUFFIX)
HASH_CHARS = 10
MAX_NAME_BYTES = 200  # room for "~hash", a temp-file prefix and suffix within 255 bytes
MAX_PATH_BYTES = 1024  # PATH_MAX is 4096 on Linux; stay well inside it with any DIR

_UNSAFE_CHARS = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]')
_HASH_LIKE = re.compile(rf"~[0-9a-f]{{{HASH_CHARS}}}")
_SEPARATORS = re.compile(r"[/\\]")
_HOST = re.compile(r"[a-z0-9.-]+")
_UNSAFE_HOST_CHARS = re.compile(r"[^a-z0-9.-]")
# RFC 3986 pchar minus "%": what a segment may hold unescaped.
_PATH_SAFE = "!$&'()*+,;=:@-._~"
_EXTENSION = re.compile(r"(\.[A-Za-z0-9]{1,10})$")
_RESERVED = frozenset(
    ["CON", "PRN", "AUX", "NUL"]
    + [f"COM{i}" for i in range(1, 10)]
    + [f"LPT{i}" for i in range(1, 10)]
)


def relative_path(url: httpx.URL, cut_dirs: int = 0) -> PurePosixPath:
    """Map a URL to `host[_port]/dir/.../name`, never absolute and never containing `..`.

    https on 443 is plain `host`; http always names its port (`host_80`); https on any other
    port is `host_PORT_tls`. So http://h/x, https://h/x and https://h:80/x never share a file.
    `cut_dirs` drops that many leading directories (as wget's --cut-dirs), never the file
    name; the URLs it makes share a name are for the caller to tell apart (`names.NameBook`).
    """
    host = _host_name(url.raw_host.decode("ascii"))
    if url.scheme == "http":
        host = f"{host}_{url.port or 80}"
    elif url.port is not None:
        host = f"{host}_{url.port}_tls"
    raw_path, has_query, query = url.raw_path.decode("ascii").partition("?")
    *dirs, last = raw_path.split("/")[1:] or [""]
    names = [_name(part) for part in dirs[cut_dirs:]]
    names.append(_file_name(last, query if has_query else None))
    path = PurePosixPath(host, *names)
    if len(str(path).encode()) > MAX_PATH_BYTES:
        name = "~" + _digest(str(url.copy_with(fragment=None)), 2 * HASH_CHARS)
        path = PurePosixPath(host, name + _extension(names[-1]))
    return path


def flat_path(url: httpx.URL) -> PurePosixPath:
    """The `flat` layout: the URL's last path segment alone, sanitized as in the tree."""
    raw_path, has_query, query = url.raw_path.decode("ascii").partition("?")
    last = raw_path.rsplit("/", 1)[-1]
    return PurePosixPath(_file_name(last, query if has_query else None))


def row_path(path: str, url: httpx.URL) -> PurePosixPath | None:
    """The name a manifest row gives, confined to the output directory; None if it has none.

    The text is taken literally (no percent-decoding); `/` and `\\` separate directories;
    empty, `.` and `..` components are dropped, so nothing climbs out. Each name is sanitized
    like a URL segment and marked with a hash when it had to change. A path ending in a
    separator is a directory: the URL's last segment goes in it.
    """
    parts = [part for part in _SEPARATORS.split(path) if part not in ("", ".", "..")]
    if not parts:
        return None
    names = [_literal_name(part) for part in parts]
    if path[-1] in "/\\":
        names.append(flat_path(url).name)
    result = PurePosixPath(*names)
    if len(str(result).encode()) > MAX_PATH_BYTES:
        name = "~" + _digest(path, 2 * HASH_CHARS)
        result = PurePosixPath(name + _extension(names[-1]))
    return result


def with_hash(path: PurePosixPath, original: str) -> PurePosixPath:
    """`dir/name.ext` -> `dir/name~<hash of original>.ext`: the name for a second claimant."""
    return path.with_name(_with_hash(path.name, original))


def _host_name(host: str) -> str:
    clean = host.lower()
    if _HOST.fullmatch(clean) and not clean.startswith(".") and ".." not in clean:
        return clean
    # IPv6 literals, underscores ("_" must stay free for the port suffix), and dot-only
    # names such as "..", which would otherwise climb out of the output directory.
    return _with_hash(_UNSAFE_HOST_CHARS.sub("_", clean).strip(".") or "_", host)


def _file_name(part: str, query: str | None) -> str:
    if part == "":
        name = INDEX_NAME
    elif part == INDEX_NAME:
        # "/" already means index.html: the literal one gets a name of its own.
        name = _with_hash(part, part)
    else:
        name = _name(part)
    if query is not None:  # even an empty one: "/p?" and "/p" are different URLs
        name = _with_hash(name, f"{part}?{query}")
    return name


def _name(part: str) -> str:
    """One percent-encoded path segment -> a safe, readable file or directory name."""
    decoded = unquote(part, errors="replace")
    clean = _UNSAFE_CHARS.sub("_", decoded)
    clean = clean.rstrip(". ") or "_"  # Windows drops trailing dots and spaces; "", ".", ".."
    if clean.split(".", 1)[0].upper() in _RESERVED:
        clean = "_" + clean
    if len(clean.encode()) > MAX_NAME_BYTES:
        clean = clean.encode()[: MAX_NAME_BYTES - 40].decode(errors="ignore")
    # Unchanged names must map back to exactly one segment: "%62" and "b" differ as URLs.
    canonical = quote(decoded, safe=_PATH_SAFE) == part
    # A name a run gives its temporary files is hashed too: a later run removes those; and
    # so is one of a kept partial body or its sidecar (--continue), which a run continues.
    hashed = _HASH_LIKE.search(decoded) or clean.endswith(_OWN_SUFFIXES)
    if clean != decoded or not canonical or hashed:
        clean = _with_hash(clean, part)
    return clean


def _literal_name(part: str) -> str:
    """A name given as text (not a URL segment) -> a safe name; hashed only when changed."""
    clean = _UNSAFE_CHARS.sub("_", part).rstrip(". ") or "_"
    if clean.split(".", 1)[0].upper() in _RESERVED:
        clean = "_" + clean
    if len(clean.encode()) > MAX_NAME_BYTES:
        clean = clean.encode()[: MAX_NAME_BYTES - 40].decode(errors="ignore")
    return clean if clean == part else _with_hash(clean, part)


def _with_hash(name: str, original: str) -> str:
    """`name.ext` -> `name~<hash of original>.ext` (the extension stays last, for file types)."""
    ext = _extension(name)
    return f"{name[: len(name) - len(ext)]}~{_digest(original, HASH_CHARS)}{ext}"


def _extension(name: str) -> str:
    match = _EXTENSION.search(name)
    if not match or match.start() == 0:
        return ""
    return match[1]


def _digest(text: str, chars: int) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:chars]

"""Checking a body against what it must be: a manifest's sha256 and size, RFC 9530 digests.

`Content-Digest` covers the message content: the bytes as sent, before any Content-Encoding
is undone. `Repr-Digest` covers the selected representation. In HTTP a content coding is part
of the representation (RFC 9110, 8.4), yet servers and guides differ on whether a gzip
response's Repr-Digest is of the gzip or of the decoded bytes; so with a Content-Encoding a
Repr-Digest passes when it matches either, and fails only when it matches neither. A 206's
Repr-Digest covers the whole representation, not this part: it is not checked. Unknown or
insecure algorithms (md5, crc32c ...), a field that does not parse (RFC 8941 says: ignore
it) and digests in trailers are not checked. The legacy `Digest` field is not read.

A mismatch is `PermanentError(ErrorKind.CHECKSUM, ...)`: the caller may retry it once, since a
mirror may have served a bad copy.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from fetchcli.errors import PermanentError
from fetchcli.kinds import ErrorKind

__all__ = [
    "ALGORITHMS",
    "BodyCheck",
    "DigestField",
    "Wanted",
    "check_size",
    "is_encoded",
    "parse_digest_field",
    "wanted_digests",
]

# RFC 9530's secure algorithms, and the hashlib names and digest sizes they map to.
ALGORITHMS: Mapping[str, tuple[str, int]] = {"sha-256": ("sha256", 32), "sha-512": ("sha512", 64)}
MANIFEST = "sha256"  # the origin of a manifest row's digest, as errors name it
PREFERENCE = ("sha-256", "sha-512")  # sha-256 first: the body's sha256 is computed anyway

DigestField = Literal["Repr-Digest", "Content-Digest"]
Covers = Literal["decoded", "encoded", "either"]

_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")
_NUMBER = re.compile(r"-?[0-9]{1,15}(\.[0-9]{1,3})?")
_STRING = re.compile(r'"(?:[^"\\\x00-\x1f\x7f]|\\["\\])*"')
_BINARY = re.compile(r":([A-Za-z0-9+/=]*):")


class _Malformed(ValueError):
    """The field is not an RFC 8941 dictionary."""


def parse_digest_field(value: str) -> dict[str, bytes]:
    """`sha-256=:BASE64:, sha-512=:...:` -> {algorithm: digest bytes}.

    Members whose value is not a byte sequence are skipped; a field that is not a valid
    structured-field dictionary gives {} (RFC 8941: a field that fails to parse is ignored).
    """
    try:
        members = _Parser(value).dictionary()
    except _Malformed:
        return {}
    return {key: item for key, item in members.items() if isinstance(item, bytes)}


class _Parser:
    """Just enough of RFC 8941 to read a dictionary and skip what it does not need."""

    def __init__(self, text: str) -> None:
        self._text = text.strip(" \t")
        self._at = 0

    def dictionary(self) -> dict[str, bytes | None]:
        members: dict[str, bytes | None] = {}
        if not self._text:
            return members
        while True:
            key = self._match(_KEY)
            if self._peek("="):
                self._at += 1
                if self._peek("("):
                    self._inner_list()
                    value = None
                else:
                    value = self._bare_item()
            else:
                value = None  # a bare key is boolean true
            self._parameters()
            members[key] = value  # the last one of a repeated key wins
            self._skip(" \t")
            if self._at == len(self._text):
                return members
            if not self._peek(","):
                raise _Malformed
            self._at += 1
            self._skip(" \t")
            if self._at == len(self._text):
                raise _Malformed  # a trailing comma

    def _inner_list(self) -> None:
        self._at += 1
        while True:
            self._skip(" ")
            if self._peek(")"):
                self._at += 1
                return
            self._bare_item()
            self._parameters()
            if not (self._peek(" ") or self._peek(")")):
                raise _Malformed

    def _bare_item(self) -> bytes | None:
        if self._peek(":"):
            encoded = self._match(_BINARY, group=1)
            try:
                return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
            except binascii.Error:
                raise _Malformed from None
        if self._peek("?"):
            self._at += 1
            if not (self._peek("0") or self._peek("1")):
                raise _Malformed
            self._at += 1
            return None
        for pattern in (_STRING, _NUMBER, _TOKEN):
            if pattern.match(self._text, self._at):
                self._match(pattern)
                return None
        raise _Malformed

    def _parameters(self) -> None:
        while self._peek(";"):
            self._at += 1
            self._skip(" ")
            self._match(_KEY)
            if self._peek("="):
                self._at += 1
                self._bare_item()

    def _match(self, pattern: re.Pattern[str], group: int = 0) -> str:
        found = pattern.match(self._text, self._at)
        if found is None:
            raise _Malformed
        self._at = found.end()
        return found[group]

    def _peek(self, char: str) -> bool:
        return self._text.startswith(char, self._at)

    def _skip(self, chars: str) -> None:
        while self._at < len(self._text) and self._text[self._at] in chars:
            self._at += 1


@dataclass(frozen=True, slots=True)
class Wanted:
    """One digest a body must have: where it came from, of which bytes, and its value."""

    origin: str  # MANIFEST, "Repr-Digest" ...
    algorithm: str  # an RFC 9530 name: "sha-256", "sha-512"
    digest: bytes
    covers: Covers


def wanted_digests(
    headers: Mapping[str, str], status: int, *, expected_sha256: str | None = None
) -> list[Wanted]:
    """The digests a response body must match: the manifest's, then the server's fields.

    `headers` is case-insensitive (an httpx.Headers); the manifest's sha256 is of the saved,
    decoded body.
    """
    wanted = []
    if expected_sha256 is not None:
        wanted.append(Wanted(MANIFEST, "sha-256", bytes.fromhex(expected_sha256), "decoded"))
    encoded = is_encoded(headers)
    fields: list[tuple[DigestField, Covers]] = [("Content-Digest", "encoded")]
    if status != 206:
        fields.append(("Repr-Digest", "either" if encoded else "encoded"))
    for name, covers in fields:
        value = headers.get(name)
        if value is None:
            continue
        digests = parse_digest_field(value)
        for algorithm in PREFERENCE:
            value_bytes = digests.get(algorithm)
            if value_bytes is not None and len(value_bytes) == ALGORITHMS[algorithm][1]:
                wanted.append(Wanted(name, algorithm, value_bytes, covers))
                break
    return wanted


def is_encoded(headers: Mapping[str, str]) -> bool:
    """True when the body comes with a Content-Encoding (what is sent is not what is saved)."""
    return headers.get("content-encoding", "identity").strip().lower() not in ("", "identity")


def check_size(expected: int | None, size: int, *, final: bool) -> None:
    """Raise a checksum error when `size` bytes already exceed, or finally miss, `expected`."""
    if expected is None or size == expected or (size < expected and not final):
        return
    got = f"at least {size}" if size > expected and not final else str(size)
    msg = f"size mismatch: expected {expected} bytes, got {got}"
    raise PermanentError(ErrorKind.CHECKSUM, msg)


class BodyCheck:
    """Hashes a body as it streams and checks every wanted digest (and size) at the end.

    Feed the bytes as received with `feed_encoded` and the decoded bytes with `feed_decoded`
    (the same bytes when there is no Content-Encoding: feed them once, to `feed_decoded`,
    and say `encoded=False`). A sha256 of the decoded body computed elsewhere (the saver
    hashes what it writes) can be handed to `verify` instead of hashing it twice.
    """

    def __init__(
        self,
        wanted: list[Wanted],
        *,
        expected_size: int | None = None,
        encoded: bool,
        decoded_sha256_given: bool = False,
    ) -> None:
        self._wanted = wanted
        self._expected_size = expected_size
        self._encoded = encoded
        self.size = 0
        self._decoded: dict[str, hashlib._Hash] = {}
        self._raw: dict[str, hashlib._Hash] = {}
        for item in wanted:
            covers_decoded = item.covers in ("decoded", "either") or not encoded
            covers_raw = encoded and item.covers in ("encoded", "either")
            given = decoded_sha256_given and item.algorithm == "sha-256"
            if covers_decoded and not given:
                self._decoded.setdefault(item.algorithm, _hasher(item.algorithm))
            if covers_raw:
                self._raw.setdefault(item.algorithm, _hasher(item.algorithm))

    def check_length(self, content_length: int | None) -> None:
        """Fail before the body when an identity Content-Length already tells the size."""
        if content_length is not None and not self._encoded:
            check_size(self._expected_size, content_length, final=True)

    def feed_encoded(self, data: bytes) -> None:
        """Take a piece of the body as received (only with a Content-Encoding)."""
        for hasher in self._raw.values():
            hasher.update(data)

    def feed_decoded(self, data: bytes) -> None:
        """Take a piece of the decoded body; fails as soon as it is over the expected size."""
        self.size += len(data)
        check_size(self._expected_size, self.size, final=False)
        for hasher in self._decoded.values():
            hasher.update(data)

    def verify(self, decoded_sha256: str | None = None) -> None:
        """Raise PermanentError("checksum") unless the size and every digest match."""
        check_size(self._expected_size, self.size, final=True)
        for item in self._wanted:
            got = []
            if item.covers != "encoded" or not self._encoded:
                got.append(self._digest(self._decoded, item.algorithm, decoded_sha256))
            if self._encoded and item.covers != "decoded":
                got.append(self._raw[item.algorithm].digest())
            if item.digest not in got:
                shown = " or ".join(_shown(item, digest) for digest in got)
                msg = f"{item.origin} mismatch: expected {_shown(item, item.digest)}, got {shown}"
                raise PermanentError(ErrorKind.CHECKSUM, msg)

    @staticmethod
    def _digest(hashes: dict[str, hashlib._Hash], algorithm: str, sha256_hex: str | None) -> bytes:
        if algorithm in hashes:
            return hashes[algorithm].digest()
        assert sha256_hex is not None, "decoded_sha256_given: verify() needs decoded_sha256"
        return bytes.fromhex(sha256_hex)


def _hasher(algorithm: str) -> hashlib._Hash:
    return hashlib.new(ALGORITHMS[algorithm][0])


def _shown(item: Wanted, digest: bytes) -> str:
    if item.origin == MANIFEST:
        return digest.hex()
    return f"{item.algorithm}=:{base64.b64encode(digest).decode()}:"

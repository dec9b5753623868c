"""Compact identities of URLs: the key a URL is known by (dedupe, resume, names, shards) and a
set of 64-bit fingerprints of such keys that holds millions in flat arrays."""

from __future__ import annotations

import hashlib
from array import array
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx
__all__ = ["FingerprintSet", "fingerprint", "url_key"]


def url_key(url: httpx.URL) -> bytes:
    """The identity of a URL for dedupe and resume: normalised, without the fragment."""
    return b"%s://%s%s" % (url.raw_scheme, url.netloc, url.raw_path)


class FingerprintSet:
    """A set of 64-bit fingerprints in flat arrays: 16-32 bytes a member, not ~70 as in set().

    A million URLs cost 16-32 MiB. Two different URLs share a fingerprint with a probability
    of about n**2 / 2**65: for ten million distinct URLs, once in some 370,000 runs.
    Growing moves the old table over a few slots per `add`, so no single call stalls the
    event loop, however large the set.
    """

    MIGRATE_PER_ADD = 8

    def __init__(self, capacity: int = 1 << 16) -> None:
        self._slots = _table(capacity)
        self._old: array[int] | None = None  # the table being moved into _slots
        self._moved = 0
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, key: bytes) -> bool:
        """Add `key`; return False when it was already there."""
        return self.add_fingerprint(fingerprint(key))

    def add_fingerprint(self, fingerprint: int) -> bool:
        """Add a key by its `fingerprint()`; return False when it was already there."""
        if self._old is not None:
            self._migrate()
        if self._find(fingerprint):
            return False
        _place(self._slots, fingerprint)
        self._count += 1
        if self._count * 2 > len(self._slots) and self._old is None:
            self._old, self._slots, self._moved = self._slots, _table(2 * len(self._slots)), 0
        return True

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and self._find(fingerprint(key))

    def _find(self, fingerprint: int) -> bool:
        return _probe(self._slots, fingerprint) or (
            self._old is not None and _probe(self._old, fingerprint)
        )

    def _migrate(self) -> None:
        old = self._old
        assert old is not None
        end = min(self._moved + self.MIGRATE_PER_ADD, len(old))
        for index in range(self._moved, end):
            # Each old entry moves once, and `add` never puts one in twice: no duplicates.
            if old[index]:
                _place(self._slots, old[index])
        self._moved = end
        if end == len(old):
            self._old = None


def _table(capacity: int) -> array[int]:
    return array("Q", [0]) * capacity  # no temporary bytes object of the same size


def _probe(slots: array[int], fingerprint: int) -> bool:
    mask = len(slots) - 1
    index = fingerprint & mask
    while (found := slots[index]) != 0:
        if found == fingerprint:
            return True
        index = (index + 1) & mask
    return False


def _place(slots: array[int], fingerprint: int) -> None:
    mask = len(slots) - 1
    index = fingerprint & mask
    while slots[index]:
        index = (index + 1) & mask
    slots[index] = fingerprint


def fingerprint(key: bytes) -> int:
    """A key's 64-bit fingerprint, never 0, as `FingerprintSet` keeps it."""
    # Zero marks an empty slot, so a (vanishingly rare) zero digest is nudged to one.
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") or 1

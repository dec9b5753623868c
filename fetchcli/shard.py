"""`--shard K/N`: which lines of a list this instance fetches, when many instances share it.

Every instance reads the whole list and keeps the lines of its own share. A line's share is
a stable hash of its host, so that all of a host's URLs go to one instance and `--per-host`
and Retry-After pauses hold across the fleet as on one machine; `--shard-by url` spreads a
list that hits a single host. The host is the key fetchcli's limiter counts by: the URL's
netloc (`host` or `host:port`, as httpx normalises it), lowercased. So `http://h/` and
`https://h/` share an instance, as they share a `--per-host` limit; `http://h:8080/` is
another host, as it is for the limiter. A line that is not a usable URL has no host: its
record comes from the share of its line number.

The hash is part of the contract: instances of different versions must agree on it, and so
must a rerun with the shards of an earlier one. It is keyed blake2b, not Python's `hash()`
(seeded per process), and keyed apart from the fingerprints of `FingerprintSet`, whose
slots would otherwise all collide in one shard (their low bits would be alike).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, cast, get_args

from fetchcli.errors import UsageError
from fetchcli.fingerprints import url_key
from fetchcli.models import BadLine

if TYPE_CHECKING:  # settings hold a Shard: `--help` must not load httpx for it
    import httpx

    from fetchcli.models import Job

__all__ = ["Shard", "ShardBy", "host_key", "parse_shard", "share_of"]

ShardBy = Literal["host", "url"]

_PERSON = b"fetchcli-shard"  # the hash's key: see the module docstring
_K8S_INDEX = "JOB_COMPLETION_INDEX"
_SLURM_ID = "SLURM_ARRAY_TASK_ID"
_SLURM_COUNT = "SLURM_ARRAY_TASK_COUNT"
_SLURM_MIN = "SLURM_ARRAY_TASK_MIN"
_SLURM_MAX = "SLURM_ARRAY_TASK_MAX"
_SLURM_STEP = "SLURM_ARRAY_TASK_STEP"


def host_key(url: httpx.URL) -> bytes:
    """The host as the limiter counts it: the netloc, lowercased."""
    return url.netloc.lower()


def share_of(key: bytes, count: int) -> int:
    """Which of `count` shares `key` falls in: stable across processes, machines, versions."""
    digest = hashlib.blake2b(key, digest_size=8, person=_PERSON).digest()
    return int.from_bytes(digest, "little") % count


@dataclass(frozen=True, slots=True)
class Shard:
    """Share `index` (from 0) of `count`, by host or by URL."""

    index: int
    count: int
    by: ShardBy = "host"

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            msg = f"not a shard: {self.index}/{self.count}"
            raise ValueError(msg)

    def share(self, item: Job | BadLine) -> int:
        """The share `item` falls in, whichever this shard is."""
        if isinstance(item, BadLine):
            return share_of(b"line:%d" % item.line, self.count)
        key = host_key(item.parsed) if self.by == "host" else url_key(item.parsed)
        return share_of(key, self.count)

    def belongs(self, item: Job | BadLine) -> bool:
        """Whether this instance fetches (or, for a bad line, records) `item`."""
        return self.count == 1 or self.share(item) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(value: str, environ: Mapping[str, str], *, by: str = "host") -> Shard:
    """`--shard K/N`, `auto/N` or `auto` (K, and N, from the scheduler's variables).

    `auto` takes K from JOB_COMPLETION_INDEX (a Kubernetes Indexed Job: N must come from
    `auto/N`, the Job's completions) or from SLURM_ARRAY_TASK_ID (a Slurm array: K counts
    from SLURM_ARRAY_TASK_MIN in SLURM_ARRAY_TASK_STEP steps, N is SLURM_ARRAY_TASK_COUNT).
    Raises UsageError, one line, on anything that does not add up.
    """
    if by not in get_args(ShardBy):
        msg = f"--shard-by must be host or url (got {by!r})"
        raise UsageError(msg)
    index_text, slash, count_text = value.strip().partition("/")
    count = _number(f"--shard {value}", count_text, "N", least=1) if slash else None
    if index_text == "auto":
        index, count = _from_scheduler(value, count, environ)
    elif count is None:
        msg = f"--shard must be K/N, auto/N or auto (got {value!r})"
        raise UsageError(msg)
    else:
        index = _number(f"--shard {value}", index_text, "K", least=0)
    if index >= count:
        msg = f"--shard {value}: K must be below N (K counts from 0, up to {count - 1}/{count})"
        raise UsageError(msg)
    return Shard(index, count, cast(ShardBy, by))  # checked above


def _from_scheduler(value: str, count: int | None, environ: Mapping[str, str]) -> tuple[int, int]:
    k8s, slurm = environ.get(_K8S_INDEX), environ.get(_SLURM_ID)
    where = f"--shard {value}"
    if k8s is not None and slurm is not None:
        msg = f"{where}: both {_K8S_INDEX} and {_SLURM_ID} are set; give --shard K/N"
        raise UsageError(msg)
    if k8s is not None:
        if count is None:
            msg = f"{where}: {_K8S_INDEX} is set: give the Job's completions as --shard auto/N"
            raise UsageError(msg)
        index = _number(where, k8s, _K8S_INDEX, least=0)
        if index >= count:
            msg = f"{where}: {_K8S_INDEX}={index} is not below N; N must be the Job's completions"
            raise UsageError(msg)
        return index, count
    if slurm is not None:
        return _from_slurm(where, count, environ)
    msg = (
        f"{where}: no scheduler index: {_K8S_INDEX} (Kubernetes Indexed Job) "
        f"and {_SLURM_ID} (Slurm array) are unset"
    )
    raise UsageError(msg)


def _from_slurm(where: str, count: int | None, environ: Mapping[str, str]) -> tuple[int, int]:
    def variable(name: str, default: int | None = None) -> int | None:
        text = environ.get(name)
        return default if text is None else _number(where, text, name, least=0)

    task = variable(_SLURM_ID)
    low = variable(_SLURM_MIN, 0)
    step = variable(_SLURM_STEP, 1) or 1
    tasks = variable(_SLURM_COUNT)
    high = variable(_SLURM_MAX)
    assert task is not None and low is not None
    if count is not None and tasks is not None and count != tasks:
        msg = f"{where}: N is {count} but {_SLURM_COUNT} is {tasks}"
        raise UsageError(msg)
    count = count if count is not None else tasks
    if count is None:
        msg = f"{where}: {_SLURM_COUNT} is unset: give the array's size as --shard auto/N"
        raise UsageError(msg)
    offset = task - low
    plain = offset >= 0 and offset % step == 0
    if high is not None:
        plain = plain and (high - low) % step == 0 and (high - low) // step + 1 == count
    if not plain:
        # An array such as --array=1,5,9 has gaps: its task IDs do not number the shards.
        msg = (
            f"{where}: the Slurm array is not a plain range "
            f"({_SLURM_MIN}={low}, {_SLURM_MAX}={high}, {_SLURM_STEP}={step}, {_SLURM_COUNT}="
            f"{count}); submit it with --array=0-{count - 1}"
        )
        raise UsageError(msg)
    return offset // step, count


def _number(where: str, text: str, name: str, *, least: int) -> int:
    text = text.strip()
    if not text.isdigit() or not text.isascii() or int(text) < least:
        kind = "a whole number" if least == 0 else f"a whole number of at least {least}"
        msg = f"{where}: {name} must be {kind} (got {text!r})"
        raise UsageError(msg)
    return int(text)

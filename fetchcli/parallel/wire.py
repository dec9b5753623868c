"""The messages between the coordinator and its engines, and how they travel.

Over a socket pair, each message is its length and then its pickle (both ends are this
same program; nothing else writes to the socket).

    to an engine:    Start  Jobs  Pause  Share  Starts  End  Stop
    from an engine:  Records  EngineStats  Pause  Done
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, NamedTuple

from fetchcli.config import Settings
from fetchcli.models import Expectation, Job, Record, Recorded

if TYPE_CHECKING:
    import httpx

__all__ = [
    "Done",
    "End",
    "EngineStats",
    "FromEngine",
    "Jobs",
    "Pause",
    "Records",
    "Share",
    "Start",
    "Starts",
    "Stop",
    "ToEngine",
    "TransferReport",
    "WireError",
    "WireJob",
    "frame",
    "read_message",
]

_HEADER = struct.Struct("!I")


class WireError(Exception):
    """Raised when the other end sent something that is not a message."""


class WireJob(NamedTuple):
    """A validated input line, for an engine to fetch: its URL as parsed here (parsing it
    again cost an engine ~30 µs a job), what a manifest row expects of it, and the name the
    coordinator gave it (engines never name: they would not see each other's names). A
    tuple, which pickles in C."""

    source: str
    line: int
    url: str
    parsed: httpx.URL
    expect: Expectation | None = None
    relpath: PurePosixPath | None = None
    recorded: Recorded | None = None  # --update: what the records say of it

    @classmethod
    def of(cls, job: Job) -> WireJob:
        """`job` for the wire."""
        return cls(job.source, job.line, job.url, job.parsed, job.expect, job.relpath, job.recorded)

    def to_job(self) -> Job:
        """The job again, on this side."""
        return Job(
            self.source, self.line, self.url, self.parsed, self.expect, self.relpath, self.recorded
        )


class TransferReport(NamedTuple):
    """How far one large body has come, in an engine."""

    key: int
    url: str
    expected: int | None
    size: int


@dataclass(frozen=True, slots=True)
class Start:
    """The engine's settings (its share of the limits) and the run's deadline, if any."""

    settings: Settings
    deadline_at: float | None  # time.monotonic(): one clock for the processes of this machine


@dataclass(frozen=True, slots=True)
class Jobs:
    """More jobs for the engine."""

    jobs: list[WireJob]


@dataclass(frozen=True, slots=True)
class Pause:
    """A host asked for quiet (Retry-After on 429/503): either direction."""

    host: str
    seconds: float


@dataclass(frozen=True, slots=True)
class Share:
    """The engine's share of --limit-rate from now on, in bytes per second."""

    rate: float


@dataclass(frozen=True, slots=True)
class Starts:
    """The engine's share of --rate from now on, in requests started per second (never 0,
    which would mean no limit)."""

    rate: float


@dataclass(frozen=True, slots=True)
class End:
    """No more jobs: finish those held, then say Done."""


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop now (Ctrl-C, an error elsewhere): cancel, clean up, exit."""


@dataclass(frozen=True, slots=True)
class Records:
    """Records of finished jobs."""

    records: list[Record]


@dataclass(frozen=True, slots=True)
class EngineStats:
    """The engine's live counters, for the display."""

    in_flight: int
    retrying: int
    retries: int
    received: int  # body bytes that arrived, finished or not
    transfers: list[TransferReport]
    held: int = 0  # jobs waiting for a time (a host's pause, a backoff), not for a slot
    paused: int = 0  # of those, the jobs of paused hosts


@dataclass(frozen=True, slots=True)
class Done:
    """The engine ends cleanly: its records are all sent, and a job without one was stopped."""


ToEngine = Start | Jobs | Pause | Share | Starts | End | Stop
FromEngine = Records | EngineStats | Pause | Done
_MESSAGES = (Start, Jobs, Pause, Share, Starts, End, Stop, Records, EngineStats, Done)


def frame(message: ToEngine | FromEngine) -> bytes:
    """One message as bytes: its length, then its pickle."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(payload)) + payload


async def read_message(reader: asyncio.StreamReader) -> ToEngine | FromEngine:
    """The next message from `reader`; IncompleteReadError at the end, WireError if garbled."""
    (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    payload = await reader.readexactly(size)
    try:
        message = pickle.loads(payload)
    except Exception as exc:  # any unpickling failure means the same: not our message
        msg = f"unreadable message ({type(exc).__name__}: {exc})"
        raise WireError(msg) from exc
    if not isinstance(message, _MESSAGES):
        msg = f"unexpected message of type {type(message).__name__}"
        raise WireError(msg)
    return message

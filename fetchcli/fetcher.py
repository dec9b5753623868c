"""Fetch one URL: attempts with per-attempt timeouts, body checks, and retries (each request
and its redirects: fetchcli/hops.py).

A job's way is in steps, so that nothing waits in a worker: `prepare()` once (is there
anything to fetch? a kept partial body to continue?), then `attempt()` once per request, each
returning a `Record` or `Again(pending, delay)`: the frontier (fetchcli/frontier.py) holds the
job until the retry is due and its host allows it. `fetch()` runs the same steps alone,
sleeping between attempts (the library's tests and single-URL callers). `backoff_delay()` is
a pure function of the attempt number, the policy and a random draw.
What the attempts of one URL share (the body so far, its validators) is in a `Carry`, held by
its `Pending`: a retry after a cut asks for the rest, and with --update a saved file is asked
for only if it changed; when the job ends, however it ends, `Pending.carry` is closed (a cut
body kept for --continue, or removed). With --limit-rate each chunk is paid for on the run's
`Bandwidth` before the next is read; those waits do not count against `-t` (the cap is the
user's choice, not the server's slowness), while the per-read `--read-timeout` stays off
during them.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import itertools
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

import httpx

from fetchcli.bandwidth import Bandwidth, Flow
from fetchcli.body import Body
from fetchcli.carry import Carry
from fetchcli.client import content_length
from fetchcli.config import HOST_PAUSE_STATUSES, HttpOptions, RetryPolicy, Settings, Timeouts
from fetchcli.decoding import decoder_for
from fetchcli.digests import BodyCheck, is_encoded, wanted_digests
from fetchcli.errors import FetchError, PermanentError, TransientError
from fetchcli.frontier import Again
from fetchcli.hops import Hops, drain
from fetchcli.kinds import ErrorKind, Skipped
from fetchcli.models import Job, Record, Recorded
from fetchcli.partial import (
    Decision,
    Held,
    Verdict,
    continue_headers,
    parse_etag,
    parse_http_date,
)
from fetchcli.paths import relative_path
from fetchcli.shard import host_key
from fetchcli.sink import OnDisk, Saved, Saver
from fetchcli.stats import SHOWN_TRANSFER_BYTES, RunStats, Transfer
from fetchcli.transport_errors import body_cut_short, received, seconds

__all__ = ["Fetcher", "Pending", "backoff_delay", "host_of", "parse_retry_after"]

# uvloop's timers count whole milliseconds: the deadline's own timer, or one cutting an
# attempt at it, may fire that much before the loop's clock reaches it.
DEADLINE_SLACK = 0.002


def backoff_delay(
    attempt: int,
    policy: RetryPolicy,
    random: Callable[[], float],
    retry_after: float | None = None,
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based).

    Retry k (from 0) waits `backoff * 2**k` plus up to half as much again at random, so a
    crowd of clients does not come back in step. A server's `Retry-After` replaces it. Both
    are capped by `backoff_max`.
    """
    if retry_after is not None:
        return min(max(retry_after, 0.0), policy.backoff_max)
    try:
        base = min(policy.backoff * 2.0 ** (attempt - 1), policy.backoff_max)
    except OverflowError:
        base = policy.backoff_max
    return min(base + random() * base / 2, policy.backoff_max)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delay-seconds or HTTP-date); None when unusable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(seconds, 0.0) if math.isfinite(seconds) else None


@dataclass(slots=True)
class _Progress:
    """How far one attempt got, for the message when its time runs out."""

    status: int | None = None  # once the response head arrived
    expected: int | None = None  # Content-Length
    received: int = 0  # body bytes as sent, before decoding
    url: str | None = None  # where the request went once a server answered (redirects)

    def __str__(self) -> str:
        if self.status is None:
            return "no response"
        return f"{received(self.received, self.expected)} received"


@dataclass(frozen=True, slots=True)
class _Fetched:
    status: int
    path: str | None
    size: int
    sha256: str | None
    final_url: str
    content_type: str | None
    etag: str | None = None
    last_modified: str | None = None
    skipped: Skipped | None = None  # not_modified: a 304 left the saved file as it was


@dataclass(frozen=True, slots=True)
class _Turn:
    """One attempt's own things: how far it got, its time limit, its row in the display."""

    progress: _Progress
    limit: asyncio.Timeout
    transfer_id: int


def host_of(job: Job) -> str:
    """The host a job's limits and pauses count by, as `--shard` and the engines deal hosts:
    its netloc (`host` or `host:port`), lowercased."""
    return host_key(job.parsed).decode("ascii")


@dataclass(slots=True, eq=False)
class Pending:
    """A job on its way: what its attempts share, from `prepare()` to its record."""

    job: Job
    host: str
    relpath: PurePosixPath | None  # where its body goes (or is looked for); None: nowhere
    carry: Carry  # the body so far and its validators, across attempts
    attempts: int = 0
    started: float | None = None  # when its first attempt started (the Fetcher's clock)
    checksum_retried: bool = False  # a body that failed its checksum gets one more attempt


class Fetcher:
    """Fetches jobs into records: the steps of a job (prepare, attempt) and an attempt's
    anatomy. `pause_host(host, seconds)` hears of every Retry-After that pauses a host."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        settings: Settings,
        saver: Saver,
        stats: RunStats,
        random: Callable[[], float],
        *,
        pause_host: Callable[[str, float], None] = lambda host, seconds: None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        bandwidth: Bandwidth | None = None,
    ) -> None:
        self._http: HttpOptions = settings.http
        self._timeouts: Timeouts = settings.timeouts
        self._retry: RetryPolicy = settings.retry
        self._skip_existing = settings.output.skip_existing
        self._continue = settings.output.continue_partial and saver.save
        self._update = settings.output.update and saver.save
        self._bandwidth = bandwidth
        self._pause_host = pause_host
        self._saver = saver
        self._stats = stats
        self._random = random
        self._clock = clock
        self._sleep = sleep
        self._ids = itertools.count()
        self._hops = Hops(client, settings.http)

    async def fetch(self, job: Job, deadline: float | None = None) -> Record:
        """Fetch one job alone, sleeping out each retry's delay; never raises for a failed URL.

        `deadline` is an event-loop time: past it, the URL is recorded as unfinished.
        """
        try:
            async with asyncio.timeout_at(deadline):
                prepared = await self.prepare(job)
        except TimeoutError:
            prepared = Pending(job, host_of(job), None, Carry(job.url))
        if isinstance(prepared, Record):
            return prepared
        while True:
            outcome = await self.attempt(prepared, deadline)
            if isinstance(outcome, Record):
                return outcome
            try:
                async with asyncio.timeout_at(deadline):
                    await self._sleep(outcome.delay)
            except TimeoutError:
                return await self.unfinished(prepared)

    @property
    def looks_on_disk(self) -> bool:
        """Whether `prepare()` may wait for the disk (else it returns at once)."""
        return self._skip_existing or self._continue or self._update

    async def prepare(self, job: Job) -> Pending | Record:
        """Before any request: the job's state, or its record when it needs no fetch."""
        relpath = None
        if self._saver.save or self._skip_existing:
            relpath = job.relpath or relative_path(job.parsed)  # the producer's name, if any
        if self._skip_existing and relpath is not None:
            found = await self._saver.existing(relpath)
            if found is not None and _as_expected(job, found.size, found.sha256):
                return Record.exists(job, *found)
        pending = Pending(job, host_of(job), relpath, Carry(job.url, keep=self._continue))
        await self._prepare(job, relpath, pending.carry)
        return pending

    async def _prepare(self, job: Job, relpath: PurePosixPath | None, carry: Carry) -> None:
        """Before the first attempt: a kept partial body to continue (--continue), the saved
        file to ask about (--update)."""
        if relpath is None or not (self._continue or self._update):
            return
        found = await self._saver.look(relpath)
        if found.partial and self._continue and self._http.method == "GET":
            resumed = await self._saver.resume(relpath, job.url)
            if resumed is not None:
                carry.resumed(*resumed)
        if self._update and found.size is not None:
            carry.etag = None if job.recorded is None else job.recorded.etag
            carry.saved, carry.hashed = await self._as_recorded(relpath, found, job.recorded)

    async def _as_recorded(
        self, relpath: PurePosixPath, found: OnDisk, recorded: Recorded | None
    ) -> tuple[OnDisk | None, Saved | None]:
        """The saved file to ask about (--update), if it is what the records say: one that is
        not (as wget -N compares sizes) is asked for in full, for its 304 would keep it
        damaged. Given a sha256 and the right size, it is hashed now, for the 304's record."""
        if recorded is None or recorded.size is None:
            return found, None
        if found.size != recorded.size:
            return None, None
        if recorded.sha256 is None:
            return found, None
        hashed = await self._saver.existing(relpath, found.size)
        if hashed is None or hashed.sha256 != recorded.sha256:
            return None, None
        return found, hashed

    async def attempt(
        self, pending: Pending, deadline: float | None = None
    ) -> Record | Again[Pending]:
        """Make one attempt: the job's record, or `Again(pending, delay)` for a retry.

        Called when the job's host and the limits allow a request now. `deadline` is an
        event-loop time: an attempt cut by it, or a retry that could not start before it,
        gives the "deadline exceeded" record. With a record, the job's carry is closed.
        """
        try:
            outcome = await self._attempt_once(pending, deadline)
        except BaseException:
            await pending.carry.close()  # Ctrl-C: a cut body is kept (--continue) or removed
            raise
        if isinstance(outcome, Record):
            await pending.carry.close()
        return outcome

    async def _attempt_once(
        self, pending: Pending, deadline: float | None
    ) -> Record | Again[Pending]:
        if deadline is not None and asyncio.get_running_loop().time() >= deadline - DEADLINE_SLACK:
            return self._unfinished(pending)  # handed out as the deadline passed: not sent
        stats = self._stats
        if pending.attempts:
            stats.retrying -= 1  # its wait is over
        if pending.started is None:
            pending.started = self._clock()
        pending.attempts += 1
        stats.in_flight += 1
        try:
            async with asyncio.timeout_at(deadline):
                fetched = await self._attempt(pending.job, pending.relpath, pending.carry)
        except TransientError as exc:
            return self._after_transient(pending, exc, deadline)
        except PermanentError as exc:
            if exc.kind != ErrorKind.CHECKSUM or pending.checksum_retried:
                pending.carry.permanent = True
                return self._failed(pending, exc)
            # Once more, whatever --retries says: a mirror may have served a bad copy.
            pending.checksum_retried = True
            again = TransientError(exc.kind, str(exc), status=exc.status)
            return self._after_transient(pending, again, deadline, always=True)
        except TimeoutError:
            return self._unfinished(pending, waiting=False)
        finally:
            stats.in_flight -= 1
        return self._succeeded(pending, fetched)

    async def unfinished(self, pending: Pending) -> Record:
        """The record of a job the deadline left waiting for its next (or first) attempt."""
        record = self._unfinished(pending)
        await pending.carry.close()
        return record

    async def release(self, pending: Pending) -> None:
        """A job that will not be attempted again (the run was stopped): close its carry."""
        await pending.carry.close()

    def _unfinished(self, pending: Pending, *, waiting: bool = True) -> Record:
        """`waiting`: it was between attempts (not in one)."""
        if waiting and pending.attempts:
            self._stats.retrying -= 1
        return self._failed(pending, TransientError(ErrorKind.DEADLINE, "deadline exceeded"))

    def _after_transient(
        self,
        pending: Pending,
        exc: TransientError,
        deadline: float | None,
        *,
        always: bool = False,  # retry even past --retries
    ) -> Record | Again[Pending]:
        if exc.retry_after is not None and exc.status in HOST_PAUSE_STATUSES:
            # Even when this URL has no retries left: the host asked for quiet.
            self._pause_host(pending.host, min(exc.retry_after, self._retry.backoff_max))
        if pending.attempts > self._retry.retries and not always:
            return self._failed(pending, exc)
        delay = backoff_delay(pending.attempts, self._retry, self._random, exc.retry_after)
        if deadline is not None and asyncio.get_running_loop().time() + delay >= deadline:
            return self._unfinished(pending, waiting=False)  # its retry would come too late
        self._stats.retries += 1
        self._stats.retrying += 1
        return Again(pending, delay)

    def _elapsed(self, pending: Pending) -> float:
        return 0.0 if pending.started is None else self._clock() - pending.started

    def _failed(self, pending: Pending, exc: TransientError | PermanentError) -> Record:
        return Record.failed(pending.job, exc, pending.attempts, self._elapsed(pending))

    async def _attempt(self, job: Job, relpath: PurePosixPath | None, carry: Carry) -> _Fetched:
        progress = _Progress()
        limit = asyncio.timeout(self._timeouts.total)
        transfer_id = next(self._ids)
        try:
            try:
                async with limit:
                    return await self._exchange(
                        job, relpath, carry, _Turn(progress, limit, transfer_id)
                    )
            except TimeoutError:
                raise self._timed_out(limit, progress) from None
        except FetchError as exc:
            exc.final_url = progress.url  # a failure after redirects names who answered
            if isinstance(exc, TransientError):
                if not carry.continuable():
                    await carry.drop()  # the next attempt starts over
                raise
            if exc.kind == ErrorKind.CHECKSUM and exc.status is None:
                exc.status = progress.status  # the body's check knows no response
            await carry.drop()  # nothing of it is worth keeping, for a retry either
            raise
        finally:
            self._stats.transfers.pop(transfer_id, None)

    async def _exchange(
        self, job: Job, relpath: PurePosixPath | None, carry: Carry, turn: _Turn
    ) -> _Fetched:
        """One request and its answer (two requests when a Range answer cannot be trusted)."""
        response = await self._hops.send(job.parsed, carry.request_headers(), turn.progress)
        decision = carry.judge(response.status_code, response.headers)
        if decision is not None and decision.verdict is Verdict.REFETCH:
            await drain(response)
            await response.aclose()
            await carry.drop()
            response = await self._hops.send(job.parsed, carry.request_headers(), turn.progress)
            decision = None
        turn.progress.status = status = response.status_code
        try:
            if decision is None:
                if status == 304 and carry.conditional and relpath is not None:
                    return await self._not_modified(response, relpath, carry)
                if not 200 <= status < 300:
                    await drain(response)
                    self._raise_for_status(response)
            if self._http.method == "HEAD":
                return self._fetched(response, None, 0, None)
            fresh = decision is None or decision.verdict is Verdict.REPLACE
            if fresh:
                await self._fresh_body(job, relpath, carry, response)
                carry.check = _body_check(job, response)
            elif carry.check is None and carry.body is not None:
                carry.check = _continued_check(job, carry.body.size)  # a kept body's
            if decision is not None and decision.verdict is Verdict.COMPLETE:
                await drain(response)
                return await self._finish(response, carry, status=200)
            carry.note(response.headers, fresh=fresh)
            await self._read_body(response, carry, turn, decision)
            return await self._finish(response, carry, status=status)
        finally:
            await response.aclose()

    async def _fresh_body(
        self, job: Job, relpath: PurePosixPath | None, carry: Carry, response: httpx.Response
    ) -> None:
        """A body from byte 0 for `response`: a new one, or the held one emptied (a 200 to a
        Range request). With --continue it goes to a kept file when it could be continued."""
        decoder = decoder_for(response.headers.get("content-encoding"))
        describe = functools.partial(
            Held.from_response, job.url, response.status_code, response.headers
        )
        held: Held | Callable[[], Held] = describe  # made when first needed (Carry.held)
        keep = None
        if self._continue:
            held = describe()
            if held.content_encoding is None and continue_headers(held.at(1)):
                keep = held
        if carry.body is None:
            body = self._saver.body(relpath if self._saver.save else None, keep=keep)
        else:
            body = carry.body
            await body.restart(keep)
        carry.start(body, held, decoder)

    async def _finish(self, response: httpx.Response, carry: Carry, *, status: int) -> _Fetched:
        """Place the whole body: its file gets the Last-Modified of its response."""
        body = carry.body
        assert body is not None
        # Checked before the rename: a body that fails keeps no file.
        verify = None if carry.check is None else carry.check.verify
        path, digest = await body.finish(verify, mtime=parse_http_date(carry.last_modified))
        carry.body = None
        return _Fetched(
            status=status,
            path=path,
            size=body.size,
            sha256=digest,
            final_url=str(response.request.url),
            content_type=carry.content_type,
            etag=carry.response_etag,
            last_modified=carry.last_modified,
        )

    async def _not_modified(
        self, response: httpx.Response, relpath: PurePosixPath, carry: Carry
    ) -> _Fetched:
        """A 304 to a conditional request: the saved file is left as it is, and described."""
        await drain(response)
        found = carry.hashed or await self._saver.existing(
            relpath, carry.saved.size if carry.saved else None
        )
        if found is None:
            msg = f"cannot read {self._saver.root / relpath}: it is gone or not a file"
            raise PermanentError(ErrorKind.IO, msg, status=response.status_code)
        path, size, digest = found
        carry.note(response.headers, fresh=True)
        return _Fetched(
            status=response.status_code,
            path=path,
            size=size,
            sha256=digest,
            final_url=str(response.request.url),
            content_type=carry.content_type,
            etag=carry.response_etag or carry.etag,
            last_modified=carry.last_modified,
            skipped=Skipped.NOT_MODIFIED,
        )

    def _raise_for_status(self, response: httpx.Response) -> None:
        status = response.status_code
        reason = response.reason_phrase
        message = f"HTTP {status} {reason}".strip()
        if status in self._retry.statuses:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            raise TransientError(ErrorKind.HTTP, message, status=status, retry_after=retry_after)
        if 300 <= status < 400:
            if not self._http.follow_redirects:
                message += " (redirects not followed)"
            raise PermanentError(ErrorKind.REDIRECT, message, status=status)
        raise PermanentError(ErrorKind.HTTP, message, status=status)

    async def _read_body(
        self, response: httpx.Response, carry: Carry, turn: _Turn, decision: Decision | None
    ) -> None:
        body, decoder, progress = carry.body, carry.decoder, turn.progress
        assert body is not None
        expected = progress.expected = content_length(response.headers)
        total = decision.total if decision is not None else expected
        if total is None or total >= SHOWN_TRANSFER_BYTES:
            self._stats.transfers[turn.transfer_id] = Transfer(carry.url, total, body)
        encoding = response.headers.get("content-encoding")
        status = response.status_code  # a failed body still had a response: say which
        if not encoding and expected is not None:
            # Before reading any; a continued body's kept bytes count too.
            self._check_size(body.size + expected, status, encoding, announced=True)
        check = carry.check
        if check is not None and decision is None:
            check.check_length(expected)  # a wrong size fails before the body
        raw_check = check if check is not None and encoding else None  # digests of the bytes sent
        flow = self._bandwidth.flow() if self._bandwidth is not None else None
        async for chunk in response.aiter_raw():
            progress.received += len(chunk)
            self._stats.received += len(chunk)  # every byte that arrived, for the summary
            carry.in_step = False
            if raw_check is not None:
                raw_check.feed_encoded(chunk)
            await self._take(decoder.decode(chunk), body, status, encoding, check)
            carry.raw += len(chunk)
            carry.in_step = True
            if flow is not None:
                await self._pay(flow, len(chunk), turn.limit)
        await self._take(decoder.flush(), body, status, encoding, check)  # a compressed one's end
        if expected is not None and progress.received < expected:
            raise body_cut_short(progress.received, expected, status)

    async def _pay(self, flow: Flow, size: int, limit: asyncio.Timeout) -> None:
        """Wait until the cap lets `size` more bytes through; the attempt's -t is moved on
        by the wait, so a capped transfer is timed as if it were not."""
        when = limit.when()
        if when is None:
            await flow.consume(size)
            return
        limit.reschedule(None)  # a long wait (a big chunk, a low cap) must not run it out
        began = self._clock()
        try:
            await flow.consume(size)
        finally:
            limit.reschedule(when + (self._clock() - began))

    async def _take(
        self,
        pieces: Iterator[bytes],
        body: Body,
        status: int,
        encoding: str | None,
        check: BodyCheck | None = None,
    ) -> None:
        """Decoded pieces into the body, each checked against --max-bytes (and an expected
        size: over it fails at once) as it comes."""
        for piece in pieces:
            if check is not None:
                check.feed_decoded(piece)
            if body.feed(piece):
                await body.spill()
            self._check_size(body.size, status, encoding)

    def _check_size(
        self, size: int, status: int, encoding: str | None, *, announced: bool = False
    ) -> None:
        """The one --max-bytes check: a body over it fails the URL and is not kept."""
        limit = self._http.max_bytes
        if limit is None or size <= limit:
            return
        if announced:
            msg = f"body of {size:,} bytes is over --max-bytes {limit:,}"
        else:
            msg = f"body over --max-bytes {limit:,}" + (" after decoding" if encoding else "")
        raise PermanentError(ErrorKind.TOO_LARGE, msg, status=status)

    def _timed_out(self, limit: asyncio.Timeout, progress: _Progress) -> TransientError:
        total = self._timeouts.total
        if total is None or not limit.expired():
            # A TimeoutError from below the transport, not our limit (-t 0 has none).
            return TransientError(ErrorKind.TIMEOUT, "timed out", status=progress.status)
        msg = f"timed out after {seconds(total)} ({progress})"
        return TransientError(ErrorKind.TIMEOUT, msg, status=progress.status)

    def _fetched(
        self, response: httpx.Response, path: str | None, size: int, digest: str | None
    ) -> _Fetched:
        """What a bodiless answer (HEAD) gives."""
        return _Fetched(
            status=response.status_code,
            path=path,
            size=size,
            sha256=digest,
            final_url=str(response.request.url),
            content_type=response.headers.get("content-type"),
            etag=parse_etag(response.headers.get("etag")),
            last_modified=response.headers.get("last-modified"),
        )

    def _succeeded(self, pending: Pending, fetched: _Fetched) -> Record:
        return Record.succeeded(
            pending.job,
            status=fetched.status,
            path=fetched.path,
            size=fetched.size,
            sha256=fetched.sha256,
            final_url=fetched.final_url,
            content_type=fetched.content_type,
            attempts=pending.attempts,
            elapsed=self._elapsed(pending),
            etag=fetched.etag,
            last_modified=fetched.last_modified,
            skipped=fetched.skipped,
        )


def _body_check(job: Job, response: httpx.Response) -> BodyCheck | None:
    """What this body must be (a row's sha256 and size, the server's digests), or None."""
    expect = job.expect
    sha256 = None if expect is None else expect.sha256
    wanted = wanted_digests(response.headers, response.status_code, expected_sha256=sha256)
    size = None if expect is None else expect.size
    if not wanted and size is None:
        return None
    # The saver hashes the decoded body with sha-256 anyway: that hash is reused.
    encoded = is_encoded(response.headers)
    return BodyCheck(wanted, expected_size=size, encoded=encoded, decoded_sha256_given=True)


def _continued_check(job: Job, held: int) -> BodyCheck | None:
    """The check of a body continued from a kept file of an earlier run: a row's sha256 and
    size only (a 206's digests cover its part, and the kept part went unchecked), with the
    `held` bytes counted in."""
    expect = job.expect
    if expect is None or (expect.sha256 is None and expect.size is None):
        return None
    wanted = wanted_digests({}, 200, expected_sha256=expect.sha256)
    check = BodyCheck(wanted, expected_size=expect.size, encoded=False, decoded_sha256_given=True)
    check.size = held
    return check


def _as_expected(job: Job, size: int, sha256: str) -> bool:
    """Whether a file already there is what a manifest row expects (anything, for a URL)."""
    expect = job.expect
    if expect is None:
        return True
    return expect.size in (None, size) and expect.sha256 in (None, sha256)

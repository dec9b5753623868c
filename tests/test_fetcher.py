"""The Fetcher against a mocked transport (respx): retries, timeouts, redirects, bodies."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import hashlib
import random
from pathlib import Path

import httpx
import pytest
import respx

from fetchcli.body import SPILL_BYTES
from fetchcli.config import RETRY_STATUSES, RetryPolicy
from fetchcli.fetcher import backoff_delay, parse_retry_after
from fetchcli.frontier import Again
from fetchcli.models import Expectation, Record
from tests.helpers import fetch_rig, job

pytestmark = pytest.mark.anyio

URL = "https://example.com/file.txt"


async def test_503_then_200_is_retried_and_every_attempt_counted(respx_mock: respx.MockRouter):
    route = respx_mock.get(URL).mock(
        side_effect=[httpx.Response(503), httpx.Response(503), httpx.Response(200, text="hi")]
    )
    async with fetch_rig(respx_mock) as rig:
        record = await rig.fetcher.fetch(job(URL))
    assert record.ok and record.status == 200 and record.attempts == 3
    assert route.call_count == 3
    assert rig.stats.retries == 2
    assert record.sha256 == hashlib.sha256(b"hi").hexdigest()


async def test_connect_error_is_retried(respx_mock: respx.MockRouter):
    route = respx_mock.get(URL).mock(
        side_effect=[httpx.ConnectError("refused"), httpx.Response(200, text="ok")]
    )
    async with fetch_rig(respx_mock) as rig:
        record = await rig.fetcher.fetch(job(URL))
    assert record.ok and record.attempts == 2 and route.call_count == 2


async def test_404_is_final_at_once(respx_mock: respx.MockRouter):
    route = respx_mock.get(URL).mock(return_value=httpx.Response(404))
    async with fetch_rig(respx_mock, retries=5) as rig:
        record = await rig.fetcher.fetch(job(URL))
    assert not record.ok
    assert (record.status, record.attempts, record.error_kind) == (404, 1, "http")
    assert record.error == "HTTP 404 Not Found"
    assert route.call_count == 1
    assert rig.sleeps == []


async def test_retries_run_out(respx_mock: respx.MockRouter):
    route = respx_mock.get(URL).mock(return_value=httpx.Response(503))
    async with fetch_rig(respx_mock, retries=2) as rig:
        record = await rig.fetcher.fetch(job(URL))
    assert not record.ok and record.status == 503 and record.attempts == 3
    assert route.call_count == 3


@pytest.mark.parametrize("status", sorted(RETRY_STATUSES))
async def test_transient_statuses_are_retried(respx_mock: respx.MockRouter, status: int):
    respx_mock.get(URL).mock(side_effect=[httpx.Response(status), httpx.Response(200)])
    async with fetch_rig(respx_mock) as rig:
        record = await rig.fetcher.fetch(job(URL))
    assert record.ok and record.attempts == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 410, 451, 501, 505])
async def test_other_error_statuses_are_not_retried(respx_mock: respx.MockRouter, status: int):
    route = respx_mock.get(URL).mock(return_value=httpx.Response(status))
    async with fetch_rig(respx_mock) as rig:
        record = await rig.fetcher.fetch(job(URL))
    assert not record.ok and record.attempts == 1 and route.call_count == 1


async def test_retry_after_seconds_is_honoured_and_pauses_the_host(respx_mock: respx.MockRouter):
    respx_mock.get(URL).mock(
        side_effect=[httpx.Response(429, headers={"Retry-After": "7"}), httpx.Response(200)]
    )
    async with fetch_rig(respx_mock) as rig:
        record = await rig.fetcher.fetch(job(URL))
    assert record.ok and record.attempts == 2
    assert rig.sleeps == [7.0]
    assert rig.pauses == [7.0]  # the whole host waits, not only this URL


async def test_retry_after_is_capped_by_backoff_max(respx_mock: respx.MockRouter):
    respx_mock.get(URL).mock(
        side_effect=[httpx.Response(503, headers={"Retry-After": "3600"}), httpx.Response(200)]
    )
    async with fetch_rig(respx_mock, backoff_max=5) as rig:
        record = await rig.fetcher.fetch(job(URL))
    assert record.ok and rig.sleeps == [5.0]


async def test_a_429_pauses_the_host_even_with_no_retries_left(respx_mock: respx.MockRouter):
    respx_mock.get(URL).mock(return_value=httpx.Response(429, headers={"Retry-After": "7"}))
    async with fetch_rig(respx_mock, retries=0) as rig:
        record = await rig.fetcher.fetch(job(URL))
        paused = rig.hosts.host_pause("example.com")
    assert not record.ok and record.attempts == 1 and 6.0 < paused <= 7.0


async def test_a_user_agent_header_replaces_the_default(respx_mock: respx.MockRouter):
    route = respx_mock.get(URL).mock(return_value=httpx.Response(200))
    async with fetch_rig(respx_mock, headers=["user-agent: mine/1"]) as rig:
        await rig.fetcher.fetch(job(URL))
    assert route.calls.last.request.headers.get_list("user-agent") == ["mine/1"]


async def test_skip_existing_works_without_saving(respx_mock: respx.MockRouter, tmp_path: Path):
    route = respx_mock.get(URL).mock(return_value=httpx.Response(200))
    (tmp_path / "example.com").mkdir()
    (tmp_path / "example.com" / "file.txt").write_bytes(b"here")
    async with fetch_rig(respx_mock, tmp_path, skip_existing=True, save=False) as rig:
        record = await rig.fetcher.fetch(job(URL))
    assert record.skipped == "exists" and not route.called


async def test_a_500_with_retry_after_does_not_pause_the_host(respx_mock: respx.MockRouter):
    respx_mock.get(URL).mock(
        side_effect=[httpx.Response(500, headers={"Retry-After": "9"}), httpx.Response(200)]
    )
    async with fetch_rig(respx_mock) as rig:
        await rig.fetcher.fetch(job(URL))
    assert rig.sleeps == [9.0] and rig.pauses == [0.0]


async def test_backoff_grows_between_attempts(respx_mock: respx.MockRouter):
    respx_mock.get(URL).mock(return_value=httpx.Response(502))
    async with fetch_rig(respx_mock, retries=4, backoff=1, backoff_max=100) as rig:
        await rig.fetcher.fetch(job(URL))
    assert len(rig.sleeps) == 4
    for attempt, slept in enumerate(rig.sleeps, start=1):
        base = 2.0 ** (attempt - 1)
        assert base <= slept <= 1.5 * base


async def test_a_read_timeout_is_a_clean_transient_error(respx_mock: respx.MockRouter):
    route = respx_mock.get(URL).mock(side_effect=httpx.ReadTimeout("slow"))
    async with fetch_rig(respx_mock, retries=1) as rig:
        record = await rig.fetcher.fetch(job(URL))
    assert not record.ok and record.error_kind == "timeout" and record.attempts == 2
    assert route.call_count == 2


async def test_the_attempt_timeout_cuts_a_response_that_never_comes(respx_mock: respx.MockRouter):
    async def never(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    respx_mock.get(URL).mock(side_effect=never)
    async with fetch_rig(respx_mock, retries=0, timeout=0.05) as rig:
        record = await rig.fetcher.fetch(job(URL))
    assert not record.ok and record.error_kind == "timeout"
    assert record.error == "timed out after 0.05 s (no response)"


async def test_the_attempt_timeout_says_how_much_of_the_body_arrived(respx_mock: respx.MockRouter):
    async def stalls_halfway():
        yield b"x" * 1000
        await asyncio.Event().wait()

    respx_mock.get(URL).mock(
        return_value=httpx.Response(
            200, headers={"Content-Length": "2000"}, content=stalls_halfway()
        )
    )
    async with fetch_rig(respx_mock, retries=0, timeout=0.05) as rig:
        record = await rig.fetcher.fetch(job(URL))
    assert record.error_kind == "timeout" and record.status == 200
    assert record.error == "timed out after 0.05 s (1,000 of 2,000 bytes received)"


async def test_a_timeout_from_below_with_no_attempt_limit_is_still_a_record(
    respx_mock: respx.MockRouter,
):
    # -t 0: no limit of our own, so a TimeoutError must come from below and say so.
    respx_mock.get(URL).mock(side_effect=TimeoutError)
    async with fetch_rig(respx_mock, retries=0, timeout=0) as rig:
        record = await rig.fetcher.fetch(job(URL))
    assert not record.ok and record.error_kind == "timeout" and record.error == "timed out"


async def test_the_deadline_records_the_url_as_unfinished(respx_mock: respx.MockRouter):
    async def never(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    respx_mock.get(URL).mock(side_effect=never)
    async with fetch_rig(respx_mock) as rig:
        deadline = asyncio.get_running_loop().time() + 0.05
        record = await rig.fetcher.fetch(job(URL), deadline)
    assert not record.ok and record.error == "deadline exceeded" and record.attempts == 1


async def test_redirects_are_followed_and_the_final_url_recorded(respx_mock: respx.MockRouter):
    respx_mock.get("http://example.com/a").mock(
        return_value=httpx.Response(301, headers={"Location": "/b"})
    )
    respx_mock.get("http://example.com/b").mock(
        return_value=httpx.Response(302, headers={"Location": "http://example.com/c"})
    )
    respx_mock.get("http://example.com/c").mock(return_value=httpx.Response(200, text="end"))
    async with fetch_rig(respx_mock) as rig:
        record = await rig.fetcher.fetch(job("http://example.com/a"))
    assert record.ok and record.final_url == "http://example.com/c" and record.bytes == 3


async def test_a_redirect_that_ends_in_a_failure_records_the_url_that_answered(
    respx_mock: respx.MockRouter,
):
    respx_mock.get("http://example.com/a").mock(
        return_value=httpx.Response(302, headers={"Location": "/b"})
    )
    respx_mock.get("http://example.com/b").mock(return_value=httpx.Response(403))
    respx_mock.get("http://example.com/c").mock(
        return_value=httpx.Response(301, headers={"Location": "http://gone.test/d"})
    )
    respx_mock.get("http://gone.test/d").mock(side_effect=httpx.ConnectError("refused"))
    respx_mock.get("http://example.com/e").mock(side_effect=httpx.ConnectError("refused"))
    respx_mock.get("http://example.com/f").mock(return_value=httpx.Response(404))
    async with fetch_rig(respx_mock, retries=1) as rig:
        forbidden = await rig.fetcher.fetch(job("http://example.com/a"))
        refused = await rig.fetcher.fetch(job("http://example.com/c"))
        unanswered = await rig.fetcher.fetch(job("http://example.com/e"))
        missing = await rig.fetcher.fetch(job("http://example.com/f"))
    assert (forbidden.status, forbidden.final_url) == (403, "http://example.com/b")
    assert (refused.error_kind, refused.final_url) == ("connect", "http://gone.test/d")
    assert (unanswered.error_kind, unanswered.final_url) == ("connect", None)
    assert (missing.status, missing.final_url) == (404, "http://example.com/f")


async def test_a_redirect_loop_ends_with_a_clear_error(respx_mock: respx.MockRouter):
    respx_mock.get("http://example.com/a").mock(
        return_value=httpx.Response(302, headers={"Location": "/b"})
    )
    respx_mock.get("http://example.com/b").mock(
        return_value=httpx.Response(302, headers={"Location": "/a"})
    )
    async with fetch_rig(respx_mock, retries=3) as rig:
        record = await rig.fetcher.fetch(job("http://example.com/a"))
    assert not record.ok and record.error_kind == "redirect" and record.attempts == 1
    assert record.error == "redirect loop back to http://example.com/a"


async def test_max_redirects_holds(respx_mock: respx.MockRouter):
    for n in range(5):
        respx_mock.get(f"http://example.com/{n}").mock(
            return_value=httpx.Response(302, headers={"Location": f"/{n + 1}"})
        )
    respx_mock.get("http://example.com/5").mock(return_value=httpx.Response(200))
    async with fetch_rig(respx_mock, max_redirects=4) as rig:
        too_many = await rig.fetcher.fetch(job("http://example.com/0"))
    async with fetch_rig(respx_mock, max_redirects=5) as rig:
        enough = await rig.fetcher.fetch(job("http://example.com/0"))
    assert not too_many.ok and too_many.error == "more than 4 redirects"
    assert enough.ok


async def test_no_follow_records_the_redirect_as_a_failure(respx_mock: respx.MockRouter):
    respx_mock.get(URL).mock(return_value=httpx.Response(301, headers={"Location": "/x"}))
    async with fetch_rig(respx_mock, follow_redirects=False) as rig:
        record = await rig.fetcher.fetch(job(URL))
    assert not record.ok and record.status == 301 and record.path is None


@pytest.mark.parametrize("name", ["Authorization", "Cookie", "Proxy-Authorization"])
async def test_credentials_are_not_sent_to_another_origin(respx_mock: respx.MockRouter, name):
    respx_mock.get("http://example.com/a").mock(
        return_value=httpx.Response(302, headers={"Location": "http://other.test/b"})
    )
    other = respx_mock.get("http://other.test/b").mock(return_value=httpx.Response(200))
    async with fetch_rig(respx_mock, headers=[f"{name}: secret", "X-Plain: kept"]) as rig:
        record = await rig.fetcher.fetch(job("http://example.com/a"))
    assert record.ok
    sent = other.calls.last.request.headers
    assert name not in sent and sent["X-Plain"] == "kept"


async def test_credentials_stay_on_a_same_origin_redirect(respx_mock: respx.MockRouter):
    respx_mock.get("http://example.com/a").mock(
        return_value=httpx.Response(302, headers={"Location": "/b"})
    )
    same = respx_mock.get("http://example.com/b").mock(return_value=httpx.Response(200))
    async with fetch_rig(respx_mock, headers=["Authorization: Bearer t"]) as rig:
        await rig.fetcher.fetch(job("http://example.com/a"))
    assert same.calls.last.request.headers["Authorization"] == "Bearer t"


async def test_cookies_are_not_carried_to_the_next_url(respx_mock: respx.MockRouter):
    respx_mock.get("http://example.com/login").mock(
        return_value=httpx.Response(200, headers={"Set-Cookie": "session=abc; Path=/"})
    )
    later = respx_mock.get("http://example.com/page").mock(return_value=httpx.Response(200))
    async with fetch_rig(respx_mock) as rig:
        await rig.fetcher.fetch(job("http://example.com/login"))
        await rig.fetcher.fetch(job("http://example.com/page"))
    assert "cookie" not in later.calls.last.request.headers


async def test_a_body_shorter_than_its_content_length_is_retried(respx_mock: respx.MockRouter):
    short = httpx.Response(200, headers={"Content-Length": "100"}, content=b"x" * 40)
    respx_mock.get(URL).mock(side_effect=[short, httpx.Response(200, content=b"x" * 100)])
    async with fetch_rig(respx_mock) as rig:
        record = await rig.fetcher.fetch(job(URL))
    assert record.ok and record.attempts == 2 and record.bytes == 100


async def test_a_body_cut_short_says_how_much_arrived(respx_mock: respx.MockRouter):
    short = httpx.Response(200, headers={"Content-Length": "2000"}, content=b"x" * 1000)
    respx_mock.get(URL).mock(return_value=short)
    async with fetch_rig(respx_mock, retries=0) as rig:
        record = await rig.fetcher.fetch(job(URL))
    assert (record.error_kind, record.status) == ("truncated", 200)
    assert record.error == "body cut short: 1,000 of 2,000 bytes"


async def test_max_bytes_by_content_length_fails_without_reading(respx_mock: respx.MockRouter):
    respx_mock.get(URL).mock(return_value=httpx.Response(200, content=b"x" * 2000))
    async with fetch_rig(respx_mock, max_bytes=1000) as rig:
        record = await rig.fetcher.fetch(job(URL))
    assert not record.ok and record.error_kind == "too_large" and record.attempts == 1
    assert record.status == 200  # the server answered; the body was refused
    assert record.error == "body of 2,000 bytes is over --max-bytes 1,000"


async def test_max_bytes_counts_decoded_bytes(respx_mock: respx.MockRouter, tmp_path: Path):
    bomb = gzip.compress(b"\0" * 5_000_000)
    respx_mock.get(URL).mock(
        return_value=httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=bomb)
    )
    async with fetch_rig(respx_mock, tmp_path, max_bytes="1M") as rig:
        record = await rig.fetcher.fetch(job(URL))
    assert len(bomb) < 1_000_000
    assert not record.ok and record.error == "body over --max-bytes 1,048,576 after decoding"
    assert list(tmp_path.rglob("*")) == [] or all(p.is_dir() for p in tmp_path.rglob("*"))


async def test_a_gzip_body_is_saved_decoded(respx_mock: respx.MockRouter, tmp_path: Path):
    respx_mock.get(URL).mock(
        return_value=httpx.Response(
            200, headers={"Content-Encoding": "gzip"}, content=gzip.compress(b"hello " * 100)
        )
    )
    async with fetch_rig(respx_mock, tmp_path) as rig:
        record = await rig.fetcher.fetch(job(URL))
    assert record.ok and record.bytes == 600
    assert (tmp_path / "example.com" / "file.txt").read_bytes() == b"hello " * 100


async def test_a_small_body_is_saved_with_its_hash(respx_mock: respx.MockRouter, tmp_path: Path):
    respx_mock.get(URL).mock(
        return_value=httpx.Response(200, content=b"abc", headers={"Content-Type": "text/plain"})
    )
    async with fetch_rig(respx_mock, tmp_path) as rig:
        record = await rig.fetcher.fetch(job(URL))
    target = tmp_path / "example.com" / "file.txt"
    assert record.path == str(target) and target.read_bytes() == b"abc"
    assert record.sha256 == hashlib.sha256(b"abc").hexdigest()
    assert record.content_type == "text/plain"


async def test_a_large_body_is_spilled_in_pieces(respx_mock: respx.MockRouter, tmp_path: Path):
    body = random.Random(1).randbytes(5 * SPILL_BYTES + 123)

    async def chunks():
        for start in range(0, len(body), 10_000):
            yield body[start : start + 10_000]

    respx_mock.get(URL).mock(return_value=httpx.Response(200, content=chunks()))
    async with fetch_rig(respx_mock, tmp_path) as rig:
        record = await rig.fetcher.fetch(job(URL))
    assert record.ok and record.bytes == len(body)
    assert (tmp_path / "example.com" / "file.txt").read_bytes() == body
    assert record.sha256 == hashlib.sha256(body).hexdigest()
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".fetchcli-part")]


async def test_a_failed_large_body_leaves_no_file(respx_mock: respx.MockRouter, tmp_path: Path):
    async def broken():
        yield b"x" * (3 * SPILL_BYTES)
        raise httpx.ReadError("connection reset")

    respx_mock.get(URL).mock(return_value=httpx.Response(200, content=broken()))
    async with fetch_rig(respx_mock, tmp_path, retries=0) as rig:
        record = await rig.fetcher.fetch(job(URL))
    assert not record.ok and record.error_kind == "network"
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


async def test_head_saves_nothing(respx_mock: respx.MockRouter, tmp_path: Path):
    route = respx_mock.head(URL).mock(return_value=httpx.Response(200))
    async with fetch_rig(respx_mock, tmp_path, method="head") as rig:
        record = await rig.fetcher.fetch(job(URL))
    assert record.ok and record.path is None and route.called
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


async def test_skip_existing_does_not_fetch(respx_mock: respx.MockRouter, tmp_path: Path):
    route = respx_mock.get(URL).mock(return_value=httpx.Response(200, content=b"new"))
    (tmp_path / "example.com").mkdir()
    (tmp_path / "example.com" / "file.txt").write_bytes(b"old!")
    async with fetch_rig(respx_mock, tmp_path, skip_existing=True) as rig:
        record = await rig.fetcher.fetch(job(URL))
    assert record.ok and record.skipped == "exists" and record.bytes == 4
    assert record.sha256 == hashlib.sha256(b"old!").hexdigest()
    assert record.path == str(tmp_path / "example.com" / "file.txt")
    assert not route.called


@pytest.mark.parametrize("size", [0, 1000, SPILL_BYTES + 1, 5 * SPILL_BYTES + 17])
async def test_skip_existing_records_the_files_real_size_and_digest(
    respx_mock: respx.MockRouter, tmp_path: Path, size: int
):
    data = random.Random(size).randbytes(size)
    (tmp_path / "example.com").mkdir()
    (tmp_path / "example.com" / "file.txt").write_bytes(data)
    async with fetch_rig(respx_mock, tmp_path, skip_existing=True) as rig:
        record = await rig.fetcher.fetch(job(URL))
    assert record.skipped == "exists" and record.bytes == size
    assert record.sha256 == hashlib.sha256(data).hexdigest()


async def test_skip_existing_keeps_only_the_file_a_row_expects(
    respx_mock: respx.MockRouter, tmp_path: Path
):
    route = respx_mock.get(URL).mock(return_value=httpx.Response(200, content=b"new!"))
    (tmp_path / "example.com").mkdir()
    (tmp_path / "example.com" / "file.txt").write_bytes(b"old!")
    wanted = hashlib.sha256(b"new!").hexdigest()
    row = dataclasses.replace(job(URL), expect=Expectation(sha256=wanted, size=4))
    async with fetch_rig(respx_mock, tmp_path, skip_existing=True) as rig:
        record = await rig.fetcher.fetch(row)
    assert record.ok and record.skipped is None and route.called  # same size, not the same body
    assert record.sha256 == wanted


def policy(**changes: float) -> RetryPolicy:
    return RetryPolicy(**{"backoff": 0.5, "backoff_max": 60.0, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(("attempt", "low", "high"), [(1, 0.5, 0.75), (2, 1, 1.5), (4, 4, 6)])
def test_backoff_is_exponential_plus_jitter(attempt: int, low: float, high: float):
    assert backoff_delay(attempt, policy(), lambda: 0.0) == low
    assert backoff_delay(attempt, policy(), lambda: 1.0) == high


def test_backoff_is_capped_even_for_huge_attempt_numbers():
    assert backoff_delay(10_000, policy(backoff_max=30), lambda: 1.0) == 30
    assert backoff_delay(10_000, policy(backoff_max=30), lambda: 0.0) == 30
    assert backoff_delay(7, policy(backoff=0.5, backoff_max=40), lambda: 1.0) == 40


def test_backoff_jitter_spreads_a_crowd():
    rng = random.Random(3)
    delays = {round(backoff_delay(3, policy(), rng.random), 3) for _ in range(50)}
    assert len(delays) > 40 and min(delays) >= 2.0 and max(delays) <= 3.0


def test_retry_after_replaces_backoff_and_is_capped():
    assert backoff_delay(1, policy(), lambda: 1.0, retry_after=12) == 12
    assert backoff_delay(1, policy(backoff_max=5), lambda: 1.0, retry_after=12) == 5
    assert backoff_delay(1, policy(), lambda: 1.0, retry_after=-3) == 0


def test_zero_backoff_means_no_wait():
    assert backoff_delay(5, policy(backoff=0), lambda: 1.0) == 0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("5", 5.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        ("-4", 0.0),
        ("Wed, 25 Nov 2026 10:00:30 GMT", 30.0),
        ("Wed, 25 Nov 2026 09:59:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
        ("inf", None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None):
    now = 1795600800.0  # Wed, 25 Nov 2026 10:00:00 GMT
    assert parse_retry_after(header, now=now) == expected


async def test_max_bytes_without_a_content_length_stops_the_stream(respx_mock: respx.MockRouter):
    async def endless():
        while True:
            yield b"x" * 10_000

    respx_mock.get(URL).mock(return_value=httpx.Response(200, content=endless()))
    async with fetch_rig(respx_mock, max_bytes=25_000) as rig:
        record = await rig.fetcher.fetch(job(URL))
    assert (record.error_kind, record.status, record.attempts) == ("too_large", 200, 1)
    assert record.error == "body over --max-bytes 25,000"


async def test_max_bytes_holds_for_what_the_end_of_a_gzip_stream_gives(
    respx_mock: respx.MockRouter,
):
    # The last piece comes out of the decoder's flush, after the final network chunk.
    body = gzip.compress(b"y" * 3000)
    respx_mock.get(URL).mock(
        return_value=httpx.Response(200, headers={"Content-Encoding": "gzip"}, content=body)
    )
    async with fetch_rig(respx_mock, max_bytes=2999) as rig:
        too_large = await rig.fetcher.fetch(job(URL))
    async with fetch_rig(respx_mock, max_bytes=3000) as rig:
        fits = await rig.fetcher.fetch(job(URL))
    assert too_large.error == "body over --max-bytes 2,999 after decoding"
    assert fits.ok and fits.bytes == 3000


async def test_a_job_handed_out_after_the_deadline_is_not_sent(respx_mock: respx.MockRouter):
    route = respx_mock.get(URL).respond(200)
    async with fetch_rig(respx_mock) as rig:
        pending = await rig.fetcher.prepare(job(URL))
        assert not isinstance(pending, Record)
        past = asyncio.get_running_loop().time() - 0.001
        record = await rig.fetcher.attempt(pending, past)
    assert isinstance(record, Record) and record.error == "deadline exceeded"
    assert record.attempts == 0 and not route.called


async def test_a_retry_is_handed_back_with_its_delay_and_the_host_paused(
    respx_mock: respx.MockRouter,
):
    respx_mock.get(URL).respond(429, headers={"Retry-After": "7"})
    async with fetch_rig(respx_mock) as rig:
        pending = await rig.fetcher.prepare(job(URL))
        assert not isinstance(pending, Record)
        outcome = await rig.fetcher.attempt(pending)
    # No sleep in the attempt: the delay goes back with the job, for the frontier to keep.
    assert isinstance(outcome, Again) and outcome.item is pending and outcome.delay == 7.0
    assert rig.sleeps == [] and rig.hosts.host_pause("example.com") == 7.0
    assert pending.attempts == 1 and rig.stats.retrying == 1

"""Carry: what a URL's next request asks for, and what becomes of its body at the end."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from fetchcli.carry import Carry
from fetchcli.partial import Held, Verdict
from fetchcli.sink import OnDisk

pytestmark = pytest.mark.anyio

URL = "http://h.test/a.bin"
STRONG = Held(url=URL, size=0, etag='"abc"', total=1000)


@dataclass
class FakeBody:
    """Stands in for body.Body: a size, and what was done with it."""

    size: int = 0
    done: list[Any] = field(default_factory=list)

    async def keep(self, held: Held) -> None:
        self.done.append(("keep", held))

    async def discard(self) -> None:
        self.done.append("discard")


def carry_with(size: int, held: Held = STRONG, **options: Any) -> tuple[Carry, FakeBody]:
    carry, body = Carry(URL, **options), FakeBody(size)
    carry.start(body, held, carry.decoder)  # type: ignore[arg-type]
    return carry, body


def test_a_held_body_asks_for_the_rest_before_anything_else():
    saved = OnDisk(size=1000, mtime=1_600_000_000, partial=False)
    carry, _ = carry_with(400, saved=saved, etag='"abc"')
    assert carry.request_headers() == {"Range": "bytes=400-", "If-Range": '"abc"'}
    assert carry.ranged and not carry.conditional
    decision = carry.judge(206, {"content-range": "bytes 400-999/1000", "etag": '"abc"'})
    assert decision is not None and decision.verdict is Verdict.APPEND


def test_with_nothing_held_a_saved_file_makes_the_request_conditional():
    saved = OnDisk(size=10, mtime=1_700_000_000, partial=False)
    carry = Carry(URL, saved=saved, etag='W/"x"')
    assert carry.request_headers() == {
        "If-None-Match": 'W/"x"',
        "If-Modified-Since": "Tue, 14 Nov 2023 22:13:20 GMT",
    }
    assert carry.conditional and not carry.ranged
    assert carry.judge(200, {}) is None  # no Range asked: the answer is judged as usual


def test_nothing_held_and_nothing_saved_asks_plainly():
    carry = Carry(URL)
    assert carry.request_headers() == {} and not (carry.ranged or carry.conditional)


def test_an_encoded_body_counts_encoded_bytes_and_only_when_in_step():
    held = Held(url=URL, size=0, etag='"abc"', content_encoding="gzip", total=500)
    carry, _ = carry_with(5000, held)  # decoded bytes: not what a Range counts
    carry.raw = 120
    assert carry.request_headers()["Range"] == "bytes=120-"
    carry.in_step = False  # cut while a chunk was being decoded
    assert not carry.continuable() and carry.request_headers() == {}


@pytest.mark.parametrize(
    ("held", "options", "kept"),
    [
        (STRONG, {"keep": True}, True),
        (STRONG, {"keep": False}, False),  # no --continue
        (Held(url=URL, size=0), {"keep": True}, False),  # no validator
        (Held(url=URL, size=0, etag='"a"', content_encoding="gzip"), {"keep": True}, False),
    ],
)
async def test_close_keeps_only_what_a_later_run_can_continue(held, options, kept):
    carry, body = carry_with(400, held, **options)
    await carry.close()
    assert body.done == ([("keep", held.at(400))] if kept else ["discard"])
    assert carry.body is None


async def test_close_drops_the_body_of_a_url_that_failed_for_good():
    carry, body = carry_with(400, keep=True)
    carry.permanent = True
    await carry.close()
    assert body.done == ["discard"]


def test_note_keeps_what_a_206_does_not_repeat():
    carry = Carry(URL)
    carry.note({"etag": '"abc"', "last-modified": " Sun, 13 Sep 2020 12:26:40 GMT "}, fresh=True)
    carry.note({"content-type": "application/octet-stream"}, fresh=False)
    assert (carry.response_etag, carry.last_modified, carry.content_type) == (
        '"abc"',
        "Sun, 13 Sep 2020 12:26:40 GMT",
        "application/octet-stream",
    )

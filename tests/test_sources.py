"""Input lines: streamed, validated, deduplicated; bad lines become reasons, not crashes."""

from __future__ import annotations

import io
import json
import os

import pytest

from fetchcli.errors import UsageError
from fetchcli.fingerprints import FingerprintSet, url_key
from fetchcli.manifests import items_of
from fetchcli.models import BadLine, Job, Record
from fetchcli.sources import (
    MAX_LINE_BYTES,
    LongLine,
    Source,
    close_sources,
    open_sources,
    parse_line,
)

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("raw", [b"", b"   ", b"\r", b"# a comment", b"  # indented comment"])
async def test_blank_and_comment_lines_are_skipped(raw: bytes):
    assert parse_line("-", 1, raw) is None


@pytest.mark.parametrize(
    ("raw", "url"),
    [
        (b"http://example.com/a", "http://example.com/a"),
        (b"  https://example.com/a?b=c  \r", "https://example.com/a?b=c"),
        (b"HTTP://EXAMPLE.com/", "HTTP://EXAMPLE.com/"),
        ("http://bücher.example.com/ä".encode(), "http://bücher.example.com/ä"),
        (b"http://example.com/a b", "http://example.com/a b"),
        (b"http://[::1]:8080/x", "http://[::1]:8080/x"),
    ],
)
async def test_usable_urls_become_jobs(raw: bytes, url: str):
    job = parse_line("urls.txt", 4, raw)
    assert isinstance(job, Job)
    assert (job.source, job.line, job.url) == ("urls.txt", 4, url)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"file:///etc/passwd", "unsupported scheme 'file': only http and https are fetched"),
        (b"ftp://example.com/x", "unsupported scheme 'ftp': only http and https are fetched"),
        (b"javascript:alert(1)", "not a URL: it must start with http:// or https://"),
        (b"example.com/page", "not a URL: it must start with http:// or https://"),
        (b"http://", "invalid URL: no host"),
        (b"http:///path", "invalid URL: no host"),
        (b"http://exa mple.test/", "invalid URL: bad host 'exa%20mple.test'"),
        (b"http://example.com:99999/", "invalid URL: port 99999 out of range"),
        (b"http://example.com/\x00x", "contains control characters"),
        (b"http://example.com/\x1b[31m", "contains control characters"),
        (b"http://example.com/\xff\xfe", "not valid UTF-8"),
        (b"http://[::1/", "invalid URL: Invalid port: ':1'"),
    ],
)
async def test_unusable_lines_get_a_reason(raw: bytes, reason: str):
    bad = parse_line("-", 9, raw)
    assert isinstance(bad, BadLine)
    assert (bad.line, bad.reason) == (9, reason)


async def test_an_over_long_line_is_a_bad_line_that_keeps_its_start():
    head = b"  http://a.test/" + b"x" * (MAX_LINE_BYTES - 16)
    bad = parse_line("urls.txt", 4, LongLine(head, 10_017))
    assert isinstance(bad, BadLine) and bad.line == 4
    assert bad.reason == "line of 10,017 bytes is longer than 8 KiB"
    assert bad.text == head.strip().decode() + "…[cut]"
    assert parse_line("-", 1, None) == BadLine("-", 1, "", "line longer than 8 KiB")


async def test_an_over_long_line_cut_inside_a_character_keeps_whole_characters():
    head = b"http://a.test/" + "é".encode() * 5000
    bad = parse_line("-", 1, LongLine(head[: MAX_LINE_BYTES - 1], 10_014))
    assert isinstance(bad, BadLine) and bad.text.endswith("é…[cut]")
    assert "\ufffd" not in bad.text


async def test_an_over_long_comment_is_still_a_comment():
    assert parse_line("-", 1, LongLine(b"# " + b"x" * MAX_LINE_BYTES, 20_000)) is None


@pytest.mark.parametrize("raw", [b"http://a.test/a\tb", b"http://a.test/\x1b[31mred", b"\x00x"])
async def test_a_bad_line_keeps_its_control_characters_for_json_to_escape(raw: bytes):
    bad = parse_line("-", 1, raw)
    assert isinstance(bad, BadLine) and bad.text == raw.decode()
    record = Record.invalid(bad.source, bad.line, bad.text, bad.reason)
    assert json.loads(record.to_json())["url"] == raw.decode()
    assert "\ufffd" not in record.to_json()


class Trickle(io.RawIOBase):
    """A stream that hands out a few bytes per read, like a slow pipe."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data, self._step = data, step

    def readable(self) -> bool:
        return True

    def read1(self, size: int = -1) -> bytes:
        piece, self._data = self._data[: self._step], self._data[self._step :]
        return piece


async def collect(stream) -> list[tuple[int, str]]:
    """(line, url) of each job and (line, reason) of each bad line, as a run reads them."""
    lines: list[tuple[int, str]] = []
    async for _, batch in items_of([Source("x", stream)]):
        for item in batch:
            lines.append((item.line, item.url if isinstance(item, Job) else item.reason))
    return lines


async def bad_lines(stream) -> list[BadLine]:
    return [
        i
        async for _, batch in items_of([Source("x", stream)])
        for i in batch
        if isinstance(i, BadLine)
    ]


@pytest.mark.parametrize("step", [1, 3, 7, 4096, 1 << 20])
async def test_lines_survive_any_chunking(step: int):
    data = b"http://a.test/1\nhttp://a.test/2\r\n\n# c\nhttp://a.test/3"
    lines = await collect(Trickle(data, step))
    assert lines == [(1, "http://a.test/1"), (2, "http://a.test/2"), (5, "http://a.test/3")]


async def test_an_endless_line_keeps_its_first_8_kib_with_flat_memory_and_the_next_line():
    data = b"http://a.test/" + b"x" * (MAX_LINE_BYTES * 50) + b"\nhttp://a.test/ok\n"
    lines = await collect(Trickle(data, 10_000))
    long = 14 + MAX_LINE_BYTES * 50
    assert lines == [(1, f"line of {long:,} bytes is longer than 8 KiB"), (2, "http://a.test/ok")]
    (bad,) = await bad_lines(Trickle(data, 10_000))
    assert bad.text == data[:MAX_LINE_BYTES].decode() + "…[cut]"


@pytest.mark.parametrize("step", [1000, 1 << 20])
async def test_an_over_long_last_line_without_newline_is_reported(step: int):
    long = b"http://a.test/" + b"y" * MAX_LINE_BYTES
    lines = await collect(Trickle(b"http://a.test/ok\n" + long, step))
    assert lines == [
        (1, "http://a.test/ok"),
        (2, f"line of {len(long):,} bytes is longer than 8 KiB"),
    ]


@pytest.mark.parametrize("size", [MAX_LINE_BYTES, MAX_LINE_BYTES + 1])
async def test_a_line_at_the_limit_is_kept_whole_and_one_past_it_is_long(size: int):
    line = b"http://a.test/" + b"z" * (size - 14)
    (item,) = [i async for _, batch in items_of([Source("x", io.BytesIO(line))]) for i in batch]
    if size <= MAX_LINE_BYTES:
        assert isinstance(item, Job) and item.url == line.decode()
    else:
        assert isinstance(item, BadLine) and item.text == line[:MAX_LINE_BYTES].decode() + "…[cut]"


def test_a_missing_source_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match=r"cannot read .*nope.txt: No such file or directory"):
        open_sources((str(tmp_path / "nope.txt"),), io.BytesIO())


def test_a_directory_is_not_a_source(tmp_path):
    with pytest.raises(UsageError, match="Is a directory"):
        open_sources((str(tmp_path),), io.BytesIO())


def test_an_explicit_dash_is_stdin_whatever_it_is():
    # A terminal too, as with `cat -`: whether to refuse one is the CLI's call (no source).
    stdin = io.BytesIO(b"http://a.test/\n")
    (source,) = open_sources(("-",), stdin)
    assert source.name == "-" and source.stream is stdin


def test_url_key_ignores_the_fragment_and_default_port():
    def key(raw: str) -> bytes:
        job = parse_line("-", 1, raw.encode())
        assert isinstance(job, Job)
        return url_key(job.parsed)

    assert key("http://Example.com:80/a#x") == key("http://example.com/a#y")
    assert key("http://example.com/a?q=1") != key("http://example.com/a?q=2")


def test_fingerprint_set_grows_and_remembers():
    seen = FingerprintSet(capacity=8)
    keys = [f"http://h.test/{i}".encode() for i in range(10_000)]
    assert all(seen.add(key) for key in keys)
    assert not any(seen.add(key) for key in keys)
    assert len(seen) == 10_000
    assert keys[1234] in seen and b"http://h.test/other" not in seen


@pytest.mark.parametrize(
    "spelling", ["urls.txt", "./urls.txt", "link.txt", "hard.txt", "{tmp}/urls.txt"]
)
def test_a_records_file_that_is_a_source_is_a_usage_error(tmp_path, monkeypatch, spelling):
    urls = tmp_path / "urls.txt"
    urls.write_text("http://a.test/\n")
    (tmp_path / "link.txt").symlink_to(urls)
    (tmp_path / "hard.txt").hardlink_to(urls)
    monkeypatch.chdir(tmp_path)
    records = spelling.format(tmp=tmp_path)
    with pytest.raises(UsageError, match=rf"^--jsonl {records} is also a source \(urls.txt\)"):
        open_sources(("urls.txt",), io.BytesIO(), records=records)
    assert urls.read_text() == "http://a.test/\n"


def test_a_records_file_that_is_stdin_is_a_usage_error(tmp_path):
    urls = tmp_path / "urls.txt"
    urls.write_text("http://a.test/\n")
    with urls.open("rb") as stdin, pytest.raises(UsageError, match=r"also a source \(-\)"):
        open_sources(("-",), stdin, records=str(urls))


def test_records_on_stdout_appended_to_a_source_are_a_usage_error(tmp_path):
    # `fetchcli get urls.txt --jsonl - >> urls.txt` would read its own records forever.
    urls = tmp_path / "urls.txt"
    urls.write_text("http://a.test/\n")
    with (
        urls.open("ab") as stdout,
        pytest.raises(UsageError, match=r"^--jsonl - goes to \S*urls.txt, which is also a source"),
    ):
        open_sources((str(urls),), io.BytesIO(), records="-", stdout=stdout)


def test_a_records_file_of_its_own_is_fine(tmp_path):
    urls = tmp_path / "urls.txt"
    urls.write_text("http://a.test/\n")
    (tmp_path / "old.jsonl").write_text("")
    for records in (str(tmp_path / "old.jsonl"), str(tmp_path / "new.jsonl"), "-"):
        # stdout and stdin may well be one terminal, or /dev/null: only files can clash.
        with open(os.devnull, "wb") as stdout:
            sources = open_sources((str(urls), "-"), io.BytesIO(), records=records, stdout=stdout)
        close_sources(sources)
    assert not (tmp_path / "new.jsonl").exists()

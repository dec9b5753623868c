"""Manifests: rows of CSV, TSV, JSONL and URL lines, gzip or not, streamed in any chunking."""

from __future__ import annotations

import gzip
import json
import tracemalloc
from collections.abc import AsyncIterator, Iterator

import pytest

from fetchcli.decoding import PIECE
from fetchcli.errors import UsageError
from fetchcli.manifests import (
    BATCH,
    MAX_ROW_BYTES,
    Expectation,
    Format,
    ManifestParser,
    _Inflater,
    format_for,
    holds_rows,
    read_manifest,
)
from fetchcli.models import BadLine, Job

SHA = "ab" * 32


def parse(data: bytes, fmt: Format, step: int = 1 << 20, name: str = "m") -> list[Job | BadLine]:
    parser = ManifestParser(name, fmt)
    items: list[Job | BadLine] = []
    for start in range(0, len(data), step):
        items.extend(parser.feed(data[start : start + step]))
    items.extend(parser.close())
    return items


def rows(items: list[Job | BadLine]) -> list[tuple[int, str, Expectation | None]]:
    assert all(isinstance(item, Job) for item in items), items
    return [(item.line, item.url, item.expect) for item in items if isinstance(item, Job)]


def bad(items: list[Job | BadLine]) -> list[tuple[int, str]]:
    return [(item.line, item.reason) for item in items if isinstance(item, BadLine)]


@pytest.mark.parametrize(
    ("name", "given", "expected"),
    [
        ("urls.txt", None, Format.LINES),
        ("-", None, Format.LINES),
        ("list", None, Format.LINES),
        ("data.csv", None, Format.CSV),
        ("DATA.CSV.GZ", None, Format.CSV),
        ("x.tsv", None, Format.TSV),
        ("x.tsv.gz", None, Format.TSV),
        ("x.jsonl", None, Format.JSONL),
        ("x.ndjson.gz", None, Format.JSONL),
        ("x.txt.gz", None, Format.LINES),
        ("x.csv", Format.JSONL, Format.JSONL),  # the flag wins
    ],
)
def test_the_format_comes_from_the_flag_or_the_extension(name, given, expected):
    assert format_for(name, given) is expected


def test_url_lines_read_as_the_sources_module_reads_them():
    data = b"http://a.test/1\n\n# comment\r\nnot a url\nhttp://a.test/2"
    items = parse(data, Format.LINES)
    assert [(i.line, i.url) for i in items if isinstance(i, Job)] == [
        (1, "http://a.test/1"),
        (5, "http://a.test/2"),
    ]
    assert bad(items) == [(4, "not a URL: it must start with http:// or https://")]
    assert all(i.expect is None for i in items if isinstance(i, Job))


def test_an_over_long_url_line_is_a_bad_line_and_memory_stays_bounded():
    data = b"http://a.test/" + b"x" * 100_000 + b"\nhttp://a.test/ok\n"
    items = parse(data, Format.LINES, step=1000)
    assert bad(items) == [(1, "line of 100,014 bytes is longer than 8 KiB")]
    (long,) = [i for i in items if isinstance(i, BadLine)]
    assert long.text == data[: 8 * 1024].decode() + "…[cut]"  # its start, as written
    assert [i.url for i in items if isinstance(i, Job)] == ["http://a.test/ok"]


CSV = (
    b"url,path,sha256,size,caption,license\r\n"
    b"http://a.test/1.bin,images/one.bin," + SHA.encode() + b",10,a cat,cc-by\r\n"
    b"http://a.test/2.bin,,,,,\r\n"
    b'http://a.test/3.bin,,,7,"a ""quoted"", comma",x\r\n'
)


def test_csv_rows_carry_path_checksum_size_and_the_other_columns_as_meta():
    assert rows(parse(CSV, Format.CSV)) == [
        (
            2,
            "http://a.test/1.bin",
            Expectation(
                path="images/one.bin",
                sha256=SHA,
                size=10,
                meta={"caption": "a cat", "license": "cc-by"},
            ),
        ),
        (3, "http://a.test/2.bin", Expectation(meta={"caption": "", "license": ""})),
        (
            4,
            "http://a.test/3.bin",
            Expectation(size=7, meta={"caption": 'a "quoted", comma', "license": "x"}),
        ),
    ]


def test_known_columns_need_no_meta_and_a_bare_url_column_gives_no_expectation():
    data = b"URL , Size\nhttp://a.test/1,5\nhttp://a.test/2,\n"  # names: any case, spaces
    assert rows(parse(data, Format.CSV)) == [
        (2, "http://a.test/1", Expectation(size=5)),
        (3, "http://a.test/2", None),
    ]


def test_tsv_rows():
    data = b"url\tpath\tcaption\nhttp://a.test/x.jpg\tx.jpg\tun chat, gris\n"
    assert rows(parse(data, Format.TSV)) == [
        (2, "http://a.test/x.jpg", Expectation(path="x.jpg", meta={"caption": "un chat, gris"}))
    ]


def test_a_bom_and_blank_lines_before_and_between_rows_are_fine():
    data = b"\xef\xbb\xbf\nurl\n\nhttp://a.test/1\n\n"
    assert rows(parse(data, Format.CSV, step=1)) == [(4, "http://a.test/1", None)]


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64, 4096])
def test_quoted_fields_may_span_lines_in_any_chunking(step: int):
    data = (
        b'url,caption\nhttp://a.test/1,"first line\r\nsecond, ""line"""\n'
        b'http://a.test/2,"a\n\nb"\nhttp://a.test/3,plain'
    )
    assert rows(parse(data, Format.CSV, step=step)) == [
        (2, "http://a.test/1", Expectation(meta={"caption": 'first line\r\nsecond, "line"'})),
        (4, "http://a.test/2", Expectation(meta={"caption": "a\n\nb"})),
        (7, "http://a.test/3", Expectation(meta={"caption": "plain"})),
    ]


def test_bad_csv_rows_each_get_a_reason_and_the_rest_goes_on():
    data = (
        b"url,sha256,size\n"
        b",,\n"  # blank row: skipped
        b"," + SHA.encode() + b",1\n"
        b"ftp://a.test/x,,\n"
        b"http://a.test/2,xyz,\n"
        b"http://a.test/3," + b"a" * 63 + b",\n"
        b"http://a.test/4,,-5\n"
        b"http://a.test/5,,1e3\n"
        b"http://a.test/6,,\n"
        b'http://a.test/7,"x"y,\n'
        b"http://a.test/8,,,extra\n"
        b"http://a.test/9\n"
        b"http://a.test/\xff,,\n"
        b"# not a comment in CSV,,\n"
        b"http://a.test/10,SHA256:" + SHA.upper().encode() + b",0\n"
    )
    items = parse(data, Format.CSV)
    assert bad(items) == [
        (3, "no url in this row"),
        (4, "unsupported scheme 'ftp': only http and https are fetched"),
        (5, "bad sha256 'xyz': not 64 hex digits"),
        (6, f"bad sha256 '{'a' * 63}': not 64 hex digits"),
        (7, "bad size '-5': not a whole number of bytes"),
        (8, "bad size '1e3': not a whole number of bytes"),
        (10, "bad CSV row: ',' expected after '\"'"),
        (11, "the row has 4 fields, the header 3"),
        (12, "the row has 1 fields, the header 3"),
        (13, "not valid UTF-8"),
        (14, "no url in this row"),
    ]
    good = [(i.line, i.url, i.expect) for i in items if isinstance(i, Job)]
    assert good == [
        (9, "http://a.test/6", None),
        (15, "http://a.test/10", Expectation(sha256=SHA, size=0)),
    ]
    texts = {i.line: i.text for i in items if isinstance(i, BadLine)}
    assert texts[5] == "http://a.test/2"  # the record names the URL of a bad row


def test_an_unclosed_quote_fails_its_row_and_never_holds_more_than_a_row():
    data = b'url,caption\nhttp://a.test/1,"never closed\n' + b"more text\n" * 20_000
    data += b"http://a.test/2,after\n"
    items = parse(data, Format.CSV, step=4096)
    assert bad(items)[0] == (2, f"row longer than {MAX_ROW_BYTES // 1024} KiB")
    # Reading starts afresh after the long row: the later lines are rows again.
    assert (len(data.split(b"\n")) - 1, "http://a.test/2") in [
        (i.line, i.url) for i in items if isinstance(i, Job)
    ]


def test_an_unclosed_quote_at_the_end_of_the_file_is_a_bad_row():
    items = parse(b'url,c\nhttp://a.test/1,ok\nhttp://a.test/2,"open\nstill', Format.CSV)
    assert bad(items) == [(3, "a quoted field is not closed by the end of the file")]
    assert len(items) == 2


@pytest.mark.parametrize("header", [b"link,path\n", b"\n", b"a\tb\n"])
def test_a_header_without_a_url_column_is_a_usage_error(header: bytes):
    data = header + b"http://a.test/1,x\n"
    with pytest.raises(UsageError, match=r"^m: the header row has no 'url' column"):
        parse(data, Format.CSV)


def test_jsonl_rows_keep_json_values_in_meta():
    lines = [
        {"url": "http://a.test/1", "path": "a/1", "sha256": SHA, "size": 3, "tags": ["x"], "n": 1},
        {"URL": "http://a.test/2", "Size": "4"},
        {"url": "http://a.test/3", "path": None, "sha256": None, "size": None},
    ]
    data = b"\n".join(json.dumps(line).encode() for line in lines) + b"\n\n"
    assert rows(parse(data, Format.JSONL, step=5)) == [
        (
            1,
            "http://a.test/1",
            Expectation(path="a/1", sha256=SHA, size=3, meta={"tags": ["x"], "n": 1}),
        ),
        (2, "http://a.test/2", Expectation(size=4)),
        (3, "http://a.test/3", None),
    ]


def test_bad_jsonl_lines_each_get_a_reason():
    data = b"\n".join(
        [
            b"[1, 2]",
            b'{"url": "http://a.test/1"',
            b'{"path": "x"}',
            b'{"url": 5}',
            b'{"url": "http://a.test/2", "size": -1}',
            b'{"url": "http://a.test/3", "size": true}',
            b'{"url": "http://a.test/4", "size": 1.5}',
            b'{"url": "http://a.test/5", "sha256": 12}',
            b'{"url": "http://a.test/6", "path": ["a"]}',
            b'{"url": "http://a.test/7", "x": NaN}',
            b'{"url": "http://a.test/\xff"}',
            b'{"url": "http://a.test/ok"}',
        ]
    )
    items = parse(data, Format.JSONL)
    reasons = bad(items)
    assert [line for line, _ in reasons] == list(range(1, 12))
    assert reasons[0] == (1, "not a JSON object")
    assert reasons[1][1].startswith("bad JSON: ")
    assert reasons[2] == (3, "no url in this row")
    assert reasons[3] == (4, "no url in this row")
    assert reasons[4] == (5, "bad size '-1': not a whole number of bytes")
    assert reasons[5] == (6, "bad size 'true': not a whole number of bytes")
    assert reasons[6] == (7, "bad size '1.5': not a whole number of bytes")
    assert reasons[7] == (8, "bad sha256 '12': not 64 hex digits")
    assert reasons[8] == (9, "bad path '[\"a\"]': not text")
    assert reasons[9] == (10, "bad JSON: NaN is not JSON")
    assert reasons[10] == (11, "not valid UTF-8")
    assert [i.url for i in items if isinstance(i, Job)] == ["http://a.test/ok"]


@pytest.mark.parametrize("step", [1, 10, 1 << 20])
def test_gzip_is_recognised_by_its_bytes_and_read_in_any_chunking(step: int):
    packed = gzip.compress(CSV)
    assert rows(parse(packed, Format.CSV, step=step)) == rows(parse(CSV, Format.CSV))


def test_gzip_with_several_members_reads_them_all():
    lines = [b"http://a.test/%d\n" % n for n in range(1, 7)]
    packed = b"".join(gzip.compress(b"".join(lines[n : n + 2])) for n in range(0, 6, 2))
    for step in (1, 7, 1 << 20):
        items = parse(packed, Format.LINES, step=step)
        assert [i.url for i in items if isinstance(i, Job)] == [
            f"http://a.test/{n}" for n in range(1, 7)
        ]


def test_a_truncated_gzip_file_says_so_after_its_complete_rows():
    packed = gzip.compress(b"http://a.test/1\nhttp://a.test/2\n" * 100)
    items = parse(packed[:-12], Format.LINES)
    assert bad(items) == [(len(items), "the gzip data ends early (a truncated file?)")]
    assert len(items) > 1


def test_corrupt_gzip_data_is_one_bad_line_then_the_source_ends():
    packed = bytearray(gzip.compress(b"http://a.test/1\n" * 1000))
    packed[30:40] = b"\xff" * 10
    items = parse(bytes(packed), Format.LINES, step=16)
    assert len(bad(items)) == 1 and bad(items)[0][1].startswith("corrupt gzip data: ")


def test_gunzip_makes_bounded_pieces_of_a_bomb():
    inflater = _Inflater()
    bomb = gzip.compress(b"\0" * (64 << 20))  # 64 MiB from about 64 KiB
    total = 0
    for piece in inflater.push(bomb):
        assert len(piece) <= PIECE
        total += len(piece)
    list(inflater.finish())
    assert total == 64 << 20


def test_every_row_of_a_gzip_chunk_comes_out_even_when_it_inflates_to_many_pieces():
    data = b"".join(b"http://a.test/%s/%d\n" % (b"x" * 80, n) for n in range(8_000))
    assert len(data) > 3 * PIECE
    items = parse(gzip.compress(data), Format.LINES)  # one chunk in, several pieces out
    assert len(items) == 8_000 and isinstance(items[-1], Job) and items[-1].url.endswith("/7999")


def test_zlib_errors_are_not_raised_through_the_parser():
    parser = ManifestParser("m", Format.LINES)
    items = list(parser.feed(b"\x1f\x8bnot really gzip"))
    assert len(items) == 1 and isinstance(items[0], BadLine)
    assert items[0].reason.startswith("corrupt gzip data: Error -3 while decompressing")
    assert list(parser.feed(b"http://a.test/1\n")) == []  # the source is over
    assert parser.close() == []


async def chunks_of(data: bytes, step: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), step):
        yield data[start : start + step]


@pytest.mark.anyio
async def test_read_manifest_yields_batches_as_chunks_arrive():
    data = b"url\n" + b"".join(b"http://a.test/%d\n" % n for n in range(1000))
    batches = [batch async for batch in read_manifest("m.csv", chunks_of(data, 500), Format.CSV)]
    assert all(0 < len(batch) <= BATCH for batch in batches)
    assert len(batches) > 1000 // BATCH  # small chunks: rows come out as they arrive
    urls = [item.url for batch in batches for item in batch if isinstance(item, Job)]
    assert urls == [f"http://a.test/{n}" for n in range(1000)]


def lazy_csv(count: int) -> Iterator[bytes]:
    """A manifest made as it is read: 600 rows a chunk, never all in memory."""
    yield b"url,path,sha256,size,caption\n"
    for start in range(0, count, 600):
        yield b"".join(
            b'https://cdn.a.test/i/%d.jpg,img/%d.jpg,%064x,%d,"caption, %d"\n' % (n, n, n, n, n)
            for n in range(start, min(start + 600, count))
        )


def peak_while_streaming(count: int) -> tuple[int, int]:
    parser = ManifestParser("big.csv", Format.CSV)
    seen = 0
    tracemalloc.start()
    try:
        for chunk in lazy_csv(count):
            for item in parser.feed(chunk):
                assert isinstance(item, Job)
                seen += 1
        seen += len(parser.close())
        return seen, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_long_csv_streams_with_flat_memory():
    # 5,000 rows kept would be some 5.5 MB (a Job, a URL, an Expectation and a dict each);
    # streamed, the peak is a chunk's worth, and about the same for 500 rows as for 5,000.
    # The 1,000,000-row run is benchmarks/manifest_memory.py: tracing makes it minutes long.
    small_rows, small_peak = peak_while_streaming(500)
    rows_seen, peak = peak_while_streaming(5_000)
    assert (small_rows, rows_seen) == (500, 5_000)
    assert peak < 1536 * 1024
    assert peak < 2 * small_peak + 256 * 1024


def test_holds_rows_when_any_source_is_a_manifest():
    assert not holds_rows(["urls.txt", "more.gz", "-"])
    assert holds_rows(["urls.txt", "files.CSV.gz"])
    assert holds_rows(["urls.txt"], "jsonl")  # --input-format names every source's format
    assert not holds_rows([])

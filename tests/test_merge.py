"""fetchcli merge: shards' records against the list: missing, failed, repeats, rerun, exits."""

from __future__ import annotations

import io
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st

from fetchcli import cli as cli_module
from fetchcli import manifests
from fetchcli import merge as merge_module
from fetchcli.environment import Environment
from fetchcli.errors import OutputError, UsageError
from fetchcli.kinds import ErrorKind
from fetchcli.merge import Entry, merge
from fetchcli.merge_cli import merge_command
from fetchcli.models import Job, Record
from fetchcli.shard import Shard
from fetchcli.sources import LongLine, parse_line
from tests.helpers import cli

LIST = (
    "# a list with comments and blanks, as people write them\n"
    "http://a.example/1\n"
    "\n"
    "http://b.example/2\n"
    "http://c.example/3\n"
    "  # indented comment\n"
    "http://d.example/4\n"
    "http://e.example/5"  # no newline at the end
)
# (line, url) of the lines that need a record
LINES = [
    (2, "http://a.example/1"),
    (4, "http://b.example/2"),
    (5, "http://c.example/3"),
    (7, "http://d.example/4"),
    (8, "http://e.example/5"),
]


def ok(line: int, url: str, *, source: str = "list.txt", **fields: Any) -> Record:
    fields = {"status": 200, "attempts": 1, **fields}
    return Record(url=url, ok=True, source=source, line=line, **fields)


def failed(line: int, url: str, source: str = "list.txt", status: int = 404) -> Record:
    return Record(
        url=url,
        ok=False,
        status=status,
        attempts=1,
        error=f"HTTP {status}",
        error_kind=ErrorKind.HTTP,
        source=source,
        line=line,
    )


def ledger(path: Path, *records: Record, tail: str = "") -> str:
    path.write_text("".join(record.to_json() + "\n" for record in records) + tail)
    return str(path)


@pytest.fixture
def listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "list.txt"
    path.write_text(LIST)
    return path


def test_every_line_ok_in_two_shards_is_complete(listed: Path, tmp_path: Path):
    first = ledger(tmp_path / "0.jsonl", *(ok(n, u) for n, u in LINES[:2]))
    second = ledger(tmp_path / "1.jsonl", *(ok(n, u) for n, u in reversed(LINES[2:])))
    report = merge([first, second], ["list.txt"], rerun="rerun.txt")
    assert report.complete
    assert (report.lines, report.ok, report.failed, report.missing) == (5, 5, 0, 0)
    assert (report.repeated, report.strays, report.unreadable) == (0, 0, 0)
    assert Path("rerun.txt").read_bytes() == b""


def test_a_missing_shard_and_a_failed_url_make_the_rerun_list(listed: Path, tmp_path: Path):
    # Shard 1 of 3 (lines 4 and 7) never ran; line 5 failed.
    zero = ledger(tmp_path / "0.jsonl", ok(2, LINES[0][1]), failed(5, LINES[2][1]))
    two = ledger(tmp_path / "2.jsonl", ok(8, LINES[4][1]))
    report = merge([zero, two], ["list.txt"], rerun="rerun.txt")
    assert not report.complete
    assert (report.lines, report.ok, report.failed, report.missing, report.rerun) == (5, 2, 1, 2, 3)
    assert report.failures == [Entry("list.txt", 5, "http://c.example/3", "http: HTTP 404")]
    assert report.missings == [
        Entry("list.txt", 4, "http://b.example/2"),
        Entry("list.txt", 7, "http://d.example/4"),
    ]
    # In input order, missing and failed together.
    assert Path("rerun.txt").read_text().splitlines() == [
        "http://b.example/2",
        "http://c.example/3",
        "http://d.example/4",
    ]


def test_a_line_in_two_ledgers_is_reported_and_counts_once(listed: Path, tmp_path: Path):
    everything = [ok(n, u) for n, u in LINES]
    first = ledger(tmp_path / "a.jsonl", *everything)
    overlap = ledger(tmp_path / "b.jsonl", ok(4, LINES[1][1]))
    report = merge([first, overlap], ["list.txt"])
    assert report.complete and report.ok == 5
    assert report.repeated == 1
    assert report.repeats == [Entry("list.txt", 4, "http://b.example/2", "in 2 ledgers")]


def test_a_resumed_shards_history_is_not_a_repeat(listed: Path, tmp_path: Path):
    # --resume appends: the failure of the first run, then the success of the second.
    records = [ok(n, u) for n, u in LINES if n != 5]
    history = ledger(
        tmp_path / "0.jsonl", failed(5, LINES[2][1], status=503), *records, ok(5, LINES[2][1])
    )
    report = merge([history], ["list.txt"])
    assert report.complete and report.repeated == 0


def test_a_crashed_shards_cut_short_last_line_is_skipped(listed: Path, tmp_path: Path):
    whole = [ok(n, u) for n, u in LINES[:4]]
    cut = ok(*LINES[4]).to_json()[:25]
    path = ledger(tmp_path / "0.jsonl", *whole, tail=cut)
    before = Path(path).read_bytes()
    report = merge([path], ["list.txt"], rerun="rerun.txt")
    assert report.unreadable == 1
    assert report.missing == 1 and report.missings[0].line == 8
    assert Path("rerun.txt").read_text() == "http://e.example/5\n"
    assert Path(path).read_bytes() == before  # merge only reads


def test_garbage_lines_are_skipped_and_counted(listed: Path, tmp_path: Path):
    records = "".join(ok(n, u).to_json() + "\n" for n, u in LINES)
    path = tmp_path / "0.jsonl"
    path.write_text('not json\n[1, 2]\n{"url": "x", "ok": "yes", "line": 2, "source": "l"}\n')
    path.write_text(path.read_text() + records + '{"line": true}\n')
    report = merge([str(path)], ["list.txt"])
    assert report.complete and report.unreadable == 4


def test_a_duplicate_counts_as_its_earlier_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    Path("list.txt").write_text(
        "http://a.example/1\nhttp://a.example/1#again\nhttp://b.example/2\nhttp://b.example/2\n"
        "http://c.example/3\nhttp://c.example/3\nHTTP://D.example/4\nhttp://d.example/4\n"
    )
    dup: dict[str, Any] = {"skipped": "duplicate", "status": None, "attempts": 0}
    path = ledger(
        tmp_path / "0.jsonl",
        ok(2, "http://a.example/1#again", **dup),  # emitted before its earlier line finished
        ok(1, "http://a.example/1"),
        failed(3, "http://b.example/2"),
        ok(4, "http://b.example/2", **dup),
        # line 5 (c.example) has no record: the shard died while fetching it
        ok(6, "http://c.example/3", **dup),
        ok(7, "HTTP://D.example/4"),
        ok(8, "http://d.example/4", **dup),  # written otherwise: taken on the record's word
    )
    report = merge([path], ["list.txt"], rerun="rerun.txt")
    assert (report.ok, report.failed, report.missing) == (4, 3, 1)
    assert [(e.line, e.why) for e in report.failures] == [
        (3, "http: HTTP 404"),
        (4, "repeats an earlier line that is not ok"),
        (6, "repeats an earlier line that is not ok"),
    ]
    # Each URL once: the repeats are fetched (or not) with their earlier lines.
    assert Path("rerun.txt").read_text() == "http://b.example/2\nhttp://c.example/3\n"


def test_invalid_lines_fail_but_are_not_rerun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    Path("list.txt").write_text("not a url\nhttp://a.example/1\nftp://b.example/2\n")
    invalid = Record(
        url="not a url",
        ok=False,
        error="not a URL",
        error_kind=ErrorKind.INVALID_URL,
        source="list.txt",
        line=1,
    )
    path = ledger(tmp_path / "0.jsonl", invalid)
    report = merge([path], ["list.txt"], rerun="rerun.txt")
    # Line 1 failed as invalid; lines 2 and 3 are missing, and only line 2 is worth a fetch.
    assert (report.failed, report.invalid, report.missing, report.rerun) == (1, 1, 2, 1)
    assert Path("rerun.txt").read_text() == "http://a.example/1\n"


def test_sources_match_by_name_or_else_by_file_name(listed: Path, tmp_path: Path):
    # The shards ran as `fetchcli get /data/lists/list.txt`; merge is given ./list.txt.
    path = ledger(
        tmp_path / "0.jsonl", *(ok(n, u, source="/data/lists/list.txt") for n, u in LINES)
    )
    assert merge([path], [str(listed)]).complete
    # Two inputs with one file name: only exact names match.
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "list.txt").write_text("http://z.example/\n")
    report = merge([path], [str(listed), "other/list.txt"])
    assert report.missing == 6 and report.strays == 5
    assert report.stray_records[0].why == "its source was not given with --input"


def test_records_of_no_input_line_are_strays(listed: Path, tmp_path: Path):
    path = ledger(
        tmp_path / "0.jsonl",
        *(ok(n, u) for n, u in LINES),
        ok(3, "http://blank.example/"),  # line 3 is blank
        ok(99, "http://past.example/"),  # the list has 8 lines
    )
    report = merge([path], ["list.txt"])
    assert report.complete
    assert [(e.line, e.why) for e in report.stray_records] == [
        (3, "a blank or comment line"),
        (99, "no such input line"),
    ]


def test_several_inputs_and_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    Path("a.txt").write_text("http://a.example/1\n")
    path = ledger(
        tmp_path / "0.jsonl",
        ok(1, "http://a.example/1", source="a.txt"),
        ok(2, "http://s.example/2", source="-"),
    )
    report = merge([path], ["a.txt", "-"], stdin=io.BytesIO(b"\nhttp://s.example/2\n"))
    assert report.complete and report.lines == 2


def test_lists_are_capped_and_counts_are_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    Path("list.txt").write_text("".join(f"http://h{i}.example/\n" for i in range(100)))
    report = merge([ledger(tmp_path / "empty.jsonl")], ["list.txt"], rerun="rerun.txt")
    assert report.missing == 100 and len(report.missings) == merge_module.SAMPLE
    assert len(Path("rerun.txt").read_text().splitlines()) == 100


def test_a_rerun_file_is_not_left_half_written(listed: Path, tmp_path: Path):
    with pytest.raises(UsageError, match=r"cannot read nowhere\.jsonl"):
        merge(["nowhere.jsonl"], ["list.txt"], rerun="rerun.txt")
    assert not Path("rerun.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["list.txt"]


def _numbered_by_fetch(data: bytes, limit: int, step: int) -> list[tuple[int, bytes | None]]:
    # The splitter that numbers the lines of every source of `fetchcli get` (manifests.py).
    splitter = manifests._LineSplitter(limit)
    found: list[tuple[int, bytes | LongLine]] = []
    for start in range(0, len(data), step):
        found.extend(splitter.push(data[start : start + step]))
    found.extend(splitter.finish())
    # fetchcli keeps the start of an over-long line (for its record); merge needs only its number.
    return [(number, None if isinstance(raw, LongLine) else raw) for number, raw in found]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from([b"", b"x", b"#", b" ", b"\r", b"\n", b"\n\n", b"y" * 9]), max_size=30)
)
def test_line_numbers_are_those_fetchcli_gives(pieces):
    """merge numbers the physical lines exactly as `fetchcli get` does, over-long ones too."""
    data = b"".join(pieces)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(merge_module, "MAX_LINE_BYTES", 8)
        expected = _numbered_by_fetch(data, limit=8, step=5)  # lines across reads
        assert list(merge_module._numbered_lines("list", io.BytesIO(data))) == expected


def test_real_records_of_real_shards(server, unique: str, tmp_path: Path, monkeypatch):
    """fetchcli's own records, split as 3 shards would have written them; one shard lost."""
    monkeypatch.chdir(tmp_path)
    urls = [server.url(f"/ok/{unique}/{i}") for i in range(30)]
    urls[7] = server.url(f"/status/404/{unique}")
    Path("list.txt").write_text("# shards\n" + "\n".join(urls) + "\n\n" + urls[3] + "\nnot a url\n")
    result = cli("get", "list.txt", "--no-save", "-q", "--retries", "0", "--jsonl", "all.jsonl")
    assert result.exit_code == 1, result.stderr
    shards = [Shard(k, 3, "url") for k in range(3)]
    ledgers = [tmp_path / f"shard-{k}.jsonl" for k in range(3)]
    for line in Path("all.jsonl").read_text().splitlines():
        record = json.loads(line)
        item = parse_line("list.txt", record["line"], record["url"].encode())
        assert item is not None
        (owner,) = [shard.index for shard in shards if shard.belongs(item)]
        with ledgers[owner].open("a") as out:
            out.write(line + "\n")
    items = {}
    for number, text in enumerate(Path("list.txt").read_text().splitlines(), start=1):
        if (item := parse_line("list.txt", number, text.encode())) is not None:
            items[number] = item
    lost = {number for number, item in items.items() if shards[1].belongs(item)}
    assert lost, "the test needs shard 1 to own some lines"
    not_found = 9  # urls[7], on line 9

    report = merge([str(ledgers[0]), str(ledgers[2])], ["list.txt"], rerun="rerun.txt")
    assert (report.lines, report.missing) == (32, len(lost))
    assert report.failed == len({not_found, 34} - lost)  # the 404 and the line that is no URL
    # In input order; a lost repeat (line 33 repeats line 5) is listed with its line.
    assert Path("rerun.txt").read_text().splitlines() == [
        item.url
        for number, item in items.items()
        if isinstance(item, Job) and (number in lost or number == not_found)
    ]

    # With every shard: only the 404 and the line that is not a URL fail.
    full = merge([str(path) for path in ledgers], ["list.txt"], rerun="rerun.txt")
    assert (full.ok, full.failed, full.missing, full.repeated) == (30, 2, 0, 0)
    assert Path("rerun.txt").read_text() == urls[7] + "\n"


# The command as cli.py mounts it.
@pytest.fixture
def merge_cli() -> None:
    assert "merge" in typer.main.get_command(cli_module.app).commands  # type: ignore[attr-defined]


def test_cli_exit_0_when_complete(merge_cli, listed: Path, tmp_path: Path):
    path = ledger(tmp_path / "0.jsonl", *(ok(n, u) for n, u in LINES))
    result = cli("merge", path, "--input", "list.txt")
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [
        "merge: 5 lines in list.txt: 5 ok",
        "complete: every line ok",
    ]
    assert result.stdout == b""


def test_cli_exit_1_with_the_problems_listed(merge_cli, listed: Path, tmp_path: Path):
    path = ledger(tmp_path / "0.jsonl", ok(2, LINES[0][1]), failed(5, LINES[2][1]), tail='{"u')
    result = cli("merge", path, "-i", "list.txt", "--rerun", "rerun.txt")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "merge: 5 lines in list.txt: 1 ok, 1 failed, 3 missing",
        "failed (1):",
        "  list.txt:5  http://c.example/3  http: HTTP 404",
        "missing (no record) (3):",
        "  list.txt:4  http://b.example/2",
        "  list.txt:7  http://d.example/4",
        "  list.txt:8  http://e.example/5",
        "1 ledger lines are not records (skipped; a crashed shard leaves its last line cut short)",
        "rerun: 4 URLs to fetch in rerun.txt",
        "incomplete",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["merge", "0.jsonl"], "fetchcli: error: Missing option '--input'"),
        (["merge", "--input", "list.txt"], "fetchcli: error: Missing argument 'LEDGER...'"),
        (["merge", "none.jsonl", "-i", "list.txt"], "fetchcli: error: cannot read none.jsonl"),
        (["merge", "0.jsonl", "-i", "none.txt"], "fetchcli: error: cannot read none.txt"),
        (
            ["merge", "0.jsonl", "-i", "list.txt", "--rerun", "no/such/dir/r.txt"],
            "fetchcli: error: cannot write no/such/dir/r.txt",
        ),
    ],
)
def test_cli_usage_errors_exit_2(merge_cli, listed: Path, tmp_path: Path, args, message):
    ledger(tmp_path / "0.jsonl")
    result = cli(*args)
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(message)


def test_a_full_scratch_disk_is_an_output_error(listed: Path, tmp_path: Path, monkeypatch):
    def full(*args: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(merge_module, "_join", full)
    path = ledger(tmp_path / "0.jsonl", *(ok(n, u) for n, u in LINES))
    with pytest.raises(OutputError, match=r"scratch database in .* failed: database or disk"):
        merge([path], ["list.txt"], rerun="rerun.txt")
    assert not Path("rerun.txt").exists()


def test_the_command_finds_the_environment_inside_an_invocation(listed: Path, tmp_path: Path):
    """cli.py after its split hands commands an object with `.env`, not the Environment."""
    path = ledger(tmp_path / "0.jsonl", *(ok(n, u) for n, u in LINES))
    stderr = io.StringIO()

    @dataclass
    class Invocation:
        env: Environment

    app = typer.Typer()
    app.callback()(lambda: None)
    app.command("merge")(merge_command)
    command = typer.main.get_command(app)
    env = Environment(stdin=io.BytesIO(), stdout=io.BytesIO(), stderr=stderr, environ={})
    code = command.main(
        ["merge", path, "-i", "list.txt"], standalone_mode=False, obj=Invocation(env)
    )
    assert code == 0 and stderr.getvalue().endswith("complete: every line ok\n")

"""The summary in words: bytes that moved, and hints that say what is true for this run."""

from __future__ import annotations

import pytest

from fetchcli.config import OutputOptions
from fetchcli.kinds import Skipped
from fetchcli.models import Record
from fetchcli.progress import transferred
from fetchcli.stats import RunStats, Transfer
from fetchcli.summary import more_failures, resume_hint, retries, summary_line


class Arrived:
    def __init__(self, size: int) -> None:
        self.size = size


def test_an_interrupted_run_counts_the_bytes_that_arrived_not_only_finished_bodies():
    stats = RunStats()
    stats.add(Record(url="http://a.test/small", ok=True, status=200, bytes=501))
    stats.received = 350_000_000  # fed per chunk: cut-short bodies too
    assert transferred(stats) == 350_000_000
    assert "350.0 MB" in summary_line(stats) and "501 B" not in summary_line(stats)


def test_the_bytes_are_those_that_came_over_the_wire_not_bodies_held_or_in_flight_twice():
    stats = RunStats()
    # A continued body: 500 MB in its record, of which 250 MB came in this run.
    stats.add(Record(url="http://a.test/big", ok=True, status=206, bytes=500_000_000))
    stats.received = 250_000_000
    # With engines, a finished body may still be listed in flight until the next report.
    stats.transfers[1] = Transfer("http://a.test/big", 500_000_000, Arrived(499_000_000))
    assert transferred(stats) == 250_000_000
    assert "250.0 MB" in summary_line(stats) and "500.0 MB" not in summary_line(stats)


@pytest.mark.parametrize(
    ("options", "hint"),
    [
        (
            OutputOptions(),
            "Nothing recorded what finished (no --jsonl). Run it again with --skip-existing "
            "to pass over the files already saved. Next time add --jsonl FILE, so that "
            "--resume can fetch only the rest.",
        ),
        (
            OutputOptions(skip_existing=True),
            "Nothing recorded what finished (no --jsonl). The same command again passes over "
            "the files already saved. Next time add --jsonl FILE, so that --resume can fetch "
            "only the rest.",
        ),
        (
            OutputOptions(save=False),
            "Nothing recorded what finished (no --jsonl). Next time add --jsonl FILE, so that "
            "--resume can fetch only the rest.",
        ),
        (
            OutputOptions(jsonl="-"),
            "The records went to stdout: next time give --jsonl a FILE, so that --resume can "
            "fetch only the rest.",
        ),
        (
            OutputOptions(jsonl="r.jsonl"),
            "What had not finished has no record in r.jsonl: run the same command again with "
            "--resume to fetch only the rest.",
        ),
        (
            OutputOptions(jsonl="r.jsonl", resume=True),
            "What had not finished has no record in r.jsonl: run the same command again to "
            "fetch only the rest.",
        ),
        (
            OutputOptions(continue_partial=True, skip_existing=True),
            "Nothing recorded what finished (no --jsonl). The same command again passes over "
            "the files already saved and continues the partial files kept. Next time add "
            "--jsonl FILE, so that --resume can fetch only the rest.",
        ),
        (
            OutputOptions(jsonl="r.jsonl", continue_partial=True),
            "What had not finished has no record in r.jsonl: run the same command again with "
            "--resume to fetch only the rest (continuing the partial files kept).",
        ),
        (
            OutputOptions(jsonl="-", continue_partial=True),
            "The records went to stdout: next time give --jsonl a FILE, so that --resume can "
            "fetch only the rest. Run it again with --skip-existing --continue to continue the "
            "partial files kept.",
        ),
    ],
)
def test_the_hint_after_an_interruption_is_true_to_where_the_records_went(options, hint):
    assert resume_hint(options) == hint


def test_no_records_file_means_no_talk_of_resuming_from_one():
    hint = resume_hint(OutputOptions())
    assert "--jsonl FILE --resume" not in hint and "run the same command again with" not in hint


@pytest.mark.parametrize(
    ("options", "line"),
    [
        (OutputOptions(), "… more failures: see the summary"),
        (OutputOptions(jsonl="-"), "… more failures: see the summary and the records on stdout"),
        (
            OutputOptions(jsonl="r.jsonl"),
            "… more failures: see the summary and the records in r.jsonl",
        ),
    ],
)
def test_more_failures_points_at_records_only_when_there_are_some(options, line):
    assert more_failures(options) == line


def test_not_modified_urls_are_ok_in_the_style_of_files_already_there():
    stats = RunStats()
    stats.add(
        Record(url="http://a.test/1", ok=True, status=304, bytes=7, skipped=Skipped.NOT_MODIFIED)
    )
    stats.add(Record(url="http://a.test/2", ok=True, bytes=5, skipped=Skipped.EXISTS))
    stats.add(Record(url="http://a.test/3", ok=True, status=200, skipped=Skipped.DUPLICATE))
    assert (stats.ok, stats.not_modified, stats.skipped) == (2, 1, 1)
    assert "2 ok (1 already there, 1 not modified), 0 failed, 1 skipped, " in summary_line(stats)


@pytest.mark.parametrize(
    ("count", "said"), [(0, "0 retries"), (1, "1 retry"), (1200, "1,200 retries")]
)
def test_retries_are_counted_in_words_that_agree(count, said):
    stats = RunStats()
    stats.retries = count
    assert summary_line(stats).endswith(", " + said)
    assert retries(count) == said

"""`fetchcli demo` runs offline, end to end, and cleans up after itself."""

from __future__ import annotations

import re
import tempfile

import pytest

from fetchcli.demo import demo_urls
from tests.helpers import cli


def test_the_demo_runs_and_leaves_nothing_behind(tmp_path, monkeypatch):
    # Its scratch directory in a temporary root of this test's own: other runs come and go in /tmp.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = cli("demo", "--count", "60", "-c", "8")
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("fetchcli demo: 60 URLs from a local server at http://127.0.0.1:")
    summary = next(line for line in lines if line.startswith("fetchcli: 60 URLs"))
    assert re.search(r"\d+ ok, \d+ failed \(HTTP 4xx \d+\)", summary)
    retries = re.search(r"(\d+) retr(?:y|ies)", summary)
    assert retries and int(retries[1]) > 0  # the flaky pages recovered
    assert list(tmp_path.iterdir()) == []


def test_the_demo_can_keep_its_files(tmp_path):
    result = cli("demo", "--count", "30", "--keep", str(tmp_path / "kept"))
    assert result.exit_code == 0
    assert (tmp_path / "kept" / "results.jsonl").read_text().count("\n") == 30
    assert any(p.suffix == ".html" for p in (tmp_path / "kept").rglob("*"))


@pytest.mark.parametrize("count", [1, 7, 60, 300, 1000])
def test_the_demo_mix_has_exactly_the_count_asked(count: int):
    urls = demo_urls("http://demo.test", count)
    assert len(urls) == count == len(set(urls))

"""--shard K/N: parsing (flags and scheduler variables) and a stable, disjoint, covering split."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fetchcli.errors import UsageError
from fetchcli.models import BadLine, Job
from fetchcli.shard import Shard, host_key, parse_shard, share_of
from fetchcli.sources import parse_line


@pytest.mark.parametrize(
    ("value", "environ", "expected"),
    [
        ("0/1", {}, (0, 1)),
        ("3/8", {}, (3, 8)),
        (" 7/8 ", {}, (7, 8)),
        ("auto/4", {"JOB_COMPLETION_INDEX": "2"}, (2, 4)),
        ("auto", {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "6"}, (5, 6)),
        # --array=1-6: IDs 1..6 are shards 0..5.
        (
            "auto",
            {
                "SLURM_ARRAY_TASK_ID": "1",
                "SLURM_ARRAY_TASK_MIN": "1",
                "SLURM_ARRAY_TASK_MAX": "6",
                "SLURM_ARRAY_TASK_COUNT": "6",
            },
            (0, 6),
        ),
        # --array=10-20:5: IDs 10, 15, 20 are shards 0, 1, 2.
        (
            "auto/3",
            {
                "SLURM_ARRAY_TASK_ID": "15",
                "SLURM_ARRAY_TASK_MIN": "10",
                "SLURM_ARRAY_TASK_MAX": "20",
                "SLURM_ARRAY_TASK_STEP": "5",
                "SLURM_ARRAY_TASK_COUNT": "3",
            },
            (1, 3),
        ),
        # N from auto/N when Slurm does not say.
        ("auto/5", {"SLURM_ARRAY_TASK_ID": "4"}, (4, 5)),
    ],
)
def test_parse_shard(value, environ, expected):
    shard = parse_shard(value, environ)
    assert (shard.index, shard.count, shard.by) == (*expected, "host")


def test_parse_shard_by_url():
    assert parse_shard("1/2", {}, by="url") == Shard(1, 2, "url")


@pytest.mark.parametrize(
    ("value", "environ", "message"),
    [
        ("4/4", {}, "--shard 4/4: K must be below N (K counts from 0, up to 3/4)"),
        ("1/0", {}, "--shard 1/0: N must be a whole number of at least 1 (got '0')"),
        ("-1/4", {}, "--shard -1/4: K must be a whole number (got '-1')"),
        ("a/4", {}, "--shard a/4: K must be a whole number (got 'a')"),
        ("2", {}, "--shard must be K/N, auto/N or auto (got '2')"),
        ("1/2/3", {}, "--shard 1/2/3: N must be a whole number of at least 1 (got '2/3')"),
        ("auto", {}, "--shard auto: no scheduler index: JOB_COMPLETION_INDEX"),
        ("auto", {"JOB_COMPLETION_INDEX": "0"}, "give the Job's completions as --shard auto/N"),
        ("auto/2", {"JOB_COMPLETION_INDEX": "2"}, "JOB_COMPLETION_INDEX=2 is not below N"),
        ("auto/2", {"JOB_COMPLETION_INDEX": "x"}, "JOB_COMPLETION_INDEX must be a whole number"),
        (
            "auto/2",
            {"JOB_COMPLETION_INDEX": "0", "SLURM_ARRAY_TASK_ID": "0"},
            "both JOB_COMPLETION_INDEX and SLURM_ARRAY_TASK_ID are set",
        ),
        ("auto", {"SLURM_ARRAY_TASK_ID": "0"}, "SLURM_ARRAY_TASK_COUNT is unset"),
        (
            "auto/3",
            {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "4"},
            "N is 3 but SLURM_ARRAY_TASK_COUNT is 4",
        ),
        # --array=1,5,9: Slurm's MIN/MAX/COUNT do not describe a plain range.
        (
            "auto",
            {
                "SLURM_ARRAY_TASK_ID": "5",
                "SLURM_ARRAY_TASK_MIN": "1",
                "SLURM_ARRAY_TASK_MAX": "9",
                "SLURM_ARRAY_TASK_COUNT": "3",
            },
            "the Slurm array is not a plain range",
        ),
        # An ID below MIN: not this array's.
        (
            "auto",
            {
                "SLURM_ARRAY_TASK_ID": "0",
                "SLURM_ARRAY_TASK_MIN": "1",
                "SLURM_ARRAY_TASK_COUNT": "2",
            },
            "the Slurm array is not a plain range",
        ),
        ("auto", {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "3"}, "K must be below N"),
    ],
)
def test_bad_shards_are_one_line_usage_errors(value, environ, message):
    with pytest.raises(UsageError) as caught:
        parse_shard(value, environ)
    text = str(caught.value)
    assert message in text
    assert "\n" not in text


def test_bad_shard_by():
    with pytest.raises(UsageError, match="--shard-by must be host or url"):
        parse_shard("0/2", {}, by="path")


def test_the_hash_is_stable_across_processes():
    """Not Python's hash(): another interpreter, with another hash seed, agrees."""
    keys = [b"example.com", b"a.example:8080", b"xn--bcher-kva.example"]
    code = f"from fetchcli.shard import share_of;print([share_of(k, 97) for k in {keys!r}])"
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345"},
    )
    assert other.stdout.strip() == str([share_of(k, 97) for k in keys])
    # And fixed for good: changing it would split hosts between old and new instances.
    assert [share_of(k, 97) for k in keys] == [83, 93, 20]
    assert [share_of(b"example.com", n) for n in (1, 2, 8, 1000)] == [0, 0, 2, 946]


def test_host_is_the_limiters_netloc():
    def key(url: str) -> bytes:
        parsed = parse_line("-", 1, url.encode())
        assert isinstance(parsed, Job)
        return host_key(parsed.parsed)

    assert key("http://Example.COM/a") == key("https://example.com/b") == b"example.com"
    assert key("http://example.com:8080/a") == b"example.com:8080"
    assert key("http://user:pw@example.com/") == b"example.com"
    assert key("http://bücher.example/") == b"xn--bcher-kva.example"


# A few hosts (with ports and letter case) so that hosts repeat; paths so that URLs do.
HOSTS = st.sampled_from(
    ["a.example", "B.example", "b.example", "c.example:8080", "c.example", "[::1]:81", "d.example"]
)
LINES = st.one_of(
    st.builds(
        lambda scheme, host, path: f"{scheme}://{host}/{path}",
        st.sampled_from(["http", "https"]),
        HOSTS,
        st.text("abc/%", max_size=6),
    ),
    st.sampled_from(["", "# a comment", "not a url", "ftp://a.example/x"]),
)


def _items(lines: list[str]) -> list[Job | BadLine]:
    items = [parse_line("list.txt", n, line.encode()) for n, line in enumerate(lines, start=1)]
    return [item for item in items if item is not None]


@given(st.lists(LINES, max_size=60), st.integers(min_value=1, max_value=12))
def test_shards_are_disjoint_cover_every_line_and_keep_hosts_whole(lines, count):
    items = _items(lines)
    for by in ("host", "url"):
        shards = [Shard(index, count, by) for index in range(count)]
        where: dict[bytes, int] = {}
        for item in items:
            owned = [shard.index for shard in shards if shard.belongs(item)]
            assert len(owned) == 1, (item, owned)  # disjoint, and covering
            if by == "host" and isinstance(item, Job):
                assert where.setdefault(host_key(item.parsed), owned[0]) == owned[0]


@given(st.lists(LINES, max_size=60), st.integers(min_value=1, max_value=12))
def test_repeated_urls_land_in_one_shard_so_dedupe_still_works(lines, count):
    from fetchcli.fingerprints import url_key

    for by in ("host", "url"):
        shard = Shard(0, count, by)
        where: dict[bytes, int] = {}
        for item in _items(lines):
            if isinstance(item, Job):
                index = shard.share(item)
                assert where.setdefault(url_key(item.parsed), index) == index


def test_shards_spread_hosts_evenly():
    items = _items([f"http://host{i}.example/x" for i in range(8000)])
    sizes = [sum(Shard(k, 8).belongs(item) for item in items) for k in range(8)]
    assert min(sizes) > 800 and max(sizes) < 1200, sizes

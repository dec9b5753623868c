"""Settings are validated once, with one-line messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from fetchcli.config import Settings, parse_header, parse_size
from fetchcli.errors import UsageError


def test_defaults_follow_the_contract():
    settings = Settings.create()
    assert settings.limits.concurrency == 16 and settings.limits.workers == 16
    assert settings.limits.per_host == 0 and settings.limits.rate == 0
    assert settings.timeouts.total == 30 and settings.timeouts.connect == 10
    assert settings.timeouts.read == 30 and settings.timeouts.deadline is None
    assert settings.retry.retries == 3 and settings.retry.backoff == 0.5
    assert settings.retry.backoff_max == 60
    assert settings.http.max_redirects == 10 and settings.http.user_agent.startswith("fetchcli/")
    assert settings.output.output_dir == Path(".") and settings.output.save


def test_workers_default_to_concurrency_and_zero_means_no_limit():
    settings = Settings.create(concurrency=64, timeout=0, read_timeout=0)
    assert settings.limits.workers == 64
    assert settings.timeouts.total is None and settings.timeouts.read is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency": 0}, "--concurrency must be at least 1 (got 0)"),
        ({"workers": 0}, "--workers must be at least 1 (got 0)"),
        ({"per_host": -1}, "--per-host must be at least 0 (got -1)"),
        ({"rate": -2.0}, "--rate must be at least 0 (got -2.0)"),
        ({"timeout": -1.0}, "--timeout must be at least 0 (got -1.0)"),
        ({"retries": -1}, "--retries must be at least 0 (got -1)"),
        ({"deadline": 0.0}, "--deadline must be more than 0 seconds (got 0.0)"),
        ({"resume": True}, "--resume needs --jsonl PATH"),
        ({"resume": True, "jsonl": "-"}, "--resume cannot read records back from stdout"),
        ({"method": "POST"}, "--method must be GET or HEAD (got POST)"),
        (
            {"proxy": "socks4://h:1"},
            "--proxy must be an http://, https://, socks5:// or socks5h://",
        ),
        ({"input_format": "xml"}, "--input-format must be one of lines, csv, tsv, jsonl"),
        ({"layout": "deep"}, "--layout must be tree or flat (got 'deep')"),
        ({"cut_dirs": -1}, "--cut-dirs must be at least 0 (got -1)"),
        ({"user": "alice"}, "--user USER needs a password: give USER:PASSWORD"),
        ({"netrc_file": "/nonexistent/netrc"}, "cannot read netrc /nonexistent/netrc"),
        ({"cookies": "/nonexistent/c.txt"}, "cannot read cookie file /nonexistent/c.txt"),
        ({"cacert": "/nonexistent/ca.pem"}, "cannot read --cacert /nonexistent/ca.pem"),
        ({"headers": ["NoColon"]}, "--header must look like 'Name: value'"),
        ({"max_bytes": "lots"}, "--max-bytes must be a number of bytes"),
        ({"backoff": float("nan")}, "--backoff must be at least 0 (got nan)"),
    ],
)
def test_bad_values_are_usage_errors(options, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings.create(**options)


@pytest.mark.parametrize(
    ("raw", "size"),
    [("0", 0), ("1024", 1024), ("500k", 512_000), ("10M", 10 << 20), ("2GiB", 2 << 30), (7, 7)],
)
def test_sizes(raw, size):
    assert parse_size(raw) == size


def test_headers_are_parsed_like_curl():
    assert parse_header("X-Token:  abc def ") == ("X-Token", "abc def")
    assert parse_header("Empty:") == ("Empty", "")
    with pytest.raises(UsageError):
        parse_header("Bad Name: x")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency": "x"}, "concurrency must be an integer (got 'x')"),
        ({"concurrency": True}, "concurrency must be an integer (got True)"),
        ({"workers": 1.5}, "workers must be an integer or None (got 1.5)"),
        ({"timeout": "10"}, "timeout must be a number (got '10')"),
        ({"save": "no"}, "save must be True or False (got 'no')"),
        ({"method": None}, "method must be a string (got None)"),
        ({"headers": "X-A: 1"}, "headers must be a list of strings or a dict of strings"),
        ({"headers": {"X-A": 1}}, "headers must be a list of strings or a dict of strings"),
        ({"output_dir": 3}, "output_dir must be a string or a path (got 3)"),
        ({"max_bytes": 1.5}, "max_bytes must be an integer or a string or None (got 1.5)"),
        ({"retries": -1}, "--retries must be at least 0 (got -1)"),
        ({"concurency": 4, "rettries": 1}, "not an option: concurency, rettries"),
    ],
)
def test_options_of_any_type_are_checked_before_they_are_used(options, message):
    with pytest.raises(UsageError) as raised:
        Settings.from_options(**options)
    assert str(raised.value).startswith(message)


def test_options_mean_what_the_flags_mean():
    settings = Settings.from_options(
        max_bytes="1M", headers={"X-A": "1"}, output_dir=Path("out"), timeout=5, rate=2
    )
    assert settings.http == Settings.create(max_bytes=1 << 20, headers=["X-A: 1"]).http
    assert settings.http.max_bytes == 1048576 and settings.http.headers == (("X-A", "1"),)
    assert settings.output.output_dir == Path("out") and settings.timeouts.total == 5
    assert Settings.from_options() == Settings.create()
    with pytest.raises(UsageError, match="--header must look like 'Name: value'"):
        Settings.from_options(headers={"Bad Name": "x"})

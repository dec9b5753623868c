"""The error hierarchy and its contract words (library errors: tests/test_transport.py)."""

from __future__ import annotations

import json

import pytest

from fetchcli.errors import FetchError, PermanentError, TransientError, primary_error
from fetchcli.kinds import ErrorKind, Skipped

CONTRACT_KINDS = [
    "http",
    "timeout",
    "connect",
    "dns",
    "tls",
    "network",
    "protocol",
    "truncated",
    "redirect",
    "too_large",
    "decoding",
    "io",
    "proxy",
    "invalid_url",
    "deadline",
    "checksum",
    "internal",
]


def test_the_kinds_are_the_contract_words():
    assert [kind.value for kind in ErrorKind] == CONTRACT_KINDS
    assert [value.value for value in Skipped] == ["duplicate", "exists", "not_modified"]


@pytest.mark.parametrize("kind", list(ErrorKind) + list(Skipped))
def test_a_kind_is_its_word_in_json_and_in_text(kind: ErrorKind | Skipped):
    assert json.dumps({"k": kind}) == json.dumps({"k": kind.value})
    assert kind == kind.value and str(kind) == f"{kind}" == kind.value


def test_a_fetch_error_carries_its_kind_status_and_wish():
    error = TransientError(ErrorKind.HTTP, "HTTP 429", status=429, retry_after=7)
    assert isinstance(error, FetchError)
    assert (error.kind, error.status, error.retry_after, str(error)) == (
        "http",
        429,
        7,
        "HTTP 429",
    )
    assert PermanentError(ErrorKind.IO, "cannot write").status is None


def test_a_group_of_several_errors_comes_out_as_its_most_telling_leaf():
    import asyncio

    from fetchcli.errors import Interrupted, OutputError, ReaderGone

    gone = ReaderGone("cannot write records to stdout: Broken pipe")
    group = BaseExceptionGroup(
        "workers", [asyncio.CancelledError(), ValueError("x"), ExceptionGroup("inner", [gone])]
    )
    assert primary_error(group) is gone
    stop = Interrupted(2)
    assert primary_error(BaseExceptionGroup("g", [OutputError("disk"), stop])) is stop
    first = ValueError("first")
    assert primary_error(ExceptionGroup("g", [first, KeyError("second")])) is first
    cancelled = asyncio.CancelledError()
    assert primary_error(BaseExceptionGroup("g", [cancelled])) is cancelled

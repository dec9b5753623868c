"""The error hierarchy and its contract words (library errors: tests/test_transport.py)."""

from __future__ import annotations

import json

import pytest

from fetchcli.errors import FetchError, PermanentError, TransientError, sole_error
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


def test_sole_error_unwraps_one_leaf_and_keeps_a_group_of_several():
    leaf = ValueError("one")
    assert sole_error(ExceptionGroup("g", [ExceptionGroup("inner", [leaf])])) is leaf
    several = ExceptionGroup("g", [ValueError("a"), KeyError("b")])
    assert sole_error(several) is several

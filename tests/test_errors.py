"""Every httpx transport error maps to a fetchcli error, classified by what to do next."""

from __future__ import annotations

import socket
import ssl

import httpx
import pytest

from fetchcli.errors import PermanentError, TransientError, map_transport_error


def all_subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub} | all_subclasses(sub)
    return found


@pytest.mark.parametrize("error_class", sorted(all_subclasses(httpx.TransportError), key=str))
def test_every_transport_error_is_mapped(error_class: type[httpx.TransportError]):
    mapped = map_transport_error(error_class("boom"))
    assert isinstance(mapped, (TransientError, PermanentError))
    assert mapped.kind and str(mapped)


@pytest.mark.parametrize(
    ("error", "kind", "transient"),
    [
        (httpx.ConnectTimeout("t"), "timeout", True),
        (httpx.ReadTimeout("t"), "timeout", True),
        (httpx.ConnectError("refused"), "connect", True),
        (httpx.ReadError("reset"), "network", True),
        (httpx.RemoteProtocolError("cut"), "protocol", True),
        (httpx.UnsupportedProtocol("x"), "invalid_url", False),
        (httpx.DecodingError("bad gzip"), "decoding", False),
    ],
)
def test_classification(error, kind, transient):
    mapped = map_transport_error(error)
    assert mapped.kind == kind
    assert isinstance(mapped, TransientError) is transient


def caused_by(error: Exception, cause: BaseException) -> Exception:
    error.__cause__ = cause
    return error


def test_a_bad_certificate_is_not_retried():
    error = caused_by(httpx.ConnectError("x"), ssl.SSLCertVerificationError("bad cert"))
    mapped = map_transport_error(error)
    assert isinstance(mapped, PermanentError) and mapped.kind == "tls"


def test_an_unknown_host_is_not_retried_but_a_resolver_hiccup_is():
    nxdomain = caused_by(httpx.ConnectError("x"), socket.gaierror(socket.EAI_NONAME, "unknown"))
    again = caused_by(httpx.ConnectError("x"), socket.gaierror(socket.EAI_AGAIN, "try again"))
    assert isinstance(map_transport_error(nxdomain), PermanentError)
    assert isinstance(map_transport_error(again), TransientError)


def test_a_group_of_several_errors_comes_out_as_its_most_telling_leaf():
    import asyncio

    from fetchcli.errors import Interrupted, OutputError, ReaderGone, primary_error

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

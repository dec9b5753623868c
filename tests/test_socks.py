"""--proxy socks5:// and socks5h://: requests carried by a loopback SOCKS5 proxy (tests/socks5.py),
a login, TLS through the tunnel with --cacert, and every failure in fetchcli's words."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import aiohttp_socks
import pytest
import python_socks

from fetchcli.errors import PermanentError, TransientError
from fetchcli.kinds import ErrorKind
from fetchcli.transport_errors import Exchange, from_socks, socks_errors
from tests.helpers import CliResult, cli, refused_port
from tests.servers import body_for
from tests.socks5 import socks5_in_thread


def get(proxy: str, *urls: str, retries: int = 0, extra: tuple[str, ...] = ()) -> CliResult:
    stdin = "".join(url + "\n" for url in urls).encode()
    args = ["get", "--no-save", "-P", "1", "-r", str(retries), "--backoff", "0", "--jsonl", "-"]
    return cli(*args, "--proxy", proxy, *extra, stdin=stdin)


def test_socks5h_lets_the_proxy_resolve_the_name(server, unique):
    target = f"/ok/{unique}/a"
    with socks5_in_thread() as proxy:
        result = get(proxy.url("socks5h"), f"http://localhost:{server.port}{target}")
        assert proxy.destinations == [("localhost", server.port)]
    (record,) = result.records()
    assert record["ok"] and record["bytes"] == len(body_for(target))
    assert server.hits(target) == 1


def test_socks5_resolves_here_and_sends_the_proxy_an_address(server, unique):
    target = f"/ok/{unique}/b"
    with socks5_in_thread() as proxy:
        result = get(proxy.url("socks5"), f"http://localhost:{server.port}{target}")
        ((host, port),) = proxy.destinations
    assert ipaddress.ip_address(host) and port == server.port
    assert result.records()[0]["ok"]


def test_a_socks_login_and_a_refused_one(server, unique):
    target = f"/ok/{unique}/c"
    with socks5_in_thread(user="u", password="p w") as proxy:
        good = get(proxy.url("socks5", "u:p%20w"), server.url(target))
        bad = get(proxy.url("socks5", "u:wrong"), server.url(target), retries=3)
        assert proxy.refused_logins == 1  # not retried: a refused login is refused again
    assert good.records()[0]["ok"]
    (record,) = bad.records()
    assert record["error_kind"] == "proxy" and record["attempts"] == 1
    assert record["error"] == "SOCKS proxy refused the login"
    assert "wrong" not in bad.stdout.decode()


def test_a_proxy_that_cannot_reach_the_origin_and_one_that_is_not_there(server):
    with refused_port() as closed:
        with socks5_in_thread() as proxy:
            (unreachable,) = get(proxy.url("socks5h"), f"http://127.0.0.1:{closed}/x").records()
        (absent,) = get(f"socks5://127.0.0.1:{closed}", server.url("/ok/x/d"), retries=1).records()
    assert unreachable["error_kind"] == "proxy"
    assert (
        unreachable["error"]
        == f"SOCKS proxy could not reach 127.0.0.1:{closed}: connection refused"
    )
    assert absent["error_kind"] == "proxy" and absent["attempts"] == 2  # retried
    assert absent["error"] == "cannot connect to the SOCKS proxy: connection refused"


@pytest.mark.parametrize("http2", [False, True])  # aiohttp's pool, or httpcore's (socksio)
def test_tls_through_the_tunnel_trusts_cacert_and_fails_as_tls_without_it(
    tls_server, authority, tmp_path: Path, unique, http2
):
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    target = f"/ok/{unique}/e"
    h2 = ("--http2",) if http2 else ()
    with socks5_in_thread() as proxy:
        trusted = get(
            proxy.url("socks5"), tls_server.url(target), extra=("--cacert", str(bundle), *h2)
        )
        untrusted = get(proxy.url("socks5"), tls_server.url(target), retries=3, extra=h2)
    assert trusted.records()[0]["ok"] and tls_server.hits(target) == 1
    (record,) = untrusted.records()
    assert record["error_kind"] == "tls" and record["attempts"] == 1  # final, not "network"
    assert record["error"].startswith("TLS certificate not trusted")


# --- aiohttp-socks' errors (and python-socks' under them), each in fetchcli's words ---------


def exchange() -> Exchange:
    return Exchange(host="example.test", port=8080)


def wrapped(error: Exception) -> Exception:
    """As aiohttp-socks raises it: its own class, from python-socks' error."""
    outer: Exception
    if isinstance(error, python_socks.ProxyTimeoutError):
        outer = aiohttp_socks.ProxyTimeoutError(str(error))
    elif isinstance(error, python_socks.ProxyConnectionError):
        outer = aiohttp_socks.ProxyConnectionError(str(error))
    else:
        assert isinstance(error, python_socks.ProxyError)
        outer = aiohttp_socks.ProxyError(str(error), error_code=error.error_code)
    outer.__cause__ = error
    return outer


def refused_connect() -> python_socks.ProxyConnectionError:
    error = python_socks.ProxyConnectionError(111, "Couldn't connect to proxy p:1 [refused]")
    error.__cause__ = ConnectionRefusedError(111, "Connect call failed")
    return error


SOCKS_CASES = [
    (
        lambda: python_socks.ProxyTimeoutError("Proxy connection timed out: 10"),
        "connect to the SOCKS proxy timed out",
        False,
    ),
    (refused_connect, "cannot connect to the SOCKS proxy: connection refused", False),
    (
        lambda: python_socks.ProxyError("Connection refused", error_code=5),
        "SOCKS proxy could not reach example.test:8080: connection refused",
        False,
    ),
    (
        lambda: python_socks.ProxyError("Host unreachable", error_code=4),
        "SOCKS proxy could not reach example.test:8080: host unreachable",
        False,
    ),
    (
        lambda: python_socks.ProxyError("Connection not allowed by ruleset", error_code=2),
        "SOCKS proxy refused example.test:8080: not allowed by its rules",
        True,
    ),
    (
        lambda: python_socks.ProxyError("Username and password authentication failure"),
        "SOCKS proxy refused the login",
        True,
    ),
    (
        lambda: python_socks.ProxyError("Malformed connect reply"),
        "SOCKS proxy failed: Malformed connect reply",
        False,
    ),
]


@pytest.mark.parametrize("as_raised", [wrapped, lambda error: error], ids=["wrapped", "bare"])
@pytest.mark.parametrize(("error", "message", "permanent"), SOCKS_CASES)
def test_socks_errors_in_fetchcli_words(as_raised, error, message, permanent):
    raised = as_raised(error())
    assert isinstance(raised, socks_errors())
    translated = from_socks(raised, exchange())
    assert (translated.kind, str(translated)) == (ErrorKind.PROXY, message)
    assert isinstance(translated, PermanentError if permanent else TransientError)


def test_every_socks_error_class_is_mapped():
    for module in (aiohttp_socks, python_socks):
        raised = {
            getattr(module, name)
            for name in module.__all__
            if name.startswith("Proxy") and name.endswith("Error")
        }
        assert len(raised) == 3 and raised <= set(socks_errors())

"""Logins and cookies end to end: basic auth from a netrc and from -u, cookie files by domain,
path and Secure (over TLS with a private CA given by --cacert), --keep-cookies per host; none
of it sent to another origin after a redirect, and no secret in a record or on stderr."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
import trustme

from fetchcli.cli import run_cli
from fetchcli.environment import Environment
from tests.helpers import CliResult, cli
from tests.servers import FaultServer

SECRET = "s3cr3t pa55"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def on_localhost(server: FaultServer, target: str) -> str:
    """The same server under another host name: another origin, another netrc machine."""
    return f"http://localhost:{server.port}{target}"


def redirect(server: FaultServer, key: str, to: str) -> str:
    return server.url(f"/redirect/to/{key}?url={to}")


def get(*args: str, stdin: str) -> CliResult:
    # One process: these runs are about headers, not engines.
    result = cli(
        "get", "--no-save", "-P", "1", "-r", "0", "--jsonl", "-", *args, stdin=stdin.encode()
    )
    assert SECRET not in result.stdout.decode() and SECRET not in result.stderr
    return result


@pytest.fixture
def netrc(tmp_path: Path) -> Path:
    path = tmp_path / "netrc"
    path.write_text(
        f'machine 127.0.0.1 login alice password "{SECRET}"\n'
        "machine localhost login bob password other\n"
    )
    return path


def test_a_netrc_login_goes_to_its_host(server, unique, netrc):
    target = f"/headers/{unique}"
    result = get("--netrc-file", str(netrc), stdin=server.url(target))
    assert result.exit_code == 0
    assert server.last_headers(target)["authorization"] == basic("alice", SECRET)


def test_after_a_redirect_a_netrc_gives_the_new_hosts_own_login_and_an_unlisted_host_none(
    server, other_server, unique, tmp_path
):
    listed_elsewhere = f"/headers/{unique}/listed"
    netrc = tmp_path / "netrc"
    netrc.write_text(f'machine 127.0.0.1 login alice password "{SECRET}"\n')
    result = get(
        "--netrc-file",
        str(netrc),
        stdin=redirect(server, unique, on_localhost(other_server, listed_elsewhere)),
    )
    assert result.exit_code == 0
    assert "authorization" not in other_server.last_headers(listed_elsewhere)
    netrc.write_text(netrc.read_text() + "machine localhost login bob password b\n")
    again = f"/headers/{unique}/again"
    get(
        "--netrc-file",
        str(netrc),
        stdin=redirect(server, unique, on_localhost(other_server, again)),
    )
    assert other_server.last_headers(again)["authorization"] == basic("bob", "b")


def test_user_goes_to_the_listed_origin_and_never_to_another_after_a_redirect(
    server, other_server, unique
):
    here, there = f"/headers/{unique}/here", f"/headers/{unique}/there"
    stdin = f"{server.url(here)}\n{redirect(server, unique, other_server.url(there))}\n"
    result = get("-u", f"alice:{SECRET}", stdin=stdin)
    assert result.exit_code == 0
    assert server.last_headers(here)["authorization"] == basic("alice", SECRET)
    assert "authorization" not in other_server.last_headers(there)  # same host, another port


def test_a_users_own_authorization_header_wins(server, unique, netrc):
    target = f"/headers/{unique}"
    get("--netrc-file", str(netrc), "-H", "Authorization: Bearer mine", stdin=server.url(target))
    assert server.last_headers(target)["authorization"] == "Bearer mine"


def test_user_without_a_password_is_asked_on_the_terminal(server, unique):
    asked: list[str] = []

    def prompt(text: str) -> str:
        asked.append(text)
        return SECRET

    target = f"/headers/{unique}"
    stdout, stderr = io.BytesIO(), io.StringIO()
    env = Environment(
        stdin=io.BytesIO(server.url(target).encode()),
        stdout=stdout,
        stderr=stderr,
        stdin_isatty=False,
        stderr_isatty=False,
        environ={},
        prompt=prompt,
    )
    code = run_cli(["get", "--no-save", "-P", "1", "-q", "-u", "alice"], env)
    assert code == 0 and asked == ["Enter host password for user 'alice':"]
    assert server.last_headers(target)["authorization"] == basic("alice", SECRET)
    without = cli("get", "--no-save", "-u", "alice", stdin=server.url(target).encode())
    assert without.exit_code == 2 and "--user USER needs a password" in without.stderr


def test_a_password_in_a_listed_url_is_used_and_never_recorded(server, unique):
    target = f"/redirect/chain/{unique}/1"
    url = server.url(target).replace("http://", f"http://alice:{SECRET.replace(' ', '%20')}@")
    result = get(stdin=url)
    (record,) = result.records()
    assert record["ok"], record
    shown = server.url(target).replace("http://", "http://***@")
    assert record["url"] == shown and record["final_url"] == shown[: -len("1")] + "0"
    assert server.last_headers(f"/redirect/chain/{unique}/0")["authorization"] == basic(
        "alice", SECRET
    )


# --- cookie files --------------------------------------------------------------------------


def cookie_file(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "cookies.txt"
    path.write_text("# Netscape HTTP Cookie File\n" + "".join(line + "\n" for line in lines))
    return path


def test_each_cookie_goes_only_where_its_domain_and_path_match(server, unique, tmp_path):
    cookies = cookie_file(
        tmp_path,
        f"127.0.0.1\tFALSE\t/headers/{unique}/a\tFALSE\t0\tpath_a\t1",
        "127.0.0.1\tFALSE\t/\tFALSE\t0\teverywhere\t2",
        "localhost\tFALSE\t/\tFALSE\t0\tother_host\t3",
        "127.0.0.1\tFALSE\t/\tFALSE\t1\texpired\t4",
    )
    a, b = f"/headers/{unique}/a/x", f"/headers/{unique}/b"
    result = get("--cookies", str(cookies), stdin=f"{server.url(a)}\n{server.url(b)}\n")
    assert result.exit_code == 0
    assert server.last_headers(a)["cookie"] == "path_a=1; everywhere=2"  # longer paths first
    assert server.last_headers(b)["cookie"] == "everywhere=2"
    elsewhere = f"/headers/{unique}/c"
    get("--cookies", str(cookies), stdin=on_localhost(server, elsewhere))
    assert server.last_headers(elsewhere)["cookie"] == "other_host=3"


def test_file_cookies_never_follow_a_redirect_to_another_origin_and_a_users_cookie_wins(
    server, other_server, unique, tmp_path
):
    cookies = cookie_file(tmp_path, "127.0.0.1\tFALSE\t/\tFALSE\t0\tfrom_file\t1")
    there = f"/headers/{unique}/there"
    get(
        "--cookies", str(cookies), stdin=redirect(server, unique, on_localhost(other_server, there))
    )
    assert "cookie" not in other_server.last_headers(there)
    mine = f"/headers/{unique}/mine"
    get("--cookies", str(cookies), "-H", "Cookie: mine=1", stdin=server.url(mine))
    assert server.last_headers(mine)["cookie"] == "mine=1"


@pytest.fixture
def ca_file(authority: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return path


def test_secure_cookies_go_over_https_only(server, tls_server, unique, tmp_path, ca_file):
    cookies = cookie_file(
        tmp_path,
        "127.0.0.1\tFALSE\t/\tTRUE\t0\tsecure\t1",
        "127.0.0.1\tFALSE\t/\tFALSE\t0\tplain\t2",
    )
    target = f"/headers/{unique}"
    stdin = f"{server.url(target)}\n{tls_server.url(target)}\n"
    result = get("--cookies", str(cookies), "--cacert", str(ca_file), stdin=stdin)
    assert result.exit_code == 0, result.records()
    assert server.last_headers(target)["cookie"] == "plain=2"
    assert tls_server.last_headers(target)["cookie"] == "secure=1; plain=2"


@pytest.mark.parametrize("http2", [False, True])
def test_cacert_adds_a_private_ca_and_without_it_the_server_is_not_trusted(
    tls_server, unique, ca_file, http2
):
    target = f"/ok/{unique}/x"
    extra = ["--http2"] if http2 else []
    trusted = get("--cacert", str(ca_file), *extra, stdin=tls_server.url(target))
    assert trusted.exit_code == 0 and tls_server.hits(target) == 1
    (refused,) = get(*extra, stdin=tls_server.url(target)).records()
    assert refused["error_kind"] == "tls" and tls_server.hits(target) == 1


def test_a_bad_ca_bundle_is_a_usage_error(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate\n")
    result = cli("get", "--no-save", "--cacert", str(bundle), stdin=b"http://a.test/\n")
    assert result.exit_code == 2
    assert result.stderr == f"fetchcli: error: --cacert {bundle} holds no usable PEM certificate\n"


# --- cookies servers set: --keep-cookies --------------------------------------------------


def test_kept_cookies_go_back_to_the_same_host_only(server, unique):
    login = f"/set-cookie/{unique}?cookie=session%3Dabc%3B%20Path%3D%2F&to=/headers/{unique}/in"
    later, elsewhere = f"/headers/{unique}/later", f"/headers/{unique}/elsewhere"
    stdin = f"{server.url(login)}\n{server.url(later)}\n{on_localhost(server, elsewhere)}\n"
    result = get("--keep-cookies", "-c", "1", stdin=stdin)
    assert result.exit_code == 0
    # Set on the 302, sent on the redirect, then to a later URL of the same host...
    assert server.last_headers(f"/headers/{unique}/in")["cookie"] == "session=abc"
    assert server.last_headers(later)["cookie"] == "session=abc"
    # ...and never to another host, even the same server under another name.
    assert "cookie" not in server.last_headers(elsewhere)
    assert all("session=abc" not in json.dumps(record) for record in result.records())

"""Credentials: -u for the listed origin, netrc by host, the default only for listed URLs."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest

from fetchcli.credentials import Credentials, Login, origin_of
from fetchcli.errors import UsageError

NETRC = """\
machine data.example.test login alice password "s3cret word"
machine urs.example.test
    login bob
    password hunter2
macdef init
    this is a macro, not a login

default login anon password guest
"""


def write(tmp_path: Path, text: str, name: str = "netrc") -> str:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


def u(text: str) -> httpx.URL:
    return httpx.URL(text)


def test_origins_fill_in_the_default_port_and_fold_case():
    assert origin_of(u("https://A.test/x")) == origin_of(u("https://a.test:443/y"))
    assert origin_of(u("http://a.test/")) == ("http", "a.test", 80)
    assert origin_of(u("http://a.test/")) != origin_of(u("https://a.test/"))
    assert origin_of(u("http://a.test:8080/")) != origin_of(u("http://a.test/"))


def test_user_goes_to_the_listed_origin_only():
    creds = Credentials.load(user="me:pw")
    listed = u("https://a.test/file")
    assert creds.for_url(listed, listed) == Login("me", "pw")
    assert creds.for_url(u("https://a.test:443/moved"), listed) == Login("me", "pw")
    # After a redirect to another origin (host, scheme or port), nothing.
    for target in ("https://b.test/file", "http://a.test/file", "https://a.test:8443/file"):
        assert creds.for_url(u(target), listed) is None


def test_the_authorization_header_is_basic_utf8():
    creds = Credentials.load(user="jürgen:pä:ss")  # the password may hold colons
    header = creds.authorization(u("https://a.test/"), u("https://a.test/"))
    assert header == "Basic " + base64.b64encode("jürgen:pä:ss".encode()).decode()


def test_a_user_without_a_password_is_asked_on_the_terminal():
    asked = []

    def prompt(text: str) -> str:
        asked.append(text)
        return "typed"

    creds = Credentials.load(user="me", prompt=prompt)
    assert creds.user == Login("me", "typed")
    assert asked == ["Enter host password for user 'me':"]


@pytest.mark.parametrize(
    ("user", "prompt", "message"),
    [
        ("me", None, "--user USER needs a password: give USER:PASSWORD, or run on a terminal"),
        ("", None, "--user needs USER or USER:PASSWORD"),
    ],
)
def test_bad_user_values_are_usage_errors(user, prompt, message):
    with pytest.raises(UsageError, match=f"^{message}"):
        Credentials.load(user=user, prompt=prompt)


def test_an_interrupted_prompt_is_a_usage_error():
    def prompt(text: str) -> str:
        raise EOFError

    with pytest.raises(UsageError, match=r"^--user: no password given$"):
        Credentials.load(user="me", prompt=prompt)


def test_netrc_machines_go_to_their_hosts_also_after_a_redirect(tmp_path):
    creds = Credentials.load(netrc_file=write(tmp_path, NETRC))
    listed = u("https://data.example.test/granule.nc")
    assert creds.for_url(listed, listed) == Login("alice", "s3cret word")
    # The Earthdata flow: the data host sends the client to the login host, which is listed.
    login_host = u("https://URS.example.test:443/oauth/authorize")
    assert creds.for_url(login_host, listed) == Login("bob", "hunter2")
    # Another port or scheme of a listed host: netrc machines name hosts (as curl).
    assert creds.for_url(u("http://data.example.test:8080/x"), listed) == creds.for_url(
        listed, listed
    )


def test_the_netrc_default_is_for_listed_urls_never_for_a_redirect_target(tmp_path):
    creds = Credentials.load(netrc_file=write(tmp_path, NETRC))
    listed = u("https://elsewhere.test/file")
    assert creds.for_url(listed, listed) == Login("anon", "guest")
    assert creds.for_url(u("https://tracker.test/"), listed) is None
    from_data = u("https://data.example.test/x")
    assert creds.for_url(u("https://unlisted.test/"), from_data) is None


def test_user_wins_over_the_netrc_on_the_listed_origin(tmp_path):
    creds = Credentials.load(user="me:pw", netrc_file=write(tmp_path, NETRC))
    listed = u("https://data.example.test/x")
    assert creds.for_url(listed, listed) == Login("me", "pw")
    assert creds.for_url(u("https://urs.example.test/"), listed) == Login("bob", "hunter2")


def test_netrc_reads_the_home_file_and_a_missing_one_is_no_credentials(tmp_path):
    write(tmp_path, "machine h.test login a password b\n", ".netrc")
    creds = Credentials.load(use_netrc=True, home=tmp_path)
    assert creds.machines == {"h.test": Login("a", "b")}
    assert not Credentials.load(use_netrc=True, home=tmp_path / "nowhere")
    assert not Credentials.load()


def test_a_missing_netrc_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match=r"^cannot read netrc .*nope: No such file"):
        Credentials.load(netrc_file=str(tmp_path / "nope"))


def test_a_broken_netrc_is_one_line_that_never_shows_a_password(tmp_path):
    # An unquoted password with a space: its second word is a token netrc cannot place.
    path = write(tmp_path, "machine h.test login a password very secret\n")
    with pytest.raises(UsageError) as caught:
        Credentials.load(netrc_file=path)
    message = str(caught.value)
    # (Python's netrc counts the line after the token: "near".)
    assert message == f"cannot use netrc {path}: not valid netrc syntax near line 2"
    assert "secret" not in message and "\n" not in message


def test_passwords_stay_out_of_reprs(tmp_path):
    creds = Credentials.load(user="me:topsecret", netrc_file=write(tmp_path, NETRC))
    shown = repr(creds) + repr(creds.user) + str(creds.machines.get("urs.example.test"))
    for secret in ("topsecret", "hunter2", "s3cret", "guest"):
        assert secret not in shown

"""Basic-auth credentials from `-u USER[:PASSWORD]` and a netrc; read once, never shown.

Which login a request gets, given the URL it goes to and the listed URL it came from:

- `-u` goes to the origin (scheme, host, port) of the listed URL, and nowhere else: after a
  redirect to another origin it is not sent (as curl does). Deciding by each job's own URL,
  not by a set of every origin in the list, keeps the answer the same whatever has been
  read so far, and needs nothing shared between engine processes.
- a netrc `machine` goes to that host, on any port and scheme (as curl does), also after a
  redirect: the Earthdata login flow sends the data host's URL to a login host.
- the netrc `default` goes to listed origins only, never to a host a redirect chose.

`-u` wins over the netrc for the listed origin. Passwords never appear in a repr, an error
message or a record: a netrc parse error names the line, not the token.
"""

from __future__ import annotations

import base64
import netrc
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fetchcli.errors import UsageError

if TYPE_CHECKING:  # annotations only: `--help` does not load httpx
    import httpx

__all__ = ["DEFAULT_PORTS", "Credentials", "Login", "Origin", "origin_of", "with_password"]

Origin = tuple[str, str, int]
DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: httpx.URL) -> Origin:
    """(scheme, host, port), the port filled in: `https://h` and `https://h:443` are one."""
    scheme = url.scheme.lower()
    host = url.raw_host.decode("ascii").lower()
    return scheme, host, url.port or DEFAULT_PORTS.get(scheme, 0)


@dataclass(frozen=True, slots=True)
class Login:
    """A user name and password; the password stays out of reprs."""

    user: str
    password: str = field(repr=False)

    def authorization(self) -> str:
        """The `Authorization` header value (RFC 7617, UTF-8)."""
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode("ascii")
        return f"Basic {token}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    """The logins of a run: `-u`, the netrc's machines and its default."""

    user: Login | None = None
    machines: Mapping[str, Login] = field(default_factory=dict, repr=False)
    default: Login | None = None

    def __bool__(self) -> bool:
        return bool(self.user or self.machines or self.default)

    @classmethod
    def load(
        cls,
        *,
        user: str | None = None,
        netrc_file: str | None = None,
        use_netrc: bool = False,
        home: Path | None = None,
        prompt: Callable[[str], str] | None = None,
    ) -> Credentials:
        """Build from the flags: `--user`, `--netrc-file FILE`, `--netrc` (`~/.netrc`).

        `prompt` asks for a password on the terminal (getpass); None when there is none.
        Raises UsageError with one line for a bad value or an unreadable or broken netrc.
        """
        login = _user_login(user, prompt) if user is not None else None
        machines: dict[str, Login] = {}
        default = None
        path = netrc_file
        if path is None and use_netrc:
            candidate = (home or Path.home()) / ".netrc"
            path = str(candidate) if candidate.exists() else None  # none: as curl -n
        if path is not None:
            machines, default = _read_netrc(path)
        return cls(user=login, machines=machines, default=default)

    def for_url(self, url: httpx.URL, listed: httpx.URL) -> Login | None:
        """The login for a request to `url`, made for the listed URL `listed`; or None."""
        own = origin_of(url) == origin_of(listed)
        if own and self.user is not None:
            return self.user
        login = self.machines.get(url.raw_host.decode("ascii").lower())
        if login is not None:
            return login
        return self.default if own else None

    def authorization(self, url: httpx.URL, listed: httpx.URL) -> str | None:
        """The `Authorization` header for `for_url`, or None."""
        login = self.for_url(url, listed)
        return None if login is None else login.authorization()


def with_password(value: str, prompt: Callable[[str], str] | None) -> str:
    """`USER` -> `USER:PASSWORD`, the password asked with `prompt` (as curl asks on its
    terminal); `USER:PASSWORD`, or any value when there is no prompt, as it is."""
    user, colon, _ = value.partition(":")
    if colon or not value or prompt is None:
        return value
    try:
        password = prompt(f"Enter host password for user '{user}':")
    except (EOFError, KeyboardInterrupt, OSError):
        msg = "--user: no password given"
        raise UsageError(msg) from None
    return f"{user}:{password}"


def _user_login(value: str, prompt: Callable[[str], str] | None) -> Login:
    if not value:
        msg = "--user needs USER or USER:PASSWORD"
        raise UsageError(msg)
    user, colon, password = with_password(value, prompt).partition(":")
    if not colon:
        msg = "--user USER needs a password: give USER:PASSWORD, or run on a terminal to be asked"
        raise UsageError(msg)
    return Login(user, password)


def _read_netrc(path: str) -> tuple[dict[str, Login], Login | None]:
    try:
        # An explicit file: Python then skips its ~/.netrc permission check, as curl does.
        parsed = netrc.netrc(os.fspath(path))
    except netrc.NetrcParseError as exc:
        # Never the message: it quotes the token it choked on, which may be a password.
        msg = f"cannot use netrc {path}: not valid netrc syntax near line {exc.lineno}"
        raise UsageError(msg) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
        msg = f"cannot read netrc {path}: {reason}"
        raise UsageError(msg) from None
    machines: dict[str, Login] = {}
    default = None
    for host, (login, _account, password) in parsed.hosts.items():
        if not login and not password:
            continue
        entry = Login(login or "", password or "")
        if host == "default":
            default = entry
        else:
            machines[host.lower()] = entry
    return machines, default

"""Settings: frozen value objects built once from the flags (or the library call), then passed down.

Each group is shaped for the module that consumes it: `fetcher.py` takes a `RetryPolicy` and
`Timeouts`, the frontier takes `Limits`, and so on. `Settings.create()` is the one place where
values are validated, and its signature is the list of options: their names, types and defaults
(the flags in `options.py` read theirs from it). `Settings.from_options()` is the way in for
untyped callers, the command line and `fetchcli.fetch()` alike. Both raise `UsageError` with a
one-line message.
"""

from __future__ import annotations

import functools
import math
import os
import re
import ssl
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn, Union, cast, get_args, get_origin, get_type_hints

from fetchcli import __version__
from fetchcli.cookies import CookieFile
from fetchcli.credentials import Credentials
from fetchcli.errors import UsageError
from fetchcli.shard import Shard, ShardBy, parse_shard

__all__ = [
    "DEFAULT_CONCURRENCY",
    "INPUT_FORMATS",
    "LAYOUTS",
    "RETRY_STATUSES",
    "HttpOptions",
    "InputOptions",
    "Layout",
    "Limits",
    "OutputOptions",
    "RayOptions",
    "RetryPolicy",
    "Settings",
    "Timeouts",
    "option_types",
    "parse_header",
    "parse_size",
]

DEFAULT_CONCURRENCY = 16
DEFAULT_TIMEOUT = 30.0
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 30.0
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF = 0.5
DEFAULT_BACKOFF_MAX = 60.0
DEFAULT_MAX_REDIRECTS = 10
DEFAULT_USER_AGENT = f"fetchcli/{__version__}"

# Statuses worth another attempt: the server said "not now", not "no".
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
# Statuses whose Retry-After pauses the whole host, not just the one URL.
HOST_PAUSE_STATUSES = frozenset({429, 503})

Layout = Literal["tree", "flat"]
LAYOUTS: tuple[Layout, ...] = ("tree", "flat")
INPUT_FORMATS = ("lines", "csv", "tsv", "jsonl")  # manifests.Format's values

_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_RATE = re.compile(
    r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([kmg]?)(?:i?b)?(?:/s)?\s*$", re.IGNORECASE
)
_RATE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
MIN_RATE = 1.0  # bytes per second, for --limit-rate


@dataclass(frozen=True, slots=True, kw_only=True)
class InputOptions:
    """Where URLs come from and how lines are treated."""

    sources: tuple[str, ...] = ("-",)
    dedupe: bool = True
    format: str | None = None  # --input-format (one of INPUT_FORMATS); None: by extension
    shard: Shard | None = None  # --shard: this instance's share of the lines


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """How much runs at once, overall and per host, and how fast requests start."""

    concurrency: int = DEFAULT_CONCURRENCY
    workers: int = DEFAULT_CONCURRENCY
    per_host: int = 0  # 0: no per-host limit
    rate: float = 0.0  # requests started per second over the whole run; 0: no limit
    per_host_rate: float = 0.0  # requests started per second to one host; 0: no limit
    processes: int = 0  # engine processes; 0: auto (see launch.engine_count)
    limit_rate: float | None = None  # body bytes per second over the whole run (--limit-rate)


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """Limits on one attempt (None: no limit) and on the whole run."""

    total: float | None = DEFAULT_TIMEOUT
    connect: float | None = DEFAULT_CONNECT_TIMEOUT
    read: float | None = DEFAULT_READ_TIMEOUT
    deadline: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Which failures are retried, how often, and how long to wait between attempts."""

    retries: int = DEFAULT_RETRIES
    backoff: float = DEFAULT_BACKOFF
    backoff_max: float = DEFAULT_BACKOFF_MAX
    statuses: frozenset[int] = RETRY_STATUSES


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpOptions:
    """What each request looks like and which responses are accepted."""

    headers: tuple[tuple[str, str], ...] = ()
    user_agent: str = DEFAULT_USER_AGENT
    method: str = "GET"
    http2: bool = False
    proxy: str | None = None
    verify: bool = True
    follow_redirects: bool = True
    max_redirects: int = DEFAULT_MAX_REDIRECTS
    max_bytes: int | None = None
    cacert: str | None = None  # a CA bundle trusted besides the system's
    credentials: Credentials | None = None  # -u and the netrc, read once (no secret in reprs)
    cookies: CookieFile | None = None  # --cookies FILE, read once, never written
    keep_cookies: bool = False  # cookies servers set, sent back to the same host only


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputOptions:
    """Where bodies and records go, and what the terminal shows."""

    output_dir: Path = Path()
    save: bool = True
    skip_existing: bool = False
    jsonl: str | None = None  # "-" is stdout
    resume: bool = False
    quiet: bool = False
    layout: Layout = "tree"
    cut_dirs: int = 0
    # Keep the partial body of a cut transfer (and its sidecar) for the next run (--continue,
    # implied by --resume).
    continue_partial: bool = False
    # Ask for a saved file only if it changed (If-None-Match / If-Modified-Since); 304 keeps it.
    update: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RayOptions:
    """--ray: the shards run as tasks on a Ray cluster (see parallel/ray_shards.py)."""

    address: str | None = None  # None: no Ray; "local": a cluster started for this run
    shards: int = 0  # 0: one per CPU of the cluster
    shard_by: ShardBy = "host"


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything a run needs, validated."""

    input: InputOptions = field(default_factory=InputOptions)
    limits: Limits = field(default_factory=Limits)
    timeouts: Timeouts = field(default_factory=Timeouts)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    http: HttpOptions = field(default_factory=HttpOptions)
    output: OutputOptions = field(default_factory=OutputOptions)
    ray: RayOptions = field(default_factory=RayOptions)

    @classmethod
    def from_options(cls, **options: Any) -> Settings:
        """`create()` for values of any type: an unknown name or a wrong type is a `UsageError`
        too, never a TypeError from deep inside. The command line and `fetch()` come this way."""
        hints = option_types()
        unknown = options.keys() - hints.keys()
        if unknown:
            _fail(f"not an option: {', '.join(sorted(unknown))}")
        for name, value in options.items():
            if not _conforms(value, hints[name]):
                _fail(f"{name} must be {_describe(hints[name])} (got {value!r})")
        return cls.create(**options)

    @classmethod
    def create(
        cls,
        *,
        sources: Sequence[str] = ("-",),
        dedupe: bool = True,
        input_format: str | None = None,
        shard: str | Shard | None = None,  # "K/N", "auto/N", "auto" (from os.environ)
        shard_by: str = "host",
        ray: str | None = None,
        shards: int = 0,
        concurrency: int = DEFAULT_CONCURRENCY,
        workers: int | None = None,
        per_host: int = 0,
        rate: float = 0.0,
        per_host_rate: float = 0.0,
        processes: int = 0,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        deadline: float | None = None,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        backoff_max: float = DEFAULT_BACKOFF_MAX,
        output_dir: str | os.PathLike[str] = ".",
        save: bool = True,
        skip_existing: bool = False,
        jsonl: str | None = None,
        resume: bool = False,
        quiet: bool = False,
        layout: str = "tree",
        cut_dirs: int = 0,
        headers: Sequence[str] | Mapping[str, str] = (),  # "Name: value" lines, or a dict
        user_agent: str = DEFAULT_USER_AGENT,
        method: str = "GET",
        http2: bool = False,
        proxy: str | None = None,
        insecure: bool = False,
        max_redirects: int = DEFAULT_MAX_REDIRECTS,
        follow_redirects: bool = True,
        max_bytes: int | str | None = None,  # "10M" as on the command line, or a number
        cacert: str | None = None,
        netrc: bool = False,
        netrc_file: str | None = None,
        user: str | None = None,  # "USER:PASSWORD" (the CLI asks for a missing password)
        cookies: str | None = None,
        keep_cookies: bool = False,
        continue_partial: bool = False,  # --continue (`continue` is Python's)
        update: bool = False,
        limit_rate: float | str | None = None,  # "2M" as on the command line, or bytes/s
    ) -> Settings:
        """Validate raw option values (as the flags name them) and build the settings."""
        _check_limits(concurrency, workers, per_host, rate, per_host_rate, processes)
        for name, value in (
            ("timeout", timeout),
            ("connect-timeout", connect_timeout),
            ("read-timeout", read_timeout),
        ):
            _at_least(name, value, 0)
        if deadline is not None and not deadline > 0:
            _fail(f"--deadline must be more than 0 seconds (got {deadline})")
        _at_least("retries", retries, 0)
        _at_least("backoff", backoff, 0)
        _at_least("backoff-max", backoff_max, 0)
        _at_least("max-redirects", max_redirects, 0)
        if resume and not jsonl:
            _fail("--resume needs --jsonl PATH: the records say what is already done")
        if resume and jsonl == "-":
            _fail("--resume cannot read records back from stdout; give --jsonl a file")
        _refreshing(update=update, save=save, skip_existing=skip_existing)
        scale = _scale_out(shard, shard_by, ray, shards)
        method = method.upper()
        if method not in ("GET", "HEAD"):
            _fail(f"--method must be GET or HEAD (got {method})")
        _check_manifest_and_net(input_format, layout, cut_dirs, proxy, cacert)
        credentials = Credentials.load(user=user, netrc_file=netrc_file, use_netrc=netrc)
        return cls(
            input=InputOptions(
                sources=tuple(sources) or ("-",),
                dedupe=dedupe,
                format=input_format,
                shard=scale[0],
            ),
            limits=Limits(
                concurrency=concurrency,
                workers=concurrency if workers is None else workers,
                per_host=per_host,
                rate=float(rate),
                per_host_rate=float(per_host_rate),
                processes=processes,
                limit_rate=None if limit_rate is None else parse_rate(limit_rate),
            ),
            timeouts=Timeouts(
                total=timeout or None,
                connect=connect_timeout or None,
                read=read_timeout or None,
                deadline=deadline,
            ),
            retry=RetryPolicy(retries=retries, backoff=backoff, backoff_max=backoff_max),
            http=HttpOptions(
                headers=_headers(headers),
                user_agent=user_agent,
                method=method,
                http2=http2,
                proxy=proxy,
                verify=not insecure,
                follow_redirects=follow_redirects,
                max_redirects=max_redirects,
                max_bytes=None if max_bytes is None else parse_size(max_bytes),
                cacert=cacert,
                credentials=credentials or None,
                cookies=None if cookies is None else CookieFile.load(cookies),
                keep_cookies=keep_cookies,
            ),
            output=OutputOptions(
                output_dir=Path(output_dir),
                save=save,
                skip_existing=skip_existing,
                jsonl=jsonl,
                resume=resume,
                quiet=quiet,
                layout="flat" if layout == "flat" else "tree",
                cut_dirs=cut_dirs,
                continue_partial=(continue_partial or resume) and save,  # nothing kept unsaved
                update=update,
            ),
            ray=scale[1],
        )


@functools.cache
def option_types() -> dict[str, Any]:
    """The options `Settings.create` takes, each with its type (resolved from the signature)."""
    hints = get_type_hints(Settings.create)
    del hints["return"]
    return hints


def parse_header(raw: str) -> tuple[str, str]:
    """Parse `"Name: value"` as curl's -H does; raise UsageError when it is malformed."""
    name, sep, value = raw.partition(":")
    if not sep:
        _fail(f"--header must look like 'Name: value' (got {raw!r})")
    return _header(name.strip(), value.strip(), raw)


def _headers(raw: Sequence[str] | Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    if isinstance(raw, Mapping):
        return tuple(_header(name, value, f"{name}: {value}") for name, value in raw.items())
    return tuple(parse_header(line) for line in raw)


def _header(name: str, value: str, raw: str) -> tuple[str, str]:
    if not _HEADER_NAME.match(name):
        _fail(f"--header must look like 'Name: value' (got {raw!r})")
    if any(c in value for c in "\r\n\0"):
        _fail(f"--header value of {name!r} contains a line break or NUL")
    return name, value


def parse_size(raw: int | str) -> int:
    """Parse a byte count such as `1048576`, `500k`, `10M` or `2GiB` (powers of 1024)."""
    if isinstance(raw, int):
        if raw < 0:
            _fail(f"--max-bytes must not be negative (got {raw})")
        return raw
    match = _SIZE.match(raw)
    if not match:
        _fail(f"--max-bytes must be a number of bytes, k/M/G suffix allowed (got {raw!r})")
    return int(match[1]) * _SIZE_UNITS[match[2].lower()]


def parse_rate(raw: str | float) -> float:
    """Bytes per second from `2M`, `500k`, `1.5M`, `1G`, `100000` (k/M/G are powers of 1024, as
    in curl and wget; `B`, `iB` and `/s` may follow). UsageError for anything else."""
    if isinstance(raw, str):
        match = _RATE.match(raw)
        if not match:
            msg = f"--limit-rate must be bytes per second, k/M/G suffix allowed (got {raw!r})"
            _fail(msg)
        rate = float(match[1]) * _RATE_UNITS[match[2].lower()]
    else:
        rate = float(raw)
    if not math.isfinite(rate) or rate < MIN_RATE:
        msg = f"--limit-rate must be at least {MIN_RATE:g} byte per second (got {raw!r})"
        _fail(msg)
    return rate


def _scale_out(
    shard: str | Shard | None, shard_by: str, ray: str | None, shards: int
) -> tuple[Shard | None, RayOptions]:
    """--shard (parsed; `auto` reads os.environ) and --ray/--shards, checked together."""
    if isinstance(shard, str):
        shard = parse_shard(shard, os.environ, by=shard_by)
    elif shard_by not in ("host", "url"):
        _fail(f"--shard-by must be host or url (got {shard_by!r})")
    _at_least("shards", shards, 0)
    if ray is None:
        if shards:
            _fail("--shards N needs --ray ADDRESS (for one instance's share: --shard K/N)")
        return shard, RayOptions()
    if not ray.strip():
        _fail("--ray needs an address: local, or the cluster's (HOST:PORT, ray://..., auto)")
    if shard is not None:
        _fail("--shard and --ray do not mix: --ray --shards N makes the shards itself")
    by = cast(ShardBy, shard_by)  # checked above
    return None, RayOptions(address=ray.strip(), shards=shards, shard_by=by)


def _check_manifest_and_net(
    input_format: str | None, layout: str, cut_dirs: int, proxy: str | None, cacert: str | None
) -> None:
    """The checks of the input format, names, proxy and CA bundle (part of `create()`)."""
    if proxy is not None and not re.match(r"^(https?|socks5h?)://[^/\s]+", proxy, re.I):
        schemes = "http://, https://, socks5:// or socks5h://"
        _fail(f"--proxy must be an {schemes} URL (got {proxy!r})")
    if input_format is not None and input_format not in INPUT_FORMATS:
        formats = ", ".join(INPUT_FORMATS)
        _fail(f"--input-format must be one of {formats} (got {input_format!r})")
    if layout not in LAYOUTS:
        _fail(f"--layout must be tree or flat (got {layout!r})")
    _at_least("cut-dirs", cut_dirs, 0)
    if cacert is not None:
        _check_ca_bundle(cacert)


def _check_ca_bundle(path: str) -> None:
    """A --cacert file must hold at least one certificate: a bad one is a usage error now,
    not a TLS failure for every URL later. (A bare context: no system store to load.)"""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except OSError as exc:
        if isinstance(exc, ssl.SSLError):
            _fail(f"--cacert {path} holds no usable PEM certificate")
        _fail(f"cannot read --cacert {path}: {exc.strerror or exc}")


def _conforms(value: object, hint: Any) -> bool:
    """Whether `value` is of type `hint`, for the few kinds of type `Settings.create` uses."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        return any(_conforms(value, arg) for arg in args)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:  # True is an int to Python, not a count to us
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is Sequence:  # a list or a tuple: a str is a sequence of str too, and no list
        return isinstance(value, list | tuple) and all(_conforms(v, args[0]) for v in value)
    if origin is Mapping:
        return isinstance(value, Mapping) and all(
            _conforms(k, args[0]) and _conforms(v, args[1]) for k, v in value.items()
        )
    return isinstance(value, origin or hint)


def _describe(hint: Any) -> str:
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in get_args(hint))
    kinds = {
        bool: "True or False",
        int: "an integer",
        float: "a number",
        str: "a string",
        type(None): "None",
        Sequence: "a list of strings",
        Mapping: "a dict of strings",
        os.PathLike: "a path",
        Shard: "a Shard",
    }
    return kinds.get(origin or hint, str(hint))


def _refreshing(*, update: bool, save: bool, skip_existing: bool) -> None:
    if update and not save:
        _fail("--update compares with the saved files: it cannot go with --no-save")
    if update and skip_existing:
        # As wget's -N and -nc: one refreshes existing files, the other never touches them.
        _fail("--update and --skip-existing exclude each other")


def _check_limits(
    concurrency: int,
    workers: int | None,
    per_host: int,
    rate: float,
    per_host_rate: float,
    processes: int,
) -> None:
    _at_least("concurrency", concurrency, 1)
    _at_least("workers", concurrency if workers is None else workers, 1)
    _at_least("per-host", per_host, 0)
    _at_least("rate", rate, 0)
    _at_least("per-host-rate", per_host_rate, 0)
    _at_least("processes", processes, 0)


def _at_least(name: str, value: float, minimum: float) -> None:
    if math.isnan(value) or value < minimum:
        _fail(f"--{name} must be at least {minimum} (got {value})")


def _fail(message: str) -> NoReturn:
    raise UsageError(message)

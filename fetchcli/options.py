"""The flags of `fetchcli get`, declared once, as httpie's `cli/definition.py` declares its own.

A `Flag` says how one keyword of `Settings.create` is spelled on the command line and what its
help says. Its type and default are read from `Settings.create`, so the flags, the library's
options and the settings cannot drift apart. `with_flags` turns the table into the command's
Typer parameters, writing the env var (FETCHCLI_<FLAG>) and the help panel in one place, and
`settings()` turns what Typer parsed back into `Settings`, through the library's own checks.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import typer

from fetchcli.config import Settings, option_types
from fetchcli.credentials import with_password
from fetchcli.errors import UsageError
from fetchcli.shard import parse_shard

__all__ = ["PANELS", "Flag", "flag", "flags", "settings", "with_flags"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Flag:
    """One option of `Settings.create` as the command line spells it."""

    option: str  # the keyword of Settings.create (and of fetchcli.fetch)
    decls: tuple[str, ...]  # ("-c", "--concurrency")
    help: str
    metavar: str | None = None
    type: Any = None  # the command line's type where it is not the keyword's: a size as text
    invert: bool = False  # a --no-X flag: given, it sets the option to False
    show_default: bool = True
    env: bool = True  # read FETCHCLI_<FLAG> too

    @property
    def envvar(self) -> str:
        long = next(decl for decl in self.decls if decl.startswith("--"))
        return "FETCHCLI_" + long.removeprefix("--").upper().replace("-", "_")


def flag(option: str, *decls: str, help: str, **details: Any) -> Flag:
    """A `Flag`, its declarations written as Typer's are: `flag("rate", "--rate", help=...)`."""
    return Flag(option, decls, help, **details)


# The panels of `fetchcli get --help`, in order, and the flags in each.
PANELS: dict[str, tuple[Flag, ...]] = {
    "Input": (
        flag("dedupe", "--no-dedupe", help="Fetch a URL again when it repeats.", invert=True),
    ),
    "Concurrency": (
        flag("concurrency", "-c", "--concurrency", help="Requests in flight at most."),
        flag(
            "workers",
            "-w",
            "--workers",
            help="Worker tasks draining the queue (default: as many as --concurrency).",
            show_default=False,
        ),
        flag("per_host", "--per-host", help="Requests in flight per host at most (0: no limit)."),
        flag(
            "rate",
            "--rate",
            help="Requests started per second at most, over the run (0: no limit).",
        ),
        flag(
            "per_host_rate",
            "--per-host-rate",
            help="Requests started per second to one host at most (0: no limit).",
        ),
        flag(
            "processes",
            "-P",
            "--processes",
            help="Engine processes, each with its own event loop, one per core at most; 0: auto, "
            "up to 4 (one with -c under 8 or for a list file under 256 KiB; with --per-host N, "
            "no more than -c / N). With per-host limits, each host is fetched by one engine.",
        ),
    ),
    "Timeouts and retries": (
        flag(
            "timeout",
            "-t",
            "--timeout",
            help="Seconds for one attempt, connect to last byte (0: no limit).",
        ),
        flag("connect_timeout", "--connect-timeout", help="Seconds to connect."),
        flag(
            "read_timeout",
            "--read-timeout",
            help="Seconds of silence allowed between two reads (cuts a stall even with -t 0).",
        ),
        flag(
            "deadline",
            "--deadline",
            help="Seconds for the whole run; what is unfinished then is recorded as failed.",
            show_default=False,
        ),
        flag(
            "retries",
            "-r",
            "--retries",
            help="Retries after the first attempt, for transient failures.",
        ),
        flag(
            "backoff",
            "--backoff",
            help="Base delay: retry k waits S * 2**k plus random jitter (up to half again).",
        ),
        flag(
            "backoff_max", "--backoff-max", help="Cap on one wait, also on a server's Retry-After."
        ),
    ),
    "Output": (
        flag(
            "output_dir",
            "-o",
            "--output-dir",
            help="Save each 2xx body under DIR as host/path.",
            metavar="DIR",
            type=str,
        ),
        flag(
            "save",
            "--no-save",
            help="Do not write bodies (they are still counted and hashed).",
            invert=True,
        ),
        flag(
            "skip_existing",
            "--skip-existing",
            help="Do not fetch a URL whose file already exists.",
        ),
        flag(
            "jsonl",
            "--jsonl",
            help="Write one JSON record per input line to PATH as each finishes ('-': stdout).",
            metavar="PATH",
            show_default=False,
        ),
        flag(
            "resume",
            "--resume",
            help="With --jsonl PATH: skip URLs already recorded ok there, append the rest.",
        ),
        flag("quiet", "-q", "--quiet", help="No progress display and no summary."),
    ),
    "Continuing and refreshing": (
        flag(
            "continue_partial",
            "--continue",
            help="Keep the partial body of an interrupted or failed transfer and continue it "
            "with Range on the next run (implied by --resume).",
        ),
        flag(
            "update",
            "--update",
            help="Fetch a saved file again only if it changed (If-None-Match with the --jsonl "
            "records' ETag, If-Modified-Since with its mtime); a 304 leaves it untouched.",
        ),
        flag(
            "limit_rate",
            "--limit-rate",
            help="Cap body bytes per second over the whole run, all transfers together "
            "(k/M/G suffixes: 500k, 2M; 0: no limit).",
            metavar="RATE",
            type=str | None,
            show_default=False,
        ),
    ),
    "Scaling out": (
        flag(
            "shard",
            "--shard",
            help="Fetch only share K (from 0) of N of the lines, by a stable hash of the host; "
            "auto/N or auto: K (and N) from JOB_COMPLETION_INDEX or SLURM_ARRAY_TASK_ID.",
            metavar="K/N",
            type=str | None,
            show_default=False,
        ),
        flag("shard_by", "--shard-by", help="Cut the shares by host or by url.", metavar="BY"),
        flag(
            "ray",
            "--ray",
            help="Run the list as --shards Ray tasks on this cluster (local: start one here); "
            "needs pip install 'fetchcli\\[ray]'.",  # \[: not Rich markup
            metavar="ADDRESS",
            show_default=False,
        ),
        flag(
            "shards",
            "--shards",
            help="With --ray: how many shards (0: one per CPU of the cluster).",
        ),
    ),
    "HTTP": (
        flag(
            "headers",
            "-H",
            "--header",
            # Typer would split a list's env var at spaces; settings() reads it by lines.
            help="Add a request header 'Name: value' (repeatable). [dim]\\[env var: "
            "FETCHCLI_HEADER, one header per line][/]",
            type=list[str] | None,
            show_default=False,
            env=False,
        ),
        flag("user_agent", "-A", "--user-agent", help="The User-Agent header."),
        flag("method", "-X", "--method", help="GET or HEAD."),
        flag("http2", "--http2", help="Use HTTP/2 with https servers that offer it."),
        flag(
            "proxy",
            "--proxy",
            help="Send requests through this proxy: http://, https://, socks5:// or socks5h:// "
            "(the proxy resolves names); HTTP(S)_PROXY are honoured too.",
            metavar="URL",
            show_default=False,
        ),
        flag("insecure", "-k", "--insecure", help="Do not verify TLS certificates."),
        flag(
            "max_redirects",
            "--max-redirects",
            help="Redirects to follow at most; past it the URL fails.",
        ),
        flag(
            "follow_redirects",
            "--no-follow",
            help="Do not follow redirects: record the 3xx as a failure, save nothing.",
            invert=True,
        ),
        flag(
            "max_bytes",
            "--max-bytes",
            help="Fail a URL whose body is larger than N bytes after decoding (k/M/G suffixes).",
            metavar="N",
            type=str | None,
            show_default=False,
        ),
        flag(
            "cacert",
            "--cacert",
            help="Trust the CAs in this PEM bundle too, besides the system's.",
            metavar="FILE",
            show_default=False,
        ),
    ),
    "Manifests and credentials": (
        flag(
            "input_format",
            "--input-format",
            help="lines, csv, tsv or jsonl (default: by extension, .gz read too); manifests "
            "have columns url, path, sha256, size (others kept under meta).",
            metavar="F",
            show_default=False,
        ),
        flag(
            "layout",
            "--layout",
            help="tree (host/path) or flat (last segment, hashed on collision).",
            metavar="L",
        ),
        flag(
            "cut_dirs",
            "--cut-dirs",
            help="Drop N leading directories in the tree layout.",
            metavar="N",
        ),
        flag("netrc", "-n", "--netrc", help="Basic auth from ~/.netrc for the hosts listed."),
        flag(
            "netrc_file",
            "--netrc-file",
            help="Basic auth from this netrc file.",
            metavar="FILE",
            show_default=False,
        ),
        flag(
            "user",
            "-u",
            "--user",
            help="Basic auth USER[:PASSWORD] for the origins of the list (asked on the "
            "terminal when not given).",
            metavar="USER[:PASSWORD]",
            show_default=False,
        ),
        flag(
            "cookies",
            "--cookies",
            help="Send cookies from this Netscape cookie file (read, never written).",
            metavar="FILE",
            show_default=False,
        ),
        flag(
            "keep_cookies",
            "--keep-cookies",
            help="Send cookies that servers set back to the same host only (one process).",
        ),
    ),
}


def flags() -> Iterator[tuple[str, Flag]]:
    """Every flag with its panel, in the order of the help."""
    for panel, group in PANELS.items():
        for each in group:
            yield panel, each


def with_flags(command: F) -> F:
    """Give `command(..., **options)` the flags as keyword parameters, for Typer to read.

    Typer reads a command's parameters from its signature; this one is written from the
    table, after the command's own parameters (its context, its arguments).
    """
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    defaults = inspect.signature(Settings.create).parameters
    table = [_parameter(panel, each, defaults[each.option].default) for panel, each in flags()]
    command.__signature__ = signature.replace(parameters=[*own, *table])  # type: ignore[attr-defined]
    return command


def settings(
    sources: Sequence[str] | None,
    options: Mapping[str, Any],
    environ: Mapping[str, str],
    prompt: Callable[[str], str] | None = None,
    from_env: Collection[str] = (),
) -> Settings:
    """The settings from what Typer parsed: the --no-X flags turned round, a missing password
    asked with `prompt` (a terminal's), through the checks that `fetchcli.fetch()` makes too.
    A usage error about an option in `from_env` (read from its FETCHCLI_ variable) names it."""
    try:
        return _settings(sources, options, environ, prompt)
    except UsageError as error:
        raise UsageError(_naming_env(str(error), from_env)) from error


def _naming_env(message: str, from_env: Collection[str]) -> str:
    for _, each in flags():
        if each.option in from_env:
            long = next(decl for decl in each.decls if decl.startswith("--"))
            named = f"{long} (from {each.envvar})"
            message = re.sub(rf"{re.escape(long)}(?![\w-])", named, message, count=1)
    return message


def _settings(
    sources: Sequence[str] | None,
    options: Mapping[str, Any],
    environ: Mapping[str, str],
    prompt: Callable[[str], str] | None,
) -> Settings:
    values = dict(options)
    if values.get("user"):
        values["user"] = with_password(values["user"], prompt)
    for _, each in flags():
        if each.invert:
            values[each.option] = not values[each.option]
    if not values["headers"]:  # Typer gives an empty list for no -H
        values["headers"] = environ.get("FETCHCLI_HEADER", "").splitlines()
    if values["shard"] is not None:  # `auto` reads the scheduler's variables from here
        values["shard"] = parse_shard(values["shard"], environ, by=values["shard_by"])
    sources = tuple(sources or ("-",))
    if values["ray"] is not None and "-" in sources:
        msg = "--ray cannot read stdin (-): the shard tasks read the list themselves; give a file"
        raise UsageError(msg)
    return Settings.from_options(sources=sources, **values)


def _parameter(panel: str, each: Flag, default: Any) -> inspect.Parameter:
    option = typer.Option(
        False if each.invert else default,
        *each.decls,
        help=each.help,
        metavar=each.metavar,
        envvar=each.envvar if each.env else None,
        rich_help_panel=panel,
        show_default=each.show_default,
    )
    hint = bool if each.invert else each.type or option_types()[each.option]
    return inspect.Parameter(
        each.option, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=hint
    )

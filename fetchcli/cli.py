"""The command line: Typer flags -> Settings -> session.run(); errors -> exit statuses.

`main()` is the only place that maps errors to exit statuses and the only place that exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from fetchcli import __version__
from fetchcli.config import (
    DEFAULT_BACKOFF,
    DEFAULT_BACKOFF_MAX,
    DEFAULT_CONCURRENCY,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_REDIRECTS,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    DEFAULT_USER_AGENT,
    Settings,
)
from fetchcli.environment import Environment
from fetchcli.errors import (
    ExitStatus,
    FetchcliError,
    Interrupted,
    OutputError,
    ReaderGone,
    UsageError,
)
from fetchcli.session import run

__all__ = ["app", "main", "run_cli"]

INPUT = "Input"
CONCURRENCY = "Concurrency"
TIMEOUTS = "Timeouts and retries"
OUTPUT = "Output"
HTTP = "HTTP"

EXAMPLES = (
    "[bold]Examples[/]\n\n"
    "  fetchcli get urls.txt -o out/ --jsonl results.jsonl\n\n"
    "  cat urls.txt | fetchcli get --retries 5 --timeout 10\n\n"
    "  fetchcli get urls.txt -c 64 --per-host 4 --rate 200  [dim]# fast, but polite[/]\n\n"
    "  fetchcli get urls.txt --jsonl results.jsonl --resume  [dim]# finish a stopped run[/]\n\n"
    "  fetchcli get urls.txt --no-save --jsonl - | jq -c 'select(.ok | not)'\n\n"
    "Every flag can also come from the environment: FETCHCLI_CONCURRENCY=64 ..."
)


app = typer.Typer(
    name="fetchcli",
    help="Fetch thousands to millions of URLs concurrently, politely and reliably.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)


def _env(flag: str) -> str:
    return "FETCHCLI_" + flag.upper().replace("-", "_")


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"fetchcli {__version__}")
        raise typer.Exit


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", callback=_show_version),
    ] = False,
) -> None:
    """Fetch thousands to millions of URLs concurrently, politely and reliably."""


@app.command(epilog=EXAMPLES, no_args_is_help=False)
def get(
    ctx: typer.Context,
    sources: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[SOURCE]...",
            help="Files of URLs, one per line; '-' is stdin (the default when it is a pipe).",
            show_default=False,
        ),
    ] = None,
    no_dedupe: Annotated[
        bool,
        typer.Option(
            "--no-dedupe",
            help="Fetch a URL again when it repeats.",
            envvar=_env("no-dedupe"),
            rich_help_panel=INPUT,
        ),
    ] = False,
    concurrency: Annotated[
        int,
        typer.Option(
            "-c",
            "--concurrency",
            help="Requests in flight at most.",
            envvar=_env("concurrency"),
            rich_help_panel=CONCURRENCY,
        ),
    ] = DEFAULT_CONCURRENCY,
    workers: Annotated[
        int | None,
        typer.Option(
            "-w",
            "--workers",
            help="Worker tasks draining the queue (default: as many as --concurrency).",
            envvar=_env("workers"),
            rich_help_panel=CONCURRENCY,
            show_default=False,
        ),
    ] = None,
    per_host: Annotated[
        int,
        typer.Option(
            "--per-host",
            help="Requests in flight per host at most (0: no limit).",
            envvar=_env("per-host"),
            rich_help_panel=CONCURRENCY,
        ),
    ] = 0,
    rate: Annotated[
        float,
        typer.Option(
            "--rate",
            help="Requests started per second at most, over the run (0: no limit).",
            envvar=_env("rate"),
            rich_help_panel=CONCURRENCY,
            show_default=False,
        ),
    ] = 0.0,
    processes: Annotated[
        int,
        typer.Option(
            "-P",
            "--processes",
            help="Engine processes, each with its own event loop; 0: auto, one per core up to "
            "4 (one with --per-host, with -c under 8, or for a list file under 256 KiB).",
            envvar=_env("processes"),
            rich_help_panel=CONCURRENCY,
        ),
    ] = 0,
    timeout: Annotated[
        float,
        typer.Option(
            "-t",
            "--timeout",
            help="Seconds for one attempt, connect to last byte (0: no limit).",
            envvar=_env("timeout"),
            rich_help_panel=TIMEOUTS,
        ),
    ] = DEFAULT_TIMEOUT,
    connect_timeout: Annotated[
        float,
        typer.Option(
            "--connect-timeout",
            help="Seconds to connect.",
            envvar=_env("connect-timeout"),
            rich_help_panel=TIMEOUTS,
        ),
    ] = DEFAULT_CONNECT_TIMEOUT,
    read_timeout: Annotated[
        float,
        typer.Option(
            "--read-timeout",
            help="Seconds of silence allowed between two reads (cuts a stall even with -t 0).",
            envvar=_env("read-timeout"),
            rich_help_panel=TIMEOUTS,
        ),
    ] = DEFAULT_READ_TIMEOUT,
    deadline: Annotated[
        float | None,
        typer.Option(
            "--deadline",
            help="Seconds for the whole run; what is unfinished then is recorded as failed.",
            envvar=_env("deadline"),
            rich_help_panel=TIMEOUTS,
            show_default=False,
        ),
    ] = None,
    retries: Annotated[
        int,
        typer.Option(
            "-r",
            "--retries",
            help="Retries after the first attempt, for transient failures.",
            envvar=_env("retries"),
            rich_help_panel=TIMEOUTS,
        ),
    ] = DEFAULT_RETRIES,
    backoff: Annotated[
        float,
        typer.Option(
            "--backoff",
            help="Base delay: retry k waits S * 2**k plus random jitter (up to half again).",
            envvar=_env("backoff"),
            rich_help_panel=TIMEOUTS,
        ),
    ] = DEFAULT_BACKOFF,
    backoff_max: Annotated[
        float,
        typer.Option(
            "--backoff-max",
            help="Cap on one wait, also on a server's Retry-After.",
            envvar=_env("backoff-max"),
            rich_help_panel=TIMEOUTS,
        ),
    ] = DEFAULT_BACKOFF_MAX,
    output_dir: Annotated[
        str,
        typer.Option(
            "-o",
            "--output-dir",
            help="Save each 2xx body under DIR as host/path.",
            metavar="DIR",
            envvar=_env("output-dir"),
            rich_help_panel=OUTPUT,
        ),
    ] = ".",
    no_save: Annotated[
        bool,
        typer.Option(
            "--no-save",
            help="Do not write bodies (they are still counted and hashed).",
            envvar=_env("no-save"),
            rich_help_panel=OUTPUT,
        ),
    ] = False,
    skip_existing: Annotated[
        bool,
        typer.Option(
            "--skip-existing",
            help="Do not fetch a URL whose file already exists.",
            envvar=_env("skip-existing"),
            rich_help_panel=OUTPUT,
        ),
    ] = False,
    jsonl: Annotated[
        str | None,
        typer.Option(
            "--jsonl",
            help="Write one JSON record per input line to PATH as each finishes ('-': stdout).",
            metavar="PATH",
            envvar=_env("jsonl"),
            rich_help_panel=OUTPUT,
            show_default=False,
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="With --jsonl PATH: skip URLs already recorded ok there, append the rest.",
            envvar=_env("resume"),
            rich_help_panel=OUTPUT,
        ),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "-q",
            "--quiet",
            help="No progress display and no summary.",
            envvar=_env("quiet"),
            rich_help_panel=OUTPUT,
        ),
    ] = False,
    header: Annotated[
        list[str] | None,
        typer.Option(
            "-H",
            "--header",
            help="Add a request header 'Name: value' (repeatable). [dim]\\[env var: "
            "FETCHCLI_HEADER, one header per line][/]",
            rich_help_panel=HTTP,
            show_default=False,
        ),
    ] = None,
    user_agent: Annotated[
        str,
        typer.Option(
            "-A",
            "--user-agent",
            help="The User-Agent header.",
            envvar=_env("user-agent"),
            rich_help_panel=HTTP,
        ),
    ] = DEFAULT_USER_AGENT,
    method: Annotated[
        str,
        typer.Option(
            "-X",
            "--method",
            help="GET or HEAD.",
            envvar=_env("method"),
            rich_help_panel=HTTP,
        ),
    ] = "GET",
    http2: Annotated[
        bool,
        typer.Option(
            "--http2",
            help="Use HTTP/2 with https servers that offer it.",
            envvar=_env("http2"),
            rich_help_panel=HTTP,
        ),
    ] = False,
    proxy: Annotated[
        str | None,
        typer.Option(
            "--proxy",
            help="Send requests through this http(s) proxy (HTTP(S)_PROXY are honoured too).",
            metavar="URL",
            envvar=_env("proxy"),
            rich_help_panel=HTTP,
            show_default=False,
        ),
    ] = None,
    insecure: Annotated[
        bool,
        typer.Option(
            "-k",
            "--insecure",
            help="Do not verify TLS certificates.",
            envvar=_env("insecure"),
            rich_help_panel=HTTP,
        ),
    ] = False,
    max_redirects: Annotated[
        int,
        typer.Option(
            "--max-redirects",
            help="Redirects to follow at most; past it the URL fails.",
            envvar=_env("max-redirects"),
            rich_help_panel=HTTP,
        ),
    ] = DEFAULT_MAX_REDIRECTS,
    no_follow: Annotated[
        bool,
        typer.Option(
            "--no-follow",
            help="Do not follow redirects: record the 3xx as a failure, save nothing.",
            envvar=_env("no-follow"),
            rich_help_panel=HTTP,
        ),
    ] = False,
    max_bytes: Annotated[
        str | None,
        typer.Option(
            "--max-bytes",
            help="Fail a URL whose body is larger than N bytes after decoding (k/M/G suffixes).",
            metavar="N",
            envvar=_env("max-bytes"),
            rich_help_panel=HTTP,
            show_default=False,
        ),
    ] = None,
    debug: Annotated[
        bool,
        typer.Option("--debug", help="Show tracebacks for errors.", hidden=True),
    ] = False,
) -> ExitStatus:
    """Fetch every URL in the SOURCEs: concurrently, with retries, saved, and recorded."""
    env: Environment = ctx.obj
    settings = Settings.create(
        sources=tuple(sources or ("-",)),
        dedupe=not no_dedupe,
        concurrency=concurrency,
        workers=workers,
        per_host=per_host,
        rate=rate,
        processes=processes,
        timeout=timeout,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        deadline=deadline,
        retries=retries,
        backoff=backoff,
        backoff_max=backoff_max,
        output_dir=output_dir,
        save=not no_save,
        skip_existing=skip_existing,
        jsonl=jsonl,
        resume=resume,
        quiet=quiet,
        headers=tuple(header or env.environ.get("FETCHCLI_HEADER", "").splitlines()),
        user_agent=user_agent,
        method=method,
        http2=http2,
        proxy=proxy,
        insecure=insecure,
        max_redirects=max_redirects,
        follow_redirects=not no_follow,
        max_bytes=max_bytes,
        debug=debug,
    )
    stats = asyncio.run(run(settings, env))
    return ExitStatus.OK if stats.failed == 0 else ExitStatus.FAILURES


@app.command()
def demo(
    ctx: typer.Context,
    count: Annotated[
        int, typer.Option("--count", "-n", help="How many URLs to fetch.", min=1, max=100_000)
    ] = 300,
    concurrency: Annotated[
        int, typer.Option("-c", "--concurrency", help="Requests in flight at most.", min=1)
    ] = 16,
    keep: Annotated[
        Path | None,
        typer.Option(
            "--keep",
            help="Keep the fetched files and results.jsonl in DIR.",
            metavar="DIR",
            show_default=False,
        ),
    ] = None,
) -> ExitStatus:
    """Try fetchcli offline: a local server with fast, slow, large, flaky and missing pages."""
    from fetchcli.demo import demo as run_demo  # aiohttp's server side, only when asked for

    env: Environment = ctx.obj
    asyncio.run(run_demo(env, count=count, concurrency=concurrency, keep=keep))
    return ExitStatus.OK


def run_cli(argv: Sequence[str], env: Environment) -> int:
    """Parse `argv`, run, and map every outcome to an exit status; never raises."""
    debug = "--debug" in argv
    command = typer.main.get_command(app)
    try:
        result = command.main(args=list(argv), prog_name="fetchcli", standalone_mode=False, obj=env)
    except typer.TyperException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            _say(env, exc.format_message())
            return ExitStatus.USAGE
        _say(env, f"fetchcli: error: {exc.format_message()}")
        return exc.exit_code
    except UsageError as exc:
        _say(env, f"fetchcli: error: {exc}")
        return ExitStatus.USAGE
    except Interrupted as exc:
        return ExitStatus.TERMINATED if exc.signum == signal.SIGTERM else ExitStatus.INTERRUPTED
    except KeyboardInterrupt:
        return ExitStatus.INTERRUPTED
    except ReaderGone:
        # The reader has what it wanted, as with `yes | head`: no message, and nothing
        # more for Python to flush into the dead pipe at exit.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), env.stdout.fileno())
        return ExitStatus.READER_GONE
    except OutputError as exc:
        if debug:
            raise
        _say(env, f"fetchcli: error: {exc}")
        return ExitStatus.FAILURES
    except (FetchcliError, OSError, RuntimeError, ValueError) as exc:
        if debug:
            raise
        _say(env, f"fetchcli: error: {type(exc).__name__}: {exc}", "Run with --debug to see why.")
        return ExitStatus.FAILURES
    return int(result) if isinstance(result, int) else ExitStatus.OK


def main() -> NoReturn:
    """The `fetchcli` console script."""
    sys.exit(run_cli(sys.argv[1:], Environment()))


def _say(env: Environment, *lines: str) -> None:
    env.stderr.write("".join(line + "\n" for line in lines if line))
    env.stderr.flush()

"""The command line: Typer flags -> Settings -> session.run(); errors -> exit statuses.

The flags of `get` are declared in `options.py`. `run_cli()` is the only place that maps errors
to exit statuses, and `main()` the only place that exits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from fetchcli import __version__, loop, merge_cli, options, trust_store
from fetchcli.config import Settings
from fetchcli.environment import Environment
from fetchcli.errors import (
    ExitStatus,
    FetchcliError,
    IncompleteRun,
    Interrupted,
    OutputError,
    ReaderGone,
    UsageError,
)

__all__ = ["app", "main", "run_cli"]

EXAMPLES = (
    "[bold]Examples[/]\n\n"
    "  fetchcli get urls.txt -o out/ --jsonl results.jsonl\n\n"
    "  cat urls.txt | fetchcli get --retries 5 --timeout 10\n\n"
    "  fetchcli get urls.txt -c 64 --per-host 4 --rate 200  [dim]# fast, but polite[/]\n\n"
    "  fetchcli get urls.txt --jsonl results.jsonl --resume  [dim]# finish a stopped run[/]\n\n"
    "  fetchcli get urls.txt --no-save --jsonl - | jq -c 'select(.ok | not)'\n\n"
    "  fetchcli get urls.txt --shard auto --jsonl shard.jsonl --resume  [dim]# one of N[/]\n\n"
    "Every flag can also come from the environment: FETCHCLI_CONCURRENCY=64 ..."
)


app = typer.Typer(
    name="fetchcli",
    help="Fetch thousands to millions of URLs concurrently, politely and reliably.",
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)


@dataclass(slots=True)
class _Invocation:
    """What `run_cli` hands a command (`ctx.obj`), and what the command tells it back."""

    env: Environment
    debug: bool = False  # --debug: errors leave with their traceback


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


@app.command(epilog=EXAMPLES)
@options.with_flags
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
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks for errors.", hidden=True)
    ] = False,
    **flags: Any,  # the flags of options.PANELS
) -> ExitStatus:
    """Fetch every URL in the SOURCEs: concurrently, with retries, saved, and recorded."""
    invocation: _Invocation = ctx.obj
    invocation.debug = debug
    env = invocation.env
    if not sources and env.stdin_isatty:  # an explicit '-' reads the terminal, as `cat -` does
        msg = "no URLs: give a file of URLs, or pipe them on stdin ('-' reads the terminal)"
        raise UsageError(msg)
    # By name: Typer carries its own copy of Click, whose ParameterSource is not click's.
    from_env = [name for name in flags if _source(ctx, name) == "ENVIRONMENT"]
    settings = options.settings(sources, flags, env.environ, env.prompt, from_env)
    settings = _cap_processes(settings, env)
    # Only a run loads the run: --help and usage errors never import the HTTP stack.
    from fetchcli.session import run

    stats = loop.run(run(settings, env), env.environ)
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

    invocation: _Invocation = ctx.obj
    loop.run(
        run_demo(invocation.env, count=count, concurrency=concurrency, keep=keep),
        invocation.env.environ,
    )
    return ExitStatus.OK


app.command("merge", epilog=merge_cli.EXAMPLES)(merge_cli.merge_command)


def _naming_source(exc: typer.TyperException, args: Sequence[str]) -> str:
    """Typer's message, naming the env var only when the bad value came from it (Typer names
    it whenever the option has one, even for a value typed as a flag), as `--x (from VAR)`.
    Typer reads the variables from `os.environ`, not from the injected environment."""
    message = exc.format_message()
    param = getattr(exc, "param", None)
    envvar = getattr(param, "envvar", None)
    if not isinstance(envvar, str):
        return message
    opts: list[str] = getattr(param, "opts", [])
    typed = any(
        arg == opt or arg.startswith(opt + "=" if opt.startswith("--") else opt)
        for arg in args
        for opt in opts
    )
    named = " / ".join(f"'{opt}'" for opt in opts)
    came_from = "" if typed or envvar not in os.environ else f" (from {envvar})"
    return message.replace(f"{named} (env var: '{envvar}')", named + came_from)


def _source(ctx: typer.Context, name: str) -> str | None:
    source = ctx.get_parameter_source(name)
    return None if source is None else source.name


def run_cli(argv: Sequence[str], env: Environment) -> int:
    """Parse `argv`, run, and map every outcome to an exit status; never raises (but with --debug).

    Typer itself turns a Ctrl-C that reaches it into exit status 130; the run turns its own
    signals into `Interrupted`.
    """
    invocation = _Invocation(env)
    command = typer.main.get_command(app)
    # No arguments at all: the help, but with the usage status (Typer's `no_args_is_help`
    # would say so by an exception class it does not export).
    args = list(argv) or ["--help"]
    try:
        result = command.main(
            args=args, prog_name="fetchcli", standalone_mode=False, obj=invocation
        )
    except typer.TyperException as exc:
        _say(env, f"fetchcli: error: {_naming_source(exc, args)}")
        return exc.exit_code
    except UsageError as exc:
        _say(env, f"fetchcli: error: {exc}")
        return ExitStatus.USAGE
    except Interrupted as exc:
        return ExitStatus.TERMINATED if exc.signum == signal.SIGTERM else ExitStatus.INTERRUPTED
    except ReaderGone:
        # The reader has what it wanted, as with `yes | head`: no message, and nothing
        # more for Python to flush into the dead pipe at exit.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), env.stdout.fileno())
        return ExitStatus.READER_GONE
    except (OutputError, IncompleteRun) as exc:
        if invocation.debug:
            raise
        _say(env, f"fetchcli: error: {exc}")
        return ExitStatus.FAILURES
    except (FetchcliError, OSError, RuntimeError, ValueError) as exc:
        if invocation.debug:
            raise
        _say(env, f"fetchcli: error: {type(exc).__name__}: {exc}", "Run with --debug to see why.")
        return ExitStatus.FAILURES
    if not argv:
        return ExitStatus.USAGE
    return int(result) if isinstance(result, int) else ExitStatus.OK


def main() -> NoReturn:
    """The `fetchcli` console script."""
    trust_store.defer()  # before the pipeline loads aiohttp: no CA store for plain http
    status = run_cli(sys.argv[1:], Environment(own_process=True))
    loop.spare_collector()  # everything is written and closed: no collection at exit
    sys.exit(status)


def _say(env: Environment, *lines: str) -> None:
    env.stderr.write("".join(line + "\n" for line in lines if line))
    env.stderr.flush()


def _cap_processes(settings: Settings, env: Environment) -> Settings:
    """-P beyond the cores, or beyond -c, only adds engines that compete: cap it, and say so."""
    limits = settings.limits
    cap = min(env.cpu_count, limits.concurrency)
    if limits.processes <= cap:
        return settings
    why = "cores" if cap == env.cpu_count else f"-c {limits.concurrency}"
    if not settings.output.quiet:  # a note, not an error: -q shows nothing
        _say(env, f"fetchcli: -P {limits.processes} capped at {cap} ({why})")
    return dataclasses.replace(settings, limits=dataclasses.replace(limits, processes=cap))

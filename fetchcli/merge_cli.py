"""The `fetchcli merge` command: `merge()` with its summary on stderr and its exit status.

Mounted on the CLI with `app.command("merge")(merge_command)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated

import typer

from fetchcli.environment import Environment
from fetchcli.errors import ExitStatus

if TYPE_CHECKING:  # `fetchcli --help` mounts this command without loading merge's work
    from fetchcli.merge import Entry, MergeReport

__all__ = ["merge_command", "summary"]

EXAMPLES = (
    "[bold]Examples[/]\n\n"
    "  fetchcli merge shard-*.jsonl --input urls.txt --rerun rerun.txt\n\n"
    "  fetchcli get rerun.txt --jsonl rerun.jsonl  [dim]# then: merge rerun.jsonl -i rerun.txt[/]"
)


def merge_command(
    ctx: typer.Context,
    ledgers: Annotated[
        list[str],
        typer.Argument(
            metavar="LEDGER...",
            help="The shards' records files (their --jsonl).",
            show_default=False,
        ),
    ],
    inputs: Annotated[
        list[str],
        typer.Option(
            "--input",
            "-i",
            metavar="LIST",
            help="The list the shards fetched (repeat it for several, in the same order).",
            show_default=False,
        ),
    ],
    rerun: Annotated[
        str | None,
        typer.Option(
            "--rerun",
            metavar="FILE",
            help="Write the URLs still to fetch (failed and missing, in input order) to FILE.",
            show_default=False,
        ),
    ] = None,
) -> ExitStatus:
    """Check the shards' records against the list: every line once, and ok? Exit 0 if so."""
    from fetchcli.merge import merge

    env: Environment = ctx.obj.env  # run_cli hands every command its invocation
    report = merge(ledgers, inputs, rerun, stdin=env.stdin)
    env.stderr.write("".join(line + "\n" for line in summary(report, inputs, rerun)))
    env.stderr.flush()
    return ExitStatus.OK if report.complete else ExitStatus.FAILURES


def summary(report: MergeReport, inputs: Sequence[str], rerun: str | None) -> list[str]:
    """The report as a person reads it: the counts, then a few lines of each problem."""
    counts = [f"{report.ok:,} ok"]
    if report.failed:
        invalid = f" ({report.invalid:,} not URLs)" if report.invalid else ""
        counts.append(f"{report.failed:,} failed{invalid}")
    if report.missing:
        counts.append(f"{report.missing:,} missing")
    lines = [f"merge: {report.lines:,} lines in {', '.join(inputs)}: {', '.join(counts)}"]
    lines += _listed("failed", report.failed, report.failures)
    lines += _listed("missing (no record)", report.missing, report.missings)
    lines += _listed("recorded more than once", report.repeated, report.repeats)
    lines += _listed("records of no input line", report.strays, report.stray_records)
    if report.unreadable:
        lines.append(
            f"{report.unreadable:,} ledger lines are not records (skipped;"
            " a crashed shard leaves its last line cut short)"
        )
    if rerun:
        lines.append(f"rerun: {report.rerun:,} URLs to fetch in {rerun}")
    lines.append("complete: every line ok" if report.complete else "incomplete")
    return lines


def _listed(title: str, count: int, entries: Sequence[Entry]) -> list[str]:
    if not count:
        return []
    lines = [f"{title} ({count:,}):"]
    for entry in entries:
        where = f"{entry.source}:{entry.line}"
        lines.append("  " + "  ".join(part for part in (where, entry.url, entry.why) if part))
    if count > len(entries):
        lines.append(f"  ... and {count - len(entries):,} more")
    return lines

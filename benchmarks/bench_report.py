"""Results of the runs, and the per-workload tables (plain text or Markdown)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from bench_measure import Measurement
from bench_tools import ALL_TOOLS, BASELINE
from bench_workloads import Workload


@dataclass
class RunResult:
    workload: str
    tool: str
    run: int  # 1-based
    status: str  # "ok", "failed", "timeout" or "skipped"
    detail: str
    measurement: Measurement | None = None
    figure: float | None = None
    extras: dict[str, float] = field(default_factory=dict)  # Workload.extra_columns


def _fmt_figure(w: Workload, value: float) -> str:
    return f"{value:.2f}" if w.metric == "efficiency" else f"{value:,.0f}"


def _median(values: list[float]) -> float:
    return statistics.median(values)


def table_rows(
    w: Workload,
    results: list[RunResult],
    order: list[str] | None = None,
    baseline: str = BASELINE,
) -> tuple[list[str], list[list[str]]]:
    """Header and rows of one workload's table, tools in `order` (default: ALL_TOOLS's), with
    ratios to the median of `baseline`."""
    order = order or list(ALL_TOOLS)
    header = ["tool", f"{w.metric} (median)", "min-max", f"vs {baseline}", "wall s", "CPU s",
              "peak RSS MiB", "RSS summed MiB", "PSS summed MiB", *w.extra_columns,
              "runs ok"]  # fmt: skip
    mine = [r for r in results if r.workload == w.id]
    baseline_ok = [r.figure for r in mine if r.tool == baseline and r.figure is not None]
    base = _median(baseline_ok) if baseline_ok else None
    rows = []
    for tool in sorted({r.tool for r in mine}, key=order.index):
        runs = [r for r in mine if r.tool == tool]
        ok = [r for r in runs if r.status == "ok" and r.figure is not None and r.measurement]
        runs_ok = f"{len(ok)}/{len(runs)}"
        if not ok:
            what = "timeout" if any(r.status == "timeout" for r in runs) else "failed"
            dashes = ["-"] * (7 + len(w.extra_columns))
            rows.append([tool, what, *dashes, runs_ok])
            continue
        figures = [r.figure for r in ok if r.figure is not None]
        measures = [r.measurement for r in ok if r.measurement is not None]
        median = _median(figures)
        rows.append([
            tool,
            _fmt_figure(w, median),
            f"{_fmt_figure(w, min(figures))}-{_fmt_figure(w, max(figures))}",
            f"{median / base:.2f}x" if base else "-",
            f"{_median([m.wall for m in measures]):.2f}",
            f"{_median([m.cpu for m in measures]):.2f}",
            f"{max(m.max_rss_mib for m in measures):.0f}",
            f"{max(m.sum_rss_mib for m in measures):.0f}",
            f"{max(m.sum_pss_mib for m in measures):.0f}",
            *(_extra(name, ok) for name in w.extra_columns),
            runs_ok,
        ])  # fmt: skip
    return header, rows


def _extra(name: str, runs: list[RunResult]) -> str:
    """An extra column: the largest of the runs for a count (a limit must hold in every run),
    else the median."""
    values = [r.extras[name] for r in runs if name in r.extras]
    if not values:
        return "-"
    if name.startswith("max"):
        return f"{max(values):.0f}"
    return f"{_median(values):.2f}"


def render_plain(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        parts = [cells[0].ljust(widths[0])]
        parts += [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join(parts)

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def render_markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def notes(w: Workload, results: list[RunResult]) -> list[str]:
    """One line per run that did not count, saying why."""
    return [
        f"{r.tool} run {r.run}: {r.status}: {r.detail}"
        for r in results
        if r.workload == w.id and r.status != "ok"
    ]

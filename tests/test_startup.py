"""Start-up: what each entry point imports, read from a fresh interpreter (`-X importtime`).

`fetchcli --version` and the help must not load the HTTP stack (aiohttp, httpx) nor the
executors; a coordinator of engine processes never loads aiohttp, which only engines use.
The time these save is measured in benchmarks/, not here.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from fetchcli import __version__

HTTP_STACK = ("aiohttp", "httpx", "httpcore", "yarl")
EXECUTORS = ("fetchcli.pipeline", "fetchcli.client", "fetchcli.parallel.coordinator")


def imported(*args: str, code: str | None = None) -> tuple[set[str], str]:
    """The modules a fresh `python -m fetchcli ARGS` (or `python -c CODE`) imports, and its
    stdout."""
    argv = [sys.executable, "-X", "importtime"]
    argv += ["-c", code] if code is not None else ["-m", "fetchcli", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "fetchcli" in modules or code is not None, done.stderr
    return modules, done.stdout


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in names or m in names)


def test_the_import_listing_sees_the_http_stack_when_it_is_there():
    # The check below would pass on an empty listing: show that it finds what it looks for.
    modules, _ = imported(code="import fetchcli.pipeline")
    assert "aiohttp" in modules and "httpx" in modules and "fetchcli.pipeline" in modules


def test_version_imports_neither_the_http_stack_nor_the_cli_framework():
    modules, out = imported("--version")
    assert out == f"fetchcli {__version__}\n"
    assert loaded(modules, (*HTTP_STACK, *EXECUTORS, "typer", "click", "rich")) == []
    assert "fetchcli.cli" not in modules


@pytest.mark.parametrize("args", [["--help"], ["get", "--help"], ["demo", "--help"]])
def test_help_does_not_import_the_http_stack(args):
    modules, out = imported(*args)
    assert "Usage" in out
    assert loaded(modules, (*HTTP_STACK, *EXECUTORS)) == []


def test_a_coordinator_of_engines_does_not_import_aiohttp():
    code = "import fetchcli.cli, fetchcli.session, fetchcli.parallel.coordinator"
    modules, _ = imported(code=code)
    assert "fetchcli.parallel.coordinator" in modules
    assert loaded(modules, ("aiohttp", "fetchcli.pipeline", "fetchcli.client")) == []

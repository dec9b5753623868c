"""Start-up: what each entry point imports, read from a fresh interpreter (`-X importtime`).

`fetchcli --version` and the help must not load the HTTP stack (aiohttp, httpx) nor the
executors; a coordinator of engine processes never loads aiohttp, which only engines use.
The time these save is measured in benchmarks/, not here.
"""

from __future__ import annotations

import gc
import io
import subprocess
import sys

import pytest

from fetchcli import __version__
from fetchcli.cli import run_cli
from fetchcli.environment import Environment

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


def test_socks_support_loads_only_with_a_socks_proxy():
    modules, _ = imported(code="import fetchcli.pipeline")
    assert loaded(modules, ("aiohttp_socks", "python_socks")) == []
    code = "from fetchcli.client import AiohttpTransport; AiohttpTransport(proxy='socks5://p:1')"
    modules, _ = imported(code=code)
    assert "aiohttp_socks" in modules and "python_socks" in modules


def test_a_run_loads_sqlite_only_when_repeats_spill_to_disk():
    code = "import fetchcli.cli, fetchcli.session, fetchcli.pipeline"
    modules, _ = imported(code=code)
    assert "fetchcli.dedupe" in modules and loaded(modules, ("sqlite3",)) == []


def test_a_coordinator_of_engines_does_not_import_aiohttp():
    code = "import fetchcli.cli, fetchcli.session, fetchcli.parallel.coordinator"
    modules, _ = imported(code=code)
    assert "fetchcli.parallel.coordinator" in modules
    assert loaded(modules, ("aiohttp", "fetchcli.pipeline", "fetchcli.client")) == []


# Prints how many objects the garbage collector was told to skip, as the process exits.
FREEZE_COUNT_AT_EXIT = """
import atexit, gc, sys
atexit.register(lambda: sys.stderr.write(f"frozen {gc.get_freeze_count()}\\n"))
from fetchcli.__main__ import main
sys.argv = ["fetchcli", *sys.argv[1:]]
main()
"""


def test_the_command_exits_without_a_collection_of_everything():
    argv = [sys.executable, "-c", FREEZE_COUNT_AT_EXIT, "get", "-q", "--no-save", "-"]
    done = subprocess.run(argv, input=b"", capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    (line,) = done.stderr.decode().splitlines()
    assert int(line.removeprefix("frozen ")) > 20_000  # every module's objects, at least


@pytest.mark.parametrize("own_process", [True, False])
def test_only_a_run_that_owns_its_process_freezes_the_imports(server, unique, own_process):
    # The command's process ends with the run; a test's or a library caller's goes on, and
    # what it froze would never be freed.
    url = server.url(f"/ok/{unique}")
    env = Environment(
        stdin=io.BytesIO(f"{url}\n".encode()),
        stdout=io.BytesIO(),
        stderr=io.StringIO(),
        stdin_isatty=False,
        stderr_isatty=False,
        environ={},
        own_process=own_process,
    )
    before = gc.get_freeze_count()
    try:
        assert run_cli(["get", "-q", "--no-save", "-"], env) == 0
        frozen = gc.get_freeze_count() - before
    finally:
        gc.unfreeze()
    assert (frozen > 20_000) if own_process else (frozen == 0)

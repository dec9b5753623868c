"""The event loop of a run: uvloop where it is installed, asyncio's own otherwise.

uvloop (libuv under asyncio's API) takes less CPU per request in the loop and its sockets
(measured in benchmarks/README.md), and it is a dependency on Linux and macOS.
`FETCHCLI_EVENT_LOOP=asyncio` asks for asyncio's loop anyway: to compare, or to rule uvloop
out when something looks wrong. The CLI and every engine process start here; the library's
`fetch()` runs on whatever loop its caller has.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

__all__ = ["ENV_VAR", "loop_factory", "run", "spare_collector"]

T = TypeVar("T")
ENV_VAR = "FETCHCLI_EVENT_LOOP"


def run(main: Coroutine[Any, Any, T], environ: Mapping[str, str]) -> T:
    """`asyncio.run(main)` on the loop this machine and `environ` choose."""
    with asyncio.Runner(loop_factory=loop_factory(environ)) as runner:
        return runner.run(main)


def spare_collector() -> None:
    """Keep every object made so far out of the garbage collector's passes (`gc.freeze`).

    Only in a process fetchcli owns (the CLI, an engine), once its modules are loaded and
    again before it exits: the ~100k objects of the imports are never garbage, yet a full
    collection walks them all (40 ms once in a 2,000-URL run), and so does the interpreter's
    exit (0.1 s). A library caller's process is left alone: what it freezes is never freed.
    """
    gc.freeze()


def loop_factory(environ: Mapping[str, str]) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's `new_event_loop`, unless it is missing or `environ` asks for asyncio's loop
    (None: asyncio's default)."""
    if environ.get(ENV_VAR, "").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop

"""fetchcli: fetch thousands to millions of URLs concurrently, politely and reliably.

The library API is `fetchcli.fetch(urls, **options)`; see `fetchcli.api`.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fetchcli.api import fetch
    from fetchcli.errors import UsageError
    from fetchcli.models import Record

__all__ = ["Record", "UsageError", "__version__", "fetch"]

# httpx loads its own command line (`httpx.main`: click, Rich's progress, pygments) on import
# whenever those are installed, as they are beside fetchcli: measured, more than a third of
# `import httpx`, in the CLI and in every engine process. fetchcli never calls it; a None in
# sys.modules makes httpx define its stub instead. Not when httpx was imported first.
if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

# A literal, read by the build too: importlib.metadata would add ~50 ms to every start.
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # Imported on first use, so `import fetchcli` (and the CLI's start) stays light.
    if name == "fetch":
        from fetchcli.api import fetch

        return fetch
    if name == "Record":
        from fetchcli.models import Record

        return Record
    if name == "UsageError":
        from fetchcli.errors import UsageError

        return UsageError
    msg = f"module 'fetchcli' has no attribute {name!r}"
    raise AttributeError(msg)

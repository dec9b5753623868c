"""fetchcli: fetch thousands to millions of URLs concurrently, politely and reliably.

The library API is `fetchcli.fetch(urls, **options)`; see `fetchcli.api`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fetchcli.api import fetch
    from fetchcli.models import Record

__all__ = ["Record", "__version__", "fetch"]

try:
    __version__ = version("fetchcli")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"


def __getattr__(name: str) -> Any:
    # Imported on first use, so `import fetchcli` (and the CLI's start) stays light.
    if name == "fetch":
        from fetchcli.api import fetch

        return fetch
    if name == "Record":
        from fetchcli.models import Record

        return Record
    msg = f"module 'fetchcli' has no attribute {name!r}"
    raise AttributeError(msg)

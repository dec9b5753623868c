"""fetchcli: fetch thousands to millions of URLs concurrently, politely and reliably."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fetchcli")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

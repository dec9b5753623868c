"""aiohttp's CA store, loaded when a run first verifies a certificate, not when aiohttp loads.

aiohttp builds its two default TLS contexts as it is imported, and each loads the system's
CA bundle: ~55 ms of every start here (a sixth of it), spent even on a list of plain http
URLs. In a process fetchcli owns (the CLI, an engine), `defer()` is called before aiohttp
is imported: its module then builds those contexts without the store, and `await ready()`
loads it into them, in a thread (OpenSSL lets go of the GIL), before the first TLS request
that relies on them. Elsewhere (a library caller, the tests) nothing is deferred and
`ready()` returns at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.abc
import importlib.machinery
import ssl
import sys
import threading
from collections.abc import Iterator, Sequence
from types import ModuleType

__all__ = ["defer", "ready"]

MODULE = "aiohttp.connector"  # where aiohttp makes its default contexts


class _Store:
    """The contexts made without the CA store, and the one load that fills them."""

    def __init__(self) -> None:
        self.pending: list[ssl.SSLContext] = []
        self.loaded = False
        self._lock = threading.Lock()
        self._loading: concurrent.futures.Future[None] | None = None

    def load(self) -> concurrent.futures.Future[None]:
        with self._lock:  # many workers reach their first https URL at once: one load
            if self._loading is None:
                self._loading = concurrent.futures.Future()
                thread = threading.Thread(target=self._fill, name="fetchcli-ca-store")
                thread.daemon = True
                thread.start()
            return self._loading

    def _fill(self) -> None:
        assert self._loading is not None
        try:
            for context in self.pending:
                _LOAD(context)
        except BaseException as exc:  # given to every request that waits for it
            self._loading.set_exception(exc)
        else:
            self.loaded = True
            self._loading.set_result(None)


_LOAD = ssl.SSLContext.set_default_verify_paths  # ssl's own (load_default_certs calls it)
_STORE = _Store()


def defer() -> None:
    """Have aiohttp's import skip loading the CA store, which `ready()` then loads."""
    if MODULE not in sys.modules:
        sys.meta_path.insert(0, _Finder())


async def ready() -> None:
    """Return once the contexts `defer()` left empty hold the CA store (at once if none)."""
    if _STORE.pending and not _STORE.loaded:
        await asyncio.wrap_future(_STORE.load())


@contextlib.contextmanager
def without_store(store: _Store = _STORE) -> Iterator[None]:
    """While inside, contexts this thread makes skip the CA store and are kept in `store`."""
    importing = threading.get_ident()

    def later(context: ssl.SSLContext) -> None:
        if threading.get_ident() != importing:  # another thread's context is not ours
            _LOAD(context)
            return
        store.pending.append(context)

    own = ssl.SSLContext.__dict__.get("set_default_verify_paths")  # None: inherited
    ssl.SSLContext.set_default_verify_paths = later  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        if own is None:
            del ssl.SSLContext.set_default_verify_paths
        else:
            ssl.SSLContext.set_default_verify_paths = own  # type: ignore[method-assign]


class _Finder(importlib.abc.MetaPathFinder):
    """Finds `MODULE` once, through the other finders, and hands it to `_Loader`."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != MODULE:
            return None
        sys.meta_path.remove(self)
        for finder in sys.meta_path:
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _Loader(spec.loader)
                return spec
        return None


class _Loader(importlib.abc.Loader):
    """Runs the module's code `without_store`."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with without_store():
            self._loader.exec_module(module)

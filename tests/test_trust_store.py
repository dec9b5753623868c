"""aiohttp's CA store, deferred in fetchcli's own processes until a certificate is verified.

Each check runs in a fresh interpreter: the deferral acts on aiohttp's first import, which
this test process has long done. SSL_CERT_FILE names the tests' own CA, so a loaded store
holds exactly one certificate and an empty one none.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fetchcli import trust_store

# Prints how many CAs aiohttp's verifying context holds when the process ends.
COUNT_AT_EXIT = """
import atexit, sys
def count():
    connector = sys.modules.get("aiohttp.connector")
    stats = connector._SSL_CONTEXT_VERIFIED.cert_store_stats() if connector else None
    sys.stderr.write(f"CAS {stats and stats['x509_ca']}\\n")
atexit.register(count)
"""


@pytest.fixture
def ca_file(authority, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return path


def python(code: str, ca_file: Path, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=stdin.decode(),
        env={**os.environ, "SSL_CERT_FILE": str(ca_file)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done


def cas_after_fetching(url: str, ca_file: Path, tmp_path: Path) -> str:
    """Fetch `url` with the console script's `main` in a fresh interpreter (one process, so
    the fetch is its own), check it went well, and return how many CAs aiohttp's verifying
    context held at the exit."""
    records = tmp_path / "r.jsonl"
    done = python(
        COUNT_AT_EXIT + "sys.argv = ['fetchcli', 'get', '-', '-P', '1', '--no-save', '-q', "
        f"'--jsonl', {str(records)!r}]\n"
        "from fetchcli.__main__ import main\n"
        "main()\n",
        ca_file,
        stdin=url.encode(),
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(records.read_text())["ok"]
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("CAS ")]
    return line.removeprefix("CAS ")


def test_deferred_contexts_are_empty_until_ready_loads_them(ca_file):
    done = python(
        "import asyncio\n"
        "from fetchcli import trust_store\n"
        "trust_store.defer()\n"
        "import aiohttp.connector as connector\n"
        "contexts = (connector._SSL_CONTEXT_VERIFIED, connector._SSL_CONTEXT_UNVERIFIED)\n"
        "print([c.cert_store_stats()['x509_ca'] for c in contexts])\n"
        "asyncio.run(trust_store.ready())\n"
        "print([c.cert_store_stats()['x509_ca'] for c in contexts])\n"
        "print(contexts[0].verify_mode == __import__('ssl').CERT_REQUIRED)\n",
        ca_file,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[0, 0]", "[1, 1]", "True"]


def test_without_defer_aiohttp_loads_its_store_on_import(ca_file):
    # A library caller's aiohttp is left as it is: loaded at import, nothing to wait for.
    done = python(
        "import asyncio\n"
        "import aiohttp.connector as connector\n"
        "from fetchcli import trust_store\n"
        "trust_store.defer()\n"  # too late: aiohttp is loaded, so it does nothing
        "asyncio.run(trust_store.ready())\n"
        "print(connector._SSL_CONTEXT_VERIFIED.cert_store_stats()['x509_ca'])\n",
        ca_file,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["1"]


def test_a_plain_http_run_never_loads_the_store(ca_file, server, unique, tmp_path):
    assert cas_after_fetching(server.url(f"/ok/{unique}/plain"), ca_file, tmp_path) == "0"


def test_an_https_run_loads_the_store_first(ca_file, tls_server, unique, tmp_path):
    # Loaded before the request, or the handshake would have failed (test_tls checks the
    # same with -P 2 and --http2).
    assert cas_after_fetching(tls_server.url(f"/ok/{unique}/tls"), ca_file, tmp_path) == "1"


def test_while_deferring_another_threads_context_loads_at_once(ca_file, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    elsewhere = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    here = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    store = trust_store._Store()
    with trust_store.without_store(store):
        thread = threading.Thread(target=elsewhere.set_default_verify_paths)
        thread.start()
        thread.join()
        here.set_default_verify_paths()
    assert elsewhere.cert_store_stats()["x509_ca"] == 1
    assert here.cert_store_stats()["x509_ca"] == 0 and store.pending == [here]
    assert "set_default_verify_paths" not in ssl.SSLContext.__dict__  # ssl's own again
    store.load().result(timeout=30)
    assert here.cert_store_stats()["x509_ca"] == 1 and store.loaded

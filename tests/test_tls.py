"""TLS: verified by default, --insecure to skip, the system trust store (SSL_CERT_FILE) honoured."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import FETCHCLI, cli


def test_an_untrusted_certificate_fails_without_retries(tls_server, unique):
    target = f"/ok/{unique}/x"
    result = cli(
        "get", "--no-save", "--jsonl", "-", "-r", "3", stdin=tls_server.url(target).encode()
    )
    (record,) = result.records()
    assert result.exit_code == 1
    assert record["error_kind"] == "tls" and record["attempts"] == 1
    assert record["error"] == "TLS certificate not trusted: unable to get local issuer certificate"
    assert tls_server.hits(target) == 0  # the handshake failed: no request was sent


def test_insecure_skips_verification(tls_server, unique):
    target = f"/ok/{unique}/y"
    result = cli("get", "--no-save", "-k", "--jsonl", "-", stdin=tls_server.url(target).encode())
    (record,) = result.records()
    assert record["ok"] and record["status"] == 200 and tls_server.hits(target) == 1


@pytest.mark.parametrize("flags", [[], ["--http2"], ["-P", "2"]])
def test_a_ca_named_in_ssl_cert_file_is_trusted(tls_server, unique, authority, tmp_path, flags):
    # In its own process fetchcli loads the store when the first https URL needs it
    # (trust_store.py), and so does each engine (-P).
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    target = f"/ok/{unique}/z"
    records = tmp_path / "r.jsonl"
    args = ["get", "-", "--no-save", "-q", "--jsonl", str(records), *flags]
    done = subprocess.run(
        [*FETCHCLI, *args],
        input=tls_server.url(target).encode(),
        env={**os.environ, "SSL_CERT_FILE": str(ca_file)},
        timeout=60,
        capture_output=True,
    )
    assert done.returncode == 0, done.stderr
    (record,) = [json.loads(line) for line in Path(records).read_text().splitlines()]
    assert record["ok"] and tls_server.hits(target) == 1

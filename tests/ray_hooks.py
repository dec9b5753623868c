"""Run in every Ray worker of the test cluster (its `worker_process_setup_hook`).

A URL with `crash=MARKER` in its query kills the worker that fetches it, once: while MARKER
exists. Before dying, the worker writes `MARKER.ok`, the records (line TAB url) that the
ledgers in the directory named inside MARKER already hold as ok: none may be fetched again.
The worker dies by `os._exit`, as a node lost or the OOM killer would end it: no cleanup.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import parse_qs, urlsplit


def install() -> None:
    from fetchcli.fetcher import Fetcher

    original = Fetcher.attempt  # every request starts here, whoever schedules it

    async def attempt(self, pending, deadline=None):
        marker = parse_qs(urlsplit(pending.job.url).query).get("crash", [""])[0]
        if marker and os.path.exists(marker):
            ledgers = Path(Path(marker).read_text())
            ok = [
                f"{record['line']}\t{record['url']}"
                for path in sorted(ledgers.glob("*.jsonl"))
                for line in path.read_text().splitlines(keepends=True)
                if line.endswith("\n") and (record := json.loads(line))["ok"]
            ]
            Path(marker + ".ok").write_text("".join(url + "\n" for url in ok))
            os.unlink(marker)
            os._exit(1)
        return await original(self, pending, deadline)

    # Replacing the method is the point (mypy forbids it): in a Ray worker there is no
    # pytest monkeypatch, and the patch lives as long as the worker.
    Fetcher.attempt = attempt  # type: ignore[method-assign]

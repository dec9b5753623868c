"""Run in every Ray worker of the test cluster (its `worker_process_setup_hook`).

A URL with `crash=MARKER` in its query kills the worker that fetches it, once: while MARKER
exists. Before dying, the worker writes `MARKER.ok`, the URLs that the ledgers in the
directory named inside MARKER already record as ok: none of them may be fetched again.
The worker dies by `os._exit`, as a node lost or the OOM killer would end it: no cleanup.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import parse_qs, urlsplit


def install() -> None:
    from fetchcli.fetcher import Fetcher

    original = Fetcher.fetch

    async def fetch(self, job, deadline):
        marker = parse_qs(urlsplit(job.url).query).get("crash", [""])[0]
        if marker and os.path.exists(marker):
            ledgers = Path(Path(marker).read_text())
            ok = [
                record["url"]
                for path in sorted(ledgers.glob("*.jsonl"))
                for line in path.read_text().splitlines(keepends=True)
                if line.endswith("\n") and (record := json.loads(line))["ok"]
            ]
            Path(marker + ".ok").write_text("".join(url + "\n" for url in ok))
            os.unlink(marker)
            os._exit(1)
        return await original(self, job, deadline)

    Fetcher.fetch = fetch  # type: ignore[method-assign,assignment]

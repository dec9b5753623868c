"""Continuing and refreshing, measured against nginx on 127.0.0.1.

    python benchmarks/refresh.py                      # a 1 GiB body cut at half; 10,000 files
    python benchmarks/refresh.py --size 256M --files 2000 --markdown

1. **Cut at half, then run again**: a body served at a pace that makes it last ~8 s is
   interrupted (SIGINT) once half of it is on disk, and the same command runs again. The
   figure is the body bytes nginx sent over both runs (its access log), for fetchcli with
   `--continue` (continued), without it (restarted), and for `curl -C -` and `wget -c` where
   they are installed. The saved file's sha256 is checked every time.
2. **`--update` over an unchanged tree**: N files of 1 KiB are fetched once, then again with
   the tool's refresh option; the figure is the 304s per second of the second run (its wall
   time, start-up included): fetchcli again without `--update` (every file fetched in full, for
   scale), fetchcli `--update` with the first run's `--jsonl` records
   (If-None-Match + If-Modified-Since) and without them (mtime only), `wget -N` (one request at
   a time: it has no parallelism) and `curl -z` (one config stanza per URL with `time-cond`,
   `--parallel`).

Needs nginx (tests/nginx.py starts it, as the test suite does) and fetchcli on the same
interpreter; curl and wget are optional.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.nginx import Nginx, find_nginx

FETCHCLI = [sys.executable, "-m", "fetchcli"]
CONCURRENCY = 64
BLOCK = 16 << 20


def parse_size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower()
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


def make_big(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as file:
        left = size
        while left:
            chunk = os.urandom(min(BLOCK, left))
            file.write(chunk)
            left -= len(chunk)


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def largest(directory: Path) -> int:
    sizes = [p.stat().st_size for p in directory.rglob("*") if p.is_file()]
    return max(sizes, default=0)


# --- 1. Cut at half -------------------------------------------------------------------------


def cut_commands(tool: str, url: str, out: Path) -> list[str] | None:
    target = out / "big.bin"
    if tool == "fetchcli --continue":
        return [*FETCHCLI, "get", "-", "-o", str(out), "-q", "-t", "0", "--continue"]
    if tool == "fetchcli (restarted)":
        return [*FETCHCLI, "get", "-", "-o", str(out), "-q", "-t", "0"]
    if tool == "curl -C -" and shutil.which("curl"):
        return ["curl", "-s", "-C", "-", "-o", str(target), url]
    if tool == "wget -c" and shutil.which("wget"):
        return ["wget", "-q", "-c", "-O", str(target), url]
    return None


def cut_and_continue(nginx: Nginx, tool: str, size: int, expected: str, work: Path) -> dict:
    key = tool.split()[0] + ("-r" if "restarted" in tool else "")
    uri = f"/slow/big.bin?rate={max(64, size // 8 // 1024)}k&who={key}"
    out = work / key
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    command = cut_commands(tool, nginx.url(uri), out)
    if command is None:
        return {"tool": tool, "skipped": "not installed"}
    stdin = subprocess.PIPE if command[0] == sys.executable else subprocess.DEVNULL
    first = subprocess.Popen(command, stdin=stdin, stderr=subprocess.DEVNULL)
    if first.stdin is not None:
        first.stdin.write(nginx.url(uri).encode() + b"\n")
        first.stdin.close()
    reached = wait_until(lambda: largest(out) >= size // 2, timeout=120)
    first.send_signal(signal.SIGINT)
    first.wait(timeout=60)
    kept = largest(out)  # what the second run can start from (a temporary file is gone)
    began = time.monotonic()
    second = subprocess.run(
        command,
        input=nginx.url(uri).encode() + b"\n" if stdin == subprocess.PIPE else None,
        stderr=subprocess.DEVNULL,
        timeout=600,
    )
    took = time.monotonic() - began
    entries = nginx.wait_for(uri, 2, timeout=30)
    saved = [p for p in out.rglob("*") if p.is_file() and "fetchcli-part" not in p.name]
    ok = second.returncode == 0 and len(saved) == 1 and sha256_of(saved[0]) == expected
    sent = sum(entry.body_bytes_sent for entry in entries)
    return {
        "tool": tool,
        "kept": kept if reached else None,
        "requests": len(entries),
        "sent": sent,
        "ratio": sent / size,
        "second run s": took,
        "ok": ok,
    }


# --- 2. --update over an unchanged tree ------------------------------------------------------


def make_tree(nginx: Nginx, count: int) -> list[str]:
    urls = []
    for i in range(count):
        relpath = f"tree/d{i % 100}/f{i}.txt"
        path = nginx.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(512).hex().encode())
        os.utime(path, (1_600_000_000 + i, 1_600_000_000 + i))
        urls.append(nginx.url("/" + relpath))
    return urls


def curl_config(urls: list[str], nginx: Nginx, out: Path, *, condition: bool) -> Path:
    stanzas = []
    for url in urls:
        target = out / url.removeprefix(nginx.base_url).lstrip("/")
        lines = [f'url = "{url}"', f'output = "{target}"', "create-dirs", "remote-time"]
        if condition:
            lines.append(f'time-cond = "{target}"')
        stanzas.append("\n".join(lines))
    config = out.with_suffix(".curlrc")
    config.write_text("\nnext\n".join(stanzas) + "\n")  # a `next` at the end is an error
    return config


def update_commands(
    tool: str, urls: list[str], nginx: Nginx, work: Path
) -> tuple[list[str], list[str]] | None:
    """(the first run's command, the refreshing run's) for `tool`, or None if not installed."""
    work.mkdir(parents=True, exist_ok=True)
    listing = work / "urls.txt"
    listing.write_text("\n".join(urls) + "\n")
    out = work / tool.split()[0].replace("-", "")
    shutil.rmtree(out, ignore_errors=True)
    base = [*FETCHCLI, "get", str(listing), "-o", str(out), "-q", "-c", str(CONCURRENCY)]
    records = ["--jsonl", str(work / "r.jsonl")]
    if tool == "fetchcli --update (records)":
        return [*base, *records], [*base, *records, "--update"]
    if tool == "fetchcli --update (mtime)":
        return base, [*base, "--update"]
    if tool == "fetchcli (no --update)":
        return base, base
    if tool == "wget -N" and shutil.which("wget"):
        command = ["wget", "-q", "-N", "-x", "-nH", "-P", str(out), "-i", str(listing)]
        return command, command
    if tool == "curl -z" and shutil.which("curl"):
        out.mkdir(parents=True, exist_ok=True)
        parallel = ["curl", "-s", "--parallel", "--parallel-max", str(CONCURRENCY), "-K"]
        first = curl_config(urls, nginx, out, condition=False)
        again = curl_config(urls, nginx, out.with_name(out.name + "z"), condition=True)
        shutil.rmtree(out.with_name(out.name + "z"), ignore_errors=True)
        # curl -z compares with its own files: the first run writes where the second looks.
        again.write_text(again.read_text().replace(str(out) + "z", str(out)))
        return [*parallel, str(first)], [*parallel, str(again)]
    return None


def refresh(nginx: Nginx, tool: str, urls: list[str], work: Path) -> dict:
    commands = update_commands(tool, urls, nginx, work)
    if commands is None:
        return {"tool": tool, "skipped": "not installed"}
    first, again = commands
    subprocess.run(first, check=False, timeout=1800, stderr=subprocess.DEVNULL)
    before = len(nginx.log())
    began = time.monotonic()
    done = subprocess.run(again, check=False, timeout=1800, stderr=subprocess.DEVNULL)
    took = time.monotonic() - began
    wait_until(lambda: len(nginx.log()) >= before + len(urls), timeout=30)
    entries = nginx.log()[before:]
    not_modified = sum(1 for entry in entries if entry.status == 304)
    return {
        "tool": tool,
        "requests": len(entries),
        "200s": sum(1 for entry in entries if entry.status == 200),
        "304s": not_modified,
        "s": took,
        "304/s": not_modified / took,
        "exit": done.returncode,
    }


# --- Report -----------------------------------------------------------------------------------


def table(rows: list[dict], columns: list[str], markdown: bool) -> str:
    def cell(row: dict, column: str) -> str:
        value = row.get(column, "")
        if row.get("skipped") and column != "tool":
            return row["skipped"] if column == columns[1] else ""
        if isinstance(value, float):
            return f"{value:,.2f}"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return str(value)

    lines = [[cell(row, column) for column in columns] for row in rows]
    if markdown:
        out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        out += ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join(out)
    widths = [max(len(c), *(len(line[i]) for line in lines)) for i, c in enumerate(columns)]
    out = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    out += ["  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1G", help="the body cut at half (default 1G)")
    parser.add_argument("--files", type=int, default=10_000, help="the --update tree's files")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--skip-cut", action="store_true")
    parser.add_argument("--skip-update", action="store_true")
    args = parser.parse_args()
    binary = find_nginx()
    if binary is None:
        sys.exit("nginx is needed (apt-get install nginx)")
    with tempfile.TemporaryDirectory(prefix="fetchcli-refresh-") as temp:
        work = Path(temp)
        with Nginx(work / "nginx", binary) as nginx:
            if not args.skip_cut:
                size = parse_size(args.size)
                make_big(nginx.root / "big.bin", size)
                expected = sha256_of(nginx.root / "big.bin")
                rows = [
                    cut_and_continue(nginx, tool, size, expected, work / "cut")
                    for tool in (
                        "fetchcli --continue",
                        "fetchcli (restarted)",
                        "curl -C -",
                        "wget -c",
                    )
                ]
                print(f"\n1. A {size:,}-byte body cut at half, then the same command again\n")
                columns = ["tool", "kept", "requests", "sent", "ratio", "second run s", "ok"]
                print(table(rows, columns, args.markdown))
                (nginx.root / "big.bin").unlink()
            if not args.skip_update:
                urls = make_tree(nginx, args.files)
                rows = [
                    refresh(nginx, tool, urls, work / "update")
                    for tool in (
                        "fetchcli (no --update)",
                        "fetchcli --update (records)",
                        "fetchcli --update (mtime)",
                        "wget -N",
                        "curl -z",
                    )
                ]
                print(f"\n2. A second run over {len(urls):,} unchanged files of 1 KiB\n")
                columns = ["tool", "requests", "200s", "304s", "s", "304/s", "exit"]
                print(table(rows, columns, args.markdown))


if __name__ == "__main__":
    main()

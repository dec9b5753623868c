"""`fetchcli demo`: a loopback server with a realistic mix of answers, fetched for real.

Fast pages, slow ones, a few large files, some 503s that recover after a Retry-After, a few
404s and redirects; everything on 127.0.0.1, fetched into a temporary directory that is
removed afterwards (unless --keep). No network and no setup.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
import zlib
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from aiohttp import web

from fetchcli.config import Settings
from fetchcli.environment import Environment
from fetchcli.session import run
from fetchcli.stats import RunStats

__all__ = ["demo", "demo_urls"]

PAGE = "<!doctype html><title>Page {n}</title><h1>Page {n}</h1><p>{text}</p>\n"
LARGE_BLOCK = bytes(random.Random(0).randbytes(1 << 20))


def demo_urls(base: str, count: int) -> list[str]:
    """A shuffled mix: mostly fast pages, some slow, flaky, missing, moved and large."""
    mix = {"slow": 0.12, "flaky": 0.12, "missing": 0.06, "moved": 0.05}
    urls = [f"{base}/files/large-{i}.bin" for i in range(max(1, count // 60))]
    urls += [f"{base}/busy/{i}.html" for i in range(2)]
    for kind, share in mix.items():
        urls += [f"{base}/{kind}/{i}.html" for i in range(max(1, round(count * share)))]
    urls += [f"{base}/page/{i}.html" for i in range(count - len(urls))]  # the rest: fast pages
    random.Random(count).shuffle(urls)
    return urls[:count]


def _app() -> web.Application:
    attempts: Counter[str] = Counter()
    rng = random.Random(1)

    async def page(request: web.Request) -> web.Response:
        n = request.match_info["n"]
        return web.Response(
            text=PAGE.format(n=n, text="lorem ipsum " * 40), content_type="text/html"
        )

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(rng.uniform(0.3, 2.0))
        return await page(request)

    async def flaky(request: web.Request) -> web.Response:
        attempts[request.path] += 1
        if attempts[request.path] <= 1 + zlib.crc32(request.path.encode()) % 2:
            return web.Response(status=503, text="overloaded, try again\n")
        return await page(request)

    async def busy(request: web.Request) -> web.Response:
        # A 429 with Retry-After pauses the whole host: the display shows the wait.
        attempts[request.path] += 1
        if attempts[request.path] == 1:
            return web.Response(status=429, headers={"Retry-After": "1"}, text="slow down\n")
        return await page(request)

    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404, text="not here\n")

    async def moved(request: web.Request) -> web.Response:
        location = f"/page/moved-{request.match_info['n']}.html"
        raise web.HTTPFound(location)

    async def large(request: web.Request) -> web.StreamResponse:
        size = (20 + 10 * int(request.match_info["n"]) % 40) << 20
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = size
        await response.prepare(request)
        for _ in range(size >> 20):
            await response.write(LARGE_BLOCK)
            await asyncio.sleep(0.08)  # about 12 MB/s: slow enough to watch
        return response

    app = web.Application()
    app.add_routes(
        [
            web.get("/page/{n}.html", page),
            web.get("/slow/{n}.html", slow),
            web.get("/flaky/{n}.html", flaky),
            web.get("/busy/{n}.html", busy),
            web.get("/missing/{n}.html", missing),
            web.get("/moved/{n}.html", moved),
            web.get("/files/large-{n}.bin", large),
        ]
    )
    return app


@asynccontextmanager
async def _serving() -> AsyncIterator[str]:
    runner = web.AppRunner(_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def demo(env: Environment, *, count: int, concurrency: int, keep: Path | None) -> RunStats:
    """Serve the mix, fetch it with the usual display, clean up; return the run's stats."""
    workdir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="fetchcli-demo-"))
    try:
        async with _serving() as base:
            urls = workdir / "urls.txt"
            mix = demo_urls(base, count)
            await asyncio.to_thread(urls.write_text, "\n".join(mix) + "\n")
            output = keep or workdir / "out"
            await asyncio.to_thread(output.mkdir, parents=True, exist_ok=True)
            settings = Settings.create(
                sources=(str(urls),),
                concurrency=concurrency,
                retries=3,
                backoff=0.2,
                output_dir=output,
                jsonl=str(output / "results.jsonl") if keep else None,
            )
            _say(env, f"fetchcli demo: {len(mix)} URLs from a local server at {base}")
            stats = await run(settings, env)
        where = f"kept in {keep}" if keep else "removed with their temporary directory"
        failures = "the failures are on purpose; " if stats.failed else ""
        _say(env, f"fetchcli demo: {failures}the files were {where}.")
        return stats
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, ignore_errors=True)


def _say(env: Environment, line: str) -> None:
    env.stderr.write(line + "\n")
    env.stderr.flush()

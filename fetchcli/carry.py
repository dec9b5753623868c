"""What one URL carries from one attempt to the next: the body so far, what names it, and so
what to ask for next.

A `Carry` lives as long as the URL's fetch (`Fetcher.fetch`). After a cut, the body it holds
is asked for again from where it stopped (`Range` + `If-Range`, partial.py's rules); a body
that cannot be continued is dropped at once, so the next attempt starts over. With --update
and a saved file, a request that holds nothing is conditional (`If-None-Match`,
`If-Modified-Since`). At the end `close()` keeps a cut body for a later run (--continue) or
removes it.

The held size is counted in the bytes a Range addresses: the body's own for an identity
body, the encoded bytes the decoder took for an encoded one. The decoder is kept with it, so
an encoded body continues where its stream stopped; a cut in the middle of decoding one
chunk leaves the decoder ahead of any count, and then the body starts over.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from fetchcli.body import Body
from fetchcli.decoding import IDENTITY, Decoder
from fetchcli.digests import BodyCheck
from fetchcli.partial import Decision, Held, continue_headers, decide, parse_etag, update_headers
from fetchcli.sink import OnDisk, Saved

__all__ = ["Carry"]


@dataclass(slots=True)
class Carry:
    """One URL's body across its attempts, and the validators that go with it."""

    url: str
    keep: bool = False  # --continue: a cut body is kept for the next run
    etag: str | None = None  # --update: the ETag the records give (If-None-Match)
    saved: OnDisk | None = None  # --update: the file saved already (If-Modified-Since)
    hashed: Saved | None = None  # --update: that file, hashed already (its sha256 recorded)
    body: Body | None = None
    # Validators of the response the body came from (size unused), or how to make them when
    # first asked for: most bodies arrive whole at their first attempt and never need them.
    held: Held | Callable[[], Held] | None = None
    decoder: Decoder = IDENTITY
    check: BodyCheck | None = None  # what the whole body must be (a row's sha256, digests)
    raw: int = 0  # encoded bytes taken by the decoder, of an encoded body
    in_step: bool = True  # False while a chunk is being decoded: `raw` is then behind
    ranged: bool = False  # the last request asked for the rest
    conditional: bool = False  # the last request asked only for a change
    permanent: bool = False  # the URL failed for good: nothing is worth keeping
    # Of the response the body came from, for the record and the file's mtime.
    response_etag: str | None = None
    last_modified: str | None = None
    content_type: str | None = None

    def holding(self) -> Held | None:
        """What the body holds, counted as a Range counts; None when nothing or unsure."""
        held = self._validators()
        if self.body is None or held is None:
            return None
        if held.content_encoding is None:
            return held.at(self.body.size)
        return held.at(self.raw) if self.in_step else None

    def continuable(self) -> bool:
        """Whether the next request can ask for the rest of what is held."""
        held = self.holding()
        return held is not None and continue_headers(held) is not None

    def request_headers(self) -> dict[str, str]:
        """The headers of the next request: the rest of the body, or only a change, or none."""
        held = self.holding()
        rest = continue_headers(held) if held is not None else None
        self.ranged, self.conditional = rest is not None, False
        if rest is not None:
            return rest
        if self.saved is not None and self.saved.size is not None:
            headers = update_headers(self.etag, self.saved.mtime)
            self.conditional = bool(headers)
            return headers
        return {}

    def judge(self, status: int, headers: Mapping[str, str]) -> Decision | None:
        """What the answer to a request for the rest means (None: it asked for no rest, or
        the answer is an error to handle as without a Range)."""
        held = self.holding()
        if not self.ranged or held is None:
            return None
        return decide(held, status, headers)

    def start(self, body: Body, held: Held | Callable[[], Held], decoder: Decoder) -> None:
        """A new body, from byte 0, for the response `held` describes (or `held()`)."""
        self.body, self.held, self.decoder = body, held, decoder
        self.raw, self.in_step, self.check = 0, True, None

    def note(self, headers: Mapping[str, str], *, fresh: bool) -> None:
        """Remember the validators of the response whose body is taken (`fresh`: from byte
        0; a 206 keeps what it does not repeat)."""
        etag, modified = parse_etag(headers.get("etag")), headers.get("last-modified")
        content_type = headers.get("content-type")
        if fresh or etag is not None:
            self.response_etag = etag
        if fresh or modified is not None:
            self.last_modified = modified.strip() if modified else None
        if fresh or content_type is not None:
            self.content_type = content_type

    def resumed(self, body: Body, held: Held) -> None:
        """A body continued from a kept partial file of an earlier run."""
        self.start(body, held, IDENTITY)
        self.response_etag, self.last_modified = held.etag, held.last_modified

    async def drop(self) -> None:
        """Forget the body: the next request starts over."""
        body, self.body, self.held, self.check = self.body, None, None, None
        if body is not None:
            await body.discard()

    def _validators(self) -> Held | None:
        if callable(self.held):
            self.held = self.held()
        return self.held

    async def close(self) -> None:
        """The URL is done: keep a cut body for a later run (--continue, and only what can be
        continued: an identity body under a validator) or remove it."""
        body, held = self.body, self.holding()
        self.body = None
        if body is None:
            return
        if (
            self.keep
            and not self.permanent
            and held is not None
            and held.content_encoding is None
            and continue_headers(held) is not None
        ):
            await body.keep(held)
        else:
            await body.discard()

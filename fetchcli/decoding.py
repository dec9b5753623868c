"""Content-Encoding decoders that never inflate more than a bounded piece at a time.

httpx's decoders inflate a whole network chunk in one call; a few KiB of gzip can become
gigabytes. These yield at most `PIECE` bytes per step, so `--max-bytes` can stop a
decompression bomb with flat memory.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

from fetchcli.errors import PermanentError, TransientError
from fetchcli.kinds import ErrorKind

__all__ = ["ACCEPT_ENCODING", "Decoder", "decoder_for"]

ACCEPT_ENCODING = "gzip, deflate"
PIECE = 256 * 1024


class Decoder:
    """Identity: bytes pass through unchanged."""

    def decode(self, data: bytes) -> Iterator[bytes]:
        """Yield the decoded bytes of `data`, in pieces."""
        if data:
            yield data

    def flush(self) -> Iterator[bytes]:
        """Yield what is left at the end of the body."""
        return iter(())


class ZlibDecoder(Decoder):
    """gzip, or deflate with or without its zlib header (servers send both)."""

    def __init__(self, encoding: str) -> None:
        self._encoding = encoding
        wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
        self._inflate = zlib.decompressobj(wbits)
        self._first = True

    def decode(self, data: bytes) -> Iterator[bytes]:
        if self._first and self._encoding == "deflate" and data:
            self._first = False
            # A raw deflate stream has no zlib header: its first byte is not 0x?8.
            if data[0] & 0x0F != 8:
                self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
        while True:
            if self._inflate.eof:
                rest = self._inflate.unused_data + data
                if self._encoding != "gzip" or not rest:
                    return
                # Another gzip member follows (concatenated gzip is still one body).
                self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
                data = rest
            try:
                piece = self._inflate.decompress(data, PIECE)
            except zlib.error as exc:
                # zlib says "Error -3 while decompressing data: incorrect header check".
                reason = str(exc).rpartition(": ")[2] or "corrupt"
                msg = f"invalid {self._encoding} data: {reason}"
                raise PermanentError(ErrorKind.DECODING, msg) from exc
            if piece:
                yield piece
            data = self._inflate.unconsumed_tail
            # A full piece may leave output pending inside zlib even with no input left.
            if not data and len(piece) < PIECE and not self._inflate.eof:
                return

    def flush(self) -> Iterator[bytes]:
        yield from self.decode(b"")
        if not self._inflate.eof:
            # The body ended inside the compressed stream: it was cut short.
            msg = f"body cut short: its {self._encoding} stream stops before the end"
            raise TransientError(ErrorKind.TRUNCATED, msg)


class ChainDecoder(Decoder):
    """Several encodings applied in turn, e.g. `Content-Encoding: gzip, gzip`."""

    def __init__(self, decoders: list[Decoder]) -> None:
        self._decoders = decoders

    def decode(self, data: bytes) -> Iterator[bytes]:
        yield from self._through(0, data)

    def flush(self) -> Iterator[bytes]:
        for i, decoder in enumerate(self._decoders):
            for piece in decoder.flush():
                yield from self._through(i + 1, piece)

    def _through(self, index: int, data: bytes) -> Iterator[bytes]:
        if index == len(self._decoders):
            yield data
            return
        for piece in self._decoders[index].decode(data):
            yield from self._through(index + 1, piece)


IDENTITY = Decoder()  # stateless: one serves every identity body


def decoder_for(content_encoding: str | None) -> Decoder:
    """The decoder for a Content-Encoding header value; PermanentError when unsupported."""
    if not content_encoding:
        return IDENTITY
    codings = [c.strip().lower() for c in content_encoding.split(",")]
    decoders: list[Decoder] = []
    # Encodings are listed in the order they were applied; undo them in reverse.
    for coding in reversed(codings):
        if coding in ("", "identity"):
            continue
        if coding in ("gzip", "x-gzip"):
            decoders.append(ZlibDecoder("gzip"))
        elif coding == "deflate":
            decoders.append(ZlibDecoder("deflate"))
        else:
            msg = f"unsupported Content-Encoding: {coding}"
            raise PermanentError(ErrorKind.DECODING, msg)
    if not decoders:
        return IDENTITY
    return decoders[0] if len(decoders) == 1 else ChainDecoder(decoders)

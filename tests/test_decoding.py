"""Bounded decoders: correct output, and never more than a piece at a time."""

from __future__ import annotations

import gzip
import zlib

import pytest

from fetchcli.decoding import PIECE, decoder_for
from fetchcli.errors import PermanentError, TransientError


def decode_all(encoding: str | None, data: bytes, step: int = 1000) -> tuple[bytes, int]:
    decoder = decoder_for(encoding)
    pieces: list[bytes] = []
    for start in range(0, len(data), step):
        pieces.extend(decoder.decode(data[start : start + step]))
    pieces.extend(decoder.flush())
    return b"".join(pieces), max((len(p) for p in pieces), default=0)


TEXT = b"the quick brown fox " * 5000


@pytest.mark.parametrize(
    ("encoding", "data"),
    # mtime=0: the same bytes in every process (pytest-xdist's workers must agree on the ids)
    [
        (None, TEXT),
        ("identity", TEXT),
        ("gzip", gzip.compress(TEXT, mtime=0)),
        ("x-gzip", gzip.compress(TEXT, mtime=0)),
        ("deflate", zlib.compress(TEXT)),
        ("deflate", zlib.compress(TEXT)[2:-4]),  # raw deflate, as some servers send
        ("gzip, gzip", gzip.compress(gzip.compress(TEXT, mtime=0), mtime=0)),
        ("GZIP", gzip.compress(TEXT, mtime=0)),
    ],
)
def test_decoders_restore_the_body(encoding: str | None, data: bytes):
    assert decode_all(encoding, data)[0] == TEXT


def test_a_bomb_comes_out_in_bounded_pieces():
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)
    body, largest = decode_all("gzip", bomb, step=len(bomb))
    assert len(body) == 64 * 1024 * 1024
    assert largest <= PIECE


def test_an_unsupported_encoding_is_a_permanent_error():
    with pytest.raises(PermanentError, match="unsupported Content-Encoding: br"):
        decoder_for("br")


def test_corrupt_gzip_is_a_permanent_error():
    with pytest.raises(PermanentError, match="invalid gzip data"):
        decode_all("gzip", b"\x1f\x8bnot really gzip at all")


def test_concatenated_gzip_members_are_one_body():
    data = gzip.compress(b"first ") + gzip.compress(b"second")
    assert decode_all("gzip", data, step=7)[0] == b"first second"


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compressed_body_cut_short_is_truncated(encoding: str):
    whole = gzip.compress(TEXT) if encoding == "gzip" else zlib.compress(TEXT)
    with pytest.raises(
        TransientError, match=f"body cut short: its {encoding} stream stops before the end"
    ):
        decode_all(encoding, whole[: len(whole) // 2])

"""Digests: RFC 9530 fields parsed, the right bytes hashed, a mismatch a `checksum` failure."""

from __future__ import annotations

import base64
import gzip
import hashlib

import httpx
import pytest

from fetchcli.digests import (
    BodyCheck,
    Wanted,
    check_size,
    is_encoded,
    parse_digest_field,
    wanted_digests,
)
from fetchcli.errors import PermanentError

# The examples of RFC 9530 (section 2 and appendix B): the digests of `{"hello": "world"}`.
HELLO = b'{"hello": "world"}'
HELLO_SHA256 = "X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE="
HELLO_SHA512 = (
    "WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew=="
)


def b64(text: str) -> bytes:
    return base64.b64decode(text)


def field_of(algorithm: str, data: bytes) -> str:
    digest = hashlib.new(algorithm.replace("-", ""), data).digest()
    return f"{algorithm}=:{base64.b64encode(digest).decode()}:"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"sha-256=:{HELLO_SHA256}:", {"sha-256": b64(HELLO_SHA256)}),
        (
            f"sha-512=:{HELLO_SHA512}:, sha-256=:{HELLO_SHA256}:",
            {"sha-512": b64(HELLO_SHA512), "sha-256": b64(HELLO_SHA256)},
        ),
        # Members that are not byte sequences are skipped, parameters and spaces allowed.
        (f"  unixsum=30637 , sha-256=:{HELLO_SHA256}:;x=1 ", {"sha-256": b64(HELLO_SHA256)}),
        (
            f'id="a b", flag, list=(a "b" 1);p, sha-256=:{HELLO_SHA256}:',
            {"sha-256": b64(HELLO_SHA256)},
        ),
        (f"md5=?1, sha-256=:{HELLO_SHA256.rstrip('=')}:", {"sha-256": b64(HELLO_SHA256)}),
        ("", {}),
        # Not a structured-field dictionary: the whole field is ignored.
        (f"SHA-256=:{HELLO_SHA256}:", {}),  # keys are lower case
        (f"sha-256={HELLO_SHA256}", {}),  # RFC 3230 style, without colons
        (f"sha-256=:{HELLO_SHA256}:,", {}),
        (f"sha-256=:{HELLO_SHA256}: sha-512=:{HELLO_SHA512}:", {}),
        ("sha-256=:not*base64:", {}),
        ('sha-256="unterminated', {}),
    ],
)
def test_digest_fields_parse_as_structured_dictionaries(value: str, expected: dict[str, bytes]):
    assert parse_digest_field(value) == expected


def test_the_last_of_a_repeated_key_wins():
    value = f"sha-256=:{HELLO_SHA512}:, sha-256=:{HELLO_SHA256}:"
    assert parse_digest_field(value) == {"sha-256": b64(HELLO_SHA256)}


def headers(**fields: str) -> httpx.Headers:
    return httpx.Headers({name.replace("_", "-"): value for name, value in fields.items()})


def test_sha256_is_preferred_and_unknown_or_wrong_length_digests_are_not_wanted():
    both = f"sha-512=:{HELLO_SHA512}:, sha-256=:{HELLO_SHA256}:"
    assert wanted_digests(headers(repr_digest=both), 200) == [
        Wanted("Repr-Digest", "sha-256", b64(HELLO_SHA256), "encoded")
    ]
    assert wanted_digests(headers(content_digest=f"sha-512=:{HELLO_SHA512}:"), 200) == [
        Wanted("Content-Digest", "sha-512", b64(HELLO_SHA512), "encoded")
    ]
    short = base64.b64encode(b"x" * 31).decode()
    assert wanted_digests(headers(repr_digest=f"md5=:{short}:, sha-256=:{short}:"), 200) == []


def test_repr_digest_of_a_partial_response_is_not_checked():
    value = f"sha-256=:{HELLO_SHA256}:"
    assert wanted_digests(headers(repr_digest=value), 206) == []
    assert [w.origin for w in wanted_digests(headers(content_digest=value), 206)] == [
        "Content-Digest"
    ]


def test_with_a_content_encoding_repr_digest_may_match_either_form():
    value = f"sha-256=:{HELLO_SHA256}:"
    wanted = wanted_digests(headers(repr_digest=value, content_encoding="gzip"), 200)
    assert [w.covers for w in wanted] == ["either"]
    assert is_encoded(headers(content_encoding="gzip"))
    assert not is_encoded(headers(content_encoding="identity"))
    assert not is_encoded(headers())


def check_for(hdrs: httpx.Headers, *, status: int = 200, sha256: str | None = None, size=None):
    return BodyCheck(
        wanted_digests(hdrs, status, expected_sha256=sha256),
        expected_size=size,
        encoded=is_encoded(hdrs),
    )


@pytest.mark.parametrize("name", ["repr_digest", "content_digest"])
@pytest.mark.parametrize("algorithm", ["sha-256", "sha-512"])
def test_an_identity_body_passes_its_digest_and_a_tampered_one_fails(name, algorithm):
    hdrs = headers(**{name: field_of(algorithm, HELLO)})
    check = check_for(hdrs)
    for piece in (HELLO[:5], HELLO[5:]):
        check.feed_decoded(piece)
    check.verify()
    tampered = check_for(hdrs)
    tampered.feed_decoded(HELLO.replace(b"world", b"w0rld"))
    with pytest.raises(PermanentError) as caught:
        tampered.verify()
    assert caught.value.kind == "checksum"
    field = {"repr_digest": "Repr-Digest", "content_digest": "Content-Digest"}[name]
    assert str(caught.value).startswith(f"{field} mismatch: expected {algorithm}=:")


def test_the_rfc_vectors_verify():
    check = check_for(headers(repr_digest=f"sha-512=:{HELLO_SHA512}:"))
    check.feed_decoded(HELLO)
    check.verify()


def test_content_digest_of_a_gzip_body_covers_the_bytes_as_sent():
    packed = gzip.compress(HELLO, mtime=0)
    hdrs = headers(content_encoding="gzip", content_digest=field_of("sha-256", packed))
    check = check_for(hdrs)
    check.feed_encoded(packed)
    check.feed_decoded(HELLO)
    check.verify()
    # The digest of the decoded body is not what Content-Digest means: it fails.
    wrong = check_for(headers(content_encoding="gzip", content_digest=field_of("sha-256", HELLO)))
    wrong.feed_encoded(packed)
    wrong.feed_decoded(HELLO)
    with pytest.raises(PermanentError, match=r"^Content-Digest mismatch"):
        wrong.verify()


@pytest.mark.parametrize("digested", ["encoded", "decoded"])
def test_repr_digest_of_a_gzip_body_passes_in_either_form_and_fails_in_neither(digested):
    packed = gzip.compress(HELLO, mtime=0)
    data = packed if digested == "encoded" else HELLO
    hdrs = headers(content_encoding="gzip", repr_digest=field_of("sha-512", data))
    check = check_for(hdrs)
    check.feed_encoded(packed)
    check.feed_decoded(HELLO)
    check.verify()
    tampered = check_for(hdrs)
    tampered.feed_encoded(gzip.compress(b"{}", mtime=0))
    tampered.feed_decoded(b"{}")
    with pytest.raises(PermanentError, match=r"^Repr-Digest mismatch: .* or sha-512=:"):
        tampered.verify()


def test_the_manifest_sha256_is_of_the_decoded_body_and_may_come_from_the_saver():
    sha = hashlib.sha256(HELLO).hexdigest()
    hdrs = headers(content_encoding="gzip")
    check = BodyCheck(wanted_digests(hdrs, 200, expected_sha256=sha), encoded=True)
    check.feed_encoded(gzip.compress(HELLO))
    check.feed_decoded(HELLO)
    check.verify()
    # The saver already hashed the body: it is not hashed twice, and its digest is used.
    given = BodyCheck(
        wanted_digests(headers(), 200, expected_sha256=sha),
        encoded=False,
        decoded_sha256_given=True,
    )
    given.feed_decoded(HELLO)
    given.verify(decoded_sha256=sha)
    with pytest.raises(PermanentError, match=f"^sha256 mismatch: expected {sha}, got 00"):
        given.verify(decoded_sha256="00" * 32)


def test_a_body_over_the_expected_size_fails_while_it_streams():
    check = BodyCheck([], expected_size=10, encoded=False)
    check.feed_decoded(b"x" * 10)
    with pytest.raises(
        PermanentError, match=r"^size mismatch: expected 10 bytes, got at least 11$"
    ):
        check.feed_decoded(b"x")


def test_a_short_body_fails_at_the_end_and_a_content_length_fails_before_the_body():
    check = BodyCheck([], expected_size=10, encoded=False)
    check.feed_decoded(b"x" * 9)
    with pytest.raises(PermanentError, match=r"^size mismatch: expected 10 bytes, got 9$"):
        check.verify()
    with pytest.raises(PermanentError, match=r"got 12$"):
        check.check_length(12)
    check.check_length(10)
    check.check_length(None)
    # With a Content-Encoding the length is of the encoded body: it says nothing yet.
    BodyCheck([], expected_size=10, encoded=True).check_length(3)


def test_an_expected_empty_body_passes():
    empty = BodyCheck([], expected_size=0, encoded=False)
    empty.verify()


@pytest.mark.parametrize(
    ("expected", "size", "final", "fails"),
    [
        (None, 5, True, False),
        (5, 5, True, False),
        (5, 4, False, False),
        (5, 4, True, True),
        (5, 6, False, True),
        (5, 6, True, True),
    ],
)
def test_check_size(expected, size, final, fails):
    if fails:
        with pytest.raises(PermanentError) as caught:
            check_size(expected, size, final=final)
        assert caught.value.kind == "checksum"
    else:
        check_size(expected, size, final=final)

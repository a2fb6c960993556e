"""Digests: grammar, registered algorithms, hashing and verifying readers."""

from __future__ import annotations

import hashlib
import io
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocibox import digest
from ocibox.errors import DigestMismatch, InvalidDigest, SizeMismatch, UnsupportedDigestAlgorithm

HELLO = b"hello"
HELLO_256 = "sha256:" + hashlib.sha256(HELLO).hexdigest()
HELLO_512 = "sha512:" + hashlib.sha512(HELLO).hexdigest()

# the grammar of descriptor.md, written out independently of digest.py
GRAMMAR = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")


@pytest.mark.parametrize("value", [HELLO_256, HELLO_512, "sha256:" + "0" * 64, "sha512:" + "f" * 128])
def test_valid(value):
    assert digest.is_valid(value)
    assert digest.validate(value) == value
    alg, enc = digest.parse(value)
    assert f"{alg}:{enc}" == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "sha256",
        "sha256:",
        ":" + "a" * 64,
        "sha256:" + "A" * 64,  # upper-case hex is forbidden for registered algorithms
        "sha256:" + "a" * 63,
        "sha256:" + "a" * 65,
        "sha512:" + "a" * 64,
        "sha256:" + "g" * 64,
        "SHA256:" + "a" * 64,
        "sha256:" + "a" * 64 + "\n",  # a trailing newline must not slip through
        "sha256 :" + "a" * 64,
        "sha256::" + "a" * 64,
        "-sha256:" + "a" * 64,
        "sha256+:" + "a" * 64,
        None,
        42,
    ],
)
def test_invalid(value):
    assert not digest.is_valid(value)
    with pytest.raises(InvalidDigest):
        digest.parse(value)


def test_unknown_algorithm_is_grammatical_but_unsupported():
    value = "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8"
    assert GRAMMAR.fullmatch(value)
    with pytest.raises(UnsupportedDigestAlgorithm) as e:
        digest.parse(value)
    assert "multihash+base58" in str(e.value)
    assert e.value.hint


@given(st.from_regex(r"\A(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})\Z"))
def test_registered_digests_parse(value):
    assert digest.is_valid(value)


@given(st.text(max_size=140))
def test_parse_agrees_with_grammar(value):
    """Anything parse accepts is in the grammar, registered, and of the exact form."""
    if digest.is_valid(value):
        assert GRAMMAR.fullmatch(value)
        alg, enc = value.split(":", 1)
        assert alg in ("sha256", "sha512")
        assert re.fullmatch(r"[a-f0-9]+", enc)
        assert len(enc) == {"sha256": 64, "sha512": 128}[alg]


@given(st.sampled_from(["sha256", "sha512"]), st.data())
def test_upper_case_rejected(alg, data):
    n = {"sha256": 64, "sha512": 128}[alg]
    enc = data.draw(st.from_regex(rf"\A[a-f0-9]{{{n}}}\Z"))
    if enc.upper() != enc:
        assert not digest.is_valid(f"{alg}:{enc.upper()}")


def test_of_bytes_and_file():
    assert digest.of_bytes(HELLO) == HELLO_256
    assert digest.of_bytes(HELLO, "sha512") == HELLO_512
    assert digest.of_file(io.BytesIO(HELLO)) == (HELLO_256, 5)
    assert digest.of_file(io.BytesIO(HELLO), "sha512") == (HELLO_512, 5)
    with pytest.raises(UnsupportedDigestAlgorithm):
        digest.hasher("md5")


def test_verify_bytes():
    digest.verify_bytes(HELLO, HELLO_256, size=5)
    digest.verify_bytes(HELLO, HELLO_512)
    with pytest.raises(SizeMismatch, match="expected 4 bytes, got 5"):
        digest.verify_bytes(HELLO, HELLO_256, size=4)
    with pytest.raises(DigestMismatch) as e:
        digest.verify_bytes(b"hellO", HELLO_256, what="blob x")
    assert e.value.expected == HELLO_256
    assert str(e.value).startswith("blob x: digest mismatch")


def _read_all(reader: digest.VerifyingReader, chunk: int = 2) -> bytes:
    out = b""
    while data := reader.read(chunk):
        out += data
    return out


def test_verifying_reader_exact():
    r = digest.VerifyingReader(io.BytesIO(HELLO), HELLO_256, 5)
    assert _read_all(r) == HELLO
    r.verify()
    assert r.read_bytes == 5


def test_verifying_reader_without_size():
    r = digest.VerifyingReader(io.BytesIO(HELLO), HELLO_512, None)
    r.drain()
    r.verify()


def test_verifying_reader_short_input():
    r = digest.VerifyingReader(io.BytesIO(HELLO[:3]), HELLO_256, 5)
    _read_all(r)
    with pytest.raises(SizeMismatch, match="expected 5 bytes, got 3"):
        r.verify()


def test_verifying_reader_long_input_fails_while_reading():
    r = digest.VerifyingReader(io.BytesIO(HELLO + b" world"), HELLO_256, 5, what="layer")
    with pytest.raises(SizeMismatch, match="layer: size mismatch"):
        _read_all(r)


def test_verifying_reader_mismatch():
    r = digest.VerifyingReader(io.BytesIO(b"HELLO"), HELLO_256, 5)
    r.drain()
    with pytest.raises(DigestMismatch):
        r.verify()


def test_verifying_reader_readinto_and_bad_digest():
    r = digest.VerifyingReader(io.BytesIO(HELLO), HELLO_256, 5)
    buf = bytearray(8)
    assert r.readinto(buf) == 5
    assert bytes(buf[:5]) == HELLO
    r.verify()
    with pytest.raises(InvalidDigest):
        digest.VerifyingReader(io.BytesIO(HELLO), "sha256:nothex", 5)

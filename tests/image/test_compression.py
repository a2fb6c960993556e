"""Streaming layer compression: round trips, magic checks, damaged streams."""

from __future__ import annotations

import gzip
import io
import os

import pytest

from ocibox.errors import LayerError, UsageError
from ocibox.image import compression

DATA = os.urandom(200_000) + b"layer " * 500_000  # incompressible and compressible parts


def compress(data: bytes, kind: str, level: int | None = None) -> bytes:
    out = io.BytesIO()
    w = compression.open_writer(out, kind, level)
    w.write(data)
    w.close()
    assert not out.closed, "closing the writer must leave the caller's stream open"
    return out.getvalue()


def read_all(raw: bytes, kind: str) -> bytes:
    r = compression.open_reader(io.BytesIO(raw), kind)
    parts = []
    while chunk := r.read(65536):
        parts.append(chunk)
    return b"".join(parts)


def test_detect():
    assert compression.detect(b"\x1f\x8b\x08\x00") == "gzip"
    assert compression.detect(b"\x28\xb5\x2f\xfd") == "zstd"
    assert compression.detect(b"etc/") == "none"
    assert compression.detect(b"") == "none"


@pytest.mark.parametrize("kind", ["none", "gzip", "zstd"])
def test_round_trip(kind):
    raw = compress(DATA, kind)
    assert compression.detect(raw[:4]) == kind
    assert read_all(raw, kind) == DATA


@pytest.mark.parametrize("kind,level", [("gzip", 1), ("gzip", 3), ("gzip", 9), ("zstd", 1), ("zstd", 19)])
def test_levels(kind, level):
    assert read_all(compress(DATA[:300_000], kind, level), kind) == DATA[:300_000]


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_output_is_reproducible(kind):
    assert compress(DATA, kind) == compress(DATA, kind)


def test_gzip_header_has_no_name_and_no_mtime():
    class Named(io.BytesIO):
        name = "/tmp/some-layer.tar.gz"

    out = Named()
    w = compression.open_writer(out, "gzip")
    w.write(b"x")
    w.close()
    header = out.getvalue()[:10]
    assert header[3] & 0x08 == 0, "FNAME flag set"
    assert header[4:8] == b"\0\0\0\0", "mtime not zero"


def test_gzip_from_other_tools_reads():
    raw = gzip.compress(DATA, mtime=123)
    assert read_all(raw, "gzip") == DATA


def test_multi_member_gzip_and_multi_frame_zstd():
    assert read_all(compress(b"a" * 10, "gzip") + compress(b"b" * 10, "gzip"), "gzip") == b"a" * 10 + b"b" * 10
    assert read_all(compress(b"a" * 10, "zstd") + compress(b"b" * 10, "zstd"), "zstd") == b"a" * 10 + b"b" * 10


@pytest.mark.parametrize(
    "declared,actual",
    [("gzip", "zstd"), ("gzip", "none"), ("zstd", "gzip"), ("zstd", "none"), ("none", "gzip"), ("none", "zstd")],
)
def test_magic_contradicting_media_type(declared, actual):
    raw = compress(b"x" * 2048, actual)
    with pytest.raises(LayerError, match=declared + "-compressed|uncompressed"):
        compression.open_reader(io.BytesIO(raw), declared)


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_truncated_stream(kind, keep):
    raw = compress(DATA, kind)
    with pytest.raises(LayerError, match="truncated"):
        read_all(raw[: int(len(raw) * keep)], kind)


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_cut_after_magic(kind):
    with pytest.raises(LayerError):
        read_all(compress(DATA, kind)[:6], kind)


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_corrupt_stream(kind):
    raw = bytearray(compress(DATA, kind))
    for i in range(len(raw) // 2, len(raw) // 2 + 64):
        raw[i] ^= 0x5A
    with pytest.raises(LayerError):
        read_all(bytes(raw), kind)


def test_empty_stream_declared_gzip():
    with pytest.raises(LayerError):
        compression.open_reader(io.BytesIO(b""), "gzip")


def test_unknown_compression():
    with pytest.raises(UsageError):
        compression.open_reader(io.BytesIO(b""), "bzip2")
    with pytest.raises(UsageError):
        compression.open_writer(io.BytesIO(), "lz4")


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_reader_streams_without_reading_everything(kind):
    member = compress(DATA, kind)

    class Endless(io.RawIOBase):
        """An endless multi-member stream: a reader that slurps never returns."""

        consumed = 0

        def readable(self):
            return True

        def readinto(self, buf):
            n = min(len(buf), len(member))
            offset = self.consumed % len(member)
            n = min(n, len(member) - offset)
            buf[:n] = member[offset : offset + n]
            self.consumed += n
            return n

    src = Endless()
    r = compression.open_reader(src, kind)
    assert r.read(1000) == DATA[:1000]
    assert src.consumed < 32 << 20  # bounded read-ahead

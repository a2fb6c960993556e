"""Digests as the image specification defines them.

    digest    ::= algorithm ":" encoded
    algorithm ::= algorithm-component (algorithm-separator algorithm-component)*
    algorithm-component ::= [a-z0-9]+
    algorithm-separator ::= [+._-]
    encoded   ::= [a-zA-Z0-9=_-]+

Registered algorithms (sha256, sha512) must use lower-case hex of the exact length.
"""

from __future__ import annotations

import hashlib
import re
from typing import BinaryIO

from .errors import DigestMismatch, InvalidDigest, SizeMismatch, UnsupportedDigestAlgorithm

_GRAMMAR = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_LENGTH = {"sha256": 64, "sha512": 128}
_HEX = {"sha256": re.compile(r"^[a-f0-9]{64}$"), "sha512": re.compile(r"^[a-f0-9]{128}$")}

CANONICAL = "sha256"
CHUNK = 1 << 20


def parse(digest: str) -> tuple[str, str]:
    """Split a digest into (algorithm, encoded), checking grammar and algorithm."""
    if not isinstance(digest, str) or not _GRAMMAR.fullmatch(digest):
        raise InvalidDigest(f"invalid digest {digest!r}: expected algorithm:hex")
    algorithm, encoded = digest.split(":", 1)
    pattern = _HEX.get(algorithm)
    if pattern is None:
        raise UnsupportedDigestAlgorithm(
            f"unsupported digest algorithm {algorithm!r} in {digest!r}",
            hint="ocibox supports sha256 and sha512",
        )
    if not pattern.fullmatch(encoded):
        raise InvalidDigest(
            f"invalid digest {digest!r}: {algorithm} needs {_LENGTH[algorithm]} lower-case hex digits"
        )
    return algorithm, encoded


def validate(digest: str) -> str:
    parse(digest)
    return digest


def is_valid(digest: str) -> bool:
    try:
        parse(digest)
    except InvalidDigest:
        return False
    return True


def hasher(algorithm: str = CANONICAL):
    if algorithm not in _HEX:
        raise UnsupportedDigestAlgorithm(f"unsupported digest algorithm {algorithm!r}")
    return hashlib.new(algorithm)


def of_bytes(data: bytes, algorithm: str = CANONICAL) -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def of_file(fileobj: BinaryIO, algorithm: str = CANONICAL) -> tuple[str, int]:
    """Hash a stream to its end; returns (digest, size)."""
    h = hasher(algorithm)
    size = 0
    while chunk := fileobj.read(CHUNK):
        h.update(chunk)
        size += len(chunk)
    return f"{algorithm}:{h.hexdigest()}", size


def verify_bytes(data: bytes, expected: str, *, size: int | None = None, what: str = "content") -> None:
    algorithm, _ = parse(expected)
    if size is not None and len(data) != size:
        raise SizeMismatch(what, size, len(data))
    actual = of_bytes(data, algorithm)
    if actual != expected:
        raise DigestMismatch(what, expected, actual)


class VerifyingReader:
    """A file-like reader that hashes what passes through it.

    ``verify()`` (called by the consumer once it has read to the end) checks the
    digest and the size; reading past the expected size fails at once, so a
    lying source cannot make us consume unbounded data.
    """

    def __init__(self, raw: BinaryIO, expected: str, size: int | None, what: str = "blob") -> None:
        algorithm, _ = parse(expected)
        self._raw = raw
        self._hash = hashlib.new(algorithm)
        self._algorithm = algorithm
        self.expected = expected
        self.size = size
        self.read_bytes = 0
        self.what = what

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        if data:
            self._hash.update(data)
            self.read_bytes += len(data)
            if self.size is not None and self.read_bytes > self.size:
                raise SizeMismatch(self.what, self.size, self.read_bytes)
        return data

    def readinto(self, buf) -> int:  # used by io.BufferedReader wrappers
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    def verify(self) -> None:
        if self.size is not None and self.read_bytes != self.size:
            raise SizeMismatch(self.what, self.size, self.read_bytes)
        actual = f"{self._algorithm}:{self._hash.hexdigest()}"
        if actual != self.expected:
            raise DigestMismatch(self.what, self.expected, actual)

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> VerifyingReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class HashingSink:
    """A file-like sink that hashes and counts what goes through it to ``file``.

    Compressors close the sink they write into when they finish, so ``close``
    does nothing here: whoever made the sink closes (or publishes) the file.
    """

    def __init__(self, file: BinaryIO, algorithm: str = CANONICAL) -> None:
        self._file = file
        self._algorithm = algorithm
        self._hash = hasher(algorithm)
        self.size = 0

    def write(self, data) -> int:
        self._hash.update(data)
        self.size += len(data)
        return self._file.write(data)

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        pass

    def close(self) -> None:
        """Ignored (see the class): the owner finishes the file."""

    @property
    def digest(self) -> str:
        return f"{self._algorithm}:{self._hash.hexdigest()}"

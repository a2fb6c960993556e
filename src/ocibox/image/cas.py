"""Content-addressed blob storage: the ``blobs/<alg>/<encoded>`` tree of a layout.

This layer stores and verifies bytes; it knows nothing of manifests. Every
blob is written to a temporary file in its final directory while being hashed,
checked against the expected digest and size, flushed, and only then renamed
into place, so a reader never sees half a blob and a crash leaves at most a
stray ``.tmp-*`` file that ``gc`` removes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

from .. import digest as _digest
from .._fs import fsync_dir
from ..errors import BlobNotFound, DigestMismatch, SizeMismatch

TMP_PREFIX = ".tmp-"


class BlobWriter(_digest.HashingSink):
    """A writable sink for one blob; ``commit`` verifies and publishes it."""

    def __init__(self, store: BlobStore, algorithm: str = _digest.CANONICAL) -> None:
        self._store = store
        directory = os.path.join(store.root, algorithm)
        os.makedirs(directory, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(dir=directory, prefix=TMP_PREFIX)
        super().__init__(os.fdopen(fd, "wb", buffering=0), algorithm)
        self._done = False

    def commit(self, expected: str | None = None, size: int | None = None, *,
               what: str = "blob", durable: bool = True) -> tuple[str, int]:
        actual = self.digest
        try:
            if size is not None and size != self.size:
                raise SizeMismatch(what, size, self.size)
            if expected is not None and expected != actual:
                raise DigestMismatch(what, expected, actual)
            if durable:
                os.fsync(self._file.fileno())
            self._file.close()
            os.chmod(self._tmp, 0o644)
            final = self._store.path(actual)
            os.replace(self._tmp, final)
            if durable:
                fsync_dir(os.path.dirname(final))
        except BaseException:
            self.abort()
            raise
        self._done = True
        return actual, self.size

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self._file.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)


class BlobStore:
    def __init__(self, root: str) -> None:
        self.root = root

    def path(self, digest: str) -> str:
        algorithm, encoded = _digest.parse(digest)
        return os.path.join(self.root, algorithm, encoded)

    def has(self, digest: str) -> bool:
        return os.path.isfile(self.path(digest))

    def size(self, digest: str) -> int:
        try:
            return os.stat(self.path(digest)).st_size
        except FileNotFoundError:
            raise BlobNotFound(f"blob {digest} not found in {self.root}") from None

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self.path(digest), "rb")
        except FileNotFoundError:
            raise BlobNotFound(f"blob {digest} not found in {self.root}") from None

    def open_verified(self, digest: str, size: int | None = None, what: str | None = None):
        """A reader that checks digest and size once drained (``verify()``)."""
        return _digest.VerifyingReader(self.open(digest), digest, size, what or f"blob {digest}")

    def read(self, digest: str, size: int | None = None, *, what: str | None = None) -> bytes:
        """Read a whole (small) blob and verify it: for manifests and configs."""
        with self.open(digest) as f:
            data = f.read() if size is None else f.read(size + 1)
        _digest.verify_bytes(data, digest, size=size, what=what or f"blob {digest}")
        return data

    @contextlib.contextmanager
    def writer(self, algorithm: str = _digest.CANONICAL) -> Iterator[BlobWriter]:
        """Yield a BlobWriter; anything not committed when the block ends is discarded."""
        w = BlobWriter(self, algorithm)
        try:
            yield w
        finally:
            w.abort()

    def put(self, data: bytes, expected: str | None = None, *, what: str = "blob") -> tuple[str, int]:
        algorithm = _digest.parse(expected)[0] if expected else _digest.CANONICAL
        digest = f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
        if expected is not None and digest != expected:
            raise DigestMismatch(what, expected, digest)
        if self.has(digest):
            return digest, len(data)
        with self.writer(algorithm) as w:
            w.write(data)
            return w.commit(digest, len(data), what=what)

    def put_stream(self, src: BinaryIO, expected: str | None = None, size: int | None = None,
                   *, what: str = "blob") -> tuple[str, int]:
        algorithm = _digest.parse(expected)[0] if expected else _digest.CANONICAL
        with self.writer(algorithm) as w:
            while chunk := src.read(_digest.CHUNK):
                w.write(chunk)
                if size is not None and w.size > size:
                    raise SizeMismatch(what, size, w.size)
            return w.commit(expected, size, what=what)

    def delete(self, digest: str) -> bool:
        try:
            os.unlink(self.path(digest))
        except FileNotFoundError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        """Digests of every complete blob (temporary files are skipped)."""
        try:
            algorithms = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return
        for algorithm in algorithms:
            directory = os.path.join(self.root, algorithm)
            if not os.path.isdir(directory):
                continue
            for name in sorted(os.listdir(directory)):
                candidate = f"{algorithm}:{name}"
                if not name.startswith(TMP_PREFIX) and _digest.is_valid(candidate):
                    yield candidate

    def temporaries(self) -> Iterator[str]:
        """Paths of leftover temporary files from interrupted writes."""
        for algorithm in os.listdir(self.root) if os.path.isdir(self.root) else ():
            directory = os.path.join(self.root, algorithm)
            if os.path.isdir(directory):
                for name in os.listdir(directory):
                    if name.startswith(TMP_PREFIX):
                        yield os.path.join(directory, name)

"""Blob upload sessions: data on disk, hash state in memory.

An upload is a data file under the repository's ``_uploads/<uuid>/``. Bytes
are hashed as they are appended. hashlib objects cannot be pickled, so the
hash state lives only in this process; after a restart (or whenever the file
on disk and the state disagree) the partial file is hashed again, which makes
every upload resumable across restarts. Finishing verifies digest and size,
makes the data durable and renames it into the global blob store: a blob
appears whole or not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import time
import uuid as _uuid
from dataclasses import dataclass, field

from .. import digest as _digest
from . import errors as E
from .storage.base import Appender, PathNotFound
from .store import RegistryStore, blob_path

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
STREAM_ALGORITHM = "sha256"


@dataclass(eq=False)
class Upload:
    name: str
    uuid: str
    hash: hashlib._Hash | None = None
    hashed: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    touched: float = field(default_factory=time.monotonic)


class Uploads:
    def __init__(self, store: RegistryStore, *, max_cached: int = 4096) -> None:
        self.store = store
        self.driver = store.driver
        self._open: dict[tuple[str, str], Upload] = {}
        self._max_cached = max_cached

    def path(self, upload: Upload) -> str:
        return self.store.upload_data(upload.name, upload.uuid)

    def start(self, name: str) -> Upload:
        upload = Upload(name, str(_uuid.uuid4()), hashlib.new(STREAM_ALGORITHM), 0)
        self.driver.appender(self.path(upload)).close()
        self._remember(upload)
        return upload

    def get(self, name: str, uuid: str) -> Upload:
        if not UUID.fullmatch(uuid or ""):
            raise E.upload_unknown(uuid)
        upload = self._open.get((name, uuid))
        if not self.store.upload_exists(name, uuid):
            self._open.pop((name, uuid), None)
            raise E.upload_unknown(uuid)
        if upload is None:
            upload = Upload(name, uuid)  # hash state is rebuilt on first write
            self._remember(upload)
        upload.touched = time.monotonic()
        return upload

    def size(self, upload: Upload) -> int:
        info = self.driver.stat(self.path(upload))
        if info is None:
            raise E.upload_unknown(upload.uuid)
        return info.size

    def _remember(self, upload: Upload) -> None:
        if len(self._open) >= self._max_cached:
            # forget the least recently used idle session; its state can be rebuilt
            idle = [u for u in self._open.values() if not u.lock.locked()]
            if idle:
                oldest = min(idle, key=lambda u: u.touched)
                self._open.pop((oldest.name, oldest.uuid), None)
        self._open[(upload.name, upload.uuid)] = upload

    # --- writing (called with upload.lock held) ------------------------------

    def writer(self, upload: Upload) -> Appender:
        """Open the data file for appending, with the hash state matching it.

        May re-hash the whole partial file: run it off the event loop.
        """
        if not self.store.upload_exists(upload.name, upload.uuid):
            raise E.upload_unknown(upload.uuid)  # finished or cancelled while we waited
        appender = self.driver.appender(self.path(upload))
        if upload.hash is None or upload.hashed != appender.size:
            upload.hash, upload.hashed = self._rehash(upload, STREAM_ALGORITHM, appender.size)
        return appender

    def _rehash(self, upload: Upload, algorithm: str, size: int) -> tuple[hashlib._Hash, int]:
        h = hashlib.new(algorithm)
        done = 0
        with self.driver.reader(self.path(upload)) as f:
            while done < size and (chunk := f.read(min(_digest.CHUNK, size - done))):
                h.update(chunk)
                done += len(chunk)
        return h, done

    @staticmethod
    def append(upload: Upload, appender: Appender, data: bytes) -> None:
        appender.write(data)
        upload.hash.update(data)
        upload.hashed += len(data)

    @staticmethod
    def mark(upload: Upload, appender: Appender) -> tuple[int, hashlib._Hash]:
        return appender.size, upload.hash.copy()

    @staticmethod
    def rollback(upload: Upload, appender: Appender, mark: tuple[int, hashlib._Hash]) -> None:
        size, h = mark
        appender.truncate(size)
        upload.hash, upload.hashed = h, size

    def finish(self, upload: Upload, appender: Appender, expected: str) -> int:
        """Verify and publish the upload as blob ``expected``, link it; returns its size.

        Blocking (fsync, rename): run it off the event loop.
        """
        algorithm, _ = _digest.parse(expected)
        size = appender.size
        if algorithm == STREAM_ALGORITHM and upload.hashed == size:
            actual = f"{algorithm}:{upload.hash.hexdigest()}"
        else:
            actual = f"{algorithm}:{self._rehash(upload, algorithm, size)[0].hexdigest()}"
        if actual != expected:
            raise E.ApiError("DIGEST_INVALID", "provided digest did not match uploaded content",
                             detail={"expected": expected, "actual": actual})
        if self.store.blob_size(expected) is None:
            appender.sync()
            self.driver.move(self.path(upload), blob_path(expected))
        # the data may have been written long ago: its age must not make gc take it now
        self.store.refresh_blob(expected)
        self.store.link_blob(upload.name, expected)
        self.cancel(upload)
        return size

    def cancel(self, upload: Upload) -> None:
        self._open.pop((upload.name, upload.uuid), None)
        with contextlib.suppress(PathNotFound):
            self.driver.delete(f"{self.store.uploads_dir(upload.name)}/{upload.uuid}")

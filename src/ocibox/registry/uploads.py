"""Blob upload sessions: data on disk, hash state in memory.

An upload is a data file under the repository's ``_uploads/<uuid>/``. Bytes
are hashed as they are appended. hashlib objects cannot be pickled, so the
hash state lives only in this process; after a restart (or whenever the file
on disk and the state disagree) the partial file is hashed again, which makes
every upload resumable across restarts. Finishing verifies digest and size,
makes the data durable and renames it into the global blob store: a blob
appears whole or not at all.

Several processes may serve one upload in turns (a chunk to one replica, the
next to another). A request that writes holds an flock on the data file
(``hold``), so writes to one upload never interleave, in one process or
across several. Under that lock the bytes before the current size never
change (data is only appended; a failed chunk is cut back to where it began),
so a remembered hash state is still right exactly when its byte count equals
the file's size, and it is re-hashed from the file otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import re
import time
import uuid as _uuid
from dataclasses import dataclass, field

from .. import digest as _digest
from . import errors as E
from .storage.base import Appender, PathNotFound
from .store import RegistryStore, blob_path

HOLD_TIMEOUT = 30.0  # seconds a request waits for another one writing the same upload


def try_flock(full: str) -> int | None:
    """An exclusive flock on an existing file: its fd, or None if another holder has it.

    FileNotFoundError when the file is gone (the upload was finished or cancelled).
    """
    fd = os.open(full, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


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

    @contextlib.asynccontextmanager
    async def hold(self, upload: Upload):
        """Be the only writer of the upload, in this process and in every other one."""
        async with upload.lock:
            full = self.driver.local_path(self.path(upload))
            if full is None:  # a driver no other process can share
                yield
                return
            loop = asyncio.get_running_loop()
            deadline, delay = loop.time() + HOLD_TIMEOUT, 0.002
            while True:
                try:
                    fd = try_flock(full)
                except FileNotFoundError:
                    raise E.upload_unknown(upload.uuid) from None
                if fd is not None:
                    break
                if loop.time() > deadline:
                    raise E.ApiError("BLOB_UPLOAD_INVALID", "another request is writing this upload",
                                     detail={"uuid": upload.uuid})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)
            try:
                yield
            finally:
                os.close(fd)

    # --- writing (called within hold) -----------------------------------------

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
        with self.store.gc_lock(shared=True):
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

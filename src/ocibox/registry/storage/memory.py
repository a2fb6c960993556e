"""An in-memory driver: for tests, and the proof that handlers need no filesystem.

Nothing survives the process; blobs are served by streaming (there is no
local path for sendfile).
"""

from __future__ import annotations

import io
import threading
import time
from typing import BinaryIO

from .base import Appender, FileInfo, PathNotFound, StorageDriver


def _norm(path: str) -> str:
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ValueError(f"storage path {path!r} leaves the root")
    return "/".join(parts)


class _MemoryAppender(Appender):
    def __init__(self, driver: MemoryDriver, path: str) -> None:
        self._driver, self._path = driver, path
        with driver._lock:
            driver._files.setdefault(path, (bytearray(), time.time()))
            self.size = len(driver._files[path][0])

    def _buffer(self) -> bytearray:
        try:
            return self._driver._files[self._path][0]
        except KeyError:
            raise PathNotFound(self._path) from None

    def write(self, data: bytes) -> None:
        with self._driver._lock:
            buf = self._buffer()
            buf += data
            self._driver._files[self._path] = (buf, time.time())
            self.size = len(buf)

    def truncate(self, size: int) -> None:
        with self._driver._lock:
            del self._buffer()[size:]
            self.size = size

    def sync(self) -> None:
        pass

    def close(self) -> None:
        pass


class MemoryDriver(StorageDriver):
    def __init__(self) -> None:
        self._files: dict[str, tuple[bytearray, float]] = {}
        self._lock = threading.Lock()

    def get_content(self, path: str, limit: int | None = None) -> bytes:
        try:
            data = self._files[_norm(path)][0]
        except KeyError:
            raise PathNotFound(path) from None
        return bytes(data if limit is None else data[:limit])

    def put_content(self, path: str, data: bytes) -> None:
        with self._lock:
            self._files[_norm(path)] = (bytearray(data), time.time())

    def stat(self, path: str) -> FileInfo | None:
        key = _norm(path)
        entry = self._files.get(key)
        if entry is not None:
            return FileInfo(path, len(entry[0]), entry[1], False)
        prefix = key + "/"
        mtimes = [m for k, (_, m) in list(self._files.items()) if k.startswith(prefix)]
        return FileInfo(path, 0, max(mtimes), True) if mtimes else None

    def list(self, path: str) -> list[str]:
        prefix = _norm(path) + "/" if _norm(path) else ""
        return sorted({k[len(prefix):].split("/", 1)[0] for k in list(self._files) if k.startswith(prefix)})

    def delete(self, path: str) -> bool:
        key = _norm(path)
        with self._lock:
            doomed = [k for k in self._files if k == key or k.startswith(key + "/")]
            for k in doomed:
                del self._files[k]
        return bool(doomed)

    def move(self, src: str, dst: str) -> None:
        with self._lock:
            try:
                self._files[_norm(dst)] = self._files.pop(_norm(src))
            except KeyError:
                raise PathNotFound(src) from None

    def reader(self, path: str, offset: int = 0) -> BinaryIO:
        f = io.BytesIO(self.get_content(path))
        f.seek(offset)
        return f

    def appender(self, path: str) -> Appender:
        return _MemoryAppender(self, _norm(path))

    def touch(self, path: str) -> None:
        with self._lock:
            key = _norm(path)
            if key not in self._files:
                raise PathNotFound(path)
            self._files[key] = (self._files[key][0], time.time())

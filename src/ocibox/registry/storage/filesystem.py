"""The filesystem driver: one directory tree, crash-safe by temp files and renames."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat as _stat
from typing import BinaryIO

from ..._fs import atomic_write, fsync_dir
from .base import Appender, FileInfo, PathNotFound, StorageDriver


class _FileAppender(Appender):
    def __init__(self, full: str) -> None:
        fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self._fd = fd
        self.size = os.fstat(fd).st_size

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            self.size += n
            view = view[n:]

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)
        self.size = size

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class FilesystemDriver(StorageDriver):
    def __init__(self, root: str, *, durable: bool = True) -> None:
        self.root = os.path.abspath(root)
        self.durable = durable
        os.makedirs(self.root, exist_ok=True)

    def _full(self, path: str) -> str:
        parts = [p for p in path.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise ValueError(f"storage path {path!r} leaves the root")
        return os.path.join(self.root, *parts)

    def get_content(self, path: str, limit: int | None = None) -> bytes:
        try:
            with open(self._full(path), "rb") as f:
                return f.read() if limit is None else f.read(limit)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise PathNotFound(path) from None

    def put_content(self, path: str, data: bytes) -> None:
        full = self._full(path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        atomic_write(full, data, durable=self.durable)

    def stat(self, path: str) -> FileInfo | None:
        try:
            st = os.stat(self._full(path))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return FileInfo(path, st.st_size, st.st_mtime, _stat.S_ISDIR(st.st_mode))

    def list(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(self._full(path)))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def delete(self, path: str) -> bool:
        full = self._full(path)
        try:
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full)
            else:
                os.unlink(full)
        except FileNotFoundError:
            return False
        return True

    def move(self, src: str, dst: str) -> None:
        full_src, full_dst = self._full(src), self._full(dst)
        os.makedirs(os.path.dirname(full_dst), exist_ok=True)
        os.replace(full_src, full_dst)
        if self.durable:
            fsync_dir(os.path.dirname(full_dst))

    def reader(self, path: str, offset: int = 0) -> BinaryIO:
        try:
            f = open(self._full(path), "rb")
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFound(path) from None
        if offset:
            f.seek(offset)
        return f

    def appender(self, path: str) -> Appender:
        full = self._full(path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        return _FileAppender(full)

    def touch(self, path: str) -> None:
        try:
            os.utime(self._full(path))
        except (FileNotFoundError, NotADirectoryError):
            raise PathNotFound(path) from None

    def local_path(self, path: str) -> str | None:
        return self._full(path)

    def remove_empty_dirs(self, path: str) -> None:
        """Prune empty directories under ``path`` (after gc), keeping ``path``."""
        top = self._full(path)
        for dirpath, _dirs, _files in os.walk(top, topdown=False):
            if dirpath != top:
                with contextlib.suppress(OSError):
                    os.rmdir(dirpath)

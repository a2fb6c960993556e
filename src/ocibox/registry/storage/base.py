"""The storage driver interface: bytes and paths, nothing about images.

Paths are ``/``-separated and relative to the driver's root; the registry
builds them only from checked names, tags and digests. A driver knows how to
store small files atomically, stream large ones, move a finished upload into
place atomically, and list and delete; what the files mean is up to
``ocibox.registry.store``. A new backend (object storage, memory) is a new
subclass, not a change to the handlers.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO


class PathNotFound(FileNotFoundError):
    """The driver has nothing at this path."""


@dataclass(frozen=True)
class FileInfo:
    path: str
    size: int
    mtime: float
    is_dir: bool


class Appender(abc.ABC):
    """An open file that grows at its end: the data file of an upload."""

    size: int

    @abc.abstractmethod
    def write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    def truncate(self, size: int) -> None:
        """Drop everything after ``size`` bytes (undoing a failed chunk)."""

    @abc.abstractmethod
    def sync(self) -> None:
        """Make what was written durable."""

    @abc.abstractmethod
    def close(self) -> None: ...


class StorageDriver(abc.ABC):
    @abc.abstractmethod
    def get_content(self, path: str, limit: int | None = None) -> bytes:
        """The whole (small) file; raises PathNotFound."""

    @abc.abstractmethod
    def put_content(self, path: str, data: bytes) -> None:
        """Replace the file atomically: readers see the old or the new bytes."""

    @abc.abstractmethod
    def stat(self, path: str) -> FileInfo | None: ...

    @abc.abstractmethod
    def list(self, path: str) -> list[str]:
        """Names of the direct children of a directory; empty when it is missing."""

    @abc.abstractmethod
    def delete(self, path: str) -> bool:
        """Remove a file or a directory tree; False when nothing was there."""

    @abc.abstractmethod
    def move(self, src: str, dst: str) -> None:
        """Atomically move a finished file into place, replacing ``dst``."""

    @abc.abstractmethod
    def reader(self, path: str, offset: int = 0) -> BinaryIO: ...

    @abc.abstractmethod
    def appender(self, path: str) -> Appender:
        """Open ``path`` (created if missing) for appending."""

    @abc.abstractmethod
    def touch(self, path: str) -> None:
        """Set the modification time to now (gc's grace period counts from it)."""

    def local_path(self, path: str) -> str | None:
        """A filesystem path that can be served with sendfile, if the driver has one."""
        return None

    def walk_files(self, path: str) -> Iterator[FileInfo]:
        """Every file under ``path``, depth first."""
        for name in self.list(path):
            child = f"{path}/{name}" if path else name
            info = self.stat(child)
            if info is None:
                continue
            if info.is_dir:
                yield from self.walk_files(child)
            else:
                yield info

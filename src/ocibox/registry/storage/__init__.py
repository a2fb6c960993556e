"""Storage drivers for the registry: the interface and the filesystem driver."""

from .base import Appender, FileInfo, PathNotFound, StorageDriver
from .filesystem import FilesystemDriver
from .memory import MemoryDriver

__all__ = ["Appender", "FileInfo", "FilesystemDriver", "MemoryDriver", "PathNotFound", "StorageDriver"]

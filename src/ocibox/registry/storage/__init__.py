"""Storage drivers for the registry: the interface and the filesystem driver."""

from .base import Appender, FileInfo, PathNotFound, StorageDriver
from .filesystem import FilesystemDriver

__all__ = ["Appender", "FileInfo", "FilesystemDriver", "PathNotFound", "StorageDriver"]

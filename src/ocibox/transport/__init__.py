"""Moving images between places: registries, layouts, archives, directories.

Names are imported on first use, so that ``ocibox inspect`` does not pay for the
copy machinery."""

from __future__ import annotations

import importlib
import sys
import types

__all__ = ["CopyOptions", "CopyResult", "Location", "copy", "copy_async", "parse_location"]

_HOME = {"CopyOptions": "copy", "CopyResult": "copy", "copy_async": "copy",
         "Location": "locations", "parse_location": "locations"}


def __getattr__(name: str):
    if name in _HOME:
        return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Package(types.ModuleType):
    """``ocibox.transport.copy`` is the function, as when this package imported it
    eagerly, even after the import system binds the submodule of that name here."""

    @property
    def copy(self):
        return importlib.import_module(".copy", __name__).copy

    @copy.setter
    def copy(self, value) -> None:
        pass


sys.modules[__name__].__class__ = _Package

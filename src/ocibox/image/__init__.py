"""The OCI Image Format: layouts, manifests, indexes, configs, layers, bundles.

The public API, importable from here; each name is loaded on first use so that
``import ocibox.image`` stays cheap for the command line::

    from ocibox.image import Layout, unpack, repack
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "Layout": "layout", "Image": "layout",
    "BlobStore": "cas",
    "Descriptor": "models", "Manifest": "models", "Index": "models",
    "ImageConfig": "models", "Platform": "models",
    "new_image": "mutate", "import_rootfs": "mutate", "edit_config": "mutate",
    "ConfigEdit": "mutate", "describe": "mutate",
    "unpack": "bundle", "repack": "bundle",
    "check_layout": "check",
    "to_runtime_config": "convert",
}

__all__ = [
    "BlobStore",
    "ConfigEdit",
    "Descriptor",
    "Image",
    "ImageConfig",
    "Index",
    "Layout",
    "Manifest",
    "Platform",
    "check_layout",
    "describe",
    "edit_config",
    "import_rootfs",
    "new_image",
    "repack",
    "to_runtime_config",
    "unpack",
]

if TYPE_CHECKING:  # pragma: no cover
    from .bundle import repack, unpack
    from .cas import BlobStore
    from .check import check_layout
    from .convert import to_runtime_config
    from .layout import Image, Layout
    from .models import Descriptor, ImageConfig, Index, Manifest, Platform
    from .mutate import ConfigEdit, describe, edit_config, import_rootfs, new_image


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ocibox.image' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value

"""The client side of the OCI Distribution Specification: references, auth, registry client.

Names are imported on first use, so that ``ocibox.distribution.reference`` does
not pull in the HTTP client.
"""

from __future__ import annotations

import importlib

__all__ = ["AuthError", "Credentials", "Fetched", "InvalidReference", "Options", "Reference",
           "Registry", "RegistryError", "TLSError"]

_HOME = {
    "AuthError": "auth", "Credentials": "auth",
    "Fetched": "options", "Options": "options",
    "Registry": "client", "RegistryError": "client", "TLSError": "client",
    "InvalidReference": "reference", "Reference": "reference",
}


def __getattr__(name: str):
    if name in _HOME:
        return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

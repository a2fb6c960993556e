"""Per-registry settings from containers-registries.conf: which registries are insecure.

Read from ``$CONTAINERS_REGISTRIES_CONF``, else ``~/.config/containers/registries.conf``
and ``/etc/containers/registries.conf`` (the first that exists), in either format::

    [[registry]]                 # v2
    location = "registry.lan:5000"
    insecure = true

    [registries.insecure]        # v1
    registries = ["registry.lan:5000"]

An insecure registry is reached without verifying TLS, and over plain HTTP when
HTTPS fails, as if ``--tls-verify=false`` had been given for it.
"""

from __future__ import annotations

import functools
import os

from ..errors import UsageError


def _path() -> str | None:
    if os.environ.get("CONTAINERS_REGISTRIES_CONF"):
        return os.environ["CONTAINERS_REGISTRIES_CONF"]
    for p in (os.path.expanduser("~/.config/containers/registries.conf"), "/etc/containers/registries.conf"):
        if os.path.exists(p):
            return p
    return None


@functools.cache
def _insecure(path: str | None) -> frozenset[str]:
    if path is None:
        return frozenset()
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return frozenset()
    except OSError as e:
        raise UsageError(f"{path}: unreadable registries.conf: {e}") from None
    if not any(b"insecure" in line for line in data.splitlines() if not line.lstrip().startswith(b"#")):
        return frozenset()  # nothing to find (Debian's file says it in comments only): no TOML parser
    import tomllib

    try:
        d = tomllib.loads(data.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: unreadable registries.conf: {e}") from None
    out = set()
    for entry in d.get("registry") or []:
        if isinstance(entry, dict) and entry.get("insecure") and isinstance(entry.get("location"), str):
            out.add(entry["location"])
    v1 = (d.get("registries") or {}).get("insecure") or {}
    out.update(x for x in v1.get("registries") or [] if isinstance(x, str))
    return frozenset(out)


def is_insecure(host: str) -> bool:
    """True when registries.conf marks ``host`` (or a namespace on it) insecure."""
    return any(loc == host or loc.split("/", 1)[0] == host for loc in _insecure(_path()))

"""Registry settings: defaults, a TOML or JSON file, then command-line flags.

A config file is TOML (``.toml``) or JSON (``.json``); its keys are the field
names below (``-`` and ``_`` are interchangeable), all optional::

    addr = "0.0.0.0:5000"
    root = "/srv/registry"
    delete_enabled = false
    max_manifest_size = 4194304
    max_blob_size = 0        # bytes, 0 = no limit (413 SIZE_INVALID above it)
    max_chunk_size = 0       # bytes in one PATCH/PUT/POST body, 0 = no limit
    gc_grace = 3600          # seconds a fresh blob or upload is safe from gc
    upload_ttl = 86400       # seconds after its last write that an upload is stale
    gc_interval = 0          # run gc every N seconds while serving; 0 = never
    access_log = "-"         # "-" for stderr, a file path, or "" for none
    metrics = true           # Prometheus metrics at /metrics
    auth = "htpasswd"        # "none" (default), "htpasswd" (basic) or "token" (bearer JWTs)
    htpasswd = "/etc/ocibox/htpasswd"   # bcrypt entries (htpasswd -B)
    anonymous_pull = true    # pulls without credentials
    token_realm = ""         # the token endpoint clients are sent to; default <this server>/token
    token_service = "ocibox"
    token_ttl = 300          # seconds an access token lives (at least 60)
    refresh_token_ttl = 0    # seconds a refresh token lives; 0 = until the password changes
    referrers_page = 1000    # referrers in one page when the client sends no n
    lock_timeout = 60        # seconds a request waits for a lock held by another server or gc (then 429)
    tls_cert = "/etc/ocibox/cert.pem"   # serve HTTPS when both are set
    tls_key = "/etc/ocibox/key.pem"

    [groups]                 # named sets of users, for access rules
    dev = ["alice", "bob"]

    [[access]]               # rules grant; a user's actions are the union of every rule that
    users = ["*"]            # matches. users: names, "*" (any known user), "anonymous"
    repositories = ["library/**", "{user}/**"]   # * within a name component, ** across /
    actions = ["pull"]       # "pull", "push", "delete" or "*"

    [[access]]
    groups = ["dev"]
    repositories = ["team/**"]
    actions = ["*"]

Without [[access]] rules every known user may do everything; anonymous_pull
adds a rule letting anonymous users pull everywhere.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError

MiB = 1 << 20


def default_root() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "ocibox", "registry")


@dataclass
class RegistryConfig:
    root: str = dataclasses.field(default_factory=default_root)
    addr: str = "127.0.0.1:5000"
    delete_enabled: bool = True
    # cross-repository mount of a blob found in any repository when ``from`` is absent
    mount_without_from: bool = True
    max_manifest_size: int = 4 * MiB
    max_blob_size: int = 0  # bytes; 0 = no limit
    max_chunk_size: int = 0  # bytes in one request body; 0 = no limit
    max_page: int = 10000  # most tags or repositories in one page
    gc_grace: float = 3600.0
    upload_ttl: float = 86400.0
    gc_interval: float = 0.0
    access_log: str = "-"
    metrics: bool = True  # Prometheus text format at /metrics
    durable: bool = True  # fsync content before it is named; off only for tests
    auth: str = "none"
    htpasswd: str = ""
    anonymous_pull: bool = False
    token_realm: str = ""
    token_service: str = "ocibox"
    token_ttl: int = 300
    refresh_token_ttl: int = 0  # 0: refresh tokens live until the user's password changes
    access: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # access rules
    groups: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    referrers_page: int = 1000  # referrers in one page when the client asks for no n
    lock_timeout: float = 60.0  # seconds to wait for a storage lock (another server, gc): then 429
    tls_cert: str = ""
    tls_key: str = ""

    def host_port(self) -> tuple[str, int]:
        host, sep, port = self.addr.rpartition(":")
        if not sep or not port.isdigit():
            raise UsageError(f"invalid address {self.addr!r}: expected HOST:PORT")
        return host.strip("[]") or "0.0.0.0", int(port)

    def updated(self, **changes: Any) -> RegistryConfig:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def _coerce(name: str, value: Any, kind: Any) -> Any:
    kind = str(kind).split("[", 1)[0]
    wanted = {"bool": bool, "int": int, "float": (int, float), "str": str, "list": list, "dict": dict}[kind]
    if isinstance(value, bool) and kind != "bool" or not isinstance(value, wanted):
        raise UsageError(f"config: {name} must be a {kind}, got {value!r}")
    return float(value) if kind == "float" else value


def load_config(path: str | None, base: RegistryConfig | None = None) -> RegistryConfig:
    config = base or RegistryConfig()
    if not path:
        return config
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise UsageError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        data = json.loads(raw) if path.endswith(".json") else tomllib.loads(raw.decode())
    except (ValueError, UnicodeDecodeError) as e:
        raise UsageError(f"config file {path}: {e}",
                         hint="use TOML (.toml) or JSON (.json)") from None
    if not isinstance(data, dict):
        raise UsageError(f"config file {path}: expected a table of settings")
    fields = {f.name: f.type for f in dataclasses.fields(RegistryConfig)}
    changes = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in fields:
            raise UsageError(f"config file {path}: unknown setting {key!r}",
                             hint="known settings: " + ", ".join(sorted(fields)))
        changes[name] = _coerce(name, value, fields[name])
    config = dataclasses.replace(config, **changes)
    check(config)
    return config


def check(config: RegistryConfig) -> None:
    """Settings that are wrong together or out of range: one clear error before serving."""
    if config.token_ttl < 60:
        raise UsageError(f"config: token_ttl must be at least 60 seconds, got {config.token_ttl}",
                         hint="Docker's token spec: clients may treat shorter tokens as 60 s ones")
    if config.referrers_page < 1 or config.max_page < 1:
        raise UsageError("config: referrers_page and max_page must be at least 1")
    if (config.access or config.groups) and config.auth in ("", "none"):
        raise UsageError("config: access rules need auth = \"htpasswd\" or \"token\"",
                         hint="without authentication every request is anonymous")
    from .auth import Policy

    Policy.from_settings(config.access, config.groups, config.anonymous_pull)

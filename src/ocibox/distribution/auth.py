"""Credentials and authentication challenges.

Credentials come from, in order: what the caller passes (``--creds``), the
containers auth file (``$REGISTRY_AUTH_FILE``, ``$XDG_RUNTIME_DIR/containers/auth.json``,
``~/.config/containers/auth.json``) and Docker's ``~/.docker/config.json``,
whose ``credHelpers``/``credsStore`` run ``docker-credential-NAME get``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from dataclasses import dataclass, field

from ..errors import OciboxError


class AuthError(OciboxError):
    """Credentials were refused, or are missing where a registry needs them."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    # an OAuth2 refresh token ("identitytoken" in auth.json, or a credential helper's
    # secret for the user "<token>"): bearer tokens are then fetched with it
    identity_token: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, text: str) -> Credentials:
        """``USER[:PASSWORD]``, as skopeo's ``--creds`` takes it."""
        user, _, password = text.partition(":")
        if not user:
            raise AuthError("credentials must be USERNAME[:PASSWORD]")
        return cls(user, password)

    def basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


def auth_file_for_writing() -> str:
    if os.environ.get("REGISTRY_AUTH_FILE"):
        return os.environ["REGISTRY_AUTH_FILE"]
    if os.environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(os.environ["XDG_RUNTIME_DIR"], "containers", "auth.json")
    return os.path.expanduser("~/.config/containers/auth.json")


def auth_files() -> list[str]:
    files = []
    if os.environ.get("REGISTRY_AUTH_FILE"):
        files.append(os.environ["REGISTRY_AUTH_FILE"])
    if os.environ.get("XDG_RUNTIME_DIR"):
        files.append(os.path.join(os.environ["XDG_RUNTIME_DIR"], "containers", "auth.json"))
    files.append(os.path.expanduser("~/.config/containers/auth.json"))
    docker_dir = os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker")
    files.append(os.path.join(docker_dir, "config.json"))
    return files


def _load(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            d = json.load(f)
    except FileNotFoundError:
        return {}
    except (ValueError, OSError) as e:
        raise AuthError(f"{path}: unreadable credentials file: {e}") from None
    return d if isinstance(d, dict) else {}


def _keys(registry: str, repository: str | None) -> list[str]:
    """Keys to look up, most specific first: host/ns/repo, host/ns, host."""
    if registry in ("registry-1.docker.io", "index.docker.io"):
        registry = "docker.io"
    keys = []
    if repository:
        parts = repository.split("/")
        for n in range(len(parts), 0, -1):
            keys.append(f"{registry}/{'/'.join(parts[:n])}")
    keys.append(registry)
    if registry == "docker.io":
        keys += ["https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io"]
    return keys


def _normalise(key: str) -> str:
    return re.sub(r"^https?://", "", key).rstrip("/")


def _from_entry(entry: dict, path: str) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    token = entry.get("identitytoken") or None
    if token is not None and not isinstance(token, str):
        raise AuthError(f"{path}: malformed identitytoken entry")
    if entry.get("auth"):
        try:
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise AuthError(f"{path}: malformed auth entry") from None
        return Credentials(user, password, token)
    if entry.get("username"):
        return Credentials(entry["username"], entry.get("password", ""), token)
    if token:
        return Credentials("", "", token)
    return None


def _helper(name: str, registry: str) -> Credentials | None:
    program = f"docker-credential-{name}"
    try:
        proc = subprocess.run([program, "get"], input=registry.encode(), capture_output=True,
                              timeout=30)
    except FileNotFoundError:
        raise AuthError(f"credential helper {program} is not installed",
                        hint="install it, or remove it from ~/.docker/config.json") from None
    if proc.returncode != 0:
        return None  # "credentials not found in native keychain"
    try:
        d = json.loads(proc.stdout)
        if d["Username"] == "<token>":  # docker's convention for an identity token
            return Credentials("", "", d["Secret"])
        return Credentials(d["Username"], d["Secret"])
    except (ValueError, KeyError, TypeError):
        raise AuthError(f"credential helper {program} printed malformed output") from None


def lookup(registry: str, repository: str | None = None) -> Credentials | None:
    """Stored credentials for ``registry`` (and repository), or None."""
    keys = _keys(registry, repository)
    for path in auth_files():
        d = _load(path)
        helpers = d.get("credHelpers") or {}
        for key in keys:
            if key in helpers:
                return _helper(helpers[key], key)
        auths = {_normalise(k): v for k, v in (d.get("auths") or {}).items()}
        for key in keys:
            creds = _from_entry(auths.get(_normalise(key)), path)
            if creds is not None:
                return creds
        if d.get("credsStore") and (d.get("auths") or {}).get(registry) is not None:
            return _helper(d["credsStore"], registry)
    return None


def store(registry: str, creds: Credentials, path: str | None = None) -> str:
    path = path or auth_file_for_writing()
    d = _load(path)
    d.setdefault("auths", {})[registry] = {
        "auth": base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    from .._fs import atomic_write

    atomic_write(path, json.dumps(d, indent=2).encode() + b"\n", 0o600)
    return path


def remove(registry: str, path: str | None = None) -> bool:
    path = path or auth_file_for_writing()
    d = _load(path)
    if registry not in (d.get("auths") or {}):
        return False
    del d["auths"][registry]
    from .._fs import atomic_write

    atomic_write(path, json.dumps(d, indent=2).encode() + b"\n", 0o600)
    return True


# --- challenges --------------------------------------------------------------

_PARAM = re.compile(r'([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "basic" or "bearer"
    params: dict[str, str]


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` value (RFC 7235): ``Bearer realm="...",service="..."``."""
    out: list[Challenge] = []
    for m in re.finditer(r"([A-Za-z]+)\s+((?:[A-Za-z_]+\s*=\s*(?:\"(?:[^\"\\]|\\.)*\"|[^\s,]+)\s*,?\s*)*)",
                         header or ""):
        params = {p.group(1).lower(): (p.group(2) if p.group(2) is not None else p.group(3))
                  for p in _PARAM.finditer(m.group(2))}
        out.append(Challenge(m.group(1).lower(), params))
    if not out and header and header.strip().lower() in ("basic", "bearer"):
        out.append(Challenge(header.strip().lower(), {}))
    return out

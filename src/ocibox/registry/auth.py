"""Who may do what: htpasswd (bcrypt) basic auth, and bearer tokens from a built-in endpoint.

Every API request needs one scope, as Docker's token flow names them:
``repository:<name>:pull`` (reads), ``repository:<name>:push`` (uploads and
manifest pushes, which also need pull), ``repository:<name>:delete``, and
``registry:catalog:*`` for the catalog. ``/v2/`` needs only a known user.

With ``auth = "htpasswd"`` clients send Basic credentials on every request.
With ``auth = "token"`` they are sent to ``/token`` (the realm of the
``WWW-Authenticate: Bearer`` challenge) once, and the JWT that comes back,
signed with HS256 by a key kept in ``<root>/auth/token.key``, carries the
granted scopes. Anonymous pulls are a setting in both modes.

Known users may pull, push and delete everywhere; anonymous users may only
pull, and only when ``anonymous_pull`` is on.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import time
import uuid
from dataclasses import dataclass

from ..errors import UsageError
from .errors import ApiError

ACTIONS = ("pull", "push", "delete")
USER_ACTIONS = frozenset(ACTIONS) | {"*"}


@dataclass(frozen=True)
class Scope:
    type: str  # "repository" or "registry"
    name: str
    actions: frozenset[str]

    @classmethod
    def parse(cls, text: str) -> Scope | None:
        # repository:<name>:<actions>; a name may hold ':' only before a port (not in ours)
        parts = text.split(":")
        if len(parts) < 3:
            return None
        return cls(parts[0], ":".join(parts[1:-1]), frozenset(a for a in parts[-1].split(",") if a))

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(sorted(self.actions))}"


class Htpasswd:
    """An htpasswd file of bcrypt hashes (``htpasswd -B``); other schemes are refused."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.users: dict[str, bytes] = {}
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError as e:
            raise UsageError(f"cannot read htpasswd file {path}: {e.strerror}") from None
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, hashed = line.partition(":")
            if not sep or not hashed.startswith(("$2y$", "$2a$", "$2b$")):
                raise UsageError(f"{path}:{number}: only bcrypt entries are supported",
                                 hint="create them with: htpasswd -B FILE USER")
            self.users[user] = hashed.encode()
        self._ok: dict[bytes, float] = {}

    def check(self, user: str, password: str) -> bool:
        """bcrypt is slow on purpose; a success is remembered for a minute (keyed by a hash)."""
        import bcrypt

        hashed = self.users.get(user)
        if hashed is None:
            return False
        key = hashlib.sha256(user.encode() + b"\0" + password.encode() + b"\0" + hashed).digest()
        if self._ok.get(key, 0.0) > time.monotonic():
            return True
        if not bcrypt.checkpw(password.encode(), hashed.replace(b"$2y$", b"$2b$", 1)):
            return False
        if len(self._ok) > 10000:
            self._ok.clear()
        self._ok[key] = time.monotonic() + 60
        return True


def parse_basic(header: str | None) -> tuple[str, str] | None:
    if not header or not header[:6].lower() == "basic ":
        return None
    try:
        user, sep, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


def allowed(user: str | None, scope: Scope, anonymous_pull: bool) -> frozenset[str]:
    """The actions of ``scope`` that ``user`` (None: anonymous) may have."""
    if user is not None:
        if scope.type == "registry" and scope.name == "catalog":
            return scope.actions & {"*"}
        return scope.actions & USER_ACTIONS
    if anonymous_pull and scope.type == "repository":
        return scope.actions & {"pull"}
    return frozenset()


class TokenIssuer:
    """Signs and checks the bearer tokens of the built-in token endpoint (HS256)."""

    def __init__(self, key_path: str, service: str, issuer: str = "ocibox", ttl: int = 300) -> None:
        self.service, self.issuer, self.ttl = service, issuer, ttl
        self.key = self._load_key(key_path)

    @staticmethod
    def _load_key(path: str) -> bytes:
        try:
            with open(path, "rb") as f:
                key = f.read()
            if len(key) >= 32:
                return key
        except FileNotFoundError:
            pass
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        key = secrets.token_bytes(64)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        return key

    def issue(self, user: str | None, scopes: list[Scope]) -> dict:
        import jwt

        now = int(time.time())
        claims = {
            "iss": self.issuer, "sub": user or "", "aud": self.service,
            "iat": now, "nbf": now - 10, "exp": now + self.ttl, "jti": str(uuid.uuid4()),
            "access": [{"type": s.type, "name": s.name, "actions": sorted(s.actions)}
                       for s in scopes if s.actions],
        }
        token = jwt.encode(claims, self.key, algorithm="HS256")
        issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        return {"token": token, "access_token": token, "expires_in": self.ttl, "issued_at": issued}

    def verify(self, token: str) -> dict | None:
        import jwt

        try:
            return jwt.decode(token, self.key, algorithms=["HS256"], audience=self.service,
                              issuer=self.issuer, options={"require": ["exp", "aud", "iss"]})
        except jwt.PyJWTError:
            return None


def token_grants(claims: dict, needed: Scope) -> bool:
    for entry in claims.get("access") or []:
        if (isinstance(entry, dict) and entry.get("type") == needed.type
                and entry.get("name") == needed.name
                and needed.actions <= set(entry.get("actions") or [])):
            return True
    return False


class Guard:
    """Decides one request: returns the user (None: anonymous) or raises UNAUTHORIZED / DENIED.

    Blocking (bcrypt): call it off the event loop.
    """

    def __init__(self, mode: str, htpasswd: Htpasswd | None, *, anonymous_pull: bool = False,
                 issuer: TokenIssuer | None = None, realm: str = "") -> None:
        if mode not in ("htpasswd", "token"):
            raise UsageError(f"unknown auth mode {mode!r}", hint='use "none", "htpasswd" or "token"')
        if mode == "token" and issuer is None:
            raise UsageError("token auth needs a token issuer")
        self.mode, self.htpasswd, self.anonymous_pull = mode, htpasswd, anonymous_pull
        self.issuer, self.realm = issuer, realm

    def login(self, authorization: str | None) -> str | None:
        """The user of Basic credentials; None without any; UNAUTHORIZED when they are wrong."""
        creds = parse_basic(authorization)
        if creds is None:
            return None
        if self.htpasswd is None or not self.htpasswd.check(*creds):
            raise self._challenge([], error="invalid credentials")
        return creds[0]

    def check(self, authorization: str | None, needed: list[Scope], base_url: str) -> str | None:
        if self.mode == "htpasswd":
            return self._check_basic(authorization, needed)
        return self._check_bearer(authorization, needed, base_url)

    def _check_basic(self, authorization: str | None, needed: list[Scope]) -> str | None:
        user = self.login(authorization)
        if user is None and not needed and not self.anonymous_pull:
            raise self._challenge(needed)
        for scope in needed:
            if allowed(user, scope, self.anonymous_pull) != scope.actions:
                if user is None:
                    raise self._challenge(needed)
                raise ApiError("DENIED", "requested access to the resource is denied",
                               detail={"scope": str(scope)})
        return user

    def _check_bearer(self, authorization: str | None, needed: list[Scope], base_url: str) -> str | None:
        if not authorization or authorization[:7].lower() != "bearer ":
            if all(allowed(None, s, self.anonymous_pull) == s.actions for s in needed) \
                    and (needed or self.anonymous_pull):
                return None
            raise self._challenge(needed, base_url)
        claims = self.issuer.verify(authorization[7:].strip())
        if claims is None:
            raise self._challenge(needed, base_url, error="invalid_token")
        for scope in needed:
            if not token_grants(claims, scope):
                raise self._challenge(needed, base_url, error="insufficient_scope")
        return claims.get("sub") or None

    def _challenge(self, needed: list[Scope], base_url: str = "", error: str | None = None) -> ApiError:
        if self.mode == "htpasswd":
            header = 'Basic realm="ocibox"'
        else:
            realm = self.realm or f"{base_url}/token"
            header = f'Bearer realm="{realm}",service="{self.issuer.service}"'
            if needed:
                header += f',scope="{" ".join(str(s) for s in needed)}"'
            if error:
                header += f',error="{error}"'
        detail = [{"Type": s.type, "Name": s.name, "Action": a} for s in needed for a in sorted(s.actions)]
        return ApiError("UNAUTHORIZED", "authentication required", detail=detail or None,
                        headers={"WWW-Authenticate": header})

    def token(self, authorization: str | None, scopes: list[Scope]) -> dict:
        """The token endpoint: grant what the (possibly anonymous) user may have of each scope."""
        user = self.login(authorization)
        granted = [Scope(s.type, s.name, allowed(user, s, self.anonymous_pull)) for s in scopes]
        return self.issuer.issue(user, granted)

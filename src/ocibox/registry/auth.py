"""Who may do what: htpasswd basic auth, bearer tokens from a built-in endpoint, access rules.

Every API request needs one scope, as Docker's token flow names them:
``repository:<name>:pull`` (reads), ``repository:<name>:push`` (uploads and
manifest pushes, which also need pull), ``repository:<name>:delete``, and
``registry:catalog:*`` for the catalog. ``/v2/`` needs only a known user.

With ``auth = "htpasswd"`` clients send Basic credentials on every request.
With ``auth = "token"`` they are sent to ``/token`` (the realm of the
``WWW-Authenticate: Bearer`` challenge) once, and the JWT that comes back,
signed with HS256 by a key kept in ``<root>/auth/token.key``, carries the
granted scopes. The endpoint also speaks the OAuth2 form of distribution's
token spec (POST, ``grant_type=password`` or ``refresh_token``) and hands out
refresh tokens (``offline_token=true``, ``access_type=offline``).

Access rules (``Policy``) decide the actions a user has on a repository. The
actions of all matching rules are added up (a union: rules only grant, order
does not matter). Without any rule, known users may pull, push and delete
everywhere; ``anonymous_pull`` is a rule that lets anonymous users pull
everywhere. The catalog is open to every known user and lists only what that
user may pull.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from ..errors import OciboxError, UsageError
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
    """An htpasswd file of bcrypt hashes (``htpasswd -B``); other schemes are refused.

    The file is read again when it changes (another inode, size or mtime), so
    users added, removed or given a new password take effect without a restart,
    in every server that reads it. A file that became unreadable or invalid
    keeps the last good entries (and says why in the log).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._ok: dict[bytes, float] = {}
        self._stamp: tuple[int, int, int] | None = None
        self.users: dict[str, bytes] = self._read()

    def _read(self) -> dict[str, bytes]:
        path = self.path
        try:
            with open(path, encoding="utf-8") as f:
                st = os.fstat(f.fileno())
                lines = f.read().splitlines()
        except OSError as e:
            raise UsageError(f"cannot read htpasswd file {path}: {e.strerror}") from None
        users = {}
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, hashed = line.partition(":")
            if not sep or not hashed.startswith(("$2y$", "$2a$", "$2b$")):
                raise UsageError(f"{path}:{number}: only bcrypt entries are supported",
                                 hint="create them with: htpasswd -B FILE USER")
            users[user] = hashed.encode()
        self._stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        return users

    def refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError:
            return
        if (st.st_ino, st.st_size, st.st_mtime_ns) == self._stamp:
            return
        try:
            self.users = self._read()
        except UsageError as e:
            import logging

            logging.getLogger("ocibox.registry").warning("htpasswd not reloaded: %s", e.message)
            self._stamp = (st.st_ino, st.st_size, st.st_mtime_ns)  # say it once per change

    def entry(self, user: str) -> bytes | None:
        """The user's bcrypt hash as the file has it now."""
        self.refresh()
        return self.users.get(user)

    def check(self, user: str, password: str) -> bool:
        """bcrypt is slow on purpose; a success is remembered for a minute (keyed by a hash)."""
        import bcrypt

        hashed = self.entry(user)
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


ANONYMOUS = "anonymous"  # the principal of requests without credentials
ANY_USER = "*"  # any known (authenticated) user
RULE_KEYS = frozenset({"users", "groups", "repositories", "actions"})


def _glob(pattern: str, user: str | None) -> re.Pattern[str] | None:
    """``*`` and ``?`` stay inside one path component, ``**`` crosses ``/``; ``{user}`` is the user."""
    if "{user}" in pattern and user is None:
        return None
    out = []
    for part in re.split(r"(\*\*|\*|\?|\{user\})", pattern):
        out.append({"**": ".*", "*": "[^/]*", "?": "[^/]", "{user}": re.escape(user or "")}.get(part)
                   or re.escape(part))
    return re.compile("".join(out))


@dataclass(frozen=True)
class Rule:
    users: frozenset[str]
    groups: frozenset[str]
    repositories: tuple[str, ...]
    actions: frozenset[str]

    @classmethod
    def parse(cls, raw: Any, where: str) -> Rule:
        if not isinstance(raw, dict):
            raise UsageError(f"{where}: a rule is a table of users, groups, repositories and actions")
        unknown = set(raw) - RULE_KEYS
        if unknown:
            raise UsageError(f"{where}: unknown key {sorted(unknown)[0]!r}",
                             hint="a rule has users, groups, repositories and actions")

        def strings(key: str) -> list[str]:
            value = raw.get(key, [])
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise UsageError(f"{where}: {key} must be a list of non-empty strings")
            return value

        users, groups, repos, actions = (strings(k) for k in ("users", "groups", "repositories", "actions"))
        if not users and not groups:
            raise UsageError(f"{where}: a rule needs users or groups",
                             hint=f'users may name "{ANY_USER}" (any known user) or "{ANONYMOUS}"')
        if not repos or not actions:
            raise UsageError(f"{where}: a rule needs repositories (globs) and actions")
        bad = set(actions) - USER_ACTIONS
        if bad:
            raise UsageError(f"{where}: unknown action {sorted(bad)[0]!r}",
                             hint='actions are "pull", "push", "delete" or "*"')
        expanded = frozenset(ACTIONS) if "*" in actions else frozenset(actions)
        return cls(frozenset(users), frozenset(groups), tuple(repos), expanded)

    def applies_to(self, user: str | None, groups: dict[str, frozenset[str]]) -> bool:
        if user is None:
            return ANONYMOUS in self.users
        return (user in self.users or ANY_USER in self.users
                or any(user in groups.get(g, ()) for g in self.groups))


class Policy:
    """The access rules: a union of grants, evaluated per (user, repository)."""

    def __init__(self, rules: list[Rule], groups: dict[str, frozenset[str]]) -> None:
        self.rules, self.groups = rules, groups

    @classmethod
    def from_settings(cls, rules: list[Any], groups: dict[str, Any], anonymous_pull: bool) -> Policy:
        if not isinstance(groups, dict):
            raise UsageError("config: groups must be a table of group name = [users]")
        members = {}
        for name, users in groups.items():
            if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
                raise UsageError(f"config: groups.{name} must be a list of user names")
            members[name] = frozenset(users)
        if not isinstance(rules, list):
            raise UsageError("config: access must be a list of rules ([[access]] tables)")
        parsed = [Rule.parse(raw, f"config: access rule {i}") for i, raw in enumerate(rules, 1)]
        for i, rule in enumerate(parsed, 1):
            for g in sorted(rule.groups - set(members)):
                raise UsageError(f"config: access rule {i} names the unknown group {g!r}",
                                 hint="define it under [groups]")
        if not parsed:  # the default: every known user may do everything
            parsed.append(Rule(frozenset({ANY_USER}), frozenset(), ("**",), frozenset(ACTIONS)))
        if anonymous_pull:
            parsed.append(Rule(frozenset({ANONYMOUS}), frozenset(), ("**",), frozenset({"pull"})))
        return cls(parsed, members)

    def actions(self, user: str | None, repository: str) -> frozenset[str]:
        """Everything ``user`` (None: anonymous) may do on ``repository``."""
        granted: set[str] = set()
        for rule in self.rules:
            if rule.actions <= granted or not rule.applies_to(user, self.groups):
                continue
            if any((g := _compiled(p, user)) is not None and g.fullmatch(repository)
                   for p in rule.repositories):
                granted |= rule.actions
        return frozenset(granted)

    def allowed(self, user: str | None, scope: Scope) -> frozenset[str]:
        """The actions of ``scope`` that ``user`` may have."""
        if scope.type == "registry" and scope.name == "catalog":
            # open to every known user; the listing is filtered by pull access
            return scope.actions & {"*"} if user is not None else frozenset()
        if scope.type != "repository":
            return frozenset()
        return scope.actions & self.actions(user, scope.name)


@functools.lru_cache(maxsize=4096)
def _compiled(pattern: str, user: str | None) -> re.Pattern[str] | None:
    return _glob(pattern, user)


class OAuthError(OciboxError):
    """An error of the OAuth2 token endpoint, answered as RFC 6749 section 5.2 says."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.status = code, status

    def body(self) -> dict[str, str]:
        return {"error": self.code, "error_description": self.message}


class TokenIssuer:
    """Signs and checks the tokens of the built-in token endpoint (HS256).

    Access tokens carry the granted scopes and expire after ``ttl`` seconds.
    Refresh tokens carry only the user and a keyed fingerprint of the user's
    htpasswd entry, so a changed password or a removed user revokes them; they
    expire after ``refresh_ttl`` seconds (0: never, as Docker's spec has it).
    The key lives in the storage root, so every server on one root accepts the
    tokens of the others.
    """

    def __init__(self, key_path: str, service: str, issuer: str = "ocibox", ttl: int = 300,
                 refresh_ttl: int = 0) -> None:
        self.service, self.issuer, self.ttl, self.refresh_ttl = service, issuer, ttl, refresh_ttl
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
        # Written whole under another name, then linked into place: of two servers starting on one
        # root at once, exactly one key wins and both read it.
        tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(64))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
        with open(path, "rb") as f:
            return f.read()

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

    def fingerprint(self, user: str, secret: bytes) -> str:
        return hmac.new(self.key, b"refresh\0" + user.encode() + b"\0" + secret, "sha256").hexdigest()[:32]

    def issue_refresh(self, user: str, secret: bytes) -> str:
        import jwt

        now = int(time.time())
        claims = {"iss": self.issuer, "sub": user, "aud": self.service, "iat": now,
                  "jti": str(uuid.uuid4()), "use": "refresh", "fpr": self.fingerprint(user, secret)}
        if self.refresh_ttl > 0:
            claims["exp"] = now + self.refresh_ttl
        return jwt.encode(claims, self.key, algorithm="HS256")

    def verify_refresh(self, token: str) -> dict | None:
        import jwt

        try:
            claims = jwt.decode(token, self.key, algorithms=["HS256"], audience=self.service,
                                issuer=self.issuer, options={"require": ["aud", "iss", "sub"]})
        except jwt.PyJWTError:
            return None
        return claims if claims.get("use") == "refresh" else None

    def verify(self, token: str) -> dict | None:
        import jwt

        try:
            claims = jwt.decode(token, self.key, algorithms=["HS256"], audience=self.service,
                                issuer=self.issuer, options={"require": ["exp", "aud", "iss"]})
        except jwt.PyJWTError:
            return None
        return None if claims.get("use") == "refresh" else claims


def token_grants(claims: dict, needed: Scope) -> bool:
    for entry in claims.get("access") or []:
        if (isinstance(entry, dict) and entry.get("type") == needed.type
                and entry.get("name") == needed.name
                and needed.actions <= set(entry.get("actions") or [])):
            return True
    return False


def _scope_text(scopes: list[Scope]) -> str:
    return " ".join(str(s) for s in scopes if s.actions)


class Guard:
    """Decides one request: returns the user (None: anonymous) or raises UNAUTHORIZED / DENIED.

    Blocking (bcrypt): call it off the event loop.
    """

    def __init__(self, mode: str, htpasswd: Htpasswd | None, *, policy: Policy | None = None,
                 anonymous_pull: bool = False, issuer: TokenIssuer | None = None, realm: str = "") -> None:
        if mode not in ("htpasswd", "token"):
            raise UsageError(f"unknown auth mode {mode!r}", hint='use "none", "htpasswd" or "token"')
        if mode == "token" and issuer is None:
            raise UsageError("token auth needs a token issuer")
        self.mode, self.htpasswd = mode, htpasswd
        self.policy = policy or Policy.from_settings([], {}, anonymous_pull)
        self.issuer, self.realm = issuer, realm

    def login(self, authorization: str | None) -> str | None:
        """The user of Basic credentials; None without any; UNAUTHORIZED when they are wrong."""
        creds = parse_basic(authorization)
        if creds is None or creds == ("", ""):
            return None  # containers/image sends empty Basic credentials when it has none
        if self.htpasswd is None or not self.htpasswd.check(*creds):
            raise self._challenge([], error="invalid credentials")
        return creds[0]

    def check(self, authorization: str | None, needed: list[Scope], base_url: str) -> str | None:
        if self.mode == "htpasswd":
            return self._check_basic(authorization, needed)
        return self._check_bearer(authorization, needed, base_url)

    def _denied(self, scope: Scope) -> ApiError:
        return ApiError("DENIED", "requested access to the resource is denied",
                        detail={"scope": str(scope)})

    def _check_basic(self, authorization: str | None, needed: list[Scope]) -> str | None:
        user = self.login(authorization)
        if user is None and not needed:
            # /v2/ always challenges a request without credentials, even where anonymous pulls are
            # allowed: clients learn from this answer whether to send credentials at all.
            raise self._challenge(needed)
        for scope in needed:
            if self.policy.allowed(user, scope) != scope.actions:
                if user is None:
                    raise self._challenge(needed)
                raise self._denied(scope)
        return user

    def _check_bearer(self, authorization: str | None, needed: list[Scope], base_url: str) -> str | None:
        if not authorization or authorization[:7].lower() != "bearer ":
            if needed and all(self.policy.allowed(None, s) == s.actions for s in needed):
                return None
            raise self._challenge(needed, base_url)
        claims = self.issuer.verify(authorization[7:].strip())
        if claims is None:
            raise self._challenge(needed, base_url, error="invalid_token")
        user = claims.get("sub") or None
        for scope in needed:
            if not token_grants(claims, scope):
                # A known user whom the rules refuse gets DENIED: a new token would not help.
                # Otherwise the token is merely too narrow, and the client asks for a wider one.
                if user is not None and self.policy.allowed(user, scope) != scope.actions:
                    raise self._denied(scope)
                raise self._challenge(needed, base_url, error="insufficient_scope")
        return user

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

    # --- the token endpoint ---------------------------------------------------

    def _grant(self, user: str | None, scopes: list[Scope]) -> tuple[dict, list[Scope]]:
        granted = [Scope(s.type, s.name, self.policy.allowed(user, s)) for s in scopes]
        return self.issuer.issue(user, granted), granted

    def _secret(self, user: str) -> bytes | None:
        return self.htpasswd.entry(user) if self.htpasswd is not None else None

    def token(self, authorization: str | None, scopes: list[Scope], offline: bool = False) -> dict:
        """GET /token: what the (possibly anonymous) user may have of each scope.

        Each scope is cut down to the actions the rules allow; a scope the user
        may not have at all is granted empty, not refused (the registry refuses).
        """
        user = self.login(authorization)
        body, _ = self._grant(user, scopes)
        if offline and user is not None:
            body["refresh_token"] = self.issuer.issue_refresh(user, self._secret(user) or b"")
        return body

    def oauth(self, form: dict[str, str], scopes: list[Scope]) -> dict:
        """POST /token: the OAuth2 password and refresh_token grants of distribution's oauth spec."""
        grant = form.get("grant_type")
        if not grant:
            raise OAuthError("invalid_request", "grant_type is required")
        if not form.get("client_id"):
            raise OAuthError("invalid_request", "client_id is required")
        if form.get("service") != self.issuer.service:
            raise OAuthError("invalid_request", f"service must be {self.issuer.service!r}")
        refresh = None
        if grant == "password":
            user, password = form.get("username", ""), form.get("password", "")
            if not user or self.htpasswd is None or not self.htpasswd.check(user, password):
                raise OAuthError("invalid_grant", "invalid username or password")
            if form.get("access_type") == "offline":
                refresh = self.issuer.issue_refresh(user, self._secret(user) or b"")
        elif grant == "refresh_token":
            refresh = form.get("refresh_token") or ""
            claims = self.issuer.verify_refresh(refresh) if refresh else None
            user = claims.get("sub") if claims else None
            secret = self._secret(user) if user else None
            if (claims is None or secret is None
                    or not hmac.compare_digest(str(claims.get("fpr")), self.issuer.fingerprint(user, secret))):
                raise OAuthError("invalid_grant", "the refresh token is invalid, expired or revoked")
        else:
            raise OAuthError("unsupported_grant_type", f"grant_type {grant!r} is not supported")
        body, granted = self._grant(user, scopes)
        body["scope"] = _scope_text(granted)
        if refresh is not None:
            body["refresh_token"] = refresh
        return body

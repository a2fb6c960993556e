"""A client of the OCI Distribution Specification (v1.1), on ocibox's own HTTP/1.1 client.

One ``Registry`` talks to one registry host: it pings ``/v2/``, answers
authentication challenges (Basic, or Bearer tokens fetched per scope and
cached until they expire), retries 5xx, 429 and dropped connections with
backoff, and offers the specification's operations on manifests, blobs,
uploads, tags and referrers. Everything is checked: manifests are returned as
the exact bytes the registry sent and verified against the digest asked for or
announced; blob bodies are streamed into a verifying sink and resumed with
``Range`` after a dropped connection.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from .. import digest as _digest
from .. import mediatypes as mt
from ..errors import BlobNotFound, InvalidObject, NotFound, OciboxError, ReferenceNotFound
from . import _http
from ._http import Response
from .auth import AuthError, Challenge, Credentials, lookup, parse_challenges
from .options import Fetched, Options
from .reference import check_repository

MANIFEST_MAX = 4 << 20  # distribution refuses manifests above 4 MiB; so do we
CHUNK = _http.CHUNK  # pieces of a blob: 256 KiB
ACCEPT_MANIFESTS = ", ".join([mt.OCI_INDEX, mt.OCI_MANIFEST, mt.DOCKER_MANIFEST_LIST,
                              mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST_V1_SIGNED])
USER_AGENT = "ocibox"
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# dropped, refused or reset connections, short bodies and timeouts: worth a retry
_NET_ERRORS = (ConnectionError, TimeoutError)


class RegistryError(OciboxError):
    """A registry answered with an error, or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None, codes: tuple[str, ...] = (),
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.codes = codes


class TLSError(RegistryError):
    pass


def _is_local(host: str) -> bool:
    h = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return h in ("localhost", "127.0.0.1", "[::1]") or h.startswith("127.")


def _cert_dirs(host: str, options: Options) -> list[str]:
    if options.cert_dir and not os.path.isdir(options.cert_dir):
        raise TLSError(f"{host}: certificate directory {options.cert_dir} does not exist")
    dirs = [options.cert_dir] if options.cert_dir else [
        f"/etc/containers/certs.d/{host}", f"/etc/docker/certs.d/{host}",
        os.path.expanduser(f"~/.config/containers/certs.d/{host}")]
    return [d for d in dirs if d and os.path.isdir(d)]


def _ssl_context(host: str, options: Options):
    """The TLS context for this registry, made on the first https connection only
    (loading the system's CAs costs tens of milliseconds): the system's CAs plus
    the cert dir's ``*.crt``, its ``*.cert``/``*.key`` pairs as client
    certificates; without verification when the registry is insecure."""
    import ssl

    dirs = _cert_dirs(host, options)
    if options.tls_verify:
        ctx = _http.system_context()
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    for d in dirs:
        for name in sorted(os.listdir(d)):
            path = os.path.join(d, name)
            if name.endswith(".crt"):
                ctx.load_verify_locations(cafile=path)
            elif name.endswith(".cert"):
                key = path[: -len(".cert")] + ".key"
                ctx.load_cert_chain(path, key if os.path.exists(key) else None)
    return ctx


def _error_message(status: int, body: bytes) -> tuple[str, tuple[str, ...]]:
    try:
        errors = json.loads(body).get("errors") or []
        codes = tuple(str(e.get("code")) for e in errors)
        text = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
        return text or f"HTTP {status}", codes
    except (ValueError, AttributeError, TypeError):
        snippet = body[:120].decode(errors="replace").strip()
        return f"HTTP {status}" + (f": {snippet}" if snippet else ""), ()


@dataclass
class _Token:
    header: str
    expires: float


@dataclass
class Registry:
    host: str
    options: Options = field(default_factory=Options)

    def __post_init__(self) -> None:
        if self.options.tls_verify is None:
            from .registries import is_insecure

            self.options = replace(self.options, tls_verify=not is_insecure(self.host))
        self._http: _http.Pool | None = None
        self._base: str | None = None
        self._tokens: dict[str, _Token] = {}
        self._challenge: Challenge | None = None
        self._creds_cache: dict[str, Credentials | None] = {}
        self._ping_lock = asyncio.Lock()

    # --- plumbing ----------------------------------------------------------

    async def __aenter__(self) -> Registry:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _pool(self) -> _http.Pool:
        if self._http is None:
            _cert_dirs(self.host, self.options)  # a missing --cert-dir fails now, not at the first https
            self._http = _http.Pool(limit=32, ssl_context=lambda: _ssl_context(self.host, self.options),
                                    connect_timeout=30, read_timeout=self.options.timeout,
                                    user_agent=USER_AGENT)
        return self._http

    def _creds(self, repository: str | None) -> Credentials | None:
        if self.options.creds is not None:
            return self.options.creds
        if self.options.no_auth_lookup:
            return None
        key = repository or ""
        if key not in self._creds_cache:
            self._creds_cache[key] = lookup(self.host, repository)
        return self._creds_cache[key]

    async def ping(self) -> str:
        """Find the scheme that works and the auth the registry asks for; returns the base URL."""
        async with self._ping_lock:
            if self._base is not None:
                return self._base
            o = self.options
            if o.plain_http:
                schemes = ["http"]
            elif _is_local(self.host):
                # loopback (nothing on the wire to protect): plain HTTP first. A TLS port
                # refuses it at once (400, or a closed connection), and a plain registry
                # then costs no TLS context (~20 ms of loading CAs) nor a failed handshake
                schemes = ["http", "https"]
            elif not o.tls_verify:
                schemes = ["https", "http"]
            else:
                schemes = ["https"]
            last: Exception | None = None
            for n, scheme in enumerate(schemes):
                base = f"{scheme}://{self.host}"
                probe = scheme == "http" and n + 1 < len(schemes)
                try:
                    for attempt in range(o.retries + 1):
                        r = await self._pool().request("GET", f"{base}/v2/", follow_redirects=False,
                                                       timeout=min(10.0, o.timeout) if probe else None)
                        await _drain(r)
                        if r.status not in _RETRY_STATUS or attempt == o.retries:
                            break
                        await asyncio.sleep(o.backoff * 2 ** attempt)
                    if probe and (r.status in (400, 497) or 300 <= r.status < 400):
                        # not a registry's answer: "Client sent an HTTP request to an HTTPS
                        # server" (400, nginx's 497), or a redirect to https
                        last = RegistryError(f"{self.host}: /v2/ over plain HTTP answered {r.status}",
                                             status=r.status)
                        continue
                    if r.status == 401:
                        self._challenge = self._pick_challenge(r.headers.get("WWW-Authenticate"))
                    elif r.status >= 400 and r.status != 404:
                        raise RegistryError(f"{self.host}: /v2/ answered HTTP {r.status}",
                                            status=r.status)
                    self._base = base
                    return base
                except _http.CertificateError as e:
                    raise TLSError(f"{self.host}: TLS certificate not trusted: {e}",
                                   hint="pass --cert-dir with the CA's .crt, or --tls-verify=false") from None
                except (TimeoutError, ConnectionError, _http.HTTPError) as e:
                    last = e
            what = f"{type(last).__name__}: {last}" if last else "no scheme"
            raise RegistryError(f"{self.host}: registry unreachable ({what})",
                                hint="check the address; use --tls-verify=false for a plain-HTTP registry")

    @staticmethod
    def _pick_challenge(header: str | None) -> Challenge | None:
        challenges = parse_challenges(header or "")
        for c in challenges:
            if c.scheme == "bearer":
                return c
        return challenges[0] if challenges else None

    async def _auth_header(self, scopes: list[str], repository: str | None,
                           force: bool = False) -> str | None:
        if self.options.registry_token:
            return f"Bearer {self.options.registry_token}"
        c = self._challenge
        if c is None:
            return None
        creds = self._creds(repository)
        if c.scheme == "basic":
            if creds is None or (creds.identity_token and not creds.username):
                raise AuthError(f"{self.host}: registry needs credentials",
                                hint=f"run: ocibox login {self.host}, or pass --creds USER:PASSWORD")
            return creds.basic()
        if c.scheme != "bearer":
            raise AuthError(f"{self.host}: unsupported authentication scheme {c.scheme!r}")
        key = " ".join(sorted(scopes))
        token = self._tokens.get(key)
        if token is not None and not force and token.expires > time.monotonic():
            return token.header
        token = await self._fetch_token(c, scopes, creds)
        self._tokens[key] = token
        return token.header

    async def _fetch_token(self, c: Challenge, scopes: list[str], creds: Credentials | None) -> _Token:
        """A bearer token for ``scopes`` from the challenge's realm: a GET with Basic
        credentials, or with an identity token from auth.json the OAuth2 POST
        (grant_type=refresh_token), as containers/image does."""
        realm = c.params.get("realm")
        if not realm:
            raise AuthError(f"{self.host}: Bearer challenge without a realm")
        query: list[tuple[str, str]] = []
        oauth = creds is not None and bool(creds.identity_token)
        if oauth:
            query += [("grant_type", "refresh_token"), ("refresh_token", creds.identity_token),
                      ("client_id", "containers/image")]
        if c.params.get("service"):
            query.append(("service", c.params["service"]))
        for s in scopes:
            query.append(("scope", s))
        form = urllib.parse.urlencode(query)
        try:
            if oauth:
                r = await self._pool().request(
                    "POST", realm, body=form.encode(),
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
            else:
                headers = {"Authorization": creds.basic()} if creds else {}
                sep = "&" if "?" in realm else "?"
                r = await self._pool().request("GET", f"{realm}{sep}{form}" if form else realm,
                                               headers=headers)
            try:
                body = await r.read(MANIFEST_MAX)
            finally:
                await r.aclose()
        except (*_NET_ERRORS, _http.HTTPError) as e:
            raise RegistryError(f"{self.host}: token server {realm} unreachable: {e}") from None
        if r.status in (400, 401, 403):
            who = ("the identity token from the auth file" if oauth
                   else f"user {creds.username!r}" if creds else "anonymous access")
            raise AuthError(f"{self.host}: authentication failed for {who} (token server said {r.status})",
                            hint=f"check the credentials (ocibox login {self.host}, or --creds)")
        if r.status != 200:
            raise AuthError(f"{self.host}: token server {realm} answered HTTP {r.status}")
        try:
            d = json.loads(body)
            tok = d.get("token") or d["access_token"]
            if not isinstance(tok, str) or not tok:
                raise ValueError
            expires_in = int(d.get("expires_in") or 0)
            issued_at = d.get("issued_at")
        except (ValueError, KeyError, TypeError, AttributeError):
            raise AuthError(f"{self.host}: token server sent a malformed answer") from None
        return _Token(f"Bearer {tok}", time.monotonic() + _token_lifetime(expires_in, issued_at))

    async def request(self, method: str, path: str, *, repository: str | None = None,
                      actions: str = "pull", extra_scopes: tuple[str, ...] = (),
                      headers: dict[str, str] | None = None, data: Any = None,
                      params: Any = None, ok: tuple[int, ...] = (200,),
                      retry: bool = True, stream: bool = False,
                      allow_redirects: bool = True) -> Response:
        """One request with auth and retries; ``data`` may be a zero-arg callable
        returning a fresh body (so that a retry can resend it).

        The response is returned unread when ``stream`` is true (the caller reads
        it, and ``aclose``s it if it stops early), otherwise read. Statuses outside
        ``ok`` raise ``RegistryError``.
        """
        base = await self.ping()
        url = path if path.startswith(("http://", "https://")) else base + path
        if params:
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode(params)
        scopes = ([f"repository:{repository}:{actions}"] if repository else []) + list(extra_scopes)
        attempts = self.options.retries + 1 if retry else 1
        forced = False
        attempt = -1
        while attempt + 1 < attempts:
            attempt += 1
            h = dict(headers or {})
            # credentials go only to the registry itself, never to a host a Location names
            auth = await self._auth_header(scopes, repository, force=forced) \
                if url.startswith(base + "/") else None
            if auth:
                h["Authorization"] = auth
            body = data() if callable(data) else data
            try:
                r = await self._pool().request(method, url, headers=h, body=body,
                                               follow_redirects=allow_redirects)
            except _http.CertificateError as e:
                raise TLSError(f"{self.host}: TLS certificate not trusted: {e}") from None
            except _NET_ERRORS as e:
                if attempt + 1 < attempts:
                    await asyncio.sleep(self.options.backoff * 2 ** attempt)
                    continue
                raise RegistryError(f"{self.host}: {method} {path}: connection failed: {e or type(e).__name__}") from None
            except _http.HTTPError as e:  # a malformed answer, a bad Location, a proxy refusing
                raise RegistryError(f"{self.host}: {method} {path}: {e}") from None
            if r.status == 401:
                body_bytes = await _drain(r)
                challenge = self._pick_challenge(r.headers.get("WWW-Authenticate"))
                if not forced and challenge is not None:
                    # a new challenge (an expired or revoked token, or a wider scope
                    # asked for): fetch a fresh token for it, once
                    self._challenge = challenge
                    for s in (challenge.params.get("scope") or "").split():
                        if s not in scopes:
                            scopes.append(s)
                    forced = True
                    attempt -= 1  # answering a challenge is not a retry
                    continue
                who = self._creds(repository)
                msg, _ = _error_message(401, body_bytes)
                as_who = (" with the given registry token" if self.options.registry_token
                          else f" as {who.username!r}" if who and who.username
                          else " with an identity token" if who else " (no credentials)")
                raise AuthError(
                    f"{self.host}: {method} {path}: unauthorized{as_who}: {msg}",
                    hint=f"check the credentials (ocibox login {self.host}, or --creds USER:PASSWORD)")
            if r.status in _RETRY_STATUS and attempt + 1 < attempts:
                delay = self.options.backoff * 2 ** attempt
                if r.status == 429 and (ra := r.headers.get("Retry-After", "")).isdigit():
                    delay = min(float(ra), 30.0)
                await r.aclose()
                await asyncio.sleep(delay)
                continue
            if r.status not in ok:
                body_bytes = await _drain(r)
                msg, codes = _error_message(r.status, body_bytes)
                raise RegistryError(f"{self.host}: {method} {path}: {msg}", status=r.status, codes=codes)
            if not stream:
                await _drain(r)
            return r
        raise RegistryError(f"{self.host}: {method} {path}: gave up after {attempts} attempts")

    # --- manifests ---------------------------------------------------------

    async def get_manifest(self, repository: str, reference: str, *,
                           accept: str = ACCEPT_MANIFESTS) -> Fetched:
        check_repository(repository)
        path = f"/v2/{repository}/manifests/{reference}"
        try:
            r = await self.request("GET", path, repository=repository,
                                   headers={"Accept": accept}, stream=True)
        except RegistryError as e:
            if e.status == 404:
                raise ReferenceNotFound(f"{self.host}/{repository}:{reference}: manifest unknown",
                                        hint="check the name and tag (ocibox list-tags)") from None
            raise
        try:
            if (r.content_length or 0) > MANIFEST_MAX:
                raise InvalidObject(f"{self.host}/{repository}@{reference}", "size",
                                    f"{r.content_length} bytes is over the {MANIFEST_MAX >> 20} MiB limit")
            data = await r.read(MANIFEST_MAX + 1)
            if len(data) > MANIFEST_MAX:
                raise InvalidObject(f"{self.host}/{repository}@{reference}", "size",
                                    f"over the {MANIFEST_MAX >> 20} MiB limit")
        finally:
            await r.aclose()
        media_type = (r.headers.get("Content-Type") or "").split(";")[0].strip()
        if not media_type or media_type in ("application/json", "text/plain"):
            try:
                media_type = json.loads(data).get("mediaType") or ""
            except (ValueError, AttributeError):
                media_type = ""
        what = f"manifest {self.host}/{repository}@{reference}"
        if _digest.is_valid(reference):
            _digest.verify_bytes(data, reference, what=what)
            dig = reference
        else:
            dig = _digest.of_bytes(data)
            announced = r.headers.get("Docker-Content-Digest")
            if announced and _digest.is_valid(announced) and announced != dig:
                _digest.verify_bytes(data, announced, what=what)
                dig = announced if _digest.parse(announced)[0] == "sha256" else dig
        return Fetched(data, media_type, dig)

    async def head_manifest(self, repository: str, reference: str) -> tuple[str, int, str] | None:
        """(digest, size, media type) of a manifest, or None when it does not exist."""
        try:
            r = await self.request("HEAD", f"/v2/{repository}/manifests/{reference}",
                                   repository=repository, headers={"Accept": ACCEPT_MANIFESTS})
        except RegistryError as e:
            if e.status == 404:
                return None
            raise
        dig = r.headers.get("Docker-Content-Digest", "")
        return dig, int(r.headers.get("Content-Length") or 0), r.headers.get("Content-Type", "")

    async def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        dig = _digest.of_bytes(data)
        try:
            await self.request("PUT", f"/v2/{repository}/manifests/{reference}",
                               repository=repository, actions="pull,push",
                               headers={"Content-Type": media_type}, data=data, ok=(200, 201, 202))
        except RegistryError as e:
            if e.status == 400 and "MANIFEST_INVALID" in e.codes or e.status == 415:
                raise RegistryError(f"{e.message}", status=e.status, codes=e.codes,
                                    hint=f"the registry refused media type {media_type}") from None
            raise
        return dig

    async def delete_manifest(self, repository: str, reference: str) -> None:
        try:
            await self.request("DELETE", f"/v2/{repository}/manifests/{reference}",
                               repository=repository, actions="delete", ok=(200, 202))
        except RegistryError as e:
            if e.status == 404:
                raise ReferenceNotFound(f"{self.host}/{repository}@{reference}: not found") from None
            if e.status == 405:
                raise RegistryError(f"{self.host}: deletes are disabled on this registry",
                                    status=405) from None
            raise

    # --- blobs -------------------------------------------------------------

    async def blob_size(self, repository: str, dig: str) -> int | None:
        """Size of a blob the repository has, or None."""
        try:
            r = await self.request("HEAD", f"/v2/{repository}/blobs/{dig}", repository=repository)
        except RegistryError as e:
            if e.status == 404:
                return None
            raise
        return int(r.headers.get("Content-Length") or -1)

    async def blob_chunks(self, repository: str, dig: str, size: int | None = None,
                          offset: int = 0) -> AsyncIterator[bytes]:
        """The blob's bytes from ``offset``, resuming with ``Range`` after a dropped
        connection (a server that ignores Range is skipped forward instead)."""
        position = offset
        failures = 0
        path = f"/v2/{repository}/blobs/{dig}"
        while True:
            headers = {"Range": f"bytes={position}-"} if position else {}
            try:
                r = await self.request("GET", path, repository=repository, headers=headers,
                                       stream=True, ok=(200, 206))
            except RegistryError as e:
                if e.status == 404:
                    raise BlobNotFound(f"{self.host}/{repository}: blob {dig} not found") from None
                if e.status == 416 and size is not None and position >= size:
                    return
                raise
            try:
                skip = 0
                if position and r.status == 200:
                    skip = position  # Range ignored: discard what we already have
                elif position and r.status == 206:
                    cr = r.headers.get("Content-Range", "")
                    if not cr.startswith(f"bytes {position}-"):
                        raise RegistryError(f"{self.host}: blob {dig}: bad Content-Range {cr!r}")
                async for chunk in r.iter_chunks(CHUNK):
                    if skip:
                        chunk, skip = _past(chunk, skip)
                        if not chunk:
                            continue
                    position += len(chunk)
                    if size is not None and position > size:
                        raise _digest.SizeMismatch(f"blob {dig}", size, position)
                    yield chunk
                    failures = 0
                if size is None or position >= size:
                    return
                # fewer bytes than promised and a clean end: treat as a drop
                raise _http.ConnectionDropped("response ended early")
            except _NET_ERRORS as e:
                failures += 1
                if failures > self.options.retries:
                    raise RegistryError(f"{self.host}: blob {dig}: download failed at byte {position}: {e}") from None
                await asyncio.sleep(self.options.backoff * 2 ** (failures - 1))
            except _http.HTTPError as e:  # a malformed body (bad chunk framing)
                raise RegistryError(f"{self.host}: blob {dig}: {e}") from None
            finally:
                await r.aclose()

    async def fetch_blob(self, repository: str, dig: str, size: int | None, sink,
                         progress: Callable[[int], None] | None = None) -> None:
        """Stream a blob into ``sink`` (``write`` method); the caller verifies/commits."""
        async for chunk in self.blob_chunks(repository, dig, size):
            sink.write(chunk)
            if progress:
                progress(len(chunk))

    async def read_blob(self, repository: str, dig: str, size: int | None, limit: int = MANIFEST_MAX) -> bytes:
        """A small blob (a config) whole, verified."""
        if size is not None and size > limit:
            raise InvalidObject(f"blob {dig}", "size", f"{size} bytes is over the {limit >> 20} MiB limit")
        parts = []
        total = 0
        async for chunk in self.blob_chunks(repository, dig, size):
            total += len(chunk)
            if total > limit:
                raise InvalidObject(f"blob {dig}", "size", f"over the {limit >> 20} MiB limit")
            parts.append(chunk)
        data = b"".join(parts)
        _digest.verify_bytes(data, dig, size=size, what=f"blob {dig} from {self.host}/{repository}")
        return data

    async def delete_blob(self, repository: str, dig: str) -> None:
        await self.request("DELETE", f"/v2/{repository}/blobs/{dig}", repository=repository,
                           actions="delete", ok=(202, 200))

    # --- uploads -----------------------------------------------------------

    def _location(self, r: Response, path: str) -> str:
        loc = r.headers.get("Location")
        if not loc:
            raise RegistryError(f"{self.host}: upload answer without a Location header")
        return urllib.parse.urljoin(r.url, loc)

    async def mount_blob(self, repository: str, dig: str, source_repository: str) -> bool:
        """Cross-repository mount; True when the registry linked the blob."""
        path = f"/v2/{repository}/blobs/uploads/"
        r = await self.request("POST", path, repository=repository, actions="pull,push",
                               extra_scopes=(f"repository:{source_repository}:pull",),
                               params={"mount": dig, "from": source_repository}, ok=(201, 202))
        if r.status == 201:
            return True
        # 202: not mounted; cancel the upload session it opened
        try:
            await self.request("DELETE", self._location(r, path), repository=repository,
                               actions="pull,push", ok=(204, 200, 202, 404), retry=False)
        except OciboxError:
            pass
        return False

    async def _start_upload(self, repository: str) -> str:
        path = f"/v2/{repository}/blobs/uploads/"
        r = await self.request("POST", path, repository=repository, actions="pull,push", ok=(202,))
        return self._location(r, path)

    async def _resume_point(self, repository: str, state: dict[str, str], error: Exception,
                            failures: int, what: str) -> int:
        """After an upload request failed with ``error``: raise it when it is final
        (a 4xx other than 408, 416 and 429; too many failures), else wait and
        return the offset to go on from, as the registry reports it, or 0 with a
        new session in ``state`` when the old one is gone."""
        if isinstance(error, RegistryError) and error.status is not None and error.status < 500 \
                and error.status not in (408, 416, 429):
            raise error
        if failures > self.options.retries:
            raise RegistryError(f"{self.host}/{repository}: {what} failed: {error}") from None
        await asyncio.sleep(self.options.backoff * 2 ** (failures - 1))
        try:
            offset, state["location"] = await self._upload_status(repository, state["location"])
        except RegistryError as status_error:
            if status_error.status is None or status_error.status >= 500:
                raise
            # the session is gone or broken (distribution after a cut PUT): start afresh
            offset, state["location"] = 0, await self._start_upload(repository)
        return offset

    async def upload_blob(self, repository: str, dig: str, size: int,
                          open_at: Callable[[int], AsyncIterator[bytes]],
                          *, chunk_size: int | None = None,
                          progress: Callable[[int], None] | None = None) -> None:
        """Upload a blob whose digest and size are known.

        ``open_at(offset)`` yields the blob's bytes from ``offset``; after a
        failure the upload continues from the offset the registry reports.
        ``chunk_size`` selects chunked uploads (PATCH); otherwise one PUT.
        """
        # distribution renews the Location (its _state) after every chunk: keep the latest
        state = {"location": await self._start_upload(repository)}
        offset = 0
        failures = 0
        restarted = False
        while True:
            try:
                if chunk_size:
                    await self._upload_chunks(repository, state, offset, open_at, chunk_size, progress)
                    await self._finish(repository, state["location"], dig, None, 0, progress)
                else:
                    await self._finish(repository, state["location"], dig, open_at(offset),
                                       size - offset, progress)
                return
            except _digest.DigestMismatch:
                # A resumed upload whose start the registry kept wrongly (a cut request
                # still being written when it answered): once more, from byte 0.
                if offset == 0 or restarted:
                    raise
                restarted = True
                offset, state["location"] = 0, await self._start_upload(repository)
            except (RegistryError, *_NET_ERRORS) as e:
                failures += 1
                offset = await self._resume_point(repository, state, e, failures, f"upload of {dig}")
                if progress and offset == 0:
                    progress(0)

    async def upload_stream(self, repository: str, open_stream: Callable[[], AsyncIterator[bytes]],
                            *, chunk_size: int | None = None,
                            progress: Callable[[int], None] | None = None) -> tuple[str, int]:
        """Upload a blob whose digest and size are learnt at its end; returns them.

        POST opens the session; the bytes of ``open_stream()`` go in one streamed
        PATCH (or, with ``chunk_size``, in PATCHes with Content-Range), hashed on
        the way; a PUT with the digest they make closes it. After a failure the
        registry's offset is asked for and ``open_stream()`` is called again: it
        must yield the very same bytes (they are hashed again, and only those
        past the offset are sent); if it does not, the registry refuses the
        digest and the upload starts once more from byte 0.
        """
        state = {"location": await self._start_upload(repository)}
        offset = 0
        failures = 0
        restarted = False
        while True:
            h = _digest.hasher()
            total = [0]
            body = _hashed(open_stream(), offset, h, total)
            finishing = False
            try:
                try:
                    if chunk_size:
                        await self._upload_chunks(repository, state, offset, lambda _, b=body: b, chunk_size, progress)
                    else:
                        await self._patch_stream(repository, state, body, progress)
                finally:
                    await body.aclose()
                finishing = True
                dig = "sha256:" + h.hexdigest()
                await self._finish(repository, state["location"], dig, None, 0, progress)
                return dig, total[0]
            except _digest.DigestMismatch:
                # the registry holds other bytes than the stream made (a resumed
                # upload whose start it kept wrongly, or a stream that changed)
                if not finishing or restarted:
                    raise
                restarted = True
                offset, state["location"] = 0, await self._start_upload(repository)
            except (RegistryError, *_NET_ERRORS) as e:
                failures += 1
                offset = await self._resume_point(repository, state, e, failures, "upload")
                if progress and offset == 0:
                    progress(0)

    async def _patch_stream(self, repository: str, state: dict[str, str], body: AsyncIterator[bytes],
                            progress) -> None:
        """One PATCH whose body is the stream (chunked transfer coding: its length is unknown)."""
        async def counted():
            async for chunk in body:
                if progress:
                    progress(len(chunk))
                yield chunk

        location = state["location"]
        r = await self.request("PATCH", location, repository=repository, actions="pull,push",
                               headers={"Content-Type": "application/octet-stream"},
                               data=counted(), ok=(202, 204), retry=False)
        state["location"] = self._location(r, location) if r.headers.get("Location") else location

    async def _upload_status(self, repository: str, location: str) -> tuple[int, str]:
        r = await self.request("GET", location, repository=repository, actions="pull,push",
                               ok=(204, 200))
        rng = r.headers.get("Range", "")
        loc = self._location(r, location) if r.headers.get("Location") else location
        if rng.startswith("bytes="):
            rng = rng[6:]
        start, _, end = rng.partition("-")
        if start == "0" and end.isdigit() and end != "0":
            return int(end) + 1, loc
        # "0-0" is what distribution says for an empty upload (and for one byte): take 0
        return 0, loc

    async def _upload_chunks(self, repository: str, state: dict[str, str], offset: int,
                             open_at, chunk_size: int, progress) -> None:
        buf = bytearray()
        position = offset

        async def send(data: bytes) -> None:
            nonlocal position
            end = position + len(data) - 1
            location = state["location"]
            r = await self.request("PATCH", location, repository=repository, actions="pull,push",
                                   headers={"Content-Type": "application/octet-stream",
                                            "Content-Range": f"{position}-{end}",
                                            "Content-Length": str(len(data))},
                                   data=bytes(data), ok=(202,), retry=False)
            position = end + 1
            if progress:
                progress(len(data))
            state["location"] = self._location(r, location)

        async for chunk in open_at(offset):
            buf += chunk
            while len(buf) >= chunk_size:
                await send(bytes(buf[:chunk_size]))
                del buf[:chunk_size]
        if buf:
            await send(bytes(buf))

    async def _finish(self, repository: str, location: str, dig: str,
                      body: AsyncIterator[bytes] | None, length: int, progress) -> None:
        sep = "&" if "?" in location else "?"
        url = f"{location}{sep}digest={urllib.parse.quote(dig)}"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length)}
        data = None
        if body is not None:
            async def counted():
                async for chunk in body:
                    if progress:
                        progress(len(chunk))
                    yield chunk
            data = counted()
        try:
            await self.request("PUT", url, repository=repository, actions="pull,push",
                               headers=headers, data=data, ok=(201, 204), retry=False)
        except RegistryError as e:
            if "DIGEST_INVALID" in e.codes or "SIZE_INVALID" in e.codes:
                raise _digest.DigestMismatch(f"upload of {dig} to {self.host}/{repository}",
                                             dig, "something else (the registry refused it)") from None
            raise

    # --- tags and referrers --------------------------------------------------

    async def list_tags(self, repository: str, page_size: int | None = None) -> list[str]:
        tags: list[str] = []
        path: str | None = f"/v2/{repository}/tags/list"
        params: dict[str, str] | None = {"n": str(page_size)} if page_size else None
        for _ in range(10000):
            if path is None:
                break
            try:
                r = await self.request("GET", path, repository=repository, params=params, stream=True)
            except RegistryError as e:
                if e.status == 404:
                    raise NotFound(f"{self.host}/{repository}: repository not found") from None
                raise
            try:
                body = await r.read(MANIFEST_MAX * 4)
            finally:
                await r.aclose()
            try:
                tags.extend(json.loads(body).get("tags") or [])
            except (ValueError, AttributeError):
                raise RegistryError(f"{self.host}/{repository}: malformed tag list") from None
            path, params = _next_link(r.headers.get("Link")), None
        return tags

    async def referrers(self, repository: str, dig: str, artifact_type: str | None = None) -> list[dict]:
        """Descriptors of manifests whose subject is ``dig``: the referrers API,
        or the ``<alg>-<hex>`` tag schema where the registry lacks it."""
        params = {"artifactType": artifact_type} if artifact_type else None
        try:
            r = await self.request("GET", f"/v2/{repository}/referrers/{dig}",
                                   repository=repository, params=params, stream=True)
            try:
                body = await r.read(MANIFEST_MAX + 1)
            finally:
                await r.aclose()
            if (r.headers.get("Content-Type") or "").startswith(mt.OCI_INDEX):
                manifests = json.loads(body).get("manifests") or []
                if artifact_type and "OCI-Filters-Applied" not in r.headers:
                    manifests = [m for m in manifests if m.get("artifactType") == artifact_type]
                return manifests
        except RegistryError as e:
            if e.status not in (404, 405):
                raise
        alg, hexpart = _digest.parse(dig)
        try:
            fetched = await self.get_manifest(repository, f"{alg}-{hexpart}", accept=mt.OCI_INDEX)
        except ReferenceNotFound:
            return []
        manifests = json.loads(fetched.data).get("manifests") or []
        if artifact_type:
            manifests = [m for m in manifests if m.get("artifactType") == artifact_type]
        return manifests


def _past(chunk: bytes, skip: int) -> tuple[bytes, int]:
    """What of ``chunk`` lies past its first ``skip`` bytes, and how many are left to skip after it."""
    if len(chunk) <= skip:
        return b"", skip - len(chunk)
    return chunk[skip:], 0


async def _hashed(chunks: AsyncIterator[bytes], skip: int, h, total: list[int]) -> AsyncIterator[bytes]:
    """``chunks`` hashed into ``h`` and counted into ``total[0]``, less their first ``skip`` bytes."""
    try:
        async for chunk in chunks:
            h.update(chunk)
            total[0] += len(chunk)
            if skip:
                chunk, skip = _past(chunk, skip)
                if not chunk:
                    continue
            yield chunk
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


async def _drain(r: Response, limit: int = 1 << 20) -> bytes:
    """A small body (an error, an answer to a PUT) read, and the response closed."""
    try:
        return await r.read(limit)
    finally:
        await r.aclose()


def _token_lifetime(expires_in: int, issued_at: Any) -> float:
    """Seconds to keep a bearer token: ``expires_in`` (at least 60, the spec's
    minimum) counted from ``issued_at`` when the server gives it, renewed a
    little before the end."""
    lifetime = float(max(expires_in, 60))
    if isinstance(issued_at, str) and issued_at:
        from datetime import datetime

        text = issued_at.strip().replace("Z", "+00:00").replace("z", "+00:00")
        head, dot, rest = text.partition(".")
        if dot:  # Go writes nanoseconds; Python takes up to microseconds
            digits = len(rest) - len(rest.lstrip("0123456789"))
            text = f"{head}.{rest[:min(digits, 6)]}{rest[digits:]}"
        try:
            issued = datetime.fromisoformat(text).timestamp()
        except ValueError:
            issued = None
        if issued is not None:
            # a token issued in the past has less time left; clocks that disagree
            # never make it last longer than expires_in
            lifetime = min(lifetime, issued + lifetime - time.time())
    margin = min(10.0, lifetime / 10)
    return max(lifetime - margin, 0.0)


def _next_link(header: str | None) -> str | None:
    """The URL of ``Link: <url>; rel="next"``."""
    if not header:
        return None
    for part in header.split(","):
        if 'rel="next"' in part or "rel=next" in part:
            start, end = part.find("<"), part.find(">")
            if start != -1 and end > start:
                return part[start + 1:end]
    return None

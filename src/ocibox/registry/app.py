"""The HTTP face of the registry: the distribution specification's routes.

Handlers parse and check the request (names, references, digests, ranges),
call the store, and answer with the specification's statuses, headers and
error bodies. Request bodies are streamed to disk and hashed on the way;
blobs are read and written in chunks (see .sending).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import web

from .. import digest as _digest
from .. import mediatypes as mt
from ..errors import LockTimeout, UsageError
from . import errors as E
from . import manifests, sending
from .auth import Guard, Htpasswd, OAuthError, Policy, Scope, TokenIssuer
from .config import RegistryConfig
from .config import check as check_config
from .metrics import Metrics
from .names import check_digest, check_name, check_reference, check_tag
from .storage.base import PathNotFound, StorageDriver
from .storage.filesystem import FilesystemDriver
from .store import RegistryStore
from .uploads import Upload, Uploads

API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")
CONTENT_RANGE = re.compile(r"(?:bytes[= ])?(\d+)-(\d+)(?:/(?:\d+|\*))?")

Handler = Callable[..., Awaitable[web.StreamResponse]]
CONFIG = web.AppKey("config", RegistryConfig)
STORE = web.AppKey("store", RegistryStore)
UPLOADS = web.AppKey("uploads", Uploads)
METRICS = web.AppKey("metrics", Metrics)
USER = web.RequestKey("user", str)  # who made the request (absent: anonymous or no auth)


def _range(size: int) -> str:
    # Inclusive range of what was received; distribution says "0-0" for nothing yet.
    return f"0-{max(size - 1, 0)}"


def _upload_headers(upload: Upload, size: int) -> dict[str, str]:
    return {
        "Location": f"/v2/{upload.name}/blobs/uploads/{upload.uuid}",
        "Range": _range(size),
        "Docker-Upload-UUID": upload.uuid,
    }


def _blob_created(name: str, digest: str) -> web.Response:
    """201 Created for a blob that a mount, a monolithic PUT or a finished upload stored."""
    return web.Response(status=201, headers={"Location": f"/v2/{name}/blobs/{digest}",
                                             "Docker-Content-Digest": digest})


def make_guard(config: RegistryConfig) -> Guard | None:
    check_config(config)
    if config.auth in ("", "none"):
        return None
    htpasswd = Htpasswd(config.htpasswd) if config.htpasswd else None
    if config.auth == "htpasswd" and htpasswd is None:
        raise UsageError('auth = "htpasswd" needs the htpasswd setting (a file of bcrypt entries)')
    issuer = None
    if config.auth == "token":
        issuer = TokenIssuer(os.path.join(config.root, "auth", "token.key"), config.token_service,
                             ttl=config.token_ttl, refresh_ttl=config.refresh_token_ttl)
    policy = Policy.from_settings(config.access, config.groups, config.anonymous_pull)
    return Guard(config.auth, htpasswd, policy=policy, issuer=issuer, realm=config.token_realm)


async def _off_loop(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


class Registry:
    """The request handlers, bound to one store and one configuration."""

    def __init__(self, config: RegistryConfig, driver: StorageDriver | None = None) -> None:
        self.config = config
        self.store = RegistryStore(driver or FilesystemDriver(config.root, durable=config.durable),
                                   lock_timeout=config.lock_timeout)
        self.uploads = Uploads(self.store)
        self.guard = make_guard(config)
        self.routes: list[tuple[re.Pattern[str], dict[str, Handler]]] = [
            (re.compile(r"/v2/?"), {"GET": self.base, "HEAD": self.base}),
            (re.compile(r"/v2/_catalog"), {"GET": self.catalog}),
            (re.compile(r"/v2/(?P<name>.+)/tags/list"), {"GET": self.tags_list}),
            (re.compile(r"/v2/(?P<name>.+)/manifests/(?P<reference>[^/]+)"),
             {"GET": self.get_manifest, "HEAD": self.get_manifest,
              "PUT": self.put_manifest, "DELETE": self.delete_manifest}),
            (re.compile(r"/v2/(?P<name>.+)/blobs/uploads/?"), {"POST": self.start_upload}),
            (re.compile(r"/v2/(?P<name>.+)/blobs/uploads/(?P<uuid>[^/]+)"),
             {"GET": self.upload_status, "PATCH": self.patch_upload,
              "PUT": self.finish_upload, "DELETE": self.cancel_upload}),
            (re.compile(r"/v2/(?P<name>.+)/blobs/(?P<digest>[^/]+)"),
             {"GET": self.get_blob, "HEAD": self.get_blob, "DELETE": self.delete_blob}),
            (re.compile(r"/v2/(?P<name>.+)/referrers/(?P<digest>[^/]+)"), {"GET": self.referrers}),
        ]

    # --- dispatch ----------------------------------------------------------

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        for pattern, methods in self.routes:
            m = pattern.fullmatch(path)
            if m is None:
                continue
            handler = methods.get(request.method)
            if handler is None:
                raise E.ApiError("UNSUPPORTED", f"{request.method} is not supported on {path}",
                                 headers={"Allow": ", ".join(methods)})
            params = m.groupdict()
            if "name" in params:
                check_name(params["name"])
            if self.guard is not None:
                await self._authorize(request, handler, params.get("name"))
            return await handler(request, **params)
        raise E.ApiError("UNSUPPORTED", "no such endpoint", detail={"path": path}, status=404)

    def _needed(self, request: web.Request, handler: Handler, name: str | None) -> list[Scope]:
        if handler == self.base:
            return []
        if handler == self.catalog:
            return [Scope("registry", "catalog", frozenset({"*"}))]
        if handler in (self.delete_manifest, self.delete_blob):
            return [Scope("repository", name, frozenset({"delete"}))]
        if request.method in ("GET", "HEAD") and handler != self.upload_status:
            return [Scope("repository", name, frozenset({"pull"}))]
        needed = [Scope("repository", name, frozenset({"pull", "push"}))]
        source = request.query.get("from")
        if handler == self.start_upload and "mount" in request.query and source and source != name:
            needed.append(Scope("repository", check_name(source), frozenset({"pull"})))
        return needed

    async def _authorize(self, request: web.Request, handler: Handler, name: str | None) -> None:
        needed = self._needed(request, handler, name)
        base_url = f"{request.scheme}://{request.host}"
        user = await _off_loop(self.guard.check, request.headers.get("Authorization"), needed, base_url)
        if user is not None:
            request[USER] = user

    async def token(self, request: web.Request) -> web.Response:
        """The token endpoint: GET (Basic credentials), or POST with an OAuth2 grant."""
        if request.method == "POST":
            form = await request.post()
            scopes = self._scopes(form.getall("scope", []))
            fields = {k: str(form.get(k, "")) for k in
                      ("grant_type", "client_id", "service", "username", "password", "refresh_token",
                       "access_type")}
            try:
                body = await _off_loop(self.guard.oauth, fields, scopes)
            except OAuthError as e:
                return web.json_response(e.body(), status=e.status, headers={"Cache-Control": "no-store"})
        else:
            scopes = self._scopes(request.query.getall("scope", []))
            offline = request.query.get("offline_token", "").lower() in ("true", "1")
            body = await _off_loop(self.guard.token, request.headers.get("Authorization"), scopes,
                                   offline)
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    @staticmethod
    def _scopes(texts) -> list[Scope]:
        scopes = [s for text in texts for part in str(text).split() if (s := Scope.parse(part)) is not None]
        for scope in scopes:
            if scope.type == "repository":
                check_name(scope.name)
        return scopes

    async def base(self, request: web.Request) -> web.Response:
        return web.json_response({})

    # --- listings ----------------------------------------------------------

    def _page(self, request: web.Request, items: list[str], url: str, key=None, default: int | None = None,
              keep: str = ""):
        """One page of ``items`` (sorted by ``key``) after ``last``, and the Link to the next one.

        Without ``n`` everything comes back, unless ``default`` is a page size
        (the referrers API may page on its own). ``keep`` is query text that
        every next link carries (a filter).
        """
        key = key or (lambda s: s)
        n_text, last = request.query.get("n"), request.query.get("last")
        if last:
            items = [i for i in items if key(i) > key(last)]
        if n_text is None and default is None:
            return items, None
        if n_text is not None and not n_text.isdigit():
            raise E.ApiError("UNSUPPORTED", "n must be a non-negative integer", status=400)
        n = min(int(n_text), self.config.max_page) if n_text is not None else default
        page = items[:n]
        if n == 0 or len(items) <= n:
            return page, None
        link = f'<{url}?n={n}&last={quote(page[-1], safe="")}{keep}>; rel="next"'
        return page, link

    async def tags_list(self, request: web.Request, name: str) -> web.Response:
        if not self.store.repo_exists(name):
            raise E.name_unknown(name)
        # "lexical order (i.e. case-insensitive alphanumeric order)"; ties by code point.
        def key(t: str) -> tuple[str, str]:
            return (t.lower(), t)
        tags = sorted(self.store.tags(name), key=key)
        page, link = self._page(request, tags, f"/v2/{name}/tags/list", key)
        return web.json_response({"name": name, "tags": page}, headers={"Link": link} if link else None)

    async def catalog(self, request: web.Request) -> web.Response:
        repos = await _off_loop(self.store.repositories)
        if self.guard is not None:
            user = request.get(USER)
            repos = [r for r in repos if "pull" in self.guard.policy.actions(user, r)]
        page, link = self._page(request, repos, "/v2/_catalog")
        return web.json_response({"repositories": page}, headers={"Link": link} if link else None)

    async def referrers(self, request: web.Request, name: str, digest: str) -> web.Response:
        check_digest(digest)
        # "MUST NOT return a 404" to a referrers request: clients take a 404 to mean the API is
        # missing and fall back to the tag schema, so a repository not yet pushed lists nothing.
        found = await _off_loop(self.store.referrers, name, digest)  # sorted by digest
        headers = {}
        keep = ""
        wanted = request.query.get("artifactType")
        if wanted is not None:
            found = [d for d in found if d.get("artifactType") == wanted]
            headers["OCI-Filters-Applied"] = "artifactType"
            keep = "&artifactType=" + quote(wanted, safe="")
        by_digest = {d["digest"]: d for d in found}
        page, link = self._page(request, list(by_digest), f"/v2/{name}/referrers/{digest}",
                                default=self.config.referrers_page, keep=keep)
        if link:
            headers["Link"] = link
        body = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [by_digest[d] for d in page]}
        return web.Response(body=json.dumps(body).encode(), content_type=mt.OCI_INDEX,
                            headers=headers)

    # --- manifests ---------------------------------------------------------

    async def get_manifest(self, request: web.Request, name: str, reference: str) -> web.Response:
        tag, digest = check_reference(reference)
        if not self.store.repo_exists(name):
            raise E.name_unknown(name)
        digest, media_type, data = self.store.get_manifest(name, tag, digest)
        headers = {"Docker-Content-Digest": digest, "ETag": f'"{digest}"'}
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(data))
            headers["Content-Type"] = media_type
            return web.Response(status=200, headers=headers)
        return web.Response(body=data, content_type=media_type, headers=headers)

    async def _read_limited(self, request: web.Request, limit: int) -> bytes:
        too_big = E.ApiError("MANIFEST_INVALID", f"manifest is larger than the limit of {limit} bytes",
                             status=413, detail={"limit": limit})
        if request.content_length is not None and request.content_length > limit:
            raise too_big
        chunks, size = [], 0
        while chunk := await request.content.readany():
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)

    async def put_manifest(self, request: web.Request, name: str, reference: str) -> web.Response:
        tag, digest = check_reference(reference)
        data = await self._read_limited(request, self.config.max_manifest_size)
        pushed = manifests.parse(data, request.headers.get("Content-Type"))
        algorithm = _digest.parse(digest)[0] if digest else _digest.CANONICAL
        actual = _digest.of_bytes(data, algorithm)
        if digest is not None and actual != digest:
            raise E.ApiError("DIGEST_INVALID", "manifest digest does not match its content",
                             detail={"expected": digest, "actual": actual})
        missing = await _off_loop(self.store.publish_manifest, name, actual, data, pushed, tag)
        if missing:
            entries = [{"code": "MANIFEST_BLOB_UNKNOWN", "message": "manifest references an unknown blob or manifest",
                        "detail": {"digest": d}} for d in missing[1:]]
            raise E.ApiError("MANIFEST_BLOB_UNKNOWN", "manifest references an unknown blob or manifest",
                             detail={"digest": missing[0]}, more=entries)
        headers = {"Location": f"/v2/{name}/manifests/{actual}", "Docker-Content-Digest": actual}
        if pushed.subject is not None:
            headers["OCI-Subject"] = pushed.subject.digest
        return web.Response(status=201, headers=headers)

    async def delete_manifest(self, request: web.Request, name: str, reference: str) -> web.Response:
        tag, digest = check_reference(reference)
        if not self.config.delete_enabled:
            raise E.unsupported("deleting manifests and tags")
        if not self.store.repo_exists(name):
            raise E.name_unknown(name)
        if tag is not None:
            await _off_loop(self.store.delete_tag, name, check_tag(tag))
        else:
            await _off_loop(self.store.delete_manifest, name, digest)
        return web.Response(status=202)

    # --- blobs -------------------------------------------------------------

    async def get_blob(self, request: web.Request, name: str, digest: str) -> web.StreamResponse:
        """A blob, or one byte range of it; read and written, not sent with sendfile (see .sending)."""
        check_digest(digest)
        size = self.store.linked_blob_size(name, digest)
        etag = f'"{digest}"'  # the content never changes under its digest, on any server or worker
        headers = {"Docker-Content-Digest": digest, "Content-Type": "application/octet-stream",
                   "Accept-Ranges": "bytes", "ETag": etag}
        if etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
        start, stop, status = 0, size, 200
        try:
            rng = request.http_range
        except ValueError:
            rng = slice(None, None)
        if rng.start is not None or rng.stop is not None:
            start = rng.start if rng.start is not None else 0
            stop = min(rng.stop if rng.stop is not None else size, size)
            if start < 0:
                start, stop = max(size + start, 0), size
            if start >= stop:
                return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = stop - start
        if request.method == "HEAD":
            await response.prepare(request)
            await response.write_eof()
            return response
        try:
            reader = self.store.open_blob(digest, start)
        except PathNotFound:
            raise E.blob_unknown(digest) from None  # removed since the size was read
        with reader:
            await response.prepare(request)
            await sending.send(response, reader, stop - start)
        await response.write_eof()
        return response

    async def delete_blob(self, request: web.Request, name: str, digest: str) -> web.Response:
        check_digest(digest)
        if not self.config.delete_enabled:
            raise E.unsupported("deleting blobs")
        if not self.store.unlink_blob(name, digest):
            raise E.blob_unknown(digest)
        return web.Response(status=202, headers={"Docker-Content-Digest": digest})

    # --- uploads -----------------------------------------------------------

    async def start_upload(self, request: web.Request, name: str) -> web.Response:
        mount = request.query.get("mount")
        if mount is not None:
            response = await self._mount(name, check_digest(mount), request.query.get("from"))
            if response is not None:
                return response
        digest = request.query.get("digest")
        if digest is not None:
            return await self._monolithic(request, name, check_digest(digest))
        upload = self.uploads.start(name)
        return web.Response(status=202, headers=_upload_headers(upload, 0))

    async def _mount(self, name: str, digest: str, source: str | None) -> web.Response | None:
        if source is not None:
            check_name(source)
        if not await _off_loop(self.store.mount, name, digest, source, self.config.mount_without_from):
            return None  # fall back to an ordinary upload (202)
        return _blob_created(name, digest)

    async def _monolithic(self, request: web.Request, name: str, digest: str) -> web.Response:
        upload = self.uploads.start(name)
        async with self.uploads.hold(upload):
            appender = self.uploads.writer(upload)
            try:
                await self._receive(request, upload, appender)
                await _off_loop(self.uploads.finish, upload, appender, digest)
            except BaseException:
                self.uploads.cancel(upload)
                raise
            finally:
                appender.close()
        return _blob_created(name, digest)

    def _check_limits(self, request: web.Request, received: int, total: int) -> None:
        chunk_max, blob_max = self.config.max_chunk_size, self.config.max_blob_size
        if chunk_max and received > chunk_max:
            raise E.ApiError("SIZE_INVALID", f"request body over the limit of {chunk_max} bytes",
                             status=413, detail={"limit": chunk_max})
        if blob_max and total > blob_max:
            raise E.ApiError("SIZE_INVALID", f"blob over the limit of {blob_max} bytes",
                             status=413, detail={"limit": blob_max})

    async def _receive(self, request: web.Request, upload: Upload, appender, limit: int | None = None) -> int:
        self._check_limits(request, request.content_length or 0, appender.size + (request.content_length or 0))
        received = 0
        while chunk := await request.content.readany():
            received += len(chunk)
            if limit is not None and received > limit:
                raise E.ApiError("SIZE_INVALID", "chunk is longer than its Content-Range")
            self._check_limits(request, received, appender.size + len(chunk))
            self.uploads.append(upload, appender, chunk)
        return received

    async def _receive_chunk(self, request: web.Request, upload: Upload, appender) -> None:
        """Append the request body; with a Content-Range, all of it or nothing."""
        header = request.headers.get("Content-Range")
        if header is None:
            await self._receive(request, upload, appender)  # streamed: keep what arrived
            return
        m = CONTENT_RANGE.fullmatch(header.strip())
        if m is None:
            raise E.ApiError("BLOB_UPLOAD_INVALID", "malformed Content-Range", status=416,
                             headers=_upload_headers(upload, appender.size))
        start, end = int(m.group(1)), int(m.group(2))
        if start != appender.size or end < start:
            raise E.ApiError("BLOB_UPLOAD_INVALID", "chunk out of order",
                             detail={"expected_start": appender.size, "range": header}, status=416,
                             headers=_upload_headers(upload, appender.size))
        length = end - start + 1
        if request.content_length is not None and request.content_length != length:
            raise E.ApiError("SIZE_INVALID", "Content-Length does not match Content-Range")
        mark = self.uploads.mark(upload, appender)
        try:
            received = await self._receive(request, upload, appender, limit=length)
            if received != length:
                raise E.ApiError("SIZE_INVALID", "chunk is shorter than its Content-Range")
        except BaseException:
            self.uploads.rollback(upload, appender, mark)
            raise

    async def upload_status(self, request: web.Request, name: str, uuid: str) -> web.Response:
        upload = self.uploads.get(name, uuid)
        return web.Response(status=204, headers=_upload_headers(upload, self.uploads.size(upload)))

    async def patch_upload(self, request: web.Request, name: str, uuid: str) -> web.Response:
        upload = self.uploads.get(name, uuid)
        async with self.uploads.hold(upload):
            appender = await _off_loop(self.uploads.writer, upload)
            try:
                await self._receive_chunk(request, upload, appender)
                size = appender.size
            finally:
                appender.close()
        return web.Response(status=202, headers=_upload_headers(upload, size))

    async def finish_upload(self, request: web.Request, name: str, uuid: str) -> web.Response:
        digest = check_digest(request.query.get("digest"))
        upload = self.uploads.get(name, uuid)
        async with self.uploads.hold(upload):
            appender = await _off_loop(self.uploads.writer, upload)
            try:
                if request.body_exists:
                    await self._receive_chunk(request, upload, appender)
                await _off_loop(self.uploads.finish, upload, appender, digest)
            except E.ApiError as e:
                if e.code == "DIGEST_INVALID":
                    self.uploads.cancel(upload)
                raise
            finally:
                appender.close()
        return _blob_created(name, digest)

    async def cancel_upload(self, request: web.Request, name: str, uuid: str) -> web.Response:
        upload = self.uploads.get(name, uuid)
        async with self.uploads.hold(upload):
            self.uploads.cancel(upload)
        return web.Response(status=204)


@web.middleware
async def _errors(request: web.Request, handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except LockTimeout as e:
        # another process (a replica, gc) held a lock of the storage root for too long
        busy = E.ApiError("TOOMANYREQUESTS", "the registry is busy: " + e.message, headers={"Retry-After": "1"})
        return web.Response(status=busy.status, body=busy.body(), headers=busy.headers,
                            content_type="application/json")
    except E.ApiError as e:
        return web.Response(status=e.status, body=e.body(), headers=e.headers,
                            content_type="application/json")


async def _api_version(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault(*API_VERSION)


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(text=request.app[METRICS].render(), content_type="text/plain",
                        headers={"Cache-Control": "no-store"})


def make_app(config: RegistryConfig | None = None, driver: StorageDriver | None = None) -> web.Application:
    """The registry as an aiohttp application (serve it with ``ocibox.registry.serve``)."""
    config = config or RegistryConfig()
    registry = Registry(config, driver)
    app = web.Application(middlewares=[_errors], client_max_size=config.max_manifest_size + 1)
    app[CONFIG] = config
    app[STORE] = registry.store
    app[UPLOADS] = registry.uploads
    app[METRICS] = Metrics()
    app.router.add_get("/healthz", _health)
    if config.metrics:
        app.router.add_get("/metrics", _metrics)
    if registry.guard is not None and registry.guard.mode == "token":
        app.router.add_route("GET", "/token", registry.token)
        app.router.add_route("POST", "/token", registry.token)
    app.router.add_route("*", "/v2", registry.dispatch)
    app.router.add_route("*", "/v2/{tail:.*}", registry.dispatch)
    app.on_response_prepare.append(_api_version)
    return app

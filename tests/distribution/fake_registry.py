"""A small misbehaving registry for fault tests, serving one image from a layout.

It runs in a thread with its own event loop. ``faults`` switches behaviours on:
``drop`` (close the connection half-way through every full blob GET; ranged GETs
are served), ``wrong`` (blob bytes of the right length but other content),
``basic`` (Basic auth, user/secret), ``bearer`` (token flow with scopes),
``mediatype`` (manifests served with an unknown Content-Type), ``flaky`` (the
first two requests of each path answer 503), ``ratelimit`` (the first request of
each path answers 429 with Retry-After: 1), ``norange`` (Range ignored),
``oauth`` (with ``bearer``: the token endpoint also takes the OAuth2 POST
grant_type=refresh_token with refresh_token "refresh-secret"), ``revoke`` (with
``bearer``: the tokens issued so far are revoked after the first manifest GET,
which then answers 401 with error="invalid_token").

Tokens are "good-token", then "good-token-2", ...; ``token_expires_in`` and
``token_issued_ago`` (seconds before now, as issued_at) shape the token answers.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections import Counter

from aiohttp import web

from ocibox.image.layout import Layout


class FakeRegistry:
    def __init__(self, layout_path: str, tag: str = "v1", faults: set[str] | None = None) -> None:
        self.layout = Layout.open(layout_path)
        self.tag = tag
        self.faults = set(faults or ())
        self.log: list[tuple[str, str, str]] = []  # (method, path, range)
        self.hits: Counter = Counter()
        self.tokens_issued: list[list[str]] = []
        self.auth_seen: list[str] = []
        self.valid_tokens = {"good-token"}
        self.oauth_forms: list[dict[str, str]] = []
        self.token_expires_in = 300
        self.token_issued_ago: float | None = None
        self.next_link: str | None = None  # a Link: rel="next" for the tag list
        self.blob_redirect: str | None = None  # "http://host": blob GETs answer 307 to host + path
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    # --- lifecycle ---------------------------------------------------------------

    def __enter__(self) -> FakeRegistry:
        self._thread.start()
        self._started.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/token", self.token)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self._started.set()
        await self._stop.wait()
        await runner.cleanup()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    # --- auth --------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if "basic" in self.faults:
            return header == "Basic " + base64.b64encode(b"user:secret").decode()
        if "bearer" in self.faults:
            return header.startswith("Bearer ") and header[7:] in self.valid_tokens
        return True

    def _challenge(self, request: web.Request) -> web.Response:
        if "basic" in self.faults:
            value = 'Basic realm="fake"'
        else:
            value = f'Bearer realm="http://{self.host}/token",service="fake"'
            if request.headers.get("Authorization", "").startswith("Bearer "):
                value += ',error="invalid_token"'
        return web.json_response({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                                 status=401, headers={"WWW-Authenticate": value})

    async def token(self, request: web.Request) -> web.Response:
        if request.method == "POST" and "oauth" in self.faults:
            form = await request.post()
            self.oauth_forms.append({k: ",".join(form.getall(k)) for k in form})
            self.tokens_issued.append(form.getall("scope", []))
            if form.get("grant_type") != "refresh_token" or form.get("refresh_token") != "refresh-secret":
                return web.json_response({"error": "invalid_grant"}, status=400)
            return web.json_response({"access_token": self._issue(), "expires_in": self.token_expires_in})
        self.tokens_issued.append(request.query.getall("scope", []))
        if request.headers.get("Authorization") != "Basic " + base64.b64encode(b"user:secret").decode():
            return web.json_response({"details": "bad credentials"}, status=401)
        answer = {"token": self._issue(), "expires_in": self.token_expires_in}
        if self.token_issued_ago is not None:
            answer["issued_at"] = time.strftime("%Y-%m-%dT%H:%M:%S.123456789Z",
                                                time.gmtime(time.time() - self.token_issued_ago))
        return web.json_response(answer)

    def _issue(self) -> str:
        n = len(self.tokens_issued)
        token = "good-token" if n <= 1 else f"good-token-{n}"
        self.valid_tokens.add(token)
        return token

    # --- registry ----------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.log.append((request.method, path, request.headers.get("Range", "")))
        self.auth_seen.append(request.headers.get("Authorization", ""))
        self.hits[path] += 1
        if "flaky" in self.faults and self.hits[path] <= 2:
            return web.Response(status=503)
        if "ratelimit" in self.faults and self.hits[path] <= 1:
            return web.json_response({"errors": [{"code": "TOOMANYREQUESTS", "message": "slow down"}]},
                                     status=429, headers={"Retry-After": "1"})
        if not self._authorized(request):
            return self._challenge(request)
        if "revoke" in self.faults and "/manifests/" in path and self.hits[path] == 1:
            self.valid_tokens.clear()  # revoked after this answer
        if path == "/v2/":
            return web.json_response({})
        parts = path.split("/")
        if len(parts) >= 5 and parts[-2] == "manifests":
            return self._manifest(request, parts[-1])
        if len(parts) >= 5 and parts[-2] == "blobs":
            if self.blob_redirect and request.method == "GET":
                return web.Response(status=307, headers={"Location": f"{self.blob_redirect}{path}?sig=x"})
            return await self._blob(request, parts[-1])
        if path.endswith("/tags/list"):
            headers = {"Link": f'<{self.next_link}>; rel="next"'} if self.next_link and not request.query else {}
            return web.json_response({"name": "x", "tags": [self.tag if not request.query else "other"]},
                                     headers=headers)
        return web.json_response({"errors": [{"code": "UNSUPPORTED", "message": "no"}]}, status=404)

    def _manifest(self, request: web.Request, ref: str) -> web.Response:
        desc = self.layout.resolve(self.tag) if ref == self.tag else None
        if desc is None:
            desc = next((m for m in self.layout.index().manifests if m.digest == ref), None)
        if desc is None and self.layout.blobs.has(ref) if ref.startswith("sha256:") else False:
            data = self.layout.blobs.read(ref)
            media_type = json.loads(data).get("mediaType")
        elif desc is None:
            return web.json_response({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "unknown"}]},
                                     status=404)
        else:
            data = self.layout.blobs.read(desc.digest)
            media_type = desc.media_type
        if "mediatype" in self.faults:
            media_type = "application/vnd.example.unknown+json"
        headers = {"Content-Type": media_type, "Docker-Content-Digest": desc.digest if desc else ref}
        body = b"" if request.method == "HEAD" else data
        return web.Response(body=body, headers=headers)

    async def _blob(self, request: web.Request, dig: str) -> web.StreamResponse:
        if not self.layout.blobs.has(dig):
            return web.json_response({"errors": [{"code": "BLOB_UNKNOWN", "message": "unknown"}]}, status=404)
        with self.layout.blobs.open(dig) as f:
            data = f.read()
        if "wrong" in self.faults and len(data) > 1000:
            data = bytes(len(data))
        if request.method == "HEAD":
            return web.Response(headers={"Content-Length": str(len(data)), "Docker-Content-Digest": dig})
        rng = request.headers.get("Range", "")
        start = 0
        if rng.startswith("bytes=") and "norange" not in self.faults:
            start = int(rng[6:].split("-")[0])
        resp = web.StreamResponse(status=206 if start else 200)
        resp.content_length = len(data) - start
        resp.content_type = "application/octet-stream"
        if start:
            resp.headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        await resp.prepare(request)
        body = data[start:]
        if "drop" in self.faults and start == 0 and len(data) > 1000:
            await resp.write(body[: len(body) // 2])
            request.transport.close()
            return resp
        await resp.write(body)
        await resp.write_eof()
        return resp

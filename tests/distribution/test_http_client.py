"""ocibox's HTTP/1.1 client (distribution/_http.py) against small real servers on
loopback sockets: framing (Content-Length, chunked, read to close, HEAD, 204),
keep-alive reuse, half-read responses, dropped connections, strict parsing,
redirects, timeouts and proxies (absolute-form and CONNECT)."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
from collections.abc import Awaitable, Callable

import pytest

from conftest import need
from ocibox.distribution import _http

Handler = Callable[["Req", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool | None]]


class Req:
    def __init__(self, method: str, target: str, headers: dict[str, str], body: bytes) -> None:
        self.method, self.target, self.headers, self.body = method, target, headers, body


async def read_request(reader: asyncio.StreamReader) -> Req | None:
    line = await reader.readline()
    if not line:
        return None
    method, target, _ = line.decode().split(" ", 2)
    headers: dict[str, str] = {}
    while (h := await reader.readline()) not in (b"\r\n", b""):
        k, _, v = h.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    body = b""
    if headers.get("transfer-encoding") == "chunked":
        while True:
            n = int((await reader.readline()).split(b";")[0], 16)
            if n == 0:
                await reader.readline()
                break
            body += await reader.readexactly(n)
            await reader.readexactly(2)
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    return Req(method, target, headers, body)


class Server:
    """A loopback HTTP server: ``handler(req, reader, writer)`` writes the answer and
    returns False to close the connection. Counts connections and keeps requests."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.connections = 0
        self.requests: list[Req] = []

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    async def _serve(self, reader, writer) -> None:
        self.connections += 1
        try:
            while (req := await read_request(reader)) is not None:
                self.requests.append(req)
                if await self.handler(req, reader, writer) is False:
                    break
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def answer(status: int = 200, body: bytes = b"", headers: dict[str, str] | None = None,
           length: bool = True) -> bytes:
    lines = [f"HTTP/1.1 {status} X"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)


def test_content_length_keep_alive_and_streaming_pieces():
    blob = os.urandom(3 * 1024 * 1024 + 5)

    async def handler(req, reader, writer):
        body = blob if req.target == "/blob" else b"hi"
        head = answer(200, b"", {"Content-Length": str(len(body))}, length=False)
        writer.write(head + (body if req.method != "HEAD" else b""))

    async def go():
        async with Server(handler) as srv:
            pool = _http.Pool()
            r = await pool.request("GET", srv.url + "/blob")
            assert r.status == 200 and r.content_length == len(blob)
            pieces = [p async for p in r.iter_chunks()]
            assert b"".join(pieces) == blob
            assert all(len(p) >= 256 * 1024 for p in pieces[:-1]) and len(pieces) >= 3
            head = await pool.request("HEAD", srv.url + "/blob")
            assert head.status == 200 and head.headers["content-length"] == str(len(blob))
            assert await head.read() == b"" and head.done  # no body after HEAD
            small = await pool.request("GET", srv.url + "/x")
            assert await small.read() == b"hi"
            assert srv.connections == 1 and len(srv.requests) == 3  # one kept-alive connection
            await pool.close()
    run(go())


def test_slow_reader_leaves_the_rest_in_the_socket():
    """Between a body's pieces the connection buffers at most BUFFER bytes, however much
    the server has sent: reading pauses and the rest waits in the kernel."""
    blob = os.urandom(8 * 1024 * 1024)

    async def handler(req, reader, writer):
        writer.write(answer(200, blob))

    async def go():
        async with Server(handler) as srv:
            pool = _http.Pool()
            r = await pool.request("GET", srv.url + "/blob")
            got = bytearray()
            sizes = []
            async for piece in r.iter_chunks():
                got += piece
                sizes.append(len(piece))
                await asyncio.sleep(0.02)  # a slow disk: the server is far ahead
                conn = r._conn
                if conn is not None:
                    assert len(conn.reader._buf) <= _http.BUFFER, len(conn.reader._buf)
            assert bytes(got) == blob and max(sizes) <= _http.CHUNK
            await pool.close()
    run(go())


def test_chunked_response_204_and_read_to_close():
    async def handler(req, reader, writer):
        if req.target == "/chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for part in (b"hello ", b"chunked ", b"world"):
                writer.write(b"%x;ext=1\r\n%s\r\n" % (len(part), part))
                await writer.drain()
            writer.write(b"0\r\nX-Trailer: t\r\n\r\n")
        elif req.target == "/none":
            writer.write(b"HTTP/1.1 204 No Content\r\nX: y\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
            return False

    async def go():
        async with Server(handler) as srv:
            pool = _http.Pool()
            r = await pool.request("GET", srv.url + "/chunked")
            assert await r.read() == b"hello chunked world"
            r = await pool.request("GET", srv.url + "/none")
            assert r.status == 204 and await r.read() == b""
            assert srv.connections == 1
            r = await pool.request("GET", srv.url + "/close")
            assert await r.read() == b"until the end"
            r = await pool.request("GET", srv.url + "/chunked")
            assert await r.read() == b"hello chunked world"
            assert srv.connections == 2  # a read-to-close connection is never reused
            await pool.close()
    run(go())


def test_request_bodies_length_and_chunked():
    async def handler(req, reader, writer):
        writer.write(answer(201, req.body + req.headers.get("transfer-encoding", "").encode()))

    async def parts():
        for i in range(5):
            yield bytes([65 + i]) * 100_000

    async def go():
        async with Server(handler) as srv:
            pool = _http.Pool()
            r = await pool.request("PUT", srv.url + "/a", body=parts(), headers={"Content-Length": "500000"})
            data = await r.read()
            assert data[:500_000] == b"".join(bytes([65 + i]) * 100_000 for i in range(5)) and len(data) == 500_000
            r = await pool.request("PATCH", srv.url + "/b", body=parts())
            assert (await r.read()).endswith(b"chunked")
            r = await pool.request("POST", srv.url + "/c", body=b"form=1")
            assert await r.read() == b"form=1"
            r = await pool.request("POST", srv.url + "/d")
            assert await r.read() == b"" and srv.requests[-1].headers["content-length"] == "0"
            with pytest.raises(_http.ProtocolError, match="Content-Length"):
                await pool.request("PUT", srv.url + "/e", body=parts(), headers={"Content-Length": "10"})
            assert srv.connections >= 1
            await pool.close()
    run(go())


def test_half_read_response_does_not_poison_the_connection():
    big = os.urandom(2 << 20)

    async def handler(req, reader, writer):
        body = big if req.target == "/big" else b"small body " + req.target.encode()
        writer.write(answer(200, body))

    async def go():
        async with Server(handler) as srv:
            pool = _http.Pool()
            r = await pool.request("GET", srv.url + "/small")
            await r.aclose()  # unread, but small: drained, the connection kept
            r = await pool.request("GET", srv.url + "/next")
            assert await r.read() == b"small body /next"
            assert srv.connections == 1
            r = await pool.request("GET", srv.url + "/big")
            async for _ in r.iter_chunks(256 * 1024):
                break
            await r.aclose()  # most of 2 MiB left: the connection is closed, not reused
            r = await pool.request("GET", srv.url + "/after")
            assert await r.read() == b"small body /after"
            assert srv.connections == 2
            await pool.close()
    run(go())


def test_server_closing_mid_body_raises_a_connection_error():
    async def handler(req, reader, writer):
        writer.write(answer(200, b"x" * 1000, {"Content-Length": "5000"}, length=False))
        await writer.drain()
        return False

    async def go():
        async with Server(handler) as srv:
            pool = _http.Pool()
            r = await pool.request("GET", srv.url + "/")
            got = bytearray()
            with pytest.raises(ConnectionError, match="4000 bytes of the body missing"):
                async for piece in r.iter_chunks():
                    got += piece
            assert bytes(got) == b"x" * 1000  # what did arrive is handed out first (for Range resume)
            await pool.close()
    run(go())


def test_stale_kept_alive_connection_is_replaced():
    async def handler(req, reader, writer):
        writer.write(answer(200, b"ok"))
        return False  # close after every answer, without saying Connection: close

    async def go():
        async with Server(handler) as srv:
            pool = _http.Pool()
            for _ in range(3):
                r = await pool.request("GET", srv.url + "/")
                assert await r.read() == b"ok"
                await asyncio.sleep(0.05)
            assert srv.connections == 3
            await pool.close()
    run(go())


@pytest.mark.parametrize("raw, message", [
    (b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", None),  # no reason phrase: valid
    (b"ICY 200 OK\r\n\r\n", "malformed HTTP status line"),
    (b"HTTP/1.1 20 OK\r\n\r\n", "malformed HTTP status line"),
    (b"HTTP/2 200 OK\r\n\r\n", "malformed HTTP status line"),
    (b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n", "malformed response header"),
    (b"HTTP/1.1 200 OK\r\n folded: x\r\n\r\n", "malformed response header"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\nabc", "bad Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "bad Content-Length"),
    (b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"a" * 300_000 + b"\r\n\r\n", "(longer|larger) than"),
    (b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 600) for i in range(120)) + b"\r\n",
     "headers larger than"),
    (b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(200)) + b"\r\n",
     "more than 128 response headers"),
])
def test_strict_and_bounded_response_parsing(raw, message):
    async def handler(req, reader, writer):
        writer.write(raw)
        return False

    async def go():
        async with Server(handler) as srv:
            pool = _http.Pool()
            try:
                if message is None:
                    r = await pool.request("GET", srv.url + "/")
                    assert r.status == 200 and r.reason == ""
                else:
                    with pytest.raises(_http.ProtocolError, match=message):
                        await pool.request("GET", srv.url + "/")
            finally:
                await pool.close()
    run(go())


def test_bad_chunk_framing_is_a_protocol_error():
    async def handler(req, reader, writer):
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n")
        return False

    async def go():
        async with Server(handler) as srv:
            pool = _http.Pool()
            r = await pool.request("GET", srv.url + "/")
            with pytest.raises(_http.ProtocolError, match="bad chunk size"):
                await r.read()
            await pool.close()
    run(go())


def test_redirects_drop_authorization_on_another_host():
    async def storage(req, reader, writer):
        writer.write(answer(200, b"blob bytes " + req.headers.get("range", "").encode()))

    async def go():
        async with Server(storage) as other:
            async def registry(req, reader, writer):
                if req.target == "/v2/blob":
                    # absolute Location to another host (object storage)
                    writer.write(answer(307, b"moved", {"Location": f"http://localhost:{other.port}/o?sig=1"}))
                elif req.target == "/v2/rel":
                    writer.write(answer(302, b"", {"Location": "../v2/final"}))
                elif req.target == "/v2/loop":
                    writer.write(answer(302, b"", {"Location": "/v2/loop"}))
                else:
                    writer.write(answer(200, b"final"))

            async with Server(registry) as reg:
                pool = _http.Pool()
                hdrs = {"Authorization": "Bearer secret", "Range": "bytes=5-"}
                r = await pool.request("GET", reg.url + "/v2/blob", headers=hdrs)
                assert await r.read() == b"blob bytes bytes=5-"
                assert r.url == f"http://localhost:{other.port}/o?sig=1"
                assert "authorization" not in other.requests[-1].headers
                assert reg.requests[-1].headers["authorization"] == "Bearer secret"
                r = await pool.request("GET", reg.url + "/v2/rel", headers=hdrs)
                assert await r.read() == b"final"
                assert reg.requests[-1].target == "/v2/final"
                assert reg.requests[-1].headers["authorization"] == "Bearer secret"  # same host keeps it
                r = await pool.request("GET", reg.url + "/v2/blob", follow_redirects=False)
                assert r.status == 307 and await r.read() == b"moved"
                with pytest.raises(_http.ProtocolError, match="more than 10 redirects"):
                    await pool.request("GET", reg.url + "/v2/loop")
                await pool.close()
    run(go())


def test_timeouts_and_refused_connections():
    async def silent(req, reader, writer):
        await asyncio.sleep(5)

    async def go():
        async with Server(silent) as srv:
            pool = _http.Pool(read_timeout=0.3)
            with pytest.raises(TimeoutError, match="no response within 0.3 s"):
                await pool.request("GET", srv.url + "/")
            await pool.close()
        port = srv.port  # closed now
        pool = _http.Pool()
        with pytest.raises(ConnectionError, match="cannot connect to 127.0.0.1"):
            await pool.request("GET", f"http://127.0.0.1:{port}/")
        await pool.close()
    run(go())


def test_concurrency_bound():
    active = 0
    peak = 0

    async def handler(req, reader, writer):
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.05)
        active -= 1
        writer.write(answer(200, b"ok"))

    async def go():
        async with Server(handler) as srv:
            pool = _http.Pool(limit=3)

            async def one():
                r = await pool.request("GET", srv.url + "/")
                return await r.read()

            assert await asyncio.gather(*(one() for _ in range(10))) == [b"ok"] * 10
            assert peak == 3 and srv.connections == 3
            await pool.close()
    run(go())


# --- proxies -------------------------------------------------------------------------


class Proxy:
    """An HTTP proxy on loopback: absolute-form requests are forwarded to
    ``targets[host]``; CONNECT host:port opens a tunnel to ``targets[host]``."""

    def __init__(self, targets: dict[str, int]) -> None:
        self.targets = targets
        self.seen: list[str] = []
        self.auth: list[str] = []

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()

    async def _serve(self, reader, writer) -> None:
        try:
            req = await read_request(reader)
            if req is None:
                return
            self.seen.append(f"{req.method} {req.target}")
            self.auth.append(req.headers.get("proxy-authorization", ""))
            if req.method == "CONNECT":
                host = req.target.rsplit(":", 1)[0]
                if host not in self.targets:
                    writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                    return
                up_r, up_w = await asyncio.open_connection("127.0.0.1", self.targets[host])
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

                async def pipe(a, b):
                    try:
                        while data := await a.read(65536):
                            b.write(data)
                            await b.drain()
                    except ConnectionError:
                        pass
                    finally:
                        b.close()

                await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
                return
            # absolute form: forward one request
            assert req.target.startswith("http://")
            host = req.target[7:].split("/", 1)[0].split(":")[0]
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.targets[host])
            path = "/" + req.target[7:].split("/", 1)[1]
            up_w.write(f"{req.method} {path} HTTP/1.1\r\nHost: {req.headers['host']}\r\n"
                       f"Connection: close\r\n\r\n".encode())
            up_w.write_eof()
            writer.write(await up_r.read())
            up_w.close()
        finally:
            writer.close()


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    need("openssl")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=registry.test",
                    "-addext", "subjectAltName=DNS:registry.test,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return str(cert), str(key)


def _server_tls(cert, key) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


def test_http_proxy_absolute_form(monkeypatch):
    async def handler(req, reader, writer):
        writer.write(answer(200, f"origin saw {req.method} {req.target} host={req.headers['host']}".encode()))

    async def go():
        async with Server(handler) as origin, Proxy({"registry.test": origin.port}) as proxy:
            monkeypatch.setenv("HTTP_PROXY", f"http://user:p%40ss@127.0.0.1:{proxy.port}")
            monkeypatch.setenv("NO_PROXY", "other.test")
            pool = _http.Pool()
            r = await pool.request("GET", f"http://registry.test:{origin.port}/v2/x?a=1")
            assert await r.read() == f"origin saw GET /v2/x?a=1 host=registry.test:{origin.port}".encode()
            assert proxy.seen == [f"GET http://registry.test:{origin.port}/v2/x?a=1"]
            assert proxy.auth == ["Basic dXNlcjpwQHNz"]  # user:p@ss
            # loopback and NO_PROXY hosts go direct
            r = await pool.request("GET", f"{origin.url}/direct")
            assert (await r.read()).startswith(b"origin saw GET /direct")
            assert len(proxy.seen) == 1
            await pool.close()
    run(go())


def test_https_through_connect_tunnel(monkeypatch, tls_files):
    cert, key = tls_files

    async def handler(req, reader, writer):
        writer.write(answer(200, f"tls origin {req.target}".encode()))

    async def go():
        async with Server(handler, tls=_server_tls(cert, key)) as origin, \
                Proxy({"registry.test": origin.port}) as proxy:
            monkeypatch.setenv("HTTPS_PROXY", f"127.0.0.1:{proxy.port}")
            pool = _http.Pool(ssl_context=lambda: ssl.create_default_context(cafile=cert))
            r = await pool.request("GET", f"https://registry.test:{origin.port}/v2/")
            assert await r.read() == b"tls origin /v2/"
            r = await pool.request("GET", f"https://registry.test:{origin.port}/v2/again")
            assert await r.read() == b"tls origin /v2/again"
            assert proxy.seen == [f"CONNECT registry.test:{origin.port}"]  # the tunnel is kept alive
            with pytest.raises(_http.ProxyError, match="refused CONNECT elsewhere.test:443: 403"):
                await pool.request("GET", "https://elsewhere.test/v2/")
            await pool.close()
            # a certificate that does not verify is its own error
            pool = _http.Pool()
            with pytest.raises(_http.CertificateError):
                await pool.request("GET", f"https://registry.test:{origin.port}/v2/")
            await pool.close()
    run(go())


def test_unsupported_proxy_scheme_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "socks5://127.0.0.1:1080")

    async def go():
        pool = _http.Pool()
        with pytest.raises(_http.ProxyError, match="only http:// proxies are supported"):
            await pool.request("GET", "https://registry.test/v2/")
    run(go())


@pytest.mark.parametrize("host, port, rules, expected", [
    ("registry.test", 443, "", False),
    ("registry.test", 443, "*", True),
    ("registry.test", 443, "registry.test", True),
    ("a.registry.test", 443, "registry.test", True),
    ("a.registry.test", 443, ".registry.test", True),
    ("registry.test", 443, ".registry.test", True),
    ("xregistry.test", 443, "registry.test", False),
    ("registry.test", 443, "registry.test:5000", False),
    ("registry.test", 5000, "registry.test:5000", True),
    ("10.1.2.3", 80, "10.0.0.0/8", True),
    ("11.1.2.3", 80, "10.0.0.0/8, other", False),
    ("[::1]", 80, "::1", True),
])
def test_no_proxy_rules(host, port, rules, expected):
    assert _http._no_proxy_match(_http._host_only(host), port, rules) is expected


def test_plain_http_makes_no_ssl_context(monkeypatch):
    made = []

    async def handler(req, reader, writer):
        writer.write(answer(200, b"plain"))

    async def go():
        async with Server(handler) as srv:
            pool = _http.Pool(ssl_context=lambda: made.append(1))
            r = await pool.request("GET", srv.url + "/")
            assert await r.read() == b"plain"
            await pool.close()
    run(go())
    assert made == []


def test_stray_bytes_after_a_response_retire_the_connection():
    async def handler(req, reader, writer):
        writer.write(answer(200, b"ok") + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray")

    async def go():
        async with Server(handler) as srv:
            pool = _http.Pool()
            for _ in range(2):
                r = await pool.request("GET", srv.url + "/")
                assert await r.read() == b"ok"
                await asyncio.sleep(0.05)
            assert srv.connections == 2  # the first connection had unasked-for bytes waiting
            await pool.close()
    run(go())


def test_read_timeout_is_an_idle_timeout():
    """A body that keeps trickling in is read however long it takes; a stall of more
    than the timeout fails with a TimeoutError."""
    async def handler(req, reader, writer):
        writer.write(answer(200, b"", {"Content-Length": "200"}, length=False))
        for i in range(10):
            if req.target == "/stall" and i == 5:
                await asyncio.sleep(1.0)
            writer.write(b"x" * 20)
            await writer.drain()
            await asyncio.sleep(0.1)

    async def go():
        async with Server(handler) as srv:
            pool = _http.Pool(read_timeout=0.4)
            r = await pool.request("GET", srv.url + "/trickle")
            assert await r.read() == b"x" * 200  # about a second in all, never 0.4 s idle
            r = await pool.request("GET", srv.url + "/stall")
            with pytest.raises(TimeoutError, match="no data for 0.4 s"):
                await r.read()
            await pool.close()
    run(go())

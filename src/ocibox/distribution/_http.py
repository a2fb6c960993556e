"""A lean HTTP/1.1 client on asyncio transports, for the registry client.

Why not aiohttp: importing its client costs ~120 ms (it makes SSL contexts at
import), more than a whole pull of a small image. This module does what the
registry client needs and no more:

- a pool of keep-alive connections per (scheme, host, port, proxy) with one
  bound on the requests in flight;
- request bodies as bytes or async iterables (with Content-Length when the
  caller gives one, else chunked);
- response bodies by Content-Length, chunked transfer-encoding or read to close,
  streamed in 256 KiB pieces (the connection's own 64 KiB buffer pauses reading
  when full: a slow consumer leaves the rest in the kernel, not in our memory);
  a response left half-read is drained when its rest is
  small, else its connection is closed (never handed back dirty);
- sockets read with ``recv_into`` into the buffers handed to the caller (one
  copy of a layer's bytes, the kernel's);
- redirects (Authorization is dropped when the scheme, host or port changes), a
  connect timeout and an idle read timeout, strict and bounded parsing of status
  lines and headers;
- TLS with a context made on first use; HTTP_PROXY / HTTPS_PROXY / NO_PROXY as
  Go's net/http (and so skopeo) reads them: absolute-form requests for http, a
  CONNECT tunnel for https; loopback is never proxied; a proxy that is not
  http:// (https://, socks5://) is a ``ProxyError``, not silently ignored.

Failures are ``HTTPError`` subclasses; those worth a retry (a dropped or
refused connection, a timeout) are also ``ConnectionError`` or ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import time
import urllib.parse
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import Any

CHUNK = 256 << 10        # body pieces handed to the caller: six blobs at once stay small
MIN_PIECE = 256 << 10    # chunked / read-to-close bodies are gathered to at least this
STREAM_LIMIT = 256 << 10  # bounds one header line (the buffer grows that far only for one)
BUFFER = 64 << 10        # the connection's own buffer; reading pauses when it is full
MAX_HEADERS = 128
MAX_HEADER_BYTES = 64 << 10
DRAIN_MAX = 64 << 10     # a rest this small is read to keep the connection
IDLE_KEEP = 30.0         # pooled connections older than this are not reused
MAX_REDIRECTS = 10

_STATUS = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9][0-9])(?: ([^\r\n]*))?\r?\n")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\r\n\0]")


class HTTPError(Exception):
    """Any failure below the HTTP status: connecting, TLS, protocol, proxy."""


class ProtocolError(HTTPError):
    """The peer answered something that is not a valid HTTP/1.1 response."""


class CertificateError(HTTPError):
    """The server's TLS certificate did not verify."""


class ProxyError(HTTPError):
    """A proxy from the environment is unusable or refused the tunnel."""


class ConnectError(HTTPError, ConnectionError):
    """The connection could not be made (refused, unresolvable, TLS handshake failed)."""


class ConnectionDropped(HTTPError, ConnectionError):
    """The connection broke, or closed before the whole response arrived."""


class Timeout(HTTPError, TimeoutError):
    """Connecting, or waiting for the next bytes, took longer than allowed."""


class Headers:
    """Response headers: case-insensitive; repeated fields joined with ", "."""

    __slots__ = ("_d",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        d: dict[str, str] = {}
        for k, v in items:
            k = k.lower()
            d[k] = f"{d[k]}, {v}" if k in d else v
        self._d = d

    def get(self, name: str, default: Any = None) -> Any:
        return self._d.get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return self._d[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._d

    def items(self):
        return self._d.items()

    def __repr__(self) -> str:
        return f"Headers({self._d!r})"


# --- proxies ---------------------------------------------------------------------


def _env(name: str) -> str:
    return os.environ.get(name) or os.environ.get(name.lower()) or ""


def _host_only(host: str) -> str:
    return host[1:-1] if host.startswith("[") else host


def _no_proxy_match(host: str, port: int, rules: str) -> bool:
    """NO_PROXY as Go's httpproxy reads it: "*", host[:port], .domain or domain
    (both cover subdomains), IP addresses and CIDR ranges."""
    host = host.lower().rstrip(".")
    for rule in (r.strip().lower() for r in rules.split(",")):
        if not rule:
            continue
        if rule == "*":
            return True
        if "/" in rule:  # CIDR
            import ipaddress

            try:
                if ipaddress.ip_address(host) in ipaddress.ip_network(rule, strict=False):
                    return True
            except ValueError:
                pass
            continue
        if rule.count(":") > 1 and not rule.startswith("["):
            name, rule_port = rule, None  # a bare IPv6 address
        else:
            m = re.fullmatch(r"(\[[^\]]+\]|[^:]+)(?::(\d+))?", rule)
            if not m:
                continue
            name, rule_port = _host_only(m.group(1)).rstrip("."), m.group(2)
        if rule_port is not None and int(rule_port) != port:
            continue
        if name.startswith("*."):
            name = name[1:]
        if host == name.lstrip(".") or host.endswith("." + name.lstrip(".")):
            return True
    return False


def _is_loopback(host: str) -> bool:
    return host == "localhost" or host.startswith("127.") or host == "::1"


class Proxy:
    __slots__ = ("host", "port", "auth", "url")

    def __init__(self, url: str) -> None:
        if "://" not in url:
            url = "http://" + url  # Go accepts a bare host:port
        u = urllib.parse.urlsplit(url)
        if u.scheme != "http":
            raise ProxyError(f"proxy {u.scheme}://{u.hostname}: only http:// proxies are supported")
        if not u.hostname:
            raise ProxyError(f"proxy {url!r}: no host")
        self.host = u.hostname
        self.port = u.port or 80
        self.auth = None
        if u.username is not None:
            user = urllib.parse.unquote(u.username)
            password = urllib.parse.unquote(u.password or "")
            self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.url = f"http://{u.hostname}:{self.port}"


def proxy_for(scheme: str, host: str, port: int) -> Proxy | None:
    """The proxy the environment names for this URL, or None (loopback never goes
    through a proxy, as in Go)."""
    url = _env("HTTPS_PROXY") if scheme == "https" else _env("HTTP_PROXY")
    if not url:
        return None
    host = _host_only(host)
    if _is_loopback(host.lower()) or _no_proxy_match(host, port, _env("NO_PROXY")):
        return None
    return Proxy(url)


# --- TLS -------------------------------------------------------------------------------


def system_context():
    """A verifying client context with the system's CAs, like
    ``ssl.create_default_context()`` but ~20 ms cheaper: where the CA directory
    holds OpenSSL's hash links (Debian's /etc/ssl/certs), certificates are looked
    up there when a handshake needs them instead of parsing the whole bundle now."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies peer and hostname
    paths = ssl.get_default_verify_paths()
    hashed = False
    if not os.environ.get(paths.openssl_cafile_env) and not os.environ.get(paths.openssl_capath_env) \
            and paths.capath:
        try:
            with os.scandir(paths.capath) as it:
                hashed = any(re.fullmatch(r"[0-9a-f]{8}\.[0-9]+", e.name) for e in it)
        except OSError:
            hashed = False
    if hashed:
        ctx.load_verify_locations(capath=paths.capath)
    else:
        ctx.load_default_certs()
    return ctx


# --- the byte stream -------------------------------------------------------------------


class _Stream(asyncio.BufferedProtocol):
    """One connection's bytes, both ways: the subset of StreamReader/StreamWriter that
    this module uses, without their copies. The socket is read straight into our
    buffer (``recv_into``), and a large ``readexactly`` hands the socket a buffer of
    its own to fill, which is then given to the caller as it is: a layer's bytes are
    copied once, by the kernel."""

    def __init__(self, limit: int = STREAM_LIMIT, idle: float | None = None) -> None:
        self._limit = limit
        self.idle = idle  # seconds without a byte before a waiting read fails
        self._last = 0.0  # when bytes last arrived (loop time)
        self._timer: asyncio.TimerHandle | None = None
        self._buf = bytearray(BUFFER)
        self._lo = self._hi = 0
        self._target: bytearray | None = None  # a large readexactly's own buffer
        self._fill = 0
        self._waiter: asyncio.Future | None = None
        self._eof = False
        self._lost = False
        self._paused = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future | None = None
        self.transport: Any = None

    # protocol side

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def connection_lost(self, exc: BaseException | None) -> None:
        self._eof = self._lost = True
        self._wake()
        w = self._drain_waiter
        if w is not None and not w.done():
            w.set_exception(ConnectionDropped(f"connection lost: {exc or 'closed by the peer'}"))

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._target is not None:
            return memoryview(self._target)[self._fill:]
        if len(self._buf) - self._hi < (16 << 10):
            n = self._hi - self._lo
            if self._lo:  # move the unread rest to the front (no resize: no export is alive here)
                self._buf[:n] = self._buf[self._lo:self._hi]
                self._lo, self._hi = 0, n
            if len(self._buf) - self._hi < (16 << 10):
                self._buf.extend(bytes(len(self._buf)))
        return memoryview(self._buf)[self._hi:]

    def buffer_updated(self, nbytes: int) -> None:
        self._last = time.monotonic()  # the event loop's clock
        if self._target is not None:
            self._fill += nbytes
            if self._fill >= len(self._target):
                self._wake()
            return
        self._hi += nbytes
        self._wake()
        # Full: the rest waits in the kernel's socket buffer, not in ours. The
        # buffer grows only when a reader needs more than it holds (a long header
        # line), so between a body's pieces at most BUFFER bytes sit here.
        if len(self._buf) - (self._hi - self._lo) < (16 << 10) and not self._paused \
                and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        w = self._drain_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def _wait(self) -> None:
        if self._paused:
            self._paused = False
            self.transport.resume_reading()
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        if self.idle is not None:
            start = loop.time()

            def check() -> None:
                # an idle timeout: the deadline moves on whenever bytes arrive
                if waiter.done():
                    return
                deadline = max(self._last, start) + self.idle
                if loop.time() >= deadline:
                    waiter.set_exception(Timeout(f"no data for {self.idle:g} s"))
                else:
                    self._timer = loop.call_at(deadline, check)

            self._timer = loop.call_at(start + self.idle, check)
        try:
            await waiter
        finally:
            self._waiter = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _take(self, n: int) -> bytes:
        data = bytes(self._buf[self._lo:self._lo + n])
        self._lo += n
        if self._lo == self._hi:
            self._lo = self._hi = 0
        return data

    # reader side

    def at_eof(self) -> bool:
        return self._eof and self._lo == self._hi

    def idle_clean(self) -> bool:
        """Open, and nothing unasked-for has arrived (stray bytes would be misread
        as the next response)."""
        return not self._eof and not self._lost and self._lo == self._hi

    async def readuntil(self, sep: bytes = b"\n") -> bytes:
        searched = 0  # bytes after _lo known not to hold sep (_lo moves when the buffer is compacted)
        while True:
            i = self._buf.find(sep, self._lo + searched, self._hi)
            if i >= 0:
                return self._take(i + len(sep) - self._lo)
            if self._hi - self._lo > self._limit:
                raise asyncio.LimitOverrunError("separator not found within the limit", self._hi - self._lo)
            if self._eof:
                raise asyncio.IncompleteReadError(self._take(self._hi - self._lo), None)
            searched = max(0, self._hi - self._lo - len(sep) + 1)
            await self._wait()

    async def readexactly(self, n: int) -> bytes | bytearray:
        have = self._hi - self._lo
        while have < n and n <= (64 << 10) and not self._eof:
            await self._wait()  # small reads (chunk framing) wait in the shared buffer
            have = self._hi - self._lo
        if have >= n:
            return self._take(n)
        if self._eof:
            raise asyncio.IncompleteReadError(self._take(have), n)
        target = bytearray(n)
        target[:have] = self._buf[self._lo:self._hi]
        self._lo = self._hi = 0
        self._target, self._fill = target, have
        try:
            while self._fill < n:
                if self._eof:
                    raise asyncio.IncompleteReadError(bytes(target[:self._fill]), n)
                await self._wait()
        finally:
            self._target = None
        return target

    async def read(self, n: int) -> bytes:
        while self._lo == self._hi and not self._eof:
            await self._wait()
        return self._take(min(n, self._hi - self._lo))

    # writer side

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._lost:
            raise ConnectionDropped("connection lost while sending the request")
        self.transport.write(data)

    async def drain(self) -> None:
        if self._lost:
            raise ConnectionDropped("connection lost while sending the request")
        if self._write_paused:
            self._drain_waiter = asyncio.get_running_loop().create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None

    def is_closing(self) -> bool:
        return self._lost or self.transport is None or self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def start_tls(self, ctx: Any, server_hostname: str) -> None:
        loop = asyncio.get_running_loop()
        self.transport = await loop.start_tls(self.transport, self, ctx, server_hostname=server_hostname)


async def _open_stream(host: str, port: int, ctx: Any = None, server_hostname: str | None = None,
                       idle: float | None = None) -> _Stream:
    stream = _Stream(idle=idle)
    await asyncio.get_running_loop().create_connection(lambda: stream, host, port, ssl=ctx,
                                                       server_hostname=server_hostname)
    return stream


# --- connections -------------------------------------------------------------------


class _Conn:
    __slots__ = ("reader", "writer", "key", "used", "idle_since")

    def __init__(self, reader: _Stream, writer: _Stream, key: tuple) -> None:
        self.reader = reader
        self.writer = writer
        self.key = key
        self.used = False
        self.idle_since = 0.0

    def usable(self) -> bool:
        return (not self.writer.is_closing() and self.reader.idle_clean()
                and time.monotonic() - self.idle_since < IDLE_KEEP)

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception:  # noqa: BLE001 - a transport already gone
            pass


def _split(url: str) -> tuple[str, str, int, str, str]:
    """(scheme, host, port, netloc, target) of an absolute http(s) URL."""
    try:
        u = urllib.parse.urlsplit(url)
        port = u.port
    except ValueError as e:
        raise ProtocolError(f"bad URL {url!r}: {e}") from None
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ProtocolError(f"bad URL {url!r}: not an absolute http(s) URL")
    target = (u.path or "/") + (f"?{u.query}" if u.query else "")
    if any(c <= " " or c == "\x7f" for c in target) or "@" in u.netloc:
        raise ProtocolError(f"bad URL {url!r}")
    default = 443 if u.scheme == "https" else 80
    host = u.hostname if ":" not in u.hostname else f"[{u.hostname}]"
    netloc = host if port in (None, default) else f"{host}:{port}"
    return u.scheme, host, port or default, netloc, target


class Pool:
    """Keep-alive connections and the bound on requests in flight, for one registry."""

    def __init__(self, *, limit: int = 32, ssl_context: Callable[[], Any] | None = None,
                 connect_timeout: float = 30.0, read_timeout: float = 300.0,
                 user_agent: str = "ocibox") -> None:
        self._sem = asyncio.Semaphore(limit)
        self._idle: dict[tuple, list[_Conn]] = {}
        self._open: set[_Conn] = set()
        self._ssl_factory = ssl_context
        self._ssl: Any = None
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.user_agent = user_agent

    async def close(self) -> None:
        for conn in list(self._open):
            conn.close()
        self._open.clear()
        self._idle.clear()

    def _ssl_context(self) -> Any:
        if self._ssl is None:
            if self._ssl_factory is not None:
                self._ssl = self._ssl_factory()
            else:
                self._ssl = system_context()
        return self._ssl

    # connections

    def _take_idle(self, key: tuple) -> _Conn | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.usable():
                return conn
            self._discard(conn)
        return None

    def _discard(self, conn: _Conn) -> None:
        conn.close()
        self._open.discard(conn)

    def _put_back(self, conn: _Conn) -> None:
        conn.idle_since = time.monotonic()
        conn.used = True
        self._idle.setdefault(conn.key, []).append(conn)

    async def _connect(self, scheme: str, host: str, port: int, proxy: Proxy | None) -> _Conn:
        key = (scheme, host, port, proxy.url if proxy else None)
        plain_host = _host_only(host)
        try:
            async with asyncio.timeout(self.connect_timeout):
                if proxy is None:
                    ctx = self._ssl_context() if scheme == "https" else None
                    reader = writer = await _open_stream(plain_host, port, ctx, plain_host if ctx else None,
                                                         self.read_timeout)
                else:
                    reader = writer = await _open_stream(proxy.host, proxy.port, idle=self.read_timeout)
                    if scheme == "https":
                        try:
                            await _tunnel(reader, writer, host, port, proxy)
                            await writer.start_tls(self._ssl_context(), server_hostname=plain_host)
                        except BaseException:
                            writer.close()
                            raise
        except TimeoutError:
            raise Timeout(f"connecting to {host}:{port} timed out after {self.connect_timeout:g} s") from None
        except OSError as e:
            if type(e).__name__ == "SSLCertVerificationError":
                raise CertificateError(getattr(e, "verify_message", None) or str(e)) from None
            where = f"{host}:{port}" + (f" (through proxy {proxy.url})" if proxy else "")
            raise ConnectError(f"cannot connect to {where}: {e.strerror or e}") from None
        conn = _Conn(reader, writer, key)
        self._open.add(conn)
        return conn

    # requests

    async def request(self, method: str, url: str, *, headers: dict[str, str] | None = None,
                      body: bytes | AsyncIterable[bytes] | None = None,
                      follow_redirects: bool = True, timeout: float | None = None) -> Response:
        """Send one request (following redirects); the response's body is unread.

        The caller reads it (``read``, ``iter_chunks``) and must ``aclose`` it when
        it stops early. ``timeout`` replaces the pool's read timeout while waiting
        for the response's head."""
        headers = dict(headers or {})
        for _ in range(MAX_REDIRECTS + 1):
            r = await self._send(method, url, headers, body, timeout)
            loc = r.headers.get("Location")
            if not follow_redirects or r.status not in (301, 302, 303, 307, 308) or not loc:
                return r
            await r.aclose()
            new = urllib.parse.urljoin(url, loc.strip())
            if _split(new)[:3] != _split(url)[:3]:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            if r.status == 303 or (r.status in (301, 302) and method == "POST"):
                method = "GET" if method != "HEAD" else "HEAD"
                body = None
                headers = {k: v for k, v in headers.items()
                           if k.lower() not in ("content-length", "content-type", "transfer-encoding")}
            elif body is not None and not isinstance(body, (bytes, bytearray, memoryview)):
                raise ProtocolError(f"{method} {url}: redirected ({r.status}) after a streamed body was sent")
            url = new
        raise ProtocolError(f"{method} {url}: more than {MAX_REDIRECTS} redirects")

    async def _send(self, method: str, url: str, headers: dict[str, str],
                    body: bytes | AsyncIterable[bytes] | None, timeout: float | None = None) -> Response:
        scheme, host, port, netloc, target = _split(url)
        proxy = proxy_for(scheme, host, port)
        if proxy is not None and scheme == "http":
            target = f"http://{netloc}{target}"  # absolute form, for the proxy
        head = _head(method, target, netloc, headers, body, self.user_agent,
                     proxy.auth if proxy is not None and scheme == "http" else None)
        replayable = body is None or isinstance(body, (bytes, bytearray, memoryview))
        key = (scheme, host, port, proxy.url if proxy else None)
        await self._sem.acquire()
        try:
            while True:
                conn = self._take_idle(key)
                reused = conn is not None
                if conn is None:
                    conn = await self._connect(scheme, host, port, proxy)
                try:
                    await self._write(conn, head, body, headers)
                    status, version, reason, fields = await _read_head(
                        conn.reader, timeout or self.read_timeout, skip_informational=True)
                except (ConnectionDropped, ConnectionError, asyncio.IncompleteReadError) as e:
                    self._discard(conn)
                    if reused and replayable:
                        continue  # the server closed a kept-alive connection: once more, fresh
                    if isinstance(e, HTTPError):
                        raise
                    raise ConnectionDropped(f"{method} {url}: connection lost: {e or type(e).__name__}") from None
                except BaseException:
                    self._discard(conn)
                    raise
                try:
                    return Response(self, conn, method, url, status, reason, version, fields)
                except ProtocolError:
                    self._discard(conn)
                    raise
        except BaseException:
            self._sem.release()
            raise

    async def _write(self, conn: _Conn, head: bytes, body: Any, headers: dict[str, str]) -> None:
        w = conn.writer
        timeout = self.read_timeout
        if body is None or isinstance(body, (bytes, bytearray, memoryview)):
            if body is None:
                w.write(head)
            elif len(body) < (1 << 16):
                w.write(head + bytes(body))
            else:
                w.write(head)
                w.write(body)
            await _drain(w, timeout)
            return
        w.write(head)
        declared = _declared_length(headers)
        sent = 0
        async for chunk in body:
            if not chunk:
                continue
            sent += len(chunk)
            if declared is None:
                w.write(b"%x\r\n" % len(chunk))
                w.write(chunk)
                w.write(b"\r\n")
            else:
                if sent > declared:
                    raise ProtocolError(f"request body longer than its Content-Length {declared}")
                w.write(chunk)
            await _drain(w, timeout)
        if declared is None:
            w.write(b"0\r\n\r\n")
        elif sent != declared:
            raise ProtocolError(f"request body of {sent} bytes, but Content-Length said {declared}")
        await _drain(w, timeout)


async def _drain(w: _Stream, timeout: float) -> None:
    """Wait while the socket's send buffer is full (a no-op when it is not)."""
    if not w._write_paused and not w._lost:
        return
    try:
        async with asyncio.timeout(timeout):
            await w.drain()
    except TimeoutError:
        raise Timeout(f"sending the request stalled for {timeout:g} s") from None


def _declared_length(headers: dict[str, str]) -> int | None:
    for k, v in headers.items():
        if k.lower() == "content-length":
            return int(v)
    return None


def _head(method: str, target: str, netloc: str, headers: dict[str, str], body: Any,
          user_agent: str, proxy_auth: str | None) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {netloc}"]
    names = set()
    for k, v in headers.items():
        v = str(v)
        if _BAD_VALUE.search(k) or _BAD_VALUE.search(v) or not _TOKEN.fullmatch(k.encode("latin-1", "replace")):
            raise ProtocolError(f"invalid request header {k!r}")
        names.add(k.lower())
        lines.append(f"{k}: {v}")
    if "user-agent" not in names:
        lines.append(f"User-Agent: {user_agent}")
    if body is None:
        if method in ("POST", "PUT", "PATCH") and "content-length" not in names:
            lines.append("Content-Length: 0")
    elif isinstance(body, (bytes, bytearray, memoryview)):
        if "content-length" not in names:
            lines.append(f"Content-Length: {len(body)}")
    elif "content-length" not in names:
        lines.append("Transfer-Encoding: chunked")
    if proxy_auth:
        lines.append(f"Proxy-Authorization: {proxy_auth}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _read_line(reader: _Stream, what: str) -> bytes:
    try:
        return await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise ProtocolError(f"{what} longer than {STREAM_LIMIT} bytes") from None
    except asyncio.IncompleteReadError as e:
        if not e.partial:
            raise ConnectionDropped("connection closed before a response arrived") from None
        raise ConnectionDropped(f"connection closed in the middle of the {what}") from None


async def _read_head(reader: _Stream, timeout: float, *,
                     skip_informational: bool) -> tuple[int, int, str, list[tuple[str, str]]]:
    """Status line and header fields, strictly and within bounds."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                line = await _read_line(reader, "status line")
                m = _STATUS.fullmatch(line)
                if m is None:
                    shown = line[:80].decode("latin-1").rstrip("\r\n")
                    raise ProtocolError(f"malformed HTTP status line {shown!r}")
                status = int(m.group(2))
                fields: list[tuple[str, str]] = []
                total = len(line)
                while True:
                    line = await _read_line(reader, "header block")
                    total += len(line)
                    if total > MAX_HEADER_BYTES:
                        raise ProtocolError(f"response headers larger than {MAX_HEADER_BYTES} bytes")
                    if line in (b"\r\n", b"\n"):
                        break
                    if len(fields) >= MAX_HEADERS:
                        raise ProtocolError(f"more than {MAX_HEADERS} response headers")
                    name, sep, value = line.partition(b":")
                    if not sep or not _TOKEN.fullmatch(name):
                        shown = line[:80].decode("latin-1").rstrip("\r\n")
                        raise ProtocolError(f"malformed response header {shown!r}")
                    fields.append((name.decode("ascii"), value.strip(b" \t\r\n").decode("latin-1")))
                if skip_informational and 100 <= status < 200 and status != 101:
                    continue
                return status, int(m.group(1)), (m.group(3) or b"").decode("latin-1"), fields
    except TimeoutError:
        raise Timeout(f"no response within {timeout:g} s") from None


async def _tunnel(reader: _Stream, writer: _Stream, host: str, port: int,
                  proxy: Proxy) -> None:
    lines = [f"CONNECT {host}:{port} HTTP/1.1", f"Host: {host}:{port}"]
    if proxy.auth:
        lines.append(f"Proxy-Authorization: {proxy.auth}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    await writer.drain()
    try:
        status, _, reason, fields = await _read_head(reader, 60.0, skip_informational=False)
    except ConnectionDropped:
        raise ProxyError(f"proxy {proxy.url} closed the connection on CONNECT {host}:{port}") from None
    if not 200 <= status < 300:
        raise ProxyError(f"proxy {proxy.url} refused CONNECT {host}:{port}: {status} {reason}".rstrip())


# --- responses ---------------------------------------------------------------------


class Response:
    """A response whose body is read on demand; its connection goes back to the
    pool when the body has been read to its end, or is closed."""

    def __init__(self, pool: Pool, conn: _Conn, method: str, url: str, status: int, reason: str,
                 version: int, fields: list[tuple[str, str]]) -> None:
        self._pool = pool
        self._conn: _Conn | None = conn
        self.method = method
        self.url = url
        self.status = status
        self.reason = reason
        self.headers = Headers(fields)
        self._body: bytes | None = None
        self._error: BaseException | None = None
        h = self.headers
        conn_tokens = {t.strip().lower() for t in (h.get("Connection") or "").split(",")}
        self._keep = "close" not in conn_tokens and (version == 1 or "keep-alive" in conn_tokens)
        te = (h.get("Transfer-Encoding") or "").lower()
        cl = h.get("Content-Length")
        self.content_length: int | None = None
        self._chunk_left = 0
        if cl is not None:
            values = {v.strip() for v in cl.split(",")}
            if len(values) != 1 or not next(iter(values)).isdigit():
                raise ProtocolError(f"bad Content-Length {cl!r}")  # _send closes the connection
            self.content_length = int(next(iter(values)))
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            self._mode = "none"
            self._left = 0
        elif te:
            codings = [c.strip() for c in te.split(",")]
            if codings[-1] == "chunked":
                self._mode = "chunked"
            else:
                self._mode, self._keep = "close", False
            if cl is not None:
                self._keep = False  # both: Transfer-Encoding wins, and the connection is suspect
                self.content_length = None
        elif cl is not None:
            self._mode = "length"
            self._left = self.content_length
        else:
            self._mode, self._keep = "close", False
        if self._mode == "none" or (self._mode == "length" and self._left == 0):
            self._finish(b"")

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.method} {self.url}>"

    # -- ending

    def _finish(self, body: bytes | None) -> None:
        conn, self._conn = self._conn, None
        if body is not None and self._body is None:
            self._body = body
        if conn is None:
            return
        if self._keep:
            self._pool._put_back(conn)
        else:
            self._pool._discard(conn)
        self._pool._sem.release()

    def _fail_now(self, error: BaseException) -> None:
        self._error = error
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool._discard(conn)
            self._pool._sem.release()

    @property
    def done(self) -> bool:
        return self._conn is None

    async def aclose(self) -> None:
        """Give the connection back: drained if little is left, else closed."""
        if self._conn is None:
            return
        if self._mode in ("length", "chunked") and (self._mode == "chunked" or self._left <= DRAIN_MAX):
            try:
                got = 0
                async with asyncio.timeout(2.0):
                    while self._conn is not None:
                        piece = await self._read_piece(DRAIN_MAX)
                        got += len(piece)
                        if got > DRAIN_MAX:
                            break
            except (HTTPError, OSError, TimeoutError):
                pass
        if self._conn is not None:
            self._fail_now(ConnectionDropped("response closed before its end"))

    def release(self) -> None:
        """Close a response that was not read to its end (no draining)."""
        if self._conn is not None:
            self._fail_now(ConnectionDropped("response released before its end"))

    # -- reading

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body (at most ``limit`` bytes: the rest is left unread)."""
        if self._body is not None:
            return self._body
        parts: list[bytes] = []
        total = 0
        async for piece in self.iter_chunks(CHUNK if limit is None else min(CHUNK, max(limit, 1))):
            parts.append(piece)
            total += len(piece)
            if limit is not None and total >= limit:
                break
        data = b"".join(parts)
        if self._conn is None and self._error is None:
            self._body = data
        return data

    async def iter_chunks(self, size: int = CHUNK) -> AsyncIterator[bytes]:
        """The body in pieces of up to ``size`` bytes (at least MIN_PIECE where the
        wire allows, except the last)."""
        if self._error is not None:
            raise self._error
        if self._body is not None:
            if self._body:
                yield self._body
            return
        gather = self._mode in ("chunked", "close")
        want = min(size, MIN_PIECE) if gather else size
        buf: list[bytes] = []
        have = 0
        while self._conn is not None:
            piece = await self._read_piece(size - have if gather else size)
            if not gather:
                if piece:
                    yield piece
                continue
            if piece:
                buf.append(piece)
                have += len(piece)
            if have >= want or (self._conn is None and have):
                yield b"".join(buf)
                buf, have = [], 0
        if self._error is not None:
            raise self._error

    async def _read_piece(self, size: int) -> bytes:
        conn = self._conn
        assert conn is not None
        reader = conn.reader
        try:
            # no timeout here: the stream's idle timer bounds every wait (a Timeout)
            if self._mode == "length":
                n = min(size, self._left)
                try:
                    data = await reader.readexactly(n)
                except asyncio.IncompleteReadError as e:
                    self._fail_now(ConnectionDropped(
                        f"connection closed with {self._left - len(e.partial)} bytes of the body missing"))
                    return e.partial
                self._left -= n
                if self._left == 0:
                    self._finish(None)
                return data
            if self._mode == "close":
                data = await reader.read(size)
                if not data:
                    self._finish(None)
                return data
            return await self._read_chunked(reader, size)
        except TimeoutError as e:
            self._fail_now(e if isinstance(e, Timeout) else Timeout(f"no data for {self._pool.read_timeout:g} s"))
        except ProtocolError as e:
            self._fail_now(e)
        except (ConnectionDropped, asyncio.IncompleteReadError, OSError) as e:
            self._fail_now(e if isinstance(e, ConnectionDropped)
                           else ConnectionDropped(f"connection lost in the body: {e or type(e).__name__}"))
        raise self._error  # type: ignore[misc]

    async def _read_chunked(self, reader: _Stream, size: int) -> bytes:
        if self._chunk_left == 0:
            line = await _read_line(reader, "chunk size line")
            text = line.split(b";", 1)[0].strip()
            if not text or len(text) > 16 or not all(c in b"0123456789abcdefABCDEF" for c in text):
                raise ProtocolError(f"bad chunk size line {line[:40]!r}")
            self._chunk_left = int(text, 16)
            if self._chunk_left == 0:
                for _ in range(MAX_HEADERS):  # trailers, then the blank line
                    if (await _read_line(reader, "chunk trailer")).strip() == b"":
                        self._finish(None)
                        return b""
                raise ProtocolError("too many trailer fields")
        n = min(size, self._chunk_left)
        data = await reader.readexactly(n)
        self._chunk_left -= n
        if self._chunk_left == 0 and await reader.readexactly(2) != b"\r\n":
            raise ProtocolError("chunk not followed by CRLF")
        return data

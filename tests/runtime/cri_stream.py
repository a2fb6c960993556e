"""A WebSocket client on the standard library, for the CRI's streaming server.

kubelet's streaming server (containerd 1.6 keeps a copy in pkg/cri/streaming)
answers the URL that ``Exec``, ``Attach`` and ``PortForward`` return with a
WebSocket upgrade (RFC 6455). Its subprotocols multiplex channels over one
connection: with ``v4.channel.k8s.io`` every binary message starts with one
byte naming its channel.

- exec and attach: 0 stdin, 1 stdout, 2 stderr, 3 error (v4: a JSON
  metav1.Status once the command ends), 4 resize (JSON ``{"Width": w,
  "Height": h}``). The server first sends an empty message on the lowest
  channel it writes (stdout, else stderr, else error) to say it is ready.
- port-forward: for the n-th port of the request, channel 2n carries data both
  ways and 2n+1 errors; the server's first message on each holds the port, two
  bytes little-endian.

The v4 protocols have no way to close one channel: stdin ends when the whole
connection does. Frames the client sends are masked, as the RFC requires.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
from urllib.parse import urlsplit

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, section 1.3
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
STDIN, STDOUT, STDERR, ERROR, RESIZE = range(5)


class WebSocketError(Exception):
    """The server broke the protocol or refused the upgrade."""


class WebSocket:
    """One client connection: handshake, masked frames out, messages in."""

    def __init__(self, url: str, protocols: tuple[str, ...] = ("v4.channel.k8s.io",),
                 timeout: float = 30) -> None:  # fmt: skip
        self.url = url
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise WebSocketError(f"{url}: only plain http is spoken here")
        self.sock = socket.create_connection((parts.hostname, parts.port or 80), timeout)
        self.buf = b""
        self.closed = False  # a close frame was sent
        key = base64.b64encode(os.urandom(16)).decode()
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        request = (f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   "Sec-WebSocket-Version: 13\r\n")  # fmt: skip
        if protocols:
            request += f"Sec-WebSocket-Protocol: {', '.join(protocols)}\r\n"
        self.sock.sendall(request.encode() + b"\r\n")
        status, headers = self._response_head()
        if not status.startswith("HTTP/1.1 101"):
            body = self._read(min(int(headers.get("content-length", 0)), 500))
            self.sock.close()
            raise WebSocketError(f"{url}: upgrade refused: {status}: {body!r}", status)
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        if headers.get("sec-websocket-accept") != accept:
            raise WebSocketError(f"{url}: wrong Sec-WebSocket-Accept {headers}")
        self.protocol = headers.get("sec-websocket-protocol", "")

    def _response_head(self) -> tuple[str, dict[str, str]]:
        while b"\r\n\r\n" not in self.buf:
            data = self.sock.recv(4096)
            if not data:
                raise WebSocketError(f"connection closed in the response head: {self.buf!r}")
            self.buf += data
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            data = self.sock.recv(max(4096, n - len(self.buf)))
            if not data:
                raise EOFError(f"connection closed {len(self.buf)} of {n} bytes into a frame")
            self.buf += data
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, payload: bytes, opcode: int = BINARY) -> None:
        """One frame, final, masked with a fresh key."""
        size = len(payload)
        if size < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
        elif size < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
        mask = os.urandom(4)
        self.sock.sendall(head + mask + _masked(payload, mask))

    def _frame(self) -> tuple[bool, int, bytes]:
        first, second = self._read(2)
        fin, opcode, size = bool(first & 0x80), first & 0x0F, second & 0x7F
        if first & 0x70:
            raise WebSocketError(f"reserved bits set in {first:#x}: no extension was agreed")
        if size == 126:
            (size,) = struct.unpack("!H", self._read(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", self._read(8))
        mask = self._read(4) if second & 0x80 else b""  # a server does not mask; tolerated
        payload = self._read(size)
        return fin, opcode, _masked(payload, mask) if mask else payload

    def recv(self) -> tuple[int, bytes] | None:
        """The next data message (opcode, payload), fragments joined; None once closed.

        A ping is answered with a pong carrying its payload; a close is answered
        with a close (unless one was sent) and ends the connection.
        """
        message, kind = b"", None
        while True:
            try:
                fin, opcode, payload = self._frame()
            except EOFError:
                if kind is not None:
                    raise
                self.sock.close()
                return None
            if opcode == PING:
                self.send(payload, PONG)
            elif opcode == PONG:
                pass
            elif opcode == CLOSE:
                if not self.closed:
                    self.send(payload[:2], CLOSE)  # echo the status code, as the RFC asks
                    self.closed = True
                self.sock.close()
                return None
            elif opcode in (TEXT, BINARY, CONT):
                if (opcode == CONT) != (kind is not None):
                    raise WebSocketError(f"opcode {opcode} out of place in a message")
                kind = opcode if kind is None else kind
                message += payload
                if fin:
                    return kind, message
            else:
                raise WebSocketError(f"unknown opcode {opcode}")

    def close(self, code: int = 1000) -> None:
        """Send a close frame and wait for the server's; the socket is closed after."""
        if self.sock.fileno() < 0:
            return
        if not self.closed:
            try:
                self.send(struct.pack("!H", code), CLOSE)
            except OSError:
                pass
            self.closed = True
        try:
            while self.recv() is not None:
                pass
        except (OSError, EOFError):
            pass
        self.sock.close()


def _masked(data: bytes, mask: bytes) -> bytes:
    """XOR with the 4-byte key repeated (masking and unmasking are the same)."""
    key = int.from_bytes((mask * (len(data) // 4 + 1))[: len(data)], "big")
    return (int.from_bytes(data, "big") ^ key).to_bytes(len(data), "big")


class Channels:
    """The channel.k8s.io protocols over a WebSocket: a channel byte, then the data."""

    def __init__(self, url: str, protocol: str = "v4.channel.k8s.io", timeout: float = 30) -> None:
        self.ws = WebSocket(url, (protocol,) if protocol else (), timeout)
        self.received: dict[int, bytes] = {}

    def send(self, channel: int, data: bytes) -> None:
        self.ws.send(bytes([channel]) + data)

    def resize(self, width: int, height: int) -> None:
        self.send(RESIZE, json.dumps({"Width": width, "Height": height}).encode())

    def recv(self) -> tuple[int, bytes] | None:
        """The next message's channel and data (also kept in ``received``); None at the end."""
        message = self.ws.recv()
        if message is None:
            return None
        kind, payload = message
        if kind != BINARY or not payload:
            raise WebSocketError(f"not a binary channel message: {message!r}")
        channel, data = payload[0], payload[1:]
        self.received[channel] = self.received.get(channel, b"") + data
        return channel, data

    def until(self, channel: int, wanted: bytes) -> bytes:
        """Read until ``wanted`` has come on ``channel``; what came there so far."""
        while wanted not in self.received.get(channel, b""):
            if self.recv() is None:
                raise WebSocketError(f"closed before {wanted!r} on channel {channel}: "
                                     f"{self.received!r}")  # fmt: skip
        return self.received[channel]

    def rest(self) -> dict[int, bytes]:
        """Everything until the server closes the connection."""
        while self.recv() is not None:
            pass
        return self.received

    def close(self) -> None:
        self.ws.close()

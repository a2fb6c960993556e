"""A small D-Bus client: enough to ask systemd for transient units, and no more.

    conn = dbus.system()            # root: /run/systemd/private; else the system bus
    job = conn.call(SYSTEMD, PATH, MANAGER, "StartTransientUnit", "ssa(sv)a(sa(sv))",
                    (name, "replace", props, []))[0]
    conn.wait_job(job)              # the JobRemoved signal of that job: its result

Values: D-Bus basic types are Python ints, bools, floats and strs; an array is a
list (a dict for a{..}), a struct a tuple, and a variant is written as a
(signature, value) pair and read as its bare value. Only what a systemd client
needs is here: EXTERNAL authentication, method calls and their replies or
errors, and signals kept while a reply is awaited. No file descriptors, no
server side.
"""

from __future__ import annotations

import os
import socket
import struct
import time

from ...errors import OciboxError

SYSTEMD = "org.freedesktop.systemd1"
PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
PROPERTIES = "org.freedesktop.DBus.Properties"

PRIVATE = "/run/systemd/private"  # systemd's own socket, for root, without dbus-daemon
SYSTEM_BUS = "/run/dbus/system_bus_socket"

_CALL, _RETURN, _ERROR, _SIGNAL = 1, 2, 3, 4
_NO_REPLY = 1  # flag: NO_REPLY_EXPECTED
# Header fields: code -> (name, signature of its variant).
_FIELDS = {1: ("path", "o"), 2: ("interface", "s"), 3: ("member", "s"), 4: ("error", "s"),
           5: ("reply_serial", "u"), 6: ("destination", "s"), 7: ("sender", "s"),
           8: ("signature", "g")}  # fmt: skip
_CODES = {name: (code, sig) for code, (name, sig) in _FIELDS.items()}

_FIXED = {"y": "B", "b": "I", "n": "h", "q": "H", "i": "i", "u": "I", "x": "q", "t": "Q",
          "d": "d", "h": "I"}  # fmt: skip
_ALIGN = {"y": 1, "g": 1, "v": 1, "n": 2, "q": 2, "b": 4, "i": 4, "u": 4, "h": 4, "s": 4,
          "o": 4, "a": 4, "x": 8, "t": 8, "d": 8, "(": 8, "{": 8}  # fmt: skip


class DBusError(OciboxError):
    """An error reply (``name`` is its D-Bus error name), or a broken connection."""

    def __init__(self, message: str, name: str = "", *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.name = name


# --- signatures and marshalling ---------------------------------------------------


def _end(sig: str, i: int) -> int:
    """The index just past the complete type that starts at sig[i]."""
    if i >= len(sig):
        raise ValueError(f"signature {sig!r} ends early")
    c = sig[i]
    if c == "a":
        return _end(sig, i + 1)
    if c in "({":
        close = ")" if c == "(" else "}"
        i += 1
        while i < len(sig) and sig[i] != close:
            i = _end(sig, i)
        if i >= len(sig):
            raise ValueError(f"signature {sig!r}: {c} is not closed")
        return i + 1
    if c in _ALIGN:
        return i + 1
    raise ValueError(f"signature {sig!r}: unknown type code {c!r}")


def split(sig: str) -> list[str]:
    """A signature as its complete types: "sa(sv)" -> ["s", "a(sv)"]."""
    out, i = [], 0
    while i < len(sig):
        j = _end(sig, i)
        out.append(sig[i:j])
        i = j
    return out


class _Writer:
    def __init__(self, order: str = "<") -> None:
        self.buf = bytearray()
        self.order = order

    def pad(self, n: int) -> None:
        self.buf += b"\0" * (-len(self.buf) % n)

    def fixed(self, code: str, value) -> None:
        self.pad(_ALIGN[code])
        self.buf += struct.pack(self.order + _FIXED[code], value)

    def write(self, sig: str, value) -> None:
        c = sig[0]
        if c in _FIXED:
            self.fixed(c, int(value) if c == "b" else value)
        elif c in "so":
            data = value.encode()
            self.fixed("u", len(data))
            self.buf += data + b"\0"
        elif c == "g":
            self.buf += bytes([len(value)]) + value.encode() + b"\0"
        elif c == "v":
            inner, v = value
            self.write("g", inner)
            self.write(inner, v)
        elif c == "(":
            self.pad(8)
            for t, v in zip(split(sig[1:-1]), value, strict=True):
                self.write(t, v)
        elif c == "a":
            elem = sig[1:]
            self.fixed("u", 0)
            at = len(self.buf)
            self.pad(_ALIGN[elem[0]])  # even when empty; not counted in the length
            start = len(self.buf)
            if elem[0] == "{":
                key, val = split(elem[1:-1])
                for k, v in value.items() if isinstance(value, dict) else value:
                    self.pad(8)
                    self.write(key, k)
                    self.write(val, v)
            elif elem == "y" and isinstance(value, (bytes, bytearray)):
                self.buf += value
            else:
                for v in value:
                    self.write(elem, v)
            struct.pack_into(self.order + "I", self.buf, at - 4, len(self.buf) - start)
        else:
            raise ValueError(f"cannot marshal type {sig!r}")


class _Reader:
    def __init__(self, data: bytes, order: str, pos: int = 0) -> None:
        self.data = data
        self.order = order
        self.pos = pos

    def pad(self, n: int) -> None:
        self.pos += -self.pos % n

    def fixed(self, code: str):
        self.pad(_ALIGN[code])
        fmt = self.order + _FIXED[code]
        (v,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return bool(v) if code == "b" else v

    def read(self, sig: str):
        c = sig[0]
        if c in _FIXED:
            return self.fixed(c)
        if c in "so":
            n = self.fixed("u")
            s = self.data[self.pos : self.pos + n].decode(errors="replace")
            self.pos += n + 1
            return s
        if c == "g":
            n = self.data[self.pos]
            s = self.data[self.pos + 1 : self.pos + 1 + n].decode()
            self.pos += n + 2
            return s
        if c == "v":
            return self.read(self.read("g"))
        if c == "(":
            self.pad(8)
            return tuple(self.read(t) for t in split(sig[1:-1]))
        if c == "a":
            n = self.fixed("u")
            elem = sig[1:]
            self.pad(_ALIGN[elem[0]])
            end = self.pos + n
            if elem == "y":
                self.pos = end
                return bytes(self.data[end - n : end])
            if elem[0] == "{":
                key, val = split(elem[1:-1])
                out = {}
                while self.pos < end:
                    self.pad(8)
                    k = self.read(key)
                    out[k] = self.read(val)
                return out
            items = []
            while self.pos < end:
                items.append(self.read(elem))
            return items
        raise ValueError(f"cannot read type {sig!r}")


def marshal(sig: str, values, order: str = "<") -> bytes:
    """A message body (which starts 8-aligned, so offsets from 0 align alike)."""
    w = _Writer(order)
    types = split(sig)
    if len(types) != len(values):
        raise ValueError(f"signature {sig!r} takes {len(types)} values, got {len(values)}")
    for t, v in zip(types, values, strict=True):
        w.write(t, v)
    return bytes(w.buf)


def unmarshal(sig: str, data: bytes, order: str = "<") -> list:
    r = _Reader(data, order)
    return [r.read(t) for t in split(sig)]


# --- messages ------------------------------------------------------------------


class Message:
    def __init__(self, kind: int, serial: int, fields: dict, body: list, flags: int = 0) -> None:
        self.kind = kind
        self.serial = serial
        self.fields = fields
        self.body = body
        self.flags = flags

    def encode(self) -> bytes:
        sig = self.fields.get("signature", "")
        body = marshal(sig, self.body) if sig else b""
        w = _Writer()
        for code, v in (("y", ord("l")), ("y", self.kind), ("y", self.flags), ("y", 1),
                        ("u", len(body)), ("u", self.serial)):  # fmt: skip
            w.fixed(code, v)
        fields = [(_CODES[k][0], (_CODES[k][1], v)) for k, v in self.fields.items() if v]
        w.write("a(yv)", fields)
        w.pad(8)
        return bytes(w.buf) + body


def _decode(data: bytes) -> Message:
    order = "<" if data[0:1] == b"l" else ">"
    r = _Reader(data, order, 4)
    kind, flags = data[1], data[2]
    body_len = r.fixed("u")
    serial = r.fixed("u")
    fields = {}
    for code, value in r.read("a(yv)"):
        if code in _FIELDS:
            fields[_FIELDS[code][0]] = value
    r.pad(8)
    sig = fields.get("signature", "")
    body = unmarshal(sig, data[r.pos : r.pos + body_len], order) if sig else []
    return Message(kind, serial, fields, body, flags)


# --- the connection ----------------------------------------------------------------


class Connection:
    """One authenticated connection: method calls and the signals that come meanwhile."""

    def __init__(self, path: str, *, bus: bool, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        self.serial = 0
        self.signals: list[Message] = []
        self.buf = b""
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
            self._auth()
        except BaseException:
            self.sock.close()
            raise
        self.unique_name = ""
        if bus:  # a message bus wants Hello first; a peer (systemd's private socket) does not
            self.unique_name = self.call("org.freedesktop.DBus", "/org/freedesktop/DBus",
                                         "org.freedesktop.DBus", "Hello")[0]  # fmt: skip

    def _auth(self) -> None:
        # BEGIN goes with AUTH, before the OK, as sd-bus's clients (systemctl) send it.
        # Sent after the OK, it could reach systemd in one read with the first message,
        # which then sometimes got no answer (30 s, in the VM tests; the likely cause).
        uid = str(os.geteuid()).encode().hex()
        self.sock.sendall(b"\0AUTH EXTERNAL " + uid.encode() + b"\r\nBEGIN\r\n")
        line = self._line()
        if not line.startswith(b"OK "):
            raise DBusError(f"D-Bus {self.path}: authentication refused ({line.decode(errors='replace')})")

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _fill(self) -> None:
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise DBusError(f"D-Bus {self.path}: no answer in {self.timeout:g} s") from None
        except OSError as e:
            raise DBusError(f"D-Bus {self.path}: {e.strerror or e}") from None
        if not data:
            raise DBusError(f"D-Bus {self.path}: the connection was closed by the other side")
        self.buf += data

    def _need(self, n: int) -> None:
        while len(self.buf) < n:
            self._fill()

    def receive(self, deadline: float | None = None) -> Message:
        """The next message; by ``deadline`` (time.monotonic()) or DBusError, if one is given."""
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DBusError(f"D-Bus {self.path}: no answer in {self.timeout:g} s")
            self.sock.settimeout(left)
        self._need(16)
        order = "<" if self.buf[0:1] == b"l" else ">"
        body_len, _, fields_len = struct.unpack_from(order + "III", self.buf, 4)
        total = 16 + fields_len
        total += -total % 8
        total += body_len
        self._need(total)
        data, self.buf = self.buf[:total], self.buf[total:]
        return _decode(data)

    def send(self, msg: Message) -> None:
        try:
            self.sock.sendall(msg.encode())
        except OSError as e:
            raise DBusError(f"D-Bus {self.path}: {e.strerror or e}") from None

    def call(self, destination: str | None, path: str, interface: str, member: str,
             signature: str = "", args: tuple | list = ()) -> list:  # fmt: skip
        """Call a method and return its reply's values; an error reply raises DBusError."""
        self.serial += 1
        serial = self.serial
        fields = {"path": path, "interface": interface, "member": member,
                  "destination": destination, "signature": signature}  # fmt: skip
        self.send(Message(_CALL, serial, fields, list(args)))
        deadline = time.monotonic() + self.timeout  # other traffic must not keep us waiting
        while True:
            msg = self.receive(deadline)
            if msg.kind == _SIGNAL:
                self.signals.append(msg)
            elif msg.kind in (_RETURN, _ERROR) and msg.fields.get("reply_serial") == serial:
                if msg.kind == _ERROR:
                    name = msg.fields.get("error", "")
                    text = msg.body[0] if msg.body and isinstance(msg.body[0], str) else name
                    raise DBusError(f"{interface}.{member}: {text} ({name})", name)
                return msg.body

    def wait_signal(self, match) -> Message:
        """The first signal (kept or new) for which ``match(msg)`` is true, within the
        connection's timeout."""
        deadline = time.monotonic() + self.timeout
        while True:
            for i, msg in enumerate(self.signals):
                if match(msg):
                    return self.signals.pop(i)
            msg = self.receive(deadline)
            if msg.kind == _SIGNAL:
                self.signals.append(msg)

    def close(self) -> None:
        self.sock.close()


def system(timeout: float = 30.0) -> Connection:
    """A connection to systemd: as root straight to its private socket (no dbus-daemon
    in between, as runc's library does), else, or when that fails, the system bus."""
    errors = []
    if os.geteuid() == 0:
        try:
            return Connection(PRIVATE, bus=False, timeout=timeout)
        except (OSError, DBusError) as e:
            errors.append(f"{PRIVATE}: {getattr(e, 'strerror', None) or e}")
    path = SYSTEM_BUS
    address = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS", "")
    if address.startswith("unix:path="):
        path = address[len("unix:path=") :].split(",")[0]
    try:
        return Connection(path, bus=True, timeout=timeout)
    except (OSError, DBusError) as e:
        errors.append(f"{path}: {getattr(e, 'strerror', None) or e}")
    raise DBusError("cannot connect to systemd over D-Bus (" + "; ".join(errors) + ")",
                    hint="--systemd-cgroup needs a running systemd; leave it out to use "
                    "cgroupfs")  # fmt: skip

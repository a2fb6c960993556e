"""Streaming compression of layers: gzip (isal when present, else zlib) and zstd.

Readers check the stream's magic against the compression the media type
declares before decompressing, and turn every decoder failure into one
``LayerError``. Writers are reproducible: gzip headers carry no name and
mtime 0. isal and zstandard are imported lazily so that commands which never
touch a layer do not pay for them at start-up.
"""

from __future__ import annotations

import io
import zlib
from typing import BinaryIO

from ..errors import LayerError, UsageError

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
COMPRESSIONS = ("none", "gzip", "zstd")
_BLOCK = 1 << 20


def detect(head: bytes) -> str:
    """The compression a stream starting with ``head`` uses: gzip, zstd or none."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return "none"


def _check_name(compression: str) -> None:
    if compression not in COMPRESSIONS:
        raise UsageError(f"unknown compression {compression!r}: expected one of {COMPRESSIONS}")


class _Prefixed(io.RawIOBase):
    """Bytes already read (the peeked magic) followed by the rest of a stream.

    Closing it leaves the underlying stream open: the caller owns that.
    """

    def __init__(self, head: bytes, raw: BinaryIO) -> None:
        self._head = head
        self._raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        if self._head:
            n = min(len(buf), len(self._head))
            buf[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._raw.read(len(buf))
        buf[: len(data)] = data
        return len(data)


def _decoder_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [zlib.error, EOFError, OSError, ValueError]
    try:
        from isal import isal_zlib

        errors.append(isal_zlib.error)
    except ImportError:
        pass
    try:
        import zstandard

        errors.append(zstandard.ZstdError)
    except ImportError:
        pass
    return tuple(errors)


class _CheckedReader(io.RawIOBase):
    """Wraps a decompressing stream so that any decoder failure is a LayerError."""

    def __init__(self, inner, compression: str, keep_open: _Prefixed) -> None:
        self._inner = inner
        self._compression = compression
        self._errors = _decoder_errors()
        self._prefixed = keep_open

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        try:
            return self._inner.read(n)
        except self._errors as e:
            raise LayerError(f"corrupt or truncated {self._compression} layer: {e}") from e

    def readinto(self, buf) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self._inner.close()
            except self._errors:
                pass  # a reader abandoned half-way may complain; nothing to save
        super().close()


def _read_head(fileobj: BinaryIO, n: int) -> bytes:
    head = b""
    while len(head) < n:
        chunk = fileobj.read(n - len(head))
        if not chunk:
            break
        head += chunk
    return head


def open_reader(fileobj: BinaryIO, compression: str) -> BinaryIO:
    """A stream of the decompressed bytes of ``fileobj``, decoded as it is read.

    Raises LayerError at once if the stream's magic contradicts ``compression``,
    and later on any corrupt or truncated compressed data. Closing the reader
    does not close ``fileobj``.
    """
    _check_name(compression)
    head = _read_head(fileobj, 4)
    found = detect(head)
    if found != compression:
        raise LayerError(
            f"layer declared as {_describe(compression)} but its bytes are {_describe(found)}",
            hint="the media type in the manifest does not match the blob",
        )
    stream = _Prefixed(head, fileobj)
    if compression == "none":
        return io.BufferedReader(stream, _BLOCK)  # type: ignore[return-value]
    if compression == "gzip":
        inner = _gzip_reader(stream)
    else:
        import zstandard

        # stream_reader keeps memory bounded but says nothing when the input
        # stops mid-frame, so _ZstdFrames watches the frame structure for that.
        inner = zstandard.ZstdDecompressor().stream_reader(
            _ZstdFrames(stream), read_size=_BLOCK, read_across_frames=True, closefd=False
        )
    return io.BufferedReader(_CheckedReader(inner, compression, stream), _BLOCK)  # type: ignore[return-value]


def _gzip_reader(stream: _Prefixed):
    try:
        from isal import igzip_threaded
    except ImportError:
        import gzip

        return gzip.GzipFile(fileobj=stream, mode="rb")
    # One worker thread decompresses outside the GIL while we write files.
    return igzip_threaded.open(stream, "rb", threads=1, block_size=_BLOCK)


class _ZstdFrames(io.RawIOBase):
    """Passes compressed zstd bytes through, following frame and block headers.

    At the end of the input it raises LayerError unless the last frame was
    complete. Only headers are parsed; block bodies are skipped by length.
    """

    def __init__(self, raw: _Prefixed) -> None:
        self._raw = raw
        self._state = "magic"
        self._need = 4  # header bytes wanted in state
        self._buf = bytearray()
        self._skip = 0  # body bytes to pass over before entering _after
        self._after = "magic"
        self._checksum = False

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = self._raw.readinto(buf)
        if n:
            self._feed(memoryview(buf)[:n])
        elif self._skip or self._buf or self._state != "magic":
            raise LayerError("truncated zstd layer: the stream ends inside a frame")
        return n

    def _feed(self, data: memoryview) -> None:
        i, end = 0, len(data)
        while i < end:
            if self._skip:
                n = min(self._skip, end - i)
                self._skip -= n
                i += n
                if not self._skip:
                    self._enter(self._after)
                continue
            take = min(self._need - len(self._buf), end - i)
            self._buf += data[i : i + take]
            i += take
            if len(self._buf) == self._need:
                header = int.from_bytes(self._buf, "little")
                self._buf.clear()
                self._header(header)

    def _enter(self, state: str, need: int = 0) -> None:
        self._state = state
        self._need = need or {"magic": 4, "skippable": 4, "frame": 1, "block": 3}[state]

    def _then(self, skip: int, state: str) -> None:
        if skip:
            self._skip, self._after = skip, state
        else:
            self._enter(state)

    def _header(self, h: int) -> None:
        if self._state == "magic":
            if h == 0xFD2FB528:
                self._enter("frame")
            elif h & 0xFFFFFFF0 == 0x184D2A50:
                self._enter("skippable")
            else:
                raise LayerError("corrupt zstd layer: bad frame magic")
        elif self._state == "skippable":
            self._then(h, "magic")
        elif self._state == "frame":
            single = (h >> 5) & 1
            self._checksum = bool((h >> 2) & 1)
            rest = (0 if single else 1) + (0, 1, 2, 4)[h & 3] + (single, 2, 4, 8)[h >> 6]
            self._then(rest, "block")
        else:  # block header: last flag, type, size
            last, kind, size = h & 1, (h >> 1) & 3, h >> 3
            if kind == 3:
                raise LayerError("corrupt zstd layer: reserved block type")
            body = 1 if kind == 1 else size
            if not last:
                self._then(body, "block")
            else:
                self._then(body + (4 if self._checksum else 0), "magic")


def _describe(compression: str) -> str:
    return "uncompressed" if compression == "none" else f"{compression}-compressed"


class _NoClose(io.RawIOBase):
    """A writer that passes bytes through and never closes the stream it wraps."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._raw.write(data)
        return len(data)

    def flush(self) -> None:
        self._raw.flush()


def open_writer(fileobj: BinaryIO, compression: str, level: int | None = None) -> BinaryIO:
    """A stream that compresses what is written to it into ``fileobj``.

    Close it to finish the compressed stream; ``fileobj`` itself stays open.
    gzip levels 0-3 (or None) use isal when available, higher levels zlib.
    """
    _check_name(compression)
    if compression == "none":
        return _NoClose(fileobj)  # type: ignore[return-value]
    if compression == "zstd":
        import zstandard

        cctx = zstandard.ZstdCompressor(level=3 if level is None else level, write_checksum=True)
        return cctx.stream_writer(fileobj, closefd=False)  # type: ignore[return-value]
    return _gzip_writer(fileobj, level)


def _gzip_writer(fileobj: BinaryIO, level: int | None) -> BinaryIO:
    # filename="" keeps the header free of fileobj.name; mtime=0 keeps it reproducible.
    if level is None or 0 <= level <= 3:
        try:
            from isal import igzip

            return igzip.IGzipFile(  # type: ignore[return-value]
                filename="", mode="wb", compresslevel=2 if level is None else level,
                fileobj=fileobj, mtime=0,
            )
        except ImportError:
            pass
    import gzip

    return gzip.GzipFile(  # type: ignore[return-value]
        filename="", mode="wb", compresslevel=6 if level is None else level,
        fileobj=fileobj, mtime=0,
    )

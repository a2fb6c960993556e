"""Change a layer's compression while it is copied: gzip, zstd or none.

The source's bytes arrive as an async stream; a worker thread pulls them,
decompresses, compresses again and writes the result to a sink: one that
hashes as it writes (a blob writer of the destination layout, or a temporary
file for archives), or a ``Pipe`` whose bytes stream on to a registry.
At most a few MiB are in memory whatever the layer's size. The source bytes
are checked against the source descriptor on the way; the new digest and size
come from the sink.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import tempfile
import threading
from collections.abc import AsyncIterator
from concurrent.futures import Executor

from .. import digest as _digest
from .. import mediatypes as mt
from ..errors import LayerError
from ..image.models import Descriptor

CHUNK = 256 << 10  # six layers at once stay small
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
# layers whose compression a copy may change; foreign and non-distributable ones are left alone
CHANGEABLE = frozenset({mt.OCI_LAYER, mt.OCI_LAYER_GZIP, mt.OCI_LAYER_ZSTD, DOCKER_LAYER, mt.DOCKER_LAYER_GZIP})


def media_type_for(source_type: str, compression: str) -> str:
    """The layer media type for ``compression`` in the family (OCI or Docker) of ``source_type``."""
    if source_type in (DOCKER_LAYER, mt.DOCKER_LAYER_GZIP) and compression != "zstd":
        return DOCKER_LAYER if compression == "none" else mt.DOCKER_LAYER_GZIP
    return mt.OCI_LAYER_FOR_COMPRESSION[compression]


def big_files_dir() -> str:
    """Where large temporary files go: $TMPDIR, else /var/tmp (as containers/image does)."""
    return os.environ.get("TMPDIR") or ("/var/tmp" if os.path.isdir("/var/tmp") else tempfile.gettempdir())


class TempSink(_digest.HashingSink):
    """A temporary file that hashes what is written to it: for a docker archive, whose
    tar header (written before the content) needs the size of a layer being compressed.
    Registries, layouts and dir: take such a layer without one."""

    def __init__(self, directory: str | None = None) -> None:
        fd, self.path = tempfile.mkstemp(dir=directory or big_files_dir(), prefix=".ocibox-layer-")
        super().__init__(os.fdopen(fd, "wb", buffering=0))

    def finish(self) -> tuple[str, int]:
        self._file.close()
        return self.digest, self.size

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class _Cancelled(Exception):
    pass


class Pipe:
    """A sink for the worker thread whose bytes an async reader on ``loop`` takes:
    at most ``depth`` writes wait in it (the compressor blocks until one is taken),
    so a layer streams to the network without a temporary file."""

    def __init__(self, loop: asyncio.AbstractEventLoop, depth: int = 4) -> None:
        self._loop = loop
        self._depth = depth
        self._items: collections.deque[bytes] = collections.deque()
        self._cond = threading.Condition()
        self._ended = False
        self._aborted = False
        self._waiter: asyncio.Future | None = None
        self.size = 0

    # worker side

    def write(self, data) -> int:
        piece = bytes(data)
        with self._cond:
            while len(self._items) >= self._depth and not self._aborted:
                self._cond.wait()
            if self._aborted:
                raise _Cancelled
            self._items.append(piece)
        self.size += len(piece)
        self._loop.call_soon_threadsafe(self._wake)
        return len(piece)

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        pass

    def close(self) -> None:
        """Ignored: compressors close their sink; ``end`` marks the end."""

    # loop side

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def end(self) -> None:
        self._ended = True
        self._wake()

    def abort(self) -> None:
        """The reader stops: a blocked ``write`` raises, and later ones too."""
        with self._cond:
            self._aborted = True
            self._items.clear()
            self._cond.notify_all()

    async def get(self) -> bytes | None:
        """The next piece, or None once the writer has ended and all is taken."""
        while True:
            with self._cond:
                if self._items:
                    piece = self._items.popleft()
                    self._cond.notify()
                    return piece
            if self._ended:
                return None
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None


class _Pull:
    """A blocking reader, for a worker thread, of an async byte stream on ``loop``.

    Bytes are hashed as they are handed out, so the check against ``desc`` at the
    end covers what the decoder actually consumed."""

    def __init__(self, chunks: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop,
                 desc: Descriptor, what: str) -> None:
        self._chunks, self._loop, self._desc, self._what = chunks, loop, desc, what
        self._buf = memoryview(b"")
        self._hash = _digest.hasher(_digest.parse(desc.digest)[0])
        self._size = 0
        self._eof = False
        self._verified = False
        self.cancelled = False

    async def _next(self) -> bytes | None:
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            return None

    def _fill_buffer(self) -> None:
        while not self._buf and not self._eof:
            if self.cancelled:
                raise _Cancelled
            chunk = asyncio.run_coroutine_threadsafe(self._next(), self._loop).result()
            if chunk is None:
                self._eof = True
            else:
                self._buf = memoryview(chunk)

    def readable(self) -> bool:
        return True

    def peek(self) -> bytes:
        """The next bytes (up to 8), left unread."""
        self._fill_buffer()
        return bytes(self._buf[:8])

    def read(self, n: int = -1) -> bytes:
        self._fill_buffer()
        if n is None or n < 0:
            n = len(self._buf)
        out, self._buf = bytes(self._buf[:n]), self._buf[n:]
        if out:
            self._hash.update(out)
            self._size += len(out)
            if self._size > self._desc.size:
                raise _digest.SizeMismatch(self._what, self._desc.size, self._size)
        elif self._eof and not self._verified:
            self._verify()
        return out

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def drain(self) -> None:
        """Read what the decoder left (nothing, for a well-formed layer) and verify all."""
        while self.read(CHUNK):
            pass

    def _verify(self) -> None:
        self._verified = True
        if self._size != self._desc.size:
            raise _digest.SizeMismatch(self._what, self._desc.size, self._size)
        actual = f"{_digest.parse(self._desc.digest)[0]}:{self._hash.hexdigest()}"
        if actual != self._desc.digest:
            raise _digest.DigestMismatch(self._what, self._desc.digest, actual)


def _fill(reader, view: memoryview) -> int:
    """Read into ``view`` until it is full or the stream ends."""
    n = 0
    while n < len(view):
        got = reader.readinto(view[n:])
        if not got:
            break
        n += got
    return n


async def transform(chunks: AsyncIterator[bytes], desc: Descriptor, have: str, want: str,
                    level: int | None, sink, executor: Executor, what: str) -> None:
    """Stream ``chunks`` (the blob ``desc``, compressed as ``have``) into ``sink``
    compressed as ``want`` (a blob writer or a temporary file tell the new digest
    and size, a ``Pipe`` hands the bytes on)."""
    from ..image import compression as comp

    loop = asyncio.get_running_loop()
    source = _Pull(chunks, loop, desc, what)

    def work() -> None:
        if have == "none":
            # read the source as it comes (no decoder, no extra buffer), once its bytes
            # are seen not to be compressed after all
            reader = source
            found = comp.detect(source.peek())
            if found != "none":
                raise LayerError(f"{what}: layer declared as uncompressed but its bytes are {found}-compressed",
                                 hint="the media type in the manifest does not match the blob")
        else:
            reader = comp.open_reader(source, have)  # type: ignore[arg-type, assignment]
        try:
            writer = comp.open_writer(sink, want, level)
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            # whole blocks whatever the source's chunks: isal's output depends on the
            # writes' boundaries, and a layer must compress to the same digest every time
            while n := _fill(reader, view):
                writer.write(view[:n])
            writer.close()
        finally:
            if reader is not source:
                reader.close()
        source.drain()

    done = loop.run_in_executor(executor, work)
    try:
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            source.cancelled = True  # the worker stops at its next read; wait for it
            with contextlib.suppress(BaseException):
                await done
            raise
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


async def transformed(chunks: AsyncIterator[bytes], desc: Descriptor, have: str, want: str,
                      level: int | None, executor: Executor, what: str) -> AsyncIterator[bytes]:
    """The blob ``desc`` (``chunks``, compressed as ``have``) compressed as ``want``,
    as a stream: the source is checked against ``desc`` before the stream ends."""
    loop = asyncio.get_running_loop()
    pipe = Pipe(loop)
    task = asyncio.ensure_future(transform(chunks, desc, have, want, level, pipe, executor, what))
    task.add_done_callback(lambda _: pipe.end())
    try:
        while (piece := await pipe.get()) is not None:
            yield piece
        await task  # the source's check, or the worker's failure
    finally:
        if not task.done():
            pipe.abort()
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

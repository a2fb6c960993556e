"""Where images live: ``docker://``, ``oci:``, ``oci-archive:``, ``docker-archive:``, ``dir:``.

Each location is a source (``top``, ``manifest``, ``blob``) and a destination
(``has_blob``, ``put_blob``, ``put_manifest``, ``commit``), all async so that a
copy moves several blobs at once. Destinations verify every blob as it is
written and publish only verified content; the name (tag, index.json entry,
archive) appears last.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .. import digest as _digest
from .. import mediatypes as mt
from ..distribution.options import Fetched, Options
from ..distribution.reference import InvalidReference, Reference
from ..errors import (
    BlobNotFound,
    InvalidObject,
    LayoutError,
    NotFound,
    ReferenceNotFound,
    UsageError,
)
from ..image.models import Descriptor

if TYPE_CHECKING:
    import tarfile

    from ..distribution.client import Registry
    from ..image.layout import Layout

# tarfile, tempfile, shutil, the layout and _fs are imported where they are used: a
# docker:// location (ocibox inspect) needs none of them

CHUNK = 1 << 20
Progress = Callable[[int], None] | None
TRANSPORTS = ("docker", "oci", "oci-archive", "docker-archive", "dir")


def parse_location(text: str, options: Options | None = None) -> Location:
    """``TRANSPORT:DETAILS`` as skopeo names images."""
    transport, sep, rest = text.partition(":")
    if not sep or transport not in TRANSPORTS:
        raise UsageError(f"invalid location {text!r}: expected one of "
                         + ", ".join(f"{t}:" for t in TRANSPORTS),
                         hint="e.g. docker://localhost:5000/app:1.0 or oci:./layout:1.0")
    if transport == "docker":
        if not rest.startswith("//"):
            raise UsageError(f"invalid location {text!r}: docker locations start with docker://")
        return DockerLocation(Reference.parse(rest[2:]), options or Options())
    path, tag = _split_path_tag(rest, transport)
    if not path:
        raise UsageError(f"invalid location {text!r}: no path")
    if transport == "oci":
        return OCILocation(path, tag)
    if transport == "oci-archive":
        return OCIArchiveLocation(path, tag)
    if transport == "docker-archive":
        return DockerArchiveLocation(path, tag)
    if tag:
        raise UsageError(f"invalid location {text!r}: dir: takes no tag")
    return DirLocation(rest)


def _split_path_tag(rest: str, transport: str) -> tuple[str, str | None]:
    if transport == "docker-archive":
        # PATH[:REFERENCE]: a reference holds "/" and ":", so the first ":" splits (as skopeo)
        path, _, ref = rest.partition(":")
        return path, ref or None
    # PATH[:TAG]; a tag never contains "/", so the last ":" after the last "/" splits.
    colon = rest.rfind(":")
    if colon > rest.rfind("/") and colon != -1:
        path, tag = rest[:colon], rest[colon + 1:]
        if tag:
            from ..image.layout import check_tag

            check_tag(tag)
        return path, tag or None
    return rest, None


FILE_CHUNK = 256 << 10  # reads from local files: small, so that six blobs at once stay small


async def file_chunks(path: str, offset: int = 0) -> AsyncIterator[bytes]:
    with open(path, "rb") as f:
        f.seek(offset)
        while chunk := f.read(FILE_CHUNK):
            yield chunk


async def copy_file(path: str, write: Callable[[bytes], object], desc: Descriptor, what: str,
                    progress: Progress = None) -> None:
    """Copy a local file into ``write`` (a sink that hashes and verifies on commit) in a
    worker thread through one reused buffer: memory is FILE_CHUNK whatever the size."""
    loop = asyncio.get_running_loop()

    def work() -> None:
        buf = bytearray(FILE_CHUNK)
        view = memoryview(buf)
        total = 0
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                total += n
                if total > desc.size:
                    raise _digest.SizeMismatch(what, desc.size, total)
                write(view[:n])
                if progress:
                    loop.call_soon_threadsafe(progress, n)

    await loop.run_in_executor(None, work)


PUMP_DEPTH = 2  # pieces (256 KiB from a registry) waiting for the writer thread, per blob


class _Writer:
    """A thread that writes the pieces the event loop hands it, in order. Each side
    wakes the other only when it waits (the writer for a piece, the loop for room),
    so a piece costs no thread switch while both keep up."""

    def __init__(self, write: Callable[[bytes], object], loop: asyncio.AbstractEventLoop) -> None:
        self._write = write
        self._loop = loop
        self._cond = threading.Condition()
        self._items: collections.deque = collections.deque()
        self._closed = False
        self._error: BaseException | None = None
        self._room: asyncio.Future | None = None  # the loop waits for room
        self._done = loop.create_future()
        threading.Thread(target=self._run, name="ocibox-write", daemon=True).start()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._items and not self._closed:
                        self._cond.wait()
                    if not self._items:
                        return
                    piece = self._items.popleft()
                    room, self._room = self._room, None
                if room is not None:
                    self._loop.call_soon_threadsafe(_settle, room)
                self._write(piece)
        except BaseException as e:  # noqa: BLE001 - handed to the loop
            with self._cond:
                self._error = e
                self._items.clear()
                room, self._room = self._room, None
            if room is not None:
                self._loop.call_soon_threadsafe(_settle, room)
        finally:
            self._loop.call_soon_threadsafe(_settle, self._done)

    async def put(self, piece: bytes) -> None:
        while True:
            with self._cond:
                if self._error is not None:
                    raise self._error
                if len(self._items) < PUMP_DEPTH:
                    self._items.append(piece)
                    self._cond.notify()
                    return
                room = self._room = self._loop.create_future()
            await room

    async def close(self, discard: bool = False) -> None:
        """Wait until everything is written (or, with ``discard``, only the piece being written)."""
        with self._cond:
            self._closed = True
            if discard:
                self._items.clear()
            self._cond.notify()
        await asyncio.shield(self._done)
        if self._error is not None and not discard:
            raise self._error


def _settle(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


async def pump(chunks: AsyncIterator[bytes], write: Callable[[bytes], object], size: int,
               what: str, progress: Progress = None) -> None:
    """Feed ``chunks`` to ``write`` in a thread of its own, while the next pieces arrive:
    hashing and disk writes overlap the network, and a blob holds a few pieces in memory."""
    writer = _Writer(write, asyncio.get_running_loop())
    total = 0
    try:
        async for chunk in chunks:
            total += len(chunk)
            if total > size:
                raise _digest.SizeMismatch(what, size, total)
            await writer.put(chunk)
            if progress:
                progress(len(chunk))
    except BaseException:
        await writer.close(discard=True)
        raise
    await writer.close()


class _HashingFile(_digest.HashingSink):
    """A temporary file beside ``final`` that becomes it only once verified."""

    def __init__(self, final: str) -> None:
        self.final = final
        directory = os.path.dirname(final) or "."
        os.makedirs(directory, exist_ok=True)
        import tempfile

        fd, self.tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
        super().__init__(os.fdopen(fd, "wb"))

    def commit(self, expected: str, size: int, what: str) -> None:
        try:
            actual = self.digest
            if size != self.size:
                raise _digest.SizeMismatch(what, size, self.size)
            if actual != expected:
                raise _digest.DigestMismatch(what, expected, actual)
            self._file.close()
            os.chmod(self.tmp, 0o644)
            os.replace(self.tmp, self.final)
        finally:
            self.abort()

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)


class _DigestNamedFile(_HashingFile):
    """A blob whose digest is learnt as it is written (a layer being compressed): a
    temporary file in ``directory`` that ``commit`` names after its digest."""

    def __init__(self, directory: str, name_for: Callable[[str], str]) -> None:
        super().__init__(os.path.join(directory, ".unnamed"))
        self._name_for = name_for

    def commit(self) -> None:  # type: ignore[override]
        self.final = self._name_for(self.digest)
        super().commit(self.digest, self.size, self.final)


class Location:
    """Base: a source and a destination of images."""

    name: str = ""
    parallel = True  # False: blobs must be written one at a time
    same_registry_mount = False

    async def open(self, writing: bool) -> None:
        pass

    async def close(self, ok: bool) -> None:
        pass

    # source
    async def top(self) -> Fetched:
        raise NotImplementedError

    async def manifest(self, desc: Descriptor) -> bytes:
        raise NotImplementedError

    def blob(self, desc: Descriptor, offset: int = 0) -> AsyncIterator[bytes]:
        raise NotImplementedError

    async def read_blob(self, desc: Descriptor) -> bytes:
        """A small blob (a config) whole, verified."""
        if desc.size > 16 << 20:
            raise InvalidObject(f"{self.name}: blob {desc.digest}", "size",
                                f"{desc.size} bytes is over the 16 MiB limit for configs")
        parts = [c async for c in self.blob(desc)]
        data = b"".join(parts)
        _digest.verify_bytes(data, desc.digest, size=desc.size, what=f"{self.name}: blob {desc.digest}")
        return data

    def blob_path(self, desc: Descriptor) -> str | None:
        """The local file that holds the blob, if there is one (it is read directly)."""
        return None

    # destination
    def layer_compression(self, have: str) -> str:
        """The compression this destination gives a layer compressed as ``have``
        when the user asks for none in particular (skopeo's choice per transport)."""
        return have

    streams_blobs = False  # True: takes a blob whose digest is not known yet with put_stream

    async def put_stream(self, open_stream: Callable[[], AsyncIterator[bytes]]) -> tuple[str, int]:
        """Store the blob ``open_stream()`` yields (made again, the same, to resume); its (digest, size)."""
        raise NotImplementedError

    def new_blob_sink(self):
        """Where a blob whose digest is not known yet is written (``write``,
        ``digest``, ``size``; ``commit`` where it is stored in place): a temporary
        file, unless the destination has better (a docker archive has not: its tar
        header, written first, holds the size)."""
        from .layers import TempSink

        return TempSink()

    async def has_blob(self, desc: Descriptor) -> bool:
        raise NotImplementedError

    # referrers (manifests whose subject is a given digest)
    holds_referrers = False

    async def referrers(self, dig: str) -> list[Descriptor]:
        return []

    async def put_referrer(self, data: bytes, media_type: str, subject: str) -> None:
        raise UsageError(f"{self.name}: cannot hold referrers", hint="copy referrers to docker:// or oci:")

    async def put_blob(self, desc: Descriptor, source: Location, progress: Progress = None) -> None:
        raise NotImplementedError

    async def put_manifest(self, data: bytes, media_type: str, top: bool) -> None:
        raise NotImplementedError

    def __str__(self) -> str:
        return self.name


# --- docker:// -----------------------------------------------------------------


@dataclass
class DockerLocation(Location):
    ref: Reference
    options: Options
    shared: Registry | None = None  # a client shared by many copies (sync); not closed here

    def __post_init__(self) -> None:
        self.name = f"docker://{self.ref}"
        from ..distribution.client import Registry

        self.registry = self.shared or Registry(self.ref.api_host, self.options)

    async def close(self, ok: bool) -> None:
        if self.shared is None:
            await self.registry.close()

    async def top(self) -> Fetched:
        return await self.registry.get_manifest(self.ref.repository, self.ref.reference)

    async def manifest(self, desc: Descriptor) -> bytes:
        fetched = await self.registry.get_manifest(self.ref.repository, desc.digest)
        if fetched.size != desc.size:
            raise _digest.SizeMismatch(f"manifest {desc.digest}", desc.size, fetched.size)
        return fetched.data

    def blob(self, desc: Descriptor, offset: int = 0) -> AsyncIterator[bytes]:
        return self.registry.blob_chunks(self.ref.repository, desc.digest, desc.size, offset)

    def layer_compression(self, have: str) -> str:
        return "gzip" if have == "none" else have  # registries get compressed layers

    async def has_blob(self, desc: Descriptor) -> bool:
        size = await self.registry.blob_size(self.ref.repository, desc.digest)
        return size is not None and size in (desc.size, -1)

    async def put_blob(self, desc: Descriptor, source: Location, progress: Progress = None) -> None:
        if (isinstance(source, DockerLocation) and source.ref.api_host == self.ref.api_host
                and source.ref.repository != self.ref.repository):
            if await self.registry.mount_blob(self.ref.repository, desc.digest, source.ref.repository):
                if progress:
                    progress(desc.size)
                return
        await self.registry.upload_blob(self.ref.repository, desc.digest, desc.size,
                                        lambda offset: source.blob(desc, offset), progress=progress)

    streams_blobs = True

    async def put_stream(self, open_stream: Callable[[], AsyncIterator[bytes]]) -> tuple[str, int]:
        return await self.registry.upload_stream(self.ref.repository, open_stream)

    holds_referrers = True

    async def referrers(self, dig: str) -> list[Descriptor]:
        found = await self.registry.referrers(self.ref.repository, dig)
        return [Descriptor.from_dict(d, f"{self.name}: referrers of {dig}") for d in found]

    async def put_referrer(self, data: bytes, media_type: str, subject: str) -> None:
        from ..errors import ReferenceNotFound as NoTag
        from .referrers import descriptor_of, fallback_tag, merged_index

        desc = descriptor_of(data, media_type)
        repo = self.ref.repository
        await self.registry.put_manifest(repo, desc.digest, data, media_type)
        if any(d.digest == desc.digest for d in await self.referrers(subject)):
            return  # the registry's referrers API lists it
        tag = fallback_tag(subject)  # no referrers API: keep the tag schema's index up to date
        try:
            existing = (await self.registry.get_manifest(repo, tag, accept=mt.OCI_INDEX)).data
        except NoTag:
            existing = None
        merged = merged_index(existing, desc)
        if merged is not None:
            await self.registry.put_manifest(repo, tag, merged, mt.OCI_INDEX)

    async def put_manifest(self, data: bytes, media_type: str, top: bool) -> None:
        dig = _digest.of_bytes(data)
        reference = (self.ref.digest or self.ref.tag or "latest") if top else dig
        if top and self.ref.digest and self.ref.digest != dig:
            raise UsageError(f"{self.name}: the copied manifest has digest {dig}, not {self.ref.digest}",
                             hint="name the destination by tag, or use --preserve-digests without conversion")
        await self.registry.put_manifest(self.ref.repository, reference, data, media_type)


# --- oci: ------------------------------------------------------------------------


class OCILocation(Location):
    def __init__(self, path: str, tag: str | None) -> None:
        self.path = path
        self.tag = tag
        self.name = f"oci:{path}" + (f":{tag}" if tag else "")
        self.layout: Layout | None = None
        self._created = False
        self._lock_ctx = None

    async def open(self, writing: bool) -> None:
        from ..image.layout import Layout

        if writing:
            self._created = not os.path.exists(os.path.join(self.path, "oci-layout"))
            if self._created and os.path.exists(self.path) and os.listdir(self.path):
                raise LayoutError(f"{self.path}: exists and is not an OCI image layout")
            self.layout = Layout.open_or_init(self.path)
            self._lock_ctx = self.layout.writing()
            self._lock_ctx.__enter__()
        else:
            self.layout = Layout.open(self.path)

    async def close(self, ok: bool) -> None:
        if self._lock_ctx is not None:
            self._lock_ctx.__exit__(None, None, None)
            self._lock_ctx = None
        if not ok and self._created:
            import shutil

            shutil.rmtree(self.path, ignore_errors=True)

    def _top_desc(self) -> Descriptor:
        assert self.layout is not None
        if self.tag:
            return self.layout.resolve(self.tag)
        manifests = self.layout.index().manifests
        if len(manifests) != 1:
            tags = ", ".join(sorted({m.ref_name for m in manifests if m.ref_name})) or "none"
            raise ReferenceNotFound(f"{self.path}: holds {len(manifests)} images; name one as oci:{self.path}:TAG "
                                    f"(tags: {tags})")
        return manifests[0]

    async def top(self) -> Fetched:
        desc = self._top_desc()
        assert self.layout is not None
        if desc.media_type not in mt.MANIFESTS | mt.INDEXES:
            from ..errors import UnsupportedMediaType

            raise UnsupportedMediaType(f"{self.name}: unsupported manifest media type {desc.media_type!r}")
        return Fetched(self.layout.read_json_blob(desc, "manifest"), desc.media_type, desc.digest)

    async def manifest(self, desc: Descriptor) -> bytes:
        assert self.layout is not None
        return self.layout.read_json_blob(desc, "manifest")

    def blob_path(self, desc: Descriptor) -> str | None:
        assert self.layout is not None
        path = self.layout.blobs.path(desc.digest)
        return path if os.path.isfile(path) else None

    def blob(self, desc: Descriptor, offset: int = 0) -> AsyncIterator[bytes]:
        assert self.layout is not None
        path = self.layout.blobs.path(desc.digest)
        if not os.path.exists(path):
            raise BlobNotFound(f"{self.name}: blob {desc.digest} is missing")
        return file_chunks(path, offset)

    async def has_blob(self, desc: Descriptor) -> bool:
        assert self.layout is not None
        return self.layout.blobs.has(desc.digest)

    holds_referrers = True

    async def referrers(self, dig: str) -> list[Descriptor]:
        """Entries of index.json whose manifest's subject is ``dig``."""
        from .referrers import descriptor_of, subject_of

        assert self.layout is not None
        if getattr(self, "_subjects", None) is None:
            self._subjects: dict[str, list[Descriptor]] = {}
            for entry in self.layout.index().manifests:
                if entry.media_type not in mt.MANIFESTS | mt.INDEXES or entry.size > 4 << 20:
                    continue
                if not self.layout.blobs.has(entry.digest):
                    continue
                data = self.layout.read_json_blob(entry, "manifest")
                subject = subject_of(data)
                if subject:
                    self._subjects.setdefault(subject, []).append(descriptor_of(data, entry.media_type))
        return list(self._subjects.get(dig, []))

    async def put_referrer(self, data: bytes, media_type: str, subject: str) -> None:
        from .referrers import descriptor_of

        assert self.layout is not None
        self.layout.blobs.put(data)
        desc = replace(descriptor_of(data, media_type), annotations=None)  # index.json: type and artifactType
        self.layout.update_index(lambda ms: ms if any(m.digest == desc.digest and not m.ref_name for m in ms)
                                 else [*ms, desc])

    def new_blob_sink(self):
        from ..image.cas import BlobWriter

        assert self.layout is not None
        return BlobWriter(self.layout.blobs)  # committed in place, under its own digest

    async def put_blob(self, desc: Descriptor, source: Location, progress: Progress = None) -> None:
        assert self.layout is not None
        what = f"{source.name}: blob {desc.digest}"
        with self.layout.blobs.writer(_digest.parse(desc.digest)[0]) as w:
            path = source.blob_path(desc)
            if path is not None:
                await copy_file(path, w.write, desc, what, progress)
            else:
                await pump(source.blob(desc), w.write, desc.size, what, progress)
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: w.commit(desc.digest, desc.size, what=what))

    async def put_manifest(self, data: bytes, media_type: str, top: bool) -> None:
        assert self.layout is not None
        self.layout.blobs.put(data)
        if top:
            desc = Descriptor.of(media_type, data)
            if self.tag:
                self.layout.tag(self.tag, desc)
            else:
                def change(ms: list[Descriptor]) -> list[Descriptor]:
                    return [m for m in ms if m.ref_name or m.digest != desc.digest] + [desc]
                self.layout.update_index(change)
            from .._fs import fsync_dir

            fsync_dir(self.layout.blobs.root)


# --- oci-archive: ------------------------------------------------------------------


class OCIArchiveLocation(OCILocation):
    """An OCI layout in a tar file: unpacked to a temporary directory to read,
    assembled in one to write (the archive appears only when complete)."""

    parallel = True

    def __init__(self, archive: str, tag: str | None) -> None:
        super().__init__("", tag)
        self.archive = archive
        self.name = f"oci-archive:{archive}" + (f":{tag}" if tag else "")
        self._tmp: str | None = None
        self._writing = False

    async def open(self, writing: bool) -> None:
        import tempfile

        from ..image.layout import Layout

        self._writing = writing
        self._tmp = tempfile.mkdtemp(prefix=".ocibox-", dir=os.path.dirname(os.path.abspath(self.archive)))
        self.path = os.path.join(self._tmp, "layout")
        if writing:
            if os.path.exists(self.archive):
                _safe_extract(self.archive, self.path)
            self.layout = Layout.open_or_init(self.path)
        else:
            if not os.path.isfile(self.archive):
                raise NotFound(f"{self.archive}: no such archive")
            _safe_extract(self.archive, self.path)
            self.layout = Layout.open(self.path)

    async def close(self, ok: bool) -> None:
        import shutil
        import tarfile

        try:
            if ok and self._writing:
                final_tmp = os.path.join(self._tmp, "archive.tar")
                with tarfile.open(final_tmp, "w", format=tarfile.PAX_FORMAT) as tf:
                    for name in sorted(os.listdir(self.path)):
                        tf.add(os.path.join(self.path, name), arcname=name, filter=_plain)
                os.replace(final_tmp, self.archive)
        finally:
            if self._tmp:
                shutil.rmtree(self._tmp, ignore_errors=True)


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _safe_extract(archive: str, dest: str) -> None:
    import tarfile

    try:
        with tarfile.open(archive, "r:*") as tf:
            tf.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as e:
        raise LayoutError(f"{archive}: not a readable archive: {e}") from None


# --- dir: -------------------------------------------------------------------------


class DirLocation(Location):
    """skopeo's ``dir:`` format: manifest.json, version, and blobs named by hex digest."""

    VERSION = b"Directory Transport Version: 1.1\n"

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = f"dir:{path}"

    def _blob_path(self, dig: str) -> str:
        alg, hexpart = _digest.parse(dig)
        return os.path.join(self.path, hexpart if alg == "sha256" else f"{alg}-{hexpart}")

    async def open(self, writing: bool) -> None:
        if writing:
            from .._fs import atomic_write

            os.makedirs(self.path, exist_ok=True)
            atomic_write(os.path.join(self.path, "version"), self.VERSION, durable=False)
        elif not os.path.isfile(os.path.join(self.path, "manifest.json")):
            raise NotFound(f"{self.path}: not a dir: image (no manifest.json)")

    async def top(self) -> Fetched:
        with open(os.path.join(self.path, "manifest.json"), "rb") as f:
            data = f.read(4 << 20)
        try:
            media_type = json.loads(data).get("mediaType") or mt.OCI_MANIFEST
        except (ValueError, AttributeError):
            raise InvalidObject(f"{self.path}/manifest.json", "", "is not JSON") from None
        return Fetched(data, media_type, _digest.of_bytes(data))

    async def manifest(self, desc: Descriptor) -> bytes:
        with open(self._blob_path(desc.digest), "rb") as f:
            data = f.read(desc.size + 1)
        _digest.verify_bytes(data, desc.digest, size=desc.size, what=f"{self.name}: manifest")
        return data

    def blob_path(self, desc: Descriptor) -> str | None:
        path = self._blob_path(desc.digest)
        return path if os.path.isfile(path) else None

    def new_blob_sink(self):
        return _DigestNamedFile(self.path, self._blob_path)  # named by its digest once written

    def blob(self, desc: Descriptor, offset: int = 0) -> AsyncIterator[bytes]:
        path = self._blob_path(desc.digest)
        if not os.path.exists(path):
            raise BlobNotFound(f"{self.name}: blob {desc.digest} is missing")
        return file_chunks(path, offset)

    async def has_blob(self, desc: Descriptor) -> bool:
        return os.path.exists(self._blob_path(desc.digest))

    async def put_blob(self, desc: Descriptor, source: Location, progress: Progress = None) -> None:
        f = _HashingFile(self._blob_path(desc.digest))
        what = f"{source.name}: blob {desc.digest}"
        try:
            path = source.blob_path(desc)
            if path is not None:
                await copy_file(path, f.write, desc, what, progress)
            else:
                await pump(source.blob(desc), f.write, desc.size, what, progress)
            f.commit(desc.digest, desc.size, what)
        finally:
            f.abort()

    async def put_manifest(self, data: bytes, media_type: str, top: bool) -> None:
        from .._fs import atomic_write

        if top:
            atomic_write(os.path.join(self.path, "manifest.json"), data, durable=False)
        else:
            atomic_write(self._blob_path(_digest.of_bytes(data)), data, durable=False)


# --- docker-archive: --------------------------------------------------------------


class DockerArchiveLocation(Location):
    """``docker save`` / ``podman save`` archives: manifest.json, config JSON, layer tars."""

    parallel = False

    def __init__(self, archive: str, ref: str | None) -> None:
        self.archive = archive
        self.ref = ref
        self.name = f"docker-archive:{archive}" + (f":{ref}" if ref else "")
        self._tar: tarfile.TarFile | None = None
        self._blobs: dict[str, tarfile.TarInfo] = {}
        self._manifest: bytes | None = None
        self._out = None
        self._tmp: str | None = None
        self._entries: dict[str, str] = {}  # digest -> name in the archive being written
        self._config: str | None = None
        self._layers: list[str] = []
        self._lock = asyncio.Lock()
        self.additional_tags: list[str] = []  # more RepoTags (skopeo's --additional-tag)

    # reading
    async def open(self, writing: bool) -> None:
        import tarfile
        import tempfile

        if writing:
            self._repo_tags = [archive_tag(t) for t in ([self.ref] if self.ref else []) + self.additional_tags]
            directory = os.path.dirname(os.path.abspath(self.archive))
            fd, self._tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
            self._out = os.fdopen(fd, "wb")
            return
        try:
            self._tar = tarfile.open(self.archive, "r:")
        except FileNotFoundError:
            raise NotFound(f"{self.archive}: no such archive") from None
        except tarfile.TarError as e:
            raise LayoutError(f"{self.archive}: not a docker archive: {e}") from None
        try:
            self._build_manifest()
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise LayoutError(f"{self.archive}: malformed manifest.json ({type(e).__name__}: {e})") from None

    def _member(self, name: str, depth: int = 0) -> tarfile.TarInfo:
        assert self._tar is not None
        if depth > 8:
            raise LayoutError(f"{self.archive}: {name}: too many levels of links")
        try:
            info = self._tar.getmember(os.path.normpath(name))
        except KeyError:
            try:
                info = self._tar.getmember(name)
            except KeyError:
                raise LayoutError(f"{self.archive}: {name} is named in manifest.json but missing") from None
        if info.issym() or info.islnk():
            info = self._member(os.path.join(os.path.dirname(name), info.linkname)
                                if info.issym() else info.linkname, depth + 1)
        if not info.isfile():
            raise LayoutError(f"{self.archive}: {name} is not a regular file")
        return info

    def _read(self, info: tarfile.TarInfo, limit: int = 16 << 20) -> bytes:
        assert self._tar is not None
        if info.size > limit:
            raise InvalidObject(f"{self.archive}: {info.name}", "size", "too large")
        f = self._tar.extractfile(info)
        assert f is not None
        return f.read()

    def _build_manifest(self) -> None:
        from ..image.compression import detect

        entries = json.loads(self._read(self._member("manifest.json")))
        if not isinstance(entries, list) or not entries:
            raise LayoutError(f"{self.archive}: manifest.json lists no images")
        entry = entries[0]
        if self.ref:
            if self.ref.startswith("@") and self.ref[1:].isdigit():
                idx = int(self.ref[1:])
                if idx >= len(entries):
                    raise ReferenceNotFound(f"{self.archive}: no image @{idx}")
                entry = entries[idx]
            else:
                want = Reference.parse(self.ref).defaulted()
                names = {f"{want.name}:{want.tag}", want.familiar()}
                matches = [e for e in entries
                           if any(t in names or _norm_tag(t) in names for t in (e.get("RepoTags") or []))]
                if not matches:
                    tags = ", ".join(t for e in entries for t in (e.get("RepoTags") or [])) or "none"
                    raise ReferenceNotFound(f"{self.archive}: no image tagged {self.ref!r} (tags: {tags})")
                entry = matches[0]
        elif len(entries) > 1:
            raise UsageError(f"{self.archive}: holds {len(entries)} images; name one as "
                             f"docker-archive:{self.archive}:REF or :@INDEX")
        config_info = self._member(entry["Config"])
        config = self._read(config_info)
        config_digest = _digest.of_bytes(config)
        self._blobs[config_digest] = config_info
        layers = []
        for name in entry.get("Layers") or []:
            info = self._member(name)
            f = self._tar.extractfile(info)
            head = f.read(8)
            f.seek(0)
            dig, size = _digest.of_file(f)
            self._blobs[dig] = info
            kind = detect(head)
            media_type = {"gzip": mt.DOCKER_LAYER_GZIP, "zstd": mt.OCI_LAYER_ZSTD}.get(
                kind, "application/vnd.docker.image.rootfs.diff.tar")
            layers.append({"mediaType": media_type, "size": size, "digest": dig})
        # compact, keys in the order skopeo writes them (mediaType, size, digest)
        self._manifest = json.dumps({
            "schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST,
            "config": {"mediaType": mt.DOCKER_CONFIG, "size": len(config), "digest": config_digest},
            "layers": layers}, separators=(",", ":")).encode()

    async def top(self) -> Fetched:
        assert self._manifest is not None
        return Fetched(self._manifest, mt.DOCKER_MANIFEST, _digest.of_bytes(self._manifest))

    async def manifest(self, desc: Descriptor) -> bytes:
        raise NotFound(f"{self.archive}: holds no manifest {desc.digest}")

    async def _chunks(self, info: tarfile.TarInfo, offset: int) -> AsyncIterator[bytes]:
        assert self._tar is not None
        f = self._tar.extractfile(info)
        f.seek(offset)
        while chunk := f.read(CHUNK):
            yield chunk

    def blob(self, desc: Descriptor, offset: int = 0) -> AsyncIterator[bytes]:
        info = self._blobs.get(desc.digest)
        if info is None:
            raise BlobNotFound(f"{self.name}: blob {desc.digest} is not in the archive")
        return self._chunks(info, offset)

    # writing
    def layer_compression(self, have: str) -> str:
        return "none"  # as docker save and skopeo write them

    async def has_blob(self, desc: Descriptor) -> bool:
        return desc.digest in self._entries

    def _header(self, name: str, size: int) -> bytes:
        import tarfile

        info = tarfile.TarInfo(name)
        info.size = size
        info.mode = 0o644
        return info.tobuf(tarfile.PAX_FORMAT)

    async def put_blob(self, desc: Descriptor, source: Location, progress: Progress = None) -> None:
        async with self._lock:
            assert self._out is not None
            hexpart = _digest.parse(desc.digest)[1]
            name = f"{hexpart}.json" if desc.media_type in mt.CONFIGS else f"{hexpart}.tar"
            self._out.write(self._header(name, desc.size))
            h = _digest.hasher()
            n = 0
            async for chunk in source.blob(desc):
                h.update(chunk)
                n += len(chunk)
                if n > desc.size:
                    raise _digest.SizeMismatch(f"{source.name}: blob {desc.digest}", desc.size, n)
                self._out.write(chunk)
                if progress:
                    progress(len(chunk))
            if n != desc.size:
                raise _digest.SizeMismatch(f"{source.name}: blob {desc.digest}", desc.size, n)
            if "sha256:" + h.hexdigest() != desc.digest:
                raise _digest.DigestMismatch(f"{source.name}: blob {desc.digest}", desc.digest,
                                             "sha256:" + h.hexdigest())
            self._out.write(b"\0" * (-desc.size % 512))
            self._entries[desc.digest] = name

    async def put_manifest(self, data: bytes, media_type: str, top: bool) -> None:
        if not top:
            return  # the children of an index: refused below when the index arrives
        if media_type not in mt.MANIFESTS:
            raise UsageError(f"{self.name}: a docker archive holds single images, not {media_type}",
                             hint="pick one image with --platform, or leave out --all")
        d = json.loads(data)
        entry = {"Config": self._entries[d["config"]["digest"]],
                 "RepoTags": list(dict.fromkeys(self._repo_tags)),
                 "Layers": [self._entries[x["digest"]] for x in d["layers"]]}
        body = json.dumps([entry]).encode()
        self._out.write(self._header("manifest.json", len(body)))
        self._out.write(body + b"\0" * (-len(body) % 512))
        self._out.write(b"\0" * 1024)

    async def close(self, ok: bool) -> None:
        if self._tar is not None:
            self._tar.close()
        if self._out is not None:
            self._out.close()
            if ok:
                os.replace(self._tmp, self.archive)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._tmp)


def archive_tag(text: str) -> str:
    """A RepoTags entry as docker save and skopeo write it: the familiar name and a tag."""
    ref = Reference.parse(text)
    if ref.digest:
        raise UsageError(f"{text!r}: a docker archive names images by tag, not by digest")
    return ref.defaulted().familiar()


def _norm_tag(tag: str) -> str:
    try:
        r = Reference.parse(tag).defaulted()
        return f"{r.name}:{r.tag}"
    except InvalidReference:  # an archive's RepoTags entry that is no reference: compare as is
        return tag


__all__ = ["DirLocation", "DockerArchiveLocation", "DockerLocation",
           "Location", "OCIArchiveLocation", "OCILocation", "parse_location"]

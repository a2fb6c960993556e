"""Copy images between locations, as ``skopeo copy`` does.

Blobs move in parallel (up to ``jobs`` at once) and stream: no layer is held
in memory. Each blob is verified where it lands; manifests go after the blobs
they name, children before their index, and the name (tag) last. Conversion
(``format``) and compression changes write new manifests: layers are compressed
as the destination prefers (gzip for registries, none for docker archives, as
skopeo) or as asked (``compress``, ``force_compress``, ``decompress``); with
``preserve_digests`` the preference yields and a request that would change a
digest is refused. With ``referrers`` the manifests whose subject is a copied
manifest follow it, unchanged.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace

from .. import digest as _digest
from .. import mediatypes as mt
from ..distribution.options import Options
from ..errors import UnsupportedMediaType, UsageError
from ..image import docker as _docker
from ..image.models import Descriptor, Index, Manifest, Platform, load_json
from ._select import check_manifest_type as _check_manifest_type
from ._select import pick as _pick
from ._tasks import gather_bounded
from .layers import CHANGEABLE, media_type_for
from .locations import (
    DockerArchiveLocation,
    Location,
    OCIArchiveLocation,
    OCILocation,
    file_chunks,
    parse_location,
)

Report = Callable[[str], None]


@dataclass
class CopyOptions:
    all_images: bool = False
    platform: Platform | None = None
    format: str | None = None  # "oci" or "v2s2"; None keeps the source's (OCI for oci: destinations)
    compress: str | None = None  # --dest-compress-format: "gzip" or "zstd" for every layer
    force_compress: bool = False  # --dest-compress: compress uncompressed layers, whatever the destination
    decompress: bool = False  # --dest-decompress: store layers uncompressed
    compress_level: int | None = None  # --dest-compress-level
    additional_tags: list[str] = field(default_factory=list)  # more RepoTags in a docker-archive: destination
    referrers: bool = False  # also copy the manifests that refer to the copied ones (signatures, SBOMs)
    index_only: bool = False  # skopeo's --multi-arch index-only: an index without its images
    remove_signatures: bool = False  # accepted: ocibox copies no signatures, unless as referrers
    blob_info_cache: bool = True  # remember what layers compressed to, and skip that work next time
    preserve_digests: bool = False
    jobs: int = 6
    report: Report | None = None
    progress: Callable[[str, Descriptor, int], None] | None = None  # (event, blob, bytes)
    src_options: Options = field(default_factory=Options)
    dst_options: Options = field(default_factory=Options)


@dataclass
class CopyResult:
    digest: str
    media_type: str
    blobs_copied: int = 0
    blobs_skipped: int = 0
    bytes_copied: int = 0
    referrers_copied: int = 0


def copy(src: str | Location, dst: str | Location, options: CopyOptions | None = None) -> CopyResult:
    """Copy the image at ``src`` to ``dst`` (``TRANSPORT:...`` strings or locations)."""
    return asyncio.run(copy_async(src, dst, options or CopyOptions()))


async def copy_async(src: str | Location, dst: str | Location, options: CopyOptions) -> CopyResult:
    o = options
    if o.format not in (None, "oci", "v2s2"):
        raise UsageError(f"unknown format {o.format!r}: use oci or v2s2")
    if o.compress not in (None, "gzip", "zstd"):
        raise UsageError(f"unknown compression {o.compress!r}: use gzip or zstd")
    if o.compress == "zstd" and o.format == "v2s2":
        raise UsageError("Docker schema2 (v2s2) cannot carry zstd layers")
    if o.decompress and (o.force_compress or o.compress):
        raise UsageError("--dest-decompress excludes --dest-compress and --dest-compress-format")
    if o.compress_level is not None and o.decompress:
        raise UsageError("--dest-compress-level needs compression, not --dest-decompress")
    if o.compress_level is not None and (o.compress or "gzip") == "gzip" and not 0 <= o.compress_level <= 9:
        raise UsageError(f"gzip compression level {o.compress_level} is out of range: use 0-9")
    source = parse_location(src, o.src_options) if isinstance(src, str) else src
    dest = parse_location(dst, o.dst_options) if isinstance(dst, str) else dst
    if o.additional_tags:
        if not isinstance(dest, DockerArchiveLocation):
            raise UsageError(f"{dest.name}: --additional-tag applies to docker-archive: destinations only")
        dest.additional_tags = list(o.additional_tags)
    if o.remove_signatures and o.referrers:
        raise UsageError("--remove-signatures and --referrers exclude each other: referrers may be signatures",
                         hint="drop one of them")
    if o.index_only and o.all_images:
        raise UsageError("--multi-arch index-only and --all exclude each other")
    if o.referrers and not dest.holds_referrers:
        raise UsageError(f"{dest.name}: cannot hold referrers (--referrers)", hint="copy to docker:// or oci:")
    if o.format is None and isinstance(dest, OCILocation | OCIArchiveLocation):
        o = replace(o, format="oci")  # an OCI layout holds OCI manifests, as skopeo writes them
    ok = False
    await source.open(writing=False)
    try:
        await dest.open(writing=True)
        try:
            result = await _Copier(source, dest, o).run()
            ok = True
            return result
        finally:
            await dest.close(ok)
    finally:
        await source.close(True)


class _Copier:
    def __init__(self, source: Location, dest: Location, o: CopyOptions) -> None:
        self.src, self.dst, self.o = source, dest, o
        self.result = CopyResult("", "")
        self._done: dict[str, Descriptor] = {}  # source blob digest -> destination descriptor
        self._inflight: dict[str, asyncio.Future] = {}
        self._executor = None
        self._cache = None
        self._written: dict[str, str] = {}  # source manifest digest -> its digest at the destination

    def report(self, line: str) -> None:
        if self.o.report:
            self.o.report(line)

    async def run(self) -> CopyResult:
        try:
            return await self._run()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=False)
            if self._cache is not None:
                self._cache.close()

    async def _run(self) -> CopyResult:
        top = await self.src.top()
        _check_manifest_type(top.media_type, top.data, self.src.name)
        src_digest = top.digest
        if top.media_type in mt.INDEXES and self.o.index_only:
            if self._target_format(top.media_type):
                raise UsageError(f"{self.src.name}: --multi-arch index-only copies the index as it is",
                                 hint="drop --format")
            data, media_type = top.data, top.media_type
        elif top.media_type in mt.INDEXES:
            if self.o.all_images:
                data, media_type = await self._index(top.data, top.media_type)
            else:
                index = Index.from_bytes(top.data, f"{self.src.name}: index")
                child = _pick(list(index.manifests), self.o.platform or Platform.host(), self.src.name)
                raw = await self.src.manifest(child)
                _check_manifest_type(child.media_type, raw, self.src.name)
                if child.media_type in mt.INDEXES:
                    raise UnsupportedMediaType(f"{self.src.name}: nested index {child.digest}; use --all")
                data, media_type = await self._image(raw, child.media_type)
                src_digest = child.digest
        else:
            data, media_type = await self._image(top.data, top.media_type)
        self.report("Writing manifest to image destination")
        await self.dst.put_manifest(data, media_type, top=True)
        self.result.digest = _digest.of_bytes(data)
        self.result.media_type = media_type
        self._written[src_digest] = self.result.digest
        if self.o.referrers:
            await self._referrers()
        return self.result

    # --- referrers ---------------------------------------------------------------

    async def _referrers(self) -> None:
        """Copy, unchanged, the manifests whose subject is a manifest just copied,
        then theirs (a signature of an SBOM), down to MAX_DEPTH levels."""
        from .referrers import MAX_DEPTH

        seen: set[str] = set()
        queue = [(src, dst, 0) for src, dst in self._written.items()]
        while queue:
            subject, dst_subject, depth = queue.pop(0)
            found = await self.src.referrers(subject)
            if found and dst_subject != subject:
                raise UsageError(f"{self.src.name}: {subject} has {len(found)} referrer(s), but the copy changed "
                                 f"its digest to {dst_subject}: they would refer to nothing",
                                 hint="add --preserve-digests, or drop the flags that convert or recompress")
            for desc in found:
                if desc.digest in seen:
                    continue
                seen.add(desc.digest)
                if desc.media_type not in mt.MANIFESTS | mt.INDEXES:
                    self.report(f"Skipping referrer {desc.digest}: media type {desc.media_type}")
                    continue
                raw = await self.src.manifest(desc)
                await self._as_is(raw, desc.media_type)
                await self.dst.put_referrer(raw, desc.media_type, subject)
                self.result.referrers_copied += 1
                self.report(f"Copying referrer {_short(desc.digest)} done ({desc.artifact_type or desc.media_type})")
                if depth + 1 < MAX_DEPTH:
                    queue.append((desc.digest, desc.digest, depth + 1))

    async def _as_is(self, raw: bytes, media_type: str) -> None:
        """The blobs (and for an index, the manifests) a manifest names, copied unchanged."""
        if media_type in mt.MANIFESTS:
            await self._blobs_of(raw)
            return
        for child in Index.from_bytes(raw, f"{self.src.name}: index").manifests:
            if child.media_type in mt.MANIFESTS | mt.INDEXES:
                child_raw = await self.src.manifest(child)
                await self._as_is(child_raw, child.media_type)
                await self.dst.put_manifest(child_raw, child.media_type, top=False)

    # --- manifests -----------------------------------------------------------

    async def _index(self, data: bytes, media_type: str) -> tuple[bytes, str]:
        index = Index.from_bytes(data, f"{self.src.name}: index")
        children: dict[str, Descriptor] = {}
        for child in index.manifests:
            raw = await self.src.manifest(child)
            if child.media_type in mt.INDEXES:
                new, new_type = await self._index(raw, child.media_type)
            elif child.media_type in mt.MANIFESTS:
                new, new_type = await self._image(raw, child.media_type)
            else:
                new, new_type = raw, child.media_type  # an artifact manifest of another kind
                await self._blobs_of(raw)
            await self.dst.put_manifest(new, new_type, top=False)
            self._written[child.digest] = _digest.of_bytes(new)
            if new != raw:
                children[child.digest] = Descriptor.of(new_type, new)
        want = self._target_format(media_type)
        if want == "oci":
            out = _docker.index_to_oci(data, children=children)
        elif want == "v2s2":
            out = _docker.index_from_oci(data, children=children)
        elif children:
            out = _docker.index_to_oci(data, children=children) if media_type == mt.OCI_INDEX \
                else _docker.index_from_oci(data, children=children)
        else:
            out = data
        if out != data and self.o.preserve_digests:
            raise UsageError(f"{self.src.name}: the copy would change the index digest",
                             hint="drop --preserve-digests, --format or --dest-compress-format")
        out_type = load_json(out, "index").get("mediaType") or media_type
        return out, out_type

    def _target_format(self, media_type: str) -> str | None:
        if self.o.format == "oci" and _docker.is_docker(media_type):
            return "oci"
        if self.o.format == "v2s2" and not _docker.is_docker(media_type):
            return "v2s2"
        return None

    async def _blobs_of(self, raw: bytes) -> None:
        m = Manifest.from_bytes(raw, f"{self.src.name}: manifest")
        await gather_bounded(self.o.jobs, [lambda d=d: self._blob(d) for d in (m.config, *m.layers)])

    async def _image(self, raw: bytes, media_type: str) -> tuple[bytes, str]:
        what = f"{self.src.name}: manifest"
        _docker.check_not_schema1(raw, media_type, what)
        m = Manifest.from_bytes(raw, what)
        want = self._target_format(media_type)
        docker_out = want == "v2s2" or (want is None and _docker.is_docker(media_type))
        targets = [self._layer_target(d, docker_out) for d in m.layers]  # refusals come before any copying
        config = await self._blob(m.config)
        layers = await gather_bounded(self.o.jobs, [lambda d=d, t=t: self._layer(d, t)
                                                    for d, t in zip(m.layers, targets, strict=True)])
        out = raw
        if any(new != old for new, old in zip(layers, m.layers, strict=True)):
            d = load_json(raw, what)
            by_digest = {old.digest: new for old, new in zip(m.layers, layers, strict=True)}
            for x in d["layers"]:
                new = by_digest[x["digest"]]
                x.update(mediaType=new.media_type, digest=new.digest, size=new.size)
            out = json.dumps(d, separators=(",", ":")).encode()  # compact, as skopeo writes it
        if want == "oci":
            out = _docker.manifest_to_oci(out, config=_as(config, mt.OCI_CONFIG))
            media_type = mt.OCI_MANIFEST
        elif want == "v2s2":
            out = _docker.manifest_from_oci(out, config=_as(config, mt.DOCKER_CONFIG))
            media_type = mt.DOCKER_MANIFEST
        if out != raw and self.o.preserve_digests:
            raise UsageError(f"{self.src.name}: the copy would change the manifest digest",
                             hint="drop --preserve-digests, --format or --dest-compress-format")
        return out, media_type

    # --- blobs -----------------------------------------------------------------

    def _layer_target(self, desc: Descriptor, docker_out: bool) -> str | None:
        """The compression a layer gets at the destination, or None to copy it as it is."""
        if desc.media_type not in CHANGEABLE:
            return None
        o = self.o
        have = mt.layer_compression(desc.media_type)
        explicit = True
        if o.decompress:
            want = "none"
        elif o.compress:
            want = o.compress
        elif o.force_compress:
            want = "gzip" if have == "none" else have
        else:
            want, explicit = self.dst.layer_compression(have), False
        if want == have:
            return None
        if o.preserve_digests:
            if not explicit:
                return None  # as skopeo: the destination's preference yields to --preserve-digests
            raise UsageError(f"{self.src.name}: changing layer {desc.digest} from {_describe(have)} to "
                             f"{_describe(want)} would change its digest",
                             hint="drop --preserve-digests, or the --dest-compress* / --dest-decompress flag")
        if want == "zstd" and docker_out:
            raise UsageError(f"{self.src.name}: a Docker schema2 manifest cannot name zstd layers",
                             hint="add --format oci, or use --dest-compress-format gzip")
        return want

    async def _layer(self, desc: Descriptor, want: str | None) -> Descriptor:
        if want is None:
            return await self._blob(desc)
        return await self._once(f"{desc.digest}>{want}", lambda: self._transform(desc, want))

    async def _once(self, key: str, make: Callable[[], Awaitable[Descriptor]]) -> Descriptor:
        """Run ``make`` once per key, however many manifests ask for it."""
        if key in self._done:
            return self._done[key]
        if key in self._inflight:
            return await self._inflight[key]
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            desc = await make()
            self._done[key] = desc
            fut.set_result(desc)
            return desc
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # mark retrieved; the raise below reports it
            raise
        finally:
            del self._inflight[key]

    async def _blob(self, desc: Descriptor) -> Descriptor:
        """Copy one blob once, however many manifests name it."""
        return await self._once(desc.digest, lambda: self._copy_blob(desc))

    async def _copy_blob(self, desc: Descriptor) -> Descriptor:
        if desc.urls and desc.media_type in (mt.DOCKER_LAYER_FOREIGN_GZIP, mt.OCI_LAYER_NONDIST_GZIP,
                                             mt.OCI_LAYER_NONDIST, mt.OCI_LAYER_NONDIST_ZSTD):
            self.report(f"Skipping foreign blob {desc.digest}")
        elif await self.dst.has_blob(desc):
            self.report(f"Copying blob {_short(desc.digest)} skipped: already exists")
            self.result.blobs_skipped += 1
            self._event("skip", desc, 0)
        else:
            self._event("start", desc, 0)
            await self.dst.put_blob(desc, self.src, lambda n: self._event("bytes", desc, n))
            self.result.blobs_copied += 1
            self.result.bytes_copied += desc.size
            self._event("done", desc, desc.size)
            self.report(f"Copying blob {_short(desc.digest)} done ({_human(desc.size)})")
        return desc

    def _event(self, event: str, desc: Descriptor, n: int) -> None:
        if self.o.progress:
            self.o.progress(event, desc, n)

    def _blob_info(self):
        """The blob info cache, unless disabled or a level is asked for (the cached blob may have another)."""
        if not self.o.blob_info_cache or self.o.compress_level is not None:
            return None
        if self._cache is None:
            from .blobinfo import BlobInfoCache

            self._cache = BlobInfoCache()
        return self._cache

    async def _transform(self, desc: Descriptor, want: str) -> Descriptor:
        """Copy a layer compressed as ``want``: streamed through a worker thread into a
        registry's upload, the destination layout itself, or a temporary file."""
        from .layers import transform

        have = mt.layer_compression(desc.media_type)
        cache = self._blob_info()
        known = cache.get(desc.digest, want) if cache else None
        if known:
            new = Descriptor(media_type=media_type_for(desc.media_type, want), digest=known[0], size=known[1])
            if await self.dst.has_blob(new):  # compressed by an earlier copy: not even read this time
                self.result.blobs_skipped += 1
                self._event("skip", desc, 0)
                self.report(f"Copying blob {_short(desc.digest)} (as {_short(new.digest)}) skipped: already exists")
                return new
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor

            # Our own threads: the default pool also resolves host names for the HTTP client.
            # No more than the CPUs: compression is CPU-bound, and each stream's state is MiBs.
            workers = max(1, min(self.o.jobs, os.cpu_count() or 1))
            self._executor = ThreadPoolExecutor(workers, thread_name_prefix="ocibox-compress")
        self._event("start", desc, 0)
        skipped = False
        what = f"{self.src.name}: blob {desc.digest}"
        if self.dst.streams_blobs:
            # straight to the registry: the digest is learnt as the bytes go (made
            # again from the source if the upload must resume)
            from .layers import transformed

            def stream() -> AsyncIterator[bytes]:
                chunks = _counted(self.src.blob(desc), lambda n: self._event("bytes", desc, n))
                return transformed(chunks, desc, have, want, self.o.compress_level, self._executor, what)

            new_digest, new_size = await self.dst.put_stream(stream)
            self.result.blobs_copied += 1
        else:
            sink = self.dst.new_blob_sink()
            try:
                chunks = _counted(self.src.blob(desc), lambda n: self._event("bytes", desc, n))
                await transform(chunks, desc, have, want, self.o.compress_level, sink, self._executor, what)
                new_digest, new_size = sink.digest, sink.size
                new = Descriptor(media_type=media_type_for(desc.media_type, want), digest=new_digest,
                                 size=new_size)
                if hasattr(sink, "commit"):  # a blob writer of the destination layout
                    await asyncio.get_running_loop().run_in_executor(self._executor, sink.commit)
                    self.result.blobs_copied += 1
                else:
                    sink.finish()
                    if await self.dst.has_blob(new):
                        self.result.blobs_skipped += 1
                        skipped = True
                    else:
                        await self.dst.put_blob(new, _FileSource(sink.path, new))
                        self.result.blobs_copied += 1
            finally:
                if hasattr(sink, "abort"):
                    sink.abort()
                else:
                    sink.discard()
        new = Descriptor(media_type=media_type_for(desc.media_type, want), digest=new_digest, size=new_size)
        if cache:
            cache.put(desc.digest, want, new_digest, new_size)
        self.result.bytes_copied += new_size
        self._event("done", desc, desc.size)
        if skipped:
            self.report(f"Copying blob {_short(desc.digest)} (as {_short(new_digest)}) skipped: already exists")
        else:
            verb = "decompressed" if want == "none" else f"compressed with {want}"
            self.report(f"Copying blob {_short(desc.digest)} done ({verb}: {_short(new_digest)}, {_human(new_size)})")
        return new


async def _counted(chunks: AsyncIterator[bytes], progress: Callable[[int], None]) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            progress(len(chunk))
            yield chunk
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


class _FileSource(Location):
    def __init__(self, path: str, desc: Descriptor) -> None:
        self.path, self.desc, self.name = path, desc, path

    def blob(self, desc: Descriptor, offset: int = 0) -> AsyncIterator[bytes]:
        return file_chunks(self.path, offset)


def _as(desc: Descriptor, media_type: str) -> Descriptor:
    return Descriptor(media_type=media_type, digest=desc.digest, size=desc.size)


def _describe(compression: str) -> str:
    return "uncompressed" if compression == "none" else compression


def _short(dig: str) -> str:
    return dig.split(":", 1)[-1][:12]


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


__all__ = ["CopyOptions", "CopyResult", "copy", "copy_async"]

"""OCI image layouts: ``oci-layout``, ``index.json`` and ``blobs/``.

``Layout`` understands manifests and indexes and names images by the
``org.opencontainers.image.ref.name`` annotation in ``index.json``; it reaches
blobs only through ``BlobStore``.

Concurrency: ``index.json`` is rewritten atomically under an exclusive flock on
the layout directory, as a read-modify-write, so two processes tagging at once
both keep their tags. Writers hold a shared flock on ``blobs/`` for the whole
operation (``writing()``), and ``gc`` takes it exclusively, so gc never removes
a blob that a running writer has stored but not yet named in ``index.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .. import mediatypes as mt
from .._fs import atomic_write, file_lock
from ..errors import (
    AlreadyExists,
    InvalidObject,
    LayoutError,
    MalformedJSON,
    ReferenceNotFound,
    UnsupportedMediaType,
)
from .cas import BlobStore
from .models import (
    ANNOTATION_REF_NAME,
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    Platform,
    dump_json,
    parse_any,
)

LAYOUT_VERSION = "1.0.0"
# image-spec annotations.md: ref.name is "A-Za-z0-9" components joined by -._:@/+ and "--"
_REF_NAME = re.compile(r"^[A-Za-z0-9]+(?:(?:[-._:@+]|--|/)[A-Za-z0-9]+)*$")
MAX_JSON_BLOB = 16 << 20  # manifests and configs larger than this are refused


def check_tag(tag: str) -> str:
    if not isinstance(tag, str) or not _REF_NAME.fullmatch(tag):
        raise InvalidObject("tag", "", f"{tag!r} is not a valid reference name "
                            "(letters and digits, separated by one of - . _ : @ / +)")
    return tag


def _entries(new: list[Descriptor], old: tuple[Descriptor, ...], raw: list) -> list[dict]:
    """JSON of ``new``, reusing the original dict of every entry left unchanged, so
    fields ocibox does not model (vendor extensions) survive a tag or untag."""
    unused = list(zip(old, raw, strict=False))
    out = []
    for desc in new:
        for i, (before, original) in enumerate(unused):
            if before == desc:
                out.append(original)
                del unused[i]
                break
        else:
            out.append(desc.to_dict())
    return out


@dataclass(frozen=True)
class Image:
    """A resolved image: the manifest, its descriptor and its config."""

    descriptor: Descriptor
    manifest: Manifest
    config: ImageConfig


class Layout:
    def __init__(self, path: str) -> None:
        self.path = path
        self.blobs = BlobStore(os.path.join(path, "blobs"))

    # --- opening -----------------------------------------------------------

    @classmethod
    def init(cls, path: str) -> Layout:
        """Create an empty layout; refuses a path that exists and is not an empty directory."""
        if os.path.exists(path):
            if not os.path.isdir(path) or os.listdir(path):
                raise AlreadyExists(f"cannot create layout {path}: path exists and is not empty")
        os.makedirs(os.path.join(path, "blobs", "sha256"), exist_ok=True)
        atomic_write(os.path.join(path, "index.json"),
                     dump_json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": []}))
        atomic_write(os.path.join(path, "oci-layout"),
                     dump_json({"imageLayoutVersion": LAYOUT_VERSION}))
        return cls(path)

    @classmethod
    def open(cls, path: str) -> Layout:
        marker = os.path.join(path, "oci-layout")
        try:
            with open(marker, "rb") as f:
                data = f.read(4096)
        except FileNotFoundError:
            hint = f"create one with: ocibox layout init --layout {path}"
            if not os.path.exists(path):
                raise LayoutError(f"{path}: no such image layout", hint=hint) from None
            raise LayoutError(f"{path}: not an OCI image layout (no oci-layout file)", hint=hint) from None
        except NotADirectoryError:
            raise LayoutError(f"{path}: not an OCI image layout (not a directory)") from None
        try:
            version = json.loads(data).get("imageLayoutVersion")
        except (ValueError, AttributeError):
            raise LayoutError(f"{marker}: malformed oci-layout file") from None
        if version != LAYOUT_VERSION:
            raise LayoutError(f"{marker}: unsupported imageLayoutVersion {version!r}, expected {LAYOUT_VERSION!r}")
        return cls(path)

    @classmethod
    def open_or_init(cls, path: str) -> Layout:
        if os.path.exists(os.path.join(path, "oci-layout")):
            return cls.open(path)
        return cls.init(path)

    # --- locking -----------------------------------------------------------

    @contextlib.contextmanager
    def writing(self) -> Iterator[Layout]:
        """Hold off gc while this process stores blobs and names them."""
        os.makedirs(self.blobs.root, exist_ok=True)
        with file_lock(self.blobs.root, shared=True):
            yield self

    # --- index.json ----------------------------------------------------------

    def index(self) -> Index:
        path = os.path.join(self.path, "index.json")
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise LayoutError(f"{self.path}: index.json is missing") from None
        try:
            return Index.from_bytes(data, f"{path}")
        except (MalformedJSON, InvalidObject) as e:
            raise LayoutError(str(e), hint="the layout's index.json is damaged") from None

    def update_index(self, change: Callable[[list[Descriptor]], list[Descriptor]]) -> Index:
        """Read-modify-write index.json under the layout lock; other fields are kept."""
        with file_lock(self.path):
            current = self.index()
            manifests = change(list(current.manifests))
            d = json.loads(current.raw) if current.raw else current.to_dict()
            d["manifests"] = _entries(manifests, current.manifests, d.get("manifests") or [])
            data = dump_json(d)
            atomic_write(os.path.join(self.path, "index.json"), data)
            return Index.from_bytes(data)

    def refs(self) -> list[tuple[str, Descriptor]]:
        return [(m.ref_name, m) for m in self.index().manifests if m.ref_name]

    def resolve(self, tag: str) -> Descriptor:
        matches = [m for m in self.index().manifests if m.ref_name == tag]
        if not matches:
            names = sorted({name for name, _ in self.refs()})
            known = ", ".join(names[:10]) + (" ..." if len(names) > 10 else "") if names else "none"
            raise ReferenceNotFound(f"{self.path}: no image tagged {tag!r} (tags: {known})")
        if len(matches) > 1:
            # Several entries may share a name when they differ by platform (image-layout.md).
            return self._pick_platform(matches, Platform.host(), tag)
        return matches[0]

    def tag(self, tag: str, descriptor: Descriptor) -> None:
        """Point ``tag`` at ``descriptor``, replacing whatever it named before."""
        check_tag(tag)
        annotations = dict(descriptor.annotations or {})
        annotations[ANNOTATION_REF_NAME] = tag
        entry = descriptor.with_annotations(annotations)
        self.update_index(lambda ms: [m for m in ms if m.ref_name != tag] + [entry])

    def untag(self, tag: str) -> Descriptor:
        removed: list[Descriptor] = []

        def change(ms: list[Descriptor]) -> list[Descriptor]:
            removed.extend(m for m in ms if m.ref_name == tag)
            return [m for m in ms if m.ref_name != tag]

        self.update_index(change)
        if not removed:
            raise ReferenceNotFound(f"{self.path}: no image tagged {tag!r}")
        return removed[0]

    # --- JSON blobs --------------------------------------------------------

    def put_json(self, media_type: str, data: bytes) -> Descriptor:
        digest, size = self.blobs.put(data)
        return Descriptor(media_type=media_type, digest=digest, size=size)

    def read_json_blob(self, desc: Descriptor, what: str) -> bytes:
        if desc.size > MAX_JSON_BLOB:
            raise InvalidObject(what, "size", f"{desc.size} bytes is over the {MAX_JSON_BLOB >> 20} MiB limit")
        return self.blobs.read(desc.digest, desc.size, what=f"{what} {desc.digest}")

    def read_manifest(self, desc: Descriptor) -> Manifest | Index:
        if desc.media_type not in mt.MANIFESTS | mt.INDEXES:
            raise UnsupportedMediaType(f"{desc.digest}: unsupported media type {desc.media_type!r}")
        return parse_any(self.read_json_blob(desc, "manifest"), desc.media_type, f"manifest {desc.digest}")

    def read_config(self, desc: Descriptor) -> ImageConfig:
        if desc.media_type not in mt.CONFIGS:
            raise UnsupportedMediaType(
                f"config {desc.digest}: media type {desc.media_type!r} is not an image config",
                hint="this manifest is an artifact, not a runnable image")
        return ImageConfig.from_bytes(self.read_json_blob(desc, "config"), f"config {desc.digest}")

    # --- images ------------------------------------------------------------

    def image(self, tag: str, platform: Platform | None = None) -> Image:
        """Resolve ``tag`` to one image manifest, choosing by platform through indexes."""
        return self.image_at(self.resolve(tag), platform, tag)

    def image_at(self, desc: Descriptor, platform: Platform | None = None, name: str = "") -> Image:
        want = platform or Platform.host()
        for _ in range(16):  # nested indexes, bounded against cycles
            obj = self.read_manifest(desc)
            if isinstance(obj, Manifest):
                return Image(desc, obj, self.read_config(obj.config))
            desc = self._pick_platform(list(obj.manifests), want, name or desc.digest)
        raise LayoutError(f"{name or desc.digest}: indexes nested too deep")

    @staticmethod
    def _pick_platform(candidates: list[Descriptor], want: Platform, name: str) -> Descriptor:
        runnable = [d for d in candidates if d.media_type in mt.MANIFESTS | mt.INDEXES]
        if len(runnable) == 1 and runnable[0].platform is None:
            return runnable[0]
        for d in runnable:
            if d.platform is not None and want.matches(d.platform):
                return d
        have = ", ".join(str(d.platform) for d in runnable if d.platform) or "none"
        raise ReferenceNotFound(f"{name}: no image for platform {want} (has: {have})",
                                hint="choose one with --platform OS/ARCH[/VARIANT]")

    # --- reachability and gc ----------------------------------------------

    def reachable(self, roots: list[Descriptor] | None = None) -> set[str]:
        """Digests of every blob reachable from ``roots`` (default: index.json)."""
        seen: set[str] = set()
        stack = list(self.index().manifests if roots is None else roots)
        while stack:
            desc = stack.pop()
            if desc.digest in seen:
                continue
            seen.add(desc.digest)
            if desc.media_type in mt.MANIFESTS | mt.INDEXES and self.blobs.has(desc.digest):
                obj = self.read_manifest(desc)
                if isinstance(obj, Manifest):
                    stack.append(obj.config)
                    stack.extend(obj.layers)
                else:
                    stack.extend(obj.manifests)
                # A subject is not content of its referrer: it stays only if named itself.
        return seen

    def gc(self, *, dry_run: bool = False, temp_grace: float = 3600.0) -> list[str]:
        """Remove blobs that nothing in index.json reaches; returns their digests.

        Leftover temporary files of interrupted writes older than ``temp_grace``
        seconds go too. Waits for running writers, and blocks new ones meanwhile.
        """
        with file_lock(self.blobs.root), file_lock(self.path):
            keep = self.reachable()
            doomed = [d for d in self.blobs if d not in keep]
            if not dry_run:
                for d in doomed:
                    self.blobs.delete(d)
                now = time.time()
                for tmp in self.blobs.temporaries():
                    with contextlib.suppress(FileNotFoundError):
                        if now - os.lstat(tmp).st_mtime > temp_grace:
                            os.unlink(tmp)
            return doomed

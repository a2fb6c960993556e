"""Making and changing images in a layout: new, add a layer, edit the config.

Each change writes new blobs (layer, config, manifest) and then, last and
atomically, points a tag at the new manifest; the old manifest stays until gc.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from .. import mediatypes as mt
from ..errors import InvalidObject, ReferenceNotFound, UsageError
from .layout import Image, Layout, check_tag
from .models import Descriptor, ImageConfig, Manifest, Platform

DEFAULT_COMPRESSION = "gzip"


def now_rfc3339() -> str:
    """Current time, or SOURCE_DATE_EPOCH when set (for reproducible images)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (_dt.datetime.fromtimestamp(int(epoch), _dt.UTC) if epoch and epoch.isdigit()
            else _dt.datetime.now(_dt.UTC))
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".") + "Z"


class _HashingSink:
    """Pass-through writer that hashes (and counts) the uncompressed layer: the diff_id."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self._hash.update(data)
        self.size += len(data)
        self._out.write(data)
        return len(data)

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        pass

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


def write_layer(layout: Layout, produce: Callable[[BinaryIO], Any],
                compression: str = DEFAULT_COMPRESSION) -> tuple[Descriptor, str, Any]:
    """Store the tar stream that ``produce(out)`` writes, compressed; returns
    (layer descriptor, diff_id, whatever ``produce`` returned)."""
    from . import compression as comp

    media_type = mt.OCI_LAYER_FOR_COMPRESSION.get(compression)
    if media_type is None:
        raise UsageError(f"unknown compression {compression!r}: use none, gzip or zstd")
    with layout.blobs.writer() as blob:
        packed = comp.open_writer(blob, compression)
        sink = _HashingSink(packed)
        result = produce(sink)
        packed.close()
        digest, size = blob.commit(what="layer")
    return Descriptor(media_type=media_type, digest=digest, size=size), sink.digest, result


def commit_image(layout: Layout, tag: str, config: ImageConfig, layers: list[Descriptor],
                 *, annotations: dict[str, str] | None = None,
                 base: Manifest | None = None) -> Descriptor:
    """Store config and manifest, then point ``tag`` at the manifest."""
    # Refuse a bad tag or a damaged index.json before storing anything.
    check_tag(tag)
    layout.index()
    config_desc = layout.put_json(mt.OCI_CONFIG, config.to_json())
    manifest = Manifest(
        config=config_desc,
        layers=tuple(layers),
        annotations=annotations if annotations is not None else (base.annotations if base else None),
    )
    desc = layout.put_json(mt.OCI_MANIFEST, manifest.to_json())
    layout.tag(tag, desc)
    return desc


def new_image(layout: Layout, tag: str, platform: Platform | None = None) -> Descriptor:
    """An image with no layers and an empty config, as ``umoci new`` makes."""
    with layout.writing():
        config = ImageConfig.new(platform, created=now_rfc3339())
        return commit_image(layout, tag, config, [])


def _empty_image(platform: Platform | None) -> Image:
    """What ``new_image`` would store, unstored: the base of an import to a new tag."""
    config = ImageConfig.new(platform, created=now_rfc3339())
    config_desc = Descriptor.of(mt.OCI_CONFIG, config.to_json())
    manifest = Manifest(config=config_desc, layers=())
    return Image(Descriptor.of(mt.OCI_MANIFEST, manifest.to_json()), manifest, config)


def add_layer(layout: Layout, image: Image, tag: str, layer: Descriptor, diff_id: str,
              history: dict[str, Any] | None) -> Descriptor:
    """Append a stored layer to ``image`` (as OCI) and tag the result."""
    config = ImageConfig(dict(image.config.data))
    config.data["rootfs"] = {"type": "layers", "diff_ids": config.diff_ids + [diff_id]}
    if history is not None:
        config.data["history"] = config.history + [history]
    config.data["created"] = (history or {}).get("created") or now_rfc3339()
    layers = [_as_oci(d) for d in image.manifest.layers] + [layer]
    return commit_image(layout, tag, config, layers, base=image.manifest)


def _as_oci(desc: Descriptor) -> Descriptor:
    media_type = mt.DOCKER_TO_OCI.get(desc.media_type, desc.media_type)
    return Descriptor(media_type=media_type, digest=desc.digest, size=desc.size,
                      urls=desc.urls, annotations=desc.annotations)


def history_entry(created_by: str, *, comment: str | None = None, author: str | None = None,
                  empty_layer: bool = False, created: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"created": created or now_rfc3339(), "created_by": created_by}
    if author:
        entry["author"] = author
    if comment:
        entry["comment"] = comment
    if empty_layer:
        entry["empty_layer"] = True
    return entry


@dataclass
class ConfigEdit:
    """Changes to an image config, with umoci config's meanings.

    Lists given here replace the image's (entrypoint, cmd); env entries replace
    the variable of the same name or are appended; labels, ports and volumes
    are added to what the image has unless ``clear`` names them.
    """

    user: str | None = None
    env: list[str] = field(default_factory=list)
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    workdir: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    exposed_ports: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    stop_signal: str | None = None
    author: str | None = None
    created: str | None = None
    os: str | None = None
    architecture: str | None = None
    variant: str | None = None
    manifest_annotations: dict[str, str] = field(default_factory=dict)
    clear: list[str] = field(default_factory=list)

    CLEARABLE = ("config.labels", "config.env", "config.exposedports", "config.volume",
                 "config.entrypoint", "config.cmd", "manifest.annotations")

    def apply(self, config: ImageConfig) -> ImageConfig:
        d = dict(config.data)
        c: dict[str, Any] = dict(d.get("config") or {})
        for name in self.clear:
            if name not in self.CLEARABLE:
                raise UsageError(f"cannot clear {name!r}: choose from {', '.join(self.CLEARABLE)}")
            key = {"config.labels": "Labels", "config.env": "Env", "config.exposedports": "ExposedPorts",
                   "config.volume": "Volumes", "config.entrypoint": "Entrypoint", "config.cmd": "Cmd"}.get(name)
            if key:
                c.pop(key, None)
        if self.user is not None:
            c["User"] = self.user
        if self.env:
            c["Env"] = merge_env(c.get("Env") or [], self.env)
        if self.entrypoint is not None:
            c["Entrypoint"] = list(self.entrypoint)
        if self.cmd is not None:
            c["Cmd"] = list(self.cmd)
        if self.workdir is not None:
            c["WorkingDir"] = self.workdir
        if self.labels:
            c["Labels"] = {**(c.get("Labels") or {}), **self.labels}
        for port in self.exposed_ports:
            c.setdefault("ExposedPorts", {})[_check_port(port)] = {}
        for volume in self.volumes:
            c.setdefault("Volumes", {})[volume] = {}
        if self.stop_signal is not None:
            c["StopSignal"] = self.stop_signal
        d["config"] = c
        for key, value in (("author", self.author), ("created", self.created), ("os", self.os),
                           ("architecture", self.architecture), ("variant", self.variant)):
            if value is not None:
                d[key] = value
        return ImageConfig(d)


def merge_env(current: list[str], changes: list[str]) -> list[str]:
    out = list(current)
    for item in changes:
        if "=" not in item:
            raise UsageError(f"environment entry {item!r} must be KEY=VALUE")
        key = item.split("=", 1)[0]
        out = [e for e in out if e.split("=", 1)[0] != key] + [item]
    return out


def _check_port(port: str) -> str:
    number, _, proto = port.partition("/")
    if not number.isdigit() or not 0 < int(number) < 65536 or proto not in ("", "tcp", "udp", "sctp"):
        raise InvalidObject("config", "ExposedPorts", f"{port!r} is not PORT[/tcp|udp|sctp]")
    return port if proto else f"{number}/tcp"


def edit_config(layout: Layout, tag: str, edit: ConfigEdit, *, new_tag: str | None = None,
                history: dict[str, Any] | None = None,
                platform: Platform | None = None) -> Descriptor:
    """Apply ``edit`` to the image ``tag`` and tag the result ``new_tag`` (default: same)."""
    with layout.writing():
        image = layout.image(tag, platform)
        config = edit.apply(image.config)
        if history is not None:
            config.data["history"] = config.history + [history]
        annotations = dict(image.manifest.annotations or {})
        if "manifest.annotations" in edit.clear:
            annotations = {}
        annotations.update(edit.manifest_annotations)
        layers = [_as_oci(d) for d in image.manifest.layers]
        return commit_image(layout, new_tag or tag, config, layers, annotations=annotations or None)


def describe(layout: Layout, tag: str, platform: Platform | None = None) -> dict[str, Any]:
    """A summary of one image for ``inspect``: manifest, config and layer sizes."""
    image = layout.image(tag, platform)
    c = image.config.data
    return {
        "tag": tag,
        "digest": image.descriptor.digest,
        "mediaType": image.descriptor.media_type,
        "created": c.get("created"),
        "author": c.get("author"),
        "platform": str(image.config.platform),
        "config": c.get("config") or {},
        "layers": [{"digest": d.digest, "mediaType": d.media_type, "size": d.size}
                   for d in image.manifest.layers],
        "size": sum(d.size for d in image.manifest.layers) + image.manifest.config.size,
        "history": image.config.history,
        "annotations": image.manifest.annotations or {},
    }


def import_rootfs(layout: Layout, tag: str, source: str, *, compression: str = DEFAULT_COMPRESSION,
                  platform: Platform | None = None, history: dict[str, Any] | None = None) -> Descriptor:
    """Add ``source`` (a directory, or a tar archive possibly compressed) as a layer.

    The layer goes on top of the image ``tag`` when it exists, else it starts a
    new image. A tar archive is checked entry by entry (no names escaping the
    root) and stored as it is, recompressed as asked.
    """
    from . import compression as comp
    from .layer import generate

    if os.path.isdir(source):
        def produce(out: BinaryIO) -> None:
            generate(source, out)
    elif os.path.isfile(source):
        def produce(out: BinaryIO) -> None:
            with open(source, "rb") as f:
                kind = comp.detect(f.peek(8)[:8] if hasattr(f, "peek") else b"")
                tee = _Tee(comp.open_reader(f, kind), out)
                _check_tar(tee, source)
                while tee.read(1 << 20):  # the end-of-archive blocks belong to the layer too
                    pass
    else:
        raise UsageError(f"{source}: no such directory or tar archive")
    check_tag(tag)
    with layout.writing():
        try:
            image = layout.image(tag, platform)
        except ReferenceNotFound:
            # Start from an empty image held in memory: a failed import stores nothing.
            image = _empty_image(platform)
        layer, diff_id, _ = write_layer(layout, produce, compression)
        entry = history or history_entry(f"ocibox layout import {os.path.basename(source)}")
        return add_layer(layout, image, tag, layer, diff_id, entry)


def _check_tar(stream: BinaryIO, source: str) -> None:
    """Read a tar archive to its end-of-archive marker, refusing names that climb out
    of the root (entry names and hardlink targets alike)."""
    import tarfile

    from ..errors import LayerError
    from .layer import clean_name

    try:
        with tarfile.open(fileobj=stream, mode="r|", encoding="utf-8",
                          errors="surrogateescape") as tf:
            for member in tf:
                tf.members.clear()  # a stream needs no history; keeps memory flat
                clean_name(member.name, member.name)
                if member.islnk():
                    clean_name(member.linkname, member.name)
    except tarfile.TarError as e:
        raise LayerError(f"{source}: not a valid tar archive: {e}") from None


class _Tee:
    """A reader that copies what it reads into ``out``."""

    def __init__(self, src: BinaryIO, out: BinaryIO) -> None:
        self._src, self._out = src, out

    def read(self, n: int = -1) -> bytes:
        data = self._src.read(n)
        if data:
            self._out.write(data)
        return data

    def readable(self) -> bool:
        return True

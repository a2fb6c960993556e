"""Unpacking an image into a runtime bundle and repacking its changes (umoci's job).

A bundle made by ``unpack`` holds ``rootfs/``, ``config.json`` and two files of
ocibox's own that ``repack`` needs: ``ocibox.json`` (which manifest the rootfs
came from) and ``ocibox.snapshot`` (the metadata of every path right after the
unpack, used to find what changed without reading file contents).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from typing import Any

from .. import __version__
from .. import mediatypes as mt
from .._fs import atomic_write
from ..digest import VerifyingReader
from ..errors import BundleError, LayerError, OciboxError
from .layout import Image, Layout
from .models import Descriptor, Platform, dump_json

META = "ocibox.json"
SNAPSHOT = "ocibox.snapshot"
ROOTFS = "rootfs"


@dataclass(frozen=True)
class BundleMeta:
    manifest: Descriptor
    rootless: bool

    @classmethod
    def load(cls, bundle: str) -> BundleMeta:
        path = os.path.join(bundle, META)
        try:
            with open(path, "rb") as f:
                d = json.loads(f.read())
            return cls(Descriptor.from_dict(d["manifest"], path), bool(d.get("rootless")))
        except FileNotFoundError:
            raise BundleError(f"{bundle}: not a bundle made by 'ocibox layout unpack' (no {META})") from None
        except (ValueError, KeyError, TypeError, OciboxError) as e:
            raise BundleError(f"{path}: damaged bundle metadata: {e}") from None

    def save(self, bundle: str) -> None:
        atomic_write(os.path.join(bundle, META), dump_json({
            "ocibox_version": __version__,
            "manifest": self.manifest.to_dict(),
            "rootless": self.rootless,
        }), 0o600)


def apply_layers(layout: Layout, image: Image, rootfs: str, *, rootless: bool = False) -> None:
    """Extract every layer of ``image`` in order onto ``rootfs``, verifying each blob and diff_id."""
    from .compression import open_reader
    from .layer import apply

    diff_ids = image.config.diff_ids
    if len(diff_ids) != len(image.manifest.layers):
        raise LayerError(f"image {image.descriptor.digest}: {len(image.manifest.layers)} layers "
                         f"but {len(diff_ids)} diff_ids in its config")
    for i, desc in enumerate(image.manifest.layers):
        compression = mt.layer_compression(desc.media_type)
        what = f"layer {i + 1}/{len(diff_ids)} {desc.digest}"
        with layout.blobs.open_verified(desc.digest, desc.size, what) as blob:
            try:
                tar = VerifyingReader(open_reader(blob, compression), diff_ids[i], None,
                                      f"{what} (uncompressed, diff_id)")
                apply(tar, rootfs, rootless=rootless)
                tar.drain()  # tar's end-of-archive padding is part of the diff_id
            except LayerError as e:
                # Say which layer: the decoder and tar reader do not know it.
                raise LayerError(f"{what}: {e.message}", hint=e.hint) from None
            blob.drain()
            blob.verify()
            tar.verify()


def unpack(layout: Layout, tag: str, bundle: str, *, rootless: bool | None = None,
           platform: Platform | None = None) -> Image:
    """Make a runtime bundle of the image ``tag``: rootfs/, config.json and repack state."""
    from .convert import to_runtime_config
    from .snapshot import Snapshot

    if rootless is None:
        rootless = os.geteuid() != 0
    image = layout.image(tag, platform)
    if os.path.exists(bundle) and (not os.path.isdir(bundle) or os.listdir(bundle)):
        raise BundleError(f"{bundle}: bundle path exists and is not empty",
                          hint="unpack into a new directory")
    created = not os.path.exists(bundle)
    rootfs = os.path.join(bundle, ROOTFS)
    try:
        os.makedirs(bundle, mode=0o700, exist_ok=True)
        os.mkdir(rootfs, 0o755)
        apply_layers(layout, image, rootfs, rootless=rootless)
        config = to_runtime_config(image.config, rootfs, rootless=rootless,
                                   manifest_descriptor=image.descriptor)
        atomic_write(os.path.join(bundle, "config.json"),
                     json.dumps(config, indent="\t").encode(), 0o644, durable=False)
        Snapshot.take(rootfs).save(os.path.join(bundle, SNAPSHOT))
        BundleMeta(image.descriptor, rootless).save(bundle)
    except BaseException:
        # Leave no half-unpacked bundle behind; an empty directory we were given stays.
        if created:
            shutil.rmtree(bundle, ignore_errors=True)
        else:
            _empty_dir(bundle)
        raise
    return image


def repack(layout: Layout, tag: str, bundle: str, *, compression: str = "gzip",
           history: dict[str, Any] | None = None, refresh: bool = True) -> Descriptor:
    """Store the changes made in ``bundle``'s rootfs as one new layer on the image it came
    from, with a history entry, and tag the result ``tag``.

    With ``refresh`` the bundle then counts as unpacked from the new image, so a
    later repack stores only what changes after this one.
    """
    from .layer import generate_diff
    from .mutate import add_layer, history_entry, write_layer
    from .snapshot import Snapshot

    meta = BundleMeta.load(bundle)
    rootfs = os.path.join(bundle, ROOTFS)
    if not os.path.isdir(rootfs):
        raise BundleError(f"{bundle}: no rootfs directory")
    snapshot = Snapshot.load(os.path.join(bundle, SNAPSHOT))
    with layout.writing():
        image = layout.image_at(meta.manifest)
        layer_desc, diff_id, stats = write_layer(
            layout, lambda out: generate_diff(rootfs, snapshot, out), compression)
        entry = history if history is not None else history_entry(
            f"ocibox layout repack {os.path.basename(os.path.abspath(bundle))}",
            comment=f"ocibox {__version__}")
        desc = add_layer(layout, image, tag, layer_desc, diff_id, entry)
    if refresh:
        # What was archived, as it was walked: a change made since then has a
        # newer ctime and goes into the next repack.
        stats.snapshot.save(os.path.join(bundle, SNAPSHOT))
        BundleMeta(desc, meta.rootless).save(bundle)
    return desc


def _empty_dir(path: str) -> None:
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            os.unlink(entry.path)

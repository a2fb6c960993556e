"""Which manifest a copy or an inspect works on: its type checked, an index's child picked."""

from __future__ import annotations

from .. import mediatypes as mt
from ..errors import ReferenceNotFound, UnsupportedMediaType
from ..image import docker as _docker
from ..image.models import Descriptor, Platform


def check_manifest_type(media_type: str, data: bytes, where: str) -> None:
    _docker.check_not_schema1(data, media_type, f"{where}: manifest")
    if media_type not in mt.MANIFESTS | mt.INDEXES:
        raise UnsupportedMediaType(f"{where}: unsupported manifest media type {media_type!r}",
                                   hint="ocibox copies OCI and Docker schema2 images and indexes")


def pick(candidates: list[Descriptor], want: Platform, name: str) -> Descriptor:
    for d in candidates:
        if d.platform is not None and want.matches(d.platform) and d.media_type in mt.MANIFESTS:
            return d
    have = ", ".join(str(d.platform) for d in candidates if d.platform) or "none"
    raise ReferenceNotFound(f"{name}: no image for platform {want} (has: {have})",
                            hint="choose one with --platform OS/ARCH[/VARIANT], or copy all with --all")

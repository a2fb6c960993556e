"""What the registry needs to know about a pushed manifest.

The bytes are stored as they came; this module only reads them to find the
media type, the blobs and child manifests they name (which must exist in the
repository), and the subject (which need not).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import mediatypes as mt
from ..errors import OciboxError
from ..image.models import Descriptor, Index, Manifest, load_json
from .errors import ApiError

SUPPORTED = frozenset({mt.OCI_MANIFEST, mt.OCI_INDEX, mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST_LIST})
GENERIC_TYPES = frozenset({"", "application/json", "application/octet-stream"})


@dataclass(frozen=True)
class PushedManifest:
    media_type: str
    blobs: tuple[str, ...]  # config and layers: must be blobs of the repository
    children: tuple[str, ...]  # index entries: must be manifests of the repository
    subject: Descriptor | None
    artifact_type: str | None  # as the referrers API reports it
    annotations: dict[str, str] | None


def invalid(message: str, detail: Any = None) -> ApiError:
    return ApiError("MANIFEST_INVALID", message, detail=detail)


def media_type_of(content_type: str | None, doc: dict[str, Any]) -> str:
    """The manifest's media type from the request's Content-Type and its own mediaType."""
    header = (content_type or "").split(";", 1)[0].strip().lower()
    field = doc.get("mediaType")
    if field is not None and not isinstance(field, str):
        raise invalid("mediaType must be a string")
    if header in GENERIC_TYPES:
        header = ""
    if header and field and header != field:
        raise invalid(f"Content-Type {header} does not match the manifest's mediaType {field}")
    chosen = header or field
    if not chosen:
        # OCI allows omitting mediaType; the shape tells an index from a manifest.
        chosen = mt.OCI_INDEX if "manifests" in doc else mt.OCI_MANIFEST
    return chosen


def parse(data: bytes, content_type: str | None) -> PushedManifest:
    try:
        doc = load_json(data, "manifest")
    except OciboxError as e:
        raise invalid(e.message) from None
    media_type = media_type_of(content_type, doc)
    if media_type not in SUPPORTED:
        raise invalid(f"unsupported manifest media type {media_type}",
                      detail={"supported": sorted(SUPPORTED)})
    try:
        if media_type in mt.INDEXES:
            return _index(Index.from_bytes(data), media_type)
        return _manifest(Manifest.from_bytes(data), media_type)
    except OciboxError as e:
        raise invalid(e.message) from None


def _manifest(m: Manifest, media_type: str) -> PushedManifest:
    if m.schema_version != 2:
        raise invalid("schemaVersion must be 2")
    # Layers with urls (foreign / non-distributable) live elsewhere by design.
    blobs = [m.config.digest] + [layer.digest for layer in m.layers if not layer.urls]
    return PushedManifest(
        media_type=media_type,
        blobs=tuple(dict.fromkeys(blobs)),
        children=(),
        subject=m.subject,
        artifact_type=m.artifact_type or m.config.media_type,
        annotations=m.annotations,
    )


def _index(ix: Index, media_type: str) -> PushedManifest:
    if ix.schema_version != 2:
        raise invalid("schemaVersion must be 2")
    return PushedManifest(
        media_type=media_type,
        blobs=(),
        children=tuple(dict.fromkeys(d.digest for d in ix.manifests)),
        subject=ix.subject,
        artifact_type=ix.artifact_type,
        annotations=ix.annotations,
    )


def referrer_descriptor(pushed: PushedManifest, digest: str, size: int) -> dict[str, Any]:
    d: dict[str, Any] = {"mediaType": pushed.media_type, "digest": digest, "size": size}
    if pushed.artifact_type:
        d["artifactType"] = pushed.artifact_type
    if pushed.annotations:
        d["annotations"] = dict(pushed.annotations)
    return d

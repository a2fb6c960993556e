"""Referrers: manifests whose ``subject`` names another manifest (signatures, SBOMs).

A registry lists them through the referrers API or, lacking it, in an index
tagged ``<alg>-<hex>`` of the subject's digest (the tag schema). An OCI layout
keeps them as entries of index.json whose manifest has the subject.
"""

from __future__ import annotations

import json

from .. import digest as _digest
from .. import mediatypes as mt
from ..image.models import Descriptor

MAX_DEPTH = 4  # referrers of referrers of ... (a signature of an SBOM of an image)


def fallback_tag(dig: str) -> str:
    alg, hexpart = _digest.parse(dig)
    return f"{alg}-{hexpart}"[:128]


def _doc(data: bytes) -> dict:
    try:
        d = json.loads(data)
    except ValueError:
        return {}
    return d if isinstance(d, dict) else {}


def subject_of(data: bytes) -> str | None:
    """The digest a manifest's ``subject`` names, if any."""
    subject = _doc(data).get("subject")
    dig = subject.get("digest") if isinstance(subject, dict) else None
    return dig if isinstance(dig, str) and _digest.is_valid(dig) else None


def descriptor_of(data: bytes, media_type: str) -> Descriptor:
    """The descriptor a referrers list gives a manifest: artifactType (else the config's
    media type) and the manifest's annotations."""
    d = _doc(data)
    artifact_type = d.get("artifactType")
    if not isinstance(artifact_type, str):
        config = d.get("config")
        artifact_type = config.get("mediaType") if isinstance(config, dict) else None
    annotations = d.get("annotations")
    annotations = {k: v for k, v in annotations.items() if isinstance(v, str)} \
        if isinstance(annotations, dict) else None
    return Descriptor.of(media_type, data, artifact_type=artifact_type if isinstance(artifact_type, str) else None,
                         annotations=annotations or None)


def merged_index(existing: bytes | None, desc: Descriptor) -> bytes | None:
    """The tag-schema index with ``desc`` added, or None when it is already listed."""
    d = _doc(existing) if existing else {}
    manifests = d.get("manifests") if isinstance(d.get("manifests"), list) else []
    if any(isinstance(m, dict) and m.get("digest") == desc.digest for m in manifests):
        return None
    out = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [*manifests, desc.to_dict()]}
    return json.dumps(out, separators=(",", ":")).encode()

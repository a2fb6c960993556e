"""The image specification's objects as dataclasses.

Objects that a digest names (manifests, indexes, configs) keep the exact bytes
they were parsed from in ``raw``: those bytes are what gets stored and served,
never a re-serialisation. ``to_json()`` is only for objects that ocibox creates.

Parsing checks structure (types of fields, required fields); the full rules of
the specification are in ``ocibox.image.validate``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from .. import digest as _digest
from .. import mediatypes as mt
from ..errors import InvalidObject, MalformedJSON

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CREATED = "org.opencontainers.image.created"


def load_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise MalformedJSON(f"{what}: malformed JSON: {e}") from None
    if not isinstance(obj, dict):
        raise MalformedJSON(f"{what}: expected a JSON object, got {type(obj).__name__}")
    return obj


def dump_json(obj: dict[str, Any]) -> bytes:
    """Canonical-enough JSON for objects ocibox writes: compact, key order kept."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _get(d: dict, key: str, kind: type | tuple, what: str, *, required: bool = False):
    if key not in d or d[key] is None:
        if required:
            raise InvalidObject(what, key, "is required")
        return None
    value = d[key]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise InvalidObject(what, key, f"must be of type {names}")
    return value


def _str_map(d: dict, key: str, what: str) -> dict[str, str] | None:
    value = _get(d, key, dict, what)
    if value is None:
        return None
    for k, v in value.items():
        if not isinstance(v, str):
            raise InvalidObject(what, f"{key}.{k}", "must be a string")
    return value


@dataclass(frozen=True)
class Platform:
    architecture: str
    os: str
    os_version: str | None = None
    os_features: tuple[str, ...] | None = None
    variant: str | None = None
    features: tuple[str, ...] | None = None

    @classmethod
    def from_dict(cls, d: dict, what: str = "platform") -> Platform:
        if not isinstance(d, dict):
            raise InvalidObject(what, "", "must be an object")
        feats = _get(d, "os.features", list, what)
        return cls(
            architecture=_get(d, "architecture", str, what, required=True),
            os=_get(d, "os", str, what, required=True),
            os_version=_get(d, "os.version", str, what),
            os_features=tuple(feats) if feats is not None else None,
            variant=_get(d, "variant", str, what),
            features=tuple(d["features"]) if isinstance(d.get("features"), list) else None,
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            d["os.version"] = self.os_version
        if self.os_features:
            d["os.features"] = list(self.os_features)
        if self.variant:
            d["variant"] = self.variant
        if self.features:
            d["features"] = list(self.features)
        return d

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``os/arch[/variant]``, as in ``linux/arm64/v8``."""
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise InvalidObject("platform", "", f"{text!r} is not os/arch[/variant]")
        return cls(os=parts[0], architecture=parts[1], variant=parts[2] if len(parts) == 3 else None)

    @classmethod
    def host(cls) -> Platform:
        import platform as _p

        machine = _p.machine().lower()
        arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
                "armv7l": "arm", "i686": "386", "i386": "386", "ppc64le": "ppc64le",
                "s390x": "s390x", "riscv64": "riscv64"}.get(machine, machine)
        variant = "v7" if machine == "armv7l" else None
        return cls(architecture=arch, os="linux", variant=variant)

    def matches(self, other: Platform) -> bool:
        """True when an image for ``other`` runs where ``self`` is wanted.

        os and architecture must be equal; a variant is compared only when both
        name one (arm64 with no variant means v8); os.version only when both do.
        """
        if self.os != other.os or self.architecture != other.architecture:
            return False
        mine = self.variant or ("v8" if self.architecture == "arm64" else None)
        theirs = other.variant or ("v8" if other.architecture == "arm64" else None)
        if mine and theirs and mine != theirs:
            return False
        if self.os_version and other.os_version and self.os_version != other.os_version:
            return False
        return True

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    urls: tuple[str, ...] | None = None
    annotations: dict[str, str] | None = None
    platform: Platform | None = None
    artifact_type: str | None = None
    data: str | None = None  # base64, as in the JSON

    @classmethod
    def from_dict(cls, d: dict, what: str = "descriptor") -> Descriptor:
        if not isinstance(d, dict):
            raise InvalidObject(what, "", "must be an object")
        dig = _get(d, "digest", str, what, required=True)
        if not _digest.is_valid(dig):
            raise InvalidObject(what, "digest", f"{dig!r} is not a valid digest")
        size = _get(d, "size", int, what, required=True)
        if size < 0:
            raise InvalidObject(what, "size", "must not be negative")
        urls = _get(d, "urls", list, what)
        plat = d.get("platform")
        return cls(
            media_type=_get(d, "mediaType", str, what, required=True),
            digest=dig,
            size=size,
            urls=tuple(urls) if urls is not None else None,
            annotations=_str_map(d, "annotations", what),
            platform=Platform.from_dict(plat, f"{what}.platform") if plat is not None else None,
            artifact_type=_get(d, "artifactType", str, what),
            data=_get(d, "data", str, what),
        )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.urls:
            d["urls"] = list(self.urls)
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        # The order of the image-spec's Go types, which most tools write: the
        # same descriptor then serialises to the same bytes everywhere.
        if self.data is not None:
            d["data"] = self.data
        if self.platform is not None:
            d["platform"] = self.platform.to_dict()
        if self.artifact_type:
            d["artifactType"] = self.artifact_type
        return d

    @property
    def ref_name(self) -> str | None:
        return (self.annotations or {}).get(ANNOTATION_REF_NAME)

    def with_annotations(self, annotations: dict[str, str] | None) -> Descriptor:
        return replace(self, annotations=annotations or None)

    @classmethod
    def of(cls, media_type: str, data: bytes, **kw: Any) -> Descriptor:
        return cls(media_type=media_type, digest=_digest.of_bytes(data), size=len(data), **kw)


def _descriptors(d: dict, key: str, what: str, *, required: bool) -> tuple[Descriptor, ...]:
    items = _get(d, key, list, what, required=required)
    if items is None:
        return ()
    return tuple(Descriptor.from_dict(x, f"{what}.{key}[{i}]") for i, x in enumerate(items))


def _document(obj: Manifest | Index, body: dict[str, Any]) -> dict[str, Any]:
    """The JSON of a manifest or index: the fields both have around each one's body."""
    d: dict[str, Any] = {"schemaVersion": obj.schema_version}
    if obj.media_type:
        d["mediaType"] = obj.media_type
    if obj.artifact_type:
        d["artifactType"] = obj.artifact_type
    d.update(body)
    if obj.subject is not None:
        d["subject"] = obj.subject.to_dict()
    if obj.annotations:
        d["annotations"] = dict(obj.annotations)
    return d


@dataclass(frozen=True)
class Manifest:
    """An image manifest (OCI, or Docker schema2 which has the same shape)."""

    config: Descriptor
    layers: tuple[Descriptor, ...]
    media_type: str | None = mt.OCI_MANIFEST
    schema_version: int = 2
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] | None = None
    raw: bytes | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "manifest") -> Manifest:
        d = load_json(data, what)
        sv = _get(d, "schemaVersion", int, what, required=True)
        subject = d.get("subject")
        return cls(
            schema_version=sv,
            media_type=_get(d, "mediaType", str, what),
            config=Descriptor.from_dict(_get(d, "config", dict, what, required=True), f"{what}.config"),
            layers=_descriptors(d, "layers", what, required=True),
            subject=Descriptor.from_dict(subject, f"{what}.subject") if subject is not None else None,
            artifact_type=_get(d, "artifactType", str, what),
            annotations=_str_map(d, "annotations", what),
            raw=data,
        )

    def to_dict(self) -> dict[str, Any]:
        return _document(self, {"config": self.config.to_dict(),
                                "layers": [layer.to_dict() for layer in self.layers]})

    def to_json(self) -> bytes:
        return self.raw if self.raw is not None else dump_json(self.to_dict())


@dataclass(frozen=True)
class Index:
    """An image index (OCI) or manifest list (Docker); also index.json of a layout."""

    manifests: tuple[Descriptor, ...]
    media_type: str | None = mt.OCI_INDEX
    schema_version: int = 2
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] | None = None
    raw: bytes | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "index") -> Index:
        d = load_json(data, what)
        subject = d.get("subject")
        return cls(
            schema_version=_get(d, "schemaVersion", int, what, required=True),
            media_type=_get(d, "mediaType", str, what),
            manifests=_descriptors(d, "manifests", what, required=True),
            subject=Descriptor.from_dict(subject, f"{what}.subject") if subject is not None else None,
            artifact_type=_get(d, "artifactType", str, what),
            annotations=_str_map(d, "annotations", what),
            raw=data,
        )

    def to_dict(self) -> dict[str, Any]:
        return _document(self, {"manifests": [m.to_dict() for m in self.manifests]})

    def to_json(self) -> bytes:
        return self.raw if self.raw is not None else dump_json(self.to_dict())


@dataclass
class ImageConfig:
    """An image configuration, kept as its JSON dict plus the raw bytes.

    The config carries many optional, loosely typed fields that other tools
    round-trip; keeping the dict avoids losing any of them. Accessors below
    give typed views of the fields ocibox uses.
    """

    data: dict[str, Any]
    raw: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "config") -> ImageConfig:
        d = load_json(data, what)
        for key in ("architecture", "os"):
            _get(d, key, str, what, required=True)
        _get(d, "config", dict, what)
        rootfs = _get(d, "rootfs", dict, what, required=True)
        if rootfs.get("type") != "layers":
            raise InvalidObject(what, "rootfs.type", 'must be "layers"')
        ids = _get(rootfs, "diff_ids", list, f"{what}.rootfs", required=True)
        for i, x in enumerate(ids):
            if not isinstance(x, str) or not _digest.is_valid(x):
                raise InvalidObject(what, f"rootfs.diff_ids[{i}]", "must be a valid digest")
        _get(d, "history", list, what)
        return cls(d, data)

    @classmethod
    def new(cls, platform: Platform | None = None, created: str | None = None) -> ImageConfig:
        plat = platform or Platform.host()
        d: dict[str, Any] = {}
        if created:
            d["created"] = created
        d.update(plat.to_dict())
        d["config"] = {}
        d["rootfs"] = {"type": "layers", "diff_ids": []}
        d["history"] = []
        return cls(d)

    @property
    def platform(self) -> Platform:
        return Platform.from_dict(self.data)

    @property
    def config(self) -> dict[str, Any]:
        if self.data.get("config") is None:
            self.data["config"] = {}
        return self.data["config"]

    @property
    def diff_ids(self) -> list[str]:
        return list(self.data["rootfs"]["diff_ids"])

    @property
    def history(self) -> list[dict[str, Any]]:
        return list(self.data.get("history") or [])

    def to_json(self) -> bytes:
        """The raw bytes when unchanged since parsing, else fresh JSON."""
        return self.raw if self.raw is not None else dump_json(self.data)

    def changed(self) -> ImageConfig:
        """Mark as edited: the next ``to_json`` serialises ``data`` anew."""
        self.raw = None
        return self


def parse_any(data: bytes, media_type: str | None, what: str = "content") -> Manifest | Index:
    """Parse a manifest or index, by ``media_type`` or, if absent, by its own mediaType/shape."""
    if media_type is None:
        d = load_json(data, what)
        media_type = d.get("mediaType")
        if media_type is None:
            media_type = mt.OCI_INDEX if "manifests" in d else mt.OCI_MANIFEST
    if media_type in mt.INDEXES:
        return Index.from_bytes(data, what)
    if media_type in mt.MANIFESTS:
        return Manifest.from_bytes(data, what)
    from ..errors import UnsupportedMediaType

    raise UnsupportedMediaType(f"{what}: unsupported media type {media_type!r}")

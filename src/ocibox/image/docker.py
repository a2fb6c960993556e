"""Docker's image formats: schema2 manifests, manifest lists and image configs.

Docker schema2 and OCI share one shape, so conversion maps media types and drops
what the other side cannot say. Conversions write new JSON, so the converted
object has a new digest; a caller converting a whole image converts children
first and passes their new descriptors in (``config=``, ``children=``).

Layer bytes never change: gzip layers are gzip in both worlds. Whatever has no
Docker equivalent (zstd layers, artifacts, subjects, deprecated uncompressed or
zstd non-distributable layers) raises ``UnsupportedMediaType`` rather than
being dropped silently. Docker schema1 is recognised only to be refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .. import mediatypes as mt
from ..errors import InvalidObject, UnsupportedMediaType
from .models import Descriptor, ImageConfig, dump_json, load_json

SCHEMA1_TYPES = frozenset({mt.DOCKER_MANIFEST_V1, mt.DOCKER_MANIFEST_V1_SIGNED})
SCHEMA1_MESSAGE = "schema1 manifests are deprecated and not supported; re-push the image with a current client"

_DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"

# OCI -> Docker for layers: the table in mediatypes plus the reverse of Docker's
# uncompressed tar type, which Docker reads as it reads any tar layer.
_OCI_TO_DOCKER = {**{v: k for k, v in mt.DOCKER_TO_OCI.items()}, **mt.OCI_TO_DOCKER}

# Fields of an image config that the OCI specification defines, in the order written.
CONFIG_FIELDS = ("created", "author", "architecture", "os", "os.version", "os.features",
                 "variant", "config", "rootfs", "history")
CONTAINER_CONFIG_FIELDS = ("User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes",
                           "WorkingDir", "Labels", "StopSignal", "ArgsEscaped")
HISTORY_FIELDS = ("created", "author", "created_by", "comment", "empty_layer")


def is_docker(media_type: str | None) -> bool:
    """True for Docker's own media types (schema1, schema2, lists, configs, layers)."""
    return bool(media_type) and media_type.startswith("application/vnd.docker.")


# --- schema1 ----------------------------------------------------------------


def is_schema1(media_type: str | None, data: bytes | None = None) -> bool:
    """True when ``media_type`` names schema1, or ``data`` is a schemaVersion 1 manifest."""
    if media_type in SCHEMA1_TYPES:
        return True
    if data is None:
        return False
    try:
        d = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(d, dict) and d.get("schemaVersion") == 1


def check_not_schema1(data: bytes | None, media_type: str | None = None, what: str = "manifest") -> None:
    """Raise ``UnsupportedMediaType`` with a clear message for a Docker schema1 manifest."""
    if not is_schema1(media_type, data):
        return
    name = ""
    try:
        d = json.loads(data) if data is not None else {}
        if isinstance(d, dict) and isinstance(d.get("name"), str):
            name = f" ({d['name']}:{d['tag']})" if isinstance(d.get("tag"), str) else f" ({d['name']})"
    except (ValueError, UnicodeDecodeError):
        pass
    raise UnsupportedMediaType(
        f"{what}{name}: {SCHEMA1_MESSAGE}",
        hint="schema1 was removed from Docker and registries; pull and push it again with docker, podman or skopeo",
    )


# --- descriptors -------------------------------------------------------------


def _descriptor(d: Any, what: str) -> dict[str, Any]:
    """A descriptor dict checked by the models, in canonical key order."""
    return Descriptor.from_dict(d, what).to_dict()


def _map_layer(desc: dict[str, Any], table: Mapping[str, str], keep: frozenset[str],
               what: str, target: str) -> dict[str, Any]:
    media_type = desc["mediaType"]
    if media_type in table:
        return {**desc, "mediaType": table[media_type]}
    if media_type in keep:
        return desc
    raise UnsupportedMediaType(
        f"{what}: layer media type {media_type!r} has no {target} equivalent",
        hint="convert or recompress the layer first (Docker images carry gzip or plain tar layers)",
    )


_DOCKER_KEY_ORDER = ("mediaType", "size", "digest", "urls", "annotations", "platform")


def _to_docker_descriptor(desc: dict[str, Any]) -> dict[str, Any]:
    # Docker's descriptors know urls, annotations and platform; artifactType and
    # embedded data have no place there (data is only a copy of the content).
    # Keys go in the order Docker's tools write them (size before digest), so a
    # conversion gives the same bytes, and digest, as skopeo's and podman's.
    return {k: desc[k] for k in _DOCKER_KEY_ORDER if k in desc}


# --- manifests ---------------------------------------------------------------


def _load_manifest(data: bytes, what: str) -> dict[str, Any]:
    check_not_schema1(data, None, what)
    d = load_json(data, what)
    if d.get("schemaVersion") != 2:
        raise InvalidObject(what, "schemaVersion", "must be 2")
    if not isinstance(d.get("config"), dict):
        raise InvalidObject(what, "config", "is required")
    if not isinstance(d.get("layers"), list):
        raise InvalidObject(what, "layers", "is required")
    return d


def manifest_to_oci(data: bytes, *, config: Descriptor | None = None) -> bytes:
    """A Docker schema2 manifest as an OCI image manifest.

    An OCI manifest is returned unchanged (its bytes are the truth). ``config``
    replaces the config descriptor, for a caller that also converted the config;
    without it the config blob is kept and only its media type is mapped, which
    is what OCI expects: a Docker config is an OCI config with extra fields.
    """
    what = "Docker manifest"
    d = _load_manifest(data, what)
    media_type = d.get("mediaType")
    if media_type in (None, mt.OCI_MANIFEST):
        return data
    if media_type != mt.DOCKER_MANIFEST:
        raise UnsupportedMediaType(f"{what}: mediaType {media_type!r} is not a Docker schema2 manifest")
    cfg = config.to_dict() if config is not None else _descriptor(d["config"], f"{what}: config")
    cfg_type = cfg["mediaType"]
    # Other config types (plugins, tools' own) are legal OCI artifact configs: keep them.
    cfg["mediaType"] = mt.DOCKER_TO_OCI.get(cfg_type, cfg_type)
    oci_layers = frozenset(mt.OCI_LAYER_FOR_COMPRESSION.values())
    layers = [
        _map_layer(_descriptor(x, f"{what}: layers[{i}]"), mt.DOCKER_TO_OCI, oci_layers,
                   f"{what}: layers[{i}]", "OCI")
        for i, x in enumerate(d["layers"])
    ]
    out: dict[str, Any] = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                           "config": cfg, "layers": layers}
    if isinstance(d.get("annotations"), dict) and d["annotations"]:
        out["annotations"] = d["annotations"]
    return dump_json(out)


def manifest_from_oci(data: bytes, *, config: Descriptor | None = None) -> bytes:
    """An OCI image manifest as a Docker schema2 manifest.

    Artifacts (an ``artifactType``, or a config that is not an image config),
    manifests with a ``subject``, and layers Docker cannot name (zstd,
    deprecated non-distributable tar or zstd) raise ``UnsupportedMediaType``.
    A Docker manifest is returned unchanged.
    """
    what = "OCI manifest"
    d = _load_manifest(data, what)
    media_type = d.get("mediaType")
    if media_type == mt.DOCKER_MANIFEST:
        return data
    if media_type not in (None, mt.OCI_MANIFEST):
        raise UnsupportedMediaType(f"{what}: mediaType {media_type!r} is not an OCI image manifest")
    if d.get("artifactType"):
        raise UnsupportedMediaType(
            f"{what}: an artifact ({d['artifactType']}) has no Docker schema2 equivalent",
            hint="copy it in OCI format",
        )
    if d.get("subject") is not None:
        raise UnsupportedMediaType(
            f"{what}: the subject field (a referrer) has no Docker schema2 equivalent",
            hint="copy it in OCI format",
        )
    cfg = config.to_dict() if config is not None else _descriptor(d["config"], f"{what}: config")
    if cfg["mediaType"] not in (mt.OCI_CONFIG, mt.DOCKER_CONFIG):
        raise UnsupportedMediaType(
            f"{what}: config media type {cfg['mediaType']!r} is not an image config; "
            "artifacts have no Docker schema2 equivalent",
            hint="copy it in OCI format",
        )
    cfg = _to_docker_descriptor({**cfg, "mediaType": mt.DOCKER_CONFIG})
    docker_layers = frozenset({mt.DOCKER_LAYER_GZIP, mt.DOCKER_LAYER_FOREIGN_GZIP, _DOCKER_LAYER_TAR})
    layers = [
        _to_docker_descriptor(
            _map_layer(_descriptor(x, f"{what}: layers[{i}]"), _OCI_TO_DOCKER, docker_layers,
                       f"{what}: layers[{i}]", "Docker schema2")
        )
        for i, x in enumerate(d["layers"])
    ]
    # Docker schema2 has no manifest-level annotations; they are dropped.
    return dump_json({"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST,
                      "config": cfg, "layers": layers})


# --- indexes -----------------------------------------------------------------


def _load_index(data: bytes, what: str) -> dict[str, Any]:
    d = load_json(data, what)
    if d.get("schemaVersion") != 2:
        raise InvalidObject(what, "schemaVersion", "must be 2")
    if not isinstance(d.get("manifests"), list):
        raise InvalidObject(what, "manifests", "is required")
    return d


def _children(d: dict[str, Any], what: str, children: Mapping[str, Descriptor] | None,
              convert) -> list[dict[str, Any]]:
    out = []
    for i, x in enumerate(d["manifests"]):
        desc = _descriptor(x, f"{what}: manifests[{i}]")
        new = (children or {}).get(desc["digest"])
        if new is not None:
            # the converted child, keeping what the list said about it
            merged = new.to_dict()
            for key in ("urls", "annotations", "platform"):
                if key in desc and key not in merged:
                    merged[key] = desc[key]
            desc = _descriptor(merged, f"{what}: manifests[{i}]")
        out.append(convert(desc, f"{what}: manifests[{i}]"))
    return out


def index_to_oci(data: bytes, *, children: Mapping[str, Descriptor] | None = None) -> bytes:
    """A Docker manifest list as an OCI image index.

    ``children`` maps the digest of each child that the caller converted to its
    new descriptor; those entries take the new digest, size and media type.
    Entries not in ``children`` still name the unconverted Docker bytes, so they
    keep their Docker media type: a descriptor must describe the bytes it names.
    An OCI index is returned unchanged.
    """
    what = "Docker manifest list"
    d = _load_index(data, what)
    media_type = d.get("mediaType")
    if media_type in (None, mt.OCI_INDEX):
        return data
    if media_type != mt.DOCKER_MANIFEST_LIST:
        raise UnsupportedMediaType(f"{what}: mediaType {media_type!r} is not a Docker manifest list")
    for i, x in enumerate(d["manifests"]):
        if isinstance(x, dict):
            check_not_schema1(None, x.get("mediaType"), f"{what}: manifests[{i}]")
    manifests = _children(d, what, children, lambda desc, _w: desc)
    out: dict[str, Any] = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": manifests}
    if isinstance(d.get("annotations"), dict) and d["annotations"]:
        out["annotations"] = d["annotations"]
    return dump_json(out)


def index_from_oci(data: bytes, *, children: Mapping[str, Descriptor] | None = None) -> bytes:
    """An OCI image index as a Docker manifest list.

    Every entry must end up as a Docker manifest or list: either it already is
    one, or ``children`` gives its converted descriptor. An OCI child left
    unconverted, an artifact or a subject raises ``UnsupportedMediaType``.
    A Docker manifest list is returned unchanged.
    """
    what = "OCI index"
    d = _load_index(data, what)
    media_type = d.get("mediaType")
    if media_type == mt.DOCKER_MANIFEST_LIST:
        return data
    if media_type not in (None, mt.OCI_INDEX):
        raise UnsupportedMediaType(f"{what}: mediaType {media_type!r} is not an OCI image index")
    for key in ("artifactType", "subject"):
        if d.get(key) is not None:
            raise UnsupportedMediaType(f"{what}: the {key} field has no Docker manifest list equivalent",
                                       hint="copy it in OCI format")

    def convert(desc: dict[str, Any], where: str) -> dict[str, Any]:
        if desc["mediaType"] not in (mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST_LIST):
            raise UnsupportedMediaType(
                f"{where}: {desc['mediaType']!r} ({desc['digest']}) is not a Docker manifest; "
                "convert it first and pass its new descriptor in children",
            )
        return _to_docker_descriptor(desc)

    # Docker manifest lists have no index-level annotations; they are dropped.
    return dump_json({"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST_LIST,
                      "manifests": _children(d, what, children, convert)})


# --- configs -----------------------------------------------------------------


def _oci_config(data: bytes, what: str) -> dict[str, Any]:
    """Keep only the fields the OCI specification defines, in a fixed order."""
    d = ImageConfig.from_bytes(data, what).data
    out: dict[str, Any] = {}
    for key in CONFIG_FIELDS:
        value = d.get(key)
        if value is None:
            continue
        if key == "config":
            if not isinstance(value, dict):
                raise InvalidObject(what, "config", "must be an object")
            value = {k: value[k] for k in CONTAINER_CONFIG_FIELDS if value.get(k) is not None}
        elif key == "rootfs":
            value = {"type": value["type"], "diff_ids": list(value["diff_ids"])}
        elif key == "history":
            value = [
                {k: h[k] for k in HISTORY_FIELDS if h.get(k) is not None} if isinstance(h, dict) else h
                for h in value
            ]
        out[key] = value
    return out


def config_to_oci(data: bytes) -> bytes:
    """A Docker image config as an OCI image config.

    Docker's extra fields (container, container_config, docker_version,
    config.Hostname, config.Healthcheck, ...) are dropped; the OCI fields are
    kept with their values, in the order the specification lists them.
    """
    return dump_json(_oci_config(data, "Docker config"))


def config_from_oci(data: bytes) -> bytes:
    """An OCI image config as a Docker image config.

    Docker reads every OCI config field as it is, so this only normalises: the
    same fields, in the same order, nulls removed.
    """
    return dump_json(_oci_config(data, "OCI config"))

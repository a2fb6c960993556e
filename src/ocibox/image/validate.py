"""Validation of image objects against the OCI image specification v1.1.

A rule the specification states with MUST raises ``InvalidObject`` naming the
object, the field path and the rule, e.g. ``manifest: layers[2].mediaType: ...``.
A SHOULD that the content does not follow is not an error: it is appended to the
optional ``warnings`` list, when the caller passes one.

Docker schema2 manifests, manifest lists and configs share the OCI shape and
are validated by the same rules (with their own media types); schema1 is
refused with ``UnsupportedMediaType``.

Each validator parses the bytes itself and returns the model object, so a
caller can validate and parse in one step.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from datetime import datetime
from typing import Any

from .. import digest as _digest
from .. import mediatypes as mt
from ..errors import InvalidObject, LayoutError, MalformedJSON
from .docker import check_not_schema1
from .models import ANNOTATION_CREATED, ANNOTATION_REF_NAME, ImageConfig, Index, Manifest

__all__ = [
    "is_media_type",
    "is_rfc3339",
    "validate_blob",
    "validate_config",
    "validate_descriptor",
    "validate_index",
    "validate_layout_dir",
    "validate_manifest",
]

Warnings = list[str] | None

# RFC 6838 section 4.2: type "/" subtype, each a restricted-name of 1 to 127
# characters starting with a letter or digit. No parameters in descriptors.
_RESTRICTED_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_MEDIA_TYPE = re.compile(rf"{_RESTRICTED_NAME}/{_RESTRICTED_NAME}")

# descriptor.md: the digest grammar and the encodings of the registered algorithms
_ALGORITHM = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*")
_ENCODED = re.compile(r"[a-zA-Z0-9=_-]+")
_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_REGISTERED = {alg: re.compile(f"[a-f0-9]{{{n}}}") for alg, n in _HEX_LENGTH.items()}

# RFC 3339 section 5.6 date-time; ranges are checked by datetime below.
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?(?:[Zz]|[+-]([0-9]{2}):([0-9]{2}))"
)

# RFC 3986 at the level of characters: a scheme, then only unreserved,
# reserved and well-formed percent-encoded characters.
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:(?:[A-Za-z0-9._~!$&'()*+,;=:@/?#\[\]-]|%[0-9A-Fa-f]{2})*")

# annotations.md: the grammar of org.opencontainers.image.ref.name
_REF_NAME = re.compile(r"[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*(?:/[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*)*")

# config.md: ExposedPorts keys are "port/tcp", "port/udp" or "port" (tcp);
# sctp is accepted as Docker writes it.
_PORT = re.compile(r"([0-9]{1,5})(?:/(tcp|udp|sctp))?")

_INT64_MAX = 2**63 - 1
# The layout module writes blobs through temporary files with this prefix
# (ocibox.image.cas); they are in-flight writes, not misnamed blobs.
_TMP_PREFIX = ".tmp-"

# Media types the specifications define for things that are not layers: finding
# one of these among an image's layers is an error, not an unknown extension.
_NOT_LAYERS = frozenset({
    mt.OCI_DESCRIPTOR, mt.OCI_LAYOUT_HEADER, mt.OCI_INDEX, mt.OCI_MANIFEST, mt.OCI_CONFIG,
    mt.OCI_EMPTY, mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST_LIST, mt.DOCKER_CONFIG,
    mt.DOCKER_MANIFEST_V1, mt.DOCKER_MANIFEST_V1_SIGNED,
})
_NONDISTRIBUTABLE = frozenset({mt.OCI_LAYER_NONDIST, mt.OCI_LAYER_NONDIST_GZIP, mt.OCI_LAYER_NONDIST_ZSTD})


def is_media_type(value: Any) -> bool:
    """True when ``value`` is a media type as RFC 6838 section 4.2 names them."""
    return isinstance(value, str) and _MEDIA_TYPE.fullmatch(value) is not None


def is_rfc3339(value: Any) -> bool:
    """True when ``value`` is an RFC 3339 section 5.6 date-time."""
    m = _RFC3339.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        return False
    y, mo, d, h, mi, s, _frac, oh, om = m.groups()
    try:
        # a leap second (60) is valid RFC 3339; datetime cannot hold it
        datetime(int(y), int(mo), int(d), int(h), int(mi), min(int(s), 59))
    except ValueError:
        return False
    return int(s) <= 60 and (oh is None or (int(oh) <= 23 and int(om) <= 59))


# --- plumbing ----------------------------------------------------------------


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _load(data: bytes, what: str) -> dict[str, Any]:
    """Parse a JSON object, refusing duplicate keys.

    annotations.md requires unique keys in annotations; elsewhere JSON only says
    SHOULD, but a digest-named document that two parsers read differently (one
    keeps the first value, another the last) defeats content addressing, so a
    duplicate key anywhere is refused.
    """
    try:
        obj = json.loads(data, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as e:
        raise InvalidObject(what, "", f"duplicate key {e.key!r}: JSON objects must not repeat a key") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise MalformedJSON(f"{what}: malformed JSON: {e}") from None
    if not isinstance(obj, dict):
        raise MalformedJSON(f"{what}: expected a JSON object, got {type(obj).__name__}")
    return obj


class _Check:
    """Where we are (object and field path) and where warnings go."""

    def __init__(self, what: str, warnings: Warnings) -> None:
        self.what = what
        self.warnings = warnings

    def fail(self, field: str, rule: str) -> None:
        raise InvalidObject(self.what, field, rule)

    def warn(self, field: str, message: str) -> None:
        if self.warnings is not None:
            where = f"{self.what}: {field}" if field else self.what
            self.warnings.append(f"{where}: {message}")


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


_TYPE_NAMES = {str: "a string", int: "an integer", bool: "a boolean", list: "an array", dict: "an object"}


def _typed(c: _Check, obj: dict, key: str, kind: type, prefix: str, *,
           required: bool = False, null_ok: bool = False) -> Any:
    """obj[key] if of type ``kind``; None if absent (or null, when ``null_ok``)."""
    field = _join(prefix, key)
    if key not in obj or (null_ok and obj[key] is None):
        if required:
            c.fail(field, "is required")
        return None
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        c.fail(field, f"must be {_TYPE_NAMES[kind]}, not {_json_type(value)}")
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "an array", dict: "an object"}.get(type(value), type(value).__name__)


def _string_list(c: _Check, obj: dict, key: str, prefix: str, *, null_ok: bool = False) -> list[str] | None:
    items = _typed(c, obj, key, list, prefix, null_ok=null_ok)
    for i, item in enumerate(items or ()):
        if not isinstance(item, str):
            c.fail(f"{_join(prefix, key)}[{i}]", f"must be a string, not {_json_type(item)}")
    return items


def _media_type(c: _Check, obj: dict, key: str, prefix: str, *, required: bool = False) -> str | None:
    value = _typed(c, obj, key, str, prefix, required=required)
    if value is not None and not is_media_type(value):
        c.fail(_join(prefix, key), f"{value!r} is not a media type (RFC 6838: type/subtype)")
    return value


def _check_digest(c: _Check, value: Any, field: str) -> None:
    if not isinstance(value, str):
        c.fail(field, f"must be a string, not {_json_type(value)}")
    algorithm, sep, encoded = value.partition(":")
    if not sep or not _ALGORITHM.fullmatch(algorithm) or not _ENCODED.fullmatch(encoded):
        c.fail(field, f"{value!r} is not a digest (algorithm:encoded)")
    pattern = _REGISTERED.get(algorithm)
    if pattern is None:
        # The specification lets unregistered algorithms pass (a SHOULD addressed
        # to implementations); ocibox cannot verify content named by them, and the
        # models refuse them, so validation refuses them too, saying why.
        c.fail(field, f"{value!r} uses digest algorithm {algorithm!r}, which ocibox "
                      "cannot verify (registered algorithms: sha256, sha512)")
    if not pattern.fullmatch(encoded):
        c.fail(field, f"{value!r}: {algorithm} digests must be {_HEX_LENGTH[algorithm]} lower-case hex digits")


def _annotations(c: _Check, obj: dict, key: str, prefix: str) -> dict[str, str] | None:
    """annotations.md: a string-to-string map; absent or an object, never null."""
    field = _join(prefix, key)
    if key not in obj:
        return None
    value = obj[key]
    if not isinstance(value, dict):
        c.fail(field, f"must be an object of strings, not {_json_type(value)}")
    for k, v in value.items():
        if not isinstance(v, str):
            c.fail(f"{field}.{k}", f"must be a string, not {_json_type(v)}")
    created = value.get(ANNOTATION_CREATED)
    if created is not None and not is_rfc3339(created):
        c.warn(f"{field}.{ANNOTATION_CREATED}", f"{created!r} is not an RFC 3339 date-time")
    return value


# --- descriptors and platforms ----------------------------------------------


def _platform(c: _Check, p: Any, prefix: str) -> None:
    if not isinstance(p, dict):
        c.fail(prefix, f"must be an object, not {_json_type(p)}")
    for key in ("architecture", "os"):
        _typed(c, p, key, str, prefix, required=True)
    _typed(c, p, "os.version", str, prefix)
    _string_list(c, p, "os.features", prefix)
    _typed(c, p, "variant", str, prefix)
    _string_list(c, p, "features", prefix)


def _descriptor(c: _Check, d: Any, prefix: str) -> None:
    if not isinstance(d, dict):
        c.fail(prefix, f"must be a descriptor object, not {_json_type(d)}")
    _media_type(c, d, "mediaType", prefix, required=True)
    if "digest" not in d:
        c.fail(_join(prefix, "digest"), "is required")
    _check_digest(c, d["digest"], _join(prefix, "digest"))
    size = _typed(c, d, "size", int, prefix, required=True)
    if size < 0 or size > _INT64_MAX:
        c.fail(_join(prefix, "size"), f"{size} is not a size in bytes (0 to 2^63-1)")
    urls = _string_list(c, d, "urls", prefix)
    for i, url in enumerate(urls or ()):
        if not _URI.fullmatch(url):
            c.fail(f"{_join(prefix, 'urls')}[{i}]", f"{url!r} is not a URI (RFC 3986)")
        elif not url.lower().startswith(("http://", "https://")):
            c.warn(f"{_join(prefix, 'urls')}[{i}]", "should use the http or https scheme")
    _annotations(c, d, "annotations", prefix)
    _media_type(c, d, "artifactType", prefix)
    if "platform" in d:
        _platform(c, d["platform"], _join(prefix, "platform"))
    if "data" in d:
        _embedded(c, d, prefix, size)


def _embedded(c: _Check, d: dict, prefix: str, size: int) -> None:
    """descriptor.md: data is base64 (RFC 4648 section 4) of exactly the content."""
    field = _join(prefix, "data")
    value = _typed(c, d, "data", str, prefix)
    try:
        content = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        c.fail(field, "must be base64 (RFC 4648 section 4, with padding)")
    if len(content) != size:
        c.fail(field, f"decodes to {len(content)} bytes but size is {size}")
    algorithm = d["digest"].split(":", 1)[0]
    if _digest.of_bytes(content, algorithm) != d["digest"]:
        c.fail(field, f"decoded content does not match digest {d['digest']}")


def validate_descriptor(d: dict, what: str = "descriptor", *, field: str = "",
                        warnings: Warnings = None) -> None:
    """Check one descriptor; ``field`` is its path inside ``what`` (e.g. ``layers[2]``)."""
    _descriptor(_Check(what, warnings), d, field)


# --- manifests and indexes ---------------------------------------------------


def _document_media_type(c: _Check, d: dict, expected: frozenset[str], kind: str,
                         declared: str | None) -> str | None:
    """The document's own mediaType: one of ``expected``, and the one it was fetched as."""
    value = _media_type(c, d, "mediaType", "")
    if value is None:
        return None
    if value not in expected:
        if value in mt.INDEXES | mt.MANIFESTS:
            other = "an index" if value in mt.INDEXES else "a manifest"
            c.fail("mediaType", f"{value!r} claims {other}, but this is {kind}")
        c.fail("mediaType", f"{value!r} is not a media type for {kind} (expected one of "
                            f"{', '.join(sorted(expected))})")
    if declared is not None and declared != value:
        c.fail("mediaType", f"{value!r} differs from the media type it was referenced with, {declared!r}")
    return value


def _schema_version(c: _Check, d: dict) -> None:
    sv = _typed(c, d, "schemaVersion", int, "", required=True)
    if sv != 2:
        c.fail("schemaVersion", f"must be 2, not {sv}")


def _ambiguous(c: _Check, d: dict, keys: tuple[str, ...], kind: str) -> None:
    # A document carrying both manifest and index fields can be read as either
    # (the ambiguity behind CVE-2021-41190); refuse it.
    for key in keys:
        if key in d:
            c.fail(key, f"must not be present in {kind}: it would make the document ambiguous")


def validate_manifest(data: bytes, what: str = "manifest", *, media_type: str | None = None,
                      warnings: Warnings = None) -> Manifest:
    """Validate an image manifest (OCI, or Docker schema2) and return it parsed.

    ``media_type`` is the type the manifest was referenced or served with; when
    given, the document's own mediaType must agree with it.
    """
    check_not_schema1(data, media_type, what)
    c = _Check(what, warnings)
    d = _load(data, what)
    _schema_version(c, d)
    if media_type is not None and media_type not in mt.MANIFESTS:
        c.fail("", f"was referenced as {media_type!r}, which is not a manifest media type")
    declared = _document_media_type(c, d, mt.MANIFESTS, "a manifest", media_type)
    if declared is None:
        c.warn("mediaType", "should be set (image-spec: this property SHOULD be used)")
    _ambiguous(c, d, ("manifests",), "a manifest")
    artifact_type = _media_type(c, d, "artifactType", "")

    if "config" not in d:
        c.fail("config", "is required")
    _descriptor(c, d["config"], "config")
    config_type = d["config"]["mediaType"]
    if config_type == mt.OCI_EMPTY:
        if artifact_type is None:
            c.fail("artifactType", f"is required when config.mediaType is {mt.OCI_EMPTY}")
        if d["config"]["digest"].startswith("sha256:") and (
            d["config"]["digest"] != mt.EMPTY_JSON_DIGEST or d["config"]["size"] != 2
        ):
            c.warn("config", "an empty descriptor should describe the 2-byte content {}")

    layers = _typed(c, d, "layers", list, "", required=True)
    for i, layer in enumerate(layers):
        _descriptor(c, layer, f"layers[{i}]")
    if config_type in mt.CONFIGS:
        _image_layers(c, layers)

    if "subject" in d:
        _descriptor(c, d["subject"], "subject")
    _annotations(c, d, "annotations", "")
    return Manifest.from_bytes(data, what)


def _image_layers(c: _Check, layers: list[dict]) -> None:
    """Rules for a manifest whose config is an image config.

    The specification says an implementation that meets an unknown layer media
    type MUST ignore it (and MUST NOT error when storing or copying), so unknown
    types only warn: BuildKit's attestation manifests, for one, carry an image
    config and in-toto layers. A type the specifications define for something
    other than a layer (a manifest, a config, the empty blob) is an error.
    """
    if not layers:
        c.warn("layers", "an image should have at least one layer")
    for i, layer in enumerate(layers):
        media_type = layer["mediaType"]
        if media_type in _NOT_LAYERS:
            c.fail(f"layers[{i}].mediaType", f"{media_type!r} is not a layer media type")
        elif media_type in _NONDISTRIBUTABLE:
            c.warn(f"layers[{i}].mediaType", "non-distributable layers are deprecated and should not be written")
        elif not mt.is_layer(media_type):
            c.warn(f"layers[{i}].mediaType", f"{media_type!r} is not a layer type ocibox knows; it is ignored")


def validate_index(data: bytes, what: str = "index", *, media_type: str | None = None,
                   warnings: Warnings = None) -> Index:
    """Validate an image index (OCI, or a Docker manifest list) and return it parsed."""
    c = _Check(what, warnings)
    d = _load(data, what)
    _schema_version(c, d)
    if media_type is not None and media_type not in mt.INDEXES:
        c.fail("", f"was referenced as {media_type!r}, which is not an index media type")
    declared = _document_media_type(c, d, mt.INDEXES, "an index", media_type)
    if declared is None:
        c.warn("mediaType", "should be set (image-spec: this property SHOULD be used)")
    _ambiguous(c, d, ("config", "layers"), "an index")
    _media_type(c, d, "artifactType", "")
    manifests = _typed(c, d, "manifests", list, "", required=True)
    for i, m in enumerate(manifests):
        _descriptor(c, m, f"manifests[{i}]")
    if "subject" in d:
        _descriptor(c, d["subject"], "subject")
    _annotations(c, d, "annotations", "")
    return Index.from_bytes(data, what)


# --- image configs -----------------------------------------------------------


def validate_config(data: bytes, what: str = "config", *, warnings: Warnings = None) -> ImageConfig:
    """Validate an image configuration (OCI or Docker) and return it parsed.

    Docker writes Go's nil slices and maps as null; null is taken as absent
    for every optional field of a config.
    """
    c = _Check(what, warnings)
    d = _load(data, what)
    created = _typed(c, d, "created", str, "", null_ok=True)
    if created is not None and not is_rfc3339(created):
        c.fail("created", f"{created!r} is not an RFC 3339 date-time")
    _typed(c, d, "author", str, "", null_ok=True)
    for key in ("architecture", "os"):
        if not _typed(c, d, key, str, "", required=True, null_ok=True):
            c.fail(key, "must not be empty")
    _typed(c, d, "os.version", str, "", null_ok=True)
    _string_list(c, d, "os.features", "", null_ok=True)
    _typed(c, d, "variant", str, "", null_ok=True)
    conf = _typed(c, d, "config", dict, "", null_ok=True)
    if conf is not None:
        _container_config(c, conf)
    diff_ids = _rootfs(c, d)
    history = _typed(c, d, "history", list, "", null_ok=True)
    if history is not None:
        _history(c, history, diff_ids)
    return ImageConfig.from_bytes(data, what)


def _container_config(c: _Check, conf: dict) -> None:
    p = "config"
    for key in ("User", "WorkingDir", "StopSignal"):
        _typed(c, conf, key, str, p, null_ok=True)
    _typed(c, conf, "ArgsEscaped", bool, p, null_ok=True)
    for key in ("Entrypoint", "Cmd"):
        _string_list(c, conf, key, p, null_ok=True)
    for i, entry in enumerate(_string_list(c, conf, "Env", p, null_ok=True) or ()):
        name, sep, _ = entry.partition("=")
        if not sep or not name:
            c.fail(f"config.Env[{i}]", f"{entry!r} is not in the form NAME=VALUE")
    ports = _typed(c, conf, "ExposedPorts", dict, p, null_ok=True)
    for key, value in (ports or {}).items():
        m = _PORT.fullmatch(key)
        if m is None or int(m.group(1)) > 65535:
            c.fail(f"config.ExposedPorts.{key}", "keys must be port, port/tcp or port/udp")
        if not isinstance(value, dict):
            c.fail(f"config.ExposedPorts.{key}", f"must be an object ({{}}), not {_json_type(value)}")
    volumes = _typed(c, conf, "Volumes", dict, p, null_ok=True)
    for key, value in (volumes or {}).items():
        if not isinstance(value, dict):
            c.fail(f"config.Volumes.{key}", f"must be an object ({{}}), not {_json_type(value)}")
    if conf.get("Labels") is not None:
        _annotations(c, conf, "Labels", p)


def _rootfs(c: _Check, d: dict) -> list[str]:
    rootfs = _typed(c, d, "rootfs", dict, "", required=True, null_ok=True)
    if rootfs.get("type") != "layers":
        c.fail("rootfs.type", f'must be "layers", not {rootfs.get("type")!r}')
    diff_ids = _typed(c, rootfs, "diff_ids", list, "rootfs", required=True)
    for i, x in enumerate(diff_ids):
        _check_digest(c, x, f"rootfs.diff_ids[{i}]")
    return diff_ids


def _history(c: _Check, history: list, diff_ids: list[str]) -> None:
    for i, h in enumerate(history):
        p = f"history[{i}]"
        if not isinstance(h, dict):
            c.fail(p, f"must be an object, not {_json_type(h)}")
        created = _typed(c, h, "created", str, p, null_ok=True)
        if created is not None and not is_rfc3339(created):
            c.fail(f"{p}.created", f"{created!r} is not an RFC 3339 date-time")
        for key in ("author", "created_by", "comment"):
            _typed(c, h, key, str, p, null_ok=True)
        _typed(c, h, "empty_layer", bool, p, null_ok=True)
    # Each history entry without empty_layer stands for one layer, so their count
    # should equal the number of diff_ids. The specification does not say MUST,
    # history is informational (nothing is unpacked from it), and real tools
    # (appending layers without history, some buildpacks) write images that run
    # fine with a mismatch, so this only warns.
    non_empty = sum(1 for h in history if not h.get("empty_layer"))
    if history and non_empty != len(diff_ids):
        c.warn("history", f"{non_empty} entries are not empty_layer, but rootfs has {len(diff_ids)} diff_ids")


# --- layouts and blobs -------------------------------------------------------


def _layout_header(data: bytes, what: str) -> None:
    c = _Check(what, None)
    d = _load(data, what)
    version = _typed(c, d, "imageLayoutVersion", str, "", required=True)
    if version != "1.0.0":
        c.fail("imageLayoutVersion", f'must be "1.0.0", not {version!r}')


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise LayoutError(f"{path}: missing; an OCI image layout needs it") from None
    except OSError as e:
        raise LayoutError(f"{path}: cannot read: {e.strerror}") from None


def validate_layout_dir(path: str, *, warnings: Warnings = None) -> Index:
    """Check an OCI image layout's structure and return its index.json.

    Checks oci-layout, index.json and the naming of blobs/<alg>/<encoded>;
    it lists blob names but neither opens nor hashes blobs: the layout module
    does that while it walks, calling the object validators here.
    """
    if not os.path.isdir(path):
        raise LayoutError(f"{path}: not a directory, so not an OCI image layout")
    _layout_header(_read(os.path.join(path, "oci-layout")), os.path.join(path, "oci-layout"))
    index_path = os.path.join(path, "index.json")
    index = validate_index(_read(index_path), index_path, warnings=warnings)
    c = _Check(index_path, warnings)
    for i, m in enumerate(index.manifests):
        ref = m.ref_name
        if ref is not None and not _REF_NAME.fullmatch(ref):
            c.warn(f"manifests[{i}].annotations.{ANNOTATION_REF_NAME}",
                   f"{ref!r} does not follow the ref.name grammar")
    _blob_names(os.path.join(path, "blobs"), warnings)
    return index


def _blob_names(blobs: str, warnings: Warnings) -> None:
    if not os.path.isdir(blobs):
        raise LayoutError(f"{blobs}: missing; an OCI image layout needs a blobs directory (it may be empty)")
    c = _Check(blobs, warnings)
    with os.scandir(blobs) as entries:
        for alg in sorted(entries, key=lambda e: e.name):
            if not alg.is_dir(follow_symlinks=False):
                c.fail(alg.name, "must be a directory named after a digest algorithm")
            if not _ALGORITHM.fullmatch(alg.name):
                c.fail(alg.name, "is not a digest algorithm name")
            pattern = _REGISTERED.get(alg.name)
            if pattern is None:
                c.warn(alg.name, "is not a registered digest algorithm; its blobs cannot be verified")
            with os.scandir(alg.path) as names:
                for blob in names:
                    if blob.name.startswith(_TMP_PREFIX):
                        continue
                    field = f"{alg.name}/{blob.name}"
                    if not (pattern or _ENCODED).fullmatch(blob.name):
                        c.fail(field, f"is not a valid {alg.name} encoded digest")
                    if not blob.is_file(follow_symlinks=False):
                        c.fail(field, "must be a regular file")


def validate_blob(media_type: str, data: bytes, what: str = "blob", *,
                  warnings: Warnings = None) -> Manifest | Index | ImageConfig | None:
    """Validate a blob by its media type; returns the parsed object, if it is one.

    Layers and types ocibox does not know are opaque here (None): layer content
    is checked by the layer code while it streams.
    """
    if not is_media_type(media_type):
        raise InvalidObject(what, "mediaType", f"{media_type!r} is not a media type (RFC 6838: type/subtype)")
    check_not_schema1(None, media_type, what)
    if media_type in mt.MANIFESTS:
        return validate_manifest(data, what, media_type=media_type, warnings=warnings)
    if media_type in mt.INDEXES:
        return validate_index(data, what, media_type=media_type, warnings=warnings)
    if media_type in mt.CONFIGS:
        return validate_config(data, what, warnings=warnings)
    if media_type == mt.OCI_LAYOUT_HEADER:
        _layout_header(data, what)
    elif media_type == mt.OCI_EMPTY:
        if _load(data, what):
            raise InvalidObject(what, "", f"{mt.OCI_EMPTY} content must be the empty object {{}}")
        if data != mt.EMPTY_JSON:
            _Check(what, warnings).warn("", "empty content should be exactly the two bytes {}")
    return None

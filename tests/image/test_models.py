"""The image models: parsing each object, raw bytes kept, field names in errors, platforms."""

from __future__ import annotations

import json

import pytest

from ocibox import mediatypes as mt
from ocibox.errors import InvalidObject, MalformedJSON, UnsupportedMediaType
from ocibox.image.models import (
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    Platform,
    dump_json,
    load_json,
    parse_any,
)

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


def manifest_dict(**extra):
    d = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": D1, "size": 100},
        "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": D2, "size": 200}],
    }
    d.update(extra)
    return d


def test_manifest_keeps_raw_bytes():
    # spaced and re-ordered JSON: the raw bytes, not a re-serialisation, come back
    data = json.dumps(manifest_dict(annotations={"a": "b"}), indent=3, sort_keys=True).encode()
    m = Manifest.from_bytes(data)
    assert m.raw == data
    assert m.to_json() == data
    assert m.config.digest == D1
    assert m.layers[0].media_type == mt.OCI_LAYER_GZIP
    assert m.annotations == {"a": "b"}
    assert m.subject is None


def test_manifest_with_subject_and_artifact_type():
    d = manifest_dict(artifactType="application/vnd.example+type",
                      subject={"mediaType": mt.OCI_MANIFEST, "digest": D3, "size": 5})
    m = Manifest.from_bytes(dump_json(d))
    assert m.artifact_type == "application/vnd.example+type"
    assert m.subject.digest == D3


def test_new_manifest_serialises():
    m = Manifest(config=Descriptor(mt.OCI_CONFIG, D1, 1), layers=())
    assert json.loads(m.to_json()) == {
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": D1, "size": 1}, "layers": [],
    }


@pytest.mark.parametrize(
    "change, field",
    [
        ({"layers": [{"mediaType": mt.OCI_LAYER, "digest": "nope", "size": 1}]}, "manifest.layers[0]: digest"),
        ({"layers": [{"mediaType": mt.OCI_LAYER, "digest": D2, "size": -1}]}, "manifest.layers[0]: size"),
        ({"layers": [{"mediaType": mt.OCI_LAYER, "digest": D2, "size": True}]}, "manifest.layers[0]: size"),
        ({"layers": [{"digest": D2, "size": 1}]}, "manifest.layers[0]: mediaType"),
        ({"config": None}, "manifest: config"),
        ({"schemaVersion": "2"}, "manifest: schemaVersion"),
        ({"annotations": {"a": 1}}, "manifest: annotations.a"),
    ],
)
def test_manifest_errors_name_fields(change, field):
    with pytest.raises(InvalidObject) as e:
        Manifest.from_bytes(dump_json(manifest_dict(**change)))
    assert str(e.value).startswith(field)


def test_malformed_json():
    with pytest.raises(MalformedJSON, match="manifest: malformed JSON"):
        Manifest.from_bytes(b"{")
    with pytest.raises(MalformedJSON, match="expected a JSON object, got list"):
        load_json(b"[]", "manifest")


def test_index_parses_platforms():
    d = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [
            {"mediaType": mt.OCI_MANIFEST, "digest": D1, "size": 1,
             "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},
             "annotations": {"org.opencontainers.image.ref.name": "latest"}},
            {"mediaType": mt.OCI_MANIFEST, "digest": D2, "size": 2,
             "platform": {"architecture": "amd64", "os": "windows", "os.version": "10.0.17763.1",
                          "os.features": ["win32k"]}},
        ],
    }
    data = dump_json(d)
    idx = Index.from_bytes(data)
    assert idx.to_json() == data
    assert idx.manifests[0].platform == Platform("arm64", "linux", variant="v8")
    assert idx.manifests[0].ref_name == "latest"
    assert idx.manifests[1].platform.os_features == ("win32k",)
    assert str(idx.manifests[1].platform) == "windows/amd64"


def test_index_errors_name_fields():
    d = {"schemaVersion": 2, "manifests": [{"mediaType": mt.OCI_MANIFEST, "digest": D1, "size": 1,
                                             "platform": {"os": "linux"}}]}
    with pytest.raises(InvalidObject, match=r"^index.manifests\[0\].platform: architecture: is required"):
        Index.from_bytes(dump_json(d))
    with pytest.raises(InvalidObject, match="^index: manifests: is required"):
        Index.from_bytes(b'{"schemaVersion": 2}')


def config_dict(**extra):
    d = {
        "created": "2024-01-02T03:04:05Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [D1]},
        "history": [{"created_by": "ADD rootfs.tar /"}],
    }
    d.update(extra)
    return d


def test_config_parses_and_keeps_raw():
    data = json.dumps(config_dict(), indent=1).encode()
    c = ImageConfig.from_bytes(data)
    assert c.to_json() == data
    assert c.platform == Platform("amd64", "linux")
    assert c.diff_ids == [D1]
    assert c.config["Cmd"] == ["sh"]
    assert c.history[0]["created_by"] == "ADD rootfs.tar /"
    c.config["Cmd"] = ["true"]
    assert c.changed().to_json() != data
    assert json.loads(c.to_json())["config"]["Cmd"] == ["true"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"architecture": None}, "config: architecture: is required"),
        ({"os": 1}, "config: os: must be of type str"),
        ({"rootfs": {"type": "layer", "diff_ids": []}}, 'config: rootfs.type: must be "layers"'),
        ({"rootfs": {"type": "layers", "diff_ids": ["x"]}}, r"config: rootfs.diff_ids\[0\]: must be a valid digest"),
        ({"rootfs": {"type": "layers"}}, "config.rootfs: diff_ids: is required"),
    ],
)
def test_config_errors(change, message):
    with pytest.raises(InvalidObject, match="^" + message):
        ImageConfig.from_bytes(dump_json(config_dict(**change)))


def test_new_config():
    c = ImageConfig.new(Platform("arm64", "linux", variant="v8"), created="2024-01-01T00:00:00Z")
    d = json.loads(c.to_json())
    assert d["architecture"] == "arm64" and d["variant"] == "v8"
    assert d["rootfs"] == {"type": "layers", "diff_ids": []}
    assert list(d)[0] == "created"


def test_descriptor_round_trip_and_of():
    d = {"mediaType": mt.OCI_LAYER, "digest": D1, "size": 3, "urls": ["https://example.com/x"],
         "annotations": {"k": "v"}, "artifactType": "application/x.y", "data": "YWJj"}
    assert Descriptor.from_dict(d).to_dict() == d
    desc = Descriptor.of(mt.OCI_EMPTY, mt.EMPTY_JSON)
    assert desc.digest == mt.EMPTY_JSON_DIGEST and desc.size == 2


def test_parse_any():
    m = dump_json(manifest_dict())
    i = dump_json({"schemaVersion": 2, "manifests": []})
    assert isinstance(parse_any(m, None), Manifest)
    assert isinstance(parse_any(i, None), Index)
    assert isinstance(parse_any(i, mt.DOCKER_MANIFEST_LIST), Index)
    with pytest.raises(UnsupportedMediaType):
        parse_any(m, "text/plain")


# --- platforms -----------------------------------------------------------------


@pytest.mark.parametrize(
    "want, have, ok",
    [
        (Platform("amd64", "linux"), Platform("amd64", "linux"), True),
        (Platform("amd64", "linux"), Platform("arm64", "linux"), False),
        (Platform("amd64", "linux"), Platform("amd64", "windows"), False),
        # arm64 without a variant means v8
        (Platform("arm64", "linux"), Platform("arm64", "linux", variant="v8"), True),
        (Platform("arm64", "linux", variant="v8"), Platform("arm64", "linux"), True),
        (Platform("arm64", "linux"), Platform("arm64", "linux", variant="v9"), False),
        (Platform("arm", "linux", variant="v7"), Platform("arm", "linux", variant="v6"), False),
        (Platform("arm", "linux"), Platform("arm", "linux", variant="v6"), True),
        (Platform("amd64", "windows", os_version="10.0.1"), Platform("amd64", "windows", os_version="10.0.2"), False),
        (Platform("amd64", "windows"), Platform("amd64", "windows", os_version="10.0.2"), True),
    ],
)
def test_platform_matches(want, have, ok):
    assert want.matches(have) is ok


def test_platform_parse_and_str():
    p = Platform.parse("linux/arm64/v8")
    assert (p.os, p.architecture, p.variant) == ("linux", "arm64", "v8")
    assert str(p) == "linux/arm64/v8"
    assert str(Platform.parse("linux/amd64")) == "linux/amd64"
    for bad in ("linux", "linux/", "a/b/c/d", ""):
        with pytest.raises(InvalidObject):
            Platform.parse(bad)


def test_platform_to_dict_round_trip():
    p = Platform("amd64", "windows", os_version="10.0", os_features=("win32k",), variant=None)
    assert Platform.from_dict(p.to_dict()) == p


def test_host_platform_is_linux():
    assert Platform.host().os == "linux"

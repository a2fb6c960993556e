"""Validation against the image specification: each rule, broken and kept."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocibox import mediatypes as mt
from ocibox.errors import InvalidObject, LayoutError, MalformedJSON, UnsupportedMediaType
from ocibox.image import validate as v
from ocibox.image.models import ImageConfig, Index, Manifest, dump_json

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


def desc(media_type=mt.OCI_LAYER_GZIP, digest=D2, size=200, **extra):
    return {"mediaType": media_type, "digest": digest, "size": size, **extra}


def manifest(**extra):
    d = {"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
         "config": desc(mt.OCI_CONFIG, D1, 100), "layers": [desc(), desc(digest=D3)]}
    d.update(extra)
    return d


def index(**extra):
    d = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [
        desc(mt.OCI_MANIFEST, D1, 500, platform={"architecture": "amd64", "os": "linux"}),
        desc(mt.OCI_MANIFEST, D2, 501, platform={"architecture": "arm64", "os": "linux", "variant": "v8"}),
    ]}
    d.update(extra)
    return d


def config(**extra):
    d = {
        "created": "2024-03-01T10:20:30.123456789Z",
        "author": "someone",
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": "1000:1000",
            "ExposedPorts": {"80/tcp": {}, "53/udp": {}, "8080": {}},
            "Env": ["PATH=/usr/bin:/bin", "EMPTY="],
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": ["echo hi"],
            "Volumes": {"/data": {}},
            "WorkingDir": "/srv",
            "Labels": {"org.example.a": "1"},
            "StopSignal": "SIGTERM",
            "ArgsEscaped": False,
        },
        "rootfs": {"type": "layers", "diff_ids": [D1, D2]},
        "history": [
            {"created": "2024-03-01T10:20:00Z", "created_by": "ADD root.tar /", "author": "a", "comment": "c"},
            {"created_by": "ENV X=1", "empty_layer": True},
            {"created_by": "RUN make"},
        ],
    }
    d.update(extra)
    return d


def fails(fn, obj, message, **kw):
    """fn(obj) raises InvalidObject whose message starts with ``message``."""
    data = obj if isinstance(obj, bytes) else dump_json(obj)
    with pytest.raises(InvalidObject) as e:
        fn(data, **kw)
    assert str(e.value).startswith(message), str(e.value)
    return e.value


def warned(fn, obj, **kw) -> list[str]:
    warnings: list[str] = []
    fn(obj if isinstance(obj, bytes) else dump_json(obj), warnings=warnings, **kw)
    return warnings


# --- grammars ------------------------------------------------------------------

NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"


@given(st.from_regex(rf"\A{NAME}/{NAME}\Z"))
def test_media_type_grammar_accepts(value):
    assert v.is_media_type(value)


@given(st.text(max_size=60))
def test_media_type_grammar_refuses(value):
    # the complement: anything accepted has exactly one slash, no spaces or
    # parameters, and starts each half with a letter or digit
    if v.is_media_type(value):
        t, s = value.split("/")
        assert t[0].isascii() and t[0].isalnum() and s[0].isascii() and s[0].isalnum()
        assert not any(ch in value for ch in " ;=\t\n\"")


@pytest.mark.parametrize("value", [
    mt.OCI_MANIFEST, mt.DOCKER_LAYER_GZIP, "text/plain", "application/vnd.example+type", "a/b",
])
def test_media_type_examples(value):
    assert v.is_media_type(value)


@pytest.mark.parametrize("value", [
    "", "application", "application/", "/json", "application/json; charset=utf-8",
    "application/json\n", "appli cation/json", "-x/y", "x/.y", "a/b/c", "a/" + "b" * 128, None, 3,
])
def test_media_type_counter_examples(value):
    assert not v.is_media_type(value)


@pytest.mark.parametrize("value", [
    "2024-03-01T10:20:30Z", "2024-03-01t10:20:30z", "2024-03-01T10:20:30.5+02:00",
    "0001-01-01T00:00:00Z", "2016-12-31T23:59:60Z", "1985-04-12T23:20:50.52-08:00",
])
def test_rfc3339_accepts(value):
    assert v.is_rfc3339(value)


@pytest.mark.parametrize("value", [
    "", "2024-03-01", "2024-03-01 10:20:30Z", "2024-03-01T10:20:30", "2024-13-01T00:00:00Z",
    "2024-02-30T00:00:00Z", "2024-03-01T25:00:00Z", "2024-03-01T10:20:30+24:00", "2024-03-01T10:20:30Z\n",
    "24-03-01T10:20:30Z", 1709288430, "\u0662024-03-01T10:20:30Z",  # a non-ASCII digit
])
def test_rfc3339_refuses(value):
    assert not v.is_rfc3339(value)


@given(st.from_regex(r"\A(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})\Z"))
def test_descriptor_digest_grammar_accepts(digest):
    v.validate_descriptor(desc(digest=digest))


@given(st.from_regex(r"\Asha256:[a-fA-F0-9]{64}\Z"))
def test_descriptor_digest_upper_case_refused(digest):
    if digest != digest.lower():
        with pytest.raises(InvalidObject, match="lower-case hex"):
            v.validate_descriptor(desc(digest=digest))


# --- descriptors -----------------------------------------------------------------


def descriptor_fails(d, message, field=""):
    with pytest.raises(InvalidObject) as e:
        v.validate_descriptor(d, "manifest", field=field)
    assert str(e.value).startswith(message), str(e.value)


def test_descriptor_valid_with_everything():
    data = b'{"a":"b"}'
    d = desc(mt.OCI_LAYER, "sha256:" + hashlib.sha256(data).hexdigest(), len(data),
             urls=["https://example.com/blob?x=1#frag", "http://[::1]:5000/a%20b"],
             annotations={"org.opencontainers.image.title": "x", "empty": ""},
             artifactType="application/vnd.example.thing",
             data=base64.b64encode(data).decode(),
             platform={"architecture": "amd64", "os": "windows", "os.version": "10.0.20348.1",
                       "os.features": ["win32k"], "variant": "x", "features": ["sse4"]})
    v.validate_descriptor(d)


@pytest.mark.parametrize("d, message", [
    ("x", "manifest: layers[2]: must be a descriptor object"),
    ({"digest": D1, "size": 1}, "manifest: layers[2].mediaType: is required"),
    (desc("application/json; charset=utf-8"), "manifest: layers[2].mediaType: 'application/json; charset=utf-8' is not a media type"),
    (desc(mediaType=5), "manifest: layers[2].mediaType: must be a string, not a number"),
    ({"mediaType": mt.OCI_LAYER, "size": 1}, "manifest: layers[2].digest: is required"),
    (desc(digest="sha256"), "manifest: layers[2].digest: 'sha256' is not a digest"),
    (desc(digest="sha256:" + "A" * 64), "manifest: layers[2].digest: 'sha256:AAAA"),
    (desc(digest="sha512:" + "a" * 64), "manifest: layers[2].digest: 'sha512:aaaa"),
    (desc(digest="md5:d41d8cd98f00b204e9800998ecf8427e"), "manifest: layers[2].digest: 'md5:"),
    (desc(digest=None), "manifest: layers[2].digest: must be a string, not null"),
    ({"mediaType": mt.OCI_LAYER, "digest": D1}, "manifest: layers[2].size: is required"),
    (desc(size=-1), "manifest: layers[2].size: -1 is not a size"),
    (desc(size=2**63), "manifest: layers[2].size: 9223372036854775808 is not a size"),
    (desc(size=1.5), "manifest: layers[2].size: must be an integer, not a number"),
    (desc(size=True), "manifest: layers[2].size: must be an integer, not a boolean"),
    (desc(size="1"), "manifest: layers[2].size: must be an integer, not a string"),
    (desc(urls="https://x"), "manifest: layers[2].urls: must be an array"),
    (desc(urls=[1]), "manifest: layers[2].urls[0]: must be a string"),
    (desc(urls=["https://ok", "not a uri"]), "manifest: layers[2].urls[1]: 'not a uri' is not a URI"),
    (desc(urls=["https://x/%zz"]), "manifest: layers[2].urls[0]"),
    (desc(annotations=None), "manifest: layers[2].annotations: must be an object of strings, not null"),
    (desc(annotations=["a"]), "manifest: layers[2].annotations: must be an object"),
    (desc(annotations={"a": 1}), "manifest: layers[2].annotations.a: must be a string, not a number"),
    (desc(artifactType="nope"), "manifest: layers[2].artifactType: 'nope' is not a media type"),
    (desc(platform="linux/amd64"), "manifest: layers[2].platform: must be an object"),
    (desc(platform={"os": "linux"}), "manifest: layers[2].platform.architecture: is required"),
    (desc(platform={"architecture": "amd64"}), "manifest: layers[2].platform.os: is required"),
    (desc(platform={"architecture": "amd64", "os": 1}), "manifest: layers[2].platform.os: must be a string"),
    (desc(platform={"architecture": "amd64", "os": "linux", "os.version": 10}), "manifest: layers[2].platform.os.version"),
    (desc(platform={"architecture": "amd64", "os": "linux", "os.features": "x"}), "manifest: layers[2].platform.os.features: must be an array"),
    (desc(platform={"architecture": "amd64", "os": "linux", "os.features": [1]}), "manifest: layers[2].platform.os.features[0]"),
    (desc(platform={"architecture": "amd64", "os": "linux", "variant": 8}), "manifest: layers[2].platform.variant"),
    (desc(platform={"architecture": "amd64", "os": "linux", "features": [None]}), "manifest: layers[2].platform.features[0]"),
])
def test_descriptor_rules(d, message):
    descriptor_fails(d, message, field="layers[2]")


def test_descriptor_unregistered_algorithm_says_why():
    with pytest.raises(InvalidObject, match="cannot verify"):
        v.validate_descriptor(desc(digest="multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8"))


def test_descriptor_urls_scheme_is_a_should():
    warnings: list[str] = []
    v.validate_descriptor(desc(urls=["ftp://example.com/x"]), warnings=warnings)
    assert warnings == ["descriptor: urls[0]: should use the http or https scheme"]


@pytest.mark.parametrize("data, size, digest, message", [
    ("e30", 2, mt.EMPTY_JSON_DIGEST, "must be base64"),
    ("e3 0=", 2, mt.EMPTY_JSON_DIGEST, "must be base64"),
    ("e30=", 3, mt.EMPTY_JSON_DIGEST, "decodes to 2 bytes but size is 3"),
    ("e30=", 2, D1, "decoded content does not match digest"),
])
def test_descriptor_data(data, size, digest, message):
    with pytest.raises(InvalidObject, match=message):
        v.validate_descriptor(desc(mt.OCI_EMPTY, digest, size, data=data))
    v.validate_descriptor(desc(mt.OCI_EMPTY, mt.EMPTY_JSON_DIGEST, 2, data="e30="))


def test_descriptor_data_sha512():
    content = b"{}"
    d = "sha512:" + hashlib.sha512(content).hexdigest()
    v.validate_descriptor(desc(mt.OCI_EMPTY, d, 2, data="e30="))


# --- manifests ---------------------------------------------------------------------


def test_manifest_valid():
    data = dump_json(manifest(annotations={"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}))
    warnings: list[str] = []
    m = v.validate_manifest(data, warnings=warnings)
    assert isinstance(m, Manifest) and m.raw == data
    assert warnings == []


@pytest.mark.parametrize("change, message", [
    ({"schemaVersion": 3}, "manifest: schemaVersion: must be 2, not 3"),
    ({"schemaVersion": "2"}, "manifest: schemaVersion: must be an integer"),
    ({"mediaType": mt.OCI_INDEX}, "manifest: mediaType: 'application/vnd.oci.image.index.v1+json' claims an index"),
    ({"mediaType": mt.DOCKER_MANIFEST_LIST}, "manifest: mediaType: 'application/vnd.docker.distribution.manifest.list.v2+json' claims an index"),
    ({"mediaType": mt.OCI_CONFIG}, "manifest: mediaType: 'application/vnd.oci.image.config.v1+json' is not a media type for a manifest"),
    ({"mediaType": "bad"}, "manifest: mediaType: 'bad' is not a media type"),
    ({"manifests": []}, "manifest: manifests: must not be present in a manifest"),
    ({"artifactType": "bad type"}, "manifest: artifactType: 'bad type' is not a media type"),
    ({"config": None}, "manifest: config: must be a descriptor object, not null"),
    ({"config": desc(mt.OCI_CONFIG, "sha256:x", 1)}, "manifest: config.digest: 'sha256:x'"),
    ({"config": desc(mt.OCI_EMPTY, mt.EMPTY_JSON_DIGEST, 2)}, "manifest: artifactType: is required when config.mediaType is application/vnd.oci.empty.v1+json"),
    ({"layers": None}, "manifest: layers: must be an array, not null"),
    ({"layers": [desc(), desc(), desc("text plain")]}, "manifest: layers[2].mediaType: 'text plain' is not a media type"),
    ({"layers": [desc(), desc(mt.OCI_MANIFEST)]}, "manifest: layers[1].mediaType: 'application/vnd.oci.image.manifest.v1+json' is not a layer media type"),
    ({"layers": [desc(mt.OCI_EMPTY, mt.EMPTY_JSON_DIGEST, 2)]}, "manifest: layers[0].mediaType: 'application/vnd.oci.empty.v1+json' is not a layer"),
    ({"layers": [desc(mt.DOCKER_CONFIG)]}, "manifest: layers[0].mediaType: 'application/vnd.docker.container.image.v1+json' is not a layer"),
    ({"subject": desc(mt.OCI_MANIFEST, size=-3)}, "manifest: subject.size"),
    ({"annotations": None}, "manifest: annotations: must be an object of strings, not null"),
    ({"annotations": {"k": ["v"]}}, "manifest: annotations.k: must be a string, not an array"),
])
def test_manifest_rules(change, message):
    fails(v.validate_manifest, manifest(**change), message)


def test_manifest_required_fields():
    for key in ("schemaVersion", "config", "layers"):
        d = manifest()
        del d[key]
        fails(v.validate_manifest, d, f"manifest: {key}: is required")


def test_manifest_not_json():
    with pytest.raises(MalformedJSON, match="manifest: malformed JSON"):
        v.validate_manifest(b"{not json")
    with pytest.raises(MalformedJSON, match="expected a JSON object"):
        v.validate_manifest(b'"a string"')


def test_duplicate_keys_refused():
    data = dump_json(manifest()).replace(b'"schemaVersion":2', b'"schemaVersion":2,"schemaVersion":2')
    fails(v.validate_manifest, data, "manifest: duplicate key 'schemaVersion'")
    d = manifest(annotations={"a": "1"})
    data = dump_json(d).replace(b'{"a":"1"}', b'{"a":"1","a":"2"}')
    fails(v.validate_manifest, data, "manifest: duplicate key 'a'")


def test_manifest_media_type_must_agree_with_reference():
    data = dump_json(manifest())
    v.validate_manifest(data, media_type=mt.OCI_MANIFEST)
    fails(v.validate_manifest, data, "manifest: mediaType: 'application/vnd.oci.image.manifest.v1+json' differs",
          media_type=mt.DOCKER_MANIFEST)
    fails(v.validate_manifest, data, "manifest: was referenced as", media_type=mt.OCI_INDEX)


def test_manifest_without_media_type_is_a_should():
    d = manifest()
    del d["mediaType"]
    assert warned(v.validate_manifest, d) == ["manifest: mediaType: should be set (image-spec: this property SHOULD be used)"]


def test_artifact_with_empty_config():
    d = manifest(artifactType="application/vnd.example.sbom+json",
                 config=desc(mt.OCI_EMPTY, mt.EMPTY_JSON_DIGEST, 2, data="e30="),
                 layers=[desc("application/spdx+json"), desc(mt.OCI_EMPTY, mt.EMPTY_JSON_DIGEST, 2)],
                 subject=desc(mt.OCI_MANIFEST, D3, 900))
    assert warned(v.validate_manifest, d) == []


def test_empty_config_with_other_digest_warns():
    d = manifest(artifactType="application/x.y", config=desc(mt.OCI_EMPTY, D1, 2))
    assert "should describe the 2-byte content" in warned(v.validate_manifest, d)[0]


def test_artifact_config_allows_any_layers():
    d = manifest(config=desc("application/vnd.cncf.helm.config.v1+json", D1, 10),
                 layers=[desc("application/vnd.cncf.helm.chart.content.v1.tar+gzip"), desc(mt.OCI_INDEX)])
    assert warned(v.validate_manifest, d) == []


def test_image_layer_shoulds():
    w = warned(v.validate_manifest, manifest(layers=[]))
    assert w == ["manifest: layers: an image should have at least one layer"]
    w = warned(v.validate_manifest, manifest(layers=[desc(mt.OCI_LAYER_NONDIST_GZIP, urls=["https://x/y"])]))
    assert "non-distributable layers are deprecated" in w[0]
    # BuildKit attestation manifests: an image config with in-toto layers
    w = warned(v.validate_manifest, manifest(layers=[desc("application/vnd.in-toto+json")]))
    assert w == ["manifest: layers[0].mediaType: 'application/vnd.in-toto+json' is not a layer type ocibox knows; it is ignored"]


@pytest.mark.parametrize("layer_type", sorted(mt.LAYER_COMPRESSION))
def test_every_known_layer_type_is_accepted(layer_type):
    v.validate_manifest(dump_json(manifest(layers=[desc(layer_type)])))


def test_created_annotation_format_is_a_should():
    w = warned(v.validate_manifest, manifest(annotations={"org.opencontainers.image.created": "yesterday"}))
    assert w == ["manifest: annotations.org.opencontainers.image.created: 'yesterday' is not an RFC 3339 date-time"]


def test_docker_schema2_manifest():
    d = manifest(mediaType=mt.DOCKER_MANIFEST, config=desc(mt.DOCKER_CONFIG, D1, 1),
                 layers=[desc(mt.DOCKER_LAYER_GZIP), desc(mt.DOCKER_LAYER_FOREIGN_GZIP, urls=["https://x/y"])])
    m = v.validate_manifest(dump_json(d), media_type=mt.DOCKER_MANIFEST)
    assert m.media_type == mt.DOCKER_MANIFEST


def test_schema1_refused_clearly():
    data = json.dumps({"schemaVersion": 1, "name": "library/busybox", "tag": "latest",
                       "architecture": "amd64", "fsLayers": [{"blobSum": D1}],
                       "history": [{"v1Compatibility": "{}"}]}).encode()
    with pytest.raises(UnsupportedMediaType, match=r"manifest \(library/busybox:latest\): schema1 manifests are deprecated"):
        v.validate_manifest(data)
    with pytest.raises(UnsupportedMediaType, match="re-push the image"):
        v.validate_blob(mt.DOCKER_MANIFEST_V1_SIGNED, data)


# --- indexes ------------------------------------------------------------------------


def test_index_valid():
    data = dump_json(index(annotations={"a": "b"}, artifactType="application/x.y",
                           subject=desc(mt.OCI_MANIFEST, D3, 3)))
    idx = v.validate_index(data, warnings=(w := []))
    assert isinstance(idx, Index) and idx.raw == data and w == []


@pytest.mark.parametrize("change, message", [
    ({"schemaVersion": 1}, "index: schemaVersion: must be 2, not 1"),
    ({"mediaType": mt.OCI_MANIFEST}, "index: mediaType: 'application/vnd.oci.image.manifest.v1+json' claims a manifest"),
    ({"mediaType": mt.DOCKER_MANIFEST}, "index: mediaType: 'application/vnd.docker.distribution.manifest.v2+json' claims a manifest"),
    ({"mediaType": "application/json"}, "index: mediaType: 'application/json' is not a media type for an index"),
    ({"config": desc(mt.OCI_CONFIG)}, "index: config: must not be present in an index"),
    ({"layers": []}, "index: layers: must not be present in an index"),
    ({"manifests": None}, "index: manifests: must be an array, not null"),
    ({"manifests": [desc(mt.OCI_MANIFEST), desc(mt.OCI_MANIFEST, platform={"architecture": "amd64"})]},
     "index: manifests[1].platform.os: is required"),
    ({"manifests": [desc("nope")]}, "index: manifests[0].mediaType: 'nope' is not a media type"),
    ({"artifactType": ""}, "index: artifactType: '' is not a media type"),
    ({"subject": {"mediaType": mt.OCI_MANIFEST}}, "index: subject.digest: is required"),
    ({"annotations": {"a": None}}, "index: annotations.a: must be a string, not null"),
])
def test_index_rules(change, message):
    fails(v.validate_index, index(**change), message)


def test_index_missing_manifests():
    d = index()
    del d["manifests"]
    fails(v.validate_index, d, "index: manifests: is required")


def test_index_unknown_child_types_are_allowed():
    d = index(manifests=[desc("application/vnd.example.thing"), desc(mt.DOCKER_MANIFEST)])
    assert warned(v.validate_index, d) == []


def test_docker_manifest_list():
    d = index(mediaType=mt.DOCKER_MANIFEST_LIST, manifests=[
        desc(mt.DOCKER_MANIFEST, D1, 1, platform={"architecture": "arm", "os": "linux", "variant": "v7"})])
    v.validate_index(dump_json(d), media_type=mt.DOCKER_MANIFEST_LIST)
    fails(v.validate_index, d, "index: mediaType:", media_type=mt.OCI_INDEX)


# --- configs --------------------------------------------------------------------------


def test_config_valid():
    data = dump_json(config())
    c = v.validate_config(data, warnings=(w := []))
    assert isinstance(c, ImageConfig) and c.raw == data and w == []


def test_config_minimal_and_docker_nulls():
    d = {"architecture": "arm64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    v.validate_config(dump_json(d))
    docker = config(config={"Hostname": "", "User": "", "Env": None, "Cmd": None, "Entrypoint": None,
                            "Volumes": None, "Labels": None, "OnBuild": None, "ExposedPorts": None},
                    container_config={"Cmd": ["/bin/sh"]}, docker_version="24.0.7", variant=None)
    v.validate_config(dump_json(docker))
    v.validate_config(dump_json(config(config=None)))


def with_container(**conf):
    c = config()
    c["config"].update(conf)
    return c


@pytest.mark.parametrize("d, message", [
    (config(created="2024-03-01"), "config: created: '2024-03-01' is not an RFC 3339 date-time"),
    (config(created=5), "config: created: must be a string"),
    (config(author=["me"]), "config: author: must be a string"),
    (config(architecture=None), "config: architecture: is required"),
    (config(architecture=""), "config: architecture: must not be empty"),
    (config(os=1), "config: os: must be a string"),
    (config(**{"os.version": 10}), "config: os.version: must be a string"),
    (config(**{"os.features": ["a", 1]}), r"config: os.features[1]: must be a string"),
    (config(variant=7), "config: variant: must be a string"),
    (config(config=[]), "config: config: must be an object"),
    (with_container(User=0), "config: config.User: must be a string"),
    (with_container(Env="A=1"), "config: config.Env: must be an array"),
    (with_container(Env=["A=1", "B"]), "config: config.Env[1]: 'B' is not in the form NAME=VALUE"),
    (with_container(Env=["=x"]), "config: config.Env[0]: '=x' is not in the form NAME=VALUE"),
    (with_container(Entrypoint="/bin/sh"), "config: config.Entrypoint: must be an array"),
    (with_container(Cmd=["a", 2]), "config: config.Cmd[1]: must be a string"),
    (with_container(ExposedPorts=["80/tcp"]), "config: config.ExposedPorts: must be an object"),
    (with_container(ExposedPorts={"http": {}}), "config: config.ExposedPorts.http: keys must be port"),
    (with_container(ExposedPorts={"80/icmp": {}}), "config: config.ExposedPorts.80/icmp: keys must be port"),
    (with_container(ExposedPorts={"70000/tcp": {}}), "config: config.ExposedPorts.70000/tcp: keys must be port"),
    (with_container(ExposedPorts={"\u0668\u0660": {}}), "config: config.ExposedPorts.\u0668\u0660: keys must be port"),
    (with_container(ExposedPorts={"80/tcp": True}), "config: config.ExposedPorts.80/tcp: must be an object"),
    (with_container(Volumes=["/data"]), "config: config.Volumes: must be an object"),
    (with_container(Volumes={"/data": None}), "config: config.Volumes./data: must be an object"),
    (with_container(WorkingDir=1), "config: config.WorkingDir: must be a string"),
    (with_container(Labels=["a"]), "config: config.Labels: must be an object"),
    (with_container(Labels={"a": 1}), "config: config.Labels.a: must be a string"),
    (with_container(StopSignal=15), "config: config.StopSignal: must be a string"),
    (with_container(ArgsEscaped="yes"), "config: config.ArgsEscaped: must be a boolean"),
    (config(rootfs=None), "config: rootfs: is required"),
    (config(rootfs={"type": "layer", "diff_ids": []}), "config: rootfs.type: must be \"layers\", not 'layer'"),
    (config(rootfs={"type": "layers"}), "config: rootfs.diff_ids: is required"),
    (config(rootfs={"type": "layers", "diff_ids": [D1, "sha256:abc"]}), "config: rootfs.diff_ids[1]: 'sha256:abc'"),
    (config(history={}), "config: history: must be an array"),
    (config(history=["ADD x"]), "config: history[0]: must be an object"),
    (config(history=[{"created": "now"}]), "config: history[0].created: 'now' is not an RFC 3339 date-time"),
    (config(history=[{"created_by": 1}]), "config: history[0].created_by: must be a string"),
    (config(history=[{"author": 1}]), "config: history[0].author: must be a string"),
    (config(history=[{"comment": 1}]), "config: history[0].comment: must be a string"),
    (config(history=[{"empty_layer": "true"}]), "config: history[0].empty_layer: must be a boolean"),
])
def test_config_rules(d, message):
    fails(v.validate_config, d, message)


def test_config_required_fields():
    for key in ("architecture", "os", "rootfs"):
        d = config()
        del d[key]
        fails(v.validate_config, d, f"config: {key}: is required")


def test_config_history_count_is_a_should():
    d = config()
    d["history"] = d["history"][:2]  # one non-empty entry for two diff_ids
    assert warned(v.validate_config, d) == [
        "config: history: 1 entries are not empty_layer, but rootfs has 2 diff_ids"]
    d["history"] = []  # no history at all is fine
    assert warned(v.validate_config, d) == []


# --- layouts ------------------------------------------------------------------------------


def make_layout(root, *, manifests=None):
    os.makedirs(root / "blobs" / "sha256")
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    data = b'{"hello": 1}'
    (root / "blobs" / "sha256" / hashlib.sha256(data).hexdigest()).write_bytes(data)
    idx = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": manifests or [
        desc(mt.OCI_MANIFEST, D1, 10, annotations={"org.opencontainers.image.ref.name": "v1.0"})]}
    (root / "index.json").write_bytes(dump_json(idx))
    return root


def test_layout_valid(tmp_path):
    root = make_layout(tmp_path / "l")
    (root / "blobs" / "sha256" / ".tmp-abc123").write_bytes(b"in flight")
    (root / "blobs" / "sha512").mkdir()
    w: list[str] = []
    idx = v.validate_layout_dir(str(root), warnings=w)
    assert idx.manifests[0].ref_name == "v1.0"
    assert w == []


def test_layout_structure_errors(tmp_path):
    with pytest.raises(LayoutError, match="not a directory"):
        v.validate_layout_dir(str(tmp_path / "nothing"))
    root = make_layout(tmp_path / "a")
    (root / "oci-layout").unlink()
    with pytest.raises(LayoutError, match="oci-layout: missing"):
        v.validate_layout_dir(str(root))
    root = make_layout(tmp_path / "b")
    (root / "index.json").unlink()
    with pytest.raises(LayoutError, match="index.json: missing"):
        v.validate_layout_dir(str(root))
    root = make_layout(tmp_path / "c")
    for p in (root / "blobs" / "sha256").iterdir():
        p.unlink()
    (root / "blobs" / "sha256").rmdir()
    (root / "blobs").rmdir()
    with pytest.raises(LayoutError, match="blobs: missing"):
        v.validate_layout_dir(str(root))


@pytest.mark.parametrize("header, message", [
    ('{"imageLayoutVersion": "1.1.0"}', "oci-layout: imageLayoutVersion: must be \"1.0.0\", not '1.1.0'"),
    ('{}', "oci-layout: imageLayoutVersion: is required"),
    ('{"imageLayoutVersion": 1}', "oci-layout: imageLayoutVersion: must be a string"),
])
def test_layout_header(tmp_path, header, message):
    root = make_layout(tmp_path / "l")
    (root / "oci-layout").write_text(header)
    with pytest.raises(InvalidObject) as e:
        v.validate_layout_dir(str(root))
    assert message in str(e.value)


def test_layout_index_is_validated(tmp_path):
    root = make_layout(tmp_path / "l", manifests=[desc(mt.OCI_MANIFEST, "sha256:bad", 1)])
    with pytest.raises(InvalidObject, match=r"index.json: manifests\[0\].digest"):
        v.validate_layout_dir(str(root))


@pytest.mark.parametrize("alg, name, message", [
    ("sha256", "A" * 64, "blobs: sha256/" + "A" * 64 + ": is not a valid sha256 encoded digest"),
    ("sha256", "abc", "is not a valid sha256 encoded digest"),
    ("sha512", "a" * 64, "is not a valid sha512 encoded digest"),
    ("SHA256", "a" * 64, "blobs: SHA256: is not a digest algorithm name"),
    ("foo+bar", "a b", "blobs: foo+bar/a b: is not a valid foo+bar encoded digest"),
])
def test_layout_blob_names(tmp_path, alg, name, message):
    root = make_layout(tmp_path / "l")
    (root / "blobs" / alg).mkdir(exist_ok=True)
    (root / "blobs" / alg / name).write_bytes(b"x")
    with pytest.raises(InvalidObject) as e:
        v.validate_layout_dir(str(root))
    assert message in str(e.value)


def test_layout_stray_entries(tmp_path):
    root = make_layout(tmp_path / "l")
    (root / "blobs" / "README").write_text("x")
    with pytest.raises(InvalidObject, match="blobs: README: must be a directory"):
        v.validate_layout_dir(str(root))
    (root / "blobs" / "README").unlink()
    (root / "blobs" / "sha256" / ("a" * 64)).mkdir()
    with pytest.raises(InvalidObject, match="must be a regular file"):
        v.validate_layout_dir(str(root))


def test_layout_shoulds(tmp_path):
    root = make_layout(tmp_path / "l", manifests=[
        desc(mt.OCI_MANIFEST, D1, 10, annotations={"org.opencontainers.image.ref.name": "bad name!"})])
    (root / "blobs" / "blake3").mkdir()
    (root / "blobs" / "blake3" / ("a" * 64)).write_bytes(b"x")
    w: list[str] = []
    v.validate_layout_dir(str(root), warnings=w)
    assert any("ref.name grammar" in x for x in w)
    assert any("blake3: is not a registered digest algorithm" in x for x in w)


# --- blobs by media type ----------------------------------------------------------------


def test_validate_blob_dispatch():
    assert isinstance(v.validate_blob(mt.OCI_MANIFEST, dump_json(manifest())), Manifest)
    assert isinstance(v.validate_blob(mt.OCI_INDEX, dump_json(index())), Index)
    assert isinstance(v.validate_blob(mt.DOCKER_CONFIG, dump_json(config())), ImageConfig)
    assert v.validate_blob(mt.OCI_LAYER_GZIP, b"\x1f\x8b whatever") is None
    assert v.validate_blob("application/vnd.example.unknown", b"anything") is None
    assert v.validate_blob(mt.OCI_EMPTY, b"{}") is None
    assert v.validate_blob(mt.OCI_LAYOUT_HEADER, b'{"imageLayoutVersion":"1.0.0"}') is None


def test_validate_blob_errors():
    with pytest.raises(InvalidObject, match="blob: mediaType: 'nope' is not a media type"):
        v.validate_blob("nope", b"{}")
    # a manifest fetched as an index
    with pytest.raises(InvalidObject, match=r"blob sha256:1+: mediaType: .* claims a manifest"):
        v.validate_blob(mt.OCI_INDEX, dump_json(manifest()), f"blob {D1}")
    with pytest.raises(InvalidObject, match="must be the empty object"):
        v.validate_blob(mt.OCI_EMPTY, b'{"a": 1}')
    w: list[str] = []
    v.validate_blob(mt.OCI_EMPTY, b"{ }", warnings=w)
    assert w == ["blob: empty content should be exactly the two bytes {}"]
    with pytest.raises(InvalidObject, match="imageLayoutVersion"):
        v.validate_blob(mt.OCI_LAYOUT_HEADER, b'{"imageLayoutVersion":"2"}')


def test_validators_do_not_mutate_input():
    d = manifest()
    before = copy.deepcopy(d)
    v.validate_descriptor(d["config"])
    assert d == before

"""Docker schema2 manifests, manifest lists and configs to OCI and back."""

from __future__ import annotations

import json

import pytest

from ocibox import mediatypes as mt
from ocibox.errors import InvalidObject, UnsupportedMediaType
from ocibox.image import docker
from ocibox.image import validate as v
from ocibox.image.models import Descriptor, dump_json

CONFIG_DIGEST = "sha256:3f57d9401f8d42f986df300f0c69192fc41da28ccc8d797829467780db3dd741"
L1 = "sha256:4abcf20661432fb2d719aaf90656f55c287f8ca915dc1c92ec14ff61e67fbaf8"
L2 = "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"
WIN = "sha256:7a1c0f9d0b7e7d5e3f4a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e"

# a realistic schema2 manifest, laid out as a registry serves it
DOCKER_MANIFEST = b"""{
   "schemaVersion": 2,
   "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
   "config": {
      "mediaType": "application/vnd.docker.container.image.v1+json",
      "size": 1469,
      "digest": "sha256:3f57d9401f8d42f986df300f0c69192fc41da28ccc8d797829467780db3dd741"
   },
   "layers": [
      {
         "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
         "size": 3401613,
         "digest": "sha256:4abcf20661432fb2d719aaf90656f55c287f8ca915dc1c92ec14ff61e67fbaf8"
      },
      {
         "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
         "size": 32,
         "digest": "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"
      }
   ]
}"""

WINDOWS_MANIFEST = {
    "schemaVersion": 2,
    "mediaType": mt.DOCKER_MANIFEST,
    "config": {"mediaType": mt.DOCKER_CONFIG, "size": 1000, "digest": CONFIG_DIGEST},
    "layers": [
        {"mediaType": mt.DOCKER_LAYER_FOREIGN_GZIP, "size": 1654797824, "digest": WIN,
         "urls": ["https://mcr.microsoft.com/v2/windows/servercore/blobs/" + WIN]},
        {"mediaType": "application/vnd.docker.image.rootfs.diff.tar", "size": 10240, "digest": L1},
    ],
}

AMD64 = "sha256:" + "a" * 64
ARM64 = "sha256:" + "b" * 64
ARMV7 = "sha256:" + "c" * 64

DOCKER_LIST = {
    "schemaVersion": 2,
    "mediaType": mt.DOCKER_MANIFEST_LIST,
    "manifests": [
        {"mediaType": mt.DOCKER_MANIFEST, "size": 528, "digest": AMD64,
         "platform": {"architecture": "amd64", "os": "linux"}},
        {"mediaType": mt.DOCKER_MANIFEST, "size": 528, "digest": ARM64,
         "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
        {"mediaType": mt.DOCKER_MANIFEST, "size": 527, "digest": ARMV7,
         "platform": {"architecture": "arm", "os": "linux", "variant": "v7", "features": ["neon"]}},
    ],
}

# what `docker inspect`-era daemons write: extra fields, Go nils as null
DOCKER_CONFIG = {
    "architecture": "amd64",
    "config": {
        "Hostname": "",
        "Domainname": "",
        "User": "nobody",
        "AttachStdin": False,
        "AttachStdout": False,
        "AttachStderr": False,
        "ExposedPorts": {"8080/tcp": {}},
        "Tty": False,
        "OpenStdin": False,
        "StdinOnce": False,
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": ["/app"],
        "Healthcheck": {"Test": ["CMD", "/app", "-health"]},
        "ArgsEscaped": True,
        "Image": "sha256:" + "9" * 64,
        "Volumes": None,
        "WorkingDir": "/srv",
        "Entrypoint": None,
        "OnBuild": None,
        "Labels": {"maintainer": "someone@example.com"},
        "StopSignal": "SIGINT",
    },
    "container": "2b6a8e4c9d1f0a3b5c7d9e1f3a5b7c9d1e3f5a7b9c1d3e5f7a9b1c3d5e7f9a1b",
    "container_config": {"Hostname": "2b6a8e4c9d1f", "Cmd": ["/bin/sh", "-c", "#(nop) ", "CMD [\"/app\"]"]},
    "created": "2023-11-30T17:02:14.287542153Z",
    "docker_version": "20.10.23",
    "history": [
        {"created": "2023-11-30T16:59:01Z", "created_by": "/bin/sh -c #(nop) ADD file:abc in / "},
        {"created": "2023-11-30T16:59:02Z", "created_by": "/bin/sh -c #(nop)  CMD [\"/app\"]",
         "empty_layer": True},
        {"created": "2023-11-30T17:02:14Z", "created_by": "COPY app /app # buildkit", "comment": "buildkit.dockerfile.v0"},
    ],
    "os": "linux",
    "rootfs": {"type": "layers", "diff_ids": [L1, L2]},
}


def loads(data: bytes) -> dict:
    return json.loads(data)


# --- manifests ---------------------------------------------------------------------


def test_manifest_to_oci():
    out = docker.manifest_to_oci(DOCKER_MANIFEST)
    d = loads(out)
    assert list(d) == ["schemaVersion", "mediaType", "config", "layers"]
    assert d["mediaType"] == mt.OCI_MANIFEST
    assert d["config"] == {"mediaType": mt.OCI_CONFIG, "digest": CONFIG_DIGEST, "size": 1469}
    assert [x["mediaType"] for x in d["layers"]] == [mt.OCI_LAYER_GZIP] * 2
    assert [(x["digest"], x["size"]) for x in d["layers"]] == [(L1, 3401613), (L2, 32)]
    v.validate_manifest(out, media_type=mt.OCI_MANIFEST, warnings=(w := []))
    assert w == []


def test_manifest_round_trip():
    back = docker.manifest_from_oci(docker.manifest_to_oci(DOCKER_MANIFEST))
    assert loads(back) == loads(DOCKER_MANIFEST)
    v.validate_manifest(back, media_type=mt.DOCKER_MANIFEST)


def test_foreign_and_uncompressed_layers():
    out = loads(docker.manifest_to_oci(dump_json(WINDOWS_MANIFEST)))
    assert out["layers"][0]["mediaType"] == mt.OCI_LAYER_NONDIST_GZIP
    assert out["layers"][0]["urls"] == WINDOWS_MANIFEST["layers"][0]["urls"]
    assert out["layers"][1]["mediaType"] == mt.OCI_LAYER
    back = loads(docker.manifest_from_oci(dump_json(out)))
    assert back == WINDOWS_MANIFEST | {"config": back["config"]}
    assert back["layers"] == WINDOWS_MANIFEST["layers"]


def test_manifest_with_new_config_descriptor():
    new = Descriptor(mt.OCI_CONFIG, "sha256:" + "e" * 64, 900)
    d = loads(docker.manifest_to_oci(DOCKER_MANIFEST, config=new))
    assert d["config"] == new.to_dict()
    back = loads(docker.manifest_from_oci(dump_json(d), config=Descriptor(mt.DOCKER_CONFIG, CONFIG_DIGEST, 1469)))
    assert back["config"]["digest"] == CONFIG_DIGEST


def test_conversions_keep_the_other_side_unchanged():
    oci = docker.manifest_to_oci(DOCKER_MANIFEST)
    assert docker.manifest_to_oci(oci) is oci
    assert docker.manifest_from_oci(DOCKER_MANIFEST) is DOCKER_MANIFEST


def oci_manifest(**extra) -> dict:
    d = loads(docker.manifest_to_oci(DOCKER_MANIFEST))
    d.update(extra)
    return d


@pytest.mark.parametrize("d, message", [
    (oci_manifest(layers=[{"mediaType": mt.OCI_LAYER_ZSTD, "digest": L1, "size": 1}]),
     "layers[0]: layer media type 'application/vnd.oci.image.layer.v1.tar+zstd' has no Docker schema2 equivalent"),
    (oci_manifest(layers=[{"mediaType": mt.OCI_LAYER_NONDIST, "digest": L1, "size": 1}]), "has no Docker schema2 equivalent"),
    (oci_manifest(layers=[{"mediaType": mt.OCI_LAYER_NONDIST_ZSTD, "digest": L1, "size": 1}]), "has no Docker schema2 equivalent"),
    (oci_manifest(artifactType="application/vnd.example.sbom"), "an artifact (application/vnd.example.sbom) has no Docker"),
    (oci_manifest(config={"mediaType": mt.OCI_EMPTY, "digest": mt.EMPTY_JSON_DIGEST, "size": 2}),
     "config media type 'application/vnd.oci.empty.v1+json' is not an image config"),
    (oci_manifest(subject={"mediaType": mt.OCI_MANIFEST, "digest": L1, "size": 3}), "the subject field"),
    (oci_manifest(mediaType=mt.OCI_INDEX), "is not an OCI image manifest"),
])
def test_manifest_from_oci_refuses(d, message):
    with pytest.raises(UnsupportedMediaType) as e:
        docker.manifest_from_oci(dump_json(d))
    assert message in str(e.value)


def test_manifest_from_oci_drops_what_docker_cannot_say():
    d = oci_manifest(annotations={"org.opencontainers.image.created": "2024-01-01T00:00:00Z"})
    d["layers"][0]["annotations"] = {"k": "v"}
    d["layers"][0]["data"] = "e30="
    out = loads(docker.manifest_from_oci(dump_json(d)))
    assert "annotations" not in out
    assert out["layers"][0] == {"mediaType": mt.DOCKER_LAYER_GZIP, "digest": L1, "size": 3401613,
                                "annotations": {"k": "v"}}


def test_manifest_to_oci_refuses():
    d = loads(DOCKER_MANIFEST)
    d["layers"][0]["mediaType"] = "application/vnd.example.weird"
    with pytest.raises(UnsupportedMediaType, match="'application/vnd.example.weird' has no OCI equivalent"):
        docker.manifest_to_oci(dump_json(d))
    with pytest.raises(UnsupportedMediaType, match="is not a Docker schema2 manifest"):
        docker.manifest_to_oci(dump_json({**loads(DOCKER_MANIFEST), "mediaType": mt.DOCKER_MANIFEST_LIST}))
    with pytest.raises(InvalidObject, match="schemaVersion: must be 2"):
        docker.manifest_to_oci(dump_json({**loads(DOCKER_MANIFEST), "schemaVersion": 3}))
    with pytest.raises(InvalidObject, match="layers"):
        docker.manifest_to_oci(dump_json({k: v for k, v in loads(DOCKER_MANIFEST).items() if k != "layers"}))


def test_docker_manifest_with_an_artifact_config_stays_an_artifact():
    d = loads(DOCKER_MANIFEST)
    d["config"]["mediaType"] = "application/vnd.docker.plugin.v1+json"
    out = loads(docker.manifest_to_oci(dump_json(d)))
    assert out["config"]["mediaType"] == "application/vnd.docker.plugin.v1+json"


def test_oci_layers_inside_a_docker_manifest_are_kept():
    d = loads(DOCKER_MANIFEST)
    d["layers"][0]["mediaType"] = mt.OCI_LAYER_ZSTD
    out = loads(docker.manifest_to_oci(dump_json(d)))
    assert out["layers"][0]["mediaType"] == mt.OCI_LAYER_ZSTD


# --- schema1 -------------------------------------------------------------------------

SCHEMA1 = json.dumps({
    "schemaVersion": 1,
    "name": "library/hello-world",
    "tag": "latest",
    "architecture": "amd64",
    "fsLayers": [{"blobSum": L2}],
    "history": [{"v1Compatibility": "{\"id\":\"abc\"}"}],
    "signatures": [{"header": {"alg": "ES256"}, "signature": "xyz", "protected": "abc"}],
}, indent=3).encode()


def test_schema1_is_refused_with_a_clear_message():
    for fn in (docker.manifest_to_oci, docker.manifest_from_oci):
        with pytest.raises(UnsupportedMediaType) as e:
            fn(SCHEMA1)
        assert "(library/hello-world:latest): schema1 manifests are deprecated and not supported; " \
               "re-push the image with a current client" in str(e.value)
        assert e.value.hint


def test_is_schema1():
    assert docker.is_schema1(mt.DOCKER_MANIFEST_V1_SIGNED)
    assert docker.is_schema1(mt.DOCKER_MANIFEST_V1)
    assert docker.is_schema1(None, SCHEMA1)
    assert not docker.is_schema1(mt.DOCKER_MANIFEST, DOCKER_MANIFEST)
    assert not docker.is_schema1(None, b"not json")
    docker.check_not_schema1(DOCKER_MANIFEST, mt.DOCKER_MANIFEST)
    with pytest.raises(UnsupportedMediaType, match="^manifest: schema1"):
        docker.check_not_schema1(None, mt.DOCKER_MANIFEST_V1_SIGNED)


def test_list_with_a_schema1_child_is_refused():
    d = {**DOCKER_LIST, "manifests": [{"mediaType": mt.DOCKER_MANIFEST_V1_SIGNED, "digest": AMD64, "size": 1}]}
    with pytest.raises(UnsupportedMediaType, match=r"manifests\[0\]: schema1"):
        docker.index_to_oci(dump_json(d))


def test_is_docker():
    for t in (mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST_LIST, mt.DOCKER_CONFIG, mt.DOCKER_LAYER_GZIP,
              mt.DOCKER_MANIFEST_V1_SIGNED, "application/vnd.docker.plugin.v1+json"):
        assert docker.is_docker(t)
    for t in (mt.OCI_MANIFEST, mt.OCI_LAYER_GZIP, "", None, "application/json"):
        assert not docker.is_docker(t)


# --- manifest lists --------------------------------------------------------------------


def converted(digest: str, size: int, media_type=mt.OCI_MANIFEST) -> Descriptor:
    return Descriptor(media_type, "sha256:" + digest * 64, size)


def test_index_to_oci_with_converted_children():
    children = {AMD64: converted("1", 400), ARM64: converted("2", 401), ARMV7: converted("3", 402)}
    out = docker.index_to_oci(dump_json(DOCKER_LIST), children=children)
    d = loads(out)
    assert d["mediaType"] == mt.OCI_INDEX
    assert [m["mediaType"] for m in d["manifests"]] == [mt.OCI_MANIFEST] * 3
    assert [m["size"] for m in d["manifests"]] == [400, 401, 402]
    # what the list said about each child is kept
    assert d["manifests"][1]["platform"] == {"architecture": "arm64", "os": "linux", "variant": "v8"}
    assert d["manifests"][2]["platform"]["features"] == ["neon"]
    v.validate_index(out, media_type=mt.OCI_INDEX)


def test_index_to_oci_keeps_unconverted_children_as_they_are():
    d = loads(docker.index_to_oci(dump_json(DOCKER_LIST)))
    assert d["mediaType"] == mt.OCI_INDEX
    assert d["manifests"] == DOCKER_LIST["manifests"]


def test_index_round_trip():
    to = {AMD64: converted("1", 400), ARM64: converted("2", 401), ARMV7: converted("3", 402)}
    back_children = {
        "sha256:" + "1" * 64: Descriptor(mt.DOCKER_MANIFEST, AMD64, 528),
        "sha256:" + "2" * 64: Descriptor(mt.DOCKER_MANIFEST, ARM64, 528),
        "sha256:" + "3" * 64: Descriptor(mt.DOCKER_MANIFEST, ARMV7, 527),
    }
    oci = docker.index_to_oci(dump_json(DOCKER_LIST), children=to)
    back = docker.index_from_oci(oci, children=back_children)
    assert loads(back) == DOCKER_LIST
    v.validate_index(back, media_type=mt.DOCKER_MANIFEST_LIST)


def test_index_from_oci_refuses():
    oci = docker.index_to_oci(dump_json(DOCKER_LIST), children={AMD64: converted("1", 400)})
    with pytest.raises(UnsupportedMediaType, match=r"manifests\[0\]: 'application/vnd.oci.image.manifest.v1\+json'"):
        docker.index_from_oci(oci)
    d = {**DOCKER_LIST, "mediaType": mt.OCI_INDEX, "artifactType": "application/x.y"}
    with pytest.raises(UnsupportedMediaType, match="artifactType"):
        docker.index_from_oci(dump_json(d))
    d = {**DOCKER_LIST, "mediaType": mt.OCI_INDEX, "subject": {"mediaType": mt.OCI_MANIFEST, "digest": L1, "size": 1}}
    with pytest.raises(UnsupportedMediaType, match="subject"):
        docker.index_from_oci(dump_json(d))
    with pytest.raises(UnsupportedMediaType, match="is not an OCI image index"):
        docker.index_from_oci(dump_json({**DOCKER_LIST, "mediaType": mt.OCI_MANIFEST}))
    with pytest.raises(UnsupportedMediaType, match="is not a Docker manifest list"):
        docker.index_to_oci(dump_json({**DOCKER_LIST, "mediaType": mt.DOCKER_MANIFEST}))
    with pytest.raises(InvalidObject, match="manifests: is required"):
        docker.index_to_oci(b'{"schemaVersion": 2, "mediaType": "%s"}' % mt.DOCKER_MANIFEST_LIST.encode())


def test_index_unchanged_when_already_in_target_format():
    data = dump_json(DOCKER_LIST)
    assert docker.index_from_oci(data) is data
    oci = docker.index_to_oci(data)
    assert docker.index_to_oci(oci) is oci


# --- configs -----------------------------------------------------------------------------


def test_config_to_oci_keeps_only_oci_fields_in_order():
    out = docker.config_to_oci(dump_json(DOCKER_CONFIG))
    d = loads(out)
    assert list(d) == ["created", "architecture", "os", "config", "rootfs", "history"]
    assert d["created"] == DOCKER_CONFIG["created"]
    assert d["config"] == {
        "User": "nobody",
        "ExposedPorts": {"8080/tcp": {}},
        "Env": DOCKER_CONFIG["config"]["Env"],
        "Cmd": ["/app"],
        "WorkingDir": "/srv",
        "Labels": {"maintainer": "someone@example.com"},
        "StopSignal": "SIGINT",
        "ArgsEscaped": True,
    }
    assert d["rootfs"] == {"type": "layers", "diff_ids": [L1, L2]}
    assert d["history"][1] == {"created": "2023-11-30T16:59:02Z",
                               "created_by": "/bin/sh -c #(nop)  CMD [\"/app\"]", "empty_layer": True}
    assert d["history"][2]["comment"] == "buildkit.dockerfile.v0"
    v.validate_config(out, warnings=(w := []))
    assert w == []


def test_config_to_oci_is_deterministic():
    shuffled = dict(reversed(list(DOCKER_CONFIG.items())))
    assert docker.config_to_oci(dump_json(shuffled)) == docker.config_to_oci(dump_json(DOCKER_CONFIG))


def test_config_platform_fields_kept():
    win = {**DOCKER_CONFIG, "os": "windows", "os.version": "10.0.20348.2113", "os.features": ["win32k"],
           "author": "me", "variant": "x"}
    d = loads(docker.config_to_oci(dump_json(win)))
    assert list(d)[:7] == ["created", "author", "architecture", "os", "os.version", "os.features", "variant"]


def test_config_from_oci():
    oci = docker.config_to_oci(dump_json(DOCKER_CONFIG))
    back = docker.config_from_oci(oci)
    assert back == oci  # an OCI config is a Docker config as it is
    v.validate_config(back)


def test_config_conversion_refuses_broken_input():
    with pytest.raises(InvalidObject, match="Docker config: architecture: is required"):
        docker.config_to_oci(dump_json({k: v for k, v in DOCKER_CONFIG.items() if k != "architecture"}))
    with pytest.raises(InvalidObject, match="OCI config: config: must be of type dict"):
        docker.config_from_oci(dump_json({**DOCKER_CONFIG, "config": []}))

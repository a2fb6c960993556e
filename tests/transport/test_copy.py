"""ocibox copy between every kind of location, and against skopeo."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from conftest import need, ocibox_cmd, run
from ocibox import mediatypes as mt
from ocibox.image.layout import Layout
from ocibox.image.models import Platform

pytestmark = pytest.mark.peer


def digest_of(layout: Path, tag: str = "v1") -> str:
    return Layout.open(str(layout)).resolve(tag).digest


def blobs_of(layout: Path, tag: str = "v1") -> dict[str, bytes]:
    lay = Layout.open(str(layout))
    return {d: lay.blobs.read(d) for d in lay.reachable([lay.resolve(tag)])}


def copy(*args: str):
    return ocibox_cmd("copy", *args)


def test_layout_registry_layout_roundtrip(image_layout, any_registry, tmp_path, no_auth_files):
    dest = tmp_path / "back"
    first = copy(f"oci:{image_layout}:v1", any_registry.ref("team/app:v1"))
    assert "Copying blob" in first.stderr
    copy(f"oci:{image_layout}:v1", any_registry.ref("team/app:v1"))  # again: blobs skipped
    again = copy(f"oci:{image_layout}:v1", any_registry.ref("team/app:v1"))
    assert "already exists" in again.stderr and "done" not in again.stderr.split("Writing")[0]
    copy(any_registry.ref("team/app:v1"), f"oci:{dest}:v1")
    assert digest_of(dest) == digest_of(image_layout)
    assert blobs_of(dest) == blobs_of(image_layout)
    quiet = copy("-q", any_registry.ref("team/app:v1"), f"oci:{dest}:v2")
    assert quiet.stderr == "" and quiet.stdout == ""


def test_registry_to_registry_mount_and_across(image_layout, ocibox_registry, docker_registry, tmp_path,
                                               no_auth_files):
    copy(f"oci:{image_layout}:v1", docker_registry.ref("a/app:v1"))
    copy(docker_registry.ref("a/app:v1"), docker_registry.ref("b/app:v1"))  # same registry: mount
    copy(docker_registry.ref("b/app:v1"), ocibox_registry.ref("c/app:v1"))
    copy(ocibox_registry.ref("c/app:v1"), f"oci:{tmp_path}/out:v1")
    assert digest_of(tmp_path / "out") == digest_of(image_layout)


def test_skopeo_push_ocibox_pull_same_digests(image_layout, docker_registry, tmp_path, no_auth_files):
    skopeo = need("skopeo")
    run([skopeo, "copy", "-q", "--dest-tls-verify=false", f"oci:{image_layout}:v1",
         docker_registry.ref("sk/app:v1")])
    copy("-q", docker_registry.ref("sk/app:v1"), f"oci:{tmp_path}/ours:v1")
    run([skopeo, "copy", "-q", "--src-tls-verify=false", docker_registry.ref("sk/app:v1"),
         f"oci:{tmp_path}/theirs:v1"])
    assert digest_of(tmp_path / "ours") == digest_of(tmp_path / "theirs")
    assert blobs_of(tmp_path / "ours") == blobs_of(tmp_path / "theirs")


def test_ocibox_push_skopeo_pull_same_digests(image_layout, docker_registry, tmp_path, no_auth_files):
    skopeo = need("skopeo")
    copy("-q", f"oci:{image_layout}:v1", docker_registry.ref("ob/app:v1"))
    run([skopeo, "copy", "-q", "--src-tls-verify=false", docker_registry.ref("ob/app:v1"),
         f"oci:{tmp_path}/theirs:v1"])
    assert digest_of(tmp_path / "theirs") == digest_of(image_layout)
    inspected = json.loads(run([skopeo, "inspect", "--tls-verify=false",
                                docker_registry.ref("ob/app:v1")]).stdout)
    ours = json.loads(ocibox_cmd("inspect", docker_registry.ref("ob/app:v1")).stdout)
    for key in ("Digest", "Layers", "Architecture", "Os", "Created", "RepoTags"):
        assert ours[key] == inspected[key], key


def test_v2s2_both_ways_matches_skopeo(image_layout, docker_registry, tmp_path, no_auth_files):
    skopeo = need("skopeo")
    copy("-q", "--format", "v2s2", f"oci:{image_layout}:v1", docker_registry.ref("f/app:v1"))
    raw = json.loads(ocibox_cmd("inspect", "--raw", docker_registry.ref("f/app:v1")).stdout)
    assert raw["mediaType"] == mt.DOCKER_MANIFEST
    assert raw["config"]["mediaType"] == mt.DOCKER_CONFIG
    assert {x["mediaType"] for x in raw["layers"]} == {mt.DOCKER_LAYER_GZIP}
    # skopeo pulls the Docker image into a layout (converting to OCI): layers and config are the same blobs
    run([skopeo, "copy", "-q", "--src-tls-verify=false", docker_registry.ref("f/app:v1"),
         f"oci:{tmp_path}/theirs:v1"])
    copy("-q", docker_registry.ref("f/app:v1"), f"oci:{tmp_path}/ours:v1")
    ours, theirs = Layout.open(str(tmp_path / "ours")), Layout.open(str(tmp_path / "theirs"))
    a, b = ours.image("v1"), theirs.image("v1")
    assert a.manifest.config.digest == b.manifest.config.digest
    assert [x.digest for x in a.manifest.layers] == [x.digest for x in b.manifest.layers]
    assert [x.media_type for x in a.manifest.layers] == [x.media_type for x in b.manifest.layers]


def test_v2s2_conversion_gives_skopeos_digest(image_layout, tmp_path, no_auth_files):
    skopeo = need("skopeo")
    run([skopeo, "copy", "-q", "--format", "v2s2", f"oci:{image_layout}:v1", f"oci:{tmp_path}/sk:v1"])
    copy("-q", "--format", "v2s2", f"oci:{image_layout}:v1", f"oci:{tmp_path}/ob:v1")
    assert digest_of(tmp_path / "ob") == digest_of(tmp_path / "sk")


def test_preserve_digests_refuses_conversion(image_layout, ocibox_registry, no_auth_files):
    proc = ocibox_cmd("copy", "--preserve-digests", "--format", "v2s2", f"oci:{image_layout}:v1",
                      ocibox_registry.ref("p/app:v1"), check=False)
    assert proc.returncode != 0
    assert "would change the manifest digest" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_recompress_zstd(image_layout, tmp_path, no_auth_files):
    copy("-q", "--dest-compress-format", "zstd", f"oci:{image_layout}:v1", f"oci:{tmp_path}/z:v1")
    src, dst = Layout.open(str(image_layout)).image("v1"), Layout.open(str(tmp_path / "z")).image("v1")
    assert {x.media_type for x in dst.manifest.layers} == {mt.OCI_LAYER_ZSTD}
    assert dst.config.diff_ids == src.config.diff_ids
    assert dst.manifest.config.digest == src.manifest.config.digest
    # and back to gzip: the layer content (diff_ids) is unchanged
    copy("-q", "--dest-compress-format", "gzip", f"oci:{tmp_path}/z:v1", f"oci:{tmp_path}/g:v1")
    again = Layout.open(str(tmp_path / "g")).image("v1")
    assert {x.media_type for x in again.manifest.layers} == {mt.OCI_LAYER_GZIP}
    proc = ocibox_cmd("copy", "--preserve-digests", "--dest-compress-format", "zstd",
                      f"oci:{image_layout}:v1", f"oci:{tmp_path}/p:v1", check=False)
    assert proc.returncode != 0 and "would change its digest" in proc.stderr


@pytest.fixture
def multiarch_layout(tmp_path, busybox_rootfs) -> Path:
    """A layout whose tag 'multi' is an index of linux/amd64 and linux/arm64 images."""
    from ocibox.image.models import Descriptor, dump_json
    from ocibox.image.mutate import import_rootfs

    path = tmp_path / "multi"
    lay = Layout.init(str(path))
    entries = []
    for plat in (Platform("amd64", "linux"), Platform("arm64", "linux", variant="v8")):
        desc = import_rootfs(lay, plat.architecture, str(busybox_rootfs), platform=plat)
        entries.append({**desc.to_dict(), "platform": plat.to_dict()})
    index = dump_json({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": entries})
    lay.tag("multi", lay.put_json(mt.OCI_INDEX, index))
    assert isinstance(lay.read_manifest(Descriptor.of(mt.OCI_INDEX, index)), object)
    return path


def test_index_all_and_platform(multiarch_layout, any_registry, tmp_path, no_auth_files):
    lay = Layout.open(str(multiarch_layout))
    copy("-q", "--all", f"oci:{multiarch_layout}:multi", any_registry.ref("m/app:multi"))
    copy("-q", "--all", any_registry.ref("m/app:multi"), f"oci:{tmp_path}/all:multi")
    assert digest_of(tmp_path / "all", "multi") == lay.resolve("multi").digest
    assert blobs_of(tmp_path / "all", "multi") == blobs_of(multiarch_layout, "multi")
    copy("-q", "--platform", "linux/arm64", any_registry.ref("m/app:multi"), f"oci:{tmp_path}/one:arm")
    assert digest_of(tmp_path / "one", "arm") == lay.resolve("arm64").digest
    copy("-q", any_registry.ref("m/app:multi"), f"oci:{tmp_path}/host:x")  # the host's platform
    assert digest_of(tmp_path / "host", "x") == lay.resolve("amd64").digest
    proc = ocibox_cmd("copy", "--platform", "linux/s390x", any_registry.ref("m/app:multi"),
                      f"oci:{tmp_path}/none:x", check=False)
    assert proc.returncode != 0 and "no image for platform linux/s390x" in proc.stderr
    # --all with --format v2s2 converts every child and the index
    copy("-q", "--all", "--format", "v2s2", f"oci:{multiarch_layout}:multi", any_registry.ref("m/d:multi"))
    raw = json.loads(ocibox_cmd("inspect", "--raw", any_registry.ref("m/d:multi")).stdout)
    assert raw["mediaType"] == mt.DOCKER_MANIFEST_LIST
    assert {m["mediaType"] for m in raw["manifests"]} == {mt.DOCKER_MANIFEST}


def test_dir_roundtrip_and_skopeo_reads_it(image_layout, tmp_path, no_auth_files):
    skopeo = need("skopeo")
    copy("-q", f"oci:{image_layout}:v1", f"dir:{tmp_path}/d")
    assert (tmp_path / "d" / "version").read_text().startswith("Directory Transport Version")
    copy("-q", f"dir:{tmp_path}/d", f"oci:{tmp_path}/back:v1")
    assert digest_of(tmp_path / "back") == digest_of(image_layout)
    run([skopeo, "copy", "-q", f"dir:{tmp_path}/d", f"oci:{tmp_path}/sk:v1"])
    assert digest_of(tmp_path / "sk") == digest_of(image_layout)
    run([skopeo, "copy", "-q", f"oci:{image_layout}:v1", f"dir:{tmp_path}/skdir"])
    copy("-q", f"dir:{tmp_path}/skdir", f"oci:{tmp_path}/fromsk:v1")
    assert digest_of(tmp_path / "fromsk") == digest_of(image_layout)


def test_oci_archive_both_ways_with_skopeo(image_layout, tmp_path, no_auth_files):
    skopeo = need("skopeo")
    archive = tmp_path / "img.tar"
    copy("-q", f"oci:{image_layout}:v1", f"oci-archive:{archive}:v1")
    with tarfile.open(archive) as tf:
        assert {"oci-layout", "index.json"} <= set(tf.getnames())
    run([skopeo, "copy", "-q", f"oci-archive:{archive}:v1", f"oci:{tmp_path}/sk:v1"])
    assert digest_of(tmp_path / "sk") == digest_of(image_layout)
    run([skopeo, "copy", "-q", f"oci:{image_layout}:v1", f"oci-archive:{tmp_path}/sk.tar:v1"])
    copy("-q", f"oci-archive:{tmp_path}/sk.tar:v1", f"oci:{tmp_path}/ours:v1")
    assert digest_of(tmp_path / "ours") == digest_of(image_layout)
    assert not list(tmp_path.glob(".ocibox-*"))


def test_docker_archive_both_ways_with_skopeo(image_layout, tmp_path, no_auth_files):
    skopeo = need("skopeo")
    archive = tmp_path / "img.tar"
    copy("-q", f"oci:{image_layout}:v1", f"docker-archive:{archive}:example.com/app:v1")
    with tarfile.open(archive) as tf:
        entries = json.load(tf.extractfile("manifest.json"))
    assert entries[0]["RepoTags"] == ["example.com/app:v1"]
    src = Layout.open(str(image_layout)).image("v1")
    # skopeo (containers/image, what podman load uses) reads it: same config and layer content
    run([skopeo, "copy", "-q", f"docker-archive:{archive}", f"oci:{tmp_path}/sk:v1"])
    theirs = Layout.open(str(tmp_path / "sk")).image("v1")
    assert theirs.config.diff_ids == src.config.diff_ids
    # skopeo writes one (uncompressed layers, as docker save does); ocibox reads it
    run([skopeo, "copy", "-q", f"oci:{image_layout}:v1", f"docker-archive:{tmp_path}/sk.tar:x/y:z"])
    copy("-q", f"docker-archive:{tmp_path}/sk.tar:x/y:z", f"oci:{tmp_path}/ours:v1")
    copy("-q", f"docker-archive:{tmp_path}/sk.tar", f"oci:{tmp_path}/ours2:v1")
    ours = Layout.open(str(tmp_path / "ours")).image("v1")
    assert ours.config.diff_ids == src.config.diff_ids
    # our own archive back into a layout: uncompressed layers (as skopeo writes them), named by diff_id
    copy("-q", f"docker-archive:{archive}", f"oci:{tmp_path}/back:v1")
    back = Layout.open(str(tmp_path / "back")).image("v1")
    assert [x.digest for x in back.manifest.layers] == list(src.config.diff_ids)
    assert {x.media_type for x in back.manifest.layers} == {mt.OCI_LAYER}
    # with --preserve-digests the gzip layers go into the archive as they are: the very same blobs
    copy("-q", "--preserve-digests", f"oci:{image_layout}:v1", f"docker-archive:{tmp_path}/gz.tar:a/b:c")
    copy("-q", f"docker-archive:{tmp_path}/gz.tar", f"oci:{tmp_path}/gz:v1")
    gz = Layout.open(str(tmp_path / "gz")).image("v1")
    assert [x.digest for x in gz.manifest.layers] == [x.digest for x in src.manifest.layers]
    proc = ocibox_cmd("copy", f"docker-archive:{archive}:other:tag", f"oci:{tmp_path}/n:v1", check=False)
    assert proc.returncode != 0 and "no image tagged" in proc.stderr


def test_inspect_config_and_list_tags_and_delete(image_layout, any_registry, no_auth_files):
    copy("-q", f"oci:{image_layout}:v1", any_registry.ref("i/app:v1"))
    copy("-q", f"oci:{image_layout}:v1", any_registry.ref("i/app:v2"))
    config = json.loads(ocibox_cmd("inspect", "--config", any_registry.ref("i/app:v1")).stdout)
    assert config["rootfs"]["type"] == "layers"
    local = json.loads(ocibox_cmd("inspect", f"oci:{image_layout}:v1").stdout)
    assert local["Digest"] == digest_of(image_layout)
    tags = json.loads(ocibox_cmd("list-tags", any_registry.ref("i/app")).stdout)
    assert sorted(tags["Tags"]) == ["v1", "v2"]
    ocibox_cmd("delete", any_registry.ref("i/app:v1"))
    proc = ocibox_cmd("inspect", any_registry.ref("i/app:v1"), check=False)
    assert proc.returncode != 0 and "manifest unknown" in proc.stderr


def test_index_into_docker_archive_is_refused_cleanly(multiarch_layout, tmp_path):
    archive = tmp_path / "multi.tar"
    proc = ocibox_cmd("copy", "--all", f"oci:{multiarch_layout}:multi", f"docker-archive:{archive}", check=False)
    assert proc.returncode != 0 and "holds single images" in proc.stderr
    assert not archive.exists() and not list(tmp_path.glob(".tmp-*"))
    ocibox_cmd("copy", "-q", "--platform", "linux/arm64", f"oci:{multiarch_layout}:multi",
               f"docker-archive:{archive}")
    with tarfile.open(archive) as tf:
        assert len(json.load(tf.extractfile("manifest.json"))) == 1

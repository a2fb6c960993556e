"""Layer compression on copy, as skopeo does it: registries get compressed layers,
docker archives uncompressed ones; --dest-compress, --dest-decompress,
--dest-compress-level, and --preserve-digests refusing what would change a digest."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tarfile
from pathlib import Path

import pytest

from conftest import need, ocibox_cmd, run
from ocibox import mediatypes as mt
from ocibox.image.layout import Layout
from ocibox.image.mutate import import_rootfs

pytestmark = pytest.mark.peer


@pytest.fixture
def plain_layout(tmp_path, busybox_rootfs) -> Path:
    """An OCI layout whose image v1 has one uncompressed layer (application/vnd.oci.image.layer.v1.tar)."""
    (busybox_rootfs / "etc" / "motd").write_text("uncompressed\n")
    (busybox_rootfs / "data").write_bytes(os.urandom(1 << 16) * 8)  # compressible, not trivially
    path = tmp_path / "plain"
    import_rootfs(Layout.init(str(path)), "v1", str(busybox_rootfs), compression="none")
    assert {x.media_type for x in Layout.open(str(path)).image("v1").manifest.layers} == {mt.OCI_LAYER}
    return path


def raw_manifest(ref: str) -> dict:
    return json.loads(ocibox_cmd("inspect", "--raw", ref).stdout)


def uncompressed_digest(layout: Path, digest: str) -> str:
    with gzip.open(Layout.open(str(layout)).blobs.path(digest), "rb") as f:
        h = hashlib.sha256()
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def tree(root: Path) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            out[rel] = ("-> " + os.readlink(p)) if p.is_symlink() else (p.read_bytes() if p.is_file() else "dir")
    return out


def test_push_compresses_like_skopeo(plain_layout, docker_registry, tmp_path, no_auth_files):
    skopeo, umoci = need("skopeo"), need("umoci")
    src = Layout.open(str(plain_layout)).image("v1")
    run([skopeo, "copy", "-q", "--dest-tls-verify=false", f"oci:{plain_layout}:v1", docker_registry.ref("sk/app:v1")])
    ocibox_cmd("copy", "-q", f"oci:{plain_layout}:v1", docker_registry.ref("ob/app:v1"))
    theirs, ours = raw_manifest(docker_registry.ref("sk/app:v1")), raw_manifest(docker_registry.ref("ob/app:v1"))
    for m in (theirs, ours):
        assert m["mediaType"] == mt.OCI_MANIFEST
        assert [x["mediaType"] for x in m["layers"]] == [mt.OCI_LAYER_GZIP]
        assert m["config"]["digest"] == src.manifest.config.digest  # diff_ids unchanged
    # each tool pulls the other's push; the gzip layers hold the very bytes the diff_id names
    ocibox_cmd("copy", "-q", docker_registry.ref("sk/app:v1"), f"oci:{tmp_path}/from-sk:v1")
    run([skopeo, "copy", "-q", "--src-tls-verify=false", docker_registry.ref("ob/app:v1"),
         f"oci:{tmp_path}/from-ob:v1"])
    for layout, m in ((tmp_path / "from-sk", theirs), (tmp_path / "from-ob", ours)):
        assert uncompressed_digest(layout, m["layers"][0]["digest"]) == src.config.diff_ids[0]
    trees = []
    for name in ("from-sk", "from-ob"):
        bundle = tmp_path / f"bundle-{name}"
        run([umoci, "unpack", "--rootless", "--image", f"{tmp_path / name}:v1", str(bundle)])
        trees.append(tree(bundle / "rootfs"))
    assert trees[0] == trees[1]
    assert trees[0]["etc/motd"] == b"uncompressed\n"


def test_preserve_digests_keeps_uncompressed_and_refuses_flags(plain_layout, ocibox_registry, tmp_path,
                                                               no_auth_files):
    lay = Layout.open(str(plain_layout))
    ocibox_cmd("copy", "-q", "--preserve-digests", f"oci:{plain_layout}:v1", ocibox_registry.ref("p/app:v1"))
    m = raw_manifest(ocibox_registry.ref("p/app:v1"))  # as skopeo: the layer goes as it is
    assert [x["mediaType"] for x in m["layers"]] == [mt.OCI_LAYER]
    for flags in (["--dest-compress"], ["--dest-compress-format", "zstd"]):
        proc = ocibox_cmd("copy", "--preserve-digests", *flags, f"oci:{plain_layout}:v1",
                          f"oci:{tmp_path}/x:v1", check=False)
        assert proc.returncode != 0 and "would change its digest" in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) <= 2 and "Traceback" not in proc.stderr
    gz = tmp_path / "gz"
    ocibox_cmd("copy", "-q", "--dest-compress", f"oci:{plain_layout}:v1", f"oci:{gz}:v1")
    proc = ocibox_cmd("copy", "--preserve-digests", "--dest-decompress", f"oci:{gz}:v1",
                      f"oci:{tmp_path}/y:v1", check=False)
    assert proc.returncode != 0 and "from gzip to uncompressed would change its digest" in proc.stderr
    assert lay.resolve("v1").digest != Layout.open(str(gz)).resolve("v1").digest


def test_dest_compress_decompress_and_level(plain_layout, tmp_path, no_auth_files):
    src = Layout.open(str(plain_layout)).image("v1")
    sizes = {}
    for level in ("1", "9"):
        out = tmp_path / f"l{level}"
        ocibox_cmd("copy", "-q", "--dest-compress", "--dest-compress-level", level, f"oci:{plain_layout}:v1",
                   f"oci:{out}:v1")
        img = Layout.open(str(out)).image("v1")
        assert [x.media_type for x in img.manifest.layers] == [mt.OCI_LAYER_GZIP]
        assert uncompressed_digest(out, img.manifest.layers[0].digest) == src.config.diff_ids[0]
        sizes[level] = img.manifest.layers[0].size
    assert sizes["9"] < sizes["1"] < src.manifest.layers[0].size
    # and back: decompressed, the layer is the source's blob again and so is the manifest
    ocibox_cmd("copy", "-q", "--dest-decompress", f"oci:{tmp_path}/l9:v1", f"dir:{tmp_path}/plain-dir")
    ocibox_cmd("copy", "-q", f"dir:{tmp_path}/plain-dir", f"oci:{tmp_path}/back:v1")
    assert Layout.open(str(tmp_path / "back")).resolve("v1").digest == Layout.open(
        str(plain_layout)).resolve("v1").digest
    # zstd for a Docker schema2 image: refused in one line (as skopeo 1.9), unless converted to OCI
    ocibox_cmd("copy", "-q", "--format", "v2s2", f"oci:{plain_layout}:v1", f"dir:{tmp_path}/docker")
    proc = ocibox_cmd("copy", "--dest-compress-format", "zstd", f"dir:{tmp_path}/docker", f"dir:{tmp_path}/z",
                      check=False)
    assert proc.returncode != 0 and "cannot name zstd layers" in proc.stderr and "--format oci" in proc.stderr
    assert not (tmp_path / "z" / "manifest.json").exists()
    ocibox_cmd("copy", "-q", "--format", "oci", "--dest-compress-format", "zstd", f"dir:{tmp_path}/docker",
               f"dir:{tmp_path}/z")
    z = json.loads((tmp_path / "z" / "manifest.json").read_bytes())
    assert z["mediaType"] == mt.OCI_MANIFEST and [x["mediaType"] for x in z["layers"]] == [mt.OCI_LAYER_ZSTD]
    proc = ocibox_cmd("copy", "--format", "v2s2", "--dest-compress-format", "zstd", f"dir:{tmp_path}/docker",
                      f"dir:{tmp_path}/z2", check=False)
    assert proc.returncode != 0 and "cannot carry zstd" in proc.stderr
    for bad in (["--dest-compress", "--dest-decompress"], ["--dest-compress-level", "12"]):
        proc = ocibox_cmd("copy", *bad, f"oci:{plain_layout}:v1", f"oci:{tmp_path}/bad:v1", check=False)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr


def test_docker_archive_gets_uncompressed_layers_as_skopeo_writes(image_layout, tmp_path, no_auth_files):
    skopeo = need("skopeo")
    ours, theirs = tmp_path / "ours.tar", tmp_path / "theirs.tar"
    ocibox_cmd("copy", "-q", f"oci:{image_layout}:v1", f"docker-archive:{ours}:x/app:v1")
    run([skopeo, "copy", "-q", f"oci:{image_layout}:v1", f"docker-archive:{theirs}:x/app:v1"])

    def layer_digests(archive: Path) -> list[str]:
        with tarfile.open(archive) as tf:
            entry = json.load(tf.extractfile("manifest.json"))[0]
            return ["sha256:" + hashlib.sha256(tf.extractfile(name).read()).hexdigest() for name in entry["Layers"]]

    diff_ids = Layout.open(str(image_layout)).image("v1").config.diff_ids
    assert layer_digests(ours) == layer_digests(theirs) == list(diff_ids)


def test_corrupt_source_blob_is_refused_on_every_path(plain_layout, tmp_path, no_auth_files):
    lay = Layout.open(str(plain_layout))
    layer = lay.image("v1").manifest.layers[0]
    path = Path(lay.blobs.path(layer.digest))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    for flags, dest in (([], f"oci:{tmp_path}/a:v1"), ([], f"dir:{tmp_path}/b"),
                        (["--dest-compress"], f"oci:{tmp_path}/c:v1"), (["--dest-compress"], f"dir:{tmp_path}/d")):
        proc = ocibox_cmd("copy", "-q", *flags, f"oci:{plain_layout}:v1", dest, check=False)
        assert proc.returncode != 0 and "digest" in proc.stderr.lower() and "Traceback" not in proc.stderr, \
            (flags, dest, proc.stderr)
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()
    assert not (tmp_path / "b" / "manifest.json").exists() and not (tmp_path / "d" / "manifest.json").exists()


def test_compression_is_reproducible_whatever_the_source(plain_layout, ocibox_registry, tmp_path, no_auth_files):
    """The same layer compresses to the same blob from a file and from a registry's stream
    (other chunk boundaries): a second push finds its blobs present."""
    ocibox_cmd("copy", "-q", "--preserve-digests", f"oci:{plain_layout}:v1", ocibox_registry.ref("u/app:v1"))
    ocibox_cmd("copy", "-q", "--dest-compress", f"oci:{plain_layout}:v1", f"oci:{tmp_path}/a:v1")
    ocibox_cmd("copy", "-q", "--dest-compress", ocibox_registry.ref("u/app:v1"), f"oci:{tmp_path}/b:v1")
    a, b = (Layout.open(str(tmp_path / x)).image("v1").manifest.layers for x in "ab")
    assert [x.digest for x in a] == [x.digest for x in b]
    first = ocibox_cmd("copy", f"oci:{plain_layout}:v1", ocibox_registry.ref("g/app:v1"))
    again = ocibox_cmd("copy", f"oci:{plain_layout}:v1", ocibox_registry.ref("g/app:v1"))
    assert "compressed with gzip" in first.stderr
    assert "blobs copied" in again.stderr and "(0 blobs copied, 2 present)" in again.stderr, again.stderr


def test_blob_info_cache_skips_compressing_again(plain_layout, docker_registry, tmp_path, no_auth_files):
    """As skopeo's blob info cache: a layer compressed for one push is not read again when
    the repository has its compressed form."""
    lay = Layout.open(str(plain_layout))
    layer = lay.image("v1").manifest.layers[0]
    ocibox_cmd("copy", "-q", f"oci:{plain_layout}:v1", docker_registry.ref("c/app:v1"))
    assert (no_auth_files / ".cache" / "ocibox" / "blob-info.sqlite").is_file()
    path = Path(lay.blobs.path(layer.digest))
    path.chmod(0o644)
    path.write_bytes(b"\0" * layer.size)  # if it were read now, the copy would fail its digest check
    again = ocibox_cmd("copy", f"oci:{plain_layout}:v1", docker_registry.ref("c/app:v1"))
    assert "skipped: already exists" in again.stderr and "compressed with" not in again.stderr
    proc = ocibox_cmd("copy", "--dest-compress-level", "9", f"oci:{plain_layout}:v1",
                      docker_registry.ref("c/app:v9"), check=False)  # a level: no cache, the layer is read
    assert proc.returncode != 0 and "digest mismatch" in proc.stderr


def test_docker_tar_layers_are_gzipped_for_a_registry_as_skopeo_does(plain_layout, docker_registry, tmp_path,
                                                                      no_auth_files):
    """A docker-archive's uncompressed layers (the Docker tar type) become Docker gzip layers."""
    skopeo = need("skopeo")
    archive = tmp_path / "plain.tar"
    run([skopeo, "copy", "-q", f"oci:{plain_layout}:v1", f"docker-archive:{archive}:x/plain:v1"])
    run([skopeo, "copy", "-q", "--dest-tls-verify=false", f"docker-archive:{archive}", docker_registry.ref("sk/d:v1")])
    ocibox_cmd("copy", "-q", f"docker-archive:{archive}", docker_registry.ref("ob/d:v1"))
    theirs, ours = raw_manifest(docker_registry.ref("sk/d:v1")), raw_manifest(docker_registry.ref("ob/d:v1"))
    for m in (theirs, ours):
        assert m["mediaType"] == mt.DOCKER_MANIFEST
        assert [x["mediaType"] for x in m["layers"]] == [mt.DOCKER_LAYER_GZIP]
    assert ours["config"]["digest"] == theirs["config"]["digest"]
    ocibox_cmd("copy", "-q", docker_registry.ref("ob/d:v1"), f"oci:{tmp_path}/back:v1")
    back = Layout.open(str(tmp_path / "back")).image("v1")
    assert uncompressed_digest(tmp_path / "back", back.manifest.layers[0].digest) == back.config.diff_ids[0]


def test_compressing_for_a_registry_needs_no_temporary_file(plain_layout, any_registry, tmp_path, no_auth_files,
                                                              monkeypatch):
    """The compressed layer streams into the upload (its digest learnt at the end):
    with nowhere to put a temporary file the push still works, and the blob is the
    one a copy to a layout makes."""
    monkeypatch.setenv("TMPDIR", str(tmp_path / "absent"))
    ocibox_cmd("copy", "-q", "--dest-compress", f"oci:{plain_layout}:v1", f"oci:{tmp_path}/local:v1")
    first = ocibox_cmd("copy", f"oci:{plain_layout}:v1", any_registry.ref("s/app:v1"))
    assert "compressed with gzip" in first.stderr
    pushed = raw_manifest(any_registry.ref("s/app:v1"))
    local = Layout.open(str(tmp_path / "local")).image("v1").manifest
    assert [x["digest"] for x in pushed["layers"]] == [x.digest for x in local.layers]
    ocibox_cmd("copy", "-q", any_registry.ref("s/app:v1"), f"oci:{tmp_path}/back:v1")  # verified on the way
    assert not (tmp_path / "absent").exists()


def test_compressing_into_a_dir_writes_the_blob_once(plain_layout, tmp_path, no_auth_files, monkeypatch):
    """dir: names a compressed layer after its digest once written, in place: no temporary
    file elsewhere, nothing left behind."""
    monkeypatch.setenv("TMPDIR", str(tmp_path / "absent"))
    ocibox_cmd("copy", "-q", "--dest-compress", f"oci:{plain_layout}:v1", f"dir:{tmp_path}/d")
    ocibox_cmd("copy", "-q", "--dest-compress", f"oci:{plain_layout}:v1", f"oci:{tmp_path}/o:v1")
    m = json.loads((tmp_path / "d" / "manifest.json").read_bytes())
    layer = m["layers"][0]
    assert layer["mediaType"] == mt.OCI_LAYER_GZIP
    assert layer["digest"] == Layout.open(str(tmp_path / "o")).image("v1").manifest.layers[0].digest
    blob = (tmp_path / "d" / layer["digest"].split(":")[1]).read_bytes()
    assert len(blob) == layer["size"] and "sha256:" + hashlib.sha256(blob).hexdigest() == layer["digest"]
    assert not [p for p in os.listdir(tmp_path / "d") if p.startswith(".")]
    ocibox_cmd("copy", "-q", f"dir:{tmp_path}/d", f"oci:{tmp_path}/back:v1")  # verified on the way

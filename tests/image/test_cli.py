"""``ocibox layout ...`` driven as a user would, through ``python -m ocibox.cli``.

Every error must be one ``ocibox: `` line (plus at most a ``  hint: `` line),
a non-zero exit, no traceback, and a layout left exactly as it was.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest
from treecmp import assert_same_tree, tree_hash

from ocibox import digest as _digest
from ocibox import mediatypes as mt
from ocibox.image.layout import Layout
from ocibox.image.models import Descriptor, ImageConfig, Manifest, Platform

# --- helpers -----------------------------------------------------------------


def assert_error(proc, *fragments: str) -> str:
    """The failure is one ``ocibox:`` line (plus an optional hint) naming ``fragments``."""
    err = proc.stderr
    assert proc.returncode != 0, f"expected failure, got success:\n{proc.stdout}{err}"
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert lines and lines[0].startswith("ocibox: "), err
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("  hint: ")), err
    for f in fragments:
        assert f in err, f"{f!r} not in {err!r}"
    return lines[0]


def inspect_json(ocibox, image: str) -> dict:
    return json.loads(ocibox("layout", "inspect", "--json", "--image", image).stdout)


def raw_config(layout: Path, tag: str) -> dict:
    lay = Layout.open(str(layout))
    return json.loads(lay.read_json_blob(lay.image(tag).manifest.config, "config"))


def raw_manifest(layout: Path, tag: str) -> dict:
    lay = Layout.open(str(layout))
    return json.loads(lay.read_json_blob(lay.resolve(tag), "manifest"))


def tar_bytes(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, *, linkname: str = "", mode: int = 0o644):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.mtime = kind, linkname, mode, 1_700_000_000
    return info


def store_image(layout: Path, tag: str, layers: list[bytes], *,
                config_media_type: str = mt.OCI_CONFIG,
                manifest_media_type: str = mt.OCI_MANIFEST) -> Descriptor:
    """Hand-craft an image of uncompressed tar ``layers``, bypassing every ocibox check."""
    lay = Layout.open(str(layout))
    descs = []
    for data in layers:
        d, n = lay.blobs.put(data)
        descs.append(Descriptor(mt.OCI_LAYER, d, n))
    config = ImageConfig.new(Platform.host())
    config.data["rootfs"]["diff_ids"] = [d.digest for d in descs]
    config_desc = lay.put_json(config_media_type, config.to_json())
    manifest = Manifest(config=config_desc, layers=tuple(descs))
    desc = lay.put_json(manifest_media_type, manifest.to_json())
    lay.tag(tag, desc)
    return desc


@pytest.fixture
def layout(tmp_path, ocibox) -> Path:
    path = tmp_path / "oci"
    ocibox("layout", "init", "--layout", str(path))
    return path


@pytest.fixture
def image(layout, busybox_rootfs, ocibox) -> str:
    ref = f"{layout}:v1"
    ocibox("layout", "import", "--image", ref, str(busybox_rootfs))
    return ref


# --- init, new, import ---------------------------------------------------------


def test_help_lists_every_command(ocibox):
    out = ocibox("layout", "--help").stdout
    for name in ("init", "new", "import", "config", "ls", "tag", "rm", "gc", "inspect",
                 "unpack", "repack", "validate"):
        assert name in out


def test_init(tmp_path, ocibox):
    path = tmp_path / "oci"
    ocibox("layout", "init", "--layout", str(path))
    assert json.loads((path / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    assert ocibox("layout", "ls", "--layout", str(path)).stdout == ""
    before = tree_hash(str(path))
    assert_error(ocibox("layout", "init", "--layout", str(path), check=False), str(path))
    assert tree_hash(str(path)) == before


def test_new(layout, ocibox):
    ocibox("layout", "new", "--image", f"{layout}:empty")
    info = inspect_json(ocibox, f"{layout}:empty")
    assert info["layers"] == [] and info["tag"] == "empty"
    assert raw_config(layout, "empty")["rootfs"] == {"type": "layers", "diff_ids": []}
    assert ocibox("layout", "ls", "--layout", str(layout)).stdout == "empty\n"
    ocibox("layout", "new", "--image", f"{layout}:arm", "--platform", "linux/arm64")
    assert raw_config(layout, "arm")["architecture"] == "arm64"


def test_new_needs_a_tag(layout, ocibox):
    assert_error(ocibox("layout", "new", "--image", str(layout), check=False), "DIR:TAG")


def test_new_bad_tag_stores_nothing(layout, ocibox):
    before = tree_hash(str(layout))
    assert_error(ocibox("layout", "new", "--image", f"{layout}:bad..tag", check=False), "bad..tag")
    assert tree_hash(str(layout)) == before


@pytest.mark.parametrize("args", [
    ["layout", "bogus"], ["layout", "init"], ["layout", "tag", "--image", "x:y", "-x"],
    ["layout", "import", "--compress", "lz4", "--image", "a:b", "c"], ["nogroup"],
])
def test_usage_errors_are_one_line(ocibox, args):
    proc = ocibox(*args, check=False)
    assert_error(proc)
    assert proc.returncode == 2


def test_new_in_missing_layout(tmp_path, ocibox):
    assert_error(ocibox("layout", "new", "--image", f"{tmp_path}/none:t", check=False),
                 "no such image layout")
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize("form", ["dir", "tar", "tar.gz"])
def test_import_and_unpack(tmp_path, layout, busybox_rootfs, ocibox, form):
    if form == "dir":
        source = str(busybox_rootfs)
    else:
        source = str(tmp_path / f"rootfs.{form}")
        with tarfile.open(source, "w:gz" if form == "tar.gz" else "w",
                          format=tarfile.PAX_FORMAT) as tf:
            tf.add(busybox_rootfs, arcname=".")
    ocibox("layout", "import", "--image", f"{layout}:t", source)
    info = inspect_json(ocibox, f"{layout}:t")
    assert [layer["mediaType"] for layer in info["layers"]] == [mt.OCI_LAYER_GZIP]
    assert info["history"][-1]["created_by"].startswith("ocibox layout import")
    bundle = tmp_path / "bundle"
    ocibox("layout", "unpack", "--image", f"{layout}:t", str(bundle))
    assert (bundle / "config.json").is_file()
    # tar headers hold whole seconds of mtime; the root's own mtime moved as we wrote into it
    assert_same_tree(str(busybox_rootfs), str(bundle / "rootfs"), resolution="s")
    ocibox("layout", "validate", str(layout))


@pytest.mark.parametrize("compress,media_type", [("none", mt.OCI_LAYER), ("zstd", mt.OCI_LAYER_ZSTD)])
def test_import_compressions(tmp_path, layout, busybox_rootfs, ocibox, compress, media_type):
    ocibox("layout", "import", "--compress", compress, "--history.created_by", "made by hand",
           "--image", f"{layout}:t", str(busybox_rootfs))
    info = inspect_json(ocibox, f"{layout}:t")
    assert info["layers"][0]["mediaType"] == media_type
    assert info["history"][-1]["created_by"] == "made by hand"
    ocibox("layout", "unpack", "--image", f"{layout}:t", str(tmp_path / "b"))
    assert_same_tree(str(busybox_rootfs), str(tmp_path / "b" / "rootfs"), resolution="s")


def test_import_stacks_layers(tmp_path, image, ocibox):
    extra = tmp_path / "extra"
    (extra / "opt").mkdir(parents=True)
    (extra / "opt" / "tool").write_text("tool\n")
    ocibox("layout", "import", "--image", image, str(extra))
    info = inspect_json(ocibox, image)
    assert len(info["layers"]) == 2 and len(info["history"]) == 2
    ocibox("layout", "unpack", "--image", image, str(tmp_path / "b"))
    assert (tmp_path / "b" / "rootfs" / "opt" / "tool").read_text() == "tool\n"
    assert (tmp_path / "b" / "rootfs" / "bin" / "busybox").is_file()


def test_import_missing_source(layout, ocibox, tmp_path):
    before = tree_hash(str(layout))
    assert_error(ocibox("layout", "import", "--image", f"{layout}:t", str(tmp_path / "nope"),
                        check=False), "nope")
    assert tree_hash(str(layout)) == before


def test_import_hostile_tar_changes_nothing(layout, ocibox, tmp_path):
    evil = tmp_path / "evil.tar"
    evil.write_bytes(tar_bytes([(member("ok"), b"fine"), (member("../../escape"), b"x")]))
    before = tree_hash(str(layout))
    assert_error(ocibox("layout", "import", "--image", f"{layout}:t", str(evil), check=False),
                 "../../escape")
    assert tree_hash(str(layout)) == before


def test_import_bad_tag_stores_nothing(layout, busybox_rootfs, ocibox):
    before = tree_hash(str(layout))
    assert_error(ocibox("layout", "import", "--image", f"{layout}:-bad", str(busybox_rootfs),
                        check=False), "-bad")
    assert tree_hash(str(layout)) == before


def test_import_not_a_tar(layout, ocibox, tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(os.urandom(3000))
    before = tree_hash(str(layout))
    assert_error(ocibox("layout", "import", "--image", f"{layout}:t", str(junk), check=False))
    assert tree_hash(str(layout)) == before


# --- config ----------------------------------------------------------------------


def test_config_every_flag(layout, image, ocibox):
    ocibox("layout", "config", "--image", image,
           "--config.user", "1000:1000",
           "--config.env", "PATH=/bin", "--config.env", "A=1",
           "--config.entrypoint", "/bin/sh", "--config.entrypoint", "-c",
           "--config.cmd", "echo hi",
           "--config.workingdir", "/root",
           "--config.label", "org.example.a=1", "--config.label", "b=two=2",
           "--config.exposedports", "80", "--config.exposedports", "53/udp",
           "--config.volume", "/data",
           "--config.stopsignal", "SIGINT",
           "--author", "Jane <jane@example.org>",
           "--created", "2020-01-02T03:04:05Z",
           "--os", "linux", "--architecture", "arm64",
           "--manifest.annotation", "org.opencontainers.image.title=box",
           "--history.created_by", "config by test", "--history.comment", "a comment",
           "--history.author", "hist author", "--history.created", "2021-01-01T00:00:00Z")
    # the platform changed to arm64, so read the blobs directly rather than by host platform
    lay = Layout.open(str(layout))
    manifest = json.loads(lay.read_json_blob(lay.resolve("v1"), "manifest"))
    cfg = json.loads(lay.blobs.read(manifest["config"]["digest"]))
    c = cfg["config"]
    assert c["User"] == "1000:1000"
    assert c["Env"] == ["PATH=/bin", "A=1"]
    assert c["Entrypoint"] == ["/bin/sh", "-c"]
    assert c["Cmd"] == ["echo hi"]
    assert c["WorkingDir"] == "/root"
    assert c["Labels"] == {"org.example.a": "1", "b": "two=2"}
    assert c["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert c["Volumes"] == {"/data": {}}
    assert c["StopSignal"] == "SIGINT"
    assert cfg["author"] == "Jane <jane@example.org>"
    assert cfg["created"] == "2020-01-02T03:04:05Z"
    assert (cfg["os"], cfg["architecture"]) == ("linux", "arm64")
    assert manifest["annotations"] == {"org.opencontainers.image.title": "box"}
    assert cfg["history"][-1] == {"created": "2021-01-01T00:00:00Z", "created_by": "config by test",
                                  "author": "hist author", "comment": "a comment",
                                  "empty_layer": True}
    assert len(cfg["history"]) == 2 and len(cfg["rootfs"]["diff_ids"]) == 1
    assert len(manifest["layers"]) == 1
    info = json.loads(ocibox("layout", "inspect", "--json", "--platform", "linux/arm64",
                             "--image", image).stdout)
    assert info["platform"] == "linux/arm64"


def test_config_env_replaces_same_key(layout, image, ocibox):
    ocibox("layout", "config", "--image", image, "--config.env", "A=1", "--config.env", "B=2")
    ocibox("layout", "config", "--image", image, "--config.env", "A=3")
    assert raw_config(layout, "v1")["config"]["Env"] == ["B=2", "A=3"]


def test_config_tag_keeps_original(layout, image, ocibox):
    before = raw_manifest(layout, "v1")
    ocibox("layout", "config", "--image", image, "--tag", "v2", "--config.cmd", "sh")
    assert raw_manifest(layout, "v1") == before
    assert raw_config(layout, "v2")["config"]["Cmd"] == ["sh"]
    assert "Cmd" not in raw_config(layout, "v1")["config"]
    assert raw_manifest(layout, "v2")["layers"] == before["layers"]
    assert ocibox("layout", "ls", "--layout", str(layout)).stdout == "v1\nv2\n"


@pytest.mark.parametrize("field,key", [
    ("config.labels", "Labels"), ("config.env", "Env"), ("config.exposedports", "ExposedPorts"),
    ("config.volume", "Volumes"), ("config.entrypoint", "Entrypoint"), ("config.cmd", "Cmd"),
])
def test_config_clear(layout, image, ocibox, field, key):
    ocibox("layout", "config", "--image", image, "--config.label", "a=1", "--config.env", "A=1",
           "--config.exposedports", "80", "--config.volume", "/v", "--config.entrypoint", "sh",
           "--config.cmd", "x")
    ocibox("layout", "config", "--image", image, "--clear", field)
    c = raw_config(layout, "v1")["config"]
    assert key not in c
    assert len(c) == 5  # the other five stay


def test_config_clear_then_set(layout, image, ocibox):
    ocibox("layout", "config", "--image", image, "--config.label", "a=1")
    ocibox("layout", "config", "--image", image, "--clear", "config.labels", "--config.label", "b=2")
    assert raw_config(layout, "v1")["config"]["Labels"] == {"b": "2"}


def test_config_clear_annotations(layout, image, ocibox):
    ocibox("layout", "config", "--image", image, "--manifest.annotation", "a=1")
    assert raw_manifest(layout, "v1")["annotations"] == {"a": "1"}
    ocibox("layout", "config", "--image", image, "--clear", "manifest.annotations")
    assert "annotations" not in raw_manifest(layout, "v1")


def test_config_history(layout, image, ocibox):
    ocibox("layout", "config", "--image", image, "--config.user", "1")
    h = raw_config(layout, "v1")["history"]
    assert len(h) == 2 and h[-1]["empty_layer"] is True
    assert h[-1]["created_by"] == "ocibox layout config"
    ocibox("layout", "config", "--image", image, "--config.user", "2", "--no-history")
    assert len(raw_config(layout, "v1")["history"]) == 2


@pytest.mark.parametrize("args,fragment", [
    (["--clear", "config.nonsense"], "config.nonsense"),
    (["--config.env", "NOEQUALS"], "NOEQUALS"),
    (["--config.label", "nolabel"], "nolabel"),
    (["--config.exposedports", "http"], "http"),
    (["--config.exposedports", "70000/tcp"], "70000"),
])
def test_config_bad_values(layout, image, ocibox, args, fragment):
    before = tree_hash(str(layout))
    assert_error(ocibox("layout", "config", "--image", image, *args, check=False), fragment)
    assert tree_hash(str(layout)) == before


# --- ls, tag, rm, gc, inspect ----------------------------------------------------


def test_tag_ls_rm_gc(layout, image, ocibox):
    ocibox("layout", "tag", "--image", image, "v2")
    ocibox("layout", "tag", "--image", image, "latest")
    assert ocibox("layout", "ls", "--layout", str(layout)).stdout.split() == ["latest", "v1", "v2"]
    assert raw_manifest(layout, "v2") == raw_manifest(layout, "v1")
    # the default tag is latest
    assert inspect_json(ocibox, str(layout))["digest"] == inspect_json(ocibox, image)["digest"]
    ocibox("layout", "config", "--image", image, "--config.cmd", "sh")  # v1 moves on
    ocibox("layout", "rm", "--image", f"{layout}:v2")
    ocibox("layout", "rm", "--image", f"{layout}:latest")
    assert ocibox("layout", "ls", "--layout", str(layout)).stdout == "v1\n"
    blobs_before = set(os.listdir(layout / "blobs" / "sha256"))
    dry = ocibox("layout", "gc", "--dry-run", "--layout", str(layout)).stdout.split()
    # the old manifest and the old config; the layer is shared, and the import
    # into a new tag stored no empty image of its own
    assert len(dry) == 2, dry
    assert set(os.listdir(layout / "blobs" / "sha256")) == blobs_before
    assert ocibox("layout", "gc", "--layout", str(layout)).stdout == ""
    after = set(os.listdir(layout / "blobs" / "sha256"))
    assert after == blobs_before - {d.split(":")[1] for d in dry}
    ocibox("layout", "validate", str(layout))
    assert ocibox("layout", "gc", "--dry-run", "--layout", str(layout)).stdout == ""


def test_tag_and_rm_errors(layout, image, ocibox):
    before = tree_hash(str(layout))
    assert_error(ocibox("layout", "tag", "--image", f"{layout}:nope", "x", check=False),
                 "'nope'", "v1")
    assert_error(ocibox("layout", "tag", "--image", image, "bad tag", check=False), "bad tag")
    assert_error(ocibox("layout", "tag", "--image", image, "-x", check=False))
    assert_error(ocibox("layout", "rm", "--image", f"{layout}:nope", check=False), "'nope'")
    assert_error(ocibox("layout", "rm", "--image", str(layout), check=False))
    assert tree_hash(str(layout)) == before


def test_inspect_text(layout, image, ocibox):
    ocibox("layout", "config", "--image", image, "--config.user", "nobody", "--config.env", "A=1",
           "--config.cmd", "sh", "--config.exposedports", "8080", "--config.label", "k=v",
           "--author", "me")
    out = ocibox("layout", "inspect", "--image", image).stdout
    info = inspect_json(ocibox, image)
    assert f"Image:     {image}" in out
    assert f"Digest:    {info['digest']}" in out
    assert "Author:    me" in out
    assert "User:      nobody" in out
    assert 'Cmd:       ["sh"]' in out
    assert "Env:       A=1" in out and "Port:      8080/tcp" in out and "Label:     k=v" in out
    assert info["layers"][0]["digest"] in out
    assert "(no layer)" in out and "History:" in out
    assert "in 1 layers" in out


def test_inspect_json(layout, image, ocibox):
    info = inspect_json(ocibox, image)
    lay = Layout.open(str(layout))
    assert info["digest"] == lay.resolve("v1").digest
    assert info["mediaType"] == mt.OCI_MANIFEST
    assert info["size"] == sum(x["size"] for x in info["layers"]) + \
        lay.image("v1").manifest.config.size
    assert set(info) >= {"tag", "created", "platform", "config", "layers", "history", "annotations"}


# --- unpack and repack ---------------------------------------------------------------


def test_unpack_bundle(tmp_path, layout, image, ocibox):
    ocibox("layout", "config", "--image", image, "--config.entrypoint", "/bin/sh",
           "--config.env", "PATH=/bin", "--config.workingdir", "/root")
    bundle = tmp_path / "bundle"
    ocibox("layout", "unpack", "--image", image, str(bundle))
    spec = json.loads((bundle / "config.json").read_text())
    assert spec["process"]["args"] == ["/bin/sh"]
    assert spec["process"]["cwd"] == "/root"
    assert "PATH=/bin" in spec["process"]["env"]
    assert spec["root"]["path"] == "rootfs"
    assert (bundle / "rootfs" / "bin" / "busybox").is_file()
    assert os.readlink(bundle / "rootfs" / "bin" / "sh") == "busybox"
    assert (bundle / "rootfs" / "tmp").stat().st_mode & 0o7777 == 0o1777


def _change_rootfs(rootfs: Path) -> None:
    (rootfs / "etc" / "hostname").write_text("box\n")                 # add
    (rootfs / "etc" / "passwd").write_text("root:x:0:0::/:/bin/sh\n")  # modify
    (rootfs / "bin" / "false").unlink()                               # delete
    shutil.rmtree(rootfs / "root")                                    # delete a dir
    (rootfs / "etc" / "group").chmod(0o600)                           # metadata only
    os.chown(rootfs / "etc" / "passwd", 0, 42)
    (rootfs / "opt" / "deep" / "er").mkdir(parents=True)              # new tree
    (rootfs / "opt" / "deep" / "er" / "file").write_bytes(os.urandom(5000))
    os.link(rootfs / "opt" / "deep" / "er" / "file", rootfs / "opt" / "hardlink")
    (rootfs / "bin" / "newlink").symlink_to("/bin/busybox")
    # a dir removed and made anew: opaque. The old one lives on until the new one
    # exists, so the new one cannot reuse its inode number
    (rootfs / "dev").rename(rootfs / "dev.old")
    (rootfs / "dev").mkdir()
    shutil.rmtree(rootfs / "dev.old")
    (rootfs / "dev" / "null-ish").write_text("")
    shutil.rmtree(rootfs / "proc")                                    # dir replaced by a file
    (rootfs / "proc").write_text("not a dir\n")
    (rootfs / "sys").rmdir()                                          # dir replaced by a symlink
    (rootfs / "sys").symlink_to("tmp")


def test_repack_and_unpack_again(tmp_path, layout, image, ocibox):
    bundle = tmp_path / "bundle"
    ocibox("layout", "unpack", "--image", image, str(bundle))
    rootfs = bundle / "rootfs"
    (rootfs / "dev" / "old").write_text("hidden by the opaque dir\n")
    ocibox("layout", "repack", "--image", image, str(bundle))
    _change_rootfs(rootfs)
    ocibox("layout", "repack", "--image", f"{layout}:v2", "--history.comment", "changes",
           str(bundle))
    info = inspect_json(ocibox, f"{layout}:v2")
    assert len(info["layers"]) == 3
    assert info["history"][-1]["comment"] == "changes"
    assert len(inspect_json(ocibox, image)["layers"]) == 2
    fresh = tmp_path / "fresh"
    ocibox("layout", "unpack", "--image", f"{layout}:v2", str(fresh))
    assert_same_tree(str(rootfs), str(fresh / "rootfs"), resolution="s")
    assert not (fresh / "rootfs" / "dev" / "old").exists()
    ocibox("layout", "validate", str(layout))


def test_repack_layer_holds_only_changes(tmp_path, layout, image, ocibox):
    bundle = tmp_path / "bundle"
    ocibox("layout", "unpack", "--image", image, str(bundle))
    _change_rootfs(bundle / "rootfs")
    ocibox("layout", "repack", "--image", image, "--compress", "none", str(bundle))
    lay = Layout.open(str(layout))
    top = lay.image("v1").manifest.layers[-1]
    assert top.media_type == mt.OCI_LAYER
    with lay.blobs.open(top.digest) as f, tarfile.open(fileobj=f, mode="r|") as tf:
        names = {m.name.removeprefix("./") for m in tf}
    assert "bin/.wh.false" in names and ".wh.root" in names
    assert "dev/.wh..wh..opq" in names and "dev/null-ish" in names
    assert "etc/hostname" in names and "etc/passwd" in names and "etc/group" in names
    assert "bin/busybox" not in names and "bin/sh" not in names
    # nothing inside a deleted directory gets a whiteout of its own
    assert not any(n.startswith("root/") for n in names)


def test_second_repack_holds_only_what_changed_after_the_first(tmp_path, layout, image, ocibox):
    bundle = tmp_path / "bundle"
    ocibox("layout", "unpack", "--image", image, str(bundle))
    _change_rootfs(bundle / "rootfs")
    ocibox("layout", "repack", "--image", image, str(bundle))
    (bundle / "rootfs" / "etc" / "motd").write_text("after the first repack\n")
    ocibox("layout", "repack", "--image", image, "--compress", "none", str(bundle))
    lay = Layout.open(str(layout))
    layers = lay.image("v1").manifest.layers
    assert len(layers) == 3
    with lay.blobs.open(layers[-1].digest) as f, tarfile.open(fileobj=f, mode="r|") as tf:
        names = [m.name.removeprefix("./") for m in tf]
    assert names == ["etc", "etc/motd"]


def test_repack_nothing_changed(tmp_path, layout, image, ocibox):
    bundle = tmp_path / "bundle"
    ocibox("layout", "unpack", "--image", image, str(bundle))
    ocibox("layout", "repack", "--image", image, str(bundle))
    fresh = tmp_path / "fresh"
    ocibox("layout", "unpack", "--image", image, str(fresh))
    assert_same_tree(str(bundle / "rootfs"), str(fresh / "rootfs"), resolution="s")


def test_repack_errors(tmp_path, layout, image, ocibox):
    before = tree_hash(str(layout))
    assert_error(ocibox("layout", "repack", "--image", image, str(tmp_path / "nobundle"),
                        check=False), "nobundle")
    plain = tmp_path / "plain"
    (plain / "rootfs").mkdir(parents=True)
    assert_error(ocibox("layout", "repack", "--image", image, str(plain), check=False),
                 "ocibox.json")
    bundle = tmp_path / "bundle"
    ocibox("layout", "unpack", "--image", image, str(bundle))
    assert_error(ocibox("layout", "repack", "--no-history", "--image", image, str(bundle),
                        check=False), "history")
    assert tree_hash(str(layout)) == before


# --- validate ----------------------------------------------------------------------------


def test_validate(layout, image, ocibox):
    proc = ocibox("layout", "validate", str(layout))
    assert "valid" in proc.stdout
    ocibox("layout", "validate", "--quick", str(layout))


def test_validate_finds_damage(layout, image, ocibox):
    lay = Layout.open(str(layout))
    layer = lay.image("v1").manifest.layers[0]
    path = lay.blobs.path(layer.digest)
    data = bytearray(open(path, "rb").read())
    data[-20] ^= 0xFF
    Path(path).write_bytes(bytes(data))
    proc = ocibox("layout", "validate", str(layout), check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert layer.digest in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("ocibox: ")


def test_validate_not_a_layout(tmp_path, ocibox):
    proc = ocibox("layout", "validate", str(tmp_path), check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("ocibox: ")


# --- bad input: one line, non-zero, layout untouched -------------------------------------


def _every_reader(ocibox, layout: Path, tag: str, tmp_path: Path, *fragments: str) -> None:
    """Every command that reads ``tag`` fails cleanly and leaves the layout as it was."""
    before = tree_hash(str(layout))
    ref = f"{layout}:{tag}"
    bundle = tmp_path / "bundle-should-not-exist"
    for args in (["inspect", "--image", ref], ["inspect", "--json", "--image", ref],
                 ["unpack", "--image", ref, str(bundle)],
                 ["config", "--image", ref, "--config.user", "x"],
                 ["config", "--image", ref, "--tag", "other", "--config.user", "x"]):
        assert_error(ocibox("layout", *args, check=False), *fragments)
        assert not bundle.exists(), f"{args}: left a bundle behind"
        assert tree_hash(str(layout)) == before, f"{args}: changed the layout"


def test_missing_tag(tmp_path, layout, image, ocibox):
    _every_reader(ocibox, layout, "nope", tmp_path, "'nope'", "v1")


def test_malformed_index_json(tmp_path, layout, image, ocibox):
    (layout / "index.json").write_text('{"schemaVersion": 2, "manifests": [')
    _every_reader(ocibox, layout, "v1", tmp_path, "index.json")
    before = tree_hash(str(layout))
    for args in (["ls", "--layout", str(layout)], ["gc", "--layout", str(layout)],
                 ["tag", "--image", f"{layout}:v1", "x"], ["rm", "--image", f"{layout}:v1"],
                 ["new", "--image", f"{layout}:x"]):
        assert_error(ocibox("layout", *args, check=False), "index.json")
        assert tree_hash(str(layout)) == before, args


def test_missing_oci_layout_file(tmp_path, layout, image, ocibox):
    (layout / "oci-layout").unlink()
    _every_reader(ocibox, layout, "v1", tmp_path, "oci-layout")


def test_truncated_layer_blob(tmp_path, layout, image, ocibox):
    lay = Layout.open(str(layout))
    layer = lay.image("v1").manifest.layers[0]
    path = Path(lay.blobs.path(layer.digest))
    path.write_bytes(path.read_bytes()[: layer.size // 2])
    before = tree_hash(str(layout))
    bundle = tmp_path / "b"
    assert_error(ocibox("layout", "unpack", "--image", f"{layout}:v1", str(bundle), check=False),
                 layer.digest[:19])
    assert not bundle.exists()
    assert tree_hash(str(layout)) == before


def test_truncated_config_blob(tmp_path, layout, image, ocibox):
    lay = Layout.open(str(layout))
    config = lay.image("v1").manifest.config
    path = Path(lay.blobs.path(config.digest))
    path.write_bytes(path.read_bytes()[:-5])
    _every_reader(ocibox, layout, "v1", tmp_path, "size mismatch")


def test_layer_blob_with_wrong_digest(tmp_path, layout, image, ocibox):
    lay = Layout.open(str(layout))
    layer = lay.image("v1").manifest.layers[0]
    # a valid gzip tar of the same size as the real layer, but other bytes
    other = gzip.compress(tar_bytes([(member("bin/evil"), b"not busybox")]), mtime=0)
    path = Path(lay.blobs.path(layer.digest))
    path.write_bytes(other + b"\0" * (layer.size - len(other)))
    before = tree_hash(str(layout))
    bundle = tmp_path / "b"
    proc = ocibox("layout", "unpack", "--image", f"{layout}:v1", str(bundle), check=False)
    assert_error(proc, "digest mismatch")
    assert not bundle.exists()
    assert tree_hash(str(layout)) == before


def test_manifest_blob_with_wrong_digest(tmp_path, layout, image, ocibox):
    lay = Layout.open(str(layout))
    desc = lay.resolve("v1")
    path = Path(lay.blobs.path(desc.digest))
    path.write_bytes(path.read_bytes().replace(b"layers", b"LAYERS"))
    _every_reader(ocibox, layout, "v1", tmp_path, "digest mismatch", desc.digest)


def test_manifest_with_unknown_media_type(tmp_path, layout, image, ocibox):
    lay = Layout.open(str(layout))
    desc = lay.resolve("v1")
    odd = Descriptor("application/vnd.example.thing.v1+json", desc.digest, desc.size)
    lay.tag("odd", odd)
    _every_reader(ocibox, layout, "odd", tmp_path, "application/vnd.example.thing.v1+json")


def test_malformed_manifest_json(tmp_path, layout, image, ocibox):
    lay = Layout.open(str(layout))
    for i, junk in enumerate([b"{not json", b"[]", b'{"schemaVersion": 2}',
                              b'{"schemaVersion": 2, "config": {}, "layers": []}']):
        desc = lay.put_json(mt.OCI_MANIFEST, junk)
        lay.tag(f"junk{i}", desc)
        _every_reader(ocibox, layout, f"junk{i}", tmp_path, desc.digest[:19])


def test_artifact_is_not_unpacked(tmp_path, layout, ocibox):
    store_image(layout, "art", [], config_media_type="application/vnd.example.artifact+json")
    _every_reader(ocibox, layout, "art", tmp_path, "artifact")


def test_unpack_into_non_empty_dir(tmp_path, layout, image, ocibox):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "precious").write_text("keep\n")
    before = tree_hash(str(layout))
    assert_error(ocibox("layout", "unpack", "--image", image, str(bundle), check=False),
                 str(bundle), "not empty")
    assert os.listdir(bundle) == ["precious"]
    assert (bundle / "precious").read_text() == "keep\n"
    assert tree_hash(str(layout)) == before


def test_unpack_into_file(tmp_path, layout, image, ocibox):
    target = tmp_path / "file"
    target.write_text("keep\n")
    assert_error(ocibox("layout", "unpack", "--image", image, str(target), check=False))
    assert target.read_text() == "keep\n"


def test_unpack_into_empty_dir_is_fine(tmp_path, layout, image, ocibox):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    ocibox("layout", "unpack", "--image", image, str(bundle))
    assert (bundle / "rootfs" / "bin" / "busybox").is_file()


@pytest.mark.parametrize("entries,named", [
    ([("ok", tarfile.REGTYPE, ""), ("../escape", tarfile.REGTYPE, "")], "../escape"),
    ([("a/../../escape", tarfile.REGTYPE, "")], "a/../../escape"),
    ([("./../../../escape", tarfile.DIRTYPE, "")], "./../../../escape"),
    ([("link", tarfile.LNKTYPE, "../../escape")], "link"),
    ([("..", tarfile.DIRTYPE, "")], ".."),
    ([(".wh...", tarfile.REGTYPE, "")], ".wh..."),
    # lexically above the root, whatever "link" is
    ([("link", tarfile.SYMTYPE, "/"), ("link/../../escape", tarfile.REGTYPE, "")],
     "link/../../escape"),
])
def test_hostile_layer(tmp_path, layout, ocibox, entries, named):
    (tmp_path / "escape").write_text("outside, before\n")
    tar = tar_bytes([(member(n, k, linkname=ln), b"x" if k == tarfile.REGTYPE else None)
                     for n, k, ln in entries])
    store_image(layout, "evil", [tar])
    before_outside = tree_hash(str(tmp_path))
    work = tmp_path / "work"
    work.mkdir()
    bundle = work / "bundle"
    proc = ocibox("layout", "unpack", "--image", f"{layout}:evil", str(bundle), check=False)
    line = assert_error(proc)
    assert repr(named) in line or named in line, line
    assert not bundle.exists()
    assert os.listdir(work) == []
    assert (tmp_path / "escape").read_text() == "outside, before\n"
    after = tree_hash(str(tmp_path))
    after.pop("work"), before_outside.pop("work", None)
    assert after == before_outside


@pytest.mark.parametrize("entries", [
    # symlinks are resolved as if the rootfs were "/": these all land inside it
    [("link", tarfile.SYMTYPE, "../../.."), ("link/escape", tarfile.REGTYPE, "")],
    [("link", tarfile.SYMTYPE, "/"), ("link/escape", tarfile.REGTYPE, "")],
    [("abs", tarfile.SYMTYPE, "/tmp/../.."), ("abs/escape", tarfile.DIRTYPE, "")],
    [("/escape", tarfile.REGTYPE, "")],
    [("d", tarfile.DIRTYPE, ""), ("d/up", tarfile.SYMTYPE, "../.."),
     ("d/up/escape", tarfile.REGTYPE, "")],
])
def test_symlink_tricks_stay_inside(tmp_path, layout, ocibox, entries):
    (tmp_path / "escape").write_text("outside, before\n")
    tar = tar_bytes([(member(n, k, linkname=ln, mode=0o755), b"x" if k == tarfile.REGTYPE else None)
                     for n, k, ln in entries])
    store_image(layout, "tricky", [tar])
    work = tmp_path / "work"
    work.mkdir()
    before = tree_hash(str(tmp_path))
    bundle = work / "bundle"
    ocibox("layout", "unpack", "--image", f"{layout}:tricky", str(bundle))
    assert (tmp_path / "escape").read_text() == "outside, before\n"
    assert (bundle / "rootfs" / "escape").exists()
    after = {k: v for k, v in tree_hash(str(tmp_path)).items() if not k.startswith("work")}
    assert after == {k: v for k, v in before.items() if not k.startswith("work")}


def test_whiteout_under_a_file_that_replaced_a_dir(tmp_path, layout, ocibox):
    """umoci 0.4 repack writes this: "d" (a dir, now a file) then "d/.wh.x" for the old
    child. The whiteout names nothing that exists, so it removes nothing; umoci's own
    unpack accepts it, and ocibox must too."""
    lower = tar_bytes([(member("d", tarfile.DIRTYPE, mode=0o755), None),
                       (member("d/x"), b"lower")])
    upper = tar_bytes([(member("d"), b"now a file"), (member("d/.wh.x", mode=0), b"")])
    store_image(layout, "t", [lower, upper])
    bundle = tmp_path / "b"
    ocibox("layout", "unpack", "--image", f"{layout}:t", str(bundle))
    assert (bundle / "rootfs" / "d").read_bytes() == b"now a file"


def test_whiteout_under_a_missing_dir(tmp_path, layout, ocibox):
    store_image(layout, "t", [tar_bytes([(member("f"), b"x"), (member("no/such/.wh.x", mode=0), b"")])])
    ocibox("layout", "unpack", "--image", f"{layout}:t", str(tmp_path / "b"))
    assert sorted(os.listdir(tmp_path / "b" / "rootfs")) == ["f"]


def test_parent_dir_mtime_kept_when_a_layer_omits_the_dir(tmp_path, layout, ocibox):
    """The upper layer adds etc/motd, replaces etc/old and whites out etc/gone without an
    entry for etc itself (umoci's repack writes such layers): etc keeps the mtime the
    lower layer gave it, as umoci's unpack keeps it, rather than the time of the unpack."""
    etc = member("etc", tarfile.DIRTYPE, mode=0o755)
    etc.mtime = 1_600_000_000
    lower = tar_bytes([(etc, None), (member("etc/old"), b"old"), (member("etc/gone"), b"x")])
    upper = tar_bytes([(member("etc/motd"), b"hi"), (member("etc/old"), b"new"),
                       (member("etc/.wh.gone", mode=0), b"")])
    store_image(layout, "t", [lower, upper])
    ocibox("layout", "unpack", "--image", f"{layout}:t", str(tmp_path / "b"))
    assert (tmp_path / "b" / "rootfs" / "etc").stat().st_mtime == 1_600_000_000


def test_layer_diff_id_mismatch(tmp_path, layout, ocibox):
    desc = store_image(layout, "t", [tar_bytes([(member("f"), b"data")])])
    lay = Layout.open(str(layout))
    manifest = lay.read_manifest(desc)
    config = ImageConfig(dict(lay.image("t").config.data))
    config.data["rootfs"] = {"type": "layers", "diff_ids": [_digest.of_bytes(b"other")]}
    cdesc = lay.put_json(mt.OCI_CONFIG, config.to_json())
    m2 = Manifest(config=cdesc, layers=manifest.layers)
    lay.tag("t", lay.put_json(mt.OCI_MANIFEST, m2.to_json()))
    before = tree_hash(str(layout))
    bundle = tmp_path / "b"
    assert_error(ocibox("layout", "unpack", "--image", f"{layout}:t", str(bundle), check=False),
                 "diff_id")
    assert not bundle.exists()
    assert tree_hash(str(layout)) == before


def test_layer_with_wrong_compression(tmp_path, layout, ocibox):
    lay = Layout.open(str(layout))
    tar = tar_bytes([(member("f"), b"data")])
    d, n = lay.blobs.put(tar)
    config = ImageConfig.new(Platform.host())
    config.data["rootfs"]["diff_ids"] = [d]
    cdesc = lay.put_json(mt.OCI_CONFIG, config.to_json())
    m = Manifest(config=cdesc, layers=(Descriptor(mt.OCI_LAYER_GZIP, d, n),))
    lay.tag("t", lay.put_json(mt.OCI_MANIFEST, m.to_json()))
    assert_error(ocibox("layout", "unpack", "--image", f"{layout}:t", str(tmp_path / "b"),
                        check=False), "gzip")
    assert not (tmp_path / "b").exists()


def test_unknown_layer_media_type(tmp_path, layout, ocibox):
    lay = Layout.open(str(layout))
    d, n = lay.blobs.put(b"whatever")
    config = ImageConfig.new(Platform.host())
    config.data["rootfs"]["diff_ids"] = [d]
    cdesc = lay.put_json(mt.OCI_CONFIG, config.to_json())
    m = Manifest(config=cdesc, layers=(Descriptor("application/x-weird", d, n),))
    lay.tag("t", lay.put_json(mt.OCI_MANIFEST, m.to_json()))
    assert_error(ocibox("layout", "unpack", "--image", f"{layout}:t", str(tmp_path / "b"),
                        check=False), "application/x-weird")
    assert not (tmp_path / "b").exists()

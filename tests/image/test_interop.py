"""ocibox against the peers: skopeo, umoci and oci-image-tool read what ocibox
writes, and ocibox unpacks what they write into the very tree umoci unpacks.

Trees are compared by ``treecmp``: paths, types, modes, owners, symlink
targets, hardlink groups, xattrs, contents and mtimes of regular files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from treecmp import assert_same_tree, scan

from conftest import need, run
from ocibox import mediatypes as mt
from ocibox.image.compression import open_reader
from ocibox.image.layout import Layout

pytestmark = [pytest.mark.peer, pytest.mark.root]


def ocibox(*args: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "ocibox.cli", *args])


def ocibox_unpack(layout: Path, tag: str, bundle: Path) -> Path:
    ocibox("layout", "unpack", "--image", f"{layout}:{tag}", str(bundle))
    return bundle / "rootfs"


def umoci_unpack(layout: Path, tag: str, bundle: Path) -> Path:
    run([need("umoci"), "unpack", "--image", f"{layout}:{tag}", str(bundle)])
    return bundle / "rootfs"


def assert_unpacks_alike(layout: Path, tag: str, work: Path, *, mtimes: str = "files") -> None:
    """ocibox and umoci unpack ``tag`` into the same rootfs."""
    ours = ocibox_unpack(layout, tag, work / f"ocibox-{tag}")
    theirs = umoci_unpack(layout, tag, work / f"umoci-{tag}")
    assert_same_tree(str(theirs), str(ours), mtimes=mtimes)


def copy_tree(src: Path, dst: Path) -> None:
    """Copy the contents of ``src`` into the existing directory ``dst``, keeping everything."""
    run(["cp", "-a", f"{src}/.", str(dst)])


# --- the changes made between layers ---------------------------------------------


def round1(r: Path) -> None:
    """Every kind of entry a layer can carry."""
    (r / "a" / "b" / "c").mkdir(parents=True)
    (r / "a" / "file1").write_text("one\n")
    (r / "a" / "b" / "file2").write_bytes(os.urandom(100_000))
    (r / "a" / "b" / "c" / "deep").write_text("deep\n")
    os.link(r / "a" / "file1", r / "a" / "hl1")
    os.link(r / "a" / "file1", r / "hl-top")
    (r / "a" / "rel").symlink_to("file1")
    (r / "a" / "abs").symlink_to("/bin/busybox")
    (r / "a" / "dangling").symlink_to("/nonexistent/target")
    (r / "a" / "dirlink").symlink_to("b")
    os.mkfifo(r / "a" / "fifo", 0o640)
    suid = r / "a" / "suid"
    suid.write_bytes(b"#!/bin/sh\nexit 0\n")
    os.chown(suid, 0, 0)
    suid.chmod(0o4755)
    (r / "a" / "sgid").mkdir()
    (r / "a" / "sgid").chmod(0o2775)
    (r / "a" / "sticky").mkdir()
    (r / "a" / "sticky").chmod(0o1777)
    owned = r / "a" / "owned"
    owned.write_text("mine\n")
    os.chown(owned, 1000, 1000)
    nobody = r / "a" / "nobody"
    nobody.write_text("theirs\n")
    os.chown(nobody, 65534, 65534)
    nobody.chmod(0o640)
    (r / "a" / "ownedlink").symlink_to("owned")
    os.chown(r / "a" / "ownedlink", 7, 8, follow_symlinks=False)
    os.setxattr(r / "a" / "file1", "user.note", b"hello")
    os.setxattr(r / "a" / "file1", "user.bin", b"\x00\xff\x10")
    os.setxattr(r / "a" / "b", "user.dir", b"yes")
    (r / "a" / "empty").write_bytes(b"")
    (r / "a" / "sp ace").write_text("space\n")
    (r / "a" / "ünïcödé").write_text("utf-8\n")
    old = r / "a" / "old"
    old.write_text("old\n")
    os.utime(old, ns=(1_500_000_000_123_456_789, 1_500_000_000_123_456_789))
    (r / "gone" / "sub").mkdir(parents=True)
    (r / "gone" / "sub" / "f").write_text("gone\n")
    (r / "todir").write_text("a file, later a dir\n")
    (r / "tofile" / "x").mkdir(parents=True)
    (r / "tofile" / "x" / "y").write_text("a dir, later a file\n")
    (r / "opaque" / "sub").mkdir(parents=True)
    for name in ("x", "y", "sub/z"):
        (r / "opaque" / name).write_text(f"lower {name}\n")
    (r / "etc" / "motd").write_text("hello\n")


def round2(r: Path) -> None:
    """Deletions, replacements, an opaque directory and metadata-only changes."""
    (r / "a" / "b" / "file2").unlink()
    shutil.rmtree(r / "gone")
    (r / "todir").unlink()
    (r / "todir" / "inside").mkdir(parents=True)
    (r / "todir" / "inside" / "f").write_text("now a dir\n")
    shutil.rmtree(r / "tofile")
    (r / "tofile").write_text("now a file\n")
    # removed and made anew: umoci and ocibox emit .wh..wh..opq. The old one lives
    # on until the new one exists, so its inode number cannot be reused.
    (r / "opaque").rename(r / "opaque.old")
    (r / "opaque").mkdir()
    (r / "opaque" / "new").write_text("upper\n")
    shutil.rmtree(r / "opaque.old")
    os.link(r / "a" / "b" / "c" / "deep", r / "a" / "hl2")
    (r / "hl-top").unlink()
    (r / "a" / "file1").chmod(0o600)
    os.setxattr(r / "a" / "file1", "user.note", b"changed")
    os.removexattr(r / "a" / "file1", "user.bin")
    (r / "a" / "dangling").unlink()
    (r / "a" / "dangling").symlink_to("file1")
    os.chown(r / "a" / "owned", 1001, 1002)
    os.mknod(r / "a" / "null", 0o666 | 0o020000, os.makedev(1, 3))
    (r / "new" / "x" / "y").mkdir(parents=True)
    (r / "new" / "x" / "y" / "z").write_text("z\n")
    (r / "bin" / "false").unlink()
    (r / "etc" / "motd").write_text("changed\n")


def round3(r: Path) -> None:
    """Bring back what was deleted, and change things deleted or replaced before."""
    (r / "gone").mkdir()
    (r / "gone" / "back").write_text("back again\n")
    (r / "a" / "fifo").unlink()
    (r / "a" / "suid").write_bytes(b"#!/bin/sh\nexit 1\n")
    (r / "a" / "suid").chmod(0o4755)
    (r / "a" / "sp ace").rename(r / "a" / "renamed")
    (r / "opaque" / "new").unlink()
    (r / "opaque" / "x").write_text("x again\n")
    (r / "tofile").unlink()
    (r / "tofile").mkdir()
    shutil.rmtree(r / "a" / "sticky")
    (r / "a" / "b").chmod(0o700)
    os.setxattr(r / "a" / "b", "user.dir", b"no")


ROUNDS = (round1, round2, round3)


# --- (a) peers read what ocibox writes -----------------------------------------------


def test_skopeo_inspects_ocibox_layout(layout_with_image):
    skopeo = need("skopeo")
    info = json.loads(run([skopeo, "inspect", f"oci:{layout_with_image}:v1"]).stdout)
    lay = Layout.open(str(layout_with_image))
    image = lay.image("v1")
    assert info["Digest"] == image.descriptor.digest
    assert info["Layers"] == [d.digest for d in image.manifest.layers]
    assert (info["Os"], info["Architecture"]) == (image.config.platform.os,
                                                  image.config.platform.architecture)
    config = json.loads(run([skopeo, "inspect", "--config", f"oci:{layout_with_image}:v1"]).stdout)
    assert config["config"]["Entrypoint"] == ["/bin/sh"]
    assert config["config"]["WorkingDir"] == "/root"
    assert config["rootfs"]["diff_ids"] == image.config.diff_ids
    raw = run([skopeo, "inspect", "--raw", f"oci:{layout_with_image}:v1"]).stdout
    assert raw.encode() == lay.blobs.read(image.descriptor.digest)


def test_skopeo_copies_ocibox_layout(tmp_path, layout_with_image):
    skopeo = need("skopeo")
    other = tmp_path / "copy"
    run([skopeo, "copy", f"oci:{layout_with_image}:v1", f"oci:{other}:v1"])
    ocibox("layout", "validate", str(other))
    a = ocibox_unpack(layout_with_image, "v1", tmp_path / "a")
    b = ocibox_unpack(other, "v1", tmp_path / "b")
    assert_same_tree(str(a), str(b))
    # skopeo keeps the compressed blobs, so the image is the very same
    assert Layout.open(str(other)).resolve("v1").digest == \
        Layout.open(str(layout_with_image)).resolve("v1").digest


def test_umoci_unpacks_ocibox_layout(tmp_path, layout_with_image):
    assert_unpacks_alike(layout_with_image, "v1", tmp_path)
    ours = json.loads((tmp_path / "ocibox-v1" / "config.json").read_text())
    theirs = json.loads((tmp_path / "umoci-v1" / "config.json").read_text())
    for key in ("args", "cwd"):
        assert ours["process"][key] == theirs["process"][key], key
    # umoci adds HOME from the image's /etc/passwd; runc sets it at exec time anyway
    theirs_env = [e for e in theirs["process"]["env"] if not e.startswith("HOME=")]
    assert ours["process"]["env"] == theirs_env


def test_oci_image_tool_validates_ocibox_layout(tmp_path, layout_with_image, busybox_rootfs):
    tool = need("oci-image-tool")
    # its real CLI: --type image (a layout), --ref name=TAG
    proc = run([tool, "validate", "--type", "image", "--ref", "name=v1", str(layout_with_image)])
    assert "Validation succeeded" in proc.stdout + proc.stderr
    # a repacked image with a zstd layer and a tagged second image
    bundle = tmp_path / "bundle"
    ocibox_unpack(layout_with_image, "v1", bundle)
    round1(bundle / "rootfs")
    ocibox("layout", "repack", "--compress", "none", "--image", f"{layout_with_image}:v2",
           str(bundle))
    for tag in ("v1", "v2"):
        run([tool, "validate", "--type", "image", "--ref", f"name={tag}", str(layout_with_image)])


# --- (b) ocibox reads what the peers write ------------------------------------------------


@pytest.fixture
def umoci_image(tmp_path, busybox_rootfs) -> Path:
    """An image umoci made in four layers: busybox, then round1..round3 (tags r0..r3)."""
    umoci = need("umoci")
    layout = tmp_path / "umoci-made"
    run([umoci, "init", "--layout", str(layout)])
    run([umoci, "new", "--image", f"{layout}:base"])
    bundle = tmp_path / "umoci-bundle"
    run([umoci, "unpack", "--image", f"{layout}:base", str(bundle)])
    rootfs = bundle / "rootfs"
    copy_tree(busybox_rootfs, rootfs)
    run([umoci, "repack", "--refresh-bundle", "--image", f"{layout}:r0", str(bundle)])
    for i, change in enumerate(ROUNDS, 1):
        change(rootfs)
        run([umoci, "repack", "--refresh-bundle", "--image", f"{layout}:r{i}", str(bundle)])
    return layout


@pytest.mark.parametrize("tag", ["r0", "r1", "r2", "r3"])
def test_ocibox_unpacks_umoci_layers(tmp_path, umoci_image, tag):
    assert_unpacks_alike(umoci_image, tag, tmp_path)


def test_directory_mtimes_match_umoci(tmp_path, umoci_image):
    """A layer that adds to a directory without an entry for the directory itself
    leaves the directory's mtime as the lower layer set it: umoci restores it after
    writing the child, so an unpack does not depend on when it ran."""
    assert_unpacks_alike(umoci_image, "r3", tmp_path, mtimes="all")


def test_umoci_layers_carry_what_we_compare(tmp_path, umoci_image):
    """The umoci-made image really has the hard cases in it (else the comparison proves little)."""
    rootfs = ocibox_unpack(umoci_image, "r3", tmp_path / "b")
    tree = scan(str(rootfs))
    e = tree.entries
    assert e["a/suid"].mode == 0o4755 and e["a/sgid"].mode == 0o2775
    assert (e["a/owned"].uid, e["a/owned"].gid) == (1001, 1002)
    assert (e["a/ownedlink"].uid, e["a/ownedlink"].gid) == (7, 8)
    assert ("user.note", b"changed") in e["a/file1"].xattrs
    assert e["a/fifo" if "a/fifo" in e else "a/null"].kind in ("fifo", "chardev")
    assert e["tofile"].kind == "dir" and e["todir"].kind == "dir"
    assert set(os.listdir(rootfs / "opaque")) == {"x"}
    assert frozenset({"a/file1", "a/hl1"}) in tree.links
    assert frozenset({"a/b/c/deep", "a/hl2"}) in tree.links
    assert e["a/old"].mtime_ns == 1_500_000_000_123_456_789 or \
        e["a/old"].mtime_ns // 10**9 == 1_500_000_000
    Layout.open(str(umoci_image))  # and it is a layout ocibox accepts
    ocibox("layout", "validate", str(umoci_image))


def layer_names(layout: Path, tag: str) -> list[str]:
    """Entry names of the top layer of ``tag``."""
    lay = Layout.open(str(layout))
    top = lay.image(tag).manifest.layers[-1]
    with lay.blobs.open(top.digest) as f, \
            tarfile.open(fileobj=open_reader(f, mt.layer_compression(top.media_type)),
                         mode="r|") as tf:
        return [m.name.removeprefix("./") for m in tf]


def test_umoci_replaced_dir_hides_lower_contents(tmp_path, umoci_image):
    """umoci 0.4 marks a dir removed and made anew not with .wh..wh..opq but with a
    whiteout per old child; either way ocibox must hide the old contents."""
    names = layer_names(umoci_image, "r2")
    assert "opaque/.wh..wh..opq" in names or \
        {"opaque/.wh.x", "opaque/.wh.y", "opaque/.wh.sub"} <= set(names), names
    rootfs = ocibox_unpack(umoci_image, "r2", tmp_path / "b")
    assert sorted(os.listdir(rootfs / "opaque")) == ["new"]


def test_umoci_whiteouts_under_a_dir_made_a_file(umoci_image):
    """umoci 0.4 writes "tofile" (now a file) and then "tofile/.wh.x" for its old child:
    a whiteout whose parent is no longer a directory, which ocibox must take as a no-op."""
    names = layer_names(umoci_image, "r2")
    assert "tofile" in names
    assert "tofile/.wh.x" in names


@pytest.mark.parametrize("compress", ["gzip", "zstd"])
def test_skopeo_made_layouts(tmp_path, umoci_image, compress):
    skopeo = need("skopeo")
    made = tmp_path / "skopeo-made"
    args = [skopeo, "copy"]
    if compress == "zstd":
        args += ["--dest-compress-format", "zstd"]
    run([*args, f"oci:{umoci_image}:r3", f"oci:{made}:r3"])
    ocibox("layout", "validate", str(made))
    image = Layout.open(str(made)).image("r3")
    if compress == "zstd":
        assert {d.media_type for d in image.manifest.layers} == {mt.OCI_LAYER_ZSTD}
        # umoci 0.4 cannot read zstd layers: compare with umoci's unpack of the source
        ours = ocibox_unpack(made, "r3", tmp_path / "ours")
        theirs = umoci_unpack(umoci_image, "r3", tmp_path / "theirs")
        assert_same_tree(str(theirs), str(ours))
    else:
        assert_unpacks_alike(made, "r3", tmp_path)


def test_skopeo_copy_of_ocibox_layout_in_zstd(tmp_path, layout_with_image):
    skopeo = need("skopeo")
    made = tmp_path / "zstd"
    run([skopeo, "copy", "--dest-compress-format", "zstd", f"oci:{layout_with_image}:v1",
         f"oci:{made}:v1"])
    a = ocibox_unpack(layout_with_image, "v1", tmp_path / "a")
    b = ocibox_unpack(made, "v1", tmp_path / "b")
    assert_same_tree(str(a), str(b))


# --- (c) umoci reads what ocibox repacks ---------------------------------------------


@pytest.fixture
def ocibox_repacked(tmp_path, layout_with_image) -> tuple[Path, Path]:
    """ocibox repacks of round1..round3 over the busybox image (tags r1..r3), and the bundle."""
    bundle = tmp_path / "ocibox-bundle"
    rootfs = ocibox_unpack(layout_with_image, "v1", bundle)
    for i, change in enumerate(ROUNDS, 1):
        change(rootfs)
        ocibox("layout", "repack", "--image", f"{layout_with_image}:r{i}", str(bundle))
    return layout_with_image, rootfs


@pytest.mark.parametrize("tag", ["r1", "r2", "r3"])
def test_umoci_unpacks_ocibox_repacks(tmp_path, ocibox_repacked, tag):
    layout, _ = ocibox_repacked
    if tag == "r2":  # the case umoci itself does not write: make sure it is exercised
        assert "opaque/.wh..wh..opq" in layer_names(layout, tag)
    assert_unpacks_alike(layout, tag, tmp_path)


def test_ocibox_repack_reproduces_the_bundle(tmp_path, ocibox_repacked):
    layout, rootfs = ocibox_repacked
    fresh = ocibox_unpack(layout, "r3", tmp_path / "fresh")
    assert_same_tree(str(rootfs), str(fresh), resolution="s")


def test_umoci_repacks_on_ocibox_image(tmp_path, layout_with_image):
    """umoci unpacks ocibox's image, repacks a change, and ocibox unpacks that alike."""
    umoci = need("umoci")
    bundle = tmp_path / "ub"
    umoci_unpack(layout_with_image, "v1", bundle)
    round1(bundle / "rootfs")
    run([umoci, "repack", "--image", f"{layout_with_image}:u1", str(bundle)])
    assert_unpacks_alike(layout_with_image, "u1", tmp_path)

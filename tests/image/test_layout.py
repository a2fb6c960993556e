"""Layouts at the library level: opening, tags, index.json, blobs, gc, locks."""

from __future__ import annotations

import json
import multiprocessing
import os
import time

import pytest

from ocibox import digest as _digest
from ocibox import mediatypes as mt
from ocibox.errors import (
    AlreadyExists,
    BlobNotFound,
    DigestMismatch,
    InvalidObject,
    LayoutError,
    ReferenceNotFound,
    SizeMismatch,
    UnsupportedMediaType,
)
from ocibox.image.cas import BlobStore
from ocibox.image.layout import Layout
from ocibox.image.models import Descriptor, ImageConfig, Manifest, Platform

# fork keeps the children cheap and lets them see this module's functions.
FORK = multiprocessing.get_context("fork")


def make_image(layout: Layout, tag: str | None = None, *, content: bytes = b"layer") -> Descriptor:
    """Store a small image (config + one opaque layer blob) and optionally tag it."""
    layer_digest, layer_size = layout.blobs.put(content)
    config = ImageConfig.new(Platform.host())
    config.data["rootfs"]["diff_ids"] = [layer_digest]
    config_desc = layout.put_json(mt.OCI_CONFIG, config.to_json())
    manifest = Manifest(config=config_desc,
                        layers=(Descriptor(mt.OCI_LAYER, layer_digest, layer_size),))
    desc = layout.put_json(mt.OCI_MANIFEST, manifest.to_json())
    if tag:
        layout.tag(tag, desc)
    return desc


def leftovers(layout: Layout) -> list[str]:
    return list(layout.blobs.temporaries())


@pytest.fixture
def lay(tmp_path) -> Layout:
    return Layout.init(str(tmp_path / "oci"))


# --- init and open ------------------------------------------------------------


def test_init_creates_spec_files(tmp_path):
    path = tmp_path / "oci"
    Layout.init(str(path))
    assert json.loads((path / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((path / "index.json").read_bytes())
    assert index["schemaVersion"] == 2 and index["manifests"] == []
    assert (path / "blobs" / "sha256").is_dir()
    assert Layout.open(str(path)).refs() == []


def test_init_into_empty_dir_is_fine(tmp_path):
    Layout.init(str(tmp_path))
    assert (tmp_path / "oci-layout").is_file()


def test_init_refuses_non_empty_dir_and_files(tmp_path):
    (tmp_path / "x").write_text("keep me")
    with pytest.raises(AlreadyExists):
        Layout.init(str(tmp_path))
    assert (tmp_path / "x").read_text() == "keep me"
    assert not (tmp_path / "oci-layout").exists()
    with pytest.raises(AlreadyExists):
        Layout.init(str(tmp_path / "x"))


def test_open_missing_dir(tmp_path):
    with pytest.raises(LayoutError, match="no such image layout") as e:
        Layout.open(str(tmp_path / "nope"))
    assert "layout init" in e.value.hint


def test_open_not_a_layout(tmp_path):
    with pytest.raises(LayoutError, match="not an OCI image layout"):
        Layout.open(str(tmp_path))


def test_open_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(LayoutError, match="not an OCI image layout"):
        Layout.open(str(f))


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b"null", b'"1.0.0"', b"\xff\xfe"])
def test_open_bad_oci_layout_json(tmp_path, content):
    Layout.init(str(tmp_path))
    (tmp_path / "oci-layout").write_bytes(content)
    with pytest.raises(LayoutError, match="malformed oci-layout|unsupported imageLayoutVersion"):
        Layout.open(str(tmp_path))


@pytest.mark.parametrize("version", ["2.0.0", "1.0", None, 1])
def test_open_wrong_version(tmp_path, version):
    Layout.init(str(tmp_path))
    (tmp_path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": version}))
    with pytest.raises(LayoutError, match="unsupported imageLayoutVersion"):
        Layout.open(str(tmp_path))


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'{"schemaVersion": 2}',
                                     b'{"schemaVersion": 2, "manifests": [{"digest": "x"}]}'])
def test_damaged_index_json(lay, content):
    with open(os.path.join(lay.path, "index.json"), "wb") as f:
        f.write(content)
    with pytest.raises(LayoutError):
        lay.index()
    with pytest.raises(LayoutError):
        lay.resolve("latest")


def test_missing_index_json(lay):
    os.unlink(os.path.join(lay.path, "index.json"))
    with pytest.raises(LayoutError, match="index.json is missing"):
        lay.refs()


# --- tags -----------------------------------------------------------------------


def test_tag_resolve_untag(lay):
    a = make_image(lay, "a", content=b"a")
    b = make_image(lay, content=b"b")
    assert lay.resolve("a").digest == a.digest
    lay.tag("b", b)
    lay.tag("also-a", lay.resolve("a"))
    assert sorted(name for name, _ in lay.refs()) == ["a", "also-a", "b"]
    # retagging moves the tag, it does not duplicate it
    lay.tag("a", b)
    assert [d.digest for n, d in lay.refs() if n == "a"] == [b.digest]
    removed = lay.untag("a")
    assert removed.digest == b.digest
    assert sorted(name for name, _ in lay.refs()) == ["also-a", "b"]
    with pytest.raises(ReferenceNotFound):
        lay.untag("a")


def test_resolve_missing_lists_tags(lay):
    make_image(lay, "v1")
    make_image(lay, "v2", content=b"2")
    with pytest.raises(ReferenceNotFound) as e:
        lay.resolve("v3")
    assert "'v3'" in str(e.value) and "v1, v2" in str(e.value)


def test_resolve_in_empty_layout_says_none(lay):
    with pytest.raises(ReferenceNotFound, match=r"tags: none"):
        lay.resolve("latest")


def test_resolve_many_tags_is_truncated(lay):
    desc = make_image(lay)
    for i in range(15):
        lay.tag(f"t{i:02d}", desc)
    with pytest.raises(ReferenceNotFound) as e:
        lay.resolve("missing")
    assert "t00" in str(e.value) and "..." in str(e.value) and "t14" not in str(e.value)


@pytest.mark.parametrize("tag", ["", " ", "a b", "-a", "a-", ".a", "a..b", "a//b", "/a", "a/",
                                 "../x", "a\nb", "tag\n", "ä", "a:", "x" * 0 + ":"])
def test_invalid_tag_names(lay, tag):
    desc = make_image(lay)
    before = (os.path.join(lay.path, "index.json"), open(os.path.join(lay.path, "index.json"), "rb").read())
    with pytest.raises(InvalidObject):
        lay.tag(tag, desc)
    assert open(before[0], "rb").read() == before[1]


@pytest.mark.parametrize("tag", ["latest", "v1.0", "a_b", "a--b", "1", "registry.example/app:v1",
                                 "sha256@x", "a+b", "UP"])
def test_valid_tag_names(lay, tag):
    desc = make_image(lay)
    lay.tag(tag, desc)
    assert lay.resolve(tag).digest == desc.digest


def test_update_keeps_unknown_fields_and_other_entries(lay):
    desc = make_image(lay)
    other = {
        "mediaType": mt.OCI_MANIFEST, "digest": desc.digest, "size": desc.size,
        "annotations": {"org.example.note": "untagged entry"},
    }
    index = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [other],
        "annotations": {"org.example.layout": "kept"},
        "x-unknown-top-level": {"nested": [1, 2, 3]},
    }
    with open(os.path.join(lay.path, "index.json"), "w") as f:
        json.dump(index, f)
    lay.tag("t", desc)
    lay.untag("t")
    lay.tag("u", desc)
    after = json.loads(open(os.path.join(lay.path, "index.json"), "rb").read())
    assert after["x-unknown-top-level"] == {"nested": [1, 2, 3]}
    assert after["annotations"] == {"org.example.layout": "kept"}
    assert after["manifests"][0] == other
    assert [m["annotations"].get("org.opencontainers.image.ref.name") for m in after["manifests"]] == [None, "u"]


def test_update_keeps_unknown_descriptor_fields_of_other_entries(lay):
    """Entries ocibox did not touch are written back as they were, unknown fields included."""
    desc = make_image(lay)
    other = {"mediaType": mt.OCI_MANIFEST, "digest": desc.digest, "size": desc.size,
             "x-vendor-field": "keep me"}
    with open(os.path.join(lay.path, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [other]}, f)
    lay.tag("t", desc)
    after = json.loads(open(os.path.join(lay.path, "index.json"), "rb").read())
    assert after["manifests"][0] == other


def _tag_many(path: str, prefix: str, n: int, digest: str, size: int) -> None:
    layout = Layout.open(path)
    desc = Descriptor(mt.OCI_MANIFEST, digest, size)
    for i in range(n):
        layout.tag(f"{prefix}{i}", desc)


def test_concurrent_tagging_loses_nothing(lay):
    desc = make_image(lay)
    procs = [FORK.Process(target=_tag_many, args=(lay.path, p, 50, desc.digest, desc.size))
             for p in ("x", "y")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    names = {name for name, _ in lay.refs()}
    assert names == {f"{p}{i}" for p in ("x", "y") for i in range(50)}
    assert len(lay.index().manifests) == 100


# --- blobs ------------------------------------------------------------------------


def test_put_and_read(lay):
    d, n = lay.blobs.put(b"hello")
    assert d == _digest.of_bytes(b"hello") and n == 5
    assert lay.blobs.read(d) == b"hello"
    assert lay.blobs.put(b"hello", d) == (d, 5)  # idempotent
    assert oct(os.stat(lay.blobs.path(d)).st_mode & 0o777) == "0o644"
    assert list(lay.blobs) == [d]


def test_put_wrong_digest_writes_nothing(lay):
    wrong = _digest.of_bytes(b"other")
    with pytest.raises(DigestMismatch):
        lay.blobs.put(b"hello", wrong)
    assert not lay.blobs.has(wrong)
    assert not lay.blobs.has(_digest.of_bytes(b"hello"))
    assert leftovers(lay) == []


def test_put_stream_verifies(lay, tmp_path):
    data = os.urandom(3 << 20)
    src = tmp_path / "src"
    src.write_bytes(data)
    d = _digest.of_bytes(data)
    with open(src, "rb") as f:
        assert lay.blobs.put_stream(f, d, len(data)) == (d, len(data))
    assert lay.blobs.read(d, len(data)) == data


def test_put_stream_wrong_digest(lay, tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"abc" * 1000)
    wrong = _digest.of_bytes(b"xyz")
    with open(src, "rb") as f, pytest.raises(DigestMismatch):
        lay.blobs.put_stream(f, wrong, 3000)
    assert list(lay.blobs) == []
    assert leftovers(lay) == []


def test_put_stream_short(lay, tmp_path):
    data = b"abc" * 1000
    src = tmp_path / "src"
    src.write_bytes(data[:-10])
    with open(src, "rb") as f, pytest.raises(SizeMismatch):
        lay.blobs.put_stream(f, _digest.of_bytes(data), len(data))
    assert list(lay.blobs) == []
    assert leftovers(lay) == []


def test_put_stream_long(lay, tmp_path):
    data = os.urandom(3 << 20)
    src = tmp_path / "src"
    src.write_bytes(data + b"extra")
    with open(src, "rb") as f, pytest.raises(SizeMismatch):
        lay.blobs.put_stream(f, _digest.of_bytes(data), len(data))
    assert list(lay.blobs) == []
    assert leftovers(lay) == []


def test_blob_not_found(lay):
    d = _digest.of_bytes(b"missing")
    with pytest.raises(BlobNotFound):
        lay.blobs.read(d)
    with pytest.raises(BlobNotFound):
        lay.blobs.size(d)


def test_read_truncated_blob(lay):
    d, n = lay.blobs.put(b"0123456789")
    with open(lay.blobs.path(d), "wb") as f:
        f.write(b"01234")
    with pytest.raises(SizeMismatch):
        lay.blobs.read(d, n)


def test_iteration_skips_temporaries_and_junk(lay):
    d, _ = lay.blobs.put(b"x")
    open(os.path.join(lay.blobs.root, "sha256", ".tmp-abc"), "wb").close()
    open(os.path.join(lay.blobs.root, "sha256", "not-a-digest"), "wb").close()
    assert list(lay.blobs) == [d]
    assert len(leftovers(lay)) == 1


def test_blob_store_without_root(tmp_path):
    assert list(BlobStore(str(tmp_path / "none"))) == []


# --- reading images -----------------------------------------------------------------


def test_image_roundtrip(lay):
    desc = make_image(lay, "t")
    image = lay.image("t")
    assert image.descriptor.digest == desc.digest
    assert len(image.manifest.layers) == 1
    assert image.config.platform.os == "linux"


def test_read_config_of_artifact(lay):
    config_digest, size = lay.blobs.put(b"{}")
    desc = Descriptor("application/vnd.example.artifact.v1+json", config_digest, size)
    with pytest.raises(UnsupportedMediaType) as e:
        lay.read_config(desc)
    assert "artifact" in e.value.hint
    manifest = Manifest(config=desc, layers=())
    lay.tag("art", lay.put_json(mt.OCI_MANIFEST, manifest.to_json()))
    with pytest.raises(UnsupportedMediaType):
        lay.image("art")


def test_read_manifest_unknown_media_type(lay):
    desc = make_image(lay)
    odd = Descriptor("application/vnd.example.unknown+json", desc.digest, desc.size)
    lay.tag("odd", odd)
    with pytest.raises(UnsupportedMediaType):
        lay.image("odd")


def test_corrupt_manifest_blob(lay):
    desc = make_image(lay, "t")
    path = lay.blobs.path(desc.digest)
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0x01
    os.chmod(path, 0o644)
    with open(path, "wb") as f:
        f.write(data)
    with pytest.raises(DigestMismatch):
        lay.image("t")


def test_corrupt_config_blob(lay):
    lay_desc = make_image(lay, "t")
    config = lay.image("t").manifest.config
    path = lay.blobs.path(config.digest)
    data = bytearray(open(path, "rb").read())
    data[5] ^= 0x20
    with open(path, "wb") as f:
        f.write(data)
    with pytest.raises(DigestMismatch):
        lay.image("t")
    assert lay.resolve("t").digest == lay_desc.digest


def test_platform_selection_through_index(lay):
    amd = make_image(lay, content=b"amd")
    index = {
        "schemaVersion": 2, "mediaType": mt.OCI_INDEX,
        "manifests": [
            {**amd.to_dict(), "platform": {"os": "linux", "architecture": "amd64"}},
            {**amd.to_dict(), "platform": {"os": "linux", "architecture": "s390x"}},
        ],
    }
    idx = lay.put_json(mt.OCI_INDEX, json.dumps(index).encode())
    lay.tag("multi", idx)
    img = lay.image("multi", Platform.parse("linux/amd64"))
    assert img.descriptor.digest == amd.digest
    with pytest.raises(ReferenceNotFound, match="no image for platform"):
        lay.image("multi", Platform.parse("linux/riscv64"))


# --- gc -------------------------------------------------------------------------------


def test_gc_removes_only_unreferenced(lay):
    kept = make_image(lay, "kept", content=b"kept")
    dropped = make_image(lay, "dropped", content=b"dropped")
    stray, _ = lay.blobs.put(b"stray")
    keep = lay.reachable()
    assert kept.digest in keep and dropped.digest in keep
    lay.untag("dropped")
    doomed = set(lay.gc(dry_run=True))
    assert stray in doomed and dropped.digest in doomed
    assert lay.blobs.has(stray)  # dry run deletes nothing
    removed = set(lay.gc())
    assert removed == doomed
    assert set(lay.blobs) == lay.reachable()
    assert lay.blobs.has(kept.digest)
    assert not lay.blobs.has(dropped.digest) and not lay.blobs.has(stray)
    image = lay.image("kept")  # everything it needs is still there
    for d in (image.manifest.config, *image.manifest.layers):
        assert lay.blobs.has(d.digest)
    assert lay.gc() == []


def test_gc_keeps_blobs_shared_with_removed_images(lay):
    a = make_image(lay, "a", content=b"shared")
    make_image(lay, "b", content=b"shared")  # same layer and config: same manifest too
    lay.untag("b")
    lay.gc()
    assert lay.image("a").descriptor.digest == a.digest


def test_gc_removes_old_temporaries_only(lay):
    directory = os.path.join(lay.blobs.root, "sha256")
    old = os.path.join(directory, ".tmp-old")
    new = os.path.join(directory, ".tmp-new")
    for p in (old, new):
        open(p, "wb").close()
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    lay.gc()
    assert not os.path.exists(old) and os.path.exists(new)


def _writer(path: str, ready, hold: float) -> None:
    layout = Layout.open(path)
    with layout.writing():
        desc = make_image(layout, content=b"in flight")
        ready.set()
        time.sleep(hold)
        layout.tag("late", desc)


def test_gc_waits_for_writers(lay):
    ready = FORK.Event()
    child = FORK.Process(target=_writer, args=(lay.path, ready, 1.0))
    child.start()
    try:
        assert ready.wait(30)
        start = time.monotonic()
        removed = lay.gc()
        waited = time.monotonic() - start
    finally:
        child.join(30)
    assert child.exitcode == 0
    assert waited > 0.5, f"gc did not wait for the writer ({waited:.2f}s)"
    assert removed == []
    image = lay.image("late")
    assert lay.blobs.has(image.manifest.layers[0].digest)


def _hold_gc_lock(path: str, ready, hold: float) -> None:
    from ocibox._fs import file_lock

    with file_lock(os.path.join(path, "blobs")):
        ready.set()
        time.sleep(hold)


def test_writers_wait_for_gc(lay):
    ready = FORK.Event()
    child = FORK.Process(target=_hold_gc_lock, args=(lay.path, ready, 0.8))
    child.start()
    try:
        assert ready.wait(30)
        start = time.monotonic()
        with lay.writing():
            waited = time.monotonic() - start
    finally:
        child.join(30)
    assert waited > 0.4

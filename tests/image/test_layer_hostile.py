"""Hostile layers: nothing a tar says may write, link or delete outside the root.

Two behaviours are possible for a dangerous entry, and ocibox picks per kind:

- a name whose ``..`` climbs above the root is refused with UnsafeEntry
  (umoci silently cleans it to a path inside the root; refusing is stricter
  and a legitimate layer never needs it);
- absolute names, and symlinks met in parent components, are resolved as if
  the root were "/" (what umoci and runc do through securejoin), so they land
  inside the root.

Every test also checks that the directory beside the root is untouched.
"""

from __future__ import annotations

import io
import os
import tarfile
import uuid

import pytest

from ocibox.errors import LayerError, UnsafeEntry
from ocibox.image import layer


def make_tar(*entries: dict) -> io.BytesIO:
    types = {"f": tarfile.REGTYPE, "d": tarfile.DIRTYPE, "l": tarfile.SYMTYPE, "h": tarfile.LNKTYPE}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            info = tarfile.TarInfo(e["name"])
            info.type = types[e.get("type", "f")]
            info.mode = 0o755 if info.type == tarfile.DIRTYPE else 0o644
            info.linkname = e.get("link", "")
            data = e.get("data", b"pwned")
            if info.type != tarfile.REGTYPE:
                data = b""
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    out.seek(0)
    return out


@pytest.fixture
def box(tmp_path):
    """(root, outside): a root to apply into and a bystander directory beside it."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    return root, outside


def snapshot(path) -> dict:
    found = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            found[p] = open(p, "rb").read() if os.path.isfile(p) and not os.path.islink(p) else None
    return found


def apply(box, *entries, expect=None):
    root, outside = box
    before = snapshot(outside)
    parent_before = sorted(os.listdir(root.parent))
    if expect is None:
        layer.apply(make_tar(*entries), str(root))
    else:
        with pytest.raises(expect) as info:
            layer.apply(make_tar(*entries), str(root))
        if expect is UnsafeEntry:
            assert info.value.entry == entries[-1]["name"]
    assert snapshot(outside) == before, "something outside the root changed"
    assert sorted(os.listdir(root.parent)) == parent_before


@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "./../evil", "a/b/../../../evil", ".."])
def test_dotdot_escape_is_refused(box, name):
    apply(box, dict(name=name), expect=UnsafeEntry)


def test_dotdot_inside_root_is_cleaned(box):
    root, _ = box
    apply(box, dict(name="a/b/../c"))
    assert (root / "a/c").read_bytes() == b"pwned"


def test_absolute_name_lands_inside_root(box):
    root, _ = box
    probe = f"ocibox-probe-{uuid.uuid4().hex}"
    apply(box, dict(name=f"/etc/{probe}"))
    assert (root / "etc" / probe).exists()
    assert not os.path.exists(f"/etc/{probe}")


def test_absolute_name_of_outside_dir_lands_inside_root(box):
    root, outside = box
    apply(box, dict(name=f"{outside}/secret"))
    assert (root / str(outside).lstrip("/") / "secret").read_bytes() == b"pwned"


def test_write_through_symlink_to_slash(box):
    root, _ = box
    probe = f"ocibox-probe-{uuid.uuid4().hex}"
    try:
        apply(box, dict(name="link", type="l", link="/"), dict(name=f"link/etc/{probe}"))
        assert (root / "etc" / probe).read_bytes() == b"pwned"
    finally:
        if os.path.exists(f"/etc/{probe}"):
            os.unlink(f"/etc/{probe}")
            pytest.fail("the entry was written into the host's /etc")


def test_write_through_symlink_to_outside_dir(box):
    root, outside = box
    apply(box, dict(name="link", type="l", link=str(outside)), dict(name="link/secret"))
    assert (root / str(outside).lstrip("/") / "secret").read_bytes() == b"pwned"


def test_write_through_climbing_relative_symlink(box):
    root, _ = box
    apply(box, dict(name="a", type="d"), dict(name="a/up", type="l", link="../../../.."),
          dict(name="a/up/evil"))
    assert (root / "evil").read_bytes() == b"pwned"


def test_write_through_chain_of_symlinks(box):
    root, outside = box
    apply(box, dict(name="one", type="l", link="two/x"), dict(name="two", type="l", link="/.."),
          dict(name="x", type="l", link=str(outside)), dict(name="one/secret"))
    assert (root / str(outside).lstrip("/") / "secret").read_bytes() == b"pwned"


def test_pre_existing_parent_symlink_to_outside(box):
    """A lower layer left a symlink pointing out; the next layer writes through it."""
    root, outside = box
    os.symlink(str(outside), root / "lower")
    apply(box, dict(name="lower/secret"), dict(name="lower/new"))
    assert (root / str(outside).lstrip("/") / "new").exists()


def test_final_component_symlink_is_replaced_not_followed(box):
    root, outside = box
    os.symlink(str(outside / "secret"), root / "f")
    apply(box, dict(name="f", data=b"mine"))
    assert not os.path.islink(root / "f") and (root / "f").read_bytes() == b"mine"


def test_directory_entry_over_symlink_to_outside(box):
    root, outside = box
    os.symlink(str(outside), root / "d")
    apply(box, dict(name="d", type="d"), dict(name="d/file"))
    assert not os.path.islink(root / "d") and (root / "d/file").exists()


def test_symlink_loop(box):
    apply(box, dict(name="a", type="l", link="b"), dict(name="b", type="l", link="a"),
          dict(name="a/x"), expect=UnsafeEntry)


@pytest.mark.parametrize("link", ["../../x", "../secret", "a/../../outside/secret"])
def test_hardlink_escape_is_refused(box, link):
    apply(box, dict(name="h", type="h", link=link), expect=UnsafeEntry)


def test_hardlink_to_absolute_host_path_stays_inside(box):
    root, _ = box
    # /etc/passwd means the root's etc/passwd, which does not exist here
    apply(box, dict(name="h", type="h", link="/etc/passwd"), expect=LayerError)
    assert not (root / "h").exists()
    (root / "etc").mkdir()
    (root / "etc/passwd").write_bytes(b"inner")
    apply(box, dict(name="h", type="h", link="/etc/passwd"))
    assert os.lstat(root / "h").st_ino == os.lstat(root / "etc/passwd").st_ino
    assert os.lstat(root / "h").st_ino != os.lstat("/etc/passwd").st_ino


def test_hardlink_through_symlinked_parent_to_outside(box):
    root, outside = box
    os.symlink(str(outside), root / "lower")
    apply(box, dict(name="h", type="h", link="lower/secret"), expect=LayerError)
    assert not os.path.lexists(root / "h")
    assert os.lstat(outside / "secret").st_nlink == 1


def test_hardlink_to_symlink_links_the_symlink(box):
    root, outside = box
    apply(box, dict(name="s", type="l", link=str(outside / "secret")),
          dict(name="h", type="h", link="s"), dict(name="h", data=b"over"))
    assert (root / "h").read_bytes() == b"over"
    assert os.path.islink(root / "s")


@pytest.mark.parametrize("name", [".wh...", ".wh..", "a/.wh."])
def test_whiteout_naming_nothing_is_refused(box, name):
    apply(box, dict(name=name), expect=UnsafeEntry)


def test_whiteout_escape_is_refused(box):
    apply(box, dict(name="../.wh.outside"), expect=UnsafeEntry)


def test_whiteout_through_symlink_to_outside(box):
    root, outside = box
    os.symlink(str(outside), root / "lower")
    apply(box, dict(name="lower/.wh.secret"), dict(name="lower/.wh..wh..opq"))
    assert (outside / "secret").exists()


def test_whiteout_of_absolute_path(box):
    root, outside = box
    apply(box, dict(name=f"{outside}/.wh.secret"))


def test_file_replacing_root_is_refused(box):
    apply(box, dict(name="/"), expect=UnsafeEntry)
    apply(box, dict(name="./", type="l", link="/"), expect=UnsafeEntry)


def test_whiteout_of_root_parent_symlink(box):
    """Removing a symlink that points outside removes the link only."""
    root, outside = box
    os.symlink(str(outside), root / "lower")
    apply(box, dict(name=".wh.lower"))
    assert not os.path.lexists(root / "lower") and (outside / "secret").exists()

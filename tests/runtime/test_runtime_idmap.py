"""Idmapped bind mounts (mount options idmap/ridmap, a mount's uidMappings/gidMappings)
and tmpcopyup, run for real under ocibox-runtime (tmpcopyup compared with runc)."""

from __future__ import annotations

import os

import pytest

from ocibox.errors import BundleError, NotImplementedYet
from ocibox.runtime.linux import mounts as mnt

pytestmark = [pytest.mark.root]

USERNS = [{"containerID": 0, "hostID": 100000, "size": 65536}]


def _source(tmp_path):
    """A host directory whose files belong to uid/gid 1000, and a nested mount in it."""
    src = tmp_path / "data"
    (src / "sub").mkdir(parents=True)
    (src / "f").write_text("x")
    for p in (src, src / "f", src / "sub"):
        os.chown(p, 1000, 1000)
    return src


def _run(ours, bundle, script, edit):
    def both_edits(cfg):
        cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] != "/sys/fs/cgroup"]
        edit(cfg)

    b = bundle.write(["sh", "-c", script], both_edits)
    return ours("run", "--bundle", b, ours.new_id(), check=False)


def _userns(cfg):
    cfg["linux"]["namespaces"].append({"type": "user"})
    cfg["linux"]["uidMappings"] = USERNS
    cfg["linux"]["gidMappings"] = USERNS


def _open_rootfs(bundle):
    """The mapped root (100000) must own the rootfs and reach it through its parents."""
    os.chown(bundle.rootfs, 100000, 100000)
    for parent in [bundle.path, *bundle.path.parents]:
        if str(parent) in ("/", "/tmp"):
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o111)


def _mount(src, maps=None, opts=("bind", "idmap")):
    m = {"destination": "/data", "type": "bind", "source": str(src), "options": list(opts)}
    if maps is not None:
        m["uidMappings"] = maps
        m["gidMappings"] = maps
    return m


STAT = "stat -c '%u:%g %n' /data/f /data/sub; cat /data/f; echo"


def test_idmap_without_user_namespace(ours, bundle, tmp_path):
    src = _source(tmp_path)
    maps = [{"containerID": 1000, "hostID": 2000, "size": 10}]
    p = _run(ours, bundle, STAT, lambda c: c["mounts"].append(_mount(src, maps)))
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["2000:2000 /data/f", "2000:2000 /data/sub", "x"]
    # The host's view is unchanged.
    assert os.stat(src / "f").st_uid == 1000


def test_idmap_in_user_namespace_is_relative_to_it(ours, bundle, tmp_path):
    src = _source(tmp_path)
    _open_rootfs(bundle)
    maps = [{"containerID": 1000, "hostID": 5, "size": 1}]

    def edit(cfg):
        _userns(cfg)
        cfg["mounts"].append(_mount(src, maps))

    p = _run(ours, bundle, STAT + "; cat /proc/self/uid_map", edit)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    # hostID 5 is an id of the container: the container sees its files as 5.
    assert lines[:3] == ["5:5 /data/f", "5:5 /data/sub", "x"]
    assert lines[3].split() == ["0", "100000", "65536"]


def test_idmap_without_mappings_uses_the_container_user_namespace(ours, bundle, tmp_path):
    src = _source(tmp_path)
    _open_rootfs(bundle)
    plain = dict(_mount(src, opts=("bind",)), destination="/plain")

    def edit(cfg):
        _userns(cfg)
        cfg["mounts"] += [_mount(src), plain]

    p = _run(ours, bundle, STAT + "; stat -c '%u:%g' /plain/f", edit)
    assert p.returncode == 0, p.stderr
    # Idmapped with the container's own maps: on-disk 1000 shows as 1000;
    # the plain bind shows the unmapped host id as the overflow id.
    assert p.stdout.splitlines() == ["1000:1000 /data/f", "1000:1000 /data/sub", "x", "65534:65534"]


def test_idmap_is_writable_through_the_mapping(ours, bundle, tmp_path):
    src = _source(tmp_path)
    maps = [{"containerID": 1000, "hostID": 0, "size": 1}]
    script = "echo new > /data/made; stat -c '%u:%g' /data/made"
    p = _run(ours, bundle, script, lambda c: c["mounts"].append(_mount(src, maps)))
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["0:0"]
    # Root in the container writes the file as uid 1000 on the host.
    st = os.stat(src / "made")
    assert (st.st_uid, st.st_gid) == (1000, 1000)


@pytest.mark.parametrize("opt,expect", [("idmap", "1000:1000"), ("ridmap", "7:7")])
def test_ridmap_reaches_submounts(ours, bundle, tmp_path, opt, expect):
    src = _source(tmp_path)
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "g").write_text("y")
    os.chown(inner / "g", 1000, 1000)
    os.system(f"mount --bind {inner} {src}/sub")
    try:
        maps = [{"containerID": 1000, "hostID": 7, "size": 1}]
        m = _mount(src, maps, opts=("rbind", opt))
        p = _run(ours, bundle, "stat -c '%u:%g' /data/f /data/sub/g", lambda c: c["mounts"].append(m))
    finally:
        os.system(f"umount {src}/sub")
    # idmap maps only the top of the rbind tree: the submount keeps the host's ids.
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["7:7", expect]


@pytest.mark.parametrize(
    "entry,needle",
    [
        ({"uidMappings": [{"containerID": 0, "hostID": 1, "size": 1}]}, "go together"),
        ({"uidMappings": [], "gidMappings": []}, "non-empty"),
        ({"uidMappings": [{"containerID": 0, "hostID": 1, "size": 0}],
          "gidMappings": [{"containerID": 0, "hostID": 1, "size": 1}]}, "size 0"),
        ({"uidMappings": [{"containerID": -1, "hostID": 1, "size": 1}],
          "gidMappings": [{"containerID": 0, "hostID": 1, "size": 1}]}, "containerID"),
        ({"uidMappings": [{"containerID": 0, "hostID": 1, "size": 5},
                          {"containerID": 3, "hostID": 100, "size": 5}],
          "gidMappings": [{"containerID": 0, "hostID": 1, "size": 1}]}, "overlap"),
        ({"uidMappings": [{"containerID": 0, "hostID": 1}],
          "gidMappings": [{"containerID": 0, "hostID": 1, "size": 1}]}, "size"),
    ],
)  # fmt: skip
def test_bad_mappings_are_refused_up_front(entry, needle):
    m = {"destination": "/d", "type": "bind", "source": "/tmp", "options": ["bind", "idmap"]}
    with pytest.raises(BundleError, match=needle):
        mnt.parse({**m, **entry})


def test_idmap_on_a_non_bind_mount_is_not_supported():
    with pytest.raises(NotImplementedYet, match="bind mounts only"):
        mnt.parse({"destination": "/t", "type": "tmpfs", "source": "tmpfs", "options": ["idmap"]})


def test_idmap_without_mappings_or_user_namespace_fails(ours, bundle, tmp_path):
    src = _source(tmp_path)
    p = _run(ours, bundle, "true", lambda c: c["mounts"].append(_mount(src)))
    assert p.returncode != 0
    assert "needs uidMappings and gidMappings, or a user namespace" in p.stderr


def test_idmap_host_id_outside_the_container_user_namespace_fails(ours, bundle, tmp_path):
    src = _source(tmp_path)
    _open_rootfs(bundle)
    maps = [{"containerID": 1000, "hostID": 65530, "size": 10}]

    def edit(cfg):
        _userns(cfg)
        cfg["mounts"].append(_mount(src, maps))

    p = _run(ours, bundle, "true", edit)
    assert p.returncode != 0
    assert "hostID 65536 is not mapped in the container's user namespace" in p.stderr


def test_idmap_missing_source_fails(ours, bundle, tmp_path):
    maps = [{"containerID": 0, "hostID": 0, "size": 1}]
    m = _mount(tmp_path / "nope", maps)
    p = _run(ours, bundle, "true", lambda c: c["mounts"].append(m))
    assert p.returncode != 0
    assert "No such file or directory" in p.stderr and "/data" in p.stderr


def test_features_lists_the_new_mount_options():
    from ocibox.runtime.features import features

    f = features()
    assert {"idmap", "ridmap", "tmpcopyup", "rro"} <= set(f["mountOptions"])
    assert f["linux"]["mountExtensions"]["idmap"]["enabled"] is True


def _copyup_tree(rootfs):
    d = rootfs / "srv"
    (d / "sub").mkdir(parents=True)
    (d / "file").write_text("hello\n")
    (d / "sub" / "deep").write_text("deep\n")
    (d / "link").symlink_to("file")
    os.chown(d / "file", 1234, 2345)
    os.chmod(d / "file", 0o4754)
    os.chown(d / "sub", 7, 8)
    os.chmod(d / "sub", 0o711)
    os.utime(d / "sub" / "deep", (1_000_000_000, 1_100_000_000))
    os.chown(d / "link", 5, 6, follow_symlinks=False)
    os.chmod(d, 0o755)
    os.utime(d, (1_200_000_000, 1_200_000_000))


COPYUP_SCRIPT = (
    "cd /srv && for f in . file sub sub/deep link; do stat -c '%n %u:%g %a %Y %F' $f; done; "
    "cat file sub/deep; readlink link; stat -f -c %T .; echo new > made"
)


def _no_times(text: str) -> list[list[str]]:
    return [line.split()[:3] + line.split()[4:] for line in text.splitlines()]


@pytest.mark.peer
def test_tmpcopyup_copies_the_rootfs_content_like_runc(runc, ours, bundle):
    _copyup_tree(bundle.rootfs)
    mount = {"destination": "/srv", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "tmpcopyup"]}  # fmt: skip

    def edit(cfg):
        cfg["mounts"].append(mount)

    b = bundle.write(["sh", "-c", COPYUP_SCRIPT], edit)
    theirs = runc("run", "--bundle", b, runc.new_id(), check=False)
    mine = ours("run", "--bundle", b, ours.new_id(), check=False)
    assert theirs.returncode == 0, theirs.stderr
    assert mine.returncode == 0, mine.stderr
    # runc 1.1.5 gives the copies new times; ours keep them (checked below).
    assert _no_times(mine.stdout) == _no_times(theirs.stdout)
    lines = mine.stdout.splitlines()
    assert "file 1234:2345 4754" in lines[1] and "sub 7:8 711" in lines[2]
    assert lines[3].startswith("sub/deep 0:0 644 1100000000")
    assert lines[5:] == ["hello", "deep", "file", "tmpfs"]
    # The writes went to the tmpfs, not to the rootfs.
    assert not (bundle.rootfs / "srv" / "made").exists()


def test_tmpcopyup_is_only_for_tmpfs():
    with pytest.raises(BundleError, match="only for tmpfs"):
        mnt.parse({"destination": "/d", "type": "bind", "source": "/tmp", "options": ["tmpcopyup"]})


def test_tmpcopyup_copies_fifos(ours, bundle):
    # runc 1.1.5 fails on a fifo under the destination (its copy cannot lchown it).
    (bundle.rootfs / "srv").mkdir()
    os.mkfifo(bundle.rootfs / "srv" / "fifo", 0o640)
    os.chown(bundle.rootfs / "srv" / "fifo", 3, 4)
    mount = {"destination": "/srv", "type": "tmpfs", "source": "tmpfs", "options": ["tmpcopyup"]}
    p = _run(ours, bundle, "stat -c '%u:%g %a %F' /srv/fifo", lambda c: c["mounts"].append(mount))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "3:4 640 fifo"

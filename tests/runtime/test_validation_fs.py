"""runtime-tools' file-system areas, run under runc and ocibox-runtime from one bundle.

Areas (runtime-spec config.md, config-linux.md): default file systems, default
devices and /dev symlinks, linux.devices, masked and read-only paths of files
and directories, mounts (type, source, options, propagation) and
linux.rootfsPropagation. Each test compares what the container sees under both
runtimes and checks the spec's expectation on ours.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.peer]

APPLETS = (
    "mount",
    "umount",
    "find",
    "sort",
    "tr",
    "awk",
    "test",
    "ls",
    "stat",
    "cut",
    "grep",
    "readlink",
    "wc",
)


def _link_applets(bundle) -> None:
    for applet in APPLETS:
        link = bundle.rootfs / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")


def _both(runc, ours, bundle, script: str, edit=None) -> tuple[str, str]:
    _link_applets(bundle)
    b = bundle.write(["sh", "-c", script], edit)
    theirs = runc("run", "--bundle", b, runc.new_id(), check=False)
    mine = ours("run", "--bundle", b, ours.new_id(), check=False)
    assert theirs.returncode == 0, theirs.stderr
    assert mine.returncode == 0, mine.stderr
    return theirs.stdout, mine.stdout


def _mountinfo(text: str) -> dict[str, dict]:
    """Mount point -> its last (visible) mount: type, source, options, propagation kinds."""
    out = {}
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        f = left.split()
        fstype, source, super_opts = right.split()[:3]
        kinds = sorted(o.split(":")[0] for o in f[6:] if not o.startswith("propagate_from"))
        out[f[4]] = {"type": fstype, "source": source, "opts": set(f[5].split(",")),
                     "super": set(super_opts.split(",")), "propagation": kinds}  # fmt: skip
    return out


def test_default_file_systems(runc, ours, bundle):
    """/proc, /sys, /dev/pts and /dev/shm carry their file systems (the default mounts)."""
    theirs, mine = _both(runc, ours, bundle, "cat /proc/self/mountinfo")
    want = {"/proc": "proc", "/sys": "sysfs", "/dev/pts": "devpts", "/dev/shm": "tmpfs",
            "/dev": "tmpfs", "/dev/mqueue": "mqueue"}  # fmt: skip
    for out in (theirs, mine):
        table = _mountinfo(out)
        assert {p: table[p]["type"] for p in want} == want
        assert table["/sys"]["opts"] >= {"ro", "nosuid", "nodev", "noexec"}
        assert table["/dev/shm"]["opts"] >= {"nosuid", "nodev", "noexec"}
        assert "newinstance" not in table["/dev/pts"]["super"]  # not a super option shown
        assert {"ptmxmode=666", "mode=620", "gid=5"} <= table["/dev/pts"]["super"]


def test_default_devices_and_symlinks(runc, ours, bundle):
    script = (
        "for d in null zero full random urandom tty; do "
        "  [ -c /dev/$d ] && echo $d $(stat -c '%t:%T %a %u:%g' /dev/$d); done; "
        "[ -c /dev/ptmx ] && echo ptmx-char; readlink /dev/ptmx; "
        "for l in fd stdin stdout stderr; do echo $l $(readlink /dev/$l); done; "
        "[ -e /dev/console ] && echo console || echo no-console; "
        "echo x > /dev/full 2>/dev/null || echo full-refuses; head -c4 /dev/zero | wc -c"
    )
    theirs, mine = _both(runc, ours, bundle, script)
    assert mine == theirs
    lines = mine.splitlines()
    assert lines[:6] == [
        "null 1:3 666 0:0", "zero 1:5 666 0:0", "full 1:7 666 0:0", "random 1:8 666 0:0",
        "urandom 1:9 666 0:0", "tty 5:0 666 0:0",
    ]  # fmt: skip
    assert lines[6:] == [
        "ptmx-char", "pts/ptmx", "fd /proc/self/fd", "stdin /proc/self/fd/0",
        "stdout /proc/self/fd/1", "stderr /proc/self/fd/2", "no-console", "full-refuses", "4",
    ]  # fmt: skip


def test_linux_devices_type_numbers_mode_owner(runc, ours, bundle):
    """Each linux.devices entry: its type, major:minor, fileMode, uid and gid, whatever the umask."""

    def edit(cfg):
        cfg["process"]["user"] = {"uid": 0, "gid": 0, "umask": 0o077}
        cfg["linux"]["devices"] = [
            {"path": "/dev/loop-test", "type": "b", "major": 7, "minor": 0, "fileMode": 0o660,
             "uid": 1000, "gid": 1001},
            {"path": "/dev/kmsg-test", "type": "c", "major": 1, "minor": 11},
            {"path": "/dev/deep/er/uchar", "type": "u", "major": 1, "minor": 3, "fileMode": 0o604,
             "gid": 7},
            {"path": "/dev/fifo-test", "type": "p", "fileMode": 0o640, "uid": 5, "gid": 6},
            # the spec lets a config restate a default device with other attributes
            {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o662,
             "uid": 33, "gid": 33},
        ]  # fmt: skip
        # the cgroup must let the container open them too
        cfg["linux"]["resources"]["devices"] += [
            {"allow": True, "type": "b", "major": 7, "minor": 0, "access": "rwm"},
            # runc drops its default rule for a default device the config restates
            {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
        ]  # fmt: skip

    script = (
        "for d in /dev/loop-test /dev/kmsg-test /dev/deep/er/uchar /dev/fifo-test /dev/null; do "
        "stat -c '%n %F %t:%T %a %u:%g' $d; done; stat -c '%a' /dev/deep /dev/deep/er"
    )
    theirs, mine = _both(runc, ours, bundle, script, edit)
    assert mine == theirs
    assert mine.splitlines() == [
        "/dev/loop-test block special file 7:0 660 1000:1001",
        "/dev/kmsg-test character special file 1:b 666 0:0",
        "/dev/deep/er/uchar character special file 1:3 604 0:7",
        "/dev/fifo-test fifo 0:0 640 5:6",
        "/dev/null character special file 1:3 662 33:33",
        "755", "755",
    ]  # fmt: skip


def test_masked_paths_files_and_directories(runc, ours, bundle, tmp_path):
    """A masked file reads as empty; a masked directory lists empty and takes no writes."""
    (bundle.rootfs / "secret-dir").mkdir()
    (bundle.rootfs / "secret-dir" / "key").write_text("s3cret\n")
    (bundle.rootfs / "secret-file").write_text("s3cret\n")

    def edit(cfg):
        cfg["root"]["readonly"] = False
        cfg["linux"]["maskedPaths"] = ["/secret-dir", "/secret-file", "/no/such/path",
                                       "/proc/kcore", "/sys/firmware"]  # fmt: skip

    script = (
        "cat /secret-file | wc -c; ls -A /secret-dir | wc -l; cat /secret-dir/key 2>&1 | wc -c; "
        "touch /secret-dir/new 2>/dev/null && echo dir-writable || echo dir-ro; "
        "echo x > /secret-file 2>/dev/null; cat /secret-file | wc -c; "
        "head -c 10 /proc/kcore | wc -c; ls /sys/firmware | wc -l; "
        "[ -e /no/such/path ] && echo made || echo not-made; stat -c %F /secret-file /secret-dir"
    )
    theirs, mine = _both(runc, ours, bundle, script, edit)
    assert mine == theirs
    lines = mine.split("\n")
    assert lines[0:2] == ["0", "0"] and lines[3] == "dir-ro" and lines[4] == "0"
    assert lines[5:8] == ["0", "0", "not-made"]
    assert lines[8:10] == ["character special file", "directory"]
    assert (bundle.rootfs / "secret-file").read_text() == "s3cret\n"


def test_readonly_paths_files_and_directories(runc, ours, bundle):
    (bundle.rootfs / "ro-dir" / "sub").mkdir(parents=True)
    (bundle.rootfs / "ro-file").write_text("keep\n")

    def edit(cfg):
        cfg["root"]["readonly"] = False
        cfg["linux"]["readonlyPaths"] = ["/ro-dir", "/ro-file", "/no/such/path", "/proc/sys"]
        cfg["mounts"].append({"destination": "/ro-dir/sub", "type": "tmpfs", "source": "tmpfs"})

    script = (
        "touch /ro-dir/x 2>/dev/null && echo dir-rw || echo dir-ro; "
        "touch /ro-dir/sub/x 2>/dev/null && echo sub-rw || echo sub-ro; "
        "echo more >> /ro-file 2>/dev/null && echo file-rw || echo file-ro; "
        "echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo sys-rw || echo sys-ro; "
        "cat /ro-file; touch /elsewhere && echo root-rw; "
        "[ -e /no/such/path ] && echo made || echo not-made; "
        "grep -E ' /(ro-dir|ro-dir/sub|ro-file|proc/sys) ' /proc/self/mountinfo | cut -d' ' -f5,6 | sort"
    )
    theirs, mine = _both(runc, ours, bundle, script, edit)
    assert mine == theirs
    lines = mine.splitlines()
    # A mount under a read-only path stays writable on both (the remount is not recursive).
    assert lines[:7] == ["dir-ro", "sub-rw", "file-ro", "sys-ro", "keep", "root-rw", "not-made"]
    ro = {line.split()[0] for line in lines[7:] if "ro" in line.split()[1].split(",")}
    assert ro == {"/proc/sys", "/ro-dir", "/ro-file"}


def test_mounts_type_source_and_options(runc, ours, bundle):
    """Every non-bind mount appears at its destination with its type and source."""

    def edit(cfg):
        cfg["mounts"] += [
            {"destination": "/mnt/t1", "type": "tmpfs", "source": "my-tmp",
             "options": ["nosuid", "nodev", "noexec", "noatime", "size=2m", "mode=0750", "uid=7"]},
            {"destination": "/mnt/t2/", "type": "tmpfs", "source": "other",
             "options": ["ro", "sync", "dirsync", "nodiratime"]},
            {"destination": "/mnt/mq", "type": "mqueue", "source": "mqueue"},
            {"destination": "/mnt/p2", "type": "proc", "source": "proc"},
        ]  # fmt: skip

    theirs, mine = _both(
        runc, ours, bundle, "cat /proc/self/mountinfo; stat -c '%a %u' /mnt/t1", edit
    )
    rows = {}
    for name, out in (("runc", theirs), ("ours", mine)):
        table = _mountinfo(out)
        # runc mounts a read-only tmpfs read-write and then makes the mount read-only:
        # the super block's ro/rw may differ, the mount's may not.
        rows[name] = {p: (table[p]["type"], table[p]["source"], sorted(table[p]["opts"]),
                          sorted(table[p]["super"] - {"ro", "rw"}))
                      for p in ("/mnt/t1", "/mnt/t2", "/mnt/mq", "/mnt/p2")}  # fmt: skip
    assert rows["ours"] == rows["runc"]
    t1 = rows["ours"]["/mnt/t1"]
    assert t1[:2] == ("tmpfs", "my-tmp") and {"nosuid", "nodev", "noexec", "noatime"} <= set(t1[2])
    assert {"size=2048k", "mode=750", "uid=7"} <= set(t1[3])
    t2 = rows["ours"]["/mnt/t2"]
    assert {"ro", "nodiratime"} <= set(t2[2]) and {"sync", "dirsync"} <= set(t2[3])
    assert rows["ours"]["/mnt/mq"][:2] == ("mqueue", "mqueue")
    assert mine.splitlines()[-1] == theirs.splitlines()[-1] == "750 7"


@pytest.fixture
def shared_source(tmp_path):
    """A host directory that is a shared mount (the host's / here is private)."""
    src = tmp_path / "shared-src"
    src.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(src)], check=True)
    subprocess.run(["mount", "--make-shared", str(src)], check=True)
    (src / "sub").mkdir()
    yield src
    subprocess.run(["umount", "-R", str(src)], check=True)


@pytest.mark.parametrize("prop", ["shared", "rshared", "slave", "rslave", "private", "rprivate",
                                  "unbindable", "runbindable"])  # fmt: skip
def test_bind_mount_propagation_option(runc, ours, bundle, shared_source, prop):
    """A bind mount's propagation option, in mountinfo and in what reaches the host."""

    def edit(cfg):
        cfg["process"]["capabilities"] = {k: ["CAP_SYS_ADMIN"] for k in
                                          ("bounding", "effective", "permitted")}  # fmt: skip
        cfg["mounts"].append({"destination": "/b", "type": "bind", "source": str(shared_source),
                              "options": ["rbind", prop]})  # fmt: skip

    # A mount made in the container under /b reaches the host only through a shared /b.
    outs = []
    _link_applets(bundle)
    script = "cat /proc/self/mountinfo; mount -t tmpfs from-container /b/sub"
    b = bundle.write(["sh", "-c", script], edit)
    for rt in (runc, ours):
        p = rt("run", "--bundle", b, rt.new_id())
        outs.append(p.stdout)
        reached = _mountinfo(Path("/proc/self/mountinfo").read_text()).get(
            str(shared_source / "sub")
        )
        if reached:
            subprocess.run(["umount", str(shared_source / "sub")], check=True)
        outs.append(bool(reached))
    kind = prop[1:] if prop.startswith("r") and prop != "rprivate" else prop
    kind = "private" if prop == "rprivate" else kind
    want = {"shared": ["shared"], "slave": ["master"], "private": [],
            "unbindable": ["unbindable"]}[kind]  # fmt: skip
    # The mount namespace is made rslave first, so a shared source is also a slave.
    assert _mountinfo(outs[2])["/b"]["propagation"] == _mountinfo(outs[0])["/b"]["propagation"]
    assert set(want) <= set(_mountinfo(outs[2])["/b"]["propagation"])
    assert outs[1] == outs[3]


def _host_root_propagation() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return _mountinfo(f.read())["/"]["propagation"]


# In the container, / is bound at /t, then a tmpfs mounted at /m: it shows at /t/m
# only if / is shared; binding an unbindable / fails.
_PROPAGATION_PROBE = (
    "mkdir -p /t /m; if mount -o bind / /t 2>/dev/null; then mount -t tmpfs probe /m; "
    "grep -q ' /t/m ' /proc/self/mountinfo && echo propagates || echo stays; "
    "else echo unbindable; fi; awk '$5 == \"/\"' /proc/self/mountinfo"
)


def _propagation_edit(prop):
    def edit(cfg):
        cfg["root"]["readonly"] = False
        cfg["process"]["capabilities"] = {k: ["CAP_SYS_ADMIN"] for k in
                                          ("bounding", "effective", "permitted")}  # fmt: skip
        if prop:
            cfg["linux"]["rootfsPropagation"] = prop

    return edit


@pytest.mark.parametrize("prop", ["", "shared", "slave", "private"])
def test_rootfs_propagation(runc, ours, bundle, prop):
    """The container's / has linux.rootfsPropagation; the host's / keeps its own."""
    before = _host_root_propagation()
    _link_applets(bundle)
    theirs, mine = _both(runc, ours, bundle, _PROPAGATION_PROBE, _propagation_edit(prop))
    want = "propagates" if prop == "shared" else "stays"
    assert mine.split("\n")[0] == want
    if prop == "shared":
        # runc 1.1 makes the old / shared before pivot_root and never the new one:
        # the container's / ends up private, against the spec.
        assert theirs.split("\n")[0] == "stays"
        assert _mountinfo(theirs)["/"]["propagation"] == []
        assert _mountinfo(mine)["/"]["propagation"] == ["shared"]
    else:
        assert theirs.split("\n")[0] == want
        assert _mountinfo(theirs)["/"]["propagation"] == _mountinfo(mine)["/"]["propagation"]
    assert _host_root_propagation() == before


def test_rootfs_propagation_unbindable(runc, ours, bundle):
    """runc 1.1 fails to create it (it makes the host's / unbindable before binding the rootfs)."""
    b = bundle.write(["sh", "-c", _PROPAGATION_PROBE], _propagation_edit("unbindable"))
    _link_applets(bundle)
    theirs = runc("run", "--bundle", b, runc.new_id(), check=False)
    assert theirs.returncode != 0 and "invalid argument" in theirs.stderr
    mine = ours("run", "--bundle", b, ours.new_id())
    assert mine.stdout.split("\n")[0] == "unbindable"
    assert _mountinfo(mine.stdout)["/"]["propagation"] == ["unbindable"]


def test_relative_mount_destination_is_under_root(runc, ours, bundle):
    """config.md: a relative destination (deprecated) MUST be read as relative to /."""

    def edit(cfg):
        cfg["mounts"].append({"destination": "rel/dir", "type": "tmpfs", "source": "reltmp"})

    theirs, mine = _both(runc, ours, bundle, "cat /proc/self/mountinfo", edit)
    assert _mountinfo(theirs)["/rel/dir"]["source"] == "reltmp"
    assert _mountinfo(mine)["/rel/dir"]["source"] == "reltmp"


@pytest.fixture
def bundle_on_shared_mount(bundle, tmp_path):
    """The bundle's rootfs moved onto a shared tmpfs: propagation to and from the host is live."""
    import shutil

    top = tmp_path / "shared-top"
    top.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(top)], check=True)
    subprocess.run(["mount", "--make-shared", str(top)], check=True)
    _link_applets(bundle)
    shutil.copytree(bundle.rootfs, top / "rootfs", symlinks=True)
    (top / "rootfs" / "m").mkdir()
    bundle.config["root"]["path"] = str(top / "rootfs")
    yield bundle, top / "rootfs"
    subprocess.run(["umount", "-R", "-l", str(top)], check=True)


@pytest.mark.parametrize("prop", ["", "shared", "slave", "private"])
def test_rootfs_propagation_with_a_shared_host_mount(runc, ours, bundle_on_shared_mount, prop):
    """A mount made in the container must not reach the host; one the host makes under the
    rootfs afterwards reaches the container unless rootfsPropagation is private."""
    bundle, rootfs = bundle_on_shared_mount
    (rootfs / "hs").mkdir()
    script = ("mount -t tmpfs inner /m; i=0; while [ $i -lt 50 ] && ! [ -e /hs/seen ]; "
              "do sleep 0.1; i=$((i+1)); done; "
              "if [ -e /hs/seen ]; then echo receives; else echo isolated; fi > /result")  # fmt: skip

    def edit(cfg):
        cfg["root"]["readonly"] = False
        cfg["process"]["capabilities"] = {k: ["CAP_SYS_ADMIN"] for k in
                                          ("bounding", "effective", "permitted")}  # fmt: skip
        if prop:
            cfg["linux"]["rootfsPropagation"] = prop

    b = bundle.write(["sh", "-c", script], edit)
    results = {}
    for rt in (runc, ours):
        cid = rt.new_id()
        rt("run", "-d", "--bundle", b, cid)
        time.sleep(0.5)
        table = _mountinfo(Path("/proc/self/mountinfo").read_text())
        leaked = str(rootfs / "m") in table
        if leaked:
            subprocess.run(["umount", str(rootfs / "m")], check=True)
        subprocess.run(["mount", "-t", "tmpfs", "hostsub", str(rootfs / "hs")], check=True)
        (rootfs / "hs" / "seen").write_text("")
        rt.wait_status(cid, "stopped", timeout=10)
        subprocess.run(["umount", str(rootfs / "hs")], check=True)
        results[rt.name] = (leaked, (rootfs / "result").read_text().strip())
        rt("delete", cid)
    receives = "isolated" if prop == "private" else "receives"
    assert results["ocibox-runtime"] == (False, receives)
    # runc 1.1 applies a set rootfsPropagation to the host's / non-recursively,
    # then makes the rootfs's (still shared) parent mount private before binding
    # it: with any value set, the container never receives the host's mounts.
    assert results["runc"] == (False, "receives" if not prop else "isolated")

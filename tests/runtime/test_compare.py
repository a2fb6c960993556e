"""What a container sees, under runc and under ocibox-runtime, from the same bundle."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

pytestmark = [pytest.mark.root, pytest.mark.peer]


def _both(runc, ours, bundle, script: str, edit=None) -> tuple[str, str]:
    b = bundle.write(["sh", "-c", script], edit)
    theirs = runc("run", "--bundle", b, runc.new_id(), check=False)
    mine = ours("run", "--bundle", b, ours.new_id(), check=False)
    assert theirs.returncode == 0, theirs.stderr
    assert mine.returncode == 0, mine.stderr
    return theirs.stdout, mine.stdout


def test_default_environment(runc, ours, bundle):
    script = (
        "id; hostname; grep ^Cap /proc/self/status; grep NoNewPrivs /proc/self/status; "
        "umask; ulimit -n; ulimit -Hn; echo $$; pwd; env | sort; ls -ln /dev | cut -c1-10,30-"
    )
    theirs, mine = _both(runc, ours, bundle, script)
    assert mine == theirs


def test_mount_points(runc, ours, bundle):
    # Mount points, file system types and per-mount options (ids and order of
    # siblings may differ); the root's source path is the bundle's on both.
    def table(out: str) -> list[tuple[str, ...]]:
        rows = []
        for line in out.splitlines():
            left, _, right = line.partition(" - ")
            f = left.split()
            rows.append((f[4], f[5], f[3], right.split()[0]))
        return sorted(rows)

    theirs, mine = _both(runc, ours, bundle, "cat /proc/self/mountinfo")
    assert table(mine) == table(theirs)


def test_user_and_groups(runc, ours, bundle):
    def edit(cfg):
        cfg["process"]["user"] = {
            "uid": 1000,
            "gid": 1001,
            "additionalGids": [10, 20],
            "umask": 0o27,
        }

    theirs, mine = _both(runc, ours, bundle, "id; umask; grep ^Cap /proc/self/status", edit)
    assert mine == theirs
    assert "uid=1000" in mine and "0027" in mine


def test_all_capability_sets(runc, ours, bundle):
    caps = ["CAP_CHOWN", "CAP_NET_RAW", "CAP_SYS_ADMIN", "CAP_KILL"]

    def edit(cfg):
        cfg["process"]["user"] = {"uid": 1000, "gid": 1000}
        cfg["process"]["noNewPrivileges"] = False
        cfg["process"]["capabilities"] = {
            "bounding": caps,
            "effective": caps[:3],
            "permitted": caps[:3],
            "inheritable": caps[:2],
            "ambient": caps[:1],
        }

    theirs, mine = _both(runc, ours, bundle, "grep ^Cap /proc/self/status", edit)
    assert mine == theirs
    assert "CapAmb:\t0000000000000001" in mine


def test_ambient_without_inheritable_is_dropped_as_runc_does(runc, ours, bundle):
    # what `runc spec` writes: ambient capabilities and no inheritable set
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]

    def edit(cfg):
        cfg["process"]["capabilities"] = {
            "bounding": caps, "effective": caps, "permitted": caps, "ambient": caps}

    theirs, mine = _both(runc, ours, bundle, "grep ^Cap /proc/self/status", edit)
    assert mine == theirs
    assert "CapAmb:\t0000000000000000" in mine and "CapPrm:\t0000000020000420" in mine


def test_hostname_sysctl_oom_rlimits(runc, ours, bundle):
    def edit(cfg):
        cfg["hostname"] = "box-7"
        cfg["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.shm_rmid_forced": "1"}
        cfg["process"]["oomScoreAdj"] = 300
        cfg["process"]["rlimits"] = [
            {"type": "RLIMIT_NOFILE", "soft": 512, "hard": 800},
            {"type": "RLIMIT_NPROC", "soft": 300, "hard": 400},
        ]

    script = (
        "hostname; cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shm_rmid_forced; "
        "cat /proc/self/oom_score_adj; ulimit -n; ulimit -Hn; ulimit -u"
    )
    theirs, mine = _both(runc, ours, bundle, script, edit)
    assert mine == theirs
    assert mine.split()[:5] == ["box-7", "1", "1", "300", "512"]


def test_readonly_root_and_paths(runc, ours, bundle):
    script = (
        "touch /x 2>/dev/null && echo root-rw || echo root-ro; "
        "touch /tmp/x 2>/dev/null && echo tmp-rw || echo tmp-ro; "
        "echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo sys-rw || echo sys-ro; "
        "cat /proc/timer_list | wc -c; ls /sys/firmware | wc -l"
    )
    theirs, mine = _both(runc, ours, bundle, script)
    assert mine == theirs
    assert mine.split()[:3] == ["root-ro", "tmp-ro", "sys-ro"]

    def writable(cfg):
        cfg["root"]["readonly"] = False

    theirs, mine = _both(runc, ours, bundle, script, writable)
    assert mine == theirs
    assert mine.split()[0] == "root-rw"


def test_bind_mounts_and_options(runc, ours, bundle, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "f").write_text("hello\n")
    (tmp_path / "file").write_text("one file\n")

    def edit(cfg):
        cfg["mounts"] += [
            {"destination": "/data", "type": "bind", "source": str(shared),
             "options": ["rbind", "ro", "nosuid", "nodev"]},
            {"destination": "/etc/one", "type": "none", "source": str(tmp_path / "file"),
             "options": ["bind"]},
            {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
             "options": ["noexec", "size=1m", "mode=1777"]},
        ]  # fmt: skip

    script = (
        "cat /data/f /etc/one; touch /data/g 2>/dev/null && echo rw || echo ro; "
        "stat -c %a /scratch; grep -E ' /(data|scratch|etc/one) ' /proc/self/mountinfo | cut -d' ' -f5,6"
    )
    theirs, mine = _both(runc, ours, bundle, script, edit)
    assert mine == theirs
    assert "hello" in mine and "\nro\n" in mine


def test_symlinked_destination_stays_in_rootfs(runc, ours, bundle, tmp_path):
    """A symlink in the rootfs must not send a mount to the host."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (bundle.rootfs / "escape").symlink_to(str(outside))

    def edit(cfg):
        cfg["root"]["readonly"] = False
        cfg["mounts"].append({"destination": "/escape/m", "type": "tmpfs", "source": "tmpfs"})

    theirs, mine = _both(
        runc, ours, bundle, "grep ' /escape/m ' /proc/self/mountinfo | wc -l", edit
    )
    assert mine == theirs
    assert not (outside / "m").exists()
    assert (bundle.rootfs / str(outside).lstrip("/") / "m").is_dir()
    with open("/proc/self/mountinfo") as f:
        assert str(outside) not in f.read()


def test_cgroup_limits(runc, ours, bundle):
    if not os.path.isdir("/sys/fs/cgroup/memory"):
        pytest.skip("cgroup v1 memory hierarchy needed")

    def edit(cfg):
        cfg["linux"]["resources"].update(
            memory={"limit": 64 * 1024 * 1024},
            pids={"limit": 50},
            cpu={"shares": 512, "quota": 50000, "period": 100000},
        )

    script = (
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max "
        "/sys/fs/cgroup/cpu/cpu.shares /sys/fs/cgroup/cpu/cpu.cfs_quota_us; "
        "cat /proc/self/cgroup | cut -d: -f3 | sort -u; "
        "head -c1 /dev/zero | wc -c; echo x > /dev/null && echo null-ok"
    )
    theirs, mine = _both(runc, ours, bundle, script, edit)
    assert mine == theirs
    assert mine.split()[:4] == [str(64 * 1024 * 1024), "50", "512", "50000"]


def test_namespaces_joined_by_path(runc, ours, bundle):
    holder = subprocess.Popen(["unshare", "--net", "--uts", "sleep", "60"])
    try:
        time.sleep(0.2)
        path = f"/proc/{holder.pid}/ns"

        def edit(cfg):
            joined = {"network": f"{path}/net", "uts": f"{path}/uts"}
            cfg["linux"]["namespaces"] = [
                {"type": n["type"], "path": joined[n["type"]]} if n["type"] in joined else n
                for n in cfg["linux"]["namespaces"]
            ]
            del cfg["hostname"]  # a joined uts namespace keeps its name

        script = "readlink /proc/self/ns/net; readlink /proc/self/ns/uts; ls /sys/class/net"
        theirs, mine = _both(runc, ours, bundle, script, edit)
        assert mine == theirs
        assert mine.split()[:2] == [os.readlink(f"{path}/net"), os.readlink(f"{path}/uts")]
    finally:
        holder.kill()
        holder.wait()


def test_user_namespace(runc, ours, bundle):
    def edit(cfg):
        cfg["linux"]["namespaces"].append({"type": "user"})
        cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] != "/sys/fs/cgroup"]

    os.chown(bundle.rootfs, 100000, 100000)
    # The mapped root must be able to reach the rootfs through its parents.
    for parent in [bundle.path, *bundle.path.parents]:
        if str(parent) in ("/", "/tmp"):
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o111)
    script = "id; cat /proc/self/uid_map /proc/self/gid_map; ls -n /dev/null | cut -c1-10"
    theirs, mine = _both(runc, ours, bundle, script, edit)
    assert mine == theirs
    assert "100000" in mine


def test_devices_domainname_relative_bind(runc, ours, bundle):
    (bundle.path / "extra").mkdir()
    (bundle.path / "extra" / "note").write_text("relative\n")

    def edit(cfg):
        cfg["domainname"] = "example.test"
        cfg["linux"]["devices"] = [
            {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o640,
             "uid": 0, "gid": 0},
            {"path": "/dev/sub/myfifo", "type": "p", "fileMode": 0o600},
        ]  # fmt: skip
        cfg["mounts"].append({"destination": "/extra", "type": "bind", "source": "extra",
                              "options": ["bind", "ro"]})  # fmt: skip

    script = "cat /proc/sys/kernel/domainname; ls -ln /dev/fuse /dev/sub/myfifo | cut -c1-10; cat /extra/note"
    theirs, mine = _both(runc, ours, bundle, script, edit)
    # runc 1.1 predates domainname (runtime-spec 1.2) and leaves it unset.
    assert mine.split()[1:] == theirs.split()[1:]
    assert mine.split() == ["example.test", "crw-r-----", "prw-------", "relative"]


def test_no_pivot(runc, ours, bundle):
    b = bundle.write(["sh", "-c", "ls / | sort; grep -c ' / ' /proc/self/mountinfo"])
    theirs = runc("run", "--no-pivot", "--bundle", b, runc.new_id())
    mine = ours("run", "--no-pivot", "--bundle", b, ours.new_id())
    assert mine.stdout == theirs.stdout


def test_unknown_capability_is_a_warning(runc, ours, bundle):
    def edit(cfg):
        cfg["process"]["capabilities"]["bounding"].append("CAP_NOT_A_THING")

    theirs, mine = _both(runc, ours, bundle, "grep CapBnd /proc/self/status", edit)
    assert mine == theirs


def test_preserve_fds(runc, ours, bundle, tmp_path):
    data = tmp_path / "fd3"
    data.write_text("through fd 3\n")
    b = bundle.write(["sh", "-c", "cat <&3"])
    outs = []
    for rt in (runc, ours):
        # A shell opens fd 3 for the runtime: pytest's capturing owns fd 3 here.
        argv = [*rt.argv, "--root", str(rt.root), "run", "--preserve-fds", "1", "--bundle", b]
        p = subprocess.run(
            ["sh", "-c", f'exec "$@" {rt.new_id()} 3<"{data}"', "sh", *argv],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert p.returncode == 0, p.stderr
        outs.append(p.stdout)
    assert outs[0] == outs[1] == "through fd 3\n"


def test_seccomp_profile(runc, ours, bundle):
    def edit(cfg):
        cfg["process"]["user"] = {"uid": 1000, "gid": 1000}
        cfg["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64"],
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {"names": ["kill"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 1, "value": 0, "op": "SCMP_CMP_EQ"}]},
                {"names": ["no_such_syscall"], "action": "SCMP_ACT_KILL"},
            ],
        }  # fmt: skip

    script = (
        "mkdir /tmp/x 2>&1; kill -0 $$ 2>&1 && echo kill0-ok || echo kill0-denied; "
        "kill -CONT $$ && echo cont-ok; grep Seccomp: /proc/self/status"
    )
    theirs, mine = _both(runc, ours, bundle, script, edit)
    assert mine == theirs
    assert "Permission denied" in mine and "kill0-denied" in mine and "cont-ok" in mine
    assert "Seccomp:\t2" in mine

    def no_nnp(cfg):
        edit(cfg)
        cfg["process"]["noNewPrivileges"] = False

    theirs, mine = _both(runc, ours, bundle, script, no_nnp)
    assert mine == theirs and "Seccomp:\t2" in mine


def test_inherited_fds_do_not_leak(runc, ours, bundle, tmp_path):
    """A descriptor the runtime's caller leaves open reaches the container only by --preserve-fds."""
    secret = tmp_path / "secret"
    secret.write_text("host secret\n")
    b = bundle.write(
        ["sh", "-c", "ls /proc/self/fd | sort -n | tr '\\n' ' '; cat <&7 2>&1 | head -c 11"]
    )
    outs = []
    for rt in (runc, ours):
        argv = [*rt.argv, "--root", str(rt.root), "run", "--bundle", b]
        p = subprocess.run(["sh", "-c", f'exec "$@" {rt.new_id()} 7<"{secret}"', "sh", *argv],
                           capture_output=True, text=True, timeout=30)  # fmt: skip
        outs.append(p.stdout)
    assert outs[0] == outs[1]
    assert "host secret" not in outs[1]

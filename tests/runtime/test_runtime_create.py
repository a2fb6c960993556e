"""create: the cgroups are joined while the init sets itself up, and nothing is lost by it.

The parent moves the init into its cgroups while the init mounts the root
filesystem; these tests check what must still hold: the hooks and the
program see a process already in its cgroups and in a cgroup namespace rooted
there, and an init that fails meanwhile reports its own error.
"""

from __future__ import annotations

import os

import pytest

pytestmark = [pytest.mark.root, pytest.mark.peer]

V1 = ("memory", "pids", "devices", "freezer")


def _need_v1():
    if not all(os.path.isdir(f"/sys/fs/cgroup/{c}") for c in V1):
        pytest.skip("cgroup v1 hierarchies (memory, pids, devices, freezer) needed")


def test_create_hooks_see_the_init_in_its_cgroups(both, bundle, tmp_path):
    """prestart and createRuntime run with the init already in the container's cgroups."""
    _need_v1()
    out = tmp_path / f"hook-{both.name}"
    out.mkdir()

    def hook(kind):
        script = (f'read -r s; p=${{s#*\\"pid\\":}}; p=${{p%%,*}}; '
                  f'grep -E ":(memory|pids|devices|freezer):" /proc/$p/cgroup | sort > {out}/{kind}')  # fmt: skip
        return {"path": "/bin/sh", "args": ["sh", "-c", script]}

    cid = both.new_id()

    def edit(cfg):
        cfg["hooks"] = {k: [hook(k)] for k in ("prestart", "createRuntime")}

    both("create", "--bundle", bundle.write(["true"], edit), cid)
    try:
        for kind in ("prestart", "createRuntime"):
            lines = (out / kind).read_text().splitlines()
            assert len(lines) == len(V1), lines
            # runc nests a relative cgroup under its caller's where that is not the root
            assert all(line.endswith(f"/{cid}") for line in lines), lines
    finally:
        both("delete", "--force", cid)


def test_program_is_in_its_cgroups_and_cgroup_namespace(both, bundle):
    """From inside: its own cgroup is the namespace's root, and the limits are its own."""
    _need_v1()

    def edit(cfg):
        cfg["linux"]["resources"]["pids"] = {"limit": 37}

    script = ("grep -E ':(memory|pids|devices):' /proc/self/cgroup | cut -d: -f3 | sort -u; "
              "cat /sys/fs/cgroup/pids/pids.max; readlink /proc/self/ns/cgroup | cut -c1-7")  # fmt: skip
    p = both("run", "--bundle", bundle.write(["sh", "-c", script], edit), both.new_id())
    assert p.stdout.split() == ["/", "37", "cgroup:"]
    assert os.readlink("/proc/self/ns/cgroup") not in p.stdout


def test_init_failing_while_cgroups_are_joined_reports_its_own_error(ours, bundle):
    """The init fails in its first mount, while the parent is still moving it into its
    cgroups: the error is the init's, and no cgroup or state is left behind."""
    _need_v1()

    def edit(cfg):
        cfg["mounts"].insert(0, {"destination": "/data", "type": "bind",
                                 "source": "/no/such/source", "options": ["bind"]})  # fmt: skip

    for _ in range(3):  # the race goes either way; each way must report the same
        cid = ours.new_id()
        p = ours("create", "--bundle", bundle.write(["true"], edit), cid, check=False)
        assert p.returncode == 1
        assert p.stderr.strip() == (
            "ocibox-runtime: mount /data: source /no/such/source: No such file or directory"
        )
        assert not (ours.root / cid).exists()
        assert not any(os.path.exists(_v1_place(c, cid)) for c in V1)


def test_bad_cgroup_limit_fails_create_and_kills_the_waiting_init(ours, bundle):
    """A limit the kernel refuses fails create with the cgroup's error; the init, which
    was waiting for its cgroups, is gone and nothing is left behind."""
    _need_v1()

    def edit(cfg):
        cfg["linux"]["resources"]["cpu"] = {"cpus": "4096-4097"}

    cid = ours.new_id()
    before = set(os.listdir("/proc"))
    p = ours("create", "--bundle", bundle.write(["sleep", "30"], edit), cid, check=False)
    assert p.returncode == 1
    assert "cpuset.cpus" in p.stderr and "4096-4097" in p.stderr
    assert not (ours.root / cid).exists()
    assert not any(os.path.exists(_v1_place(c, cid)) for c in V1)
    for pid in set(os.listdir("/proc")) - before:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                assert b"sleep\x0030" not in f.read()
        except OSError:
            pass


def _v1_place(ctrl: str, cid: str) -> str:
    """Where a container with no cgroupsPath goes in a v1 hierarchy: under the runtime's
    (this test's) own cgroup there, as runc places it."""
    with open("/proc/self/cgroup") as f:
        own = {n: line.strip().split(":", 2)[2] for line in f for n in line.split(":")[1].split(",")}
    return f"/sys/fs/cgroup/{ctrl}{own.get(ctrl, '/').rstrip('/')}/{cid}"

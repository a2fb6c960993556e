"""runtime-tools' linux_cgroups_* areas (cgroup v1 here), under runc and ocibox-runtime.

Each test runs one bundle under both runtimes and compares the limits the
container's cgroups carry, read from inside, and where the host put them
(absolute and relative linux.cgroupsPath).
"""

from __future__ import annotations

import os

import pytest

pytestmark = [pytest.mark.root, pytest.mark.peer]

V1 = "/sys/fs/cgroup"


def _need(*controllers):
    for c in controllers:
        if not os.path.isdir(f"{V1}/{c}") or os.path.ismount(f"{V1}/{c}") is False:
            pytest.skip(f"cgroup v1 {c} hierarchy needed")


def _pair(runc, ours, bundle, script, edit):
    for applet in ("cut", "grep", "sort"):
        link = bundle.rootfs / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    b = bundle.write(["sh", "-c", script], edit)
    outs = []
    for rt in (runc, ours):
        p = rt("run", "--bundle", b, rt.new_id(), check=False)
        assert p.returncode == 0, f"{rt.name}: {p.stderr}"
        outs.append(p.stdout)
    return outs


def _read(files):
    return "; ".join(f"echo {f} $(cat /sys/fs/cgroup/{f} 2>&1)" for f in files)


def _memory_files(swap: bool) -> list[str]:
    files = ["memory/memory.limit_in_bytes", "memory/memory.soft_limit_in_bytes",
             "memory/memory.swappiness", "memory/memory.oom_control"]  # fmt: skip
    return files + ["memory/memory.memsw.limit_in_bytes"] if swap else files


def test_memory(runc, ours, bundle):
    _need("memory")

    def edit(cfg):
        cfg["linux"]["resources"]["memory"] = {
            "limit": 96 << 20, "reservation": 48 << 20, "swappiness": 30, "disableOOMKiller": True}  # fmt: skip

    theirs, mine = _pair(runc, ours, bundle, _read(_memory_files(False)), edit)
    assert mine == theirs
    got = {line.split()[0]: line.split()[1:] for line in mine.splitlines()}
    assert got["memory/memory.limit_in_bytes"] == [str(96 << 20)]
    assert got["memory/memory.soft_limit_in_bytes"] == [str(48 << 20)]
    assert got["memory/memory.swappiness"] == ["30"]
    assert got["memory/memory.oom_control"][:2] == ["oom_kill_disable", "1"]


def test_memory_with_swap(runc, ours, bundle):
    _need("memory")
    if not os.path.exists(f"{V1}/memory/memory.memsw.limit_in_bytes"):
        pytest.skip("no swap accounting")

    def edit(cfg):
        cfg["linux"]["resources"]["memory"] = {"limit": 96 << 20, "swap": 128 << 20}

    theirs, mine = _pair(runc, ours, bundle, _read(_memory_files(True)), edit)
    assert mine == theirs
    assert f"memory/memory.memsw.limit_in_bytes {128 << 20}" in mine.splitlines()


def test_cpu_and_cpuset(runc, ours, bundle):
    _need("cpu", "cpuset")

    def edit(cfg):
        cfg["linux"]["resources"]["cpu"] = {"shares": 300, "quota": 30000, "period": 60000,
                                            "cpus": "0", "mems": "0"}  # fmt: skip

    files = ["cpu/cpu.shares", "cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us",
             "cpuset/cpuset.cpus", "cpuset/cpuset.mems"]  # fmt: skip
    theirs, mine = _pair(
        runc, ours, bundle, _read(files) + "; grep Cpus_allowed_list /proc/self/status", edit
    )
    assert mine == theirs
    assert [line.split()[-1] for line in mine.splitlines()] == [
        "300",
        "30000",
        "60000",
        "0",
        "0",
        "0",
    ]


def test_pids(runc, ours, bundle):
    _need("pids")

    def edit(cfg):
        cfg["linux"]["resources"]["pids"] = {"limit": 3}

    # with a limit of 3 pids, a child shell cannot start its second sleep
    script = _read(["pids/pids.max"]) + "; sh -c 'sleep 1 & sleep 1 & wait' 2>/dev/null; echo $?"
    theirs, mine = _pair(runc, ours, bundle, script, edit)
    assert mine == theirs
    assert mine.splitlines()[1] != "0"
    assert mine.splitlines()[0] == "pids/pids.max 3"


def test_zero_values_are_left_unset(runc, ours, bundle):
    # runc's Set writes no limit, share, period, quota or weight of 0 (v2's mapping did
    # not either); ours wrote them on v1: a memory limit of 0 killed the init, and a
    # period of 0 was refused by the kernel
    _need("memory", "cpu", "blkio")

    def edit(cfg):
        cfg["linux"]["resources"].update({
            "memory": {"limit": 0, "swap": 0, "reservation": 0},
            "cpu": {"shares": 0, "quota": 0, "period": 0, "realtimeRuntime": 0, "realtimePeriod": 0},
            "blockIO": {"weight": 0, "leafWeight": 0},
        })  # fmt: skip

    files = ["memory/memory.limit_in_bytes", "memory/memory.soft_limit_in_bytes",
             "cpu/cpu.shares", "cpu/cpu.cfs_period_us", "cpu/cpu.cfs_quota_us"]  # fmt: skip
    theirs, mine = _pair(runc, ours, bundle, _read(files), edit)
    assert mine == theirs
    assert [line.split()[1] for line in mine.splitlines()][2:] == ["1024", "100000", "-1"]

def test_blkio_throttle(runc, ours, bundle):
    _need("blkio")
    major, minor = (
        divmod(os.stat("/dev/vda").st_rdev, 256) if os.path.exists("/dev/vda") else (0, 0)
    )
    if not major:
        pytest.skip("needs /dev/vda")
    major, minor = os.major(os.stat("/dev/vda").st_rdev), os.minor(os.stat("/dev/vda").st_rdev)

    def edit(cfg):
        dev = {"major": major, "minor": minor}
        cfg["linux"]["resources"]["blockIO"] = {
            "throttleReadBpsDevice": [{**dev, "rate": 1 << 20}],
            "throttleWriteBpsDevice": [{**dev, "rate": 2 << 20}],
            "throttleReadIOPSDevice": [{**dev, "rate": 100}],
            "throttleWriteIOPSDevice": [{**dev, "rate": 200}],
        }

    files = [f"blkio/blkio.throttle.{k}" for k in
             ("read_bps_device", "write_bps_device", "read_iops_device", "write_iops_device")]  # fmt: skip
    theirs, mine = _pair(runc, ours, bundle, _read(files), edit)
    assert mine == theirs
    want = [f"{major}:{minor} {v}" for v in (1 << 20, 2 << 20, 100, 200)]
    assert [" ".join(line.split()[1:]) for line in mine.splitlines()] == want


@pytest.mark.parametrize("path", ["relative", "absolute"])
def test_cgroups_path(runc, ours, bundle, path):
    """linux_cgroups_relative_*: where a relative or absolute cgroupsPath lands, and its limits.

    The spec lets a runtime choose where a relative path starts: both nest it
    under the caller's own cgroup in each v1 hierarchy (the memory one, here,
    may be a child of the root).
    """
    _need("pids", "memory")
    results = []
    made = set()
    for rt in (runc, ours):
        cid = rt.new_id()
        where = f"ocibox-validation/{cid}" if path == "relative" else f"/ocibox-validation/{cid}"
        b = bundle.write(["sleep", "30"], lambda c, w=where: c["linux"].update(
            cgroupsPath=w, resources={"pids": {"limit": 33}}))  # fmt: skip
        rt("run", "-d", "--bundle", b, cid)
        try:
            pid = rt.state(cid)["pid"]
            with open(f"/proc/{pid}/cgroup") as f:
                lines = {line.split(":")[1]: line.strip().split(":", 2)[2] for line in f}
            results.append({k: lines[k].replace(cid, "ID") for k in ("pids", "memory")})
            with open(f"{V1}/pids{lines['pids']}/pids.max") as f:
                assert f.read().strip() == "33"
        finally:
            rt("delete", "--force", cid)
        for c in ("pids", "memory"):
            assert not os.path.exists(f"{V1}/{c}{lines[c]}")
            made.add(os.path.dirname(f"{V1}/{c}{lines[c]}"))
    for d in made:  # and the same directory in every other hierarchy
        rel = d.split("/", 5)[5]
        for h in os.listdir(V1):
            if os.path.isdir(f"{V1}/{h}/{rel}"):
                os.rmdir(f"{V1}/{h}/{rel}")
    assert results[0] == results[1]
    if path == "absolute":
        assert results[1]["pids"] == results[1]["memory"] == "/ocibox-validation/ID"


MEMORY_FILES = ("cat /sys/fs/cgroup/memory/memory.limit_in_bytes "
                "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")  # fmt: skip


def _swap_limited(rt_name, request, bundle):
    """A running container with memory 64M and memory+swap 96M: the runtime and its id."""
    _need("memory")
    if not os.path.exists(f"{V1}/memory/memory.memsw.limit_in_bytes"):
        pytest.skip("no swap accounting")
    rt = request.getfixturevalue(rt_name)
    cid = rt.new_id()
    b = bundle.write(["sleep", "30"], lambda c: c["linux"]["resources"].update(
        memory={"limit": 64 << 20, "swap": 96 << 20}))
    rt("run", "-d", "--bundle", b, cid)
    return rt, cid


@pytest.mark.parametrize("rt_name", ["runc", "ours"])
def test_memory_and_swap_updated_up_and_down(rt_name, request, bundle):
    # memsw must stay >= the memory limit after every single write: growing
    # needs swap written first, shrinking the memory limit first
    rt, cid = _swap_limited(rt_name, request, bundle)
    for mem, swap in ((256 << 20, 512 << 20), (32 << 20, 48 << 20), (128 << 20, -1)):
        rt("update", "--memory", str(mem), "--memory-swap", str(swap), cid)
        got = rt("exec", cid, "sh", "-c", MEMORY_FILES).stdout.split()
        assert got[0] == str(mem)
        assert swap == -1 or got[1] == str(swap)
    rt("delete", "--force", cid)


@pytest.mark.parametrize("rt_name", ["runc", "ours"])
def test_memory_unlimited_lifts_a_swap_limit_not_given(rt_name, request, bundle):
    # runc: a memory limit of -1 with no swap given sets swap to -1 too (and first):
    # memsw below an unlimited memory limit is refused by the kernel
    rt, cid = _swap_limited(rt_name, request, bundle)
    rt("update", "--memory", "-1", cid)
    limit, swap = rt("exec", cid, "sh", "-c", MEMORY_FILES).stdout.split()
    assert int(limit) == int(swap) > 1 << 60  # unlimited: the page-rounded maximum
    rt("delete", "--force", cid)

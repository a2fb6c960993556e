"""cgroups: v1, v2 (unified) and hybrid; the eBPF device program; stats.

Three kinds of test, each named for what it touches:
- ``test_map_*``: the resource -> file mapping, written into a temporary
  directory laid out like a cgroup v2 tree. Not the kernel: they check names,
  values and conversions only.
- ``test_real_v2_*``: the real cgroup v2 hierarchy of this host (on a hybrid
  host /sys/fs/cgroup/unified): cgroups made, processes moved, programs
  attached, freezing, all done by the kernel. Skipped without root or v2.
- ``test_real_hybrid_*``: whole containers through ocibox-runtime on this host.
"""

from __future__ import annotations

import json
import os
import uuid

import pytest

from ocibox.errors import BundleError, NotImplementedYet
from ocibox.runtime.linux import ebpf
from ocibox.runtime.linux.cgroups import fs, v2

# --- the mapping, against a temporary directory -------------------------------


def test_map_runc_conversions():
    assert v2.cpu_weight(0) == 0
    assert v2.cpu_weight(2) == 1
    assert v2.cpu_weight(1024) == 39  # runc 1.1: 1 + (1024-2)*9999/262142
    assert v2.cpu_weight(262144) == 10000
    assert v2.cpu_max(50000, 100000) == "50000 100000"
    assert v2.cpu_max(-1, 100000) == "max 100000"
    assert v2.cpu_max(20000, None) == "20000"
    assert v2.cpu_max(None, None) == ""
    assert v2.swap_max(None, 100) == ""
    assert v2.swap_max(None, -1) == "max"
    assert v2.swap_max(-1, 100) == "max"
    assert v2.swap_max(300, 100) == "200"
    assert v2.swap_max(100, 100) == "0"  # memory+swap equal to memory: no swap
    with pytest.raises(BundleError, match=">= the memory limit"):
        v2.swap_max(50, 100)
    with pytest.raises(BundleError, match="needs a memory limit"):
        v2.swap_max(50, None)
    assert v2.io_weight(10) == 1 and v2.io_weight(1000) == 10000 and v2.io_weight(500) == 4950
    assert v2.io_max_lines({"throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1024}],
                            "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 0}]}) == [
        "8:0 rbps=1024", "8:0 wiops=max"]  # fmt: skip
    assert v2.rdma_lines({"mlx5_1": {"hcaHandles": 3, "hcaObjects": 10000}, "x": {}}) == [
        "mlx5_1 hca_handle=3 hca_object=10000"
    ]


def _fake_tree(tmp_path, controllers=("cpu", "memory", "pids", "io", "cpuset", "hugetlb")):
    """root/ (no cgroup.type, as the kernel's root) and root/ctr/ with controller files."""
    root = tmp_path / "root"
    ctr = root / "ctr"
    ctr.mkdir(parents=True)
    (root / "cgroup.controllers").write_text(" ".join(controllers) + "\n")
    (root / "cgroup.subtree_control").write_text("")
    (ctr / "cgroup.type").write_text("domain\n")
    for name in ("memory.max", "memory.low", "memory.swap.max", "cpu.weight", "cpu.max",
                 "cpu.idle", "cpuset.cpus", "cpuset.mems", "pids.max", "io.weight", "io.max",
                 "hugetlb.2MB.max", "cgroup.max.descendants"):  # fmt: skip
        (ctr / name).write_text("")
    return root, ctr


def test_map_v2_resources_to_files(tmp_path):
    root, ctr = _fake_tree(tmp_path)
    v2.set_resources(str(ctr), {
        "memory": {"limit": 104857600, "swap": 209715200, "reservation": 52428800},
        "cpu": {"shares": 512, "quota": 25000, "period": 100000, "cpus": "0", "mems": "0",
                "idle": 0},
        "pids": {"limit": 40},
        "blockIO": {"weight": 100,
                    "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 4096}]},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}],
        "unified": {"cgroup.max.descendants": "7"},
    })  # fmt: skip
    got = {p.name: p.read_text() for p in ctr.iterdir()}
    assert got["memory.max"] == "104857600"
    assert got["memory.swap.max"] == "104857600"
    assert got["memory.low"] == "52428800"
    assert got["cpu.weight"] == str(1 + (512 - 2) * 9999 // 262142)
    assert got["cpu.max"] == "25000 100000"
    assert got["cpu.idle"] == "0"
    assert got["cpuset.cpus"] == "0" and got["cpuset.mems"] == "0"
    assert got["pids.max"] == "40"
    assert got["io.weight"] == str(1 + 90 * 9999 // 990)
    assert got["io.max"] == "8:0 rbps=4096"
    assert got["hugetlb.2MB.max"] == "4194304"
    assert got["cgroup.max.descendants"] == "7"
    # Each controller was turned on in the parent's subtree_control (the last write stays
    # in a plain file; the kernel would accumulate them).
    assert (root / "cgroup.subtree_control").read_text().startswith("+")


def test_map_v2_kernel_memory_ignored_with_a_warning(tmp_path, capsys):
    # runc 1.1 ignores memory.kernel and kernelTCP on cgroup v2 (the runtime-spec marks
    # them NOT RECOMMENDED); configs written for v1 hosts carry them
    root, ctr = _fake_tree(tmp_path)
    v2.set_resources(str(ctr), {"memory": {"limit": 1 << 20, "kernel": 1 << 19,
                                           "kernelTCP": 1 << 18}})  # fmt: skip
    assert (ctr / "memory.max").read_text() == str(1 << 20)
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "ocibox-runtime: warning: linux.resources.memory.kernel: no kernel memory limit on "
        "cgroup v2; ignored",
        "ocibox-runtime: warning: linux.resources.memory.kernelTCP: no kernel memory limit on "
        "cgroup v2; ignored",
    ]
    v2.set_resources(str(ctr), {"memory": {"kernel": 1 << 19}})  # alone: nothing else written
    assert "memory.kernel" in capsys.readouterr().err


def test_map_v2_refusals(tmp_path):
    root, ctr = _fake_tree(tmp_path, controllers=("cpu",))
    with pytest.raises(NotImplementedYet, match="memory controller is not available"):
        v2.set_resources(str(ctr), {"memory": {"limit": 1 << 20}})
    with pytest.raises(NotImplementedYet, match="realtime"):
        v2.set_resources(str(ctr), {"cpu": {"realtimeRuntime": 1000}})
    with pytest.raises(NotImplementedYet, match="swappiness"):
        v2.set_resources(str(ctr), {"memory": {"swappiness": 10}})
    with pytest.raises(NotImplementedYet, match="disableOOMKiller"):
        v2.set_resources(str(ctr), {"memory": {"disableOOMKiller": True}})
    for bad in ("../memory.max", "nodot", ".hidden"):
        with pytest.raises(BundleError, match="CONTROLLER.PARAMETER"):
            v2.set_resources(str(ctr), {"unified": {bad: "1"}})
    with pytest.raises(BundleError, match="must be a string"):
        v2.set_resources(str(ctr), {"unified": {"cgroup.max.descendants": 3}})
    with pytest.raises(BundleError, match="has no file"):
        v2.set_resources(str(ctr), {"unified": {"cpu.nonsense": "1"}})


def test_map_modes():
    assert fs.mode({"unified": "/sys/fs/cgroup"}) == fs.UNIFIED
    assert fs.mode({"memory": "/a", "unified": "/b"}) == fs.HYBRID
    assert fs.mode({"memory": "/a", "name=systemd": "/c"}) == fs.LEGACY
    assert fs.mode({"name=systemd": "/c", "unified": "/b"}) == fs.UNIFIED
    assert fs.relative_path("c1", None) == "c1"
    assert fs.relative_path("c1", "/a/b/") == "a/b"
    with pytest.raises(BundleError, match=r"'\.\.'"):
        fs.relative_path("c1", "/a/../../etc")
    with pytest.raises(NotImplementedYet, match="systemd"):
        fs.relative_path("c1", "system.slice:ocibox:c1")


def test_map_device_program_shape():
    rules = fs.device_rules([{"allow": False, "access": "rwm"}])
    prog = ebpf.assemble(rules)
    assert len(prog) % 8 == 0
    assert prog[-8:] == bytes([0x95, 0, 0, 0, 0, 0, 0, 0])  # exit
    with pytest.raises(BundleError, match="access"):
        fs.device_rules([{"allow": True, "type": "c", "access": "x"}])


# --- the real cgroup v2 hierarchy of this host --------------------------------


def _unified_mount() -> str | None:
    return fs.hierarchies().get("unified")


@pytest.fixture
def v2_cgroup():
    """A fresh cgroup in the host's v2 hierarchy; removed afterwards, with its processes."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    mp = _unified_mount()
    if not mp:
        pytest.skip("no cgroup v2 hierarchy on this host")
    before = open(os.path.join(mp, "cgroup.subtree_control")).read().split()
    path = os.path.join(mp, f"ocibox-test-{uuid.uuid4().hex[:8]}")
    yield mp, path
    if os.path.isdir(path):
        for pid in open(os.path.join(path, "cgroup.procs")).read().split():
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                pass
        fs.remove([path])
    for ctrl in set(open(os.path.join(mp, "cgroup.subtree_control")).read().split()) - set(before):
        with open(os.path.join(mp, "cgroup.subtree_control"), "w") as f:
            f.write("-" + ctrl)  # leave the host as it was


def _child_in(path_holder: list, script):
    """Fork a child that waits for a byte, then runs ``script`` and reports over a pipe."""
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(w1)
            os.close(r2)
            os.read(r1, 1)
            out = script()
            os.write(w2, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(r1)
    os.close(w2)
    return pid, w1, r2


def _run(pid, w, r) -> object:
    os.write(w, b"x")
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(data)


def _opens():
    out = {}
    for name in ("/dev/null", "/dev/zero", "/dev/kmsg"):
        for mode, flag in (("r", os.O_RDONLY), ("w", os.O_WRONLY)):
            try:
                os.close(os.open(name, flag | os.O_NONBLOCK))
                out[f"{name}:{mode}"] = "ok"
            except OSError as e:
                out[f"{name}:{mode}"] = e.errno
    return out


def test_real_v2_devices_program_is_enforced(v2_cgroup):
    mp, path = v2_cgroup
    pid, w, r = _child_in([], _opens)
    rules = [{"allow": False, "access": "rwm"},
             {"allow": True, "type": "c", "major": 1, "minor": 11, "access": "w"}]  # fmt: skip
    paths, created = v2.apply(mp, os.path.basename(path), {"devices": rules}, pid)
    assert paths == {"unified": path} and created == [path]
    assert open(os.path.join(path, "cgroup.procs")).read().split() == [str(pid)]
    got = _run(pid, w, r)
    # /dev/null and /dev/zero are among the defaults; /dev/kmsg (1:11) only for writing.
    assert got["/dev/null:r"] == got["/dev/null:w"] == got["/dev/zero:r"] == "ok"
    assert got["/dev/kmsg:w"] == "ok"
    assert got["/dev/kmsg:r"] == 1  # EPERM, from the program
    # A process outside the cgroup is not affected.
    assert _opens()["/dev/kmsg:r"] == "ok"


def test_real_v2_deny_then_allow_order(v2_cgroup):
    mp, path = v2_cgroup
    pid, w, r = _child_in([], _opens)
    rules = [{"allow": True, "access": "rwm"},  # everything ...
             {"allow": False, "type": "c", "major": 1, "minor": 11, "access": "r"}]  # fmt: skip
    v2.apply(mp, os.path.basename(path), {"devices": rules}, pid)
    got = _run(pid, w, r)
    assert got["/dev/kmsg:r"] == 1 and got["/dev/kmsg:w"] == "ok"


def test_real_v2_devices_are_replaced_not_added(v2_cgroup):
    """A second set of rules takes the place of the first: with BPF_F_ALLOW_MULTI an
    added program could only narrow what the first allows."""
    mp, path = v2_cgroup
    pid, w, r = _child_in([], _opens)
    deny_kmsg_r = [{"allow": True, "access": "rwm"},
                   {"allow": False, "type": "c", "major": 1, "minor": 11, "access": "r"}]  # fmt: skip
    v2.apply(mp, os.path.basename(path), {"devices": deny_kmsg_r}, pid)
    first = ebpf.attached(path)
    assert len(first) == 1
    # Two of ours attached (as an older ocibox left them): both go, one new comes.
    extra = ebpf.load(ebpf.assemble(fs.device_rules(deny_kmsg_r)))
    ebpf.attach(path, extra)
    os.close(extra)
    assert len(ebpf.attached(path)) == 2
    from ocibox.runtime.linux import cgroups

    cgroups.set_resources({"unified": path}, {"devices": [{"allow": True, "access": "rwm"}]})
    now = ebpf.attached(path)
    assert len(now) == 1 and now[0] not in first
    assert _run(pid, w, r)["/dev/kmsg:r"] == "ok"
    # And the single one is swapped in place (BPF_F_REPLACE).
    v2.set_devices(path, deny_kmsg_r)
    last = ebpf.attached(path)
    assert len(last) == 1 and last != now
    pid, w, r = _child_in([], _opens)
    with open(os.path.join(path, "cgroup.procs"), "w") as f:
        f.write(str(pid))
    got = _run(pid, w, r)
    assert got["/dev/kmsg:r"] == 1 and got["/dev/kmsg:w"] == "ok"


def test_real_v2_bad_device_rule_on_update_writes_nothing(v2_cgroup):
    mp, path = v2_cgroup
    pid, w, r = _child_in([], lambda: "done")
    v2.apply(mp, os.path.basename(path), {"unified": {"cgroup.max.descendants": "2"}}, pid)
    from ocibox.runtime.linux import cgroups

    with pytest.raises(BundleError, match="access"):
        cgroups.set_resources({"unified": path}, {"unified": {"cgroup.max.descendants": "5"},
                                                  "devices": [{"allow": True, "access": "x"}]})  # fmt: skip
    assert open(os.path.join(path, "cgroup.max.descendants")).read().strip() == "2"
    assert _run(pid, w, r) == "done"


def test_real_v2_freeze_and_stats(v2_cgroup):
    mp, path = v2_cgroup
    pid, w, r = _child_in([], lambda: "done")
    paths, _ = v2.apply(mp, os.path.basename(path), {"unified": {"cgroup.max.descendants": "2"}},
                        pid)  # fmt: skip
    assert open(os.path.join(path, "cgroup.max.descendants")).read().strip() == "2"
    from ocibox.runtime.linux import cgroups

    cgroups.freeze(paths, True, "t")
    assert cgroups.frozen(paths) and "frozen 1" in open(os.path.join(path, "cgroup.events")).read()
    cgroups.freeze(paths, False, "t")
    assert not cgroups.frozen(paths)
    from ocibox.runtime.stats import _stats_v2

    st = _stats_v2(path)
    assert st["pids"]["current"] == 1  # counted from cgroup.procs when v2 has no pids controller
    assert st["cpu"]["usage"]["total"] >= 0
    assert _run(pid, w, r) == "done"


def test_real_v2_hugetlb_limit(v2_cgroup):
    mp, path = v2_cgroup
    if "hugetlb" not in v2.available(mp):
        pytest.skip("the v2 hierarchy has no hugetlb controller here")
    pid, w, r = _child_in([], lambda: "done")
    v2.apply(mp, os.path.basename(path),
             {"hugepageLimits": [{"pageSize": "2MB", "limit": 8388608}]}, pid)  # fmt: skip
    assert "hugetlb" in open(os.path.join(mp, "cgroup.subtree_control")).read().split()
    assert open(os.path.join(path, "hugetlb.2MB.max")).read().strip() == "8388608"
    from ocibox.runtime.stats import _hugetlb_v2

    assert _hugetlb_v2(path)["2MB"]["max"] == 8388608
    with pytest.raises(BundleError, match="no huge page size"):
        v2.set_hugetlb(path, [{"pageSize": "3MB", "limit": 1}])
    assert _run(pid, w, r) == "done"


def test_real_v2_missing_controller_is_refused(v2_cgroup):
    mp, path = v2_cgroup
    if "memory" in v2.available(mp):
        pytest.skip("this host's v2 hierarchy has a memory controller")
    pid, w, r = _child_in([], lambda: "done")
    with pytest.raises(NotImplementedYet, match="memory controller is not available"):
        v2.apply(mp, os.path.basename(path), {"memory": {"limit": 1 << 26}}, pid)
    assert not os.path.exists(path)  # what apply made, it removed
    assert _run(pid, w, r) == "done"


# --- whole containers on this host --------------------------------------------


def test_real_hybrid_container_in_both_hierarchies(ours, bundle):
    """On a hybrid host the container gets its v1 cgroups and a v2 one (as runc does);
    hugetlb, which no v1 hierarchy has here, is limited through v2; events reads it."""
    mounts = fs.hierarchies()
    if fs.mode(mounts) != fs.HYBRID or os.geteuid() != 0:
        pytest.skip("needs root on a hybrid cgroup host")
    mp = mounts["unified"]
    before = open(os.path.join(mp, "cgroup.subtree_control")).read().split()
    use_hugetlb = "hugetlb" not in mounts and "hugetlb" in v2.available(mp)
    resources: dict = {"pids": {"limit": 50}}
    if use_hugetlb:
        resources["hugepageLimits"] = [{"pageSize": "2MB", "limit": 2097152 * 3}]
    cid = ours.new_id()
    b = bundle.write(["sleep", "30"], lambda c: c["linux"].update(resources=resources))
    try:
        ours("create", "--bundle", b, cid)
        pid = ours.state(cid)["pid"]
        assert str(pid) in open(os.path.join(mp, cid, "cgroup.procs")).read().split()
        assert open(f"{_v1_place('pids', cid)}/pids.max").read().strip() == "50"
        stats = json.loads(ours("events", "--stats", cid).stdout)["data"]
        assert stats["pids"]["limit"] == 50
        if use_hugetlb:
            assert open(os.path.join(mp, cid, "hugetlb.2MB.max")).read().strip() == "6291456"
            assert stats["hugetlb"]["2MB"]["max"] == 6291456
            ours("update", "-r", "-", cid,
                 input='{"hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}]}')  # fmt: skip
            assert open(os.path.join(mp, cid, "hugetlb.2MB.max")).read().strip() == "4194304"
        ours("delete", "--force", cid)
        assert not os.path.exists(os.path.join(mp, cid))
    finally:
        ours("delete", "--force", cid, check=False)
        for ctrl in set(open(os.path.join(mp, "cgroup.subtree_control")).read().split()) - set(
            before
        ):
            with open(os.path.join(mp, "cgroup.subtree_control"), "w") as f:
                f.write("-" + ctrl)


def test_real_v2_pause_resume_through_cgroup_freeze(ours, bundle):
    """pause/resume/state with cgroup.freeze: a container created here, whose recorded
    cgroups are then cut down to its v2 one, as a unified host records them."""
    from ocibox.runtime.container import STATE_FILE

    mounts = fs.hierarchies()
    if "unified" not in mounts or os.geteuid() != 0:
        pytest.skip("needs root and a cgroup v2 hierarchy")
    cid = ours.new_id()
    b = bundle.write(["sleep", "30"], lambda c: c["linux"].update(cgroupsPath=f"/{cid}"))
    ours("run", "-d", "--bundle", b, cid)
    state_path = ours.root / cid / STATE_FILE
    state = json.loads(state_path.read_text())
    v2_path = state["cgroupPaths"]["unified"]
    state["cgroupPaths"] = {"unified": v2_path}
    state_path.write_text(json.dumps(state))
    ours("pause", cid)
    assert ours.state(cid)["status"] == "paused"
    assert "frozen 1" in open(os.path.join(v2_path, "cgroup.events")).read()
    assert not os.path.exists(f"/sys/fs/cgroup/freezer/{cid}/freezer.state") or (
        open(f"/sys/fs/cgroup/freezer/{cid}/freezer.state").read().strip() == "THAWED"
    )
    ours("resume", cid)
    assert ours.state(cid)["status"] == "running"
    assert "frozen 0" in open(os.path.join(v2_path, "cgroup.events")).read()
    ours("pause", cid)
    ours("delete", "--force", cid)  # thawed so that it dies
    assert not os.path.exists(v2_path)


# --- whole containers on a unified host: this host's v2 hierarchy, seen alone --


@pytest.fixture
def ours_unified(tmp_path_factory, ours):
    """ocibox-runtime run in a private mount namespace where the host's v2 hierarchy is
    mounted on /sys/fs/cgroup and the v1 ones are unmounted: what a unified host shows.
    The kernel does everything for real; only the v1 controllers stay, unseen."""
    import shutil
    import sys

    # tests/runtime/conftest.py's Runtime, without importing "conftest" by name
    # (another directory's conftest may hold that name in a whole-suite run)
    Runtime = type(ours)
    mp = _unified_mount()
    if os.geteuid() != 0 or not mp or not shutil.which("unshare"):
        pytest.skip("needs root, unshare and a cgroup v2 hierarchy")
    wrap = ("umount -R /sys/fs/cgroup 2>/dev/null; mount -t cgroup2 cgroup2 /sys/fs/cgroup "
            '&& exec "$0" "$@"')  # fmt: skip
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", wrap,
            sys.executable, "-m", "ocibox.runtime.cli"]  # fmt: skip
    rt = Runtime("ocibox-runtime (unified)", argv, tmp_path_factory.mktemp("ours-v2-root"))
    before = open(os.path.join(mp, "cgroup.subtree_control")).read().split()
    yield rt, mp
    rt.cleanup()
    for ctrl in set(open(os.path.join(mp, "cgroup.subtree_control")).read().split()) - set(before):
        with open(os.path.join(mp, "cgroup.subtree_control"), "w") as f:
            f.write("-" + ctrl)


def test_real_unified_container_lifecycle(ours_unified, bundle):
    ours, mp = ours_unified
    cid = ours.new_id()
    resources: dict = {
        "devices": [{"allow": False, "access": "rwm"},
                    {"allow": True, "type": "c", "major": 1, "minor": 11, "access": "w"}],
        "unified": {"cgroup.max.descendants": "4"},
    }  # fmt: skip
    if "hugetlb" in v2.available(mp):
        resources["hugepageLimits"] = [{"pageSize": "2MB", "limit": 2097152}]
    kmsg = {"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11, "fileMode": 0o600}

    def edit(c):
        c["linux"].update(resources=resources, devices=[kmsg])
        for kind in ("bounding", "effective", "permitted"):  # reading kmsg needs CAP_SYSLOG
            c["process"]["capabilities"][kind].append("CAP_SYSLOG")

    b = bundle.write(["sleep", "30"], edit)
    ours("run", "-d", "--bundle", b, cid)
    st = ours.state(cid)
    cg = os.path.join(mp, cid)
    assert str(st["pid"]) in open(os.path.join(cg, "cgroup.procs")).read().split()
    assert open(os.path.join(cg, "cgroup.max.descendants")).read().strip() == "4"
    if "hugepageLimits" in resources:
        assert open(os.path.join(cg, "hugetlb.2MB.max")).read().strip() == "2097152"
    # No v1 cgroup was made: on a unified host there is none.
    assert not os.path.exists(_v1_place("memory", cid))
    # The device program decides what the container opens.
    p = ours("exec", cid, "sh", "-c", "(exec 3</dev/kmsg) && echo r-ok || echo r-no", check=False)
    assert "r-no" in p.stdout and "Operation not permitted" in p.stderr + p.stdout
    p = ours("exec", cid, "sh", "-c", "(exec 4>/dev/kmsg) && echo w-ok || echo w-no", check=False)
    assert "w-ok" in p.stdout
    p = ours("exec", cid, "sh", "-c", "echo x > /dev/null && echo null-ok", check=False)
    assert "null-ok" in p.stdout  # a default device
    # pause and resume through cgroup.freeze
    ours("pause", cid)
    assert ours.state(cid)["status"] == "paused"
    assert "frozen 1" in open(os.path.join(cg, "cgroup.events")).read()
    ours("resume", cid)
    assert ours.state(cid)["status"] == "running"
    # update writes v2 files; events reads them
    ours("update", "-r", "-", cid, input='{"unified": {"cgroup.max.descendants": "6"}}')
    assert open(os.path.join(cg, "cgroup.max.descendants")).read().strip() == "6"
    p = ours("update", "--memory", "64m", cid, check=False)
    if "memory" in v2.available(mp):  # a pure v2 host (tests/runtime/test_cgroup2_vm.py's VM)
        assert p.returncode == 0, p.stderr
        assert open(os.path.join(cg, "memory.max")).read().strip() == str(64 << 20)
    else:  # this hybrid host: v2 has no memory controller
        assert p.returncode != 0 and "memory controller is not available" in p.stderr
    ev = json.loads(ours("events", "--stats", cid).stdout)
    assert ev["type"] == "stats" and ev["data"]["pids"]["current"] >= 1
    assert ev["data"]["cpu"]["usage"]["total"] > 0
    ours("delete", "--force", cid)
    assert not os.path.exists(cg)


_RULE_SETS = {
    "deny-all, allow kmsg w": [{"allow": False, "access": "rwm"},
                               {"allow": True, "type": "c", "major": 1, "minor": 11,
                                "access": "w"}],
    "allow-all, deny kmsg r": [{"allow": True, "access": "rwm"},
                               {"allow": False, "type": "c", "major": 1, "minor": 11,
                                "access": "r"}],
    "deny-all, allow c *:* rw": [{"allow": False, "access": "rwm"},
                                 {"allow": True, "type": "c", "access": "rw"}],
    "deny-all, deny null": [{"allow": False, "access": "rwm"},
                            {"allow": False, "type": "c", "major": 1, "minor": 3,
                             "access": "rwm"}],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(_RULE_SETS))
def test_real_unified_devices_match_runc_v1(ours_unified, runc, bundle, name):
    """The same device rules give the same opens under runc (v1 devices cgroup on this
    hybrid host) and under ocibox-runtime's eBPF program (v2)."""
    ours, _ = ours_unified
    kmsg = {"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11, "fileMode": 0o600}
    probe = "; ".join(f"(exec 3{op}{dev}) 2>/dev/null && echo {dev}:{m}:ok || echo {dev}:{m}:no"
                      for dev in ("/dev/kmsg", "/dev/null", "/dev/zero")
                      for op, m in (("<", "r"), (">", "w")))  # fmt: skip
    rules = _RULE_SETS[name]

    def edit(c):
        c["linux"].update(resources={"devices": rules}, devices=[kmsg])
        for kind in ("bounding", "effective", "permitted"):  # reading kmsg needs CAP_SYSLOG
            c["process"]["capabilities"][kind].append("CAP_SYSLOG")

    b = bundle.write(["sh", "-c", probe], edit)
    out = {}
    for rt in (runc, ours):
        p = rt("run", "--bundle", b, rt.new_id(), check=False)
        out[rt.name] = p.stdout.split()
        assert p.returncode == 0, (rt.name, p.stderr)
    assert out["runc"] == out[ours.name], out
    assert len(out["runc"]) == 6


def test_real_unified_update_replaces_device_rules(ours_unified, bundle):
    ours, mp = ours_unified
    cid = ours.new_id()
    kmsg = {"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11, "fileMode": 0o600}
    deny_kmsg_r = [{"allow": True, "access": "rwm"},
                   {"allow": False, "type": "c", "major": 1, "minor": 11, "access": "r"}]  # fmt: skip

    def edit(c):
        c["linux"].update(resources={"devices": deny_kmsg_r}, devices=[kmsg])
        for kind in ("bounding", "effective", "permitted"):  # reading kmsg needs CAP_SYSLOG
            c["process"]["capabilities"][kind].append("CAP_SYSLOG")

    def reads_kmsg() -> bool:
        p = ours("exec", cid, "sh", "-c", "(exec 3</dev/kmsg) && echo r-ok || echo r-no",
                 check=False)  # fmt: skip
        assert ("r-ok" in p.stdout) != ("r-no" in p.stdout), p.stdout + p.stderr
        return "r-ok" in p.stdout

    ours("run", "-d", "--bundle", bundle.write(["sleep", "30"], edit), cid)
    try:
        cg = os.path.join(mp, cid)
        assert not reads_kmsg()
        ours("update", "-r", "-", cid, input=json.dumps({"devices": [{"allow": True,
                                                                       "access": "rwm"}]}))  # fmt: skip
        assert reads_kmsg()
        assert len(ebpf.attached(cg)) == 1
        ours("update", "-r", "-", cid, input=json.dumps({"devices": deny_kmsg_r}))
        assert not reads_kmsg()
        # An update without devices leaves the rules as they are.
        ours("update", "-r", "-", cid, input='{"unified": {"cgroup.max.descendants": "6"}}')
        assert not reads_kmsg()
        assert len(ebpf.attached(cg)) == 1
    finally:
        ours("delete", "--force", cid)


def test_update_replaces_v1_device_rules(ours, bundle):
    # a hybrid host: the rules live in the v1 devices cgroup; update replaces them
    # (the default devices, /dev/null and the like, stay allowed, as at create)
    if not os.path.isdir("/sys/fs/cgroup/devices"):
        pytest.skip("no v1 devices hierarchy")
    kmsg_w = {"allow": True, "type": "c", "major": 1, "minor": 11, "access": "w"}
    kmsg = {"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11, "fileMode": 0o600}

    def edit(c):
        c["linux"].update(devices=[kmsg])
        c["linux"].setdefault("resources", {})["devices"] = [{"allow": False, "access": "rwm"}, kmsg_w]

    cid = ours.new_id()
    ours("run", "-d", "--bundle", bundle.write(["sleep", "30"], edit), cid)
    probe = ["sh", "-c", "(echo ocibox-probe > /dev/kmsg) && echo w-ok || echo w-no"]
    assert "w-ok" in ours("exec", cid, *probe).stdout
    ours("update", "-r", "-", cid, input=json.dumps({"devices": [{"allow": False, "access": "rwm"}]}))
    assert "w-no" in ours("exec", cid, *probe, check=False).stdout
    assert "w-ok" in ours("exec", cid, "sh", "-c", "(echo x > /dev/null) && echo w-ok").stdout
    ours("update", "-r", "-", cid, input=json.dumps({"devices": [kmsg_w]}))
    assert "w-ok" in ours("exec", cid, *probe).stdout
    # a bad rule changes nothing
    bad = ours("update", "-r", "-", cid, input=json.dumps({"devices": [{"allow": True, "type": "q"}]}),
               check=False)  # fmt: skip
    assert bad.returncode != 0
    assert "w-ok" in ours("exec", cid, *probe).stdout
    ours("delete", "--force", cid)


def _v1_place(ctrl: str, cid: str) -> str:
    """Where a container with no cgroupsPath goes in a v1 hierarchy: under the runtime's
    (this test's) own cgroup there, as runc places it."""
    with open("/proc/self/cgroup") as f:
        own = {n: line.strip().split(":", 2)[2] for line in f for n in line.split(":")[1].split(",")}
    return f"/sys/fs/cgroup/{ctrl}{own.get(ctrl, '/').rstrip('/')}/{cid}"

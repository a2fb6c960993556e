"""exec --cgroup (runc 1.1's): the exec'd process joins an existing sub-cgroup of the container's.

These tests check the process lands where asked (its /proc/<pid>/cgroup), per
controller on cgroup v1, and that a missing sub-cgroup, a path leaving the
container's cgroup or an unknown controller is refused before anything runs; the
forms of the flag runc refuses (more than one ':', a path without controllers
next to another --cgroup) are refused by both.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root]


def _cgroup_of(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        for name in names.split(",") if names else ["unified"]:
            out[name] = path
    return out


@pytest.fixture
def running(ours, bundle):
    """A running container in its own cgroups; delete must take the sub-cgroups made with them."""
    cid = ours.new_id()
    name = f"ocibox-exec-cg-{uuid.uuid4().hex[:8]}"

    def edit(cfg):
        cfg["linux"]["cgroupsPath"] = f"/{name}"

    ours("run", "-d", "--bundle", bundle.write(["sleep", "100"], edit), cid)
    paths = json.loads((ours.root / cid / "state.json").read_text())["cgroupPaths"]
    made: list[str] = []
    yield cid, name, paths, made
    ours("delete", "--force", cid)
    left = [d for d in [*made, *paths.values()] if os.path.isdir(d)]
    for d in sorted(left, key=len, reverse=True):
        os.rmdir(d)
    assert not left, "delete left cgroups behind"


def _stat(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return " Z "  # gone


def _mkdir(made, path: str) -> None:
    os.mkdir(path)
    made.append(path)
    cpus = Path(path).parent / "cpuset.cpus"
    if cpus.exists():  # a cpuset child takes no task until it has cpus and mems
        Path(path, "cpuset.cpus").write_text(cpus.read_text())
        Path(path, "cpuset.mems").write_text((Path(path).parent / "cpuset.mems").read_text())


def test_exec_joins_a_sub_cgroup_of_each_controller_named(ours, running, tmp_path):
    cid, name, paths, made = running
    if set(paths) == {"unified"}:
        pytest.skip("per-controller paths are cgroup v1's")
    for controller in ("memory", "pids"):
        _mkdir(made, os.path.join(paths[controller], "sub"))
    pid_file = tmp_path / "pid"
    ours("exec", "-d", "--pid-file", str(pid_file), "--cgroup", "memory,pids:sub", cid, "sleep", "30")
    where = _cgroup_of(int(pid_file.read_text()))
    assert where["memory"] == where["pids"] == f"/{name}/sub"
    assert where["cpu"] == where["freezer"] == f"/{name}"
    # repeated: one path per controller
    _mkdir(made, os.path.join(paths["memory"], "sub", "deeper"))
    ours("exec", "-d", "--pid-file", str(pid_file), "--cgroup", "memory:sub/deeper",
         "--cgroup", "pids:/sub/", cid, "sleep", "30")  # fmt: skip
    where = _cgroup_of(int(pid_file.read_text()))
    assert (where["memory"], where["pids"], where["cpu"]) == (f"/{name}/sub/deeper", f"/{name}/sub", f"/{name}")


def test_exec_joins_the_sub_cgroup_in_every_hierarchy(ours, running, tmp_path):
    cid, name, paths, made = running
    for path in dict.fromkeys(paths.values()):
        _mkdir(made, os.path.join(path, "all"))
    pid_file = tmp_path / "pid"
    ours("exec", "-d", "--pid-file", str(pid_file), "--cgroup", "all", cid, "sleep", "30")
    where = _cgroup_of(int(pid_file.read_text()))
    assert {where[c] for c in paths} == {f"/{name}/all"}


@pytest.mark.parametrize("spec, error", [
    ("nosuch", "does not exist"),
    ("../../escape", "must stay inside the container's cgroup"),
    ("memory,nosuchctl:sub", "no such controller in the container's cgroups: nosuchctl"),
    (",memory:sub", "an empty controller name before the ':'"),
])  # fmt: skip
def test_bad_sub_cgroups_are_refused_before_anything_runs(ours, running, tmp_path, spec, error):
    cid, _, paths, _ = running
    if "memory" not in paths and ":" in spec:
        pytest.skip("per-controller paths are cgroup v1's")
    p = ours("exec", "--cgroup", spec, cid, "touch", "/ran", check=False)
    assert p.returncode != 0 and error in p.stderr, p.stderr
    rootfs = Path(ours.state(cid)["rootfs"])
    assert not (rootfs / "ran").exists()
    assert len(ours("ps", "--format", "json", cid).stdout.strip("[]\n").split(",")) == 1


@pytest.mark.parametrize("specs, error", [
    (["memory:sub:x"], "use [CONTROLLER[,CONTROLLER...]:]PATH"),
    (["sub", "memory:sub"], "a path without controllers is for every hierarchy, and then the only"),
])  # fmt: skip
def test_forms_runc_refuses_are_refused(both, bundle, specs, error):
    cid = both.new_id()
    both("run", "-d", "--bundle", bundle.write(["sleep", "100"]), cid)
    flags = [f for spec in specs for f in ("--cgroup", spec)]
    p = both("exec", *flags, cid, "touch", "/ran", check=False)
    # runc: invalid --cgroup argument: memory:sub:x, sub (missing <controller>: prefix)
    assert p.returncode == 255, p.stderr
    assert ("invalid --cgroup argument" if both.name == "runc" else error) in p.stderr, p.stderr
    assert not (bundle.rootfs / "ran").exists()
    both("delete", "--force", cid)


def test_delete_waits_for_a_sub_cgroup_whose_process_is_leaving(tmp_path):
    """cgroup_remove as delete calls it: the container's cgroup has a sub-cgroup (an exec
    --cgroup's) whose process is killed just after the removal starts. The container's
    cgroup is retried while the killed process leaves, and so must its sub-cgroup be:
    removed once, too early, it would keep the container's busy for good."""
    import subprocess
    import threading

    from ocibox.runtime.linux.cgroup_remove import remove

    hierarchy = "/sys/fs/cgroup/pids" if os.path.isdir("/sys/fs/cgroup/pids") else "/sys/fs/cgroup"
    own = os.path.join(hierarchy, f"ocibox-rm-{uuid.uuid4().hex[:8]}")
    os.mkdir(own)
    os.mkdir(os.path.join(own, "sub"))
    sleeper = subprocess.Popen(["sleep", "100"])
    try:
        Path(own, "sub", "cgroup.procs").write_text(str(sleeper.pid))
        killer = threading.Timer(0.1, sleeper.kill)  # while remove is retrying, well within its wait
        killer.start()
        remove([own], own=[own])
        killer.join()
        assert not os.path.exists(own)
    finally:
        sleeper.kill()
        sleeper.wait()
        for d in (os.path.join(own, "sub"), own):
            if os.path.isdir(d):
                os.rmdir(d)


@pytest.mark.parametrize("host_pid_ns", [False, True])
def test_ps_and_kill_all_see_the_sub_cgroups(both, bundle, tmp_path, host_pid_ns):
    # As runc's GetAllPids: a process exec'd into a sub-cgroup is the container's too,
    # for ps and for kill --all (which, sharing the host's pid namespace, has only the
    # cgroups to find it by).
    cid = both.new_id()
    name = f"ocibox-exec-cg-{uuid.uuid4().hex[:8]}"

    def edit(cfg):
        cfg["linux"]["cgroupsPath"] = f"/{name}"
        if host_pid_ns:
            cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"]
                                          if n["type"] != "pid"]  # fmt: skip

    both("run", "-d", "--bundle", bundle.write(["sleep", "100"], edit), cid)
    made: list[str] = []
    try:
        for top in Path("/sys/fs/cgroup").iterdir():
            if not top.is_symlink() and (top / name).is_dir():
                _mkdir(made, str(top / name / "sub"))
        pid_file = tmp_path / "pid"
        both("exec", "-d", "--pid-file", str(pid_file), "--cgroup", "sub", cid, "sleep", "100")
        execd = int(pid_file.read_text())
        init = both.state(cid)["pid"]
        listed = json.loads(both("ps", "--format", "json", cid).stdout)
        assert sorted(listed) == sorted([init, execd])
        both("kill", "--all", cid, "KILL")
        deadline = time.monotonic() + 5
        while Path(f"/proc/{execd}").exists() and " Z " not in _stat(execd):
            assert time.monotonic() < deadline, f"kill --all left the exec'd process {execd}"
            time.sleep(0.05)
    finally:
        both("delete", "--force", cid)
        for d in sorted(made, key=len, reverse=True):
            if os.path.isdir(d):
                os.rmdir(d)

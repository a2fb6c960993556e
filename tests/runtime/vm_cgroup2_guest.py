"""Run inside the vmhost guest (pure cgroup v2) by test_cgroup2_vm.py: the same bundles under
runc and ocibox-runtime; every observation goes into one JSON file for the host to compare.

    python vm_cgroup2_guest.py REPO OUT.json

Each scenario runs once per runtime and records plain data (file contents, exit codes,
outputs); nothing is asserted here, so that one boot reports everything.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from vm_guest_common import cat, run_scenarios  # beside this script, on its sys.path

REPO, OUT = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(REPO, "src"))

from ocibox.runtime.linux import ebpf  # noqa: E402
from ocibox.runtime.spec import default_config  # noqa: E402

CG = "/sys/fs/cgroup"
MIB = 1 << 20
# ours as users run it: the checkout's lean launcher (python -I -S, `make venv`), else -m
_LAUNCHER = os.path.join(REPO, ".venv", "bin", "ocibox-runtime")
_OURS = (
    [_LAUNCHER] if os.access(_LAUNCHER, os.X_OK) else [sys.executable, "-m", "ocibox.runtime.cli"]
)
RUNTIMES = {"runc": ["runc"], "ours": _OURS}
ENV = dict(os.environ, PYTHONPATH=os.path.join(REPO, "src"))
FILES = ("memory.max", "memory.low", "memory.high", "memory.swap.max", "cpu.max", "cpu.weight",
         "cpu.idle", "cpuset.cpus", "cpuset.mems", "pids.max", "io.weight", "io.bfq.weight",
         "io.max", "hugetlb.2MB.max", "hugetlb.1GB.max", "cgroup.freeze",
         "cgroup.subtree_control", "cgroup.controllers")  # fmt: skip
VDA = (254, 0)  # the virtio disk vmhost adds (disk_mb)
results: dict = {}


def rt(name: str, *args: str, stdin: str | None = None, timeout: float = 120) -> dict:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.run([*RUNTIMES[name], "--root", f"/run/vmt-{name}", *args], env=ENV,
                           stdout=out, stderr=err, timeout=timeout,
                           input=stdin.encode() if stdin is not None else None,
                           stdin=None if stdin is not None else subprocess.DEVNULL)  # fmt: skip
        out.seek(0)
        err.seek(0)
        return {"rc": p.returncode, "out": out.read().decode(errors="replace"),
                "err": err.read().decode(errors="replace")}  # fmt: skip


def files(path: str) -> dict:
    return {name: cat(os.path.join(path, name)) for name in FILES}


ROOTFS = "/tmp/bundles/rootfs"  # one read-only busybox root for every bundle


def _rootfs() -> str:
    if not os.path.isdir(ROOTFS):
        for d in ("bin", "etc", "proc", "sys", "dev", "tmp"):
            os.makedirs(f"{ROOTFS}/{d}")
        shutil.copy2("/bin/busybox", f"{ROOTFS}/bin/busybox")
        listing = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True)
        for applet in listing.stdout.split():
            if applet != "busybox":
                os.symlink("busybox", f"{ROOTFS}/bin/{applet}")
        with open(f"{ROOTFS}/etc/passwd", "w") as f:
            f.write("root:x:0:0:root:/root:/bin/sh\n")
    return ROOTFS


def bundle(name: str, args: list[str], resources: dict, cgroups_path: str | None,
           devices: list[dict] | None = None) -> str:  # fmt: skip
    path = f"/tmp/bundles/{name}"
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    config = default_config(terminal=False)
    config["process"]["args"] = args
    config["root"] = {"path": _rootfs(), "readonly": True}
    config["linux"]["resources"] = resources
    if cgroups_path is not None:
        config["linux"]["cgroupsPath"] = cgroups_path
    if devices:
        config["linux"]["devices"] = devices
    with open(f"{path}/config.json", "w") as f:
        json.dump(config, f, indent=1)
    return path


def own_cgroup(pid: int) -> str | None:
    text = cat(f"/proc/{pid}/cgroup") or ""
    return next((line[3:] for line in text.splitlines() if line.startswith("0::")), None)


def wait_file(path: str, text: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cat(path) or ""
        if text in got:
            return got
        time.sleep(0.1)
    return cat(path) or ""


def device_programs(path: str) -> list[str]:
    return ebpf.names(path)


# --- scenarios ---------------------------------------------------------------

RESOURCES = {
    "memory": {"limit": 256 * MIB, "reservation": 128 * MIB, "swap": 512 * MIB},
    "cpu": {
        "shares": 512,
        "quota": 50000,
        "period": 100000,
        "cpus": "0-1",
        "mems": "0",
        "idle": 0,
    },  # fmt: skip
    "pids": {"limit": 50},
    "blockIO": {
        "weight": 300,
        "throttleReadBpsDevice": [{"major": VDA[0], "minor": VDA[1], "rate": 1048576}],
        "throttleWriteIOPSDevice": [{"major": VDA[0], "minor": VDA[1], "rate": 100}],
    },  # fmt: skip
    "hugepageLimits": [{"pageSize": "2MB", "limit": 4 * MIB}],
    "unified": {"memory.high": str(200 * MIB), "pids.max": "40"},
    "devices": [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "b", "major": VDA[0], "minor": VDA[1], "access": "r"},
    ],  # fmt: skip
}
INSIDE = r"""
echo "== files"
for f in memory.max memory.low memory.high memory.swap.max cpu.max cpu.weight cpuset.cpus pids.max io.weight io.max hugetlb.2MB.max; do
  echo "$f=$(cat /sys/fs/cgroup/$f 2>&1 | tr '\n' ';')"
done
echo "cgroup=$(cat /proc/self/cgroup)"
echo "== devices"
echo x > /dev/null && echo "null-write=ok"
head -c 512 /dev/vda > /dev/null 2>/dev/shm/e; echo "vda-read=$? $(cat /dev/shm/e)"
dd if=/dev/zero of=/dev/vda bs=512 count=1 2>/dev/shm/e; echo "vda-write=$? $(grep -o 'Operation not permitted' /dev/shm/e)"
head -c 1 /dev/kmsg > /dev/null 2>/dev/shm/e; echo "kmsg-read=$? $(cat /dev/shm/e)"
echo "== ready"
exec sleep 100000
"""


def scenario_resources(name: str) -> dict:
    """create with every resource, then pause/resume, update, events, devices, delete."""
    cid = f"res-{name}"
    cgpath = f"/vmtest/{name}/c1"
    host = CG + cgpath
    devices = [{"path": "/dev/vda", "type": "b", "major": VDA[0], "minor": VDA[1]},
               {"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11}]  # fmt: skip
    b = bundle(cid, ["sh", "-c", INSIDE], RESOURCES, cgpath, devices)
    r: dict = {}
    log = f"/tmp/{cid}.out"
    with open(log, "w") as out:
        p = subprocess.run([*RUNTIMES[name], "--root", f"/run/vmt-{name}", "create", "--bundle", b,
                            cid], env=ENV, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                           timeout=120)  # fmt: skip
    r["create_rc"] = p.returncode
    if p.returncode != 0:
        r["create_out"] = cat(log)
        return r
    r["created"] = files(host)
    r["programs_created"] = device_programs(host)
    rt(name, "start", cid)
    r["inside"] = wait_file(log, "== ready")
    st = json.loads(rt(name, "state", cid)["out"] or "{}")
    r["pid_cgroup"] = own_cgroup(st.get("pid", 0))
    r["pause"] = rt(name, "pause", cid)
    r["paused_state"] = json.loads(rt(name, "state", cid)["out"] or "{}").get("status")
    r["paused_files"] = {"cgroup.freeze": cat(f"{host}/cgroup.freeze"),
                         "frozen": "frozen 1" in (cat(f"{host}/cgroup.events") or "")}  # fmt: skip
    r["resume"] = rt(name, "resume", cid)
    r["resumed_state"] = json.loads(rt(name, "state", cid)["out"] or "{}").get("status")
    r["resumed_freeze"] = cat(f"{host}/cgroup.freeze")
    update = {"memory": {"limit": 300 * MIB, "swap": 600 * MIB, "reservation": 100 * MIB},
              "cpu": {"shares": 1024, "quota": 20000, "period": 100000, "cpus": "1"},
              "pids": {"limit": 30}, "blockIO": {"weight": 700},
              "unified": {"memory.high": str(250 * MIB)}}  # fmt: skip
    r["update_resources"] = rt(name, "update", "--resources", "-", cid, stdin=json.dumps(update))
    r["after_update"] = files(host)
    r["update_flags"] = rt(name, "update", "--memory", "200M", "--memory-swap", "400M",
                           "--memory-reservation", "64M", "--cpu-quota", "30000", "--cpu-period",
                           "50000", "--cpu-share", "256", "--pids-limit", "40", "--cpuset-cpus",
                           "0", "--cpuset-mems", "0", "--blkio-weight", "500", cid)  # fmt: skip
    r["after_flags"] = files(host)
    r["update_swap_unlimited"] = rt(name, "update", "--memory-swap", "-1", cid)
    r["after_swap_unlimited"] = files(host)
    r["update_bad"] = rt(name, "update", "--memory", "lots", cid)
    events = rt(name, "events", "--stats", cid)
    r["events_rc"] = events["rc"]
    try:
        r["events"] = json.loads(events["out"])
    except ValueError:
        r["events"] = events
    # Device rules replaced by update: write access to vda now; the program list after.
    r["exec_write_before"] = rt(name, "exec", cid, "sh", "-c",
                                "dd if=/dev/zero of=/dev/vda bs=512 count=1 2>&1; echo rc=$?")  # fmt: skip
    rules = {"devices": [{"allow": False, "access": "rwm"},
                         {"allow": True, "type": "b", "major": VDA[0], "minor": VDA[1],
                          "access": "rw"}]}  # fmt: skip
    r["update_devices"] = rt(name, "update", "--resources", "-", cid, stdin=json.dumps(rules))
    r["exec_write_after"] = rt(name, "exec", cid, "sh", "-c",
                               "dd if=/dev/zero of=/dev/vda bs=512 count=1 2>&1; echo rc=$?")  # fmt: skip
    r["programs_after_update"] = device_programs(host)
    # Programs another tool attached to the container's cgroup: one, then two.
    for n in (1, 2):
        for _ in range(n):
            fd = ebpf.load(ebpf.assemble([("a", -1, -1, "rwm", True)]), name=b"foreign")
            ebpf.attach(host, fd)
            os.close(fd)
        r[f"programs_with_{n}_foreign"] = device_programs(host)
        r[f"update_devices_{n}_foreign"] = rt(name, "update", "--resources", "-", cid,
                                              stdin=json.dumps(rules))  # fmt: skip
        r[f"programs_after_{n}_foreign"] = device_programs(host)
    r["kill"] = rt(name, "kill", cid, "KILL")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if json.loads(rt(name, "state", cid)["out"] or "{}").get("status") == "stopped":
            break
        time.sleep(0.2)
    r["delete"] = rt(name, "delete", cid)
    r["after_delete"] = {p: os.path.exists(p) for p in (host, os.path.dirname(host))}
    r["state_after_delete_rc"] = rt(name, "state", cid)["rc"]
    return r


def scenario_foreign(name: str) -> dict:
    """create in a cgroup that already has device programs of another tool (one, two):
    only the runtime's own program is left."""
    out = {}
    for n in (1, 2):
        cid = f"foreign{n}-{name}"
        cgpath = f"/vmtest/{cid}"
        os.makedirs(CG + cgpath)
        for _ in range(n):
            fd = ebpf.load(ebpf.assemble([("a", -1, -1, "rwm", True)]), name=b"foreign")
            ebpf.attach(CG + cgpath, fd)
            os.close(fd)
        before = device_programs(CG + cgpath)
        b = bundle(cid, ["sh", "-c", "head -c 1 /dev/kmsg >/dev/null; echo kmsg=$?"], {}, cgpath,
                   [{"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11}])  # fmt: skip
        c = rt(name, "create", "--bundle", b, cid)
        after = device_programs(CG + cgpath) if c["rc"] == 0 else None
        start = rt(name, "start", cid)
        time.sleep(1)
        rt(name, "delete", "--force", cid)
        out[n] = {"create": c, "before": before, "after": after, "start": start,
                  "cgroup_left": os.path.exists(CG + cgpath)}  # fmt: skip
    return out


EDGES = {
    "memory-unlimited": {"memory": {"limit": -1}},
    "memory-swap-unlimited": {"memory": {"limit": 64 * MIB, "swap": -1}},
    "memory-reservation-only": {"memory": {"reservation": 32 * MIB}},
    "memory-swap-below-limit": {"memory": {"limit": 64 * MIB, "swap": 32 * MIB}},
    "memory-swap-no-limit": {"memory": {"swap": 64 * MIB}},
    "memory-kernel": {"memory": {"limit": 64 * MIB, "kernel": 32 * MIB}},
    "memory-kernel-tcp": {"memory": {"limit": 64 * MIB, "kernelTCP": 16 * MIB}},
    "memory-swappiness": {"memory": {"swappiness": 10}},
    "memory-no-oom-killer": {"memory": {"disableOOMKiller": True}},
    "cpu-quota-max": {"cpu": {"quota": -1, "period": 50000}},
    "cpu-period-only": {"cpu": {"period": 200000}},
    "cpu-quota-only": {"cpu": {"quota": 20000}},
    "cpu-shares-min": {"cpu": {"shares": 2}},
    "cpu-shares-max": {"cpu": {"shares": 262144}},
    "cpu-idle": {"cpu": {"idle": 1}},
    "cpu-realtime": {"cpu": {"realtimeRuntime": 1000}},
    "cpuset-missing-cpu": {"cpu": {"cpus": "5"}},
    "io-weight-device": {
        "blockIO": {"weightDevice": [{"major": VDA[0], "minor": VDA[1], "weight": 500}]}
    },  # fmt: skip
    "io-weight-bounds": {"blockIO": {"weight": 10}},
    "io-weight-top": {"blockIO": {"weight": 1000}},
    "io-leaf-weight": {"blockIO": {"leafWeight": 10}},
    "hugetlb-bad-size": {"hugepageLimits": [{"pageSize": "3MB", "limit": 1}]},
    "unified-unknown-file": {"unified": {"cpu.nonsense": "1"}},
    "unified-cgroup-file": {"unified": {"cgroup.max.descendants": "5"}},
    "unified-over-memory": {"memory": {"limit": 64 * MIB}, "unified": {"memory.max": "100003840"}},
    "pids-unlimited": {"pids": {"limit": -1}},
    "rdma-no-device": {"rdma": {"mlx5_0": {"hcaHandles": 3}}},
}


def scenario_edges(name: str) -> dict:
    """One create per resource corner: did it work, and what did it write."""
    out = {}
    for label, res in EDGES.items():
        cid = f"edge-{label}-{name}"
        cgpath = f"/edges-{name}/{label}"
        b = bundle(cid, ["sleep", "100000"], res, cgpath)
        c = rt(name, "create", "--bundle", b, cid)
        out[label] = {"rc": c["rc"], "err": c["err"][-300:],
                      "files": files(CG + cgpath) if c["rc"] == 0 else None}  # fmt: skip
        rt(name, "delete", "--force", cid)
        out[label]["left"] = os.path.exists(CG + cgpath)
    return out


def scenario_lifecycle(name: str) -> dict:
    """exec joins the cgroup; ps lists from it; a paused container is deleted by force."""
    cid = f"life-{name}"
    cgpath = f"/vmtest/{cid}"
    b = bundle(cid, ["sleep", "100000"], {"pids": {"limit": 20}}, cgpath)
    r = {"create": rt(name, "create", "--bundle", b, cid), "start": rt(name, "start", cid)}
    r["exec_cgroup"] = rt(name, "exec", cid, "cat", "/proc/self/cgroup")
    r["exec_procs"] = rt(name, "exec", cid, "sh", "-c", "wc -l < /sys/fs/cgroup/cgroup.procs")
    ps = rt(name, "ps", "--format", "json", cid)
    r["ps"] = {"rc": ps["rc"], "count": len(json.loads(ps["out"])) if ps["rc"] == 0 else None}
    r["pause"] = rt(name, "pause", cid)
    r["exec_paused"] = rt(name, "exec", cid, "true", timeout=30)["rc"]
    r["kill_paused"] = rt(name, "kill", cid, "TERM")
    r["state_paused"] = json.loads(rt(name, "state", cid)["out"] or "{}").get("status")
    r["delete_force"] = rt(name, "delete", "--force", cid)
    r["left"] = os.path.exists(CG + cgpath)
    return r


def scenario_cgroupns(name: str) -> dict:
    """The runtime inside a cgroup namespace (as in a container): cgroup2 mounted afresh
    shows the namespace's root, which has a cgroup.type; the walk up must stop there."""
    cid = f"cgns-{name}"
    top = f"{CG}/ns-{name}"
    os.makedirs(top)
    b = bundle(cid, ["sleep", "100000"], {"pids": {"limit": 7}}, "/ctr")
    argv = " ".join(RUNTIMES[name])
    inner = (f"umount /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup && mkdir /sys/fs/cgroup/leaf && "
             f"echo $$ > /sys/fs/cgroup/leaf/cgroup.procs && "
             f"{argv} --root /run/vmt-{name} create --bundle {b} {cid}")  # fmt: skip
    outer = f"echo $$ > {top}/cgroup.procs && exec unshare --cgroup --mount --propagation private sh -c '{inner}'"
    with tempfile.TemporaryFile() as err:  # a file: the container keeps its stdio open
        p = subprocess.run(["sh", "-c", outer], env=ENV, stdout=subprocess.DEVNULL, stderr=err,
                           stdin=subprocess.DEVNULL, timeout=120)  # fmt: skip
        err.seek(0)
        p.stderr = err.read().decode(errors="replace")
    st = json.loads(rt(name, "state", cid)["out"] or "{}")
    cg = own_cgroup(st.get("pid", 0)) if p.returncode == 0 else None
    r = {"rc": p.returncode, "err": p.stderr[-500:], "cgroup": cg,
         "pids.max": cat(f"{CG}{cg}/pids.max") if cg else None}  # fmt: skip
    r["delete"] = rt(name, "delete", "--force", cid)["rc"]
    return r


def scenario_oom(name: str) -> dict:
    """A 32 MiB container (no swap) whose dd asks for a 64 MiB buffer."""
    cid = f"oom-{name}"
    script = ("dd if=/dev/zero of=/dev/null bs=64M count=1 2>/dev/null; echo dd=$?; "
              "cat /sys/fs/cgroup/memory.events | tr '\\n' ';'")  # fmt: skip
    res = {"memory": {"limit": 32 * MIB, "swap": 32 * MIB}}
    b = bundle(cid, ["sh", "-c", script], res, f"/vmtest/{cid}")
    return rt(name, "run", "--bundle", b, cid)


def scenario_pids(name: str) -> dict:
    """A fork bomb, capped by pids.max."""
    cid = f"pids-{name}"
    # ash exits (status 2) when it cannot fork: the bomb runs in a subshell, and what
    # follows uses builtins only until the sleeps are gone.
    script = """(i=0; while [ $i -lt 40 ]; do sleep 30 & i=$((i+1)); done) 2>/dev/shm/e
echo sub=$?
read events < /sys/fs/cgroup/pids.events; echo "events=$events"
read cur < /sys/fs/cgroup/pids.current; echo "current=$cur"
kill -9 -1; wait
read err < /dev/shm/e; echo "err=$err"
"""
    b = bundle(cid, ["sh", "-c", script], {"pids": {"limit": 10}}, f"/vmtest/{cid}")
    return rt(name, "run", "--bundle", b, cid)


def scenario_paths(name: str) -> dict:
    """Where a relative cgroupsPath, an absolute one and none at all put the container, with
    the runtime started from the cgroup /runner/driver (as a service manager would)."""
    out = {}
    for label, cgpath in (("relative", f"rel-{name}/x"), ("absolute", f"/abs-{name}/x"),
                          ("none", None)):  # fmt: skip
        cid = f"path-{label}-{name}"
        b = bundle(cid, ["sleep", "100000"], {"pids": {"limit": 20}}, cgpath)
        c = rt(name, "create", "--bundle", b, cid)
        st = json.loads(rt(name, "state", cid)["out"] or "{}")
        cg = own_cgroup(st.get("pid", 0)) if c["rc"] == 0 else None
        out[label] = {"create": c, "cgroup": cg,
                      "pids.max": cat(f"{CG}{cg}/pids.max") if cg else None}  # fmt: skip
        rt(name, "delete", "--force", cid)
        out[label]["removed"] = not os.path.exists(f"{CG}{cg}") if cg else None
    return out


def main() -> None:
    # The runtimes run from a leaf cgroup, as under a service manager: a relative
    # cgroupsPath is then relative to it (runc: to its parent).
    os.makedirs(f"{CG}/runner/driver", exist_ok=True)
    with open(f"{CG}/runner/driver/cgroup.procs", "w") as f:
        f.write(str(os.getpid()))
    results["host"] = {"mountinfo_cgroup": [line for line in open("/proc/self/mountinfo")
                                            if "cgroup" in line],
                       "root_subtree_control": cat(f"{CG}/cgroup.subtree_control"),
                       "vda": os.path.exists("/dev/vda")}  # fmt: skip
    run_scenarios((
        scenario_resources,
        scenario_foreign,
        scenario_oom,
        scenario_pids,
        scenario_paths,
        scenario_lifecycle,
        scenario_edges,
        scenario_cgroupns,
    ), RUNTIMES, results, OUT)


if __name__ == "__main__":
    main()

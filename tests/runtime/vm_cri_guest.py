"""Run inside a vmhost guest with systemd as PID 1 by test_runtime_cri_systemd_vm.py: a
private containerd (test_runtime_cri's config, client and images) whose two handlers,
runc and ocibox, have ``SystemdCgroup = true``, and the same pod session under each.

    python vm_cri_guest.py REPO OUT.json

The pod's cgroup parent is kubelet's with cgroupDriver systemd
(/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice), so
containerd gives the runtime "kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>"
and the containers are the scopes cri-containerd-<id>.scope. Each session's
transcript (ids as SID, CID, UID) is one list of lines; nothing is asserted here.
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
from test_runtime_cri import CONTAINER, STATES, pb
from vm_guest_common import cat, run_scenarios

REPO, OUT = sys.argv[1], sys.argv[2]
WORK = Path("/var/lib/ocibox-cri")  # a tmpfs: containerd's overlayfs snapshots need one
CG = "/sys/fs/cgroup"
V2 = os.path.exists(f"{CG}/cgroup.controllers")
PROPS = ["Slice", "ControlGroup", "Delegate", "DefaultDependencies", "Description",
         "ActiveState", "MemoryAccounting", "CPUAccounting", "TasksAccounting",
         "IOAccounting" if V2 else "BlockIOAccounting", "CPUQuotaPerSecUSec",
         "CPUQuotaPeriodUSec", "TasksMax", "DevicePolicy", "DeviceAllow"]  # fmt: skip
PROPS += (["MemoryMax", "MemorySwapMax", "MemoryLow", "CPUWeight"] if V2
          else ["MemoryLimit", "CPUShares"])  # fmt: skip
# the container's cgroup files: "controller/file" on v1 (hybrid), "file" on v2
FILES = (("memory.max", "memory.swap.max", "cpu.max", "cpu.weight", "pids.max") if V2 else
         ("memory/memory.limit_in_bytes", "cpu,cpuacct/cpu.cfs_quota_us",
          "cpu,cpuacct/cpu.cfs_period_us", "cpu,cpuacct/cpu.shares", "pids/pids.max"))  # fmt: skip
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


def scenario_pod(handler: str) -> dict:
    """A kubelet-like pod (systemd slice parent), a container with limits, its units and
    cgroup files, an update, stats, a stop, removal and what is left."""
    node = NODE
    out: list[str] = []
    uid = str(uuid.uuid4()).replace("-", "_")
    pod_slice = f"kubepods-besteffort-pod{uid}.slice"
    parent = f"/kubepods.slice/kubepods-besteffort.slice/{pod_slice}"
    log_dir = WORK / f"pods-{handler}"
    log_dir.mkdir()
    sandbox = cri._sandbox_config("web", str(log_dir), parent, CONTAINER, {}, False)
    sid = node.cri("RunPodSandbox", pb((1, sandbox), (2, handler))).str(1)
    ids = {sid: "SID", uid: "UID"}
    info = json.loads(node.cri("PodSandboxStatus", pb((1, sid), (2, True))).map(2)["info"])
    out.append(f"sandbox cgroup {_pid_cgroup(info['pid'])}")
    out += [f"sandbox unit {p}" for p in show(f"cri-containerd-{sid}.scope")]
    out.append(f"slice {show(pod_slice)}")

    script = "trap 'echo got TERM; exit 9' TERM; while true; do sleep 0.2; done"
    resources = pb((1, 100000), (2, 50000), (3, 512), (4, 128 << 20))  # period, quota, shares, mem
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
    resources = pb((1, 100000), (2, 25000), (3, 256), (4, 64 << 20))
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
    out.append(f"held {node.held(handler)}")
    out.append(f"left units {units('cri-containerd-*')}")
    out.append(f"left dirs {dirs_under(parent.lstrip('/'))}")
    # the pod's slice is kubelet's to remove: what the runtime left of it, then it goes
    out.append(f"left slice {sh('systemctl', 'show', '-pLoadState', '-pActiveState', pod_slice)}")
    sh("systemctl", "stop", pod_slice)
    besteffort = "kubepods.slice/kubepods-besteffort.slice"
    left = [d for d in dirs_under(besteffort) if d.endswith(f":{pod_slice}")]
    out.append(f"slice stopped {units(pod_slice)} {left}")
    for d in left:  # on v1, the hierarchies systemd does not manage: kubelet removes them
        os.rmdir(os.path.join(CG, d.split(":")[0], besteffort, pod_slice))
    text = json.dumps(out)
    for raw, name in ids.items():
        text = text.replace(raw, name)
    return {"transcript": json.loads(text)}


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
        run_scenarios([scenario_pod], cri.HANDLERS, results, OUT)
    finally:
        NODE.daemon.stop()
        log = cat(str(WORK / "containerd.log")) or ""
        results["containerd_errors"] = [line for line in log.splitlines() if "level=error" in line]
        with open(OUT, "w") as f:
            json.dump(results, f, indent=1)


NODE: cri.Node
if __name__ == "__main__":
    main()

"""linux.resources on the cgroup v2 (unified) hierarchy, converted as runc 1.1 converts them.

One directory, named by cgroupsPath. A controller is enabled in the
``cgroup.subtree_control`` of every ancestor when a resource first needs it
(at create, or later by update). Devices are an eBPF program (see ebpf.py).

    memory.limit        -> memory.max           memory.reservation -> memory.low
    memory.swap         -> memory.swap.max      (swap is memory+swap in the spec, so minus limit)
    cpu.shares          -> cpu.weight           (1 + (shares - 2) * 9999 / 262142)
    cpu.quota, period   -> cpu.max              ("max" for a quota of -1)
    cpu.idle            -> cpu.idle             cpu.cpus, mems -> cpuset.cpus, cpuset.mems
    pids.limit          -> pids.max             blockIO.weight -> io.bfq.weight or io.weight
    blockIO.throttle*   -> io.max               hugepageLimits -> hugetlb.<size>.max
    rdma                -> rdma.max             unified        -> written as given
"""

from __future__ import annotations

import os

from ....errors import BundleError, NotImplementedYet
from .fs import device_rules, join, makedirs, read, remove, write


def apply(mountpoint: str, rel: str, resources: dict, pid: int, *,
          devices: bool = True) -> tuple[dict, list]:  # fmt: skip
    """Create the container's cgroup, set its limits and devices, and move ``pid`` in."""
    path = os.path.join(mountpoint, rel)
    created = makedirs(path)
    try:
        enable_all(path)
        set_resources(path, resources)
        if devices:
            set_devices(path, resources.get("devices") or [])
        join({"unified": path}, pid)
    except BaseException:
        remove(created)
        raise
    return {"unified": path}, created


def set_resources(path: str, resources: dict) -> None:
    """Every resource but devices (at create, and by update)."""
    set_memory(path, resources.get("memory") or {})
    set_cpu(path, resources.get("cpu") or {})
    set_pids(path, resources.get("pids") or {})
    set_io(path, resources.get("blockIO") or {})
    set_hugetlb(path, resources.get("hugepageLimits") or [])
    set_rdma(path, resources.get("rdma") or {})
    set_unified(path, resources.get("unified") or {})


# --- controllers -------------------------------------------------------------


def available(path: str) -> set[str]:
    """The controllers the cgroup at ``path`` can have (its parent's subtree_control may
    still need them turned on: see enable)."""
    return set(read(path, "cgroup.controllers").split())


def ancestors(path: str) -> list[str]:
    """The cgroups above ``path``, nearest first, up to the hierarchy's root: the one with
    no cgroup.type, or, in a cgroup namespace (whose root has one), the mount's top."""
    chain = []
    dev = os.stat(path).st_dev
    p = os.path.dirname(path)
    while True:
        chain.append(p)
        parent = os.path.dirname(p)
        if (parent == p or not os.path.exists(os.path.join(p, "cgroup.type"))
                or os.stat(parent).st_dev != dev):  # fmt: skip
            return chain
        p = parent


def enable_all(path: str) -> None:
    """Every controller the hierarchy has, turned on in each ancestor's subtree_control where
    it can be, as runc does at create: the container (and a manager nested in it) sees them
    all. Best effort, as runc's: a resource that needs a controller still missing fails in
    enable with the reason."""
    for p in reversed(ancestors(path)):
        missing = set(available(p)) - set(read(p, "cgroup.subtree_control").split())
        if not missing:
            continue
        try:
            write(p, "cgroup.subtree_control", " ".join("+" + c for c in sorted(missing)))
        except BundleError:
            for controller in sorted(missing):
                try:
                    write(p, "cgroup.subtree_control", "+" + controller)
                except BundleError:
                    pass


def enable(path: str, controller: str, what: str) -> None:
    """Turn ``controller`` on in the subtree_control of every ancestor of ``path``."""
    chain = ancestors(path)
    for p in reversed(chain):
        if controller in read(p, "cgroup.subtree_control").split():
            continue
        if controller not in available(p):
            raise NotImplementedYet(
                f"{what}: the {controller} controller is not available on the cgroup v2 "
                f"hierarchy ({p}/cgroup.controllers has {read(p, 'cgroup.controllers') or 'none'})"
            )
        try:
            with open(os.path.join(p, "cgroup.subtree_control"), "w") as f:
                f.write("+" + controller)
        except OSError as e:
            raise BundleError(
                f"{what}: enabling {controller} in {p}/cgroup.subtree_control: {e.strerror}",
                hint="a cgroup v2 with processes of its own cannot enable controllers for its "
                "children; choose a cgroupsPath under a cgroup without processes",
            ) from None


def _num(value: int) -> str:
    """runc's numToStr: 0 is "leave alone", -1 is "max"."""
    if value == 0:
        return ""
    return "max" if value < 0 else str(value)


def swap_max(swap: int | None, limit: int | None) -> str:
    """memory.swap.max from the spec's memory+swap ``swap`` (runc's conversion)."""
    if not swap and limit == -1:
        return "max"  # an unlimited memory with swap unset: both unlimited, as on v1
    if swap is None or swap == 0:
        return ""
    if swap < 0:
        return "max"
    if not limit or limit < 0:
        raise BundleError("linux.resources.memory.swap: a swap limit needs a memory limit")
    if swap < limit:
        raise BundleError("linux.resources.memory.swap: memory+swap must be >= the memory limit")
    return str(swap - limit)


def set_memory(path: str, mem: dict) -> None:
    if not mem:
        return
    if mem.get("swappiness") is not None:
        raise NotImplementedYet("linux.resources.memory.swappiness: not available on cgroup v2")
    for key in ("kernel", "kernelTCP"):
        if mem.get(key) is not None:
            # runc ignores them too, and the runtime-spec marks them NOT RECOMMENDED: configs
            # made for v1 hosts carry them, and refusing would break those here.
            from .fs import warning

            warning(f"linux.resources.memory.{key}: no kernel memory limit on cgroup v2; "
                    "ignored")  # fmt: skip
    if mem.get("disableOOMKiller"):
        raise NotImplementedYet("linux.resources.memory.disableOOMKiller: not available on "
                                "cgroup v2")  # fmt: skip
    swap = swap_max(mem.get("swap"), mem.get("limit"))
    limit = _num(mem.get("limit") or 0)
    low = _num(mem.get("reservation") or 0)
    if not (swap or limit or low):
        return
    enable(path, "memory", "linux.resources.memory")
    if swap and not os.path.exists(os.path.join(path, "memory.swap.max")):
        if mem.get("swap"):
            raise NotImplementedYet("linux.resources.memory.swap: this kernel has no swap "
                                    "accounting (no memory.swap.max)")  # fmt: skip
        swap = ""  # only implied by an unlimited memory: nothing to lift
    if swap:
        write(path, "memory.swap.max", swap)
    if limit:
        write(path, "memory.max", limit)
    if low:
        write(path, "memory.low", low)


def cpu_weight(shares: int) -> int:
    """cpu.shares (2..262144) to cpu.weight (1..10000), as runc 1.1 maps them."""
    if shares == 0:
        return 0
    return 1 + ((shares - 2) * 9999) // 262142


def cpu_max(quota: int | None, period: int | None) -> str:
    if not quota and not period:
        return ""
    text = str(quota) if quota and quota > 0 else "max"
    return f"{text} {period}" if period else text


def set_cpu(path: str, cpu: dict) -> None:
    if not cpu:
        return
    for key in ("realtimePeriod", "realtimeRuntime"):
        if cpu.get(key):
            raise NotImplementedYet(f"linux.resources.cpu.{key}: no realtime scheduling limits "
                                    "on cgroup v2")  # fmt: skip
    weight = cpu_weight(cpu.get("shares") or 0)
    limit = cpu_max(cpu.get("quota"), cpu.get("period"))
    if weight or limit or cpu.get("idle") is not None:
        enable(path, "cpu", "linux.resources.cpu")
    if weight:
        write(path, "cpu.weight", str(weight))
    if limit:
        write(path, "cpu.max", limit)
    if cpu.get("idle") is not None:
        write(path, "cpu.idle", str(cpu["idle"]))
    for key, name in (("cpus", "cpuset.cpus"), ("mems", "cpuset.mems")):
        if cpu.get(key):
            enable(path, "cpuset", f"linux.resources.cpu.{key}")
            write(path, name, cpu[key])


def set_pids(path: str, pids: dict) -> None:
    value = _num(pids.get("limit") or 0)
    if value:
        enable(path, "pids", "linux.resources.pids")
        write(path, "pids.max", value)


def io_weight(weight: int) -> int:
    """blkio.weight (10..1000) to io.weight (1..10000), as runc maps them."""
    return 1 + (weight - 10) * 9999 // 990 if weight else 0


_THROTTLE = (("throttleReadBpsDevice", "rbps"), ("throttleWriteBpsDevice", "wbps"),
             ("throttleReadIOPSDevice", "riops"), ("throttleWriteIOPSDevice", "wiops"))  # fmt: skip


def io_max_lines(blkio: dict) -> list[str]:
    lines = []
    for key, name in _THROTTLE:
        for i, d in enumerate(blkio.get(key) or []):
            if "major" not in d or "minor" not in d:
                raise BundleError(f"linux.resources.blockIO.{key}[{i}]: major and minor needed")
            rate = d.get("rate") or 0
            lines.append(f"{d['major']}:{d['minor']} {name}={rate if rate > 0 else 'max'}")
    return lines


def set_io(path: str, blkio: dict) -> None:
    if not blkio:
        return
    lines = io_max_lines(blkio)
    weight = blkio.get("weight") or 0
    devices = blkio.get("weightDevice") or []
    if not (weight or devices or lines):
        return
    enable(path, "io", "linux.resources.blockIO")
    bfq = os.path.exists(os.path.join(path, "io.bfq.weight"))
    if weight:
        # BFQ takes blkio's own scale; io.weight has the wider v2 one.
        if bfq:
            write(path, "io.bfq.weight", str(weight))
        else:
            write(path, "io.weight", str(io_weight(weight)))
    for i, d in enumerate(devices):
        if d.get("weight") is None:
            continue
        if not bfq:
            raise NotImplementedYet(f"linux.resources.blockIO.weightDevice[{i}]: per-device "
                                    "weights need the BFQ scheduler (io.bfq.weight)")  # fmt: skip
        write(path, "io.bfq.weight", f"{d['major']}:{d['minor']} {d['weight']}")
    for line in lines:
        write(path, "io.max", line)


def set_hugetlb(path: str, limits: list[dict]) -> None:
    if not limits:
        return
    enable(path, "hugetlb", "linux.resources.hugepageLimits")
    for i, h in enumerate(limits):
        size = h.get("pageSize", "")
        name = f"hugetlb.{size}.max"
        if not size or "/" in size or not os.path.exists(os.path.join(path, name)):
            raise BundleError(f"linux.resources.hugepageLimits[{i}]: no huge page size {size!r} "
                              "on this host")  # fmt: skip
        write(path, name, str(h.get("limit", 0)))


def rdma_lines(rdma: dict) -> list[str]:
    lines = []
    for dev, lim in sorted(rdma.items()):
        parts = [dev]
        if lim.get("hcaHandles") is not None:
            parts.append(f"hca_handle={lim['hcaHandles']}")
        if lim.get("hcaObjects") is not None:
            parts.append(f"hca_object={lim['hcaObjects']}")
        if len(parts) > 1:
            lines.append(" ".join(parts))
    return lines


def set_rdma(path: str, rdma: dict) -> None:
    lines = rdma_lines(rdma)
    if lines:
        enable(path, "rdma", "linux.resources.rdma")
    for line in lines:
        write(path, "rdma.max", line)


def set_unified(path: str, unified: dict) -> None:
    """linux.resources.unified: each key a file of the container's cgroup, written verbatim."""
    for key, value in unified.items():
        where = f"linux.resources.unified[{key!r}]"
        controller, dot, _ = key.partition(".")
        if "/" in key or not dot or not controller or key.startswith("."):
            raise BundleError(f"{where}: must be a file name CONTROLLER.PARAMETER")
        if not isinstance(value, str):
            raise BundleError(f"{where}: the value must be a string")
        if controller != "cgroup":
            enable(path, controller, where)
        if not os.path.isfile(os.path.join(path, key)):
            raise BundleError(f"{where}: the cgroup has no file {key}")
        write(path, key, value)


def set_devices(path: str, rules: list[dict]) -> None:
    from .. import ebpf

    ebpf.set_devices(path, device_rules(rules))


# --- freezer -----------------------------------------------------------------


def frozen(path: str) -> bool:
    return "frozen 1" in read(path, "cgroup.events").splitlines()


def freeze(path: str, want: bool) -> None:
    """cgroup.freeze, then wait until cgroup.events says it is done."""
    import time

    if not os.path.exists(os.path.join(path, "cgroup.freeze")):
        raise NotImplementedYet(f"{path}: this kernel has no cgroup.freeze (needs Linux 5.2)")
    write(path, "cgroup.freeze", "1" if want else "0")
    deadline = time.monotonic() + 5.0
    while frozen(path) != want:
        if time.monotonic() > deadline:
            raise BundleError(f"{path}: cgroup.freeze did not take effect in 5 s")
        time.sleep(0.001)

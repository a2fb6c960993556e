"""linux.cgroupsPath and linux.resources on cgroup v1, and the hybrid layout.

One directory per v1 hierarchy, named by cgroupsPath (default: the id, under the
runtime's own cgroup in each hierarchy, see relative_paths), joined by writing the intermediate's pid before it unshares anything, so that a
new cgroup namespace is rooted there. On a hybrid host the process is placed
in the v2 hierarchy as well (as runc does); a controller that no v1 hierarchy
has but the v2 one offers (hugetlb on these machines) is set there, as are the
keys of linux.resources.unified.
"""

from __future__ import annotations

import os

from ....errors import BundleError, NotImplementedYet
from .fs import device_rules, join, makedirs, read, relative_path, remove, write


def relative_paths(mounts: dict[str, str], cid: str, cgroups_path: str | None) -> dict[str, str]:
    """Where the container goes in each hierarchy of ``mounts``, relative to its mount.

    As runc 1.1's fs manager: an absolute cgroupsPath from each root; a relative
    one, and none (the id), under the runtime's own cgroup in each v1 hierarchy,
    but from the root of the v2 one of a hybrid host.
    """
    if cgroups_path and cgroups_path.startswith("/"):
        rel = relative_path(cid, cgroups_path)
        return {ctrl: rel for ctrl in mounts}
    from .fs import own_v1

    own = own_v1()
    return {ctrl: relative_path(cid, cgroups_path, "" if ctrl == "unified" else own.get(ctrl, ""))
            for ctrl in mounts}  # fmt: skip


def apply(mounts: dict[str, str], rel: str | dict[str, str], resources: dict, pid: int, *,
          devices: bool = True) -> tuple[dict, list]:  # fmt: skip
    """Create the container's cgroups, set limits, and move ``pid`` into them.

    ``rel``: the place in every hierarchy, or each one's (see relative_paths).
    Returns the cgroup of each controller, and the directories made here (only
    those are removed on delete: a cgroup the container did not create stays).
    """
    paths: dict[str, str] = {}
    created: list[str] = []
    try:
        for ctrl, mp in mounts.items():
            path = os.path.join(mp, rel if isinstance(rel, str) else rel[ctrl])
            created += makedirs(path)
            paths[ctrl] = path
        if "cpuset" in paths:
            _init_cpuset(mounts["cpuset"], paths["cpuset"])
        set_resources(paths, resources)
        if devices and "devices" in paths:
            _set_devices(paths["devices"], resources.get("devices") or [])
        join(paths, pid)
    except BaseException:
        remove(created)
        raise
    return paths, created


def set_resources(paths: dict[str, str], resources: dict) -> None:
    """Every resource but devices (at create, and by update)."""
    _set_memory(paths.get("memory"), resources.get("memory") or {})
    _set_cpu(paths.get("cpu"), paths.get("cpuset"), resources.get("cpu") or {})
    _set_pids(paths.get("pids"), resources.get("pids") or {})
    _set_blkio(paths.get("blkio"), resources.get("blockIO") or {})
    _set_hugetlb(paths, resources.get("hugepageLimits") or [])
    _set_rdma(paths, resources.get("rdma") or {})
    if resources.get("unified"):
        if "unified" not in paths:
            raise NotImplementedYet("linux.resources.unified: this host has no cgroup v2 "
                                    "hierarchy")  # fmt: skip
        from . import v2

        v2.set_unified(paths["unified"], resources["unified"])


def _init_cpuset(root_mp: str, path: str) -> None:
    # A new cpuset cgroup has no cpus or mems; copy them down from the nearest ancestor.
    chain = []
    p = path
    while p != root_mp and p.startswith(root_mp):
        chain.append(p)
        p = os.path.dirname(p)
    for p in reversed(chain):
        for name in ("cpuset.cpus", "cpuset.mems"):
            with open(os.path.join(p, name)) as f:
                if f.read().strip():
                    continue
            with open(os.path.join(os.path.dirname(p), name)) as f:
                write(p, name, f.read().strip())


def _set_memory(path: str | None, mem: dict) -> None:
    # As runc's: a limit, swap or reservation of 0 is one left unset (v2's mapping too).
    limit, swap, reservation = (mem.get(k) or None for k in ("limit", "swap", "reservation"))
    wanted = (limit, swap, reservation, mem.get("swappiness"))
    if wanted == (None,) * 4 and not mem.get("disableOOMKiller"):
        return
    if path is None:
        raise BundleError("linux.resources.memory: no memory cgroup on this host")
    memsw = os.path.exists(os.path.join(path, "memory.memsw.limit_in_bytes"))
    if limit == -1 and swap is None and memsw:
        swap = -1  # as runc: unlimited memory lifts a swap limit not given too
    # memsw must stay >= limit at every step: raise it first when it grows (or
    # goes unlimited), lower it after the memory limit when it shrinks.
    if limit is not None:
        if swap is not None and memsw:
            if swap == -1 or swap > _int_or_max(read(path, "memory.memsw.limit_in_bytes")):
                write(path, "memory.memsw.limit_in_bytes", str(swap))
                write(path, "memory.limit_in_bytes", str(limit))
            else:
                write(path, "memory.limit_in_bytes", str(limit))
                write(path, "memory.memsw.limit_in_bytes", str(swap))
        else:
            write(path, "memory.limit_in_bytes", str(limit))
    elif swap is not None:
        write(path, "memory.memsw.limit_in_bytes", str(swap))
    if reservation is not None:
        write(path, "memory.soft_limit_in_bytes", str(reservation))
    if mem.get("swappiness") is not None:
        write(path, "memory.swappiness", str(mem["swappiness"]))
    if mem.get("disableOOMKiller"):
        write(path, "memory.oom_control", "1")


def _int_or_max(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 1 << 63  # unreadable: treat as unlimited, so swap is written second


def _set_cpu(path: str | None, cpuset: str | None, cpu: dict) -> None:
    if not cpu:
        return
    for key, name in (("shares", "cpu.shares"), ("period", "cpu.cfs_period_us"),
                      ("quota", "cpu.cfs_quota_us"), ("realtimePeriod", "cpu.rt_period_us"),
                      ("realtimeRuntime", "cpu.rt_runtime_us"), ("idle", "cpu.idle")):  # fmt: skip
        # as runc's: 0 is unset, but for idle (a pointer in runc's config: 0 is written)
        if cpu.get(key) or (key == "idle" and cpu.get(key) is not None):
            if path is None:
                raise BundleError(f"linux.resources.cpu.{key}: no cpu cgroup on this host")
            write(path, name, str(cpu[key]))
    for key, name in (("cpus", "cpuset.cpus"), ("mems", "cpuset.mems")):
        if cpu.get(key):
            if cpuset is None:
                raise BundleError(f"linux.resources.cpu.{key}: no cpuset cgroup on this host")
            write(cpuset, name, cpu[key])


def _set_pids(path: str | None, pids: dict) -> None:
    if "limit" not in pids:
        return
    if path is None:
        raise BundleError("linux.resources.pids: no pids cgroup on this host")
    limit = pids["limit"]
    if limit == 0:
        return  # as runc: 0 leaves the limit as it is; a negative value lifts it
    write(path, "pids.max", "max" if limit < 0 else str(limit))


_THROTTLE = (("throttleReadBpsDevice", "blkio.throttle.read_bps_device"),
             ("throttleWriteBpsDevice", "blkio.throttle.write_bps_device"),
             ("throttleReadIOPSDevice", "blkio.throttle.read_iops_device"),
             ("throttleWriteIOPSDevice", "blkio.throttle.write_iops_device"))  # fmt: skip


def _set_blkio(path: str | None, blkio: dict) -> None:
    # as runc's: a weight of 0 is one left unset
    if not any(v not in (None, [], 0) for v in blkio.values()):
        return
    if path is None:
        raise BundleError("linux.resources.blockIO: no blkio cgroup on this host")
    if blkio.get("weight"):
        write(path, "blkio.weight", str(blkio["weight"]))
    if blkio.get("leafWeight"):
        write(path, "blkio.leaf_weight", str(blkio["leafWeight"]))
    for d in blkio.get("weightDevice") or []:
        if d.get("weight"):
            write(path, "blkio.weight_device", f"{d['major']}:{d['minor']} {d['weight']}")
        if d.get("leafWeight"):
            write(path, "blkio.leaf_weight_device", f"{d['major']}:{d['minor']} {d['leafWeight']}")
    for key, name in _THROTTLE:
        for d in blkio.get(key) or []:
            write(path, name, f"{d['major']}:{d['minor']} {d.get('rate', 0)}")


def _set_hugetlb(paths: dict[str, str], limits: list[dict]) -> None:
    if not limits:
        return
    from . import v2  # only when asked: create's start-up stays lean on v1 hosts

    path = paths.get("hugetlb")
    if path is None:
        # No v1 hugetlb hierarchy: the v2 one of a hybrid host may have the controller.
        if "unified" in paths and "hugetlb" in v2.available(v2.ancestors(paths["unified"])[-1]):
            v2.set_hugetlb(paths["unified"], limits)
            return
        raise BundleError("linux.resources.hugepageLimits: no hugetlb cgroup on this host")
    for i, h in enumerate(limits):
        name = f"hugetlb.{h.get('pageSize', '')}.limit_in_bytes"
        if "/" in name or not os.path.exists(os.path.join(path, name)):
            raise BundleError(f"linux.resources.hugepageLimits[{i}]: no huge page size "
                              f"{h.get('pageSize')!r} on this host")  # fmt: skip
        write(path, name, str(h.get("limit", 0)))


def _set_rdma(paths: dict[str, str], rdma: dict) -> None:
    if not rdma:
        return
    from . import v2

    lines = v2.rdma_lines(rdma)
    if not lines:
        return
    if "rdma" in paths:
        for line in lines:
            write(paths["rdma"], "rdma.max", line)
    elif "unified" in paths and "rdma" in v2.available(v2.ancestors(paths["unified"])[-1]):
        v2.set_rdma(paths["unified"], rdma)
    else:
        raise BundleError("linux.resources.rdma: no rdma cgroup on this host")


def _rule(kind: str, major: int, minor: int, access: str) -> str:
    if kind == "a":
        return f"a *:* {access}"
    ma = "*" if major is None or major < 0 else str(major)
    mi = "*" if minor is None or minor < 0 else str(minor)
    return f"{kind} {ma}:{mi} {access}"


def _set_devices(path: str, rules: list[dict]) -> None:
    for kind, ma, mi, access, allow in device_rules(rules):
        write(path, "devices.allow" if allow else "devices.deny", _rule(kind, ma, mi, access))


def replace_devices(path: str, rules: list[dict]) -> None:
    """The device rules become ``rules`` alone (update): deny-all, then each in order."""
    write(path, "devices.deny", "a *:* rwm")
    _set_devices(path, rules)


def freeze(path: str, want: bool) -> None:
    """freezer.state, written until it reads back as asked (FREEZING passes on its own)."""
    import time

    state = "FROZEN" if want else "THAWED"
    deadline = time.monotonic() + 5.0
    while True:
        write(path, "freezer.state", state)
        with open(os.path.join(path, "freezer.state")) as f:
            if f.read().strip() == state:
                return
        if time.monotonic() > deadline:
            raise BundleError(f"{path}: the freezer did not reach {state} in 5 s")
        time.sleep(0.001)

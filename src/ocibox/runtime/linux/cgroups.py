"""linux.cgroupsPath and linux.resources on cgroup v1 (and the hybrid layout).

One directory per v1 hierarchy, named by cgroupsPath (default ``/<id>``),
joined by writing the intermediate's pid before it unshares anything, so that a
new cgroup namespace is rooted there. Basic limits: memory, cpu, cpuset, pids,
and the devices list (the spec's rules, then the default devices allowed).
On a pure cgroup v2 host only membership is done for now.
"""

from __future__ import annotations

import errno
import os
import time

from ...errors import BundleError, NotImplementedYet

ROOT = "/sys/fs/cgroup"

# Devices every container may use, whatever linux.resources.devices says:
# (type, major, minor, access); -1 is "*".
DEFAULT_ALLOWED = (
    ("c", -1, -1, "m"), ("b", -1, -1, "m"),
    ("c", 1, 3, "rwm"), ("c", 1, 8, "rwm"), ("c", 1, 7, "rwm"), ("c", 5, 0, "rwm"),
    ("c", 1, 5, "rwm"), ("c", 1, 9, "rwm"), ("c", 136, -1, "rwm"), ("c", 5, 2, "rwm"),
    ("c", 10, 200, "rwm"),
)  # fmt: skip


def hierarchies() -> dict[str, str]:
    """Controller name -> mount point of every cgroup v1 hierarchy (plus "unified")."""
    out = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype, _, opts = right.split(" ", 2)
            mountpoint = left.split(" ")[4]
            if fstype == "cgroup":
                for opt in opts.strip().split(","):
                    if opt in ("rw", "ro") or "=" in opt and not opt.startswith("name="):
                        continue
                    out.setdefault(opt, mountpoint)
            elif fstype == "cgroup2":
                out.setdefault("unified", mountpoint)
    return out


def _path_for(cid: str, cgroups_path: str | None) -> str:
    path = cgroups_path or "/" + cid
    if ":" in path and not path.startswith("/"):
        raise NotImplementedYet(
            f"cgroupsPath {path!r} looks like a systemd slice; only cgroupfs paths work"
        )
    return path.strip("/")


def apply(cid: str, cgroups_path: str | None, resources: dict, pid: int) -> tuple[dict, list]:
    """Create the container's cgroups, set limits, and move ``pid`` into them.

    Returns the cgroup of each controller, and the directories made here (only
    those are removed on delete: a cgroup the container did not create stays).
    """
    rel = _path_for(cid, cgroups_path)
    mounts = hierarchies()
    if set(mounts) == {"unified"}:
        return _apply_v2_membership(mounts["unified"], rel, resources, pid)
    paths: dict[str, str] = {}
    created: list[str] = []
    try:
        for ctrl, mp in mounts.items():
            path = os.path.join(mp, rel)
            created += _makedirs(path)
            paths[ctrl] = path
        if "cpuset" in paths:
            _init_cpuset(mounts["cpuset"], paths["cpuset"])
        set_resources(paths, resources)
        if "devices" in paths:
            _set_devices(paths["devices"], resources.get("devices") or [])
        for path in dict.fromkeys(paths.values()):
            _write(path, "cgroup.procs", str(pid))
    except BaseException:
        remove(created)
        raise
    return paths, created


def set_resources(paths: dict[str, str], resources: dict) -> None:
    """Set the memory, cpu, cpuset and pids limits (at create, and by update)."""
    _set_memory(paths.get("memory"), resources.get("memory") or {})
    _set_cpu(paths.get("cpu"), paths.get("cpuset"), resources.get("cpu") or {})
    _set_pids(paths.get("pids"), resources.get("pids") or {})
    if resources.get("blockIO") and resources["blockIO"].get("weight") is not None:
        if "blkio" not in paths:
            raise BundleError("linux.resources.blockIO: no blkio cgroup on this host")
        _write(paths["blkio"], "blkio.weight", str(resources["blockIO"]["weight"]))


def _makedirs(path: str) -> list[str]:
    """mkdir -p, returning the directories it made, deepest last."""
    made = []
    missing = []
    p = path
    while not os.path.isdir(p):
        missing.append(p)
        p = os.path.dirname(p)
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o755)
        except FileExistsError:
            continue
        except OSError as e:
            raise BundleError(f"creating cgroup {d}: {e.strerror}") from None
        made.append(d)
    return made


def _apply_v2_membership(mp: str, rel: str, resources: dict, pid: int) -> tuple[dict, list]:
    if any(resources.get(k) for k in ("memory", "cpu", "pids", "blockIO", "hugepageLimits")):
        raise NotImplementedYet("cgroup v2 resource limits are not supported yet")
    path = os.path.join(mp, rel)
    created = _makedirs(path)
    _write(path, "cgroup.procs", str(pid))
    return {"unified": path}, created


def _write(path: str, name: str, value: str) -> None:
    try:
        with open(os.path.join(path, name), "w") as f:
            f.write(value)
    except OSError as e:
        raise BundleError(f"cgroup {os.path.join(path, name)} = {value}: {e.strerror}") from None


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
                _write(p, name, f.read().strip())


def _set_memory(path: str | None, mem: dict) -> None:
    if not mem:
        return
    if path is None:
        raise BundleError("linux.resources.memory: no memory cgroup on this host")
    limit, swap = mem.get("limit"), mem.get("swap")
    # memsw must stay >= limit: raise it first when growing, lower it last when shrinking.
    if limit is not None:
        if swap is not None and os.path.exists(os.path.join(path, "memory.memsw.limit_in_bytes")):
            _write(path, "memory.memsw.limit_in_bytes", str(swap))
            _write(path, "memory.limit_in_bytes", str(limit))
        else:
            _write(path, "memory.limit_in_bytes", str(limit))
    elif swap is not None:
        _write(path, "memory.memsw.limit_in_bytes", str(swap))
    if mem.get("reservation") is not None:
        _write(path, "memory.soft_limit_in_bytes", str(mem["reservation"]))
    if mem.get("swappiness") is not None:
        _write(path, "memory.swappiness", str(mem["swappiness"]))
    if mem.get("disableOOMKiller"):
        _write(path, "memory.oom_control", "1")


def _set_cpu(path: str | None, cpuset: str | None, cpu: dict) -> None:
    if not cpu:
        return
    for key, name in (("shares", "cpu.shares"), ("period", "cpu.cfs_period_us"),
                      ("quota", "cpu.cfs_quota_us"), ("realtimePeriod", "cpu.rt_period_us"),
                      ("realtimeRuntime", "cpu.rt_runtime_us")):  # fmt: skip
        if cpu.get(key) is not None:
            if path is None:
                raise BundleError(f"linux.resources.cpu.{key}: no cpu cgroup on this host")
            _write(path, name, str(cpu[key]))
    for key, name in (("cpus", "cpuset.cpus"), ("mems", "cpuset.mems")):
        if cpu.get(key):
            if cpuset is None:
                raise BundleError(f"linux.resources.cpu.{key}: no cpuset cgroup on this host")
            _write(cpuset, name, cpu[key])


def _set_pids(path: str | None, pids: dict) -> None:
    if "limit" not in pids:
        return
    if path is None:
        raise BundleError("linux.resources.pids: no pids cgroup on this host")
    limit = pids["limit"]
    if limit == 0:
        return  # as runc: 0 leaves the limit as it is; a negative value lifts it
    _write(path, "pids.max", "max" if limit < 0 else str(limit))


def _rule(kind: str, major: int, minor: int, access: str) -> str:
    if kind == "a":
        return f"a *:* {access}"
    ma = "*" if major is None or major < 0 else str(major)
    mi = "*" if minor is None or minor < 0 else str(minor)
    return f"{kind} {ma}:{mi} {access}"


def _set_devices(path: str, rules: list[dict]) -> None:
    for i, r in enumerate(rules):
        kind = r.get("type", "a")
        if kind not in ("a", "c", "b"):
            raise BundleError(f"linux.resources.devices[{i}]: unknown type {kind!r}")
        access = r.get("access") or "rwm"
        line = _rule(kind, r.get("major", -1), r.get("minor", -1), access)
        _write(path, "devices.allow" if r.get("allow") else "devices.deny", line)
    for kind, ma, mi, access in DEFAULT_ALLOWED:
        _write(path, "devices.allow", _rule(kind, ma, mi, access))


def remove(dirs: list[str]) -> None:
    """Remove cgroup directories, deepest first (they must be empty of processes)."""
    for path in sorted(set(dirs), key=len, reverse=True):
        for _ in range(100):
            try:
                os.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno != errno.EBUSY:
                    break
                time.sleep(0.005)

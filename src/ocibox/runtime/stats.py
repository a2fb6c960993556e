"""update and events: change a live container's limits, read its usage (cgroup v1 and v2)."""

from __future__ import annotations

import os

from ..errors import BundleError, UsageError
from .container import STOPPED, Container, ContainerStateError
from .linux.cgroups.fs import read as _read

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_bytes(text: str) -> int:
    """runc's sizes: a number with an optional k/m/g/t suffix (powers of 1024); -1 is unlimited."""
    t = text.strip().lower().removesuffix("b") if text.strip().lower() != "b" else "1"
    if t == "-1":
        return -1
    unit = t[-1] if t and t[-1] in _UNITS else ""
    num = t[: len(t) - len(unit)]
    try:
        return int(float(num) * _UNITS[unit])
    except ValueError:
        raise UsageError(f"invalid size {text!r}") from None


def update(container: Container, resources: dict) -> None:
    if container.status() == STOPPED:
        raise ContainerStateError(f"cannot update container {container.id}: it is stopped")
    paths = (container.state or {}).get("cgroupPaths") or {}
    if not paths:
        # every container gets cgroups (8804db9) but a rootless one with none in reach
        raise ContainerStateError(
            f"cannot update container {container.id}: it has no cgroups (it was created "
            "rootless, and its user may write no cgroup here)",
            hint="delegate a cgroup to the user (the runtime's own, or one named in "
            "linux.cgroupsPath) and create the container again")  # fmt: skip
    from .linux.cgroups import is_unified, set_resources

    if not is_unified(paths):
        _check_placed(container.id, paths, resources)
    unit = (container.state or {}).get("systemdUnit")
    if unit:  # --systemd-cgroup: the unit's properties first, as runc
        from .linux.cgroups.systemd import set_unit_resources

        set_unit_resources(unit, paths, resources)
    set_resources(paths, resources)


def _check_placed(cid: str, paths: dict[str, str], resources: dict) -> None:
    """cgroup v1: a limit for a hierarchy the container has no cgroup of its own in (made
    rootless, it stays in the runtime's cgroup where its user may not write) is refused
    by name, before any other limit is changed."""
    from .linux.cgroups import hierarchies
    from .rootless import controllers_needed

    host = hierarchies()
    for key, ctrls in controllers_needed(resources).items():
        for ctrl in ctrls:
            if ctrl not in paths and ctrl in host:
                raise BundleError(
                    f"cannot update container {cid}: linux.resources.{key}: it has no {ctrl} "
                    f"cgroup of its own (it was created rootless, and its user may not write "
                    f"{ctrl} cgroups here)",
                    hint=f"delegate a {ctrl} cgroup to the user and create the container "
                    "again, or leave this limit out")  # fmt: skip


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


def stats(container: Container) -> dict:
    """The stats event runc's `events --stats` prints."""
    p = (container.state or {}).get("cgroupPaths") or {}
    if set(p) == {"unified"}:
        data = _stats_v2(p["unified"])
    else:
        data = _stats_v1(p)
        if "hugetlb" not in p and p.get("unified"):  # a hybrid host's v2 hugetlb
            data["hugetlb"] = _hugetlb_v2(p["unified"])
    return {"type": "stats", "id": container.id, "data": data}


def _stats_v1(p: dict[str, str]) -> dict:
    mem, cpu, acct, pids = p.get("memory"), p.get("cpu"), p.get("cpuacct"), p.get("pids")
    raw = {}
    for line in _read(mem, "memory.stat").splitlines():
        k, _, v = line.partition(" ")
        raw[k] = _int(v)
    throttle = dict(
        line.split(" ", 1) for line in _read(cpu, "cpu.stat").splitlines() if " " in line
    )
    usage = {
        "total": _int(_read(acct, "cpuacct.usage")),
        "percpu": [_int(x) for x in _read(acct, "cpuacct.usage_percpu").split()],
    }
    acct_stat = dict(
        line.split(" ", 1) for line in _read(acct, "cpuacct.stat").splitlines() if " " in line
    )
    # cpuacct.stat counts clock ticks; runc reports nanoseconds.
    tick_ns = 10**9 // os.sysconf("SC_CLK_TCK")
    usage["kernel"] = _int(acct_stat.get("system", "0")) * tick_ns
    usage["user"] = _int(acct_stat.get("user", "0")) * tick_ns
    limit = _read(pids, "pids.max")
    return {
        "cpu": {
            "usage": usage,
            "throttling": {
                "periods": _int(throttle.get("nr_periods", "0")),
                "throttledPeriods": _int(throttle.get("nr_throttled", "0")),
                "throttledTime": _int(throttle.get("throttled_time", "0")),
            },
        },
        "memory": {
            "cache": raw.get("cache", 0),
            "usage": {
                "limit": _int(_read(mem, "memory.limit_in_bytes")),
                "usage": _int(_read(mem, "memory.usage_in_bytes")),
                "max": _int(_read(mem, "memory.max_usage_in_bytes")),
                "failcnt": _int(_read(mem, "memory.failcnt")),
            },
            "raw": raw,
        },
        "pids": {
            "current": _int(_read(pids, "pids.current")),
            "limit": 0 if limit in ("max", "") else _int(limit),
        },  # fmt: skip
        "blkio": _blkio_v1(p.get("blkio")),
        "hugetlb": _hugetlb_v1(p.get("hugetlb")),
    }


def _keyed(text: str) -> dict[str, str]:
    """A flat-keyed cgroup file ("key value" lines) as a dict."""
    return dict(line.split(" ", 1) for line in text.splitlines() if " " in line)


_MAX = (1 << 64) - 1  # runc reports an unlimited v2 limit as the largest uint64


def _limit(text: str) -> int:
    return _MAX if text == "max" else _int(text)


def _blkio_v1(path: str | None) -> dict:
    out: dict = {}
    for key, name in (("ioServiceBytesRecursive", "blkio.throttle.io_service_bytes_recursive"),
                      ("ioServicedRecursive", "blkio.throttle.io_serviced_recursive")):  # fmt: skip
        entries = []
        for line in _read(path, name).splitlines():
            dev, _, rest = line.partition(" ")
            op, _, value = rest.partition(" ")
            if ":" in dev and op:
                major, _, minor = dev.partition(":")
                entries.append({"major": _int(major), "minor": _int(minor), "op": op,
                                "value": _int(value)})  # fmt: skip
        if entries:
            out[key] = entries
    return out


def _hugetlb_v1(path: str | None) -> dict:
    out = {}
    for name in sorted(os.listdir(path)) if path else []:
        if name.startswith("hugetlb.") and name.endswith(".usage_in_bytes"):
            size = name[len("hugetlb.") : -len(".usage_in_bytes")]
            if "." in size:
                continue  # the .rsvd. files
            out[size] = {"usage": _int(_read(path, name)),
                         "max": _int(_read(path, f"hugetlb.{size}.max_usage_in_bytes")),
                         "failcnt": _int(_read(path, f"hugetlb.{size}.failcnt"))}  # fmt: skip
    return out


def _hugetlb_v2(path: str) -> dict:
    out = {}
    try:
        names = sorted(os.listdir(path))
    except OSError:
        return out
    for name in names:
        if name.startswith("hugetlb.") and name.endswith(".current") and name.count(".") == 2:
            size = name.split(".")[1]
            events = _keyed(_read(path, f"hugetlb.{size}.events"))
            out[size] = {"usage": _int(_read(path, name)),
                         "max": _limit(_read(path, f"hugetlb.{size}.max")),
                         "failcnt": _int(events.get("max", "0"))}  # fmt: skip
    return out


_CPUSET_V1 = ("cpu_exclusive", "mem_hardwall", "mem_exclusive", "memory_migrate",
              "memory_spread_page", "memory_spread_slab", "memory_pressure",
              "sched_load_balance", "sched_relax_domain_level")  # fmt: skip


def _stats_v2(path: str) -> dict:
    """runc's fs2 statistics: cpu.stat in microseconds becomes nanoseconds, and so on."""
    cpu = _keyed(_read(path, "cpu.stat"))
    cpuset = dict.fromkeys(_CPUSET_V1, 0)  # v1's cpuset flags: runc prints them as zeros
    raw = {k: _int(v) for k, v in _keyed(_read(path, "memory.stat")).items()}
    usage = _int(_read(path, "memory.current"))
    limit = _limit(_read(path, "memory.max")) if _read(path, "memory.max") else 0
    swap = _int(_read(path, "memory.swap.current"))
    swap_max = _read(path, "memory.swap.max")
    # runc's swap figures are memory+swap, as v1's memsw files were.
    swap_limit = 0
    if swap_max:
        swap_limit = _MAX if _MAX in (limit, _limit(swap_max)) else limit + _int(swap_max)
    blkio: dict = {}
    for line in _read(path, "io.stat").splitlines():
        dev, *fields = line.split()
        major, _, minor = dev.partition(":")
        for field in fields:
            key, _, value = field.partition("=")
            which = {"rbytes": ("ioServiceBytesRecursive", "Read"),
                     "wbytes": ("ioServiceBytesRecursive", "Write"),
                     "rios": ("ioServicedRecursive", "Read"),
                     "wios": ("ioServicedRecursive", "Write")}.get(key)  # fmt: skip
            if which:
                blkio.setdefault(which[0], []).append(
                    {
                        "major": _int(major),
                        "minor": _int(minor),
                        "op": which[1],
                        "value": _int(value),
                    }
                )
    current = _read(path, "pids.current")
    if not current:  # no pids controller: count the processes, as runc does
        current = str(len(_read(path, "cgroup.procs").split()))
    pids_max = _read(path, "pids.max")
    return {
        "cpu": {
            "usage": {
                "total": _int(cpu.get("usage_usec", "0")) * 1000,
                "kernel": _int(cpu.get("system_usec", "0")) * 1000,
                "user": _int(cpu.get("user_usec", "0")) * 1000,
            },
            "throttling": {
                "periods": _int(cpu.get("nr_periods", "0")),
                "throttledPeriods": _int(cpu.get("nr_throttled", "0")),
                "throttledTime": _int(cpu.get("throttled_usec", "0")) * 1000,
            },
        },
        "cpuset": cpuset,
        "memory": {
            "cache": raw.get("file", 0),
            "usage": {
                "limit": limit,
                "usage": usage,
                "max": _int(_read(path, "memory.peak")),
                "failcnt": _int(_keyed(_read(path, "memory.events")).get("max", "0")),
            },
            "swap": {
                "limit": swap_limit,
                "usage": swap + usage if swap_max else 0,
                "failcnt": _int(_keyed(_read(path, "memory.swap.events")).get("max", "0")),
            },
            # Always there in runc's output (its fields have no omitempty), zero on v2.
            "kernel": {"limit": 0, "failcnt": 0},
            "kernelTCP": {"limit": 0, "failcnt": 0},
            "raw": raw,
        },
        "pids": {
            "current": _int(current),
            "limit": 0 if pids_max in ("max", "") else _int(pids_max),
        },
        "blkio": blkio,
        "hugetlb": _hugetlb_v2(path),
        "intel_rdt": {},
        "network_interfaces": None,
    }

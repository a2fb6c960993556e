"""update and events: change a live container's limits, read its usage (cgroup v1)."""

from __future__ import annotations

import os

from ..errors import NotImplementedYet, UsageError
from .container import STOPPED, Container, ContainerStateError

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
    if not paths or set(paths) == {"unified"}:
        raise NotImplementedYet(f"container {container.id}: update needs its cgroup v1 hierarchies")
    from .linux.cgroups import set_resources

    set_resources(paths, resources)


def _read(path: str | None, name: str) -> str:
    if not path:
        return ""
    try:
        with open(os.path.join(path, name)) as f:
            return f.read().strip()
    except OSError:
        return ""


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


def stats(container: Container) -> dict:
    """The stats event runc's `events --stats` prints, from the v1 controllers."""
    p = (container.state or {}).get("cgroupPaths") or {}
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
        "type": "stats",
        "id": container.id,
        "data": {
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
        },
    }

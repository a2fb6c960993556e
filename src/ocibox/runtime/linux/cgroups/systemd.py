"""--systemd-cgroup: the container's cgroup is a transient systemd unit, as runc makes it.

cgroupsPath is "slice:prefix:name" (empty: ":runc:<id>"): the unit is the scope
"<prefix>-<name>.scope" in ``slice`` (default system.slice), or, when name ends
in ".slice", that slice itself. systemd places slices by name
("a-b.slice" is /a.slice/a-b.slice), so the cgroup is known without asking.

    create   StartTransientUnit(PIDs=[pid], Slice, Delegate, DefaultDependencies=no,
             the accounting switches, resources as systemd properties), wait for its
             job; then, as runc, every resource is written to the unit's cgroup by
             the cgroupfs code too (systemd cannot say all of them), devices included
    update   SetUnitProperties with the converted resources, then cgroupfs again
    delete   StopUnit (and ResetFailedUnit), then the cgroup directory if still there

Everything else (pause, ps, kill --all, events, exec) works on the cgroup
path kept in the state, as with cgroupfs. Resources become properties as
runc 1.1 converts them on cgroup v2:

    memory.limit -> MemoryMax      reservation -> MemoryLow    swap -> MemorySwapMax
    cpu.shares   -> CPUWeight      quota, period -> CPUQuotaPerSecUSec, CPUQuotaPeriodUSec
    cpu.cpus, mems -> AllowedCPUs, AllowedMemoryNodes (bitmasks)
    pids.limit   -> TasksMax       devices -> DevicePolicy=strict, DeviceAllow
    unified: cpu.max, cpu.weight, cpuset.*, memory.{min,low,high,max,swap.max}, pids.max

On cgroup v1 and hybrid hosts (runc 1.1's legacy manager) the unit gets the v1
properties instead (MemoryLimit, CPUShares, CPUQuotaPerSecUSec, BlockIOWeight,
TasksMax, the devices) and BlockIOAccounting; the container's cgroup in each v1
hierarchy is <pid 1's cgroup less init.scope>/<slice path>/<unit>: systemd made
those of the controllers it manages, the others (cpuset, freezer, net_cls, ...)
are made here, and the init joins every one but name=systemd (systemd's own).
The v2 hierarchy of a hybrid host is left to systemd (its cgroup there is kept with
the v1 ones, for exec to join, as runc), and linux.resources.unified
is refused, as runc. update freezes the container around SetUnitProperties
(systemd rewrites the v1 device rules from deny-all); delete stops the unit,
then removes every one of those directories still there.
"""

from __future__ import annotations

import os

from ....errors import BundleError, NotImplementedYet, OciboxError

DEFAULT_SLICE = "system.slice"
DEFAULT_PREFIX = "runc"
_MAX = 2**64 - 1  # systemd's "infinity" for limits and USec values
_PERIOD = 100000  # the kernel's default cpu period (us)


def running() -> bool:
    """Whether systemd is this host's init (as sd_booted(3) tells)."""
    return os.path.isdir("/run/systemd/system")


def check_host() -> None:
    """Refuse, before anything is made, a host this driver cannot serve."""
    if not running():
        raise OciboxError("--systemd-cgroup: systemd is not running on this host "
                          "(no /run/systemd/system)",
                          hint="leave out --systemd-cgroup to use cgroupfs")  # fmt: skip


def check_resources(resources: dict, v1: bool) -> None:
    """What the driver cannot do on this host, refused before the unit is made."""
    if v1 and resources.get("unified"):
        raise NotImplementedYet("linux.resources.unified: --systemd-cgroup on a cgroup v1 host "
                                "has no cgroup v2 limits (as runc)",
                                hint="leave out linux.resources.unified, or use cgroupfs")  # fmt: skip


# --- names and paths -----------------------------------------------------------


def parse(cid: str, cgroups_path: str | None) -> tuple[str, str]:
    """cgroupsPath "slice:prefix:name" -> (parent slice, unit name)."""
    if not cgroups_path:
        cgroups_path = f":{DEFAULT_PREFIX}:{cid}"
    parts = cgroups_path.split(":")
    if len(parts) != 3:
        raise BundleError(
            f'linux.cgroupsPath {cgroups_path!r}: expected "slice:prefix:name" for systemd '
            "cgroups",
            hint="e.g. system.slice:ocibox:<id>; or leave out --systemd-cgroup to use a "
            "cgroupfs path",
        )
    parent, prefix, name = parts
    parent = parent or DEFAULT_SLICE
    expand_slice(parent)  # checked now: systemd's own error would come later and be vaguer
    name = name or cid
    if "/" in name or "/" in prefix:
        raise BundleError(f"linux.cgroupsPath {cgroups_path!r}: no '/' in a unit name")
    if name.endswith(".slice"):
        expand_slice(name)
        return parent, name
    return parent, f"{prefix}-{name}.scope" if prefix else f"{name}.scope"


def expand_slice(slice_name: str) -> str:
    """A slice's cgroup below the root: "a-b.slice" -> "/a.slice/a-b.slice", "-.slice" -> "/"."""
    base = slice_name.removesuffix(".slice")
    if not slice_name.endswith(".slice") or not base or "/" in slice_name:
        raise BundleError(f"invalid slice name {slice_name!r}",
                          hint='a slice is named like "machine.slice" or "a-b.slice"')  # fmt: skip
    if base == "-":
        return "/"
    path, prefix = "", ""
    for part in base.split("-"):
        if not part:
            raise BundleError(f"invalid slice name {slice_name!r}: an empty part between '-'")
        path += f"/{prefix}{part}.slice"
        prefix += part + "-"
    return path


def unit_cgroup(parent: str, unit: str) -> str:
    """The unit's cgroup below the hierarchy's root (no leading '/')."""
    if unit.endswith(".slice"):
        return expand_slice(unit).strip("/")
    return (expand_slice(parent).rstrip("/") + "/" + unit).strip("/")


# --- resources as unit properties --------------------------------------------------


def range_to_bits(text: str, what: str) -> bytes:
    """A cpuset list ("0-3,6") as systemd's bitmask: bit n of byte n//8 is CPU (node) n."""
    mask = 0
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        lo, dash, hi = part.partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()):
            raise BundleError(f"{what} {text!r}: not a list of numbers and ranges (0-3,6)")
        a, b = int(lo), int(hi) if dash else int(lo)
        if b < a:
            raise BundleError(f"{what} {text!r}: range {part} runs backwards")
        mask |= ((1 << (b - a + 1)) - 1) << a
    return mask.to_bytes((mask.bit_length() + 7) // 8, "little")


def cpu_quota_properties(quota: int | None, period: int | None, version: int) -> list:
    """runc's addCpuQuota: per-second quota rounded up to 10 ms (systemd keeps percents)."""
    props = []
    if period:
        if version >= 242:
            props.append(("CPUQuotaPeriodUSec", ("t", period)))
    if quota or period:
        per_sec = _MAX
        if quota and quota > 0:
            per_sec = quota * 1000000 // (period or _PERIOD)
            if per_sec % 10000:
                per_sec = (per_sec // 10000 + 1) * 10000
        props.append(("CPUQuotaPerSecUSec", ("t", per_sec)))
    return props


def _limit(value: int) -> int:
    return _MAX if value < 0 else value


def device_properties(devices: list[dict]) -> list:
    """linux.resources.devices (and the defaults) as DevicePolicy and DeviceAllow.

    The rules are played in order, as the kernel's v1 devices cgroup reads them,
    to a list of what is allowed. systemd takes only an allow list; a deny rule
    after an allow-all cannot be said, so systemd is then told to allow all
    (DevicePolicy=auto) and our own device program, attached too, denies.
    """
    from .fs import device_rules

    allow_all = False
    allowed: dict[tuple[str, int, int], set[str]] = {}
    for kind, major, minor, access, allow in device_rules(devices):
        if kind == "a":
            allow_all, allowed = allow, {}
            continue
        if allow_all:
            continue
        key = (kind, major, minor)
        if allow:
            allowed.setdefault(key, set()).update(access)
        elif key in allowed:
            allowed[key] -= set(access)
            if not allowed[key]:
                del allowed[key]
    if allow_all:
        return [("DevicePolicy", ("s", "auto")), ("DeviceAllow", ("a(ss)", []))]
    entries = []
    groups = None
    for (kind, major, minor), access in sorted(allowed.items()):
        prefix = "char-" if kind == "c" else "block-"
        if major < 0:
            if minor >= 0:
                continue  # "*:n" has no systemd form; the device program still has it
            path = prefix + "*"
        elif minor < 0:
            # As runc: the driver's name from /proc/devices ("char-pts"), else the number.
            groups = _device_groups() if groups is None else groups
            path = prefix + groups.get((kind, major), str(major))
        else:
            sysfs = "char" if kind == "c" else "block"
            if not os.path.exists(f"/sys/dev/{sysfs}/{major}:{minor}"):
                continue  # as runc: only devices this host has (the device program has all)
            path = f"/dev/{sysfs}/{major}:{minor}"
        entries.append((path, "".join(c for c in "rwm" if c in access)))
    return [("DevicePolicy", ("s", "strict")), ("DeviceAllow", ("a(ss)", entries))]


def _device_groups() -> dict[tuple[str, int], str]:
    """(type, major) -> the name /proc/devices gives it (the first, if several)."""
    out: dict[tuple[str, int], str] = {}
    kind = ""
    try:
        with open("/proc/devices") as f:
            for line in f:
                line = line.strip()
                if line.endswith("devices:"):
                    kind = "c" if line.startswith("Character") else "b"
                    continue
                number, _, name = line.partition(" ")
                if number.isdigit() and name:
                    out.setdefault((kind, int(number)), name)
    except OSError:
        pass
    return out


def _unified_properties(unified: dict, version: int) -> list:
    props: list = []
    for key, value in unified.items():
        if not isinstance(value, str):
            continue  # v2.set_unified refuses it with a clear message
        v = value.strip()
        where = f"linux.resources.unified[{key!r}]"
        try:
            if key == "cpu.max":
                fields = v.split()
                if not 1 <= len(fields) <= 2:
                    raise ValueError
                quota = 0 if fields[0] == "max" else int(fields[0])
                period = int(fields[1]) if len(fields) == 2 else _PERIOD
                props += cpu_quota_properties(quota, period, version)
            elif key == "cpu.weight":
                props.append(("CPUWeight", ("t", int(v))))
            elif key in ("cpuset.cpus", "cpuset.mems") and version >= 244:
                name = "AllowedCPUs" if key == "cpuset.cpus" else "AllowedMemoryNodes"
                props.append((name, ("ay", range_to_bits(v, where))))
            elif key in _MEMORY_KEYS:
                props.append((_MEMORY_KEYS[key], ("t", _MAX if v == "max" else int(v))))
            elif key == "pids.max":
                props.append(("TasksMax", ("t", _MAX if v == "max" else int(v))))
        except ValueError:
            raise BundleError(f"{where}: value {value!r} is not valid") from None
    return props


_MEMORY_KEYS = {"memory.high": "MemoryHigh", "memory.low": "MemoryLow", "memory.min": "MemoryMin",
                "memory.max": "MemoryMax", "memory.swap.max": "MemorySwapMax"}  # fmt: skip


def resource_properties(resources: dict, version: int = 252, period_now: int = 0) -> list:
    """linux.resources as systemd unit properties for cgroup v2, as runc 1.1 makes them.

    ``version`` is systemd's (some properties are newer than others);
    ``period_now`` the cgroup's current cpu period, for an update that gives a quota alone.
    """
    from .v2 import cpu_weight, swap_max

    props: list = []
    if resources.get("devices") is not None:
        props += device_properties(resources["devices"])
    mem = resources.get("memory") or {}
    if mem.get("limit"):
        props.append(("MemoryMax", ("t", _limit(mem["limit"]))))
    if mem.get("reservation"):
        props.append(("MemoryLow", ("t", _limit(mem["reservation"]))))
    swap = swap_max(mem.get("swap"), mem.get("limit"))
    if swap and swap != "0":  # runc's 0 is "unset": no property, and cgroupfs then writes 0
        props.append(("MemorySwapMax", ("t", _MAX if swap == "max" else int(swap))))
    cpu = resources.get("cpu") or {}
    weight = cpu_weight(cpu.get("shares") or 0)
    if weight:
        props.append(("CPUWeight", ("t", weight)))
    props += _quota_and_tasks(cpu, resources, version, period_now)
    if version >= 244:
        for key, name in (("cpus", "AllowedCPUs"), ("mems", "AllowedMemoryNodes")):
            if cpu.get(key):
                props.append((name, ("ay", range_to_bits(cpu[key], f"linux.resources.cpu.{key}"))))
    if resources.get("unified"):
        props += _unified_properties(resources["unified"], version)
    return props


def _quota_and_tasks(cpu: dict, resources: dict, version: int, period_now: int) -> list:
    """The CPU quota and TasksMax properties, the same on v1 and v2."""
    quota, period = cpu.get("quota"), cpu.get("period")
    if quota and not period and period_now:
        # An update of the quota alone: per second of the period in force.
        props = [p for p in cpu_quota_properties(quota, period_now, version)
                 if p[0] != "CPUQuotaPeriodUSec"]  # fmt: skip
    else:
        props = cpu_quota_properties(quota, period, version)
    limit = (resources.get("pids") or {}).get("limit")
    if limit and (limit > 0 or limit == -1):
        props.append(("TasksMax", ("t", _limit(limit))))
    return props


def v1_resource_properties(resources: dict, version: int = 252, period_now: int = 0) -> list:
    """linux.resources as systemd unit properties for cgroup v1, as runc 1.1's legacy
    manager makes them (the rest is written through cgroupfs)."""
    props: list = []
    if resources.get("devices") is not None:
        props += device_properties(resources["devices"])
    limit = (resources.get("memory") or {}).get("limit")
    if limit:
        props.append(("MemoryLimit", ("t", _limit(limit))))
    cpu = resources.get("cpu") or {}
    if cpu.get("shares"):
        props.append(("CPUShares", ("t", cpu["shares"])))
    props += _quota_and_tasks(cpu, resources, version, period_now)
    weight = (resources.get("blockIO") or {}).get("weight")
    if weight:
        props.append(("BlockIOWeight", ("t", weight)))
    if version >= 244:
        for key, name in (("cpus", "AllowedCPUs"), ("mems", "AllowedMemoryNodes")):
            if cpu.get(key):
                props.append((name, ("ay", range_to_bits(cpu[key], f"linux.resources.cpu.{key}"))))
    return props


def _needs_version(resources: dict) -> bool:
    cpu = resources.get("cpu") or {}
    unified = resources.get("unified") or {}
    return bool(cpu.get("period") or cpu.get("cpus") or cpu.get("mems") or "cpu.max" in unified
                or "cpuset.cpus" in unified or "cpuset.mems" in unified)  # fmt: skip


# --- annotations: org.systemd.property.NAME = a GVariant text value ---------------------

_PROPERTY_PREFIX = "org.systemd.property."
_GV_TYPES = {"boolean": "b", "byte": "y", "int16": "n", "uint16": "q", "int32": "i",
             "uint32": "u", "int64": "x", "uint64": "t", "double": "d", "string": "s",
             "objectpath": "o"}  # fmt: skip


def annotation_properties(annotations: dict) -> list:
    """Unit properties from "org.systemd.property.*" annotations, as runc takes them.

    The value is GVariant text: a typed number ("uint64 123"), a bare number
    (int32, or double with a point), true/false, a quoted string, or an array
    of those ("['a', 'b']"). A name ending in "Sec" (after a lower-case letter)
    is given in seconds and sent as its "USec" property in microseconds.
    """
    props = []
    for key, text in sorted((annotations or {}).items()):
        if not key.startswith(_PROPERTY_PREFIX):
            continue
        name = key[len(_PROPERTY_PREFIX) :]
        if len(name) < 3 or not name.isascii() or not name.isalpha():
            raise BundleError(f"annotation {key}: {name!r} is not a systemd property name")
        try:
            sig, value = _gvariant(str(text).strip())
        except ValueError as e:
            raise BundleError(f"annotation {key}={text!r}: {e}",
                              hint="GVariant text, e.g. \"uint64 123\" or \"'text'\"") from None  # fmt: skip
        if name.endswith("Sec") and name[-4].islower():
            if sig not in "ynqiuxtd" or isinstance(value, bool):
                raise BundleError(f"annotation {key}={text!r}: seconds must be a number")
            name, sig, value = name[:-3] + "USec", "t", int(value * 1000000)
        props.append((name, (sig, value)))
    return props


def _gvariant(text: str) -> tuple[str, object]:
    """(signature, value) of a GVariant text value (the subset systemd properties use)."""
    word, _, rest = text.partition(" ")
    if word in _GV_TYPES and rest.strip():
        sig, value = _gvariant(rest.strip())
        want = _GV_TYPES[word]
        if want in "ynqiuxt" and sig == "i":
            return want, value
        if want == "d" and sig in "id":
            return "d", float(value)
        if want in "so" and sig == "s":
            return want, value
        if want == sig:
            return sig, value
        raise ValueError(f"{rest.strip()!r} is not a {word}")
    if text in ("true", "false"):
        return "b", text == "true"
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return "s", text[1:-1].replace("\\" + text[0], text[0])
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        items = [_gvariant(x.strip()) for x in _split_items(inner)] if inner else []
        sigs = {sig for sig, _ in items}
        if len(sigs) > 1:
            raise ValueError("an array's items must be of one type")
        return "a" + (sigs.pop() if sigs else "s"), [v for _, v in items]
    if text.startswith("@as "):
        sig, value = _gvariant(text[4:].strip())
        if sig not in ("as",):
            raise ValueError(f"{text!r} is not an array of strings")
        return "as", value
    try:
        return "i", int(text, 0)
    except ValueError:
        pass
    try:
        return "d", float(text)
    except ValueError:
        raise ValueError(f"cannot read {text!r} as a GVariant value") from None


def _split_items(text: str) -> list[str]:
    """Split an array's text on the commas outside quotes."""
    items, cur, quote = [], "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == ",":
            items.append(cur)
            cur = ""
            continue
        cur += ch
    items.append(cur)
    return items


# --- talking to systemd ------------------------------------------------------------


def _connect():
    from ...container import debug
    from .. import dbus

    conn = dbus.system()
    debug(f"systemd: connected to {conn.path}")
    return conn


def version(conn) -> int:
    """systemd's version number ("252.19-1~deb12u1" -> 252)."""
    from .. import dbus

    text = conn.call(dbus.SYSTEMD, dbus.PATH, dbus.PROPERTIES, "Get", "ss",
                     (dbus.MANAGER, "Version"))[0]  # fmt: skip
    digits = ""
    for ch in str(text).lstrip('"v'):
        if not ch.isdigit():
            break
        digits += ch
    return int(digits) if digits else 0


def _watch_jobs(conn) -> None:
    """On the system bus, JobRemoved signals reach us only through a match rule."""
    from .. import dbus

    if conn.unique_name:
        rule = (f"type='signal',sender='{dbus.SYSTEMD}',interface='{dbus.MANAGER}',"
                "member='JobRemoved'")  # fmt: skip
        conn.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                  "AddMatch", "s", (rule,))  # fmt: skip


def _job_result(conn, job: str, unit: str, what: str) -> str:
    from ...container import debug
    from .. import dbus

    debug(f"systemd: waiting for job {job}")
    try:
        msg = conn.wait_signal(lambda m: m.fields.get("member") == "JobRemoved"
                               and len(m.body) == 4 and m.body[1] == job)  # fmt: skip
    except dbus.DBusError as e:
        raise OciboxError(f"systemd unit {unit}: no end of the job to {what} it "
                          f"({e.message})") from None  # fmt: skip
    debug(f"systemd: job {job} of {msg.body[2]}: {msg.body[3]}")
    return msg.body[3]


def start_unit(conn, unit: str, props: list) -> None:
    """StartTransientUnit and wait for its job; a leftover failed unit of that name is
    reset and the start tried once more, as runc does."""
    from ...container import debug
    from .. import dbus

    _watch_jobs(conn)
    for attempt in (1, 2):
        debug(f"systemd: StartTransientUnit {unit} {' '.join(n for n, _ in props)}")
        try:
            job = conn.call(dbus.SYSTEMD, dbus.PATH, dbus.MANAGER, "StartTransientUnit",
                            "ssa(sv)a(sa(sv))", (unit, "replace", props, []))[0]  # fmt: skip
        except dbus.DBusError as e:
            if e.name != "org.freedesktop.systemd1.UnitExists" or attempt == 2:
                raise OciboxError(f"systemd unit {unit}: {e.message}") from None
            _reset_failed(conn, unit)
            continue
        try:
            result = _job_result(conn, job, unit, "start")
        except OciboxError:
            _reset_failed(conn, unit)
            raise
        if result != "done":
            _reset_failed(conn, unit)
            raise OciboxError(f"systemd unit {unit}: its start job ended with {result!r}")
        return


def _reset_failed(conn, unit: str) -> None:
    from .. import dbus

    try:
        conn.call(dbus.SYSTEMD, dbus.PATH, dbus.MANAGER, "ResetFailedUnit", "s", (unit,))
    except dbus.DBusError:
        pass


def apply(cid: str, cgroups_path: str | None, resources: dict, pid: int,
          annotations: dict | None = None) -> tuple[dict, list, str]:  # fmt: skip
    """Make the container's unit with ``pid`` in it, and set its resources
    (``annotations``: the config's, for org.systemd.property.* ones).

    Returns the cgroup paths (as the cgroupfs driver does), the directories to
    remove on delete, and the unit's name (to stop it then).
    """
    from .fs import UNIFIED, hierarchies, mode

    parent, unit = parse(cid, cgroups_path)
    mounts = hierarchies()
    v1 = mode(mounts) != UNIFIED
    check_resources(resources, v1)
    conn = _connect()
    try:
        ver = version(conn) if _needs_version(resources) else 252
        name = cgroups_path_name(cid, cgroups_path)
        props: list = [("Description", ("s", f"libcontainer container {name}"))]
        if unit.endswith(".slice"):
            props.append(("Wants", ("as", [parent])))
        else:
            props += [("Slice", ("s", parent)), ("Delegate", ("b", True))]
        props += [("PIDs", ("au", [pid])),
                  ("MemoryAccounting", ("b", True)), ("CPUAccounting", ("b", True)),
                  ("BlockIOAccounting" if v1 else "IOAccounting", ("b", True)),
                  ("TasksAccounting", ("b", True)),
                  ("DefaultDependencies", ("b", False))]  # fmt: skip
        props += annotation_properties(annotations or {})  # before resources, which win
        props += (v1_resource_properties if v1 else resource_properties)(resources, ver)
        start_unit(conn, unit, props)
        try:
            if v1:
                paths = _v1_join(mounts, unit_cgroup(parent, unit), resources, pid)
            else:
                from . import v2

                path = os.path.join(mounts["unified"], unit_cgroup(parent, unit))
                v2.set_resources(path, resources)
                v2.set_devices(path, resources.get("devices") or [])
                paths = {"unified": path}
        except BaseException:
            stop_unit(unit, conn)
            if v1:
                from .fs import remove

                remove([p for p in _v1_paths(mounts, unit_cgroup(parent, unit)).values()])
            raise
    finally:
        conn.close()
    return paths, sorted(set(paths.values())), unit


def _init_cgroups() -> dict[str, str]:
    """Controller -> pid 1's cgroup in each v1 hierarchy ("unified": the v2 one), less a
    final "init.scope" (systemd 226 and later keeps itself there, not at the root)."""
    out = {}
    try:
        with open("/proc/1/cgroup") as f:
            for line in f:
                _, ctrls, path = line.rstrip("\n").split(":", 2)
                path = os.path.normpath(path)
                if os.path.basename(path) == "init.scope":
                    path = os.path.dirname(path)
                for ctrl in ctrls.split(",") if ctrls else ["unified"]:
                    if ctrl:
                        out[ctrl] = path.strip("/")
    except OSError:
        pass
    return out


# The v1 controllers runc 1.1's legacy manager puts a container in (not misc, say).
_V1_JOINED = ("cpuset", "devices", "memory", "cpu", "cpuacct", "pids", "blkio", "hugetlb",
              "perf_event", "freezer", "net_prio", "net_cls", "rdma", "name=systemd")  # fmt: skip


def _v1_paths(mounts: dict[str, str], rel: str) -> dict[str, str]:
    """The container's directory in each v1 hierarchy runc uses (name=systemd's included)
    and, on a hybrid host, in the v2 one: systemd put the unit there, and an exec joins
    it too (runc's "" path; it was left in the runtime's caller's v2 cgroup)."""
    init = _init_cgroups()
    return {ctrl: os.path.join(mounts[ctrl], init.get(ctrl, ""), rel).rstrip("/")
            for ctrl in (*_V1_JOINED, "unified") if ctrl in mounts}  # fmt: skip


def _v1_join(mounts: dict[str, str], rel: str, resources: dict, pid: int) -> dict[str, str]:
    """Make the v1 directories systemd did not, join ``pid`` to each (name=systemd is
    systemd's), then every resource and the device rules through cgroupfs, as runc."""
    from . import v1
    from .fs import makedirs, write

    paths = _v1_paths(mounts, rel)
    if "devices" not in paths:
        raise OciboxError("--systemd-cgroup: this cgroup v1 host has no devices hierarchy")
    for ctrl, path in paths.items():
        if ctrl in ("name=systemd", "unified"):  # systemd's, the pid placed in them by it
            continue
        makedirs(path)
        if ctrl == "cpuset":
            v1._init_cpuset(mounts["cpuset"], path)
        write(path, "cgroup.procs", str(pid))
    v1.set_resources(paths, resources)
    v1.replace_devices(paths["devices"], resources.get("devices") or [])
    return paths


def cgroups_path_name(cid: str, cgroups_path: str | None) -> str:
    parts = (cgroups_path or "").split(":")
    return parts[2] if len(parts) == 3 and parts[2] else cid


def set_unit_resources(unit: str, paths: dict[str, str], resources: dict) -> None:
    """update: the unit's properties (as runtime changes); the caller then writes cgroupfs.

    On cgroup v1 the container is frozen meanwhile, unless it already is (systemd
    rewrites the device rules from deny-all: a running process could be refused).
    """
    from .. import dbus

    v1 = set(paths) != {"unified"}  # a hybrid host's v1 paths come with its v2 one
    check_resources(resources, v1)
    period_now = 0
    try:
        if v1:
            with open(os.path.join(paths.get("cpu", ""), "cpu.cfs_period_us")) as f:
                period_now = int(f.read())
        else:
            with open(os.path.join(paths.get("unified", ""), "cpu.max")) as f:
                fields = f.read().split()
            period_now = int(fields[1]) if len(fields) == 2 else 0
    except (OSError, ValueError):
        pass
    conn = _connect()
    try:
        ver = version(conn) if _needs_version(resources) else 252
        props = (v1_resource_properties if v1 else resource_properties)(resources, ver, period_now)
        if not props:
            return
        thaw = False
        if v1 and "freezer" in paths:
            from . import frozen
            from .v1 import freeze

            if not frozen(paths):
                freeze(paths["freezer"], True)
                thaw = True
        try:
            conn.call(dbus.SYSTEMD, dbus.PATH, dbus.MANAGER, "SetUnitProperties", "sba(sv)",
                      (unit, True, props))  # fmt: skip
        except dbus.DBusError as e:
            raise OciboxError(f"systemd unit {unit}: {e.message}") from None
        finally:
            if thaw:
                freeze(paths["freezer"], False)
    finally:
        conn.close()


def stop_unit(unit: str, conn=None) -> None:
    """StopUnit and wait for it (a unit already gone is fine), then ResetFailedUnit."""
    from .. import dbus

    own = conn is None
    conn = conn or _connect()
    try:
        _watch_jobs(conn)
        try:
            job = conn.call(dbus.SYSTEMD, dbus.PATH, dbus.MANAGER, "StopUnit", "ss",
                            (unit, "replace"))[0]  # fmt: skip
        except dbus.DBusError as e:
            if e.name != "org.freedesktop.systemd1.NoSuchUnit":
                raise OciboxError(f"systemd unit {unit}: {e.message}") from None
        else:
            _job_result(conn, job, unit, "stop")  # "done", or already stopping: it goes
        _reset_failed(conn, unit)
    finally:
        if own:
            conn.close()

"""process.capabilities: the five sets, by name, applied with prctl and capset."""

from __future__ import annotations

from ...errors import BundleError
from . import syscalls as sc

NAMES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID",
    "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN",
    "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE",
    "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME",
    "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ",
    "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)  # fmt: skip
NUMBERS = {"CAP_" + n: i for i, n in enumerate(NAMES)}

SETS = ("bounding", "effective", "permitted", "inheritable", "ambient")


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return len(NAMES) - 1


def parse(caps: dict | None, warn=None) -> dict[str, int]:
    """Each set as a bit mask; names unknown here or to the kernel are dropped with a warning."""
    top = last_cap()
    out = {}
    for which in SETS:
        mask = 0
        for name in (caps or {}).get(which) or []:
            num = NUMBERS.get(name)
            # Runtime-spec 1.1+: a capability that cannot be mapped or granted is
            # a warning, not a failure.
            if num is None or num > top:
                if warn:
                    warn(f"process.capabilities.{which}: ignoring unknown or unavailable {name}")
                continue
            mask |= 1 << num
        out[which] = mask
    # The kernel raises an ambient capability only if it is also permitted and
    # inheritable. `runc spec` lists ambient ones with no inheritable set, and
    # runc then runs the process without them: do the same, but say so.
    stray = out["ambient"] & ~(out["inheritable"] & out["permitted"])
    if stray:
        out["ambient"] &= ~stray
        if warn:
            names = ", ".join(_name(c) for c in range(stray.bit_length()) if stray >> c & 1)
            warn(f"process.capabilities.ambient: ignoring {names}: an ambient capability "
                 "must also be in the permitted and inheritable sets")
    return out


def drop_bounding(keep: int) -> None:
    for cap in range(last_cap() + 1):
        if not keep & (1 << cap):
            try:
                sc.prctl(sc.PR_CAPBSET_DROP, cap)
            except OSError as e:
                raise BundleError(
                    f"dropping {_name(cap)} from the bounding set: {e.strerror}"
                ) from None


def apply(sets: dict[str, int]) -> None:
    """Set effective, permitted and inheritable, then raise the ambient ones."""
    try:
        sc.capset(sets["effective"], sets["permitted"], sets["inheritable"])
    except OSError as e:
        raise BundleError(f"setting capabilities: {e.strerror}") from None
    sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_CLEAR_ALL)
    for cap in range(last_cap() + 1):
        if sets["ambient"] & (1 << cap):
            try:
                sc.prctl(sc.PR_CAP_AMBIENT, sc.PR_CAP_AMBIENT_RAISE, cap)
            except OSError as e:
                raise BundleError(
                    f"raising ambient {_name(cap)}: {e.strerror}",
                    hint="an ambient capability must also be permitted and inheritable",
                ) from None


def _name(cap: int) -> str:
    return "CAP_" + NAMES[cap] if cap < len(NAMES) else f"capability {cap}"

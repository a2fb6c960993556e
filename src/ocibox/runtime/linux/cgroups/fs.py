"""What cgroup v1 and v2 share: the mount table, the mode, and reading and writing files."""

from __future__ import annotations

import os

from ....errors import BundleError, NotImplementedYet
from ..cgroup_remove import remove  # noqa: F401 - delete imports it alone; apply, v1, v2 here

ROOT = "/sys/fs/cgroup"

LEGACY, HYBRID, UNIFIED = "legacy", "hybrid", "unified"

# Devices every container may use, whatever linux.resources.devices says:
# (type, major, minor, access); -1 is "*".
DEFAULT_ALLOWED = (
    ("c", -1, -1, "m"), ("b", -1, -1, "m"),
    ("c", 1, 3, "rwm"), ("c", 1, 8, "rwm"), ("c", 1, 7, "rwm"), ("c", 5, 0, "rwm"),
    ("c", 1, 5, "rwm"), ("c", 1, 9, "rwm"), ("c", 136, -1, "rwm"), ("c", 5, 2, "rwm"),
    ("c", 10, 200, "rwm"),
)  # fmt: skip


def hierarchies() -> dict[str, str]:
    """Controller name -> mount point of every cgroup v1 hierarchy, plus "unified" for v2."""
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


def mode(mounts: dict[str, str] | None = None) -> str:
    """legacy (v1 only), hybrid (v1 controllers and a v2 hierarchy) or unified (v2 only)."""
    mounts = hierarchies() if mounts is None else mounts
    v1 = [k for k in mounts if k != "unified" and not k.startswith("name=")]
    if "unified" not in mounts:
        return LEGACY
    return HYBRID if v1 else UNIFIED


def relative_path(cid: str, cgroups_path: str | None, base: str = "") -> str:
    """cgroupsPath relative to each hierarchy's root.

    An absolute cgroupsPath is taken from the root; a relative one, and the
    default (the container's id), from ``base`` (runc's choice on cgroup v2: the
    parent of the runtime's own cgroup, see own_parent; on v1: its own, see own_v1).
    """
    path = cgroups_path or cid
    if ":" in path and not path.startswith("/"):
        raise NotImplementedYet(
            f"cgroupsPath {path!r} looks like a systemd slice; only cgroupfs paths work"
        )
    if any(part == ".." for part in path.split("/")):
        raise BundleError(f"cgroupsPath {path!r}: '..' is not allowed")
    if not path.startswith("/"):
        path = base + "/" + path
    return os.path.normpath("/" + path).strip("/")


def own_parent() -> str:
    """The parent of this process's cgroup v2 (``0::`` in /proc/self/cgroup), where runc puts
    a container with a relative cgroupsPath, or none: the runtime's own cgroup usually has
    processes (a login session, a service), and then its children could have no controllers."""
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    return os.path.dirname(line[3:].strip()).rstrip("/")
    except OSError:
        pass
    return ""


def own_v1() -> dict[str, str]:
    """This process's cgroup in each v1 hierarchy (``name=`` ones too), relative to the
    hierarchy's mount: where runc puts a container with a relative cgroupsPath, or none,
    on cgroup v1 (its own cgroup there, not the parent as on v2). A mount of part of a
    hierarchy (a container's view) counts from that part."""
    roots = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype, _, opts = right.split(" ", 2)
            if fstype == "cgroup":
                for opt in opts.strip().split(","):
                    roots.setdefault(opt, left.split(" ")[3])
    out = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, names, path = line.rstrip("\n").split(":", 2)
            for name in names.split(","):
                if name and name in roots:
                    root = roots[name].rstrip("/")
                    inside = path == root or path.startswith(root + "/")
                    out[name] = path[len(root):].strip("/") if inside else ""
    return out


def warning(msg: str) -> None:
    """A warning on stderr, in the runtime's words (what a cgroup step skipped and why)."""
    import sys

    sys.stderr.write(f"ocibox-runtime: warning: {msg}\n")


def makedirs(path: str) -> list[str]:
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


def write(path: str, name: str, value: str) -> None:
    try:
        with open(os.path.join(path, name), "w") as f:
            f.write(value)
    except OSError as e:
        raise BundleError(f"cgroup {os.path.join(path, name)} = {value}: {e.strerror}") from None


def read(path: str | None, name: str) -> str:
    """A cgroup file's text, or "" when it (or the cgroup) is not there."""
    if not path:
        return ""
    try:
        with open(os.path.join(path, name)) as f:
            return f.read().strip()
    except OSError:
        return ""


def join(paths: dict[str, str], pid: int) -> None:
    """Move ``pid`` into every cgroup of ``paths`` (one write per distinct directory)."""
    for path in dict.fromkeys(paths.values()):
        write(path, "cgroup.procs", str(pid))


def device_rules(rules: list[dict]) -> list[tuple[str, int, int, str, bool]]:
    """linux.resources.devices checked, then the defaults every container gets.

    Each rule as (type a|b|c, major, minor, access, allow), -1 for "any".
    """
    out = []
    for i, r in enumerate(rules):
        kind = r.get("type", "a")
        if kind not in ("a", "c", "b"):
            raise BundleError(f"linux.resources.devices[{i}]: unknown type {kind!r}")
        access = r.get("access") or "rwm"
        if not access or set(access) - set("rwm"):
            raise BundleError(f"linux.resources.devices[{i}]: access {access!r}: use r, w, m")
        major, minor = r.get("major"), r.get("minor")
        out.append((kind, -1 if major is None else major, -1 if minor is None else minor,
                    access, bool(r.get("allow"))))  # fmt: skip
    out += [(k, ma, mi, acc, True) for k, ma, mi, acc in DEFAULT_ALLOWED]
    return out

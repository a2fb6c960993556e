"""Rootless containers: what changes when the runtime is not root on the host.

As runc's "rootless" cgroup manager: a runtime that is not root (or is root
of a user namespace) usually cannot make cgroups. Without limits that is no
error: the container stays in the runtime's own cgroups. Limits it cannot
apply, or a cgroupsPath it cannot make or join, are errors. A delegated
(writable) cgroup tree is used as root would use it.
"""

from __future__ import annotations

import os

from ..errors import BundleError

# --rootless true or false (runc's global flag); None: auto, decided by rootless().
forced: bool | None = None


def rootless() -> bool:
    """Whether cgroups are best-effort: not root, or root of a user namespace."""
    if forced is not None:
        return forced
    if os.geteuid() != 0:
        return True
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split() != ["0", "0", "4294967295"]
    except OSError:
        return False


def use_cgroups(cid: str, cgroups_path: str | None, resources: dict) -> bool:
    """For a rootless create: whether to make (or join) the container's cgroups.

    False when they are out of reach and nothing needs them; an error when
    something does: limits (devices aside, which runc's rootless manager
    ignores too) or an explicit cgroupsPath.
    """
    from .linux.cgroups import UNIFIED, hierarchies, mode, relative_path

    mounts = hierarchies()
    if mode(mounts) == UNIFIED:
        from .linux.cgroups.fs import own_parent

        rel = relative_path(cid, cgroups_path, own_parent())  # as cgroups.apply
    else:
        rel = relative_path(cid, cgroups_path)
        if not (resources.get("unified") or resources.get("hugepageLimits")):
            mounts.pop("unified", None)  # cgroups.apply leaves v2 out for a rootless runtime
    blocked = [d for d in dict.fromkeys(_where_written(mp, rel) for mp in mounts.values())
               if not os.access(d, os.W_OK)]  # fmt: skip
    if not blocked:
        return True
    if cgroups_path:
        raise BundleError(f"linux.cgroupsPath {cgroups_path}: a rootless container cannot "
                          f"create or join it: {blocked[0]} is not writable",
                          hint="delegate that cgroup to this user, or leave cgroupsPath out")  # fmt: skip
    limits = [k for k, v in resources.items() if v and k != "devices"]
    if limits:
        raise BundleError(f"linux.resources.{limits[0]}: cannot set this limit: a rootless "
                          f"container could not create its cgroup ({blocked[0]} is not writable)",
                          hint="delegate a cgroup to this user and name it in linux.cgroupsPath, "
                          "or leave the limits out")  # fmt: skip
    return False


def _where_written(mount: str, rel: str) -> str:
    """What creating (or joining) ``mount/rel`` writes to: its nearest existing
    ancestor, where it is made; or, when it exists, its cgroup.procs."""
    path = os.path.join(mount, rel)
    if os.path.isdir(path):
        return os.path.join(path, "cgroup.procs")
    while not os.path.isdir(path):
        path = os.path.dirname(path)
    return path


def check(ns_has_user: bool, joins_user: bool, mounts: list, linux: dict) -> None:
    """What a runtime that is not root cannot do, said before anything is made (runc's checks)."""
    if not ns_has_user:
        raise BundleError("config.json: a rootless container needs a user namespace",
                          hint='add {"type": "user"} and linux.uidMappings and gidMappings '
                          "(see: ocibox-runtime spec --rootless)")  # fmt: skip
    if joins_user:
        return  # its maps are not ours to check
    for m in mounts:
        for opt in m.data.split(","):
            key, _, value = opt.partition("=")
            if key in ("uid", "gid") and value.isdigit() and not _mapped(
                int(value), linux.get(f"{key}Mappings") or []
            ):
                raise BundleError(f"config.json: mount {m.destination}: {key}={value} is not "
                                  "mapped in the container's user namespace",
                                  hint=f"leave {key}= out, or map that id")  # fmt: skip


def _mapped(cid: int, maps: list[dict]) -> bool:
    return any(m["containerID"] <= cid < m["containerID"] + m["size"] for m in maps)

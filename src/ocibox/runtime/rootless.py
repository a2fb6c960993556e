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


def use_cgroups(cid: str, cgroups_path: str | None, resources: dict) -> list[str]:
    """For a rootless create: the hierarchies (keys of cgroups.hierarchies()) to make or
    join the container's cgroups in; none when none is within reach and nothing needs one.

    As runc's rootless managers. On cgroup v1 each hierarchy is on its own: with no
    cgroupsPath the container goes into those the user may write (under the
    runtime's own cgroup, see v1.relative_paths) and stays where it is in the
    others; a limit for one of those is an error. An explicit cgroupsPath must be
    within reach in every hierarchy. Device rules need no cgroup (runc's rootless
    manager ignores them too); a ``name=`` hierarchy (name=systemd) is joined when
    it can be and skipped otherwise, as runc's NameGroup does.
    """
    from .linux.cgroups import UNIFIED, hierarchies, mode, relative_path

    mounts = hierarchies()
    if mode(mounts) == UNIFIED:
        from .linux.cgroups.fs import own_parent

        rels = {"unified": relative_path(cid, cgroups_path, own_parent())}  # as cgroups.apply
    else:
        from .linux.cgroups import v1

        if not (resources.get("unified") or resources.get("hugepageLimits")):
            mounts.pop("unified", None)  # cgroups.apply leaves v2 out for a rootless runtime
        rels = v1.relative_paths(mounts, cid, cgroups_path)
    blocked = {}
    for ctrl, mp in mounts.items():
        where = _where_written(mp, rels[ctrl])
        if not os.access(where, os.W_OK):
            blocked[ctrl] = where
    usable = [c for c in mounts if c not in blocked]
    hard = [c for c in blocked if not c.startswith("name=")]
    if hard and cgroups_path:
        raise BundleError(f"linux.cgroupsPath {cgroups_path}: a rootless container cannot "
                          f"create or join it: {blocked[hard[0]]} is not writable",
                          hint="delegate that cgroup to this user, or leave cgroupsPath out")  # fmt: skip
    for key, ctrls in controllers_needed(resources).items() if hard else ():
        for ctrl in ctrls:
            # on a unified host every controller is v2's; on a hybrid one hugetlb and
            # rdma are, when v1 has no such hierarchy (see v1._set_hugetlb)
            if ctrl not in mounts and "unified" in mounts and (
                len(mounts) == 1 or ctrl in ("hugetlb", "rdma")
            ):
                ctrl = "unified"
            if ctrl in blocked:
                what = "" if len(mounts) == 1 else f"{ctrl} "
                raise BundleError(f"linux.resources.{key}: cannot set this limit: a rootless "
                                  f"container could not create its {what}cgroup "
                                  f"({blocked[ctrl]} is not writable)",
                                  hint="delegate a cgroup to this user (the runtime's own, or "
                                  "one named in linux.cgroupsPath), or leave the limits out")  # fmt: skip
    if usable == ["unified"] and len(mounts) == 1:
        _check_delegated(os.path.join(mounts["unified"], rels["unified"]), controllers_needed(resources))
    return usable


# v1 controller -> its cgroup v2 name
_V2_NAMES = {"memory": "memory", "cpu": "cpu", "cpuset": "cpuset", "pids": "pids",
             "blkio": "io", "hugetlb": "hugetlb", "rdma": "rdma"}  # fmt: skip


def _check_delegated(path: str, needs: dict[str, list[str]]) -> None:
    """cgroup v2: a limit whose controller the delegated subtree was not given is refused
    by name (runc fails on the missing file, e.g. memory.max). The container's cgroup, or
    the one it is made in, must have the controller (its parent turned it on), unless
    that parent's subtree_control is the user's to turn it on."""
    from .linux.cgroups.fs import read

    at = path
    while not os.path.isdir(at):
        at = os.path.dirname(at)
    if os.access(os.path.join(os.path.dirname(at), "cgroup.subtree_control"), os.W_OK):
        return  # cgroups.v2.enable turns on what is missing, or says why it cannot
    have = read(at, "cgroup.controllers").split()
    for key, ctrls in needs.items():
        for ctrl in ctrls:
            name = _V2_NAMES.get(ctrl)
            if name and name not in have:
                raise BundleError(f"linux.resources.{key}: cannot set this limit: the {name} "
                                  f"controller is not delegated to this user ({at} has "
                                  f"{' '.join(have) or 'none'} in cgroup.controllers)",
                                  hint=f"enable {name} in the cgroup.subtree_control above "
                                  "the delegated cgroup, or leave the limit out")  # fmt: skip


def controllers_needed(resources: dict) -> dict[str, list[str]]:
    """linux.resources key -> the v1 controllers its values are written to (as runc's Set,
    nothing for a value left unset or 0, a pids limit of 0 too; devices: none, see
    use_cgroups)."""

    def given(d: dict | None) -> bool:
        # 0 and false are unset, but for swappiness and idle (pointers in runc's config)
        return any(v not in (None, [], {}) and (v or k in ("swappiness", "idle"))
                   for k, v in (d or {}).items())  # fmt: skip

    cpu = resources.get("cpu") or {}
    needs = {
        "memory": ["memory"] if given(resources.get("memory")) else [],
        "cpu": (["cpu"] if given({k: v for k, v in cpu.items() if k not in ("cpus", "mems")})
                else []) + (["cpuset"] if cpu.get("cpus") or cpu.get("mems") else []),
        "pids": ["pids"] if (resources.get("pids") or {}).get("limit") else [],
        "blockIO": ["blkio"] if given(resources.get("blockIO")) else [],
        "hugepageLimits": ["hugetlb"] if resources.get("hugepageLimits") else [],
        "rdma": ["rdma"] if given(resources.get("rdma")) else [],
        "unified": ["unified"] if resources.get("unified") else [],
    }  # fmt: skip
    return {k: v for k, v in needs.items() if v}


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

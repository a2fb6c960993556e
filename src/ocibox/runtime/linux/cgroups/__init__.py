"""linux.cgroupsPath and linux.resources: cgroup v1, v2 (unified) and the hybrid layout.

    fs.py  the mount table, the mode, file helpers shared by both versions
    v1.py  one directory per v1 hierarchy (and membership of the v2 one when hybrid)
    v2.py  one directory in the unified hierarchy, runc's conversions, cgroup.freeze
    ../ebpf.py  the device program cgroup v2 needs in place of a devices controller

A container's cgroups are recorded as a map controller -> directory; on a
unified host the map is just {"unified": directory}.
"""

from __future__ import annotations

from .fs import (
    DEFAULT_ALLOWED,
    HYBRID,
    LEGACY,
    ROOT,
    UNIFIED,
    hierarchies,
    mode,
    relative_path,
    remove,
)

__all__ = ["DEFAULT_ALLOWED", "HYBRID", "LEGACY", "ROOT", "UNIFIED", "apply", "freeze",
           "frozen", "hierarchies", "is_unified", "mode", "remove", "set_resources"]  # fmt: skip


def apply(cid: str, cgroups_path: str | None, resources: dict, pid: int, *,
          rootless: bool = False) -> tuple[dict, list]:  # fmt: skip
    """Create the container's cgroups, set its limits, and move ``pid`` into them.

    Returns the cgroup of each controller, and the directories made here (only
    those are removed on delete: a cgroup the container did not create stays).
    ``rootless`` (in a delegated tree), as runc's rootless manager: no device
    rules (they need host root), only the hierarchies rootless.use_cgroups finds
    within reach, and so on a hybrid host no v2 membership unless a v2 limit needs
    it (moving there needs the source cgroup writable too).
    """
    mounts = hierarchies()
    if mode(mounts) == UNIFIED:
        from . import v2
        from .fs import own_parent

        rel = relative_path(cid, cgroups_path, own_parent())
        return v2.apply(mounts["unified"], rel, resources, pid, devices=not rootless)
    from . import v1

    if rootless:
        from ...rootless import use_cgroups

        reach = use_cgroups(cid, cgroups_path, resources)
        mounts = {ctrl: mp for ctrl, mp in mounts.items() if ctrl in reach}
    return v1.apply(mounts, v1.relative_paths(mounts, cid, cgroups_path), resources, pid,
                    devices=not rootless)


def is_unified(paths: dict[str, str]) -> bool:
    """Whether a container's cgroups are those of a unified (v2 only) host."""
    return set(paths) == {"unified"}


def set_resources(paths: dict[str, str], resources: dict) -> None:
    """Change the limits of a container's cgroups (update).

    linux.resources.devices, when given, replaces the device rules: a new
    device program on a unified host; on v1 the devices cgroup is reset to
    deny-all and the rules are written in order (a short moment with no
    device allowed, as on runc's v1 path).
    """
    if is_unified(paths):
        from . import v2
        from .fs import device_rules

        devices = resources.get("devices")
        if devices is not None:
            device_rules(devices)  # refused before anything is written
        v2.set_resources(paths["unified"], resources)
        if devices is not None:
            v2.set_devices(paths["unified"], devices)
    else:
        from . import v1

        devices = resources.get("devices")
        if devices is not None:
            from ....errors import NotImplementedYet
            from .fs import device_rules

            device_rules(devices)  # refused before anything is written
            if "devices" not in paths:
                raise NotImplementedYet("linux.resources.devices: this container has no devices "
                                        "cgroup to update")  # fmt: skip
        v1.set_resources(paths, resources)
        if devices is not None:
            v1.replace_devices(paths["devices"], devices)


def frozen(paths: dict[str, str]) -> bool:
    from .fs import read

    if "freezer" in paths:
        return read(paths["freezer"], "freezer.state") == "FROZEN"
    return "unified" in paths and "frozen 1" in read(paths["unified"], "cgroup.events").split("\n")


def freeze(paths: dict[str, str], want: bool, cid: str) -> None:
    """Pause (``want``) or resume a container: the v1 freezer where there is one, else
    cgroup.freeze of cgroup v2 (on hybrid hosts too, when v1 has no freezer)."""
    from ....errors import NotImplementedYet

    if "freezer" in paths:
        from . import v1

        v1.freeze(paths["freezer"], want)
    elif "unified" in paths:
        from . import v2

        v2.freeze(paths["unified"], want)
    else:
        raise NotImplementedYet(f"container {cid} has no freezer cgroup to pause it with")

"""linux.memoryPolicy: the container's NUMA memory policy, set_mempolicy(2) in its init."""

from __future__ import annotations

import os

from ...errors import BundleError
from . import syscalls as sc

MODES = {
    "MPOL_DEFAULT": 0,
    "MPOL_PREFERRED": 1,
    "MPOL_BIND": 2,
    "MPOL_INTERLEAVE": 3,
    "MPOL_LOCAL": 4,
    "MPOL_PREFERRED_MANY": 5,
    "MPOL_WEIGHTED_INTERLEAVE": 6,
}
FLAGS = {
    "MPOL_F_NUMA_BALANCING": 1 << 13,
    "MPOL_F_RELATIVE_NODES": 1 << 14,
    "MPOL_F_STATIC_NODES": 1 << 15,
}
_NO_NODES = ("MPOL_DEFAULT", "MPOL_LOCAL")
_NEED_NODES = ("MPOL_BIND", "MPOL_INTERLEAVE", "MPOL_PREFERRED_MANY", "MPOL_WEIGHTED_INTERLEAVE")
_MAX_NODE = 1 << 10  # the kernel's MAX_NUMNODES is at most 1024


def parse_nodes(text: str, where: str) -> list[int]:
    """A node list such as "0-1,3" as sorted node numbers."""
    nodes: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        lo, dash, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi) if dash else int(lo)
        except ValueError:
            raise BundleError(f"{where}: {text!r} is not a node list such as \"0-1,3\"") from None
        if first < 0 or last < first or last >= _MAX_NODE:
            raise BundleError(f"{where}: bad node range {part!r} in {text!r}")
        nodes.update(range(first, last + 1))
    return sorted(nodes)


def _system_nodes(kind: str) -> set[int]:
    try:
        with open(f"/sys/devices/system/node/{kind}") as f:
            text = f.read().strip()
    except OSError:
        return {0}  # no NUMA support: one node
    return set(parse_nodes(text, kind)) if text else {0}


def check(policy) -> tuple[int, list[int]]:
    """Validate linux.memoryPolicy; return (mode | flags, nodes) for apply()."""
    where = "config.json: linux.memoryPolicy"
    if not isinstance(policy, dict):
        raise BundleError(f"{where}: must be an object")
    mode = policy.get("mode")
    if mode not in MODES:
        raise BundleError(f"{where}.mode: {mode!r} is not one of {', '.join(MODES)}")
    flags = 0
    for flag in policy.get("flags") or []:
        if flag not in FLAGS:
            raise BundleError(f"{where}.flags: {flag!r} is not one of {', '.join(FLAGS)}")
        flags |= FLAGS[flag]
    if flags & FLAGS["MPOL_F_STATIC_NODES"] and flags & FLAGS["MPOL_F_RELATIVE_NODES"]:
        raise BundleError(f"{where}.flags: MPOL_F_STATIC_NODES and MPOL_F_RELATIVE_NODES exclude each other")
    text = policy.get("nodes") or ""
    if not isinstance(text, str):
        raise BundleError(f"{where}.nodes: must be a string such as \"0-1,3\"")
    nodes = parse_nodes(text, f"{where}.nodes") if text.strip() else []
    if mode in _NO_NODES and nodes:
        raise BundleError(f"{where}: {mode} takes no nodes, but nodes is {text!r}")
    if mode in _NO_NODES and flags:
        raise BundleError(f"{where}: {mode} takes no flags")
    if mode in _NEED_NODES and not nodes:
        raise BundleError(f"{where}: {mode} needs nodes, such as \"0\"")
    if nodes and not flags & FLAGS["MPOL_F_RELATIVE_NODES"]:
        # Relative nodes are indices into the allowed set; the others are real nodes.
        known = _system_nodes("possible" if flags & FLAGS["MPOL_F_STATIC_NODES"] else "online")
        missing = [n for n in nodes if n not in known]
        if missing:
            have = ",".join(map(str, sorted(known)))
            raise BundleError(
                f"{where}.nodes: node {missing[0]} does not exist here (nodes online: {have})"
            )
    return MODES[mode] | flags, nodes


def apply(parsed: tuple[int, list[int]]) -> None:
    mode, nodes = parsed
    try:
        sc.set_mempolicy(mode, nodes)
    except OSError as e:
        raise BundleError(f"linux.memoryPolicy: set_mempolicy: {os.strerror(e.errno)}") from None

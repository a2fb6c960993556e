"""Compare two directory trees entry by entry, as an unpacked rootfs must match.

``scan`` records what a layer can carry for every path: type, permission bits,
owner, symlink target, device numbers, xattrs, contents (sha256) and mtime,
plus which paths share an inode (hardlink groups). ``differences`` lists every
mismatch in words, so an assertion failure says exactly what differs.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass

# Labels the host adds on its own; never image content.
HOST_XATTRS = ("security.selinux",)


@dataclass(frozen=True)
class Entry:
    kind: str
    mode: int
    uid: int
    gid: int
    target: str | None
    rdev: tuple[int, int] | None
    xattrs: tuple[tuple[str, bytes], ...]
    sha256: str | None
    size: int
    mtime_ns: int


@dataclass
class Tree:
    root: str
    entries: dict[str, Entry]
    links: set[frozenset[str]]  # groups of 2+ paths sharing one inode


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "symlink"),
                       (stat.S_ISCHR, "chardev"), (stat.S_ISBLK, "blockdev"),
                       (stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "unknown"


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _xattrs(path: str) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    return tuple(sorted((n, os.getxattr(path, n, follow_symlinks=False))
                        for n in names if n not in HOST_XATTRS))


def scan(root: str, *, ignore: tuple[str, ...] = ()) -> Tree:
    """Every entry under ``root`` (relative paths, "." for the root itself)."""
    entries: dict[str, Entry] = {}
    inodes: dict[tuple[int, int], list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for name in [".", *dirnames, *filenames] if rel_dir == "." else [*dirnames, *filenames]:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if any(rel == i or rel.startswith(i + "/") for i in ignore):
                continue
            path = os.path.join(root, rel)
            st = os.lstat(path)
            kind = _kind(st.st_mode)
            entries[rel] = Entry(
                kind=kind,
                mode=stat.S_IMODE(st.st_mode),
                uid=st.st_uid,
                gid=st.st_gid,
                target=os.readlink(path) if kind == "symlink" else None,
                rdev=(os.major(st.st_rdev), os.minor(st.st_rdev))
                if kind in ("chardev", "blockdev") else None,
                xattrs=_xattrs(path),
                sha256=_sha256(path) if kind == "file" else None,
                size=st.st_size if kind == "file" else 0,
                mtime_ns=st.st_mtime_ns,
            )
            if kind != "dir" and st.st_nlink > 1:
                inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
    links = {frozenset(paths) for paths in inodes.values() if len(paths) > 1}
    return Tree(root, entries, links)


def _mtime(ns: int, resolution: str) -> int:
    return ns // 1_000_000_000 if resolution == "s" else ns


def differences(a: Tree, b: Tree, *, mtimes: str = "files", resolution: str = "ns",
                owners: bool = True, root_meta: bool = True) -> list[str]:
    """Every way in which tree ``b`` differs from tree ``a``.

    ``mtimes``: "files" (regular files only), "all" or "none"; ``resolution``:
    "ns", or "s" to compare whole seconds (for a tree against a layer made
    from it, since tar headers may hold whole seconds).
    """
    out: list[str] = []
    for rel in sorted(a.entries.keys() - b.entries.keys()):
        out.append(f"{rel}: only in {a.root}")
    for rel in sorted(b.entries.keys() - a.entries.keys()):
        out.append(f"{rel}: only in {b.root}")
    for rel in sorted(a.entries.keys() & b.entries.keys()):
        x, y = a.entries[rel], b.entries[rel]
        if rel == "." and not root_meta:
            continue
        fields = ["kind", "mode", "target", "rdev", "xattrs", "sha256", "size"]
        if owners:
            fields += ["uid", "gid"]
        for f in fields:
            if getattr(x, f) != getattr(y, f):
                vx, vy = getattr(x, f), getattr(y, f)
                if f == "mode":
                    vx, vy = oct(vx), oct(vy)
                out.append(f"{rel}: {f} {vx!r} != {vy!r}")
        if x.kind != y.kind:
            continue
        check = mtimes == "all" or (mtimes == "files" and x.kind == "file")
        if check and _mtime(x.mtime_ns, resolution) != _mtime(y.mtime_ns, resolution):
            out.append(f"{rel}: mtime {x.mtime_ns} != {y.mtime_ns}")
    if a.links != b.links:
        only_a = sorted(sorted(g) for g in a.links - b.links)
        only_b = sorted(sorted(g) for g in b.links - a.links)
        out.append(f"hardlink groups differ: only in {a.root}: {only_a}; only in {b.root}: {only_b}")
    return out


def assert_same_tree(a: str, b: str, *, ignore: tuple[str, ...] = (), **kw) -> Tree:
    """Fail listing every difference between the trees at ``a`` and ``b``."""
    ta, tb = scan(a, ignore=ignore), scan(b, ignore=ignore)
    diff = differences(ta, tb, **kw)
    assert not diff, f"{len(diff)} difference(s) between {a} and {b}:\n  " + "\n  ".join(diff[:60])
    return ta


def tree_hash(root: str) -> dict[str, tuple]:
    """A snapshot of every file's kind, mode and contents: to show a tree is untouched."""
    out: dict[str, tuple] = {}
    for rel, e in scan(root).entries.items():
        out[rel] = (e.kind, e.mode, e.sha256, e.target)
    return out

"""Snapshots of a directory tree, to find what changed without reading contents.

A snapshot records, for every path under a root, the inode fields that any
change to content, metadata or xattrs moves: ctime changes on every such
change, so equal (ino, dev, ctime) plus equal type, mode, owners, size, mtime
and symlink target means the entry is unchanged.

Paths are relative to the root ("etc/passwd"); the root itself is "".
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from .._fs import atomic_write
from ..errors import BundleError

FORMAT = "ocibox.snapshot.v1"

# (kind, mode, uid, gid, size, mtime_ns, ctime_ns, ino, dev, nlink, symlink target)
Record = tuple[str, int, int, int, int, int, int, int, int, int, "str | None"]
_FIELDS = 11

# Linux stamps ctime from a coarse clock (one scheduler tick, at most ~10 ms):
# a change made in the same tick as the snapshot could keep an equal ctime.
_COARSE_CLOCK_NS = 20_000_000


def kind_of(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "f"
    if stat.S_ISDIR(mode):
        return "d"
    if stat.S_ISLNK(mode):
        return "l"
    if stat.S_ISCHR(mode):
        return "c"
    if stat.S_ISBLK(mode):
        return "b"
    if stat.S_ISFIFO(mode):
        return "p"
    return "s"


def join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


def walk(root: str) -> Iterator[tuple[str, str, os.stat_result]]:
    """(relative path, absolute path, lstat) of every entry, depth first.

    Children are visited in bytewise order of their names, each directory
    before its contents, so the order is reproducible. Symlinks are never
    followed.
    """
    root = os.path.abspath(root)
    stack = [""]
    while stack:
        rel = stack.pop()
        path = f"{root}/{rel}" if rel else root
        st = os.lstat(path)
        yield rel, path, st
        if stat.S_ISDIR(st.st_mode):
            names = sorted(os.listdir(path), key=os.fsencode, reverse=True)
            stack.extend(join(rel, name) for name in names)


def record(path: str, st: os.stat_result) -> Record:
    kind = kind_of(st.st_mode)
    target = os.readlink(path) if kind == "l" else None
    return (
        kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_size,
        st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev, st.st_nlink, target,
    )


@dataclass
class Changes:
    """What differs between two snapshots of the same root."""

    added: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    # directories present in both that were removed and made anew (other inode)
    recreated: list[str] = field(default_factory=list)


@dataclass
class Snapshot:
    """Per-path records of a tree, in walk order (see ``walk``)."""

    entries: dict[str, Record]

    @classmethod
    def take(cls, root: str) -> Snapshot:
        return cls._settled({rel: record(path, st) for rel, path, st in walk(root)})

    @classmethod
    def scan(cls, root: str) -> tuple[Snapshot, list[tuple[str, str, os.stat_result]]]:
        """A snapshot of ``root`` and the walk it was made from: (relative path,
        absolute path, lstat) in walk order, so a caller can go over the tree
        again without a second walk (at the cost of keeping every lstat)."""
        seen = list(walk(root))
        return cls._settled({rel: record(path, st) for rel, path, st in seen}), seen

    @classmethod
    def _settled(cls, entries: dict[str, Record]) -> Snapshot:
        newest = max((r[6] for r in entries.values()), default=0)
        # Wait out the coarse ctime clock so a change made right after this
        # snapshot cannot carry the same ctime as the state recorded here.
        wait = newest + _COARSE_CLOCK_NS - time.time_ns()
        if wait > 0:
            time.sleep(min(wait, _COARSE_CLOCK_NS) / 1e9)
        return cls(entries)

    def save(self, path: str) -> None:
        rows = [[rel, *rec] for rel, rec in self.entries.items()]
        # ensure_ascii keeps undecodable names (lone surrogates) round-trippable.
        data = json.dumps({"format": FORMAT, "entries": rows}, separators=(",", ":"))
        atomic_write(path, data.encode("ascii"))

    @classmethod
    def load(cls, path: str) -> Snapshot:
        try:
            with open(path, "rb") as f:
                doc = json.loads(f.read())
        except FileNotFoundError:
            raise BundleError(f"snapshot {path} is missing") from None
        except (OSError, ValueError) as e:
            raise BundleError(f"snapshot {path} is unreadable: {e}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise BundleError(f"snapshot {path} is not an {FORMAT} file")
        rows = doc.get("entries")
        if not isinstance(rows, list):
            raise BundleError(f"snapshot {path}: 'entries' must be a list")
        entries: dict[str, Record] = {}
        for i, row in enumerate(rows):
            if not _valid_row(row):
                raise BundleError(f"snapshot {path}: entry {i} is malformed")
            entries[row[0]] = tuple(row[1:])  # type: ignore[assignment]
        return cls(entries)

    def compare(self, new: Snapshot) -> Changes:
        """Changes from this snapshot to ``new`` (lists in ``new``'s walk order)."""
        old = self.entries
        changes = Changes()
        for rel, rec in new.entries.items():
            before = old.get(rel)
            if before is None:
                changes.added.append(rel)
            elif before != rec and _changed(before, rec):
                changes.modified.append(rel)
                if rec[0] == "d" == before[0] and (rec[7], rec[8]) != (before[7], before[8]):
                    changes.recreated.append(rel)
        changes.deleted = [rel for rel in old if rel not in new.entries]
        changes.recreated += _emptied_dirs(old, changes)
        return changes

    def diff(self, root: str) -> tuple[list[str], list[str], list[str]]:
        """(added, modified, deleted) paths under ``root`` since this snapshot."""
        changes = self.compare(Snapshot.take(root))
        name = _public_name
        return (
            [name(p) for p in changes.added],
            [name(p) for p in changes.modified],
            [name(p) for p in changes.deleted],
        )


def _emptied_dirs(old: dict[str, Record], changes: Changes) -> list[str]:
    """Directories that kept their place but lost every child they had.

    Removing and re-making a directory may reuse its inode number, so the
    inode test above can miss it; a directory none of whose old children
    remain is the same change either way, and an opaque marker states it in
    one entry instead of a whiteout per child.
    """
    gone = set(changes.deleted)
    children: dict[str, list[str]] = {}
    for rel in old:
        if rel:
            children.setdefault(rel.rpartition("/")[0], []).append(rel)
    already = set(changes.recreated)
    return [rel for rel in changes.modified
            if rel and rel not in already and old[rel][0] == "d" and children.get(rel)
            and all(c in gone for c in children[rel])]


def _changed(before: Record, after: Record) -> bool:
    # nlink alone moving also moves ctime; atime is not recorded at all.
    return before[:9] != after[:9] or before[10] != after[10]


def _public_name(rel: str) -> str:
    return rel or "."


def _valid_row(row: object) -> bool:
    if not isinstance(row, list) or len(row) != 1 + _FIELDS:
        return False
    rel, kind, *numbers, target = row
    if not isinstance(rel, str) or kind not in ("f", "d", "l", "c", "b", "p", "s"):
        return False
    if not all(type(n) is int for n in numbers):
        return False
    return target is None or isinstance(target, str)

"""Layer changesets: apply a tar layer onto a directory, and generate one.

The rules are those of the image specification's layer document: whiteouts
(``.wh.<name>``) delete from lower layers, an opaque marker
(``.wh..wh..opq``) hides everything lower layers put in its directory, and an
entry of another type replaces what was there (a directory over a directory
keeps its children).

Hostile input stays outside. Entry names are cleaned lexically; a ``..`` that
would climb above the root raises UnsafeEntry; a leading "/" means the root.
Parent directories are resolved component by component with symlinks
interpreted as if the root were "/" (as umoci and runc do with securejoin),
so no path, symlink or hardlink in a layer reaches outside the root. The last
component is never followed: what is there is removed and created anew with
O_EXCL|O_NOFOLLOW semantics.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import os
import shutil
import stat
import tarfile
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

from ..errors import LayerError, UnsafeEntry, UsageError
from .snapshot import Snapshot, join, walk

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
CHUNK = 1 << 20
_MAX_SYMLINKS = 40  # as the kernel's MAXSYMLINKS
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_XATTR_SKIPPABLE = (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM)


@dataclass
class ApplyStats:
    entries: int = 0
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    devices: int = 0
    fifos: int = 0
    whiteouts: int = 0
    bytes: int = 0
    skipped_devices: list[str] = field(default_factory=list)
    # what could not be applied but need not stop an unpack, one line each
    warnings: list[str] = field(default_factory=list)


@dataclass
class DiffStats:
    added: int = 0
    modified: int = 0
    deleted: int = 0
    opaque: int = 0
    # the tree as it was archived: the baseline for the next diff
    snapshot: Snapshot | None = field(default=None, compare=False, repr=False)


def clean_name(name: str, entry: str | None = None) -> str:
    """A tar name as a clean path relative to the root ("" is the root itself)."""
    parts: list[str] = []
    for part in name.split("/"):
        if part == "..":
            if not parts:
                raise UnsafeEntry(entry or name, "'..' climbs out of the root")
            parts.pop()
        elif part and part != ".":
            parts.append(part)
    return "/".join(parts)


# --- apply -----------------------------------------------------------------


def apply(tar_stream: BinaryIO, root: str, *, rootless: bool = False) -> ApplyStats:
    """Apply the uncompressed tar layer read from ``tar_stream`` onto ``root``.

    ``root`` holds the layers below this one. With ``rootless`` ownership is
    not changed. Directory modes and times are set last, deepest first, so
    writing their children cannot disturb them.
    """
    applier = _Applier(root, rootless)
    reader = _TarReader(tar_stream)
    while (member := reader.next()) is not None:
        applier.entry(member, reader.fileobj)
    applier.finish()
    return applier.stats


class _Counting:
    """Reads exactly what is asked from the layer stream, keeping its position.

    No read-ahead and no wrapper that could close the caller's stream: what
    follows the tar (padding) is left for the caller to drain and verify.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.pos = 0

    def read(self, n: int) -> bytes:
        data = self._raw.read(n)
        if 0 < len(data) < n:  # a raw stream may return short reads
            parts = [data]
            got = len(data)
            while got < n and (more := self._raw.read(n - got)):
                parts.append(more)
                got += len(more)
            data = b"".join(parts)
        self.pos += len(data)
        return data

    def tell(self) -> int:
        return self.pos


class _TarReader:
    """Tar members one after another, from a stream that is never seeked.

    tarfile parses the headers (ustar, PAX, GNU long names), but its own
    stream mode copies its whole read buffer on every small read, which
    dominated the time of unpacking many small files; so this object stands
    in for the TarFile that ``TarInfo.fromtarfile`` reads from.
    """

    encoding = "utf-8"
    errors = "surrogateescape"

    def __init__(self, raw: BinaryIO) -> None:
        self.fileobj = _Counting(raw)
        self.offset = 0  # where the next header starts; tarfile advances it
        self.pax_headers: dict[str, str] = {}  # global PAX headers

    def next(self) -> tarfile.TarInfo | None:
        self._skip(self.offset - self.fileobj.pos)  # unread data and padding
        try:
            member = tarfile.TarInfo.fromtarfile(self)  # type: ignore[arg-type]
        except (tarfile.EOFHeaderError, tarfile.EmptyHeaderError):
            return None  # end-of-archive blocks, or a stream ending between members
        except tarfile.TruncatedHeaderError:
            raise LayerError("layer is truncated inside a tar header") from None
        except tarfile.TarError as e:
            raise LayerError(f"malformed tar in layer at byte {self.offset}: {e}") from None
        return member

    def _skip(self, n: int) -> None:
        while n > 0:
            chunk = self.fileobj.read(min(n, CHUNK))
            if not chunk:
                raise LayerError("layer is truncated inside a tar entry")
            n -= len(chunk)


class _Applier:
    def __init__(self, root: str, rootless: bool) -> None:
        self.root = os.path.abspath(root)
        self.rootless = rootless
        self.is_root = os.geteuid() == 0
        self.stats = ApplyStats()
        # Relative paths verified (or made) in this apply to be real
        # directories, every component of them too: the fast path of _dir.
        self.dirs: set[str] = {""}
        # Paths this layer wrote: whiteouts and opaque markers spare them.
        self.created: set[str] = set()
        # dir -> (mode, atime_ns, mtime_ns), applied by finish()
        self.pending: dict[str, tuple[int, int, int]] = {}
        # Lower-layer dirs this layer changes without an entry of their own:
        # dir -> (atime_ns, mtime_ns) to restore, so an unpack does not depend
        # on when it ran (and matches umoci's).
        self.kept: dict[str, tuple[int, int]] = {}

    def abs(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    # -- one entry --

    def entry(self, m: tarfile.TarInfo, data) -> None:
        self.stats.entries += 1
        rel = clean_name(m.name, m.name)
        parent, _, base = rel.rpartition("/")
        try:
            if base.startswith(WHITEOUT):
                self._whiteout(m, parent, base)
                return
            if not rel:
                if not m.isdir():
                    raise UnsafeEntry(m.name, "a non-directory cannot replace the root")
                self._directory(m, "")
                return
            where = self._dir(parent, m.name)
            assert where is not None
            self._keep_times(where)
            self._create(m, join(where, base), data)
        except OSError as e:
            raise LayerError(f"cannot apply layer entry {m.name!r}: {e}") from None

    def _create(self, m: tarfile.TarInfo, rel: str, data) -> None:
        self.created.add(rel)
        if m.isdir():
            self._directory(m, rel)
        elif m.isreg():
            self._file(m, rel, data)
        elif m.issym():
            self._make(rel, lambda p: os.symlink(m.linkname, p))
            self._metadata(m, rel, chmod=False)
            self.stats.symlinks += 1
        elif m.islnk():
            self._hardlink(m, rel)
        elif m.ischr() or m.isblk():
            self._device(m, rel)
        elif m.isfifo():
            self._make(rel, lambda p: os.mkfifo(p, 0o600))
            self._metadata(m, rel)
            self.stats.fifos += 1
        else:
            self.stats.warnings.append(f"{m.name}: skipped tar entry of type {m.type!r}")

    def _make(self, rel: str, make) -> None:
        """Create ``rel`` with ``make(path)``, replacing whatever is there."""
        path = self.abs(rel)
        try:
            make(path)
        except FileExistsError:
            self._remove(rel)
            make(path)

    def _file(self, m: tarfile.TarInfo, rel: str, data) -> None:
        if m.sparse is not None:
            raise LayerError(f"layer entry {m.name!r}: sparse files are not supported")
        fd = None

        def make(path: str) -> None:
            nonlocal fd
            fd = os.open(path, _FILE_FLAGS, 0o600)

        self._make(rel, make)
        assert fd is not None
        try:
            self._copy(m, data, fd)
            self._chown(m, fd, None)
            os.fchmod(fd, m.mode & 0o7777)  # after chown, which clears setuid
            self._xattrs(m, fd)
            os.utime(fd, ns=_times(m))
        finally:
            os.close(fd)
        self.stats.files += 1

    def _copy(self, m: tarfile.TarInfo, data, fd: int) -> None:
        remaining = m.size
        while remaining:
            chunk = data.read(min(CHUNK, remaining))
            if not chunk:
                raise LayerError(f"layer is truncated inside the data of {m.name!r}")
            remaining -= len(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
        self.stats.bytes += m.size

    def _directory(self, m: tarfile.TarInfo, rel: str) -> None:
        path = self.abs(rel)
        if rel:
            try:
                os.mkdir(path, 0o700)  # the final mode comes in finish()
            except FileExistsError:
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    self._remove(rel)
                    os.mkdir(path, 0o700)
            self.dirs.add(rel)
        self._chown(m, None, path)
        self._xattrs(m, path)
        atime, mtime = _times(m)
        self.pending[rel] = (m.mode & 0o7777, atime, mtime)
        self.stats.dirs += 1

    def _hardlink(self, m: tarfile.TarInfo, rel: str) -> None:
        target = clean_name(m.linkname, m.name)
        tparent, _, tbase = target.rpartition("/")
        where = self._dir(tparent, m.name, create=False)
        source = None if where is None or not tbase else join(where, tbase)
        try:
            st = os.lstat(self.abs(source)) if source is not None else None
        except FileNotFoundError:
            st = None
        if source is None or st is None:
            raise LayerError(f"layer entry {m.name!r}: hardlink target {m.linkname!r} does not exist")
        if stat.S_ISDIR(st.st_mode):
            raise LayerError(f"layer entry {m.name!r}: hardlink to directory {m.linkname!r}")
        if source != rel:
            # linkat without AT_SYMLINK_FOLLOW: a symlink source is linked, not followed
            src = self.abs(source)
            self._make(rel, lambda p: os.link(src, p, follow_symlinks=False))
        self.stats.hardlinks += 1

    def _device(self, m: tarfile.TarInfo, rel: str) -> None:
        kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
        if not self.is_root:
            self.stats.skipped_devices.append(m.name)
            return
        dev = os.makedev(m.devmajor, m.devminor)
        try:
            self._make(rel, lambda p: os.mknod(p, kind | 0o600, dev))
        except PermissionError:
            self.stats.skipped_devices.append(m.name)
            return
        self._metadata(m, rel)
        self.stats.devices += 1

    # -- metadata --

    def _metadata(self, m: tarfile.TarInfo, rel: str, *, chmod: bool = True) -> None:
        path = self.abs(rel)
        self._chown(m, None, path)
        if chmod:
            os.chmod(path, m.mode & 0o7777)  # the path was just made: not a symlink
        self._xattrs(m, path)
        os.utime(path, ns=_times(m), follow_symlinks=False)

    def _chown(self, m: tarfile.TarInfo, fd: int | None, path: str | None) -> None:
        if self.rootless:
            return
        try:
            if fd is not None:
                os.fchown(fd, m.uid, m.gid)
            else:
                os.chown(path, m.uid, m.gid, follow_symlinks=False)
        except PermissionError:
            raise LayerError(
                f"cannot set owner {m.uid}:{m.gid} of {m.name!r}: permission denied",
                hint="unpack as root, or rootless to keep your own ownership",
            ) from None

    def _xattrs(self, m: tarfile.TarInfo, target: int | str) -> None:
        for name, value in _pax_xattrs(m.pax_headers):
            try:
                if isinstance(target, int):
                    os.setxattr(target, name, value)
                else:
                    os.setxattr(target, name, value, follow_symlinks=False)
            except OSError as e:
                if e.errno not in _XATTR_SKIPPABLE:
                    raise
                self.stats.warnings.append(f"{m.name}: xattr {name} not set: {e.strerror}")

    # -- whiteouts --

    def _whiteout(self, m: tarfile.TarInfo, parent: str, base: str) -> None:
        self.stats.whiteouts += 1
        where = self._dir(parent, m.name, create=False)
        if where is not None:
            self._keep_times(where)
        if base == OPAQUE:
            if where is not None:
                self._clear_lower(where)
            return
        victim = base[len(WHITEOUT):]
        if victim in ("", ".", ".."):
            raise UnsafeEntry(m.name, "whiteout names no file")
        if where is None:
            return
        rel = join(where, victim)
        # A whiteout hides lower layers only, never entries of its own layer.
        if rel not in self.created:
            self._remove(rel, missing_ok=True)

    def _clear_lower(self, rel: str) -> None:
        with os.scandir(self.abs(rel)) as it:
            children = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        for name, is_dir in children:
            child = join(rel, name)
            if child not in self.created:
                self._remove(child)
            elif is_dir:
                self._clear_lower(child)

    def _remove(self, rel: str, *, missing_ok: bool = False) -> None:
        path = self.abs(rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            if missing_ok:
                return
            raise
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)  # fd-based on Linux: never follows symlinks
            self._forget(rel)
        else:
            os.unlink(path)

    def _forget(self, rel: str) -> None:
        """Drop cached facts about a removed directory and all below it."""
        prefix = rel + "/"
        self.dirs = {d for d in self.dirs if d != rel and not d.startswith(prefix)}
        self.pending = {
            d: v for d, v in self.pending.items() if d != rel and not d.startswith(prefix)
        }

    # -- safe resolution --

    def _dir(self, rel: str, entry: str, *, create: bool = True) -> str | None:
        """The real directory that parent path ``rel`` names, resolved inside the root.

        Symlinks met on the way are followed as if the root were "/"; missing
        directories are made (or None is returned when ``create`` is false).
        """
        if rel in self.dirs:
            return rel
        todo = rel.split("/")
        todo.reverse()
        cur, hops = "", 0
        while todo:
            part = todo.pop()
            if part in ("", "."):
                continue
            if part == "..":
                cur = cur.rpartition("/")[0]  # ".." of the root is the root
                continue
            nxt = join(cur, part)
            if nxt in self.dirs:
                cur = nxt
                continue
            path = self.abs(nxt)
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                if not create:
                    return None
                os.mkdir(path, 0o755)
                self.created.add(nxt)
                mode = stat.S_IFDIR
            if stat.S_ISDIR(mode):
                self.dirs.add(nxt)
                cur = nxt
            elif stat.S_ISLNK(mode):
                hops += 1
                if hops > _MAX_SYMLINKS:
                    raise UnsafeEntry(entry, "too many levels of symbolic links")
                target = os.readlink(path)
                if target.startswith("/"):
                    cur = ""
                todo.extend(reversed(target.split("/")))
            elif not create:
                return None  # a whiteout below a non-directory has nothing to hide
            else:
                raise LayerError(f"layer entry {entry!r}: {nxt!r} is not a directory")
        return cur

    def _keep_times(self, rel: str) -> None:
        if rel not in self.pending and rel not in self.kept and rel not in self.created:
            st = os.lstat(self.abs(rel))
            self.kept[rel] = (st.st_atime_ns, st.st_mtime_ns)

    def finish(self) -> None:
        for rel, times in self.kept.items():
            if rel in self.pending or rel in self.created:
                continue  # this layer made it anew: its own times apply
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISDIR(os.lstat(self.abs(rel)).st_mode):
                    os.utime(self.abs(rel), ns=times, follow_symlinks=False)
        for rel in sorted(self.pending, key=lambda r: r.count("/") + bool(r), reverse=True):
            mode, atime, mtime = self.pending[rel]
            path = self.abs(rel)
            os.chmod(path, mode)
            os.utime(path, ns=(atime, mtime), follow_symlinks=False)


def _times(m: tarfile.TarInfo) -> tuple[int, int]:
    """(atime, mtime) in ns, exact from PAX records when present."""
    pax = m.pax_headers
    mtime = _pax_ns(pax["mtime"]) if "mtime" in pax else None
    if mtime is None:
        mtime = int(m.mtime) * 1_000_000_000
    atime = _pax_ns(pax["atime"]) if "atime" in pax else None
    return (mtime if atime is None else atime), mtime


def _pax_ns(value: str) -> int | None:
    sec, _, frac = value.partition(".")
    try:
        ns = int(sec) * 1_000_000_000
        part = int((frac + "000000000")[:9]) if frac else 0
    except ValueError:
        return None
    return ns - part if sec.startswith("-") else ns + part


def _pax_xattrs(pax: dict[str, str]) -> Iterable[tuple[str, bytes]]:
    for key, value in pax.items():
        if key.startswith("SCHILY.xattr."):
            yield key[13:], value.encode("utf-8", "surrogateescape")
        elif key.startswith("LIBARCHIVE.xattr."):
            name = urllib.parse.unquote(key[17:])
            yield name, base64.b64decode(value + "=" * (-len(value) % 4))


# --- generate --------------------------------------------------------------


class _Info(tarfile.TarInfo):
    def get_info(self):
        info = super().get_info()
        if info["name"] == "./":
            info["name"] = "."  # the root is "." as umoci writes it
        return info


# Host-specific labels and overlayfs internals are not image content.
_SKIP_XATTRS = ("security.selinux",)
_SKIP_XATTR_PREFIXES = ("trusted.overlay.",)


class _TarWriter:
    """Writes tar entries for paths of a tree, buffered, in PAX format."""

    def __init__(self, out, source_date_epoch: int | None) -> None:
        self.out = out
        self.clamp = source_date_epoch
        self.links: dict[tuple[int, int], str] = {}
        self.buf = bytearray()

    def _put(self, data) -> None:
        self.buf += data
        if len(self.buf) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            self.out.write(self.buf)
            self.buf = bytearray()

    def close(self) -> None:
        self._put(b"\0" * 1024)  # end of archive: two zero blocks, as Go's tar
        self.flush()

    def marker(self, name: str) -> None:
        """A whiteout or opaque marker: an empty file, mode 0, epoch time."""
        info = _Info(name)
        info.mode, info.mtime, info.uname, info.gname = 0, 0, "", ""
        self._put(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def add(self, rel: str, path: str, st: os.stat_result) -> bool:
        """Write the entry for ``rel``; False when its type has no tar form."""
        info = _Info(rel or ".")
        mode = st.st_mode
        info.mode = stat.S_IMODE(mode)
        info.uid, info.gid, info.uname, info.gname = st.st_uid, st.st_gid, "", ""
        mtime = st.st_mtime_ns // 1_000_000_000
        info.mtime = mtime if self.clamp is None else min(mtime, self.clamp)
        size = 0
        if stat.S_ISDIR(mode):
            info.type = tarfile.DIRTYPE
        elif stat.S_ISLNK(mode):
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
        elif stat.S_ISSOCK(mode):
            return False
        elif st.st_nlink > 1 and (st.st_dev, st.st_ino) in self.links:
            info.type, info.linkname = tarfile.LNKTYPE, self.links[(st.st_dev, st.st_ino)]
        elif stat.S_ISREG(mode):
            size = st.st_size
            if st.st_nlink > 1:
                self.links[(st.st_dev, st.st_ino)] = info.name
        else:
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else (
                tarfile.BLKTYPE if stat.S_ISBLK(mode) else tarfile.FIFOTYPE)
            if not stat.S_ISFIFO(mode):
                info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        info.size = size
        info.pax_headers = _read_xattrs(path)
        self._put(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        if size:
            self._contents(rel, path, size)
        return True

    def _contents(self, rel: str, path: str, size: int) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            if size >= CHUNK:
                self.flush()
            remaining = size
            while remaining:
                chunk = os.read(fd, min(CHUNK, remaining))
                if not chunk:
                    raise LayerError(f"{rel}: file shrank while it was being archived")
                remaining -= len(chunk)
                self._put(chunk)
        finally:
            os.close(fd)
        if size % 512:
            self._put(b"\0" * (512 - size % 512))


def _read_xattrs(path: str) -> dict[str, str]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}
        raise
    pax = {}
    for name in sorted(names):
        if name in _SKIP_XATTRS or name.startswith(_SKIP_XATTR_PREFIXES):
            continue
        value = os.getxattr(path, name, follow_symlinks=False)
        pax["SCHILY.xattr." + name] = value.decode("utf-8", "surrogateescape")
    return pax


def _epoch(source_date_epoch: int | None) -> int | None:
    if source_date_epoch is not None:
        return source_date_epoch
    env = os.environ.get("SOURCE_DATE_EPOCH")
    if not env:
        return None
    try:
        return int(env)
    except ValueError:
        raise UsageError(f"SOURCE_DATE_EPOCH={env!r} is not a whole number of seconds") from None


def generate(
    root: str, out: BinaryIO, *, paths: Iterable[str] | None = None,
    source_date_epoch: int | None = None,
) -> None:
    """Write an uncompressed tar of ``root`` (or of only ``paths`` in it) to ``out``.

    Entries come depth first in bytewise name order; times are clamped to
    ``source_date_epoch`` (default: $SOURCE_DATE_EPOCH). The same tree gives
    the same bytes.
    """
    wanted = None if paths is None else {clean_name(p) for p in paths}
    writer = _TarWriter(out, _epoch(source_date_epoch))
    try:
        for rel, path, st in walk(root):
            if wanted is None or rel in wanted:
                writer.add(rel, path, st)
    except OSError as e:
        raise LayerError(f"cannot archive {root}: {e}") from None
    writer.close()


def generate_diff(
    root: str, snapshot: Snapshot, out: BinaryIO, *, source_date_epoch: int | None = None,
) -> DiffStats:
    """Write a tar layer of what changed under ``root`` since ``snapshot``.

    Added and modified entries are written whole; a deleted path becomes one
    whiteout (none for the contents of a deleted directory); a directory
    removed and made anew gets an opaque marker followed by all it holds.
    """
    current, seen = Snapshot.scan(root)
    changes = snapshot.compare(current)
    changed = set(changes.added) | set(changes.modified)
    recreated = set(changes.recreated)
    # Deleted paths by parent. Only parents still there as the same directory
    # are reached by the walk below, so the contents of a deleted directory,
    # or of one that became a file or was made anew, get no whiteouts.
    gone: dict[str, list[str]] = {}
    for rel in changes.deleted:
        parent, _, name = rel.rpartition("/")
        gone.setdefault(parent, []).append(name)
    stats = DiffStats(added=len(changes.added), modified=len(changes.modified), snapshot=current)
    writer = _TarWriter(out, _epoch(source_date_epoch))
    inside: list[str] = []  # stack of recreated dirs enclosing the walk position
    try:
        for rel, path, st in seen:
            while inside and not rel.startswith(inside[-1] + "/"):
                inside.pop()
            if rel in changed or inside:
                writer.add(rel, path, st)
            if not stat.S_ISDIR(st.st_mode):
                continue
            prefix = join(rel, "")
            if rel in recreated:
                writer.marker(prefix + OPAQUE)
                stats.opaque += 1
                inside.append(rel)
            elif rel in gone and not inside:
                for name in sorted(gone[rel], key=os.fsencode):
                    writer.marker(prefix + WHITEOUT + name)
                    stats.deleted += 1
    except OSError as e:
        raise LayerError(f"cannot archive changes of {root}: {e}") from None
    writer.close()
    return stats

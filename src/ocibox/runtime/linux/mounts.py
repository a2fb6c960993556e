"""config.json mounts: option parsing, safe destinations, and mounting one entry."""

from __future__ import annotations

import errno
import os
import stat

from ...errors import BundleError, NotImplementedYet
from . import syscalls as sc

# option -> (clear, set) flags; the spec's list of mount options.
_FLAGS: dict[str, tuple[int, int]] = {
    "defaults": (0, 0),
    "ro": (0, sc.MS_RDONLY),
    "rw": (sc.MS_RDONLY, 0),
    "suid": (sc.MS_NOSUID, 0),
    "nosuid": (0, sc.MS_NOSUID),
    "dev": (sc.MS_NODEV, 0),
    "nodev": (0, sc.MS_NODEV),
    "exec": (sc.MS_NOEXEC, 0),
    "noexec": (0, sc.MS_NOEXEC),
    "sync": (0, sc.MS_SYNCHRONOUS),
    "async": (sc.MS_SYNCHRONOUS, 0),
    "dirsync": (0, sc.MS_DIRSYNC),
    "remount": (0, sc.MS_REMOUNT),
    "mand": (0, sc.MS_MANDLOCK),
    "nomand": (sc.MS_MANDLOCK, 0),
    "atime": (sc.MS_NOATIME, 0),
    "noatime": (0, sc.MS_NOATIME),
    "diratime": (sc.MS_NODIRATIME, 0),
    "nodiratime": (0, sc.MS_NODIRATIME),
    "relatime": (0, sc.MS_RELATIME),
    "norelatime": (sc.MS_RELATIME, 0),
    "strictatime": (0, sc.MS_STRICTATIME),
    "nostrictatime": (sc.MS_STRICTATIME, 0),
    "lazytime": (0, sc.MS_LAZYTIME),
    "nolazytime": (sc.MS_LAZYTIME, 0),
    "nosymfollow": (0, sc.MS_NOSYMFOLLOW),
    "symfollow": (sc.MS_NOSYMFOLLOW, 0),
    "bind": (0, sc.MS_BIND),
    "rbind": (0, sc.MS_BIND | sc.MS_REC),
}

PROPAGATION = {
    "private": sc.MS_PRIVATE,
    "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "shared": sc.MS_SHARED,
    "rshared": sc.MS_SHARED | sc.MS_REC,
    "slave": sc.MS_SLAVE,
    "rslave": sc.MS_SLAVE | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE,
    "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}

# Recursive attributes need mount_setattr(2); not there yet.
# Recursive attributes, applied with mount_setattr(2): option -> (set, clear).
_RECURSIVE = {
    "rro": (sc.MOUNT_ATTR_RDONLY, 0), "rrw": (0, sc.MOUNT_ATTR_RDONLY),
    "rnosuid": (sc.MOUNT_ATTR_NOSUID, 0), "rsuid": (0, sc.MOUNT_ATTR_NOSUID),
    "rnodev": (sc.MOUNT_ATTR_NODEV, 0), "rdev": (0, sc.MOUNT_ATTR_NODEV),
    "rnoexec": (sc.MOUNT_ATTR_NOEXEC, 0), "rexec": (0, sc.MOUNT_ATTR_NOEXEC),
    "rnodiratime": (sc.MOUNT_ATTR_NODIRATIME, 0), "rdiratime": (0, sc.MOUNT_ATTR_NODIRATIME),
    "rnosymfollow": (sc.MOUNT_ATTR_NOSYMFOLLOW, 0), "rsymfollow": (0, sc.MOUNT_ATTR_NOSYMFOLLOW),
    # The atime modes are one field: setting one clears the others.
    "rrelatime": (sc.MOUNT_ATTR_RELATIME, sc.MOUNT_ATTR__ATIME),
    "rnoatime": (sc.MOUNT_ATTR_NOATIME, sc.MOUNT_ATTR__ATIME),
    "rstrictatime": (sc.MOUNT_ATTR_STRICTATIME, sc.MOUNT_ATTR__ATIME),
    "ratime": (0, sc.MOUNT_ATTR_NOATIME), "rnorelatime": (0, 0), "rnostrictatime": (0, 0),
}  # fmt: skip


class Mount:
    """One parsed entry of config.json's mounts."""

    __slots__ = ("destination", "type", "source", "flags", "propagation", "data", "recursive")

    def __init__(self, destination: str, type: str, source: str, flags: int = 0,
                 propagation: list[int] | None = None, data: str = "") -> None:  # fmt: skip
        self.destination = destination
        self.type = type
        self.source = source
        self.flags = flags
        self.propagation = propagation or []
        self.data = data
        self.recursive = (0, 0)  # mount_setattr (set, clear) for the r* options

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & sc.MS_BIND)


def parse(entry: dict, index: int = 0) -> Mount:
    dest = entry.get("destination")
    where = f"config.json: mounts[{index}]"
    if not isinstance(dest, str) or not dest:
        raise BundleError(f"{where}: destination must be a path, not {dest!r}")
    if not dest.startswith("/"):
        # Deprecated, but the spec still says how to read it: relative to /.
        dest = "/" + dest
    flags = 0
    propagation = []
    data = []
    rec_set = rec_clr = 0
    for opt in entry.get("options") or []:
        if opt in _FLAGS:
            clear, set_ = _FLAGS[opt]
            flags = (flags & ~clear) | set_
        elif opt in PROPAGATION:
            propagation.append(PROPAGATION[opt])
        elif opt in _RECURSIVE:
            set_, clear = _RECURSIVE[opt]
            rec_set = (rec_set & ~clear) | set_
            rec_clr = (rec_clr & ~set_) | clear
        elif opt in ("tmpcopyup", "idmap", "ridmap"):
            raise NotImplementedYet(f"{where}: mount option {opt!r} is not supported yet")
        else:
            data.append(opt)
    mtype = entry.get("type") or ("bind" if flags & sc.MS_BIND else "")
    if mtype == "bind":
        flags |= sc.MS_BIND
    m = Mount(dest, mtype, entry.get("source") or "", flags, propagation, ",".join(data))
    m.recursive = (rec_set, rec_clr)
    return m


def secure_join(root: str, path: str) -> str:
    """``path`` resolved inside ``root`` as if ``root`` were ``/``.

    Symlinks are followed chroot-style: an absolute link restarts at ``root``
    and ``..`` never climbs above it, so the result is always under ``root``.
    Missing components are kept as they are (they will be created under root).
    """
    root = os.path.realpath(root)
    pending = [c for c in path.split("/") if c not in ("", ".")]
    pending.reverse()
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop()
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        if part == ".":
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            resolved.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > 255:
                raise BundleError(f"too many levels of symbolic links in {path!r}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            pending.extend(reversed([c for c in target.split("/") if c]))
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


def _flags_of(path: str) -> int:
    """Mount flags a remount must keep (locked flags in a user namespace)."""
    f = os.statvfs(path).f_flag
    out = 0
    for st_flag, ms in (
        (os.ST_NOSUID, sc.MS_NOSUID),
        (os.ST_NODEV, sc.MS_NODEV),
        (os.ST_NOEXEC, sc.MS_NOEXEC),
        (os.ST_NOATIME, sc.MS_NOATIME),
        (os.ST_NODIRATIME, sc.MS_NODIRATIME),
        (os.ST_RELATIME, sc.MS_RELATIME),
    ):
        if f & st_flag:
            out |= ms
    return out


def remount_readonly(path: str, recursive: bool = False) -> None:
    flags = sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | _flags_of(path)
    if recursive:
        flags |= sc.MS_REC
    sc.mount(None, path, None, flags)


def _make_target(target: str, source_is_dir: bool) -> None:
    if source_is_dir:
        os.makedirs(target, 0o755, exist_ok=True)
        return
    os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
    if not os.path.lexists(target):
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o755))


def mount_in(rootfs: str, m: Mount) -> str:
    """Mount ``m`` at its destination inside ``rootfs``; return the host path used."""
    target = secure_join(rootfs, m.destination)
    if m.is_bind:
        try:
            src_is_dir = stat.S_ISDIR(os.stat(m.source).st_mode)
        except OSError as e:
            raise BundleError(f"mount {m.destination}: source {m.source}: {e.strerror}") from None
    else:
        src_is_dir = True
    _make_target(target, src_is_dir)
    # Pin the target and check where it really is: a symlink swapped in since
    # secure_join could otherwise send the mount out of the rootfs. The mount
    # then goes through /proc/self/fd, onto exactly the inode checked.
    try:
        pin = os.open(target, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise BundleError(f"mount {m.destination}: {e.strerror}") from None
    try:
        real = os.readlink(f"/proc/self/fd/{pin}")
        root = os.path.realpath(rootfs)
        if real != root and not real.startswith(root + "/"):
            raise BundleError(f"mount {m.destination}: destination escapes the root filesystem")
        _mount_one(m, target, f"/proc/self/fd/{pin}")
    finally:
        os.close(pin)
    return target


def _mount_one(m: Mount, target: str, pinned: str) -> None:
    try:
        if m.type == "cgroup":
            _mount_cgroup(m, target, pinned)
        elif m.is_bind:
            sc.mount(m.source, pinned, None, m.flags & (sc.MS_BIND | sc.MS_REC))
            extra = m.flags & ~(sc.MS_BIND | sc.MS_REC)
            if extra:
                flags = sc.MS_BIND | sc.MS_REMOUNT | extra | _flags_of(target)
                sc.mount(None, target, None, flags)
        else:
            sc.mount(m.source, pinned, m.type, m.flags, m.data or None)
        if m.recursive != (0, 0):
            sc.mount_setattr_recursive(target, *m.recursive)
        for p in m.propagation:
            sc.mount(None, target, None, p)
    except OSError as e:
        what = f"{m.type or 'bind'} {m.source or '-'}"
        raise BundleError(f"mount {what} on {m.destination}: {os.strerror(e.errno)}") from None


def _v1_hierarchies() -> list[tuple[str, str]]:
    """(directory name, mount options) of every cgroup v1 hierarchy of this process."""
    out = []
    with open("/proc/self/cgroup") as f:
        for line in reversed(f.readlines()):
            num, controllers, _ = line.rstrip("\n").split(":", 2)
            if num == "0" or not controllers:
                continue
            name = controllers.split(",")
            dirname = ",".join(c.removeprefix("name=") for c in name)
            out.append((dirname, controllers))
    return out


def _mount_cgroup(m: Mount, target: str, pinned: str) -> None:
    """A cgroup mount: cgroup2 on a unified host; a tmpfs of v1 hierarchies otherwise.

    With a cgroup namespace each hierarchy is mounted fresh, so the container
    sees its own cgroup as the root.
    """
    flags = m.flags & ~sc.MS_RDONLY
    hierarchies = _v1_hierarchies()
    if not hierarchies:
        sc.mount("cgroup2", pinned, "cgroup2", m.flags, m.data or None)
        return
    sc.mount("tmpfs", pinned, "tmpfs", flags, "mode=755")
    for dirname, controllers in hierarchies:
        sub = os.path.join(target, dirname)
        os.mkdir(sub, 0o755)
        opts = controllers if not controllers.startswith("name=") else "none," + controllers
        source = "systemd" if controllers == "name=systemd" else "cgroup"
        try:
            sc.mount(source, sub, "cgroup", m.flags, opts)
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise
            # The hierarchy is busy with other options: bind the host's view.
            sc.mount(f"/sys/fs/cgroup/{dirname}", sub, None, sc.MS_BIND)
    # runc leaves the tmpfs writable and only the hierarchies read-only.

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

    __slots__ = ("destination", "type", "source", "flags", "propagation", "data", "recursive",
                 "idmap", "uid_map", "gid_map", "tree_fd", "copyup")  # fmt: skip

    def __init__(self, destination: str, type: str, source: str, flags: int = 0,
                 propagation: list[int] | None = None, data: str = "") -> None:  # fmt: skip
        self.destination = destination
        self.type = type
        self.source = source
        self.flags = flags
        self.propagation = propagation or []
        self.data = data
        self.recursive = (0, 0)  # mount_setattr (set, clear) for the r* options
        self.idmap = ""  # "idmap" or "ridmap"
        self.uid_map: list[dict] | None = None  # the mount's own maps, if given
        self.gid_map: list[dict] | None = None
        self.tree_fd = -1  # the idmapped detached mount, made by the runtime (see idmap_tree)
        self.copyup = False  # tmpcopyup: the tmpfs starts with what the rootfs had there

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
    idmap = ""
    copyup = False
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
        elif opt in ("idmap", "ridmap"):
            idmap = opt
        elif opt == "tmpcopyup":
            copyup = True
        else:
            data.append(opt)
    mtype = entry.get("type") or ("bind" if flags & sc.MS_BIND else "")
    if mtype == "bind":
        flags |= sc.MS_BIND
    m = Mount(dest, mtype, entry.get("source") or "", flags, propagation, ",".join(data))
    m.recursive = (rec_set, rec_clr)
    if copyup and mtype != "tmpfs":
        raise BundleError(f"{where}: tmpcopyup is only for tmpfs mounts, not {mtype or 'none'!r}")
    m.copyup = copyup
    _parse_idmap(m, entry, idmap, where)
    return m


_MAX_EXTENTS = 340  # the kernel's limit on lines in a uid_map or gid_map


def check_id_mappings(maps, where: str) -> list[dict]:
    """Check a LinuxIDMapping list: numbers in range, no overlaps on either side."""
    if not isinstance(maps, list) or not maps:
        raise BundleError(f"{where}: must be a non-empty list of mappings")
    if len(maps) > _MAX_EXTENTS:
        raise BundleError(f"{where}: {len(maps)} mappings; the kernel takes at most {_MAX_EXTENTS}")
    out = []
    for i, e in enumerate(maps):
        vals = {}
        for k in ("containerID", "hostID", "size"):
            v = e.get(k) if isinstance(e, dict) else None
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2**32 - 1:
                raise BundleError(f"{where}[{i}].{k}: must be a number from 0 to 4294967294, not {v!r}")
            vals[k] = v
        if vals["size"] == 0 or vals["containerID"] + vals["size"] > 2**32 - 1 \
                or vals["hostID"] + vals["size"] > 2**32 - 1:  # fmt: skip
            raise BundleError(f"{where}[{i}]: size {vals['size']} is empty or runs past 4294967294")
        out.append(vals)
    for side in ("containerID", "hostID"):
        spans = sorted((e[side], e[side] + e["size"]) for e in out)
        for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
            if start < end:
                raise BundleError(f"{where}: the ranges of {side} overlap")
    return out


def _parse_idmap(m: Mount, entry: dict, idmap: str, where: str) -> None:
    uids, gids = entry.get("uidMappings"), entry.get("gidMappings")
    if (uids is None) != (gids is None):
        raise BundleError(f"{where}: uidMappings and gidMappings go together; one is missing")
    if uids is None and not idmap:
        return
    if not m.is_bind:
        raise NotImplementedYet(f"{where}: idmapped mounts are supported for bind mounts only")
    # Mappings without the option: the spec asks bundles to add it, and says the
    # mappings must be used; apply them (non-recursively).
    m.idmap = idmap or "idmap"
    if uids is not None:
        m.uid_map = check_id_mappings(uids, f"{where}.uidMappings")
        m.gid_map = check_id_mappings(gids, f"{where}.gidMappings")


def _relative_to(maps: list[dict], outer: list[dict] | None, what: str) -> list[dict]:
    """The mount's maps with hostID read in the container's user namespace ``outer``.

    The spec makes a mount's mappings relative to the container's user
    namespace when it has one: hostID is an id as the container sees it, so it
    is turned into the host's id through the container's own maps (a range
    that spans several of its extents is split).
    """
    if outer is None:
        return maps
    out = []
    for e in maps:
        inner, lo, left = e["containerID"], e["hostID"], e["size"]
        while left:
            ext = next((o for o in outer
                        if o["containerID"] <= lo < o["containerID"] + o["size"]), None)  # fmt: skip
            if ext is None:
                raise BundleError(
                    f"{what}: hostID {lo} is not mapped in the container's user namespace",
                    hint="with a user namespace, a mount's hostID is an id inside the container",
                )
            n = min(left, ext["containerID"] + ext["size"] - lo)
            out.append({"containerID": inner, "hostID": ext["hostID"] + lo - ext["containerID"],
                        "size": n})  # fmt: skip
            inner, lo, left = inner + n, lo + n, left - n
    return out


def _userns_fd(uid_map: list[dict], gid_map: list[dict]) -> int:
    """An fd of a new user namespace with these maps, held by a child that then exits."""
    ready_r, ready_w = os.pipe()
    hold_r, hold_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(ready_r)
            os.close(hold_w)
            sc.unshare(sc.CLONE_NEWUSER)
            os.write(ready_w, b"1")
            os.read(hold_r, 1)
            code = 0
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(hold_r)
    try:
        if os.read(ready_r, 1) != b"1":
            raise BundleError("could not create a user namespace for an idmapped mount")
        for name, maps in (("uid_map", uid_map), ("gid_map", gid_map)):
            text = "".join(f"{e['containerID']} {e['hostID']} {e['size']}\n" for e in maps)
            try:
                with open(f"/proc/{pid}/{name}", "w") as f:
                    f.write(text)
            except OSError as e:
                raise BundleError(f"idmapped mount: writing its {name}: {e.strerror}") from None
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_r)
        os.close(hold_w)  # the child's read returns: it exits
        os.waitpid(pid, 0)


def idmap_tree(m: Mount, linux: dict, has_userns: bool) -> None:
    """Make ``m``'s idmapped copy of its source, as a detached mount in ``m.tree_fd``.

    Done by the runtime, in the host's user namespace: only there is it
    privileged over the source's filesystem, which MOUNT_ATTR_IDMAP requires.
    The init attaches the copy with move_mount.
    """
    where = f"mount {m.destination}"
    outer_u = linux.get("uidMappings") if has_userns else None
    outer_g = linux.get("gidMappings") if has_userns else None
    if m.uid_map is None:
        if not has_userns:
            raise BundleError(
                f"{where}: {m.idmap} needs uidMappings and gidMappings, or a user namespace",
                hint="add the mount's uidMappings and gidMappings",
            )
        uids, gids = outer_u, outer_g  # files keep their ids as the container sees them
    else:
        uids = _relative_to(m.uid_map, outer_u, f"{where}: uidMappings")
        gids = _relative_to(m.gid_map, outer_g, f"{where}: gidMappings")
    try:
        tree = sc.open_tree_clone(m.source, recursive=bool(m.flags & sc.MS_REC))
    except OSError as e:
        raise BundleError(f"{where}: source {m.source}: {os.strerror(e.errno)}") from None
    try:
        userns = _userns_fd(uids, gids)
        try:
            sc.mount_setattr_idmap(tree, userns, recursive=m.idmap == "ridmap")
        finally:
            os.close(userns)
    except OSError as e:
        os.close(tree)
        why = os.strerror(e.errno)
        if e.errno == errno.EINVAL:
            why += " (the source's filesystem may not support idmapped mounts)"
        raise BundleError(f"{where}: idmapping {m.source}: {why}") from None
    except BaseException:
        os.close(tree)
        raise
    m.tree_fd = tree


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
        elif m.tree_fd >= 0:
            sc.move_mount(m.tree_fd, int(pinned.rsplit("/", 1)[1]))
            os.close(m.tree_fd)
            m.tree_fd = -1
            extra = m.flags & ~(sc.MS_BIND | sc.MS_REC)
            if extra:
                flags = sc.MS_BIND | sc.MS_REMOUNT | extra | _flags_of(target)
                sc.mount(None, target, None, flags)
        elif m.copyup:
            _mount_copyup(m, target, pinned)
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
        hint = None
        if m.type == "sysfs" and e.errno == errno.EPERM:
            # In a user namespace sysfs needs a network namespace owned by it.
            hint = ('in a user namespace: add {"type": "network"} to linux.namespaces, '
                    "or bind /sys (rbind, ro), as spec --rootless does")  # fmt: skip
        raise BundleError(f"mount {what} on {m.destination}: {os.strerror(e.errno)}",
                          hint=hint) from None  # fmt: skip


def _mount_copyup(m: Mount, target: str, pinned: str) -> None:
    """tmpcopyup: a tmpfs that starts with a copy of what it covers.

    A handle on the directory taken before the mount still reaches what is
    underneath, so the copy goes straight from there into the new tmpfs.
    """
    lower = os.open(pinned, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        sc.mount(m.source, pinned, m.type, m.flags, m.data or None)
        upper = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            _copy_tree(lower, upper)
            if not any(o.startswith("mode=") for o in m.data.split(",")):
                # As runc: the tmpfs keeps the directory's mode (unless mode= says otherwise).
                os.chmod(upper, stat.S_IMODE(os.fstat(lower).st_mode))
        finally:
            os.close(upper)
    finally:
        os.close(lower)


def _copy_tree(src: int, dst: int) -> None:
    """Copy the directory ``src`` into ``dst`` (fds): files, links, nodes, owners, modes, times."""
    with os.scandir(src) as it:
        names = [e.name for e in it]
    for name in names:
        st = os.lstat(name, dir_fd=src)
        kind = stat.S_IFMT(st.st_mode)
        if kind == stat.S_IFDIR:
            os.mkdir(name, 0o700, dir_fd=dst)
            s2 = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src)
            d2 = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dst)
            try:
                _copy_tree(s2, d2)
            finally:
                os.close(s2)
                os.close(d2)
        elif kind == stat.S_IFREG:
            _copy_file(name, src, dst, st.st_size)
        elif kind == stat.S_IFLNK:
            os.symlink(os.readlink(name, dir_fd=src), name, dir_fd=dst)
        else:  # fifos, sockets and device nodes
            os.mknod(name, st.st_mode, st.st_rdev, dir_fd=dst)
        os.chown(name, st.st_uid, st.st_gid, dir_fd=dst, follow_symlinks=False)
        if kind != stat.S_IFLNK:
            os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=dst)  # after chown, which drops set-id bits
        os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dst, follow_symlinks=False)


def _copy_file(name: str, src: int, dst: int, size: int) -> None:
    fin = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src)
    try:
        fout = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=dst)
        try:
            done = 0
            while done < size:
                n = os.sendfile(fout, fin, done, min(size - done, 1 << 30))
                if n == 0:
                    break
                done += n
        finally:
            os.close(fout)
    finally:
        os.close(fin)


def _v1_hierarchies() -> list[tuple[str, str, str]]:
    """(directory name, mount options, our cgroup) of every cgroup v1 hierarchy of this process."""
    out = []
    with open("/proc/self/cgroup") as f:
        for line in reversed(f.readlines()):
            num, controllers, path = line.rstrip("\n").split(":", 2)
            if num == "0" or not controllers:
                continue
            name = controllers.split(",")
            dirname = ",".join(c.removeprefix("name=") for c in name)
            out.append((dirname, controllers, path))
    return out


def _mount_cgroup(m: Mount, target: str, pinned: str) -> None:
    """A cgroup mount: cgroup2 on a unified host; a tmpfs of v1 hierarchies otherwise.

    With a cgroup namespace each hierarchy is mounted fresh, so the container
    sees its own cgroup as the root. Without one, as runc does, only the
    container's own cgroup of each hierarchy is shown, at the hierarchy's
    place: a program inside reads its limits in /sys/fs/cgroup/memory/, and
    the host's tree stays out of sight.
    """
    flags = m.flags & ~sc.MS_RDONLY
    hierarchies = _v1_hierarchies()
    if not hierarchies:
        try:
            sc.mount("cgroup2", pinned, "cgroup2", m.flags, m.data or None)
        except OSError as e:
            # a user namespace without a cgroup namespace of its own: EPERM, or EBUSY
            # over the /sys rbind of spec --rootless (runc falls back on both)
            if e.errno not in (errno.EPERM, errno.EBUSY):
                raise
            _bind_cgroup("/sys/fs/cgroup", pinned, m.flags)
        return
    sc.mount("tmpfs", pinned, "tmpfs", flags, "mode=755")
    for dirname, controllers, path in hierarchies:
        sub = os.path.join(target, dirname)
        os.mkdir(sub, 0o755)
        opts = controllers if not controllers.startswith("name=") else "none," + controllers
        source = "systemd" if controllers == "name=systemd" else "cgroup"
        try:
            sc.mount(source, sub, "cgroup", m.flags, opts)
        except OSError as e:
            if e.errno not in (errno.EBUSY, errno.EPERM):
                raise
            # Busy with other options, or a user namespace without a cgroup namespace of
            # its own (the kernel refuses a fresh mount): bind our cgroup from the host's.
            _bind_cgroup(f"/sys/fs/cgroup/{dirname}{path.rstrip('/')}", sub, m.flags)
            continue
        if path != "/":  # no cgroup namespace: our cgroup takes the whole hierarchy's place
            fd = sc.open_tree_clone(sub + path, recursive=False)
            try:
                sc.umount2(sub, sc.MNT_DETACH)
                dfd = os.open(sub, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    sc.move_mount(fd, dfd)
                finally:
                    os.close(dfd)
            finally:
                os.close(fd)
    # runc leaves the tmpfs writable and only the hierarchies read-only.


def _bind_cgroup(source: str, target: str, flags: int) -> None:
    """A user namespace without a cgroup namespace of its own may not mount a cgroup
    file system: bind the host's instead, the process's own cgroup on v1 (as runc)."""
    sc.mount(source, target, None, sc.MS_BIND | sc.MS_REC)
    keep = sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC | sc.MS_RELATIME
    sc.mount("", target, None, sc.MS_BIND | sc.MS_REMOUNT | (flags & keep))

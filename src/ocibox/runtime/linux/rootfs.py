"""The container's root filesystem: mounts, /dev, pivot_root, masked and read-only paths."""

from __future__ import annotations

import errno
import os
import stat

from ...errors import BundleError
from . import mounts as mnt
from . import namespaces as nsmod
from . import syscalls as sc

# (path, type, major, minor): the devices every Linux container gets.
DEFAULT_DEVICES = (
    ("/dev/null", "c", 1, 3),
    ("/dev/zero", "c", 1, 5),
    ("/dev/full", "c", 1, 7),
    ("/dev/random", "c", 1, 8),
    ("/dev/urandom", "c", 1, 9),
    ("/dev/tty", "c", 5, 0),
)

DEV_SYMLINKS = (
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
)

# rootfsPropagation takes the mount options' propagation names.
_ROOT_PROPAGATION = {"": 0, **mnt.PROPAGATION}

# Set by prepare(), applied to the new / once the old one is gone.
_root_propagation = 0

# Sysctls that a namespace confines (as runc allows them); others are the host's.
_IPC_SYSCTLS = frozenset(("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
                          "kernel.shmall", "kernel.shmmax", "kernel.shmmni",
                          "kernel.shm_rmid_forced"))  # fmt: skip


def prepare(
    rootfs: str,
    mounts: list[mnt.Mount],
    devices: list[dict],
    *,
    propagation: str = "",
    in_userns: bool = False,
    before_cgroups=None,
) -> None:
    """Mount everything under ``rootfs`` (still seen from the host's paths).

    ``before_cgroups()`` is called once, before the first cgroup mount or else
    after the last mount, and before any device node is made: what comes
    after it depends on the process's cgroups (and cgroup namespace).
    """
    global _root_propagation
    if propagation not in _ROOT_PROPAGATION:
        raise BundleError(f"config.json: linux.rootfsPropagation: unknown value {propagation!r}")
    _root_propagation = _ROOT_PROPAGATION[propagation]
    if _root_propagation & sc.MS_SHARED:
        # As runc: a shared rootfsPropagation (containerd's for a Bidirectional mount,
        # Kubernetes' mountPropagation) keeps the copies of the host's shared mounts
        # their peers, so that a bind of one sends what the container mounts there
        # to the host. Only the mount holding the rootfs becomes a slave: nothing
        # mounted in the rootfs reaches the host, and pivot_root accepts it.
        sc.mount(None, "/", None, _root_propagation)
        sc.mount(None, _mount_point(rootfs), None, sc.MS_SLAVE)
    else:
        # Otherwise the copy of the host's tree is made a slave first: a shared /
        # would send the container's mounts to the host (and make pivot_root fail),
        # an unbindable one could not be bound. The requested propagation goes on
        # the container's own / after pivot_root.
        sc.mount(None, "/", None, sc.MS_SLAVE | sc.MS_REC)
    # pivot_root needs the new root to be a mount point whose parent is not
    # shared: the mount holding the rootfs is a slave now (all of them are, unless
    # the propagation asked is shared). The bind stays a slave, so that the
    # host's later mounts under the rootfs reach the container (the spec's
    # slave, the default) unless rootfsPropagation says private.
    sc.mount(rootfs, rootfs, None, sc.MS_BIND | sc.MS_REC)
    dev_is_bind = False
    pending = before_cgroups
    for m in mounts:
        if pending is not None and m.type in ("cgroup", "cgroup2"):
            pending()
            pending = None
        mnt.mount_in(rootfs, m)
        if m.destination.rstrip("/") == "/dev" and m.is_bind:
            dev_is_bind = True
    if pending is not None:
        pending()
    if not dev_is_bind:
        old = os.umask(0)
        try:
            _create_devices(rootfs, devices, in_userns)
            _dev_symlinks(rootfs)
        finally:
            os.umask(old)


def _mount_point(path: str) -> str:
    """Where the mount holding ``path`` is mounted (the longest mount point above it)."""
    path = os.path.realpath(path)
    best = "/"
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4]
            for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
                point = point.replace(code, char)
            if len(point) > len(best) and (path == point or path.startswith(point + "/")):
                best = point
    return best


def _device_list(devices: list[dict]) -> list[dict]:
    out = {d: {"path": d, "type": t, "major": ma, "minor": mi, "fileMode": 0o666, "uid": 0, "gid": 0}
           for d, t, ma, mi in DEFAULT_DEVICES}  # fmt: skip
    for i, d in enumerate(devices):
        path = d.get("path")
        if not isinstance(path, str) or not path.startswith("/dev/"):
            raise BundleError(
                f"config.json: linux.devices[{i}]: path must be under /dev, not {path!r}"
            )
        if d.get("type") not in ("c", "b", "u", "p"):
            raise BundleError(f"config.json: linux.devices[{i}]: unknown type {d.get('type')!r}")
        out[path] = d
    return list(out.values())


def _makedirs(path: str) -> None:
    """makedirs with 0755 for every directory it makes (it gives parents 0777 under umask 0)."""
    if os.path.isdir(path):
        return
    _makedirs(os.path.dirname(path))
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        pass


def _create_devices(rootfs: str, devices: list[dict], in_userns: bool) -> None:
    for d in _device_list(devices):
        target = mnt.secure_join(rootfs, d["path"])
        _makedirs(os.path.dirname(target))
        try:
            os.unlink(target)
        except FileNotFoundError:
            pass
        kind = d["type"]
        perm = d.get("fileMode", 0o666) & 0o7777
        if in_userns and kind != "p":
            # mknod is refused in a user namespace: bind the host's node instead.
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0))
            sc.mount(d["path"], target, None, sc.MS_BIND)
            continue
        fmt = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}[kind]
        dev = 0 if kind == "p" else os.makedev(d.get("major", 0), d.get("minor", 0))
        try:
            os.mknod(target, fmt | perm, dev)
        except OSError as e:
            raise BundleError(f"cannot create device {d['path']}: {e.strerror}") from None
        os.chown(target, d.get("uid", 0), d.get("gid", 0))


def _dev_symlinks(rootfs: str) -> None:
    links = list(DEV_SYMLINKS)
    if os.path.exists("/proc/kcore"):
        links.append(("/proc/kcore", "/dev/core"))
    for source, link in links:
        target = mnt.secure_join(rootfs, link)
        try:
            os.symlink(source, target)
        except FileExistsError:
            pass
    ptmx = mnt.secure_join(rootfs, "/dev/ptmx")
    if os.path.isdir(os.path.join(rootfs, "dev/pts")):
        try:
            os.unlink(ptmx)
        except FileNotFoundError:
            pass
        os.symlink("pts/ptmx", ptmx)


def pivot(rootfs: str) -> None:
    """Make ``rootfs`` the root and detach the old one (pivot_root(".", ".") trick)."""
    old = os.open("/", os.O_DIRECTORY | os.O_RDONLY)
    new = os.open(rootfs, os.O_DIRECTORY | os.O_RDONLY)
    try:
        os.fchdir(new)
        sc.pivot_root(".", ".")
        # The old root now sits on top of the new one; detach it without
        # letting the unmount propagate back to the host.
        os.fchdir(old)
        sc.mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC)
        sc.umount2(".", sc.MNT_DETACH)
        os.chdir("/")
    except OSError as e:
        raise BundleError(f"pivot_root to {rootfs}: {os.strerror(e.errno)}") from None
    finally:
        os.close(old)
        os.close(new)
    _apply_root_propagation(unbindable=False)


def chroot(rootfs: str) -> None:
    """--no-pivot: move the rootfs onto / and chroot into it."""
    os.chdir(rootfs)
    sc.mount(rootfs, "/", None, sc.MS_MOVE)
    os.chroot(".")
    os.chdir("/")
    _apply_root_propagation(unbindable=False)


def _apply_root_propagation(unbindable: bool) -> None:
    """linux.rootfsPropagation on the container's /.

    Unbindable waits for readonly_paths: binding a path of the root file
    system onto itself needs a bindable /.
    """
    flags = _root_propagation
    if not flags or bool(flags & sc.MS_UNBINDABLE) != unbindable:
        return
    try:
        sc.mount(None, "/", None, flags)
    except OSError as e:
        raise BundleError(f"linux.rootfsPropagation: {os.strerror(e.errno)}") from None


def _sysctl_namespace(key: str) -> str | None:
    if key.startswith("net."):
        return "network"
    if key in _IPC_SYSCTLS or key.startswith("fs.mqueue."):
        return "ipc"
    if key in ("kernel.hostname", "kernel.domainname"):
        return "uts"
    return None


def check_sysctl(sysctl: dict[str, str], ns: nsmod.Namespaces | None) -> None:
    """Refuse a sysctl that would change the host: not namespaced, or in a namespace shared with it."""
    for key in sysctl:
        kind = _sysctl_namespace(key)
        if kind is None:
            raise BundleError(
                f"config.json: linux.sysctl: {key} is not confined to a namespace: "
                "setting it would change the host"
            )
        if ns is not None and kind in ns.host:
            raise BundleError(
                f"config.json: linux.sysctl: {key} needs a {kind} namespace other than the host's"
            )


def write_sysctl(sysctl: dict[str, str], ns: nsmod.Namespaces | None = None) -> None:
    # The init is a fork of the runtime, which parsed this container's namespaces.
    check_sysctl(sysctl, ns or nsmod.last_parsed)
    for key, value in sysctl.items():
        path = "/proc/sys/" + key.replace(".", "/")
        try:
            with open(path, "w") as f:
                f.write(str(value))
        except OSError as e:
            raise BundleError(f"sysctl {key}={value}: {e.strerror}") from None


def reopen_dev_null() -> None:
    """Stdio that is the host's /dev/null becomes the container's (as runc's init does):
    a file on a mount outside the container would keep CRIU from dumping it."""
    try:
        ours = os.stat("/dev/null")
    except OSError:
        return
    for fd in (0, 1, 2):
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        if st.st_rdev == ours.st_rdev and (st.st_dev, st.st_ino) != (ours.st_dev, ours.st_ino):
            new = os.open("/dev/null", os.O_RDWR)
            os.dup2(new, fd)
            os.close(new)


def mask_paths(paths: list[str]) -> None:
    for p in paths:
        try:
            if os.path.isdir(p):
                sc.mount("tmpfs", p, "tmpfs", sc.MS_RDONLY)
            else:
                sc.mount("/dev/null", p, None, sc.MS_BIND)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise BundleError(f"masking {p}: {os.strerror(e.errno)}") from None


def readonly_paths(paths: list[str]) -> None:
    for p in paths:
        try:
            sc.mount(p, p, None, sc.MS_BIND | sc.MS_REC)
            mnt.remount_readonly(p, recursive=True)
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise BundleError(f"making {p} read-only: {os.strerror(e.errno)}") from None
    _apply_root_propagation(unbindable=True)


def readonly_root() -> None:
    try:
        mnt.remount_readonly("/")
    except OSError as e:
        raise BundleError(f"making the root filesystem read-only: {os.strerror(e.errno)}") from None

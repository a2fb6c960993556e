"""The few libc calls that the os module lacks on Python 3.11, through ctypes.

Every wrapper raises OSError with errno and the path or argument it failed on,
so callers can turn it into one clear line.
"""

from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL(None, use_errno=True)

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25

MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

_SYS_PIVOT_ROOT = 155  # x86_64
_SYS_CAPSET = 126
_SYS_CAPGET = 125
_SYS_KEYCTL = 250
_SYS_IOPRIO_SET = 251
_SYS_SCHED_SETATTR = 314
if os.uname().machine == "aarch64":
    _SYS_PIVOT_ROOT, _SYS_CAPGET, _SYS_CAPSET, _SYS_KEYCTL = 41, 90, 91, 219
    _SYS_IOPRIO_SET, _SYS_SCHED_SETATTR = 30, 274
_SYS_MOUNT_SETATTR = 442  # the same number on every architecture
_SYS_OPEN_TREE = 428  # likewise
_SYS_MOVE_MOUNT = 429
_SYS_SET_MEMPOLICY = 237 if os.uname().machine == "aarch64" else 238

AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR__ATIME = 0x70
MOUNT_ATTR_RELATIME = 0x0
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_NOSYMFOLLOW = 0x200000
MOUNT_ATTR_IDMAP = 0x100000
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40

KEYCTL_JOIN_SESSION_KEYRING = 1


def _check(ret: int, what: str, path: str | None = None) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)
    return ret


def _b(s: str | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


def mount(
    source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None
) -> None:
    ret = _libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data))
    _check(ret, "mount", target)


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), flags), "umount", target)


def pivot_root(new_root: str, put_old: str) -> None:
    ret = _libc.syscall(_SYS_PIVOT_ROOT, _b(new_root), _b(put_old))
    _check(ret, "pivot_root", new_root)


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def sethostname(name: str) -> None:
    b = name.encode()
    _check(_libc.sethostname(b, len(b)), "sethostname")


def setdomainname(name: str) -> None:
    b = name.encode()
    _check(_libc.setdomainname(b, len(b)), "setdomainname")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    args = (ctypes.c_ulong(arg2), ctypes.c_ulong(arg3), ctypes.c_ulong(arg4), ctypes.c_ulong(arg5))
    return _check(_libc.prctl(option, *args), "prctl")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


_CAP_V3 = 0x20080522


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set the three process capability sets of the calling thread (bit masks)."""
    header = _CapHeader(_CAP_V3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check(_libc.syscall(_SYS_CAPSET, ctypes.byref(header), data), "capset")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]  # fmt: skip


def mount_setattr_recursive(path: str, attr_set: int, attr_clr: int) -> None:
    """Change mount attributes of ``path`` and every mount below it (Linux 5.12+)."""
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    ret = _libc.syscall(_SYS_MOUNT_SETATTR, -100, _b(path), AT_RECURSIVE,  # AT_FDCWD
                        ctypes.byref(attr), ctypes.sizeof(attr))  # fmt: skip
    _check(ret, "mount_setattr", path)


def open_tree_clone(path: str, recursive: bool) -> int:
    """A detached copy of the mount (tree) at ``path``: an fd for move_mount (Linux 5.2+)."""
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (AT_RECURSIVE if recursive else 0)
    return _check(_libc.syscall(_SYS_OPEN_TREE, AT_FDCWD, _b(path), flags), "open_tree", path)


def mount_setattr_idmap(fd: int, userns_fd: int, recursive: bool) -> None:
    """Idmap the detached mount ``fd`` with the id maps of the user namespace ``userns_fd``."""
    attr = _MountAttr(MOUNT_ATTR_IDMAP, 0, 0, userns_fd)
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    ret = _libc.syscall(_SYS_MOUNT_SETATTR, fd, b"", flags, ctypes.byref(attr),
                        ctypes.sizeof(attr))  # fmt: skip
    _check(ret, "mount_setattr(MOUNT_ATTR_IDMAP)")


def move_mount(fd: int, target_fd: int) -> None:
    """Attach the detached mount ``fd`` on the directory or file open as ``target_fd``.

    (Through a /proc/self/fd path instead, the kernel refuses with EINVAL.)
    """
    flags = MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH
    _check(_libc.syscall(_SYS_MOVE_MOUNT, fd, b"", target_fd, b"", flags), "move_mount")


def set_mempolicy(mode: int, nodes: list[int]) -> None:
    """The NUMA memory policy of the calling thread (``mode`` may carry MPOL_F_* flags)."""
    maxnode = (max(nodes) + 1) if nodes else 0
    words = (maxnode + 63) // 64
    mask = (ctypes.c_ulong * max(words, 1))()
    for n in nodes:
        mask[n // 64] |= 1 << (n % 64)
    # The kernel reads maxnode - 1 bits; one more makes the last node count.
    ret = _libc.syscall(_SYS_SET_MEMPOLICY, mode, mask if nodes else None,
                        ctypes.c_ulong(maxnode + 1 if nodes else 0))  # fmt: skip
    _check(ret, "set_mempolicy")


def join_session_keyring(name: str | None) -> None:
    """A new session keyring, so that containers do not share the host's keys."""
    arg = ctypes.c_char_p(name.encode()) if name else None
    _check(_libc.syscall(_SYS_KEYCTL, KEYCTL_JOIN_SESSION_KEYRING, arg), "keyctl")


def personality(persona: int) -> None:
    _check(_libc.personality(ctypes.c_ulong(persona)), "personality")


def ioprio_set(ioprio: int) -> None:
    """The I/O priority of the calling process (IOPRIO_WHO_PROCESS, pid 0)."""
    _check(_libc.syscall(_SYS_IOPRIO_SET, 1, 0, ioprio), "ioprio_set")


class _SchedAttr(ctypes.Structure):
    """struct sched_attr, SCHED_ATTR_SIZE_VER1 (with the utilization clamps)."""

    _fields_ = [("size", ctypes.c_uint32), ("sched_policy", ctypes.c_uint32),
                ("sched_flags", ctypes.c_uint64), ("sched_nice", ctypes.c_int32),
                ("sched_priority", ctypes.c_uint32), ("sched_runtime", ctypes.c_uint64),
                ("sched_deadline", ctypes.c_uint64), ("sched_period", ctypes.c_uint64),
                ("sched_util_min", ctypes.c_uint32), ("sched_util_max", ctypes.c_uint32)]  # fmt: skip


def sched_setattr(policy: int, flags: int = 0, nice: int = 0, priority: int = 0,
                  runtime: int = 0, deadline: int = 0, period: int = 0) -> None:  # fmt: skip
    """sched_setattr(2) on the calling thread (pid 0)."""
    attr = _SchedAttr(ctypes.sizeof(_SchedAttr), policy, flags, nice, priority,
                      runtime, deadline, period, 0, 0)  # fmt: skip
    _check(_libc.syscall(_SYS_SCHED_SETATTR, 0, ctypes.byref(attr), 0), "sched_setattr")

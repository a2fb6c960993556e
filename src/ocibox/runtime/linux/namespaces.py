"""linux.namespaces: which namespaces to create, which to join by path."""

from __future__ import annotations

import os

from ...errors import BundleError, OciboxError
from . import syscalls as sc

FLAGS = {
    "pid": sc.CLONE_NEWPID,
    "network": sc.CLONE_NEWNET,
    "mount": sc.CLONE_NEWNS,
    "ipc": sc.CLONE_NEWIPC,
    "uts": sc.CLONE_NEWUTS,
    "user": sc.CLONE_NEWUSER,
    "cgroup": sc.CLONE_NEWCGROUP,
    "time": sc.CLONE_NEWTIME,
}

# Join order: the user namespace first, since it decides what the others allow;
# the mount namespace last, since its paths are resolved before it is entered.
_JOIN_ORDER = ("user", "pid", "network", "ipc", "uts", "cgroup", "time", "mount")


# /proc/<pid>/ns/ names of the types
PROC_NAMES = {"pid": "pid", "network": "net", "mount": "mnt", "ipc": "ipc", "uts": "uts",
              "user": "user", "cgroup": "cgroup", "time": "time"}  # fmt: skip


class Namespaces:
    __slots__ = ("new", "join", "host")

    def __init__(self, new: int, join: list[tuple[str, str]], host: frozenset[str]) -> None:
        self.new = new  # CLONE_* flags to unshare
        self.join = join  # (type, path), in join order
        self.host = host  # types the container shares with the runtime (absent, or joined)

    def has(self, kind: str) -> bool:
        """Whether the container gets its own ``kind`` namespace (new or joined)."""
        return bool(self.new & FLAGS[kind]) or any(k == kind for k, _ in self.join)


def parse(entries: list[dict]) -> Namespaces:
    new = 0
    join: dict[str, str] = {}
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        kind = entry.get("type")
        if kind not in FLAGS:
            raise BundleError(
                f"config.json: linux.namespaces[{i}]: unknown namespace type {kind!r}"
            )
        if kind in seen:
            raise BundleError(f"config.json: linux.namespaces: {kind} namespace given twice")
        seen.add(kind)
        path = entry.get("path")
        if path:
            join[kind] = path
        else:
            new |= FLAGS[kind]
    global last_parsed
    host = {k for k in FLAGS if k not in seen} | {k for k, p in join.items() if _is_own(k, p)}
    last_parsed = Namespaces(new, [(k, join[k]) for k in _JOIN_ORDER if k in join], frozenset(host))
    return last_parsed


# The namespaces of the container being made: its init, a fork of this
# process, checks its sysctls against them (rootfs.write_sysctl).
last_parsed: Namespaces | None = None


def _is_own(kind: str, path: str) -> bool:
    """Whether ``path`` is the runtime's own namespace of that type."""
    try:
        theirs, ours = os.stat(path), os.stat(f"/proc/self/ns/{PROC_NAMES[kind]}")
    except OSError:
        return False  # open_joins reports a bad path
    return (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino)


def open_joins(ns: Namespaces) -> list[tuple[str, int]]:
    """Open every namespace to join while still in the host's mount namespace."""
    fds = []
    for kind, path in ns.join:
        try:
            fds.append((kind, os.open(path, os.O_RDONLY)))
        except OSError as e:
            raise BundleError(f"cannot open {kind} namespace {path}: {e.strerror}") from None
    return fds


def join(fds: list[tuple[str, int]], skip: tuple[str, ...] = ()) -> None:
    for kind, fd in fds:
        if kind in skip:
            continue
        try:
            sc.setns(fd, FLAGS[kind])
        except OSError as e:
            raise BundleError(f"cannot join {kind} namespace: {e.strerror}") from None
        os.close(fd)


def unshare(flags: int) -> None:
    try:
        sc.unshare(flags)
    except OSError as e:
        names = [k for k, f in FLAGS.items() if flags & f]
        raise BundleError(f"cannot create namespaces {', '.join(names)}: {e.strerror}") from None


_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
_IFREQ = "16sh22x"  # struct ifreq: the name, then ifr_flags in a 24-byte union


def prepare_loopback() -> None:
    """Import what loopback_up needs while the host's lib-dynload is in reach: in a
    user namespace it may not be (a Python under /root, say)."""
    import _socket  # noqa: F401 - the C module: socket imports enum and selectors (~14 ms)
    import fcntl  # noqa: F401
    import struct  # noqa: F401


def loopback_up() -> None:
    """Bring lo up in a new network namespace, as runc does (its "loopback" network):
    podman's --network none and a pod's infra container count on localhost."""
    import _socket  # imported already by prepare_loopback
    import fcntl
    import struct

    try:
        s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
        try:
            got = fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, struct.pack(_IFREQ, b"lo", 0))
            flags = struct.unpack(_IFREQ, got)[1]
            fcntl.ioctl(s.fileno(), _SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | _IFF_UP))
        finally:
            s.close()
    except OSError as e:
        raise OciboxError(f"cannot bring up lo in the new network namespace: {e.strerror}") from None

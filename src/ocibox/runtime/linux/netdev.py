"""linux.netDevices: host network interfaces moved into the container's network namespace.

One rtnetlink request per device, RTM_NEWLINK on the host's interface with
IFLA_NET_NS_FD (where to) and IFLA_IFNAME (its name there), over a raw
netlink socket: no dependency and no `ip` program needed.
"""

from __future__ import annotations

import os
import socket
import struct

from ...errors import BundleError

_RTM_NEWLINK = 16
_NLM_F_REQUEST = 0x1
_NLM_F_ACK = 0x4
_NLMSG_ERROR = 2
_IFLA_IFNAME = 3
_IFLA_NET_NS_FD = 28
_IFNAMSIZ = 16


def _check_name(name, where: str) -> str:
    if (not isinstance(name, str) or not name or len(name.encode()) >= _IFNAMSIZ
            or name in (".", "..") or any(c in name for c in "/: \t\n")):  # fmt: skip
        raise BundleError(
            f"{where}: {name!r} is not a valid interface name",
            hint="1 to 15 characters, no '/', ':' or white space",
        )
    return name


def check(devices, has_netns: bool) -> dict[str, str]:
    """Validate linux.netDevices; return host name -> name in the container."""
    where = "config.json: linux.netDevices"
    if not isinstance(devices, dict):
        raise BundleError(f"{where}: must be an object whose keys are host interface names")
    if not has_netns:
        raise BundleError(
            f"{where}: moving interfaces needs a network namespace of the container's own",
            hint='add {"type": "network"} to linux.namespaces',
        )
    out: dict[str, str] = {}
    for host, spec in devices.items():
        _check_name(host, where)
        if spec is not None and not isinstance(spec, dict):
            raise BundleError(f"{where}[{host!r}]: must be an object")
        name = (spec or {}).get("name") or host
        out[host] = _check_name(name, f"{where}[{host!r}].name")
    names = list(out.values())
    for name in names:
        if names.count(name) > 1:
            raise BundleError(f"{where}: two interfaces would be named {name!r} in the container")
    for host in out:
        try:
            socket.if_nametoindex(host)
        except OSError:
            raise BundleError(f"{where}: the host has no network interface {host!r}") from None
    return out


def _attr(kind: int, data: bytes) -> bytes:
    head = struct.pack("HH", 4 + len(data), kind)
    return head + data + b"\0" * (-len(data) % 4)


def move(index: int, netns_fd: int, name: str, what: str) -> None:
    """Move the interface ``index`` (of this network namespace) to ``netns_fd``, named ``name``."""
    body = struct.pack("BxHiII", socket.AF_UNSPEC, 0, index, 0, 0)
    body += _attr(_IFLA_NET_NS_FD, struct.pack("I", netns_fd))
    body += _attr(_IFLA_IFNAME, name.encode() + b"\0")
    msg = struct.pack("IHHII", 16 + len(body), _RTM_NEWLINK, _NLM_F_REQUEST | _NLM_F_ACK, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                       socket.NETLINK_ROUTE) as s:  # fmt: skip
        s.sendall(msg + body)
        reply = s.recv(65536)
    length, kind = struct.unpack_from("IH", reply)
    if kind != _NLMSG_ERROR or length < 20:
        raise BundleError(f"{what}: unexpected netlink reply (type {kind})")
    (err,) = struct.unpack_from("i", reply, 16)
    if err:
        why = os.strerror(-err)
        if -err == 17:  # EEXIST
            why = f"an interface named {name!r} already exists there"
        raise BundleError(f"{what}: {why}")


def _names_in(pid: int) -> set[str]:
    """The interfaces of the network namespace of process ``pid``."""
    with open(f"/proc/{pid}/net/dev") as f:
        return {line.split(":", 1)[0].strip() for line in f.readlines()[2:]}


def move_all(devices: dict[str, str], netns_fd: int, pid: int) -> None:
    """Move each host interface into the network namespace of ``pid`` (open as ``netns_fd``)."""
    taken = _names_in(pid)
    for host, name in devices.items():
        what = f"linux.netDevices: moving {host!r} into the container as {name!r}"
        # The kernel moves first and renames after: a taken name would leave the
        # interface moved under its old name (and lost with the namespace).
        if name in taken:
            raise BundleError(f"{what}: an interface named {name!r} already exists there")
        try:
            index = socket.if_nametoindex(host)
        except OSError:
            raise BundleError(f"{what}: the host has no such interface (any more)") from None
        move(index, netns_fd, name, what)

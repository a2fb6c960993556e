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
_NLMSG_DONE = 3
_NLM_F_DUMP = 0x300
_NLM_F_EXCL = 0x200
_NLM_F_CREATE = 0x400
_RTM_NEWADDR = 20
_RTM_GETADDR = 22
_IFA_ADDRESS, _IFA_LOCAL, _IFA_BROADCAST = 1, 2, 4
_RT_SCOPE_LINK = 253
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


def _socket() -> socket.socket:
    return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                         socket.NETLINK_ROUTE)  # fmt: skip


def move(index: int, netns_fd: int, name: str, what: str, sock: socket.socket | None = None) -> None:
    """Move the interface ``index`` to ``netns_fd``, named ``name`` there.

    ``index`` is in the network namespace of ``sock`` (a netlink socket
    speaks for the namespace it was made in), by default ours.
    """
    body = struct.pack("BxHiII", socket.AF_UNSPEC, 0, index, 0, 0)
    body += _attr(_IFLA_NET_NS_FD, struct.pack("I", netns_fd))
    body += _attr(_IFLA_IFNAME, name.encode() + b"\0")
    msg = struct.pack("IHHII", 16 + len(body), _RTM_NEWLINK, _NLM_F_REQUEST | _NLM_F_ACK, 1, 0)
    s = sock or _socket()
    try:
        s.sendall(msg + body)
        reply = s.recv(65536)
    finally:
        if sock is None:
            s.close()
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


def _addresses(index: int) -> list[bytes]:
    """The addresses of interface ``index``: each an ifaddrmsg and its address attributes.

    Link-local IPv6 ones are left out: the kernel makes them anew.
    """
    req = struct.pack("IHHII", 24, _RTM_GETADDR, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0)
    req += struct.pack("BxxxI", socket.AF_UNSPEC, 0)
    out = []
    with _socket() as s:
        s.sendall(req)
        while True:
            data = s.recv(65536)
            at = 0
            while at + 16 <= len(data):
                length, kind = struct.unpack_from("IH", data, at)
                if kind == _NLMSG_DONE or length < 16:
                    return out
                if kind == _NLMSG_ERROR:
                    raise BundleError("listing the interface's addresses failed")
                msg = data[at + 16 : at + length]
                _, _, _, scope, idx = struct.unpack_from("BBBBI", msg)
                if kind == _RTM_NEWADDR and idx == index and scope != _RT_SCOPE_LINK:
                    addr, pos = msg[:8], 8
                    while pos + 4 <= len(msg):
                        alen, atype = struct.unpack_from("HH", msg, pos)
                        if alen < 4:
                            break
                        if atype in (_IFA_ADDRESS, _IFA_LOCAL, _IFA_BROADCAST):
                            addr += _attr(atype, msg[pos + 4 : pos + alen])
                        pos += (alen + 3) & ~3
                    out.append(addr)
                at += (length + 3) & ~3


def _add_addresses(sock: socket.socket, index: int, addrs: list[bytes], what: str) -> None:
    for addr in addrs:
        body = addr[:4] + struct.pack("I", index) + addr[8:]
        flags = _NLM_F_REQUEST | _NLM_F_ACK | _NLM_F_CREATE | _NLM_F_EXCL
        sock.sendall(struct.pack("IHHII", 16 + len(body), _RTM_NEWADDR, flags, 2, 0) + body)
        reply = sock.recv(65536)
        (err,) = struct.unpack_from("i", reply, 16)
        if err and -err != 17:  # EEXIST: there already
            raise BundleError(f"{what}: restoring an address: {os.strerror(-err)}")


def move_all(devices: dict[str, str], netns_fd: int, pid: int, moved: dict[str, list[str]]) -> None:
    """Move each host interface into the network namespace of ``pid`` (open as ``netns_fd``).

    The kernel drops an interface's addresses when it changes namespace; they
    are put back on it in there, as runc does. ``moved`` gets, as each one goes,
    the host name -> its addresses (hex), for `hand_back`.
    """
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
        addrs = _addresses(index)
        move(index, netns_fd, name, what)
        moved[host] = [a.hex() for a in addrs]
        if addrs:
            sock, new_index = _socket_in(netns_fd, name)
            with sock:
                _add_addresses(sock, new_index, addrs, what)


def _socket_in(netns_fd: int, name: str) -> tuple[socket.socket, int]:
    """A netlink socket of the namespace ``netns_fd``, and the index of ``name`` there."""
    from . import syscalls as sc

    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        sc.setns(netns_fd, sc.CLONE_NEWNET)
        try:
            return _socket(), socket.if_nametoindex(name)
        finally:
            sc.setns(home, sc.CLONE_NEWNET)
    finally:
        os.close(home)


def joined_path(linux: dict) -> str | None:
    """The path of the network namespace the container joins, if it joins one."""
    for ns in linux.get("namespaces") or []:
        if ns.get("type") == "network" and ns.get("path"):
            return ns["path"]
    return None


def restore(devices: dict[str, str], netns_path: str, addresses: dict[str, list[str]]) -> None:
    """`hand_back` from a joined network namespace, if it still exists.

    (A namespace of the container's own dies with it: the kernel then deletes
    virtual interfaces and hands physical ones back to the host.)
    """
    try:
        target = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return  # the namespace is gone, and what it held with it
    try:
        hand_back(devices, target, addresses, f" (left in {netns_path})")
    finally:
        os.close(target)


def hand_back(devices: dict[str, str], netns_fd: int, addresses: dict[str, list[str]],
              where: str = "") -> None:  # fmt: skip
    """Move the interfaces in ``netns_fd`` back to ours, under their host names.

    ``devices`` maps host name -> name in there; each gets back the
    ``addresses`` (hex, from `move_all`) it had on the host.
    """
    from . import syscalls as sc

    host = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    failed = []
    try:
        sc.setns(netns_fd, sc.CLONE_NEWNET)
        try:
            sock = _socket()  # made in there: it speaks for that namespace
            here = {name: index for index, name in socket.if_nameindex()}
            indexes = {n: here[n] for n in devices.values() if n in here}
        finally:
            sc.setns(host, sc.CLONE_NEWNET)
        with sock, _socket() as home:
            for hostname, name in devices.items():
                if name not in indexes:
                    continue
                what = f"moving {name!r} back as {hostname!r}"
                try:
                    move(indexes[name], host, hostname, what, sock)
                    addrs = [bytes.fromhex(a) for a in addresses.get(hostname) or []]
                    if addrs:
                        _add_addresses(home, socket.if_nametoindex(hostname), addrs, what)
                except (BundleError, OSError) as e:
                    failed.append(getattr(e, "message", None) or str(e))
    finally:
        os.close(host)
    if failed:
        raise BundleError(f"linux.netDevices: {'; '.join(failed)}{where}")

"""process.terminal: a pseudo-terminal made inside the container, master sent to --console-socket.

The caller (conmon, containerd's shim, a test) listens on a unix socket; the
runtime connects to it before pivot_root (the path is on the host), opens the
pty from the container's own devpts after pivot_root, and sends the master
with SCM_RIGHTS. The slave becomes the process's controlling terminal and stdio.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import termios

from ...errors import BundleError


def connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as e:
        sock.close()
        raise BundleError(f"--console-socket {path}: {e.strerror}") from None
    return sock


def setup(sock: socket.socket, size: dict | None) -> None:
    """Open a pty, hand its master over ``sock``, make its slave our terminal and stdio."""
    try:
        master, slave = os.openpty()
    except OSError as e:
        raise BundleError(f"cannot open a terminal in the container: {e.strerror}") from None
    if size:
        winsize = struct.pack("HHHH", size.get("height", 0), size.get("width", 0), 0, 0)
        fcntl.ioctl(slave, termios.TIOCSWINSZ, winsize)
    name = os.ttyname(slave)
    try:
        socket.send_fds(sock, [name.encode()], [master])
    except OSError as e:
        raise BundleError(f"sending the terminal to the console socket: {e.strerror}") from None
    finally:
        os.close(master)
        sock.close()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)

"""--pidfd-socket (runc 1.2): a pidfd of the container's process, sent to a unix socket.

The caller listens on the socket; the runtime connects before it makes anything
(a wrong path fails the command early, with nothing to undo) and sends a pidfd
of the process (the init for create and run, the new process for exec) with
SCM_RIGHTS once that process exists. With the pidfd the caller can signal and
wait for exactly that process, whatever happens to its pid number.
"""

from __future__ import annotations

import os
import socket

from ...errors import BundleError


def connect(path: str) -> socket.socket:
    from .console import connect

    return connect(path, "--pidfd-socket")


def send(sock: socket.socket, pid: int) -> None:
    """Send a pidfd of ``pid`` over ``sock``, then close both."""
    try:
        fd = os.pidfd_open(pid)
    except OSError as e:
        sock.close()
        raise BundleError(f"--pidfd-socket: cannot open a pidfd of process {pid}: {e.strerror}") from None
    try:
        socket.send_fds(sock, [b"pidfd"], [fd])
    except OSError as e:
        raise BundleError(f"--pidfd-socket: sending the pidfd: {e.strerror}") from None
    finally:
        os.close(fd)
        sock.close()

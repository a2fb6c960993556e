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


def connect(path: str, flag: str = "--console-socket") -> socket.socket:
    """Connect to the caller's unix socket (``flag`` names it in the error)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as e:
        sock.close()
        raise BundleError(f"{flag} {path}: {e.strerror}") from None
    return sock


def setup(sock: socket.socket, size: dict | None, bind_console: bool = True) -> None:
    """Open a pty, hand its master over ``sock``, make its slave our terminal and stdio.

    The container's init also gets it as /dev/console; an exec'd process does not
    (as runc): its pty goes away with it, and /dev/console would then fail (EIO).
    """
    try:
        master, slave = os.openpty()
    except OSError as e:
        raise BundleError(f"cannot open a terminal in the container: {e.strerror}") from None
    if size:
        winsize = struct.pack("HHHH", size.get("height", 0), size.get("width", 0), 0, 0)
        fcntl.ioctl(slave, termios.TIOCSWINSZ, winsize)
    name = os.ttyname(slave)
    if bind_console:
        _bind_console(name)
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


def _bind_console(slave_path: str) -> None:
    """Make /dev/console the container's terminal (config-linux.md): bind the pty's
    slave onto it, creating an empty file to bind onto when it is not there."""
    from . import syscalls as sc

    try:
        fd = os.open("/dev/console", os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
                     | os.O_NOCTTY, 0o666)  # fmt: skip
        os.close(fd)
        sc.mount(slave_path, "/dev/console", None, sc.MS_BIND)
    except OSError as e:
        raise BundleError(f"cannot bind the terminal {slave_path} onto /dev/console: "
                          f"{e.strerror}") from None  # fmt: skip


class Proxy:
    """Our stdio joined to a container's pty ``master``, until its process exits.

    Made before ``start`` so that the pty has our terminal's size (and our
    terminal is raw) by the time the user program first looks.
    """

    def __init__(self, master: int) -> None:
        self.master = master
        self.saved = None
        if os.isatty(0):
            self.saved = termios.tcgetattr(0)
            import tty

            tty.setraw(0)
            self.resize()

    def resize(self, _signum=None, _frame=None) -> None:
        try:
            size = fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, size)
        except OSError:
            pass

    def close(self) -> None:
        if self.saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, self.saved)
            self.saved = None
        if self.master >= 0:
            os.close(self.master)
            self.master = -1

    def run(self, pid: int, forward_signals) -> int:
        """Copy both ways until ``pid`` exits and its output is drained; return its exit code."""
        import select
        import signal

        from ..create import exit_code

        if self.saved is not None:
            forward_signals(pid, skip=("WINCH",))
            signal.signal(signal.SIGWINCH, self.resize)
        else:
            forward_signals(pid)
        master = self.master
        inputs = [master, 0]
        code = None
        try:
            while True:
                if code is None:
                    try:
                        got, status = os.waitpid(pid, os.WNOHANG)
                    except ChildProcessError:
                        got, status = pid, 255 << 8
                    if got == pid:
                        code = exit_code(status)
                ready, _, _ = select.select(inputs, [], [], 0.05 if code is None else 0)
                if not ready and code is not None:
                    break
                for fd in ready:
                    try:
                        data = os.read(fd, 65536)
                    except OSError:  # EIO: the last slave is closed
                        data = b""
                    if fd == master:
                        if data:
                            os.write(1, data)
                        else:
                            inputs.remove(master)
                    elif data:
                        os.write(master, data)
                    else:
                        inputs.remove(0)  # our stdin ended; keep the output flowing
                if master not in inputs and code is not None:
                    break
        finally:
            self.close()
        return code if code is not None else 255

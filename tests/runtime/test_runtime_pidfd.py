"""--pidfd-socket (runc 1.2's flag for create, run and exec): a pidfd of the process.

runc 1.1.5, the peer here, does not have the flag; these tests check what it
means: the pidfd names the container's init (or the exec'd process), signals
sent through it reach that process, the socket's peer sees the end of the
stream once the pidfd is sent (no waiting init holds the connection), and a
socket nobody listens on fails the command before anything is made.
"""

from __future__ import annotations

import os
import signal
import socket
import threading

import pytest

pytestmark = [pytest.mark.root]


class Listener:
    """A unix socket that takes one connection and keeps the fds and data sent on it."""

    def __init__(self, path) -> None:
        self.path = str(path)
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(self.path)
        self.srv.listen(1)
        self.srv.settimeout(20)
        self.fds: list[int] = []
        self.data = b""
        self.eof = False
        self.thread = threading.Thread(target=self._take, daemon=True)
        self.thread.start()

    def _take(self) -> None:
        conn, _ = self.srv.accept()
        conn.settimeout(20)
        with conn:
            while True:
                msg, fds, _, _ = socket.recv_fds(conn, 64, 4)
                self.fds += fds
                self.data += msg
                if not msg and not fds:
                    self.eof = True
                    return

    def wait(self) -> None:
        self.thread.join(20)
        self.srv.close()

    def pid(self) -> int:
        """The pid that the one pidfd received refers to (from its fdinfo)."""
        assert len(self.fds) == 1, self.fds
        with open(f"/proc/self/fdinfo/{self.fds[0]}") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return int(fields["Pid"])

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)


def test_create_sends_the_inits_pidfd(ours, bundle, tmp_path):
    lis = Listener(tmp_path / "pidfd.sock")
    cid = ours.new_id()
    ours("create", "--bundle", bundle.write(["sleep", "100"]), "--pidfd-socket", lis.path, cid)
    lis.wait()
    try:
        assert lis.eof and lis.data == b"pidfd"
        assert lis.pid() == ours.state(cid)["pid"]
        assert ours.state(cid)["status"] == "created"
        signal.pidfd_send_signal(lis.fds[0], signal.SIGKILL)
        assert ours.wait_status(cid, "stopped")["status"] == "stopped"
    finally:
        lis.close()
    ours("delete", cid)


def test_run_detached_and_exec_send_their_pidfds(ours, bundle, tmp_path):
    lis = Listener(tmp_path / "run.sock")
    cid = ours.new_id()
    ours("run", "-d", "--bundle", bundle.write(["sleep", "100"]), "--pidfd-socket", lis.path, cid)
    lis.wait()
    ex = Listener(tmp_path / "exec.sock")
    pid_file = tmp_path / "exec.pid"
    ours("exec", "-d", "--pid-file", str(pid_file), "--pidfd-socket", ex.path, cid, "sleep", "50")
    ex.wait()
    try:
        assert lis.pid() == ours.state(cid)["pid"]
        assert ex.pid() == int(pid_file.read_text()) != lis.pid()
        signal.pidfd_send_signal(ex.fds[0], signal.SIGTERM)  # the exec'd process alone
        assert ours.state(cid)["status"] == "running"
        signal.pidfd_send_signal(lis.fds[0], signal.SIGKILL)
        assert ours.wait_status(cid, "stopped")["status"] == "stopped"
    finally:
        lis.close()
        ex.close()
    ours("delete", cid)


def test_a_socket_nobody_listens_on_fails_before_anything_is_made(ours, bundle, tmp_path):
    cid = ours.new_id()
    missing = str(tmp_path / "nobody.sock")
    p = ours("create", "--bundle", bundle.write(["true"]), "--pidfd-socket", missing, cid, check=False)
    assert p.returncode != 0
    assert f"--pidfd-socket {missing}: No such file or directory" in p.stderr
    p = ours("state", cid, check=False)
    assert p.returncode != 0 and "does not exist" in p.stderr
    assert ours("list", "-q").stdout == ""
    # exec: the same refusal, and the container is untouched
    ours("run", "-d", "--bundle", bundle.write(["sleep", "100"]), cid)
    p = ours("exec", "--pidfd-socket", missing, cid, "true", check=False)
    assert p.returncode != 0 and "--pidfd-socket" in p.stderr
    assert ours("ps", "--format", "json", cid).stdout.strip() == f"[{ours.state(cid)['pid']}]"
    ours("delete", "--force", cid)


def test_a_failed_exec_closes_the_pidfd_socket_for_a_library_caller(ours, bundle, tmp_path):
    """exec_process called in a process that goes on: the socket is closed on an error too,
    so its peer sees the end at once rather than when the caller exits."""
    from ocibox.errors import OciboxError
    from ocibox.runtime.container import Container
    from ocibox.runtime.exec import exec_process

    cid = ours.new_id()
    ours("run", "-d", "--bundle", bundle.write(["sleep", "100"]), cid)
    lis = Listener(tmp_path / "exec.sock")
    process = {"args": ["true"], "cwd": "/", "rlimits": [{"type": "RLIMIT_NOSUCH", "soft": 1, "hard": 1}]}
    with pytest.raises(OciboxError, match="unknown type 'RLIMIT_NOSUCH'") as failed:
        exec_process(Container.load(str(ours.root), cid), process, detach=True, pidfd_socket=lis.path)
    lis.wait()
    assert lis.eof and lis.fds == [], failed  # the traceback (its frames) kept alive meanwhile
    ours("delete", "--force", cid)


def test_a_create_refused_closes_the_pidfd_socket_for_a_library_caller(ours, bundle, tmp_path):
    """create called in a process that goes on, with an id in use: refused after the socket
    is connected, which is closed then too (its peer sees the end at once)."""
    from ocibox.errors import OciboxError
    from ocibox.runtime.create import create

    cid = ours.new_id()
    ours("create", "--bundle", bundle.write(["sleep", "100"]), cid)
    lis = Listener(tmp_path / "create.sock")
    with pytest.raises(OciboxError, match="already exists") as failed:
        create(str(ours.root), cid, str(bundle.path), pidfd_socket=lis.path)
    lis.wait()
    assert lis.eof and lis.fds == [], failed  # the traceback (its frames) kept alive meanwhile
    ours("delete", "--force", cid)

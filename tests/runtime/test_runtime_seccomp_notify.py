"""seccomp SCMP_ACT_NOTIFY: the notify descriptor and the container process state reach a
listener on linux.seccomp.listenerPath, and the listener's answers decide the syscalls;
the same listener tests run against runc and against ocibox-runtime.

The listener here is real: it receives the descriptor with SCM_RIGHTS, reads
notifications with SECCOMP_IOCTL_NOTIF_RECV and answers with _SEND.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import struct
import threading

import pytest

from ocibox.errors import BundleError

# struct seccomp_notif (80 bytes) and seccomp_notif_resp (24 bytes); ioctl magic '!'.
_NOTIF_SIZE, _RESP_SIZE = 80, 24
_IOCTL_RECV = (3 << 30) | (_NOTIF_SIZE << 16) | (0x21 << 8) | 0
_IOCTL_SEND = (3 << 30) | (_RESP_SIZE << 16) | (0x21 << 8) | 1
_FLAG_CONTINUE = 1


class Listener:
    """Accepts connections; for each, answers notifications from ``answers`` in turn
    (an errno to fail the call with, or 0 to let it run)."""

    def __init__(self, path: str, answers: list[int]) -> None:
        self.path = path
        self.answers = list(answers)
        self.states: list[dict] = []
        self.seen: list[int] = []  # syscall numbers
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(4)
        self.server.settimeout(30)
        self.threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            msg, fds, _, _ = socket.recv_fds(conn, 65536, 4)
            while True:  # the state may come in several sendmsg calls
                try:
                    state = json.loads(msg)
                    break
                except ValueError:
                    chunk = conn.recv(65536)
                    if not chunk:
                        raise
                    msg += chunk
            conn.close()  # not waiting for EOF: runc closes its end only later
            self.states.append({**state, "_nfds": len(fds)})
            t = threading.Thread(target=self._serve, args=(fds[0],), daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, fd: int) -> None:
        while True:
            buf = bytearray(_NOTIF_SIZE)
            try:
                fcntl.ioctl(fd, _IOCTL_RECV, buf)
            except OSError:
                break  # every process with the filter is gone
            nid, _pid, _flags, nr = struct.unpack_from("<QIIi", buf)
            self.seen.append(nr)
            answer = self.answers.pop(0) if self.answers else 0
            resp = struct.pack("<QqiI", nid, 0, -answer if answer else 0,
                               0 if answer else _FLAG_CONTINUE)  # fmt: skip
            try:
                fcntl.ioctl(fd, _IOCTL_SEND, bytearray(resp))
            except OSError:
                pass  # the caller was killed meanwhile
        os.close(fd)

    def close(self) -> None:
        self.server.close()


def _profile(listener_path: str) -> dict:
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": listener_path,
        "listenerMetadata": "MKDIR=/d1;anything",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}],
    }


@pytest.fixture
def listener(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    lst = Listener(str(tmp_path / "listener.sock"), [errno.EROFS, 0, errno.EACCES])
    yield lst
    lst.close()


def test_notify_listener_decides_mkdir(both, bundle, listener):
    ours = both
    cid = ours.new_id()
    script = "mkdir /dev/shm/d1; echo r1=$?; mkdir /dev/shm/d2; echo r2=$?; ls /dev/shm"
    b = bundle.write(
        ["sh", "-c", script],
        lambda c: (
            c["linux"].update(seccomp=_profile(listener.path)) or c.update(annotations={"k": "v"})
        ),
    )
    p = ours("run", "--bundle", b, cid, check=False)
    assert "Read-only file system" in p.stderr + p.stdout
    assert "r1=1" in p.stdout and "r2=0" in p.stdout
    assert "d2" in p.stdout.split() and "d1" not in p.stdout.split()
    assert len(listener.seen) == 2
    [st] = listener.states
    assert st["fds"] == ["seccompFd"] and st["_nfds"] == 1
    assert st["metadata"] == "MKDIR=/d1;anything"
    assert st["ociVersion"] and st["pid"] > 1
    s = st["state"]
    assert s["id"] == cid and s["status"] == "creating" and s["pid"] == st["pid"]
    assert s["bundle"] == b and s["annotations"] == {"k": "v"}


def test_notify_for_exec_too(both, bundle, listener):
    ours = both
    cid = ours.new_id()
    b = bundle.write(["sleep", "30"], lambda c: c["linux"].update(seccomp=_profile(listener.path)))
    ours("create", "--bundle", b, cid)
    init_pid = ours.state(cid)["pid"]
    [st] = listener.states
    assert st["pid"] == init_pid  # the pid the host sees, not 1
    ours("start", cid)
    listener.answers = [errno.EACCES]
    p = ours("exec", cid, "mkdir", "/dev/shm/d9", check=False)
    assert p.returncode != 0 and "Permission denied" in p.stderr + p.stdout
    assert len(listener.states) == 2
    ex = listener.states[1]
    assert ex["state"]["pid"] == init_pid and ex["pid"] not in (init_pid, 1)
    assert ex["state"]["status"] == "running"
    ours("delete", "--force", cid)


def test_notify_refusals(ours, bundle, tmp_path):
    bad_profiles = {
        "needs a listenerPath": {"defaultAction": "SCMP_ACT_ALLOW",
                                 "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]},
        "cannot be the default": {"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/x"},
        "cannot be used for write": {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x",
                                     "syscalls": [{"names": ["write"],
                                                   "action": "SCMP_ACT_NOTIFY"}]},
        "No such file": _profile(str(tmp_path / "nobody-listens")),
    }  # fmt: skip
    for message, profile in bad_profiles.items():
        cid = ours.new_id()
        b = bundle.write(["true"], lambda c, p=profile: c["linux"].update(seccomp=p))
        p = ours("run", "--bundle", b, cid, check=False)
        assert p.returncode != 0 and message in p.stderr, (message, p.stderr)
    from ocibox.runtime.linux import seccomp

    with pytest.raises(BundleError, match="needs a listenerPath"):
        seccomp.Filter(bad_profiles["needs a listenerPath"])


def test_features_list_notify():
    from ocibox.runtime.features import features

    sec = features()["linux"]["seccomp"]
    assert "SCMP_ACT_NOTIFY" in sec["actions"]


# --- linux.seccomp.flags: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV ------------------------
#
# seccomp_unotify(2): without the flag, a signal to the trapped task interrupts its wait
# for the supervisor's answer even after the supervisor has received the notification
# (the notification is withdrawn, the answer fails with ENOENT, and the call is restarted
# and notified again); with it, once received, only a fatal signal ends the wait: another
# signal turns it into a killable sleep ("D" in /proc/PID/stat) until the answer comes. runc 1.1.5 refuses every linux.seccomp.flags entry
# ("seccomp flags are not yet supported by runc"), so the flag is tested on ours alone.

_IOCTL_ID_VALID = (1 << 30) | (8 << 16) | (0x21 << 8) | 2  # _IOW('!', 2, __u64)
_WAIT_KILLABLE = "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"


def _task_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0]


def _wait_task_state(pid: int, want: str, timeout: float = 20) -> str:
    """The task's state once it is one of ``want`` (or whatever it is after ``timeout``)."""
    import time

    deadline = time.monotonic() + timeout
    while (state := _task_state(pid)) not in want and time.monotonic() < deadline:
        time.sleep(0.005)
    return state


class StoppingListener(Listener):
    """Stops (SIGSTOP) the task behind the first notification after receiving it, answers
    it (let the call run), and records whether that answer still found the notification."""

    def __init__(self, path: str, killable: bool) -> None:
        super().__init__(path, [])
        self.killable = killable
        self.first_answer: int | None = None  # 0, or the errno of SECCOMP_IOCTL_NOTIF_SEND
        self.after_signal = ""  # the task's state once the signal has had its effect

    def _serve(self, fd: int) -> None:
        import signal

        while True:
            buf = bytearray(_NOTIF_SIZE)
            try:
                fcntl.ioctl(fd, _IOCTL_RECV, buf)
            except OSError:
                break
            nid, pid, _flags, nr = struct.unpack_from("<QIIi", buf)
            self.seen.append(nr)
            first = self.first_answer is None
            if first:
                _wait_task_state(pid, "S")  # waiting for the answer, interruptibly so far
                os.kill(pid, signal.SIGSTOP)
                # With the flag the signal only turns the wait killable ("D"); without
                # it, the wait ends, the call is withdrawn and the task stops ("T").
                self.after_signal = _wait_task_state(pid, "DT")
                try:
                    fcntl.ioctl(fd, _IOCTL_ID_VALID, bytearray(struct.pack("<Q", nid)))
                except OSError as e:
                    self.first_answer = e.errno
            resp = struct.pack("<QqiI", nid, 0, 0, _FLAG_CONTINUE)
            try:
                fcntl.ioctl(fd, _IOCTL_SEND, bytearray(resp))
                if first and self.first_answer is None:
                    self.first_answer = 0
            except OSError as e:
                if first:
                    self.first_answer = e.errno
            if first:
                os.kill(pid, signal.SIGCONT)
        os.close(fd)


@pytest.mark.parametrize("killable", [True, False], ids=["wait-killable", "without-flag"])
def test_wait_killable_recv_keeps_a_received_call_from_signals(ours, bundle, tmp_path, killable):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    listener = StoppingListener(str(tmp_path / "listener.sock"), killable)
    profile = _profile(listener.path)
    if killable:  # with TSYNC and LOG too: TSYNC with a listener needs TSYNC_ESRCH
        profile["flags"] = [_WAIT_KILLABLE, "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG"]
    b = bundle.write(["sh", "-c", "mkdir /dev/shm/d1; echo r=$?; ls /dev/shm"],
                     lambda c: c["linux"].update(seccomp=profile))  # fmt: skip
    try:
        p = ours("run", "--bundle", b, ours.new_id(), check=False)
    finally:
        listener.close()
    assert p.returncode == 0, p.stderr
    assert "r=0" in p.stdout and "d1" in p.stdout.split()
    if killable:  # the answer reached the call the signal could not interrupt
        assert listener.after_signal == "D"
        assert listener.first_answer == 0 and len(listener.seen) == 1
    else:  # the signal withdrew it; the restarted call was notified again
        assert listener.after_signal == "T"
        assert listener.first_answer == errno.ENOENT and len(listener.seen) == 2


def test_seccomp_flag_refusals(ours, bundle):
    allow = {"defaultAction": "SCMP_ACT_ALLOW"}
    bad = {
        "unknown flag 'SECCOMP_FILTER_FLAG_NOPE' (use one of": {**allow, "flags": ["SECCOMP_FILTER_FLAG_NOPE"]},
        "flags must be an array": {**allow, "flags": "SECCOMP_FILTER_FLAG_LOG"},
        f"{_WAIT_KILLABLE} is for notifications": {**allow, "flags": [_WAIT_KILLABLE]},
    }  # fmt: skip
    for message, profile in bad.items():
        cid = ours.new_id()
        b = bundle.write(["true"], lambda c, p=profile: c["linux"].update(seccomp=p))
        p = ours("run", "--bundle", b, cid, check=False)
        assert p.returncode != 0 and message in p.stderr, (message, p.stderr)
        assert "Traceback" not in p.stderr and not (ours.root / cid).exists()


def test_seccomp_flags_without_a_listener_are_loaded(ours, bundle):
    """TSYNC, LOG and SPEC_ALLOW reach seccomp(2) (a bad combination would be EINVAL)."""
    profile = {"defaultAction": "SCMP_ACT_ALLOW",
               "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                         "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
               "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}  # fmt: skip
    b = bundle.write(["sh", "-c", "mkdir /tmp/x; grep Seccomp: /proc/self/status"],
                     lambda c: c["linux"].update(seccomp=profile))  # fmt: skip
    p = ours("run", "--bundle", b, ours.new_id(), check=False)
    assert "Operation not permitted" in p.stdout + p.stderr and "Seccomp:\t2" in p.stdout


def test_features_seccomp_flags():
    from ocibox.runtime.features import features

    sec = features()["linux"]["seccomp"]
    assert _WAIT_KILLABLE in sec["knownFlags"]
    assert set(sec["supportedFlags"]) <= set(sec["knownFlags"])
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    if (major, minor) >= (5, 19):  # the kernel that brought it
        assert _WAIT_KILLABLE in sec["supportedFlags"]

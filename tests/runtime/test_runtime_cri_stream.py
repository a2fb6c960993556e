"""kubelet's streaming calls through containerd's CRI plugin: Exec, Attach, PortForward.

``Exec``, ``Attach`` and ``PortForward`` (runtime.v1.RuntimeService) do not
carry the streams themselves: they return a URL on the CRI plugin's streaming
server (``stream_server_address`` 127.0.0.1, a free port, no TLS), which the
client then upgrades to a WebSocket speaking ``v4.channel.k8s.io`` (see
cri_stream.py, a client on the standard library). The private containerd, its
two handlers (``runc`` and ``ocibox``) and the CRI client are
test_runtime_cri.py's; the same sessions run under both handlers and their
transcripts, ids and ports taken out, must be equal:

- exec without a terminal: lines sent on stdin come back on stdout and stderr,
  kept apart, and the non-zero exit reaches the error channel as a
  metav1.Status (reason NonZeroExitCode, cause ExitCode); an exec that
  succeeds (Status Success); the pre-v4 protocol (the error as plain text); a
  command that does not exist (the runtime's words in the Status message).
- exec with a terminal: the output through the pty (its echo, CR LF), a resize
  message changing what ``stty size`` prints inside and sending SIGWINCH, the
  terminal's name (the container's own devpts) and the exit code; ``cat`` ended
  by ^D; ^C interrupting the foreground process group, which needs the exec'd
  process to lead a session whose controlling terminal the pty is.
- execs as the container's user (1000:1000): the pty (its owner, the tty group,
  mode 620; the user may set its size) and the stdio pipes are the user's.
- attach to a container made with stdin and a terminal: input echoed and
  answered, a resize (the shim's, on the console the runtime handed it at
  create) seen inside with its SIGWINCH, the container's exit ending the stream
  (Status Success); attach to one with stdin_once and no terminal: closing the
  connection closes the container's stdin.
- port-forward: the pods use the node's network, and containerd 1.6 dials
  ``localhost:PORT`` from its own (the host's) network namespace for them, so
  a busybox httpd in the pod on the host's loopback is reached through the
  stream; a port nobody listens on reports the dial's error on the error
  channel. The runtime takes no part in it beyond running the httpd.

The v4 protocols cannot close stdin alone (v5's CLOSE came after containerd
1.6), so the sessions' commands read lines and stop on one of them, or ^D ends
a terminal's input; closing the whole connection ends stdin too.

What the exec sessions needed of ocibox-runtime is also checked against runc
directly: an exec that cannot start fails in runc's words (``exec failed:
unable to start container process: ...``, the last error of the --log that
containerd's shim puts in the CRI's answer) and with runc's status 255.

attach has a race of containerd's making: the stdin of the attach is copied to
the container before its stdout is registered, so an answer written within
that instant would be lost (kubectl has it too); the session waits for each
answer before sending more, and a lost one would show as a timeout.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import time

import pytest
import test_runtime_cri
from cri_stream import ERROR, STDERR, STDIN, STDOUT, Channels, WebSocketError
from test_runtime_cri import (
    Node,
    _both,
    _container_config,
    _create,
    _log,
    _run_pod,
    _teardown,
    _wait_exited,
    pb,
)

pytestmark = [pytest.mark.peer, pytest.mark.root]

# the private containerd: test_runtime_cri's fixture, made again for this module (0.4 s)
node = test_runtime_cri.node


def _scrub(text: str, *ids: str) -> str:
    """The given ids, and any other 64-hex id (an exec's), out of a message."""
    for i in ids:
        text = text.replace(i, "<id>")
    return re.sub(r"\b[0-9a-f]{64}\b", "<id>", text)


def _status(data: bytes, *ids: str) -> str:
    """The v4 error channel: a metav1.Status, as (status, reason, causes, message)."""
    if not data:
        return "no status"
    st = json.loads(data)
    causes = [(c.get("reason"), _scrub(c.get("message", ""), *ids))  # a cause's type
              for c in st.get("details", {}).get("causes", [])]  # fmt: skip
    return (f"{st['status']} reason={st.get('reason', '')} causes={causes} "
            f"message={_scrub(st.get('message', ''), *ids)!r}")  # fmt: skip


def _exec(node: Node, cid: str, cmd: list[str], *, tty: bool = False, stdin: bool = False,
          stderr: bool = True, protocol: str = "v4.channel.k8s.io") -> Channels:  # fmt: skip
    request = pb((1, cid), (2, cmd), (3, tty), (4, stdin), (5, True), (6, stderr))
    url = node.cri("Exec", request).str(1)
    assert url.startswith("http://127.0.0.1:") and "/exec/" in url, url
    return Channels(url, protocol)


def _first(ch: Channels) -> str:
    """The server's first message: an empty one on the lowest channel it writes."""
    channel, data = ch.recv()
    return f"ready on {channel} {data!r}"


def _shell_pod(node: Node, handler: str, name: str) -> tuple[str, str, str]:
    """A pod with one container sleeping, to exec in: the pod's id, cgroup parent, the
    container's id."""
    sid, sandbox, parent = _run_pod(node, handler, name)
    cid = _create(node, sid, sandbox, _container_config("shell", ["sleep", "1000"]))
    node.cri("StartContainer", pb((1, cid)))
    return sid, parent, cid


def _exec_session(node: Node, handler: str) -> list[str]:
    out = []
    sid, parent, cid = _shell_pod(node, handler, "exec")

    script = 'while read l; do [ "$l" = end ] && exit 3; echo "$l"; echo "err $l" >&2; done'
    ch = _exec(node, cid, ["sh", "-c", script], stdin=True)
    out.append(f"protocol {ch.ws.protocol} {_first(ch)}")
    for line in (b"one", b"two"):  # each answered before the next: cat, line by line
        ch.send(STDIN, line + b"\n")
        ch.until(STDOUT, line + b"\n")
        ch.until(STDERR, b"err " + line + b"\n")
    ch.send(STDIN, b"end\n")
    got = ch.rest()
    out.append(f"stdout {got.get(STDOUT)!r} stderr {got.get(STDERR)!r}")
    out.append(f"exit {_status(got.get(ERROR, b''), cid)}")

    ch = _exec(node, cid, ["sh", "-c", "echo out; echo err >&2"])
    out.append(_first(ch))
    got = ch.rest()
    out.append(f"stdout {got.get(STDOUT)!r} stderr {got.get(STDERR)!r} "
               f"{_status(got.get(ERROR, b''), cid)}")  # fmt: skip
    try:  # a URL serves one stream
        Channels(ch.ws.url)
        out.append("url used twice")
    except WebSocketError as e:
        out.append(f"url used twice: {e.args[1]}")

    # the connection closed under a reading exec: its stdin ends (containerd closes the
    # shim's end, and nothing else may hold one open)
    script = "cat > /tmp/in; echo $? > /tmp/done"
    ch = _exec(node, cid, ["sh", "-c", script], stdin=True)
    _first(ch)
    ch.send(STDIN, b"sent before closing\n")
    ch.close()
    deadline, done = time.monotonic() + 10, b""
    while not done and time.monotonic() < deadline:
        done = node.cri("ExecSync", pb((1, cid), (2, ["cat", "/tmp/done"]), (3, 10))).bytes(1)
    resp = node.cri("ExecSync", pb((1, cid), (2, ["cat", "/tmp/in"]), (3, 10)))
    out.append(f"closed: cat ended {done!r}, read {resp.bytes(1)!r}")

    ch = _exec(node, cid, ["sh", "-c", "echo old; exit 2"], protocol="channel.k8s.io")
    got = ch.rest()  # before v4: only an error's text
    out.append(f"pre-v4 {ch.ws.protocol} stdout {got.get(STDOUT)!r} "
               f"error {_scrub(got.get(ERROR, b'').decode(), cid)!r}")  # fmt: skip

    ch = _exec(node, cid, ["/no/such/program", "x"], stderr=False)
    got = ch.rest()
    out.append(f"missing stdout {got.get(STDOUT)!r} {_status(got.get(ERROR, b''), cid)}")

    listing = 'for p in /proc/[0-9]*; do [ $p = /proc/$$ ] || { cat $p/cmdline; echo; }; done'
    resp = node.cri("ExecSync", pb((1, cid), (2, ["sh", "-c", listing]), (3, 10)))
    out.append(f"processes left {resp.bytes(1)!r}")  # the sleep alone: no exec remains
    out.append(_teardown(node, handler, sid, parent, cid))
    return out


def test_cri_exec_stream(node):
    out = _both(lambda handler: _exec_session(node, handler))
    assert out[:3] == [
        "protocol v4.channel.k8s.io ready on 1 b''",
        "stdout b'one\\ntwo\\n' stderr b'err one\\nerr two\\n'",
        "exit Failure reason=NonZeroExitCode causes=[('ExitCode', '3')] message="
        "'command terminated with non-zero exit code: error executing command "
        "[sh -c while read l; do [ \"$l\" = end ] && exit 3; echo \"$l\"; echo \"err $l\" >&2; "
        "done], exit code 3'",
    ]
    assert out[3:7] == [
        "ready on 1 b''", "stdout b'out\\n' stderr b'err\\n' Success reason= causes=[] message=''",
        "url used twice: HTTP/1.1 404 Not Found",
        "closed: cat ended b'0\\n', read b'sent before closing\\n'",
    ]  # fmt: skip
    assert out[7] == ("pre-v4 channel.k8s.io stdout b'old\\n' error 'command terminated with "
                      "non-zero exit code: error executing command [sh -c echo old; exit 2], "
                      "exit code 2'")  # fmt: skip
    # the runtime's words, as the shim read them from its --log: runc's, which ours
    # lacked (exec: "..." alone)
    assert out[8].startswith("missing stdout b'' Failure reason=InternalError")
    assert ('OCI runtime exec failed: exec failed: unable to start container process: exec: '
            '"/no/such/program": stat /no/such/program: no such file or directory: unknown'
            in out[8])  # fmt: skip
    assert out[9:] == ["processes left b'sleep\\x001000\\x00\\n'", "held [] cgroups []"]


def _tty_exec_session(node: Node, handler: str) -> list[str]:
    out = []
    sid, parent, cid = _shell_pod(node, handler, "tty")
    # the size asked on stdin awaited (the resize and the line travel apart); a SIGWINCH
    # may end busybox sh's read with nothing, so it reads again
    script = ("trap 'echo winch >> /tmp/winch' WINCH; echo \"before $(busybox stty size 2>&1)\"; "
              "want=; while [ -z \"$want\" ]; do read want; done; "
              "i=0; while [ \"$(busybox stty size)\" != \"$want\" ] && [ $i -lt 200 ]; do "
              "sleep 0.05; i=$((i+1)); done; echo \"after $(busybox stty size)\"; cat /tmp/winch; "
              "busybox tty; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all three; exit 7")
    ch = _exec(node, cid, ["sh", "-c", script], tty=True, stdin=True, stderr=False)
    out.append(_first(ch))
    ch.until(STDOUT, b"before")  # the trap is set
    ch.resize(100, 30)
    ch.send(STDIN, b"30 100\n")
    got = ch.rest()
    out += [f"tty {line!r}" for line in got.get(STDOUT, b"").split(b"\n")]
    out.append(f"stderr {got.get(STDERR)!r} exit {_status(got.get(ERROR, b''), cid)}")

    # the terminal's line discipline: ^D ends cat's input, ^C interrupts the foreground
    # process group (the exec'd process must lead a session whose controlling terminal
    # this is)
    ch = _exec(node, cid, ["cat"], tty=True, stdin=True, stderr=False)
    _first(ch)
    ch.send(STDIN, b"hello\n")
    ch.until(STDOUT, b"hello\r\nhello\r\n")  # echoed, then cat's
    ch.send(STDIN, b"\x04")
    got = ch.rest()
    out.append(f"cat {got.get(STDOUT)!r} {_status(got.get(ERROR, b''), cid)}")
    script = "trap 'echo interrupted; exit 9' INT; echo ready; while true; do sleep 1; done"
    ch = _exec(node, cid, ["sh", "-c", script], tty=True, stdin=True, stderr=False)
    _first(ch)
    ch.until(STDOUT, b"ready\r\n")
    ch.send(STDIN, b"\x03")
    got = ch.rest()
    out.append(f"interrupted {got.get(STDOUT)!r} {_status(got.get(ERROR, b''), cid).split(' message=')[0]}")
    out.append(_teardown(node, handler, sid, parent, cid))
    return out


def test_cri_exec_terminal_stream(node):
    out = _both(lambda handler: _tty_exec_session(node, handler))
    assert out[:8] == [
        "ready on 1 b''",
        "tty b'before stty: standard input\\r'",  # no size yet (0x0): busybox's stty fails
        "tty b'30 100\\r'",  # the line sent, echoed
        "tty b'after 30 100\\r'", "tty b'winch\\r'", "tty b'/dev/pts/0\\r'",
        "tty b'all three\\r'", "tty b''",
    ]  # fmt: skip
    assert out[8].startswith("stderr None exit Failure reason=NonZeroExitCode causes=[('ExitCode', "
                             "'7')] message='command terminated with non-zero exit code: ")
    assert out[8].endswith("exit 7], exit code 7'")
    assert out[9:] == [
        "cat b'hello\\r\\nhello\\r\\n' Success reason= causes=[] message=''",
        "interrupted b'ready\\r\\n^Cinterrupted\\r\\n' Failure reason=NonZeroExitCode "
        "causes=[('ExitCode', '9')]",
        "held [] cgroups []",
    ]  # fmt: skip


def _user_exec_session(node: Node, handler: str) -> list[str]:
    """Execs in a container running as 1000:1000: the pty and the pipes the exec'd process
    gets are its user's (the runtime's chown of the stdio before dropping root)."""
    out = []
    sid, sandbox, parent = _run_pod(node, handler, "user")
    security = ((5, pb((1, 1000))), (12, pb((1, 1000))))  # run_as_user, run_as_group
    cid = _create(node, sid, sandbox, _container_config(
        "user", ["sleep", "1000"], security=security))  # fmt: skip
    node.cri("StartContainer", pb((1, cid)))
    script = ('id; t=$(busybox tty); echo "$t $(busybox stat -c \'%u %g %a\' $t)"; '
              "busybox stty cols 90 rows 20 && busybox stty size")  # fmt: skip
    ch = _exec(node, cid, ["sh", "-c", script], tty=True, stdin=True, stderr=False)
    _first(ch)
    got = ch.rest()
    out.append(f"tty {got.get(STDOUT)!r} {_status(got.get(ERROR, b''), cid)}")
    script = ("id -u; for fd in 0 1 2; do busybox stat -L -c '%u %F' /proc/self/fd/$fd; done; "
              "echo to-stderr >&2")  # fmt: skip
    ch = _exec(node, cid, ["sh", "-c", script], stdin=True)
    _first(ch)
    got = ch.rest()
    out.append(f"pipes {got.get(STDOUT)!r} {got.get(STDERR)!r} {_status(got.get(ERROR, b''), cid)}")
    out.append(_teardown(node, handler, sid, parent, cid))
    return out


def test_cri_exec_stream_as_user(node):
    out = _both(lambda handler: _user_exec_session(node, handler))
    assert out == [
        "tty b'uid=1000 gid=1000 groups=1000\\r\\n/dev/pts/0 1000 5 620\\r\\n"
        "20 90\\r\\n' Success reason= causes=[] message=''",  # the user may set its size
        "pipes b'1000\\n1000 fifo\\n1000 fifo\\n1000 fifo\\n' b'to-stderr\\n' "
        "Success reason= causes=[] message=''",
        "held [] cgroups []",
    ]  # fmt: skip


def _attach_session(node: Node, handler: str) -> list[str]:
    out = []
    sid, sandbox, parent = _run_pod(node, handler, "attach")
    # read is not a loop's condition: a SIGWINCH may end it with nothing (busybox sh)
    script = ("trap 'echo winch >> /tmp/winch' WINCH; echo started; while true; do "
              "a=; read a b c; if [ \"$a\" = size ]; then i=0; "
              "while [ \"$(busybox stty size)\" != \"$b $c\" ] && [ $i -lt 200 ]; do "
              "sleep 0.05; i=$((i+1)); done; echo \"size $(busybox stty size)\"; cat /tmp/winch; "
              "elif [ \"$a\" = bye ]; then exit 6; elif [ -n \"$a\" ]; then echo \"got $a\"; "
              "fi; done")  # fmt: skip
    talker = _create(node, sid, sandbox, _container_config(
        "talker", ["sh", "-c", script], tty=True) + pb((12, True)))  # stdin  # fmt: skip
    script = ('while read l; do echo "got $l"; echo "err $l" >&2; done; echo stdin closed; '
              "exit 4")  # fmt: skip
    once = _create(node, sid, sandbox, _container_config(
        "once", ["sh", "-c", script]) + pb((12, True), (13, True)))  # stdin, stdin_once  # fmt: skip
    for cid in (talker, once):
        node.cri("StartContainer", pb((1, cid)))

    url = node.cri("Attach", pb((1, talker), (2, True), (3, True), (4, True))).str(1)
    assert "/attach/" in url, url
    ch = Channels(url)
    out.append(_first(ch))
    ch.send(STDIN, b"hello\n")
    ch.until(STDOUT, b"got hello\r\n")
    ch.resize(120, 40)  # the shim resizes the console the runtime gave it at create
    ch.send(STDIN, b"size 40 120\n")
    ch.until(STDOUT, b"winch\r\n")
    ch.send(STDIN, b"bye\n")
    got = ch.rest()  # the container's exit ends the attach
    out.append(f"talker attach {got.get(STDOUT)!r} {_status(got.get(ERROR, b''), talker)}")
    status = _wait_exited(node, talker)
    out.append(f"talker EXITED exit={status.int(7)}")
    out += _log(status.str(15))

    url = node.cri("Attach", pb((1, once), (2, True), (4, True), (5, True))).str(1)
    ch = Channels(url)
    out.append(_first(ch))
    ch.send(STDIN, b"x\n")
    ch.until(STDOUT, b"got x\n")
    ch.until(STDERR, b"err x\n")
    ch.close()  # stdin_once: the container's stdin is closed with the stream
    status = _wait_exited(node, once)
    out.append(f"once {ch.received.get(STDOUT)!r} {ch.received.get(STDERR)!r} "
               f"EXITED exit={status.int(7)}")  # fmt: skip
    out += _log(status.str(15))
    out.append(_teardown(node, handler, sid, parent, talker, once))
    return out


def test_cri_attach_stream(node):
    out = _both(lambda handler: _attach_session(node, handler))
    assert out == [
        "ready on 1 b''",
        "talker attach b'hello\\r\\ngot hello\\r\\nsize 40 120\\r\\nsize 40 120\\r\\n"
        "winch\\r\\nbye\\r\\n' Success reason= causes=[] message=''",
        "talker EXITED exit=6", "stdout F started", "stdout F hello", "stdout F got hello",
        "stdout F size 40 120", "stdout F size 40 120", "stdout F winch", "stdout F bye",
        "ready on 1 b''", "once b'got x\\n' b'err x\\n' EXITED exit=4",
        "stdout F got x", "stdout F stdin closed", "stderr F err x",
        "held [] cgroups []",
    ]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert time.monotonic() < deadline, f"nothing listens on {port}"
        time.sleep(0.05)


def _forward(node: Node, sid: str, port: int, request: bytes) -> dict[int, bytes]:
    url = node.cri("PortForward", pb((1, sid), (2, [port]))).str(1)
    assert "/portforward/" in url, url
    ch = Channels(url)
    for channel in (0, 1):  # data, error: each first carries the port
        got, data = ch.recv()
        assert (got, data) == (channel, struct.pack("<H", port))
    ch.received.clear()
    if request:
        ch.send(0, request)
    return ch.rest()


def _port_forward_session(node: Node, handler: str) -> list[str]:
    out = []
    sid, sandbox, parent = _run_pod(node, handler, "forward")
    port, closed = _free_port(), _free_port()
    script = (f"mkdir /www && echo served by the pod > /www/index.html && "
              f"exec busybox httpd -f -p 127.0.0.1:{port} -h /www")  # fmt: skip
    cid = _create(node, sid, sandbox, _container_config("web", ["sh", "-c", script]))
    node.cri("StartContainer", pb((1, cid)))
    _wait_listening(port)

    got = _forward(node, sid, port, b"GET /index.html HTTP/1.0\r\n\r\n")
    head, _, body = got.get(0, b"").partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    kept = [h for h in lines[1:] if h.split(b":")[0] in (b"Content-Type", b"Content-Length")]
    out.append(f"forwarded {lines[0]!r} {kept} {body!r} error {got.get(1)!r}")
    got = _forward(node, sid, closed, b"")
    error = got.get(1, b"").decode().replace(str(closed), "<port>")
    out.append(f"refused data {got.get(0)!r} error {_scrub(error, sid)!r}")
    out.append(_teardown(node, handler, sid, parent, cid))
    return out


def test_cri_port_forward_stream(node):
    out = _both(lambda handler: _port_forward_session(node, handler))
    assert out[0] == ("forwarded b'HTTP/1.1 200 OK' [b'Content-Length: 18'] "
                      "b'served by the pod\\n' error None")  # fmt: skip
    assert out[1].startswith("refused data None error 'error forwarding port <port> to pod <id>")
    assert "connection refused" in out[1]
    assert out[2:] == ["held [] cgroups []"]


# --- what the sessions needed of the runtime, checked against runc directly -------------------


@pytest.mark.parametrize(("command", "words"), [
    ("/no/such/program", 'exec failed: unable to start container process: exec: '
                         '"/no/such/program": stat /no/such/program: no such file or directory'),
    ("no-such-program", 'exec failed: unable to start container process: exec: '
                        '"no-such-program": executable file not found in $PATH'),
])  # fmt: skip
def test_exec_failure_words(both, bundle, tmp_path, command, words):
    """An exec whose command cannot run: runc's words (the last error of its --log, which
    containerd's shim shows, and kubectl after it) and exit status 255, which no
    command's own status can be mistaken for."""
    cid = both.new_id()
    both("run", "-d", "--bundle", bundle.write(["sleep", "100"]), cid)
    log = tmp_path / f"{both.name}.log"
    for detach in ([], ["-d"]):
        proc = both("--log", str(log), "--log-format", "json", "exec", *detach, cid, command,
                    check=False)  # fmt: skip
        assert proc.returncode == 255 and words in proc.stderr.replace('\\"', '"'), proc.stderr
        last = [json.loads(line) for line in log.read_text().splitlines()][-1]
        assert (last["level"], last["msg"]) == ("error", words)
    proc = both("exec", "no-such-container", "true", check=False)
    assert proc.returncode == 255 and "exec failed: " in proc.stderr
    both("delete", "--force", cid)

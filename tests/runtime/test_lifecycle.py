"""The spec's lifecycle, run the same way under runc and under ocibox-runtime.

Tests taking the ``both`` fixture run once per runtime with the same
expectations; where runc departs from the spec, the test says so and checks
only ours.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import termios
import time

import pytest

pytestmark = [pytest.mark.root, pytest.mark.peer]

STATE_KEYS = {"ociVersion", "id", "pid", "status", "bundle"}


def test_lifecycle_states(both, bundle):
    b = bundle.write(["sleep", "30"])
    cid = both.new_id()
    both("create", "--bundle", b, cid)
    st = both.state(cid)
    assert STATE_KEYS <= set(st)
    assert st["id"] == cid and st["status"] == "created" and st["pid"] > 0
    assert st["bundle"] == b
    # The user program has not run yet: the init is still the runtime's own code.
    with open(f"/proc/{st['pid']}/cmdline", "rb") as f:
        assert b"sleep" not in f.read()
    both("start", cid)
    st = both.state(cid)
    assert st["status"] == "running"
    with open(f"/proc/{st['pid']}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[0] == b"sleep"
    assert cid in both("list", "-q").stdout.split()
    both("kill", cid, "KILL")
    st = both.wait_status(cid, "stopped")
    assert st["status"] == "stopped"
    both("delete", cid)
    gone = both("state", cid, check=False)
    assert gone.returncode != 0
    assert "does not exist" in gone.stderr
    assert cid not in both("list", "-q").stdout.split()


def test_wrong_state_errors(both, bundle):
    b = bundle.write(["sleep", "30"])
    cid = both.new_id()
    both("create", "--bundle", b, cid)
    both("start", cid)
    pid = both.state(cid)["pid"]
    # start twice: an error, and the container is untouched.
    assert both("start", cid, check=False).returncode != 0
    assert both.state(cid) == both.state(cid) and both.state(cid)["pid"] == pid
    # delete a running container without --force: an error, nothing changes.
    assert both("delete", cid, check=False).returncode != 0
    assert both.state(cid)["status"] == "running"
    both("kill", cid, "9")
    both.wait_status(cid, "stopped")
    # signalling a stopped container: an error.
    assert both("kill", cid, "KILL", check=False).returncode != 0
    assert both("start", cid, check=False).returncode != 0
    both("delete", cid)


def test_create_twice_is_an_error(both, bundle):
    b = bundle.write(["sleep", "30"])
    cid = both.new_id()
    both("create", "--bundle", b, cid)
    pid = both.state(cid)["pid"]
    again = both("create", "--bundle", b, cid, check=False)
    assert again.returncode != 0
    assert both.state(cid)["pid"] == pid
    both("delete", "--force", cid)


def test_delete_created_needs_force_in_ours(ours, bundle):
    # runc 1.1 deletes a created container without --force; the spec says an
    # operation on a container that is not stopped must fail and change nothing.
    cid = ours.new_id()
    ours("create", "--bundle", bundle.write(["sleep", "30"]), cid)
    p = ours("delete", cid, check=False)
    assert p.returncode == 1 and "it is created" in p.stderr
    assert ours.state(cid)["status"] == "created"
    pid = ours.state(cid)["pid"]
    ours("delete", "--force", cid)
    assert not os.path.exists(f"/proc/{pid}/cmdline") or _zombie_or_gone(pid)
    assert ours("state", cid, check=False).returncode == 1
    assert not (ours.root / cid).exists()


def _zombie_or_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in "ZX"
    except OSError:
        return True


@pytest.mark.parametrize("sig", ["TERM", "SIGTERM", "15", "sigterm"])
def test_kill_signal_names(both, bundle, sig):
    # A shell as pid 1 ignores TERM unless it traps it: the trap proves delivery.
    b = bundle.write(["sh", "-c", "trap 'exit 42' TERM; while :; do sleep 0.05; done"])
    cid = both.new_id()
    proc = subprocess.Popen([*both.argv, "--root", str(both.root), "run", "--bundle", b, cid],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        st = both.wait_status(cid, "running")
        assert st["status"] == "running"
        time.sleep(0.2)  # let the shell install its trap
        both("kill", cid, sig)
        assert proc.wait(timeout=10) == 42
    finally:
        proc.kill()
        proc.wait()


def test_run_exit_codes(both, bundle):
    b = bundle.write(["sh", "-c", "exit 7"])
    assert both("run", "--bundle", b, both.new_id(), check=False).returncode == 7
    b = bundle.write(["sh", "-c", "kill -9 $$"])
    # A shell as pid 1 cannot SIGKILL itself (pid 1 is protected); use a child.
    b = bundle.write(["sh", "-c", "sh -c 'kill -9 $$'; exit $?"])
    assert both("run", "--bundle", b, both.new_id(), check=False).returncode == 137
    b = bundle.write(["true"])
    cid = both.new_id()
    assert both("run", "--bundle", b, cid).returncode == 0
    # run (without --keep) deletes the container afterwards.
    assert both("state", cid, check=False).returncode != 0


def test_run_stdio_inherited(both, bundle):
    b = bundle.write(["sh", "-c", "read x; echo got:$x; echo err >&2"])
    p = both("run", "--bundle", b, both.new_id(), input="hello\n")
    assert p.stdout == "got:hello\n"
    assert "err" in p.stderr


def test_run_detached_and_keep(both, bundle):
    b = bundle.write(["sleep", "30"])
    cid = both.new_id()
    both("run", "-d", "--bundle", b, cid)
    assert both.state(cid)["status"] == "running"
    both("delete", "--force", cid)
    b = bundle.write(["true"])
    cid = both.new_id()
    both("run", "--keep", "--bundle", b, cid)
    assert both.state(cid)["status"] == "stopped"
    both("delete", cid)


def test_pid_file(both, bundle, tmp_path):
    pidfile = tmp_path / "pid"
    cid = both.new_id()
    both("create", "--pid-file", str(pidfile), "--bundle", bundle.write(["sleep", "30"]), cid)
    assert int(pidfile.read_text()) == both.state(cid)["pid"]
    both("delete", "--force", cid)


def test_kill_all(both, bundle):
    b = bundle.write(["sh", "-c", "sleep 30 & sleep 30 & wait"])
    cid = both.new_id()
    both("run", "-d", "--bundle", b, cid)
    time.sleep(0.3)
    both("kill", "--all", cid, "KILL")
    assert both.wait_status(cid, "stopped")["status"] == "stopped"
    both("delete", cid)


def test_create_errors_are_one_line_and_leave_nothing(ours, bundle):
    cid = ours.new_id()
    b = bundle.write(["no-such-program"])
    p = ours("create", "--bundle", b, cid, check=False)
    assert p.returncode == 1
    assert (
        p.stderr.strip()
        == 'ocibox-runtime: exec: "no-such-program": executable file not found in $PATH'
    )
    assert not (ours.root / cid).exists()
    assert not any(
        os.path.exists(_v1_place(c, cid)) for c in ("memory", "pids", "devices")
    )


def test_rlimit_above_hard_limit_fails_clearly(ours, bundle):
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY or os.geteuid() != 0:
        pytest.skip("needs a finite hard limit")

    def edit(cfg):
        cfg["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": hard + 1, "hard": hard + 1}]

    cid = ours.new_id()
    p = ours("create", "--bundle", bundle.write(["true"], edit), cid, check=False)
    if p.returncode == 0:
        pytest.skip("this host lets root raise hard limits (CAP_SYS_RESOURCE present)")
    assert "setrlimit RLIMIT_NOFILE" in p.stderr and "Traceback" not in p.stderr
    assert not (ours.root / cid).exists()


def test_missing_bundle_parts(ours, bundle, tmp_path):
    p = ours("create", "--bundle", str(tmp_path / "nowhere"), ours.new_id(), check=False)
    assert p.returncode == 1 and "config.json does not exist" in p.stderr
    b = bundle.write(["true"], lambda c: c["root"].update(path="nope"))
    p = ours("create", "--bundle", b, ours.new_id(), check=False)
    assert p.returncode == 1 and "is not a directory" in p.stderr


def test_terminal_refused_clearly(ours, bundle):
    b = bundle.write(["true"], lambda c: c["process"].update(terminal=True))
    p = ours("create", "--bundle", b, ours.new_id(), check=False)
    assert p.returncode == 1 and "terminal" in p.stderr


def test_signal_to_created_container_kills_it(both, bundle):
    cid = both.new_id()
    both("create", "--bundle", bundle.write(["sleep", "30"]), cid)
    both("kill", cid, "TERM")
    assert both.wait_status(cid, "stopped")["status"] == "stopped"
    both("delete", cid)


def test_delete_removes_cgroups(ours, bundle):
    cid = ours.new_id()
    ours("create", "--bundle", bundle.write(["sleep", "30"]), cid)
    if not os.path.isdir("/sys/fs/cgroup/memory"):
        pytest.skip("no cgroup v1 memory hierarchy")
    pid = ours.state(cid)["pid"]
    with open(f"/proc/{pid}/cgroup") as f:  # no cgroupsPath: the id, under our own cgroups
        where = {line.split(":")[1]: line.strip().split(":", 2)[2] for line in f}
    cgroups = [f"/sys/fs/cgroup/{c}{where[c]}" for c in ("memory", "pids", "devices")]
    assert all(p.endswith("/" + cid) and os.path.isdir(p) for p in cgroups)
    with open(f"{cgroups[0]}/cgroup.procs") as f:
        assert str(pid) in f.read().split()
    ours("delete", "--force", cid)
    assert not any(os.path.exists(p) for p in cgroups)


def test_signal_forwarding_in_foreground_run(both, bundle):
    b = bundle.write(["sh", "-c", "trap 'exit 3' USR1; while :; do sleep 0.05; done"])
    cid = both.new_id()
    proc = subprocess.Popen([*both.argv, "--root", str(both.root), "run", "--bundle", b, cid])
    try:
        both.wait_status(cid, "running")
        time.sleep(0.2)
        proc.send_signal(signal.SIGUSR1)
        assert proc.wait(timeout=10) == 3
    finally:
        proc.kill()
        proc.wait()


def test_bad_config_values_fail_before_anything_exists(ours, bundle):
    bad = [
        lambda c: c["process"].update(
            rlimits=[{"type": "RLIMIT_NOFILE", "soft": 1, "hard": 1}] * 2
        ),
        lambda c: c["process"].update(rlimits=[{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}]),
        lambda c: c["linux"]["namespaces"].append({"type": "bogus"}),
        lambda c: c["mounts"].append({"destination": "", "type": "tmpfs"}),
        lambda c: c["process"].update(args=[]),
    ]
    for edit in bad:
        bundle.config = __import__("ocibox.runtime.spec").runtime.spec.default_config()
        cid = ours.new_id()
        p = ours("create", "--bundle", bundle.write(["true"], edit), cid, check=False)
        assert p.returncode == 1, p.stderr
        assert p.stderr.startswith("ocibox-runtime: config.json: ")
        assert len(p.stderr.strip().splitlines()) <= 2
        assert not (ours.root / cid).exists()


def test_pause_resume_ps(both, bundle):
    if not os.path.isdir("/sys/fs/cgroup/freezer"):
        pytest.skip("cgroup v1 freezer needed")
    cid = both.new_id()
    both("run", "-d", "--bundle", bundle.write(["sh", "-c", "sleep 30 & sleep 31; wait"]), cid)
    time.sleep(0.2)
    assert both("resume", cid, check=False).returncode != 0  # not paused
    both("pause", cid)
    st = both.state(cid)
    assert st["status"] == "paused" and st["pid"] > 0
    assert both("pause", cid, check=False).returncode != 0  # already paused
    pids = __import__("json").loads(both("ps", "--format", "json", cid).stdout)
    assert st["pid"] in pids and len(pids) == 3
    table = both("ps", cid).stdout.splitlines()
    assert table[0].split()[1] == "PID" and len(table) == 4
    both("resume", cid)
    assert both.state(cid)["status"] == "running"
    both("pause", cid)
    both("delete", "--force", cid)  # a paused container is thawed so that it can die
    assert both("state", cid, check=False).returncode != 0


def test_features(ours):
    import json

    f = json.loads(ours("features").stdout)
    assert f["ociVersionMax"] == "1.2.0"
    assert "rbind" in f["mountOptions"] and "pid" in f["linux"]["namespaces"]


def test_exec(both, bundle, tmp_path):
    cid = both.new_id()
    both("run", "-d", "--bundle", bundle.write(["sleep", "30"]), cid)
    script = "id; hostname; grep ^Cap /proc/self/status; pwd; echo $FOO; head -c5 /proc/1/cmdline; echo; exit 5"
    p = both("exec", "-u", "1000:1000", "-e", "FOO=bar", "--cwd", "/tmp", cid, "sh", "-c", script,
             check=False)  # fmt: skip
    assert p.returncode == 5, p.stderr
    assert p.stdout.splitlines() == [
        "uid=1000 gid=1000", "ocibox" if both.name != "runc" else "ocibox",
        "CapInh:\t0000000000000000", "CapPrm:\t0000000000000000", "CapEff:\t0000000000000000",
        "CapBnd:\t0000000020000420", "CapAmb:\t0000000000000000",
        "/tmp", "bar", "sleep",
    ]  # fmt: skip
    # As root it can see that it shares every namespace with the init.
    same = "; ".join(
        f"[ $(readlink /proc/1/ns/{n}) = $(readlink /proc/self/ns/{n}) ] && echo {n}"
        for n in ("pid", "mnt", "net", "ipc", "uts", "cgroup")
    )
    p = both("exec", cid, "sh", "-c", same)
    assert p.stdout.split() == ["pid", "mnt", "net", "ipc", "uts", "cgroup"]
    # A process file, detached, with a pid file.
    pf = tmp_path / "process.json"
    pf.write_text(
        '{"args": ["sleep", "7"], "cwd": "/", "user": {"uid": 0, "gid": 0}, "env": ["PATH=/bin"]}'
    )
    pidfile = tmp_path / "exec.pid"
    both("exec", "-d", "--pid-file", str(pidfile), "-p", str(pf), cid)
    pid = int(pidfile.read_text())
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert f.read() == b"sleep\x007\x00"
    assert pid in __import__("json").loads(both("ps", "-f", "json", cid).stdout)
    # Errors: an unknown program, then a stopped container.
    bad = both("exec", cid, "no-such-program", check=False)
    assert bad.returncode != 0 and "no-such-program" in bad.stderr
    both("kill", "--all", cid, "KILL")
    both.wait_status(cid, "stopped")
    assert both("exec", cid, "true", check=False).returncode != 0
    both("delete", cid)


def _hooked(bundle, logdir):
    """Every kind of hook appends its name and the state's status and pid to logdir/order."""
    logdir.mkdir(exist_ok=True)
    os.chmod(logdir, 0o777)

    def hook(kind, where):
        script = (
            f'read -r s; st=${{s#*\\"status\\":\\"}}; p=${{s#*\\"pid\\":}}; '
            f'p=${{p%%,*}}; echo "{kind} ${{st%%\\"*}} ${{p%%\\}}*}}" >> {where}/order'
        )
        return {"path": "/bin/sh", "args": ["sh", "-c", script]}

    def edit(cfg):
        cfg["mounts"].append({"destination": "/hooklog", "type": "bind", "source": str(logdir),
                              "options": ["bind"]})  # fmt: skip
        cfg["hooks"] = {
            k: [hook(k, "/hooklog" if k == "startContainer" else str(logdir))]
            for k in ("prestart", "createRuntime", "createContainer", "startContainer",
                      "poststart", "poststop")
        }  # fmt: skip

    return edit


def test_hooks_order_and_state(ours, bundle, tmp_path):
    # Ours only: runc 1.1 runs poststart before start returns yet without waiting
    # for startContainer, and gives createContainer the pid as seen in the container.
    both = ours
    logdir = tmp_path / "hooks"
    b = bundle.write(["sleep", "30"], _hooked(bundle, logdir))
    cid = both.new_id()
    both("create", "--bundle", b, cid)
    pid = both.state(cid)["pid"]
    after_create = (logdir / "order").read_text().split("\n")
    both("start", cid)
    both("kill", cid, "KILL")
    both.wait_status(cid, "stopped")
    both("delete", cid)
    lines = [line.split() for line in (logdir / "order").read_text().splitlines()]
    kinds = [line[0] for line in lines]
    assert kinds == ["prestart", "createRuntime", "createContainer", "startContainer",
                     "poststart", "poststop"]  # fmt: skip
    assert len([x for x in after_create if x]) == 3
    # Every hook but poststop gets the init's host pid, even those run in the container.
    assert all(int(line[2]) == pid for line in lines[:5])
    statuses = {line[0]: line[1] for line in lines}
    assert statuses["createRuntime"] == statuses["createContainer"] == "creating"
    assert statuses["startContainer"] == "created" and statuses["poststart"] == "running"
    assert statuses["poststop"] == "stopped"


def test_failing_hooks(ours, bundle, tmp_path):
    fail = {"path": "/bin/sh", "args": ["sh", "-c", "echo boom >&2; exit 3"]}
    for kind in ("prestart", "createRuntime", "createContainer"):
        bundle.config.pop("hooks", None)
        b = bundle.write(["sleep", "30"], lambda c, k=kind: c.update(hooks={k: [fail]}))
        cid = ours.new_id()
        p = ours("create", "--bundle", b, cid, check=False)
        assert p.returncode == 1
        assert f"{kind} hook 0 (/bin/sh) failed with exit status 3: boom" in p.stderr
        assert not (ours.root / cid).exists()
    # startContainer: start fails and the container stops.
    fail_in = {"path": "/bin/sh", "args": ["sh", "-c", "exit 4"]}
    b = bundle.write(["sleep", "30"], lambda c: c.update(hooks={"startContainer": [fail_in]}))
    cid = ours.new_id()
    ours("create", "--bundle", b, cid)
    p = ours("start", cid, check=False)
    assert p.returncode == 1 and "startContainer hook 0" in p.stderr
    assert ours.wait_status(cid, "stopped")["status"] == "stopped"
    ours("delete", cid)
    # poststart and poststop failures are warnings.
    b = bundle.write(["true"], lambda c: c.update(hooks={"poststart": [fail], "poststop": [fail]}))
    p = ours("run", "--bundle", b, ours.new_id())
    assert p.stderr.count("warning") == 2


def _console_output(rt, cid: str, sockpath, create_args: list[str]) -> str:
    import socket

    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sockpath))
    server.listen(1)
    try:
        rt(*create_args)
        conn, _ = server.accept()
        _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
        conn.close()
    finally:
        server.close()
    master = fds[0]
    if create_args[0] == "create":
        rt("start", cid)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO once the last slave fd is closed
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return out.decode()


def test_console_socket(both, bundle, tmp_path):
    def edit(cfg):
        cfg["process"]["terminal"] = True
        cfg["process"]["consoleSize"] = {"height": 30, "width": 100}

    b = bundle.write(["sh", "-c", "tty; stty size; echo done"], edit)
    cid = both.new_id()
    sock = tmp_path / f"console-{both.name}.sock"
    out = _console_output(
        both, cid, sock, ["create", "--console-socket", str(sock), "--bundle", b, cid]
    )
    assert out.split() == ["/dev/pts/0", "30", "100", "done"]
    both.wait_status(cid, "stopped")
    both("delete", cid)
    # A terminal without a console socket is refused by create.
    assert both("create", "--bundle", b, both.new_id(), check=False).returncode != 0


def test_exec_with_console_socket(both, bundle, tmp_path):
    cid = both.new_id()
    both("run", "-d", "--bundle", bundle.write(["sleep", "30"]), cid)
    sock = tmp_path / f"exec-{both.name}.sock"
    out = _console_output(both, cid, sock, ["exec", "-t", "--console-socket", str(sock), "-d", cid,
                                             "sh", "-c", "tty; echo ok"])  # fmt: skip
    assert out.split()[-1] == "ok" and out.split()[0].startswith("/dev/pts/")
    both("delete", "--force", cid)


def test_seccomp_applies_to_exec_and_bad_profiles_fail(ours, bundle):
    profile = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}  # fmt: skip
    cid = ours.new_id()
    b = bundle.write(["sleep", "30"], lambda c: c["linux"].update(seccomp=profile))
    ours("run", "-d", "--bundle", b, cid)
    p = ours("exec", cid, "sh", "-c", "mkdir /tmp/y; grep Seccomp: /proc/self/status", check=False)
    assert "Operation not permitted" in p.stderr + p.stdout and "Seccomp:\t2" in p.stdout
    ours("delete", "--force", cid)
    for bad, msg in (
        ({"defaultAction": "SCMP_ACT_NOPE"}, "unknown seccomp action"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_VAX"]}, "unknown architecture"),
        ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
          "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_SOMETIMES"}]}]}, "unknown operator"),
    ):  # fmt: skip
        b = bundle.write(["true"], lambda c, bad=bad: c["linux"].update(seccomp=bad))
        cid = ours.new_id()
        p = ours("create", "--bundle", b, cid, check=False)
        assert p.returncode == 1 and msg in p.stderr and "Traceback" not in p.stderr
        assert not (ours.root / cid).exists()


def test_run_with_terminal_in_foreground(both, bundle):
    """`spec` asks for a terminal; `run` without --console-socket then proxies a pty itself."""

    def edit(cfg):
        cfg["process"]["terminal"] = True

    b = bundle.write(["sh", "-c", "tty; stty size; read x; echo got-$x; exit 3"], edit)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 120, 0, 0))
    proc = subprocess.Popen([*both.argv, "--root", str(both.root), "run", "--bundle", b, both.new_id()],
                            stdin=slave, stdout=slave, stderr=slave)  # fmt: skip
    os.close(slave)
    out = b""
    sent = 0.0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.1)
        if r:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        # Resend until answered: a runtime that sets its terminal raw with
        # TCSAFLUSH may discard input that arrived before it did so.
        if b"/dev/pts" in out and b"got-" not in out and time.monotonic() - sent > 0.5:
            os.write(master, b"hello\r")
            sent = time.monotonic()
        if proc.poll() is not None and not r:
            break
    os.close(master)
    assert proc.wait(timeout=10) == 3
    text = out.decode(errors="replace")
    assert "/dev/pts/0" in text and "got-hello" in text
    # runc 1.1 sizes the pty only after start, racing the program; ours does it before.
    assert "33 120" in text or both.name == "runc"


def test_update_and_events(both, bundle):
    if not os.path.isdir("/sys/fs/cgroup/memory"):
        pytest.skip("cgroup v1 needed")
    cid = both.new_id()
    both("run", "-d", "--bundle", bundle.write(["sleep", "30"]), cid)
    both("update", "--memory", "96m", "--memory-swap", "-1", "--pids-limit", "40",
         "--cpu-quota", "20000", "--cpu-period", "100000", cid)  # fmt: skip
    read = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/cpu/cpu.cfs_quota_us"
    assert both("exec", cid, "sh", "-c", read).stdout.split() == [str(96 << 20), "40", "20000"]
    both("update", "-r", "-", cid, input='{"pids": {"limit": -1}, "memory": {"limit": 134217728}}')
    assert both("exec", cid, "sh", "-c", read).stdout.split() == [str(128 << 20), "max", "20000"]
    ev = __import__("json").loads(both("events", "--stats", cid).stdout)
    assert ev["type"] == "stats" and ev["id"] == cid
    assert ev["data"]["memory"]["usage"]["limit"] == 128 << 20
    assert ev["data"]["pids"]["current"] >= 1 and ev["data"]["cpu"]["usage"]["total"] > 0
    both("delete", "--force", cid)
    assert both("update", "--memory", "1g", cid, check=False).returncode != 0


def test_delete_keeps_cgroups_it_did_not_create(ours, bundle):
    parent = "/sys/fs/cgroup/pids/ocibox-test-shared"
    if not os.path.isdir("/sys/fs/cgroup/pids"):
        pytest.skip("cgroup v1 needed")
    os.makedirs(parent, exist_ok=True)
    try:
        cid = ours.new_id()
        b = bundle.write(
            ["true"], lambda c: c["linux"].update(cgroupsPath=f"/ocibox-test-shared/{cid}")
        )
        ours("run", "--bundle", b, cid)
        assert os.path.isdir(parent) and not os.path.exists(f"{parent}/{cid}")
    finally:
        os.rmdir(parent)


def test_recursive_mount_options(ours, bundle, tmp_path):
    """rro and friends (runtime-spec 1.1, mount_setattr): runc 1.1 has none of them."""
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(src / "sub")], check=True)
    try:

        def edit(cfg):
            cfg["mounts"].append({"destination": "/tree", "type": "bind", "source": str(src),
                                  "options": ["rbind", "rro", "rnosuid"]})  # fmt: skip

        script = (
            "touch /tree/a 2>/dev/null && echo top-rw || echo top-ro; "
            "touch /tree/sub/b 2>/dev/null && echo sub-rw || echo sub-ro; "
            "grep ' /tree/sub ' /proc/self/mountinfo | cut -d' ' -f6"
        )
        p = ours("run", "--bundle", bundle.write(["sh", "-c", script], edit), ours.new_id())
        lines = p.stdout.split()
        assert lines[:2] == ["top-ro", "sub-ro"]
        assert "ro" in lines[2].split(",") and "nosuid" in lines[2].split(",")
    finally:
        subprocess.run(["umount", str(src / "sub")], check=True)


def test_personality_and_time_offsets(ours, bundle):
    """linux.personality and linux.timeOffsets (runtime-spec 1.1/1.2; not in runc 1.1)."""

    def edit(cfg):
        cfg["linux"]["personality"] = {"domain": "LINUX32"}
        cfg["linux"]["namespaces"].append({"type": "time"})
        cfg["linux"]["timeOffsets"] = {"boottime": {"secs": 10**8, "nanosecs": 0}}

    p = ours("run", "--bundle", bundle.write(["sh", "-c", "uname -m; cut -d. -f1 /proc/uptime"], edit),
             ours.new_id())  # fmt: skip
    arch, uptime = p.stdout.split()
    assert arch in ("i686", "armv8l", "armv7l") and int(uptime) >= 10**8

    def bad(cfg):
        cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "time"]

    p = ours("create", "--bundle", bundle.write(["true"], bad), ours.new_id(), check=False)
    assert p.returncode == 1 and "needs a new time namespace" in p.stderr


def test_under_conmon(both, bundle, tmp_path):
    """conmon (podman's monitor) drives create, and records output and exit code."""
    from conftest import need

    conmon = need("conmon")
    work = tmp_path / f"conmon-{both.name}"
    for d in ("exits", "sock"):
        (work / d).mkdir(parents=True)
    b = bundle.write(["sh", "-c", "echo hello from $(hostname); exit 4"])
    cid = both.new_id()
    p = subprocess.run(
        [conmon, "--api-version", "1", "-c", cid, "-u", cid, "-n", cid, "-r", both.argv[0],
         *[a for x in both.argv[1:] for a in ("--runtime-arg", x)],
         "--runtime-arg", "--root", "--runtime-arg", str(both.root),
         "-b", b, "-p", str(work / "pid"), "--container-pidfile", str(work / "cpid"),
         "-l", f"k8s-file:{work / 'log'}", "--exit-dir", str(work / "exits"),
         "--socket-dir-path", str(work / "sock")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    # conmon returns once it has forked its monitor, which then calls create.
    assert both.wait_status(cid, "created", timeout=15)["status"] == "created"
    deadline = time.monotonic() + 10
    while not (work / "cpid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # conmon writes it once create has returned
    assert int((work / "cpid").read_text()) == both.state(cid)["pid"]
    both("start", cid)
    deadline = time.monotonic() + 10
    while not (work / "exits" / cid).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (work / "exits" / cid).read_text().strip() == "4"
    assert "stdout F hello from ocibox" in (work / "log").read_text()
    assert both.state(cid)["status"] == "stopped"
    both("delete", cid)


def test_waiting_init_holds_no_host_directory(both, bundle):
    """While created, the init must hold no descriptor of a host directory (runc CVE-2024-21626)."""
    cid = both.new_id()
    both("create", "--bundle", bundle.write(["sleep", "30"]), cid)
    pid = both.state(cid)["pid"]
    for name in os.listdir(f"/proc/{pid}/fd"):
        path = f"/proc/{pid}/fd/{name}"
        assert not os.path.isdir(path), f"fd {name} -> {os.readlink(path)}"
    both("delete", "--force", cid)


def test_container_without_proc_is_refused_clearly(ours, bundle):
    b = bundle.write(
        ["true"], lambda c: c.update(mounts=[m for m in c["mounts"] if m["type"] != "proc"])
    )
    cid = ours.new_id()
    p = ours("create", "--bundle", b, cid, check=False)
    assert p.returncode == 1 and "no /proc mounted" in p.stderr


def test_io_priority_affinity_and_unsupported_fields(ours, bundle, tmp_path):
    def edit(cfg):
        cfg["process"]["ioPriority"] = {"class": "IOPRIO_CLASS_IDLE", "priority": 0}

    cid = ours.new_id()
    ours("run", "-d", "--bundle", bundle.write(["sleep", "30"], edit), cid)
    pid = ours.state(cid)["pid"]
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    ioprio = libc.syscall(252 if os.uname().machine == "x86_64" else 31, 1, pid)  # ioprio_get
    assert ioprio >> 13 == 3
    pf = tmp_path / "p.json"
    pf.write_text('{"args": ["sleep", "5"], "cwd": "/", "env": ["PATH=/bin"],'
                  ' "execCPUAffinity": {"initial": "0", "final": "0"}}')  # fmt: skip
    pidfile = tmp_path / "pid"
    ours("exec", "-d", "--pid-file", str(pidfile), "-p", str(pf), cid)
    assert os.sched_getaffinity(int(pidfile.read_text())) == {0}
    ours("delete", "--force", cid)
    for field, msg in (({"intelRdt": {"closID": "x"}}, "linux.intelRdt is not supported"),):
        b = bundle.write(["true"], lambda c, f=field: c["linux"].update(f))
        p = ours("create", "--bundle", b, ours.new_id(), check=False)
        assert p.returncode == 1 and msg in p.stderr
        bundle.config["linux"].pop("intelRdt")
    b = bundle.write(["true"], lambda c: c["process"].update(apparmorProfile="docker-default"))
    p = ours("run", "--bundle", b, ours.new_id())
    assert "apparmorProfile" in p.stderr and "warning" in p.stderr


def test_concurrent_starts_and_deletes(ours, bundle):
    """Operations on one container take its lock: exactly one of two starts wins."""
    cid = ours.new_id()
    ours("create", "--bundle", bundle.write(["sleep", "30"]), cid)
    argv = [*ours.argv, "--root", str(ours.root)]
    procs = [subprocess.Popen([*argv, "start", cid], stderr=subprocess.PIPE) for _ in range(3)]
    codes = sorted(p.wait(timeout=30) for p in procs)
    assert codes == [0, 1, 1]
    assert ours.state(cid)["status"] == "running"
    procs = [
        subprocess.Popen([*argv, "delete", "--force", cid], stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    codes = [p.wait(timeout=30) for p in procs]
    assert codes.count(0) >= 1 and not (ours.root / cid).exists()


def _v1_place(ctrl: str, cid: str) -> str:
    """Where a container with no cgroupsPath goes in a v1 hierarchy: under the runtime's
    (this test's) own cgroup there, as runc places it."""
    with open("/proc/self/cgroup") as f:
        own = {n: line.strip().split(":", 2)[2] for line in f for n in line.split(":")[1].split(",")}
    return f"/sys/fs/cgroup/{ctrl}{own.get(ctrl, '/').rstrip('/')}/{cid}"

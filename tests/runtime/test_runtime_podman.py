"""podman runs its containers with ocibox-runtime: `podman --runtime <ocibox-runtime>`.

podman (through conmon) drives the runtime as it drives runc: ``create --bundle
--pid-file [--console-socket]``, ``start``, ``state``, ``kill``, ``exec
--pid-file --process [--detach] [--tty --console-socket]`` and ``delete
--force``, with its own config.json (its default seccomp profile, a pids
cgroup under /libpod_parent, rlimits, masked paths, bind mounts of /etc/hosts
and friends).

The image comes from the ocibox library (``import_rootfs`` of the busybox
rootfs) and enters podman's private store with ``podman pull oci:LAYOUT:v1``.
Every podman command runs with a private storage root, run root and temporary
directory (vfs driver: no mounts left behind) and a private containers.conf
(``CONTAINERS_CONF``) whose default ulimits stay within this machine's hard
limits, so neither the host's podman store nor its configuration matter.

Network: ``--network none`` (a new, empty network namespace), so the test
needs and touches no CNI/netavark set-up; podman's default bridge network also
works with ocibox-runtime here (the container then joins podman's netns by path).

The runtime's state lives in its default root (/run/ocibox-runtime), as runc's
does in /run/runc under podman: ``--runtime-flag root=DIR`` is not handed on to
the ``podman container cleanup`` process that conmon starts when a container
exits, whose ``delete`` would then look in the default root and leave the
container's state behind. The test checks that nothing of its containers
remains there.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import shutil
import struct
import subprocess
import tempfile
import termios
import time
from pathlib import Path

import pytest

from conftest import need
from ocibox.image.layout import Layout

pytestmark = [pytest.mark.peer, pytest.mark.root]

REPO = Path(__file__).resolve().parents[2]
# OCIBOX_TEST_RUNTIME: another launcher (e.g. one that loads a worktree's src).
RUNTIME = Path(os.environ.get("OCIBOX_TEST_RUNTIME") or REPO / ".venv" / "bin" / "ocibox-runtime")
DEFAULT_ROOT = "/run/ocibox-runtime"


class Podman:
    def __init__(self, program: str, base: Path, runroot: str, conf: Path) -> None:
        self.argv = [program, "--root", str(base / "root"), "--runroot", runroot,
                     "--tmpdir", str(base / "tmp"), "--storage-driver", "vfs",
                     "--events-backend", "none", "--runtime", str(RUNTIME)]  # fmt: skip
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}

    def __call__(self, *args: str, check: bool = True, timeout: float = 60):
        proc = subprocess.run([*self.argv, *args], capture_output=True, text=True,
                              timeout=timeout, env=self.env, stdin=subprocess.DEVNULL)  # fmt: skip
        if check:
            assert proc.returncode == 0, (
                f"podman {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
            )
        return proc


def _hard_limit(resource: int, cap: int) -> int:
    import resource as r

    hard = r.getrlimit(resource)[1]
    return cap if hard == r.RLIM_INFINITY or hard > cap else hard


@pytest.fixture
def podman(tmp_path) -> Podman:
    import resource as r

    program = need("podman")
    if not os.access(RUNTIME, os.X_OK):
        pytest.skip(f"{RUNTIME} is not installed (make venv installs it)")
    base = tmp_path / "podman"
    (base / "tmp").mkdir(parents=True)
    nofile, nproc = _hard_limit(r.RLIMIT_NOFILE, 20000), _hard_limit(r.RLIMIT_NPROC, 32768)
    conf = base / "containers.conf"
    # podman's default ulimits (nofile 1048576) are above these machines' hard limits.
    conf.write_text(f'[containers]\ndefault_ulimits = ["nofile={nofile}:{nofile}", '
                    f'"nproc={nproc}:{nproc}"]\n')  # fmt: skip
    runroot = tempfile.mkdtemp(prefix="ocibox-pm-")  # podman wants a short run root
    pm = Podman(program, base, runroot, conf)
    yield pm
    ids = pm("ps", "-aq", "--no-trunc", check=False).stdout.split()
    if ids:
        pm("rm", "-f", *ids, check=False)
    # conmon starts `podman container cleanup` when a container exits, and it may still be
    # running (and re-create the run root): wait for every process that names our run root.
    deadline = time.monotonic() + 15
    while _processes_naming(runroot) and time.monotonic() < deadline:
        time.sleep(0.1)
    shutil.rmtree(runroot, ignore_errors=True)


def _processes_naming(text: str) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        out.append(int(name))
            except OSError:
                continue
    return out


@pytest.fixture
def image(podman, tmp_path, busybox_rootfs) -> str:
    """busybox from the ocibox library, StopSignal SIGUSR1, pulled into podman's store."""
    from ocibox.image.mutate import ConfigEdit, edit_config, import_rootfs

    for applet in ("hostname", "tty", "stty", "tr"):
        link = busybox_rootfs / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    path = tmp_path / "layout"
    layout = Layout.init(str(path))
    import_rootfs(layout, "v1", str(busybox_rootfs))
    edit_config(layout, "v1", ConfigEdit(cmd=["/bin/sh"], env=["PATH=/bin"], stop_signal="SIGUSR1"))
    image_id = podman("pull", "-q", f"oci:{path}:v1").stdout.split()[-1]
    podman("tag", image_id, "localhost/ocibox-busybox:v1")
    return "localhost/ocibox-busybox:v1"


def _ours(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(RUNTIME), *args], capture_output=True, text=True, timeout=30)


def _leftovers(cid: str) -> bool:
    return os.path.exists(os.path.join(DEFAULT_ROOT, cid))


def test_run_rm_output_and_exit_codes(podman, image):
    proc = podman("run", "--rm", "--network", "none", image, "echo", "hi")
    assert proc.stdout == "hi\n"
    # stdout and stderr stay apart; a non-zero exit code reaches podman's caller.
    proc = podman("run", "--rm", "--network", "none", image, "sh", "-c",
                  "echo out; echo err >&2; exit 3", check=False)  # fmt: skip
    assert (proc.returncode, proc.stdout) == (3, "out\n"), proc.stderr
    assert "err" in proc.stderr
    # A program that is not there: podman maps the runtime's error to 127, as with runc.
    proc = podman("run", "--rm", "--network", "none", image, "no-such-program", check=False)
    assert proc.returncode == 127, proc.stderr
    assert "executable file not found" in proc.stderr
    assert podman("ps", "-aq").stdout.split() == []


def test_detached_logs_exec_stop_rm(podman, image):
    script = ('echo started; trap "echo got-usr1; exit 0" USR1; '
              "while true; do sleep 0.1; done")  # fmt: skip
    cid = podman("run", "-d", "--network", "none", "--hostname", "box", image,
                 "sh", "-c", script).stdout.strip()  # fmt: skip
    try:
        # podman's container is ocibox-runtime's container: same id, same init pid.
        inspect = json.loads(podman("inspect", cid).stdout)[0]
        assert inspect["State"]["Running"] and inspect["OCIRuntime"] == str(RUNTIME)
        st = json.loads(_ours("state", cid).stdout)
        assert st["status"] == "running" and st["pid"] == inspect["State"]["Pid"]
        deadline = time.monotonic() + 10
        while "started" not in podman("logs", cid).stdout and time.monotonic() < deadline:
            time.sleep(0.1)
        assert podman("logs", cid).stdout == "started\n"

        # exec: output, exit code, and the container's namespaces (hostname, pid 1).
        proc = podman("exec", cid, "sh", "-c", "hostname; cat /proc/1/cmdline | tr '\\0' ' '; exit 4",
                      check=False)  # fmt: skip
        assert proc.returncode == 4, proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[0] == "box" and lines[1].startswith("sh -c echo started")
        assert (
            podman("exec", "-e", "X=y", "-w", "/tmp", cid, "sh", "-c", "echo $X $(pwd)").stdout
            == "y /tmp\n"
        )
        # exec -d: podman then waits for nothing; the process runs in the container.
        podman("exec", "-d", cid, "touch", "/tmp/detached")
        deadline = time.monotonic() + 10
        while podman("exec", cid, "ls", "/tmp/detached", check=False).returncode != 0:
            assert time.monotonic() < deadline, "exec -d never ran"
            time.sleep(0.1)

        # stop sends the image's StopSignal (SIGUSR1), which the script traps.
        t0 = time.monotonic()
        podman("stop", "-t", "10", cid)
        assert time.monotonic() - t0 < 8, "stop waited for its timeout: the stop signal was lost"
        inspect = json.loads(podman("inspect", cid).stdout)[0]
        assert inspect["State"]["Status"] == "exited" and inspect["State"]["ExitCode"] == 0
        assert podman("logs", cid).stdout == "started\ngot-usr1\n"
        assert _ours("state", cid).returncode != 0 or not _leftovers(cid)
    finally:
        podman("rm", "-f", cid, check=False)
    assert podman("ps", "-aq").stdout.split() == []
    assert not _leftovers(cid)


def test_stop_timeout_kills(podman, image):
    # The stop signal ignored: after the timeout podman sends SIGKILL through the runtime.
    cid = podman("run", "-d", "--network", "none", image, "sh", "-c",
                 'trap "" USR1 TERM; echo ready; while true; do sleep 0.1; done').stdout.strip()  # fmt: skip
    deadline = time.monotonic() + 10
    while "ready" not in podman("logs", cid).stdout and time.monotonic() < deadline:
        time.sleep(0.1)
    t0 = time.monotonic()
    podman("stop", "-t", "1", cid)
    took = time.monotonic() - t0
    assert 0.9 < took < 8, took
    inspect = json.loads(podman("inspect", cid).stdout)[0]
    assert inspect["State"]["ExitCode"] == 137
    podman("rm", cid)
    assert podman("ps", "-aq").stdout.split() == []
    assert not _leftovers(cid)


def _drive_pty(argv: list[str], env: dict, rows: int, cols: int, steps, timeout: float = 60):
    """Run argv on a new pty of the given size; send each input once its prompt appears.

    ``steps`` is a list of (text to wait for, bytes to send[, seconds to pause before
    sending]). Returns (output, exit code).
    """
    pid, fd = pty.fork()
    if pid == 0:  # the child: its stdin is the pty's slave
        try:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            os.execvpe(argv[0], argv, env)
        finally:
            os._exit(127)
    out = b""
    deadline = time.monotonic() + timeout
    pending = list(steps)
    try:
        while True:
            if pending and pending[0][0].encode() in out:
                text, data, *pause = pending.pop(0)
                time.sleep(pause[0] if pause else 0)
                os.write(fd, data)
            left = deadline - time.monotonic()
            assert left > 0, f"timed out; output so far:\n{out.decode(errors='replace')}"
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # EIO: the other side is closed
                    break
                if not chunk:
                    break
                out += chunk
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return out.decode(errors="replace"), os.waitstatus_to_exitcode(status)


def test_run_interactive_terminal(podman, image):
    argv = [*podman.argv, "run", "-it", "--rm", "--network", "none", image, "sh"]
    cmds = b"tty; stty size; echo $((6 * 7))-answer; exit 5\n"
    try:
        out, code = _drive_pty(argv, podman.env, 30, 100, [("# ", cmds)])
    except BaseException:
        subprocess.run([*podman.argv, "rm", "-f", "-a"], capture_output=True, env=podman.env)
        raise
    assert code == 5, out
    assert "/dev/pts/0" in out  # the process's stdin is the pty that conmon holds
    assert "30 100" in out  # podman sized the container's terminal from ours
    assert "42-answer" in out
    assert podman("ps", "-aq").stdout.split() == []


def test_run_interactive_signal(podman, image):
    """Ctrl-C typed at the terminal reaches the container's foreground process."""
    argv = [*podman.argv, "run", "-it", "--rm", "--network", "none", image, "sh"]
    # Ctrl-C once sleep has surely started (the shell has echoed the line and run it).
    steps = [("# ", b"sleep 30\n"), ("sleep 30\r\n", b"\x03", 1.0), ("^C", b"echo rc-$?\n", 0.3),
             ("rc-", b"exit 7\n")]  # fmt: skip
    t0 = time.monotonic()
    out, code = _drive_pty(argv, podman.env, 24, 80, steps)
    assert code == 7, out
    assert "rc-130" in out  # sleep died of SIGINT: the shell reports 128 + 2
    assert time.monotonic() - t0 < 25


def test_exec_interactive_terminal(podman, image):
    """podman exec -it: the runtime's exec --tty --console-socket, driven through a pty."""
    cid = podman("run", "-d", "--network", "none", image, "sleep", "60").stdout.strip()
    try:
        argv = [*podman.argv, "exec", "-it", cid, "sh"]
        out, code = _drive_pty(argv, podman.env, 20, 70,
                               [("# ", b"tty; stty size; echo $((6 * 7))-exec; exit 9\n")])  # fmt: skip
        assert code == 9, out
        assert "/dev/pts/" in out and "20 70" in out and "42-exec" in out
    finally:
        podman("rm", "-f", "-t", "0", cid, check=False)
    assert not _leftovers(cid)

"""checkpoint and restore on this host, whose kernel criu cannot work with: clear errors,
with criu's own reason; what needs no criu (state checks, flags) against runc.

The working path (a dump and a restore that continues) is tried in a VM: test_checkpoint_vm.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

pytestmark = [pytest.mark.peer, pytest.mark.root]

CRIU = shutil.which("criu") or shutil.which("criu", path="/usr/sbin:/sbin")


def _criu_check_errors() -> list[str]:
    """The messages of `criu check`'s Error lines (without the source location); [] if it passes."""
    p = subprocess.run([CRIU, "check"], capture_output=True, text=True)
    if p.returncode == 0:
        return []
    return [re.sub(r"^.*?Error \([^)]*\):\s*", "", ln).strip()
            for ln in (p.stdout + p.stderr).splitlines() if "Error (" in ln]  # fmt: skip


@pytest.mark.skipif(CRIU is None, reason="criu is not installed")
def test_checkpoint_fails_with_criu_reason(ours, bundle, tmp_path):
    reasons = _criu_check_errors()
    if not reasons:
        pytest.skip("criu works on this kernel: the VM test covers a checkpoint that succeeds")
    cid = ours.new_id()
    ours("run", "-d", "--bundle", bundle.write(["sleep", "60"]), cid)
    p = ours("checkpoint", "--image-path", str(tmp_path / "img"), cid, check=False)
    assert p.returncode == 1, p.stderr
    assert f"checkpoint of container {cid}: criu dump failed: " in p.stderr
    assert reasons[0] in p.stderr  # criu's first complaint, e.g. the kernel feature it lacks
    assert f"hint: criu's log: {tmp_path / 'img' / 'dump.log'}" in p.stderr
    # A failed dump leaves the container as it was.
    assert ours.state(cid)["status"] == "running"


def test_checkpoint_without_criu_says_so(ours, bundle, tmp_path):
    cid = ours.new_id()
    ours("run", "-d", "--bundle", bundle.write(["sleep", "60"]), cid)
    p = ours("--criu", str(tmp_path / "no-criu"), "checkpoint", "--image-path",
             str(tmp_path / "img"), cid, check=False)  # fmt: skip
    assert p.returncode != 0
    assert f"criu binary '{tmp_path / 'no-criu'}' (--criu) not found" in p.stderr
    assert ours.state(cid)["status"] == "running"


def test_checkpoint_of_a_created_container_is_refused_by_both(both, bundle, tmp_path):
    cid = both.new_id()
    both("create", "--bundle", bundle.write(["sleep", "60"]), cid)
    p = both("checkpoint", "--image-path", str(tmp_path / "img"), cid, check=False)
    assert p.returncode != 0
    assert "created" in p.stderr
    assert both.state(cid)["status"] == "created"


def test_checkpoint_of_a_missing_container_is_refused_by_both(both, tmp_path):
    p = both("checkpoint", "--image-path", str(tmp_path / "img"), "nosuch", check=False)
    assert p.returncode != 0
    assert "does not exist" in p.stderr


def test_restore_without_images_is_refused(ours, bundle, tmp_path):
    (tmp_path / "empty").mkdir()
    cid = ours.new_id()
    p = ours("restore", "--image-path", str(tmp_path / "empty"), "--bundle",
             bundle.write(["true"]), cid, check=False)  # fmt: skip
    assert p.returncode != 0
    assert f"{tmp_path / 'empty'} holds no checkpoint" in p.stderr
    assert ours("state", cid, check=False).returncode != 0  # nothing was left behind


def test_restore_of_an_existing_id_is_refused_by_both(both, bundle, tmp_path):
    cid = both.new_id()
    b = bundle.write(["sleep", "60"])
    both("create", "--bundle", b, cid)
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "inventory.img").write_bytes(b"")
    p = both("restore", "-d", "--image-path", str(tmp_path / "img"), "--bundle", b, cid,
             check=False)  # fmt: skip
    assert p.returncode != 0
    assert "exists" in p.stderr


def test_bad_manage_cgroups_mode_is_a_usage_error(ours, bundle, tmp_path):
    cid = ours.new_id()
    ours("run", "-d", "--bundle", bundle.write(["sleep", "60"]), cid)
    p = ours("checkpoint", "--manage-cgroups-mode", "sometimes", cid, check=False)
    assert p.returncode != 0
    assert "--manage-cgroups-mode 'sometimes': use one of soft, full, strict, ignore" in p.stderr


def _images(path, tty: str | None) -> str:
    """An images directory restore takes for one (criu would find it empty): inventory.img,
    and tty.info with the dumped terminal's key (ours writes it; "" for none)."""
    path.mkdir()
    (path / "inventory.img").write_bytes(b"")
    if tty is not None:
        (path / "tty.info").write_text(tty)
    return str(path)


def _terminal(config: dict) -> None:
    config["process"]["terminal"] = True


def test_detached_restore_of_a_terminal_needs_console_socket_for_both(both, bundle, tmp_path):
    cid = both.new_id()
    p = both("restore", "-d", "--image-path", _images(tmp_path / "img", "tty[8800000:19]"),
             "--bundle", bundle.write(["sh"], _terminal), cid, check=False)  # fmt: skip
    assert p.returncode != 0
    if both.name == "runc":
        assert "cannot allocate tty if runc will detach without setting console socket" in p.stderr
    else:
        assert "restore -d of a container with a terminal needs --console-socket" in p.stderr
    assert both("state", cid, check=False).returncode != 0


def test_restore_with_console_socket_needs_a_terminal(ours, bundle, tmp_path):
    cid = ours.new_id()
    p = ours("restore", "-d", "--console-socket", str(tmp_path / "sock"), "--image-path",
             _images(tmp_path / "img", ""), "--bundle", bundle.write(["sh"]), cid,
             check=False)  # fmt: skip
    assert p.returncode != 0
    assert "--console-socket is only for a process with terminal: true" in p.stderr
    assert ours("state", cid, check=False).returncode != 0


def test_restore_of_a_terminal_needs_images_of_ours(ours, bundle, tmp_path):
    # runc's images of a terminal (criu's tty-info.img, no tty.info) need criu's RPC
    # (orphan-pts-master): the refusal says so, and what to do (in the VM: runc's own).
    cid = ours.new_id()
    img = _images(tmp_path / "img", None)
    (tmp_path / "img" / "tty-info.img").write_bytes(b"")
    p = ours("restore", "-d", "--console-socket", str(tmp_path / "sock"), "--image-path", img,
             "--bundle", bundle.write(["sh"], _terminal), cid, check=False)  # fmt: skip
    assert p.returncode != 0
    assert (f"cannot restore {img}: its process has a terminal and the checkpoint was not made "
            f"by ocibox-runtime (no tty.info)") in p.stderr  # fmt: skip
    assert "hint: restore it with the runtime that checkpointed it (runc restore" in p.stderr
    assert ours("state", cid, check=False).returncode != 0


def test_restore_of_a_terminal_from_images_without_one(ours, bundle, tmp_path):
    # neither ours' tty.info nor criu's tty-info.img: the dumped process had no terminal
    cid = ours.new_id()
    p = ours("restore", "-d", "--console-socket", str(tmp_path / "sock"), "--image-path",
             _images(tmp_path / "img", None), "--bundle", bundle.write(["sh"], _terminal), cid,
             check=False)  # fmt: skip
    assert p.returncode != 0
    assert "process.terminal is true, and the checkpoint's process had no terminal" in p.stderr


def test_restore_terminal_and_config_must_agree(ours, bundle, tmp_path):
    cid = ours.new_id()
    p = ours("restore", "-d", "--image-path", _images(tmp_path / "img", "tty[8800000:19]"),
             "--bundle", bundle.write(["sh"]), cid, check=False)  # fmt: skip
    assert p.returncode != 0
    assert "the checkpoint's process has a terminal, and config.json says process.terminal is false" in p.stderr
    p = ours("restore", "-d", "--console-socket", str(tmp_path / "sock"), "--image-path",
             _images(tmp_path / "img2", ""), "--bundle", bundle.write(["sh"], _terminal), cid,
             check=False)  # fmt: skip
    assert p.returncode != 0
    assert "process.terminal is true, and the checkpoint's process had no terminal" in p.stderr


@pytest.mark.skipif(CRIU is None, reason="criu is not installed")
def test_restore_of_a_terminal_to_a_missing_console_socket(ours, bundle, tmp_path):
    # The socket is connected before criu runs: nothing is left behind.
    cid = ours.new_id()
    p = ours("restore", "-d", "--console-socket", str(tmp_path / "nosock"), "--image-path",
             _images(tmp_path / "img", "tty[8800000:19]"), "--bundle",
             bundle.write(["sh"], _terminal), cid, check=False)  # fmt: skip
    assert p.returncode != 0
    assert f"--console-socket {tmp_path / 'nosock'}: No such file or directory" in p.stderr
    assert ours("state", cid, check=False).returncode != 0


def test_bad_page_server_is_refused_by_both(both, bundle, tmp_path):
    cid = both.new_id()
    both("run", "-d", "--bundle", bundle.write(["sleep", "60"]), cid)
    p = both("checkpoint", "--page-server", "nowhere", "--image-path", str(tmp_path / "img"),
             cid, check=False)  # fmt: skip
    assert p.returncode != 0
    assert "--page-server ADDRESS:PORT" in p.stderr
    assert both.state(cid)["status"] == "running"


def test_lazy_pages_status_fd_must_be_ours_and_writable(ours, bundle, tmp_path):
    cid = ours.new_id()
    ours("run", "-d", "--bundle", bundle.write(["sleep", "60"]), cid)
    r, w = os.pipe()
    try:
        for fd, why in ((str(r), "not open for writing"), ("99", "Bad file descriptor"),
                        ("two", "'two': not a file descriptor number")):  # fmt: skip
            p = subprocess.run([*ours.argv, "--root", str(ours.root), "checkpoint", "--lazy-pages",
                                "--page-server", "127.0.0.1:27000", "--status-fd", fd,
                                "--image-path", str(tmp_path / "img"), cid],
                               pass_fds=(r,), stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, timeout=60)  # fmt: skip
            assert p.returncode != 0
            assert f"--status-fd {why if fd == 'two' else f'{fd}: {why}'}" in p.stderr
    finally:
        os.close(r)
        os.close(w)
    assert ours.state(cid)["status"] == "running"


def test_restore_refuses_a_bad_tty_info(ours, bundle, tmp_path):
    cid = ours.new_id()
    p = ours("restore", "--image-path", _images(tmp_path / "img", "tty[1:2] --evil"),
             "--bundle", bundle.write(["sh"], _terminal), cid, check=False)  # fmt: skip
    assert p.returncode != 0
    assert f"{tmp_path / 'img' / 'tty.info'}: 'tty[1:2] --evil' is not a terminal's key" in p.stderr
    assert ours("state", cid, check=False).returncode != 0


def _lsm(bundle, tmp_path, *flags: str) -> list[str]:
    """restore's arguments with ``flags``, onto images criu would find empty."""
    img = tmp_path / "img"
    return ["restore", "-d", *flags, "--image-path", _images(img, "") if not img.exists() else str(img),
            "--bundle", bundle.write(["sh"])]  # fmt: skip


def test_lsm_profile_of_an_lsm_the_host_lacks_is_refused_by_both(both, bundle, tmp_path):
    from ocibox.runtime.checkpoint import host_lsms

    if "apparmor" in host_lsms():
        pytest.skip("this kernel runs apparmor")
    cid = both.new_id()
    p = both(*_lsm(bundle, tmp_path, "--lsm-profile", "apparmor:ocibox-test"), cid, check=False)
    assert p.returncode != 0
    if both.name != "runc":
        # refused before criu runs (criu would say "apparmor LSM specified but apparmor
        # not supported by kernel" in its log), with what to do
        assert ("--lsm-profile apparmor:ocibox-test: this host does not run the apparmor LSM"
                in p.stderr), p.stderr  # fmt: skip
        assert "hint: restore without --lsm-profile (or with none:ocibox-test)" in p.stderr
    assert both("state", cid, check=False).returncode != 0


@pytest.mark.parametrize("value", ["apparmor", "smack:x", ":x"])
def test_malformed_lsm_profile_is_a_usage_error(ours, bundle, tmp_path, value):
    cid = ours.new_id()
    p = ours(*_lsm(bundle, tmp_path, "--lsm-profile", value), cid, check=False)
    assert p.returncode == 2, p.stderr
    assert f"--lsm-profile {value!r}: use TYPE:NAME, TYPE one of apparmor, selinux, none" in p.stderr


def test_lsm_flags_are_taken_by_both(both, bundle, tmp_path):
    # none:NAME (no profile) and a mount context (criu replaces a context= option, which no
    # mount has without SELinux) get past the flags: the restore fails later, on the images
    # criu cannot read here, not on the flags.
    cid = both.new_id()
    p = both(*_lsm(bundle, tmp_path, "--lsm-profile", "none:x", "--lsm-mount-context",
                   "system_u:object_r:container_file_t:s0"), cid, check=False)  # fmt: skip
    assert p.returncode != 0
    assert "flag provided but not defined" not in p.stderr
    assert "--lsm-" not in p.stderr and "LSM" not in p.stderr, p.stderr
    assert both("state", cid, check=False).returncode != 0


# As --criu: kills the runtime that runs it, then becomes criu (the restorer killed the
# moment criu starts; what criu does next is the VM test's: here it fails at once).
KILL_PARENT = '#!/bin/sh\nkill -9 $PPID\nexec criu "$@"\n'


def test_a_killed_restorer_leaves_what_delete_force_removes(both, bundle, tmp_path):
    cid = both.new_id()
    wrapper = tmp_path / "criu-kill-parent"
    wrapper.write_text(KILL_PARENT)
    wrapper.chmod(0o755)
    cgroup = f"/ocibox-test-ckpt/{cid}"

    def edit(config):
        config["linux"]["cgroupsPath"] = cgroup
        config["linux"]["resources"] = {"pids": {"limit": 20}}
        config["hooks"] = {"prestart": [{"path": "/bin/true"}]}

    img = _images(tmp_path / "img", "")
    p = both("--criu", str(wrapper), "restore", "-d", "--image-path", img, "--bundle",
             bundle.write(["sleep", "60"], edit), cid, check=False)  # fmt: skip
    assert p.returncode == -9, p.stderr
    if both.name != "runc":
        # The state names what the restore made, and says it stopped (no lock, no pid).
        assert both.state(cid)["status"] == "stopped"
        assert os.path.isdir(f"/sys/fs/cgroup/pids{cgroup}")
        # criu's action script, run as criu would with its restorer gone: it fails at
        # once, at setup-namespaces (it waited for ever on a fifo nobody opened any more)
        # and at post-restore (criu then undoes the restore).
        script = both.root / cid / "restore.action.sh"
        for action in ("setup-namespaces", "post-restore"):
            env = {**os.environ, "CRTOOLS_SCRIPT_ACTION": action, "CRTOOLS_INIT_PID": "1"}
            r = subprocess.run([str(script)], env=env, stdin=subprocess.DEVNULL, timeout=60)
            assert r.returncode == 1, action
    both("delete", "--force", cid, check=both.name != "runc")
    assert not (both.root / cid).exists()
    assert not os.path.exists(f"/sys/fs/cgroup/pids{cgroup}")
    assert not [f for f in os.listdir(img) if f.startswith("restore-")]
    assert not [pid for pid in os.listdir("/proc") if pid.isdigit() and img in _cmdline(pid)]


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.parametrize("command", ["checkpoint", "restore"])
def test_every_flag_of_runcs_is_taken(runc, ours, command):
    # runc 1.1's checkpoint and restore flags, from its --help: each one is ours too
    # (and has a help line: test_runtime_help.py).
    theirs = set(re.findall(r"^\s+(--[a-z-]+)", runc(command, "--help").stdout, re.M))
    mine = set(re.findall(r"(--[a-z-]+)", ours(command, "--help").stdout))
    assert len(theirs) > 10
    assert theirs - mine == set()


@pytest.mark.parametrize("port", ["99999", "0", "x", "-1", ""])
def test_page_server_port_out_of_range_is_a_usage_error(ours, bundle, tmp_path, port):
    # runc 1.1.5 parses the port as any int32 and leaves 99999 to criu; ours refuses
    # it before criu runs, with the flag's form.
    cid = ours.new_id()
    ours("run", "-d", "--bundle", bundle.write(["sleep", "60"]), cid)
    p = ours("checkpoint", "--page-server", f"127.0.0.1:{port}", "--image-path",
             str(tmp_path / "img"), cid, check=False)  # fmt: skip
    assert p.returncode == 2, p.stderr
    assert "--page-server ADDRESS:PORT" in p.stderr and "1 to 65535" in p.stderr
    assert not (tmp_path / "img").exists()
    assert ours.state(cid)["status"] == "running"


def _answer(tmp_path, request: bytes, hook_args: list[str]):
    """What restore's action-script channel makes of ``request`` (what criu's script
    writes at setup-namespaces), with a prestart hook of ``hook_args``: its reply, error."""
    from ocibox.runtime import checkpoint as ck

    config = {"hooks": {"prestart": [{"path": "/bin/true", "args": hook_args}]}}
    channel = ck._ActionScript(str(tmp_path), str(tmp_path), "x", ck._restore_hooks("x", str(tmp_path), config))
    try:
        os.write(channel._req_w, request)
        channel.answer()
        return os.read(channel._rep_r, 64), channel.error, channel.ran
    finally:
        channel.close()


def test_a_hooks_valueerror_is_its_own_not_a_missing_pid(tmp_path):
    # subprocess refuses an argument with a NUL byte with a ValueError: the hook's
    # failure, not criu's script giving no pid.
    reply, error, ran = _answer(tmp_path, b"1234\n", ["tr\0ue"])
    assert reply == b"failed\n" and ran
    assert "no pid" not in str(error) and "null" in str(error)
    reply, error, ran = _answer(tmp_path, b"x\n", ["true"])
    assert reply == b"failed\n" and not ran
    assert "criu's setup-namespaces gave no pid ('x')" in str(error)
    assert _answer(tmp_path, b"1234\n", ["true"]) == (b"ok\n", None, True)


_SUBREAPER_AFTER_FAILED_RESTORE = """
import ctypes, os, sys
from ocibox.runtime import checkpoint
libc = ctypes.CDLL(None, use_errno=True)
def subreaper():
    v = ctypes.c_int(-1)
    assert libc.prctl(37, ctypes.byref(v), 0, 0, 0) == 0  # PR_GET_CHILD_SUBREAPER
    return v.value
if sys.argv[4] == "1":
    libc.prctl(36, 1, 0, 0, 0)  # a caller that is a subreaper already stays one
try:
    checkpoint.restore(sys.argv[1], sys.argv[2], sys.argv[3], checkpoint.Options(sys.argv[5]))
except Exception as e:
    print(type(e).__name__, subreaper())
"""


@pytest.mark.skipif(CRIU is None, reason="criu is not installed")
@pytest.mark.parametrize("already", ["0", "1"])
def test_a_failed_restore_leaves_its_caller_as_it_was_no_subreaper(ours, bundle, tmp_path, already):
    # A library caller's restore that fails (criu refusing images that are none; an
    # id that exists) must not leave the caller a child subreaper it was not.
    import sys

    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "inventory.img").write_bytes(b"")
    b = bundle.write(["sleep", "60"])
    taken = ours.new_id()
    ours("create", "--bundle", b, taken)
    for cid in (ours.new_id(), taken):
        p = subprocess.run([sys.executable, "-c", _SUBREAPER_AFTER_FAILED_RESTORE, str(ours.root),
                            cid, b, already, str(tmp_path / "img")],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
        assert p.stdout.split()[-1:] == [already], (p.stdout, p.stderr)
    assert ours.state(taken)["status"] == "created"

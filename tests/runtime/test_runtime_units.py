"""Pieces of the runtime that need no root: parsing, paths, signals, the CLI's surface."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys

import pytest

from ocibox.errors import BundleError, NotImplementedYet, UsageError
from ocibox.runtime import signals
from ocibox.runtime.container import Container, validate_id
from ocibox.runtime.linux import mounts
from ocibox.runtime.linux import syscalls as sc
from ocibox.runtime.spec import default_config

OURS = [sys.executable, "-m", "ocibox.runtime.cli"]


def ours(*args: str, root: str = "/nonexistent-ocibox-root"):
    return subprocess.run([*OURS, "--root", root, *args], capture_output=True, text=True)


@pytest.mark.parametrize(
    "text,num",
    [("KILL", 9), ("SIGKILL", 9), ("kill", 9), ("9", 9), ("TERM", 15), ("SIGUSR1", 10),
     ("RTMIN", 34), ("RTMIN+3", 37), ("RTMAX-1", 63), ("SIGWINCH", 28)],
)  # fmt: skip
def test_signal_names(text, num):
    assert signals.parse(text) == num


@pytest.mark.parametrize("text", ["NOPE", "0", "65", "RTMIN+40", "", "SIG"])
def test_bad_signals(text):
    with pytest.raises(UsageError):
        signals.parse(text)


@pytest.mark.parametrize("cid", ["", ".", "..", "a/b", "x y", "é"])
def test_bad_ids(cid):
    with pytest.raises(UsageError):
        validate_id(cid)


def test_good_ids():
    for cid in ("abc", "a.b-c_d+e", "0123456789abcdef" * 4):
        validate_id(cid)


def test_secure_join_stays_inside(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "abs").symlink_to("/etc")
    (root / "up").symlink_to("../../../../..")
    (root / "loop").symlink_to("loop")
    r = str(root.resolve())
    assert mounts.secure_join(r, "/abs/passwd") == f"{r}/etc/passwd"
    assert mounts.secure_join(r, "/up/etc") == f"{r}/etc"
    assert mounts.secure_join(r, "../../x") == f"{r}/x"
    assert mounts.secure_join(r, "/a/b/../c") == f"{r}/a/c"
    with pytest.raises(BundleError, match="too many levels"):
        mounts.secure_join(r, "/loop/x")


def test_mount_options():
    m = mounts.parse(
        {"destination": "/x", "type": "tmpfs", "source": "t",
         "options": ["nosuid", "ro", "rw", "noexec", "mode=755", "size=1k", "rslave"]}
    )  # fmt: skip
    assert m.flags == sc.MS_NOSUID | sc.MS_NOEXEC
    assert m.data == "mode=755,size=1k"
    assert m.propagation == [sc.MS_SLAVE | sc.MS_REC]
    b = mounts.parse({"destination": "/y", "source": "/tmp", "options": ["rbind", "ro"]})
    assert b.is_bind and b.flags & sc.MS_REC and b.flags & sc.MS_RDONLY
    # config.md: a relative destination (deprecated) is relative to /
    assert mounts.parse({"destination": "rel", "type": "tmpfs"}).destination == "/rel"
    with pytest.raises(BundleError, match="must be a path"):
        mounts.parse({"destination": "", "type": "tmpfs"})
    r = mounts.parse({"destination": "/z", "type": "bind", "options": ["rbind", "rro", "rnoatime"]})
    assert r.recursive == (sc.MOUNT_ATTR_RDONLY | sc.MOUNT_ATTR_NOATIME, sc.MOUNT_ATTR__ATIME)
    assert mounts.parse({"destination": "/z", "type": "bind", "options": ["idmap"]}).idmap == "idmap"
    with pytest.raises(NotImplementedYet):  # idmapped mounts are for bind mounts here
        mounts.parse({"destination": "/z", "type": "tmpfs", "options": ["idmap"]})


def test_state_of_unknown_container(tmp_path):
    p = ours("state", "nosuch", root=str(tmp_path))
    assert p.returncode == 1
    assert p.stderr.strip() == "ocibox-runtime: container nosuch does not exist"


def test_usage_errors(tmp_path):
    for args in (["state"], ["bogus"], ["kill"], ["create", "--nope", "x"], ["state", "a", "b"]):
        p = ours(*args, root=str(tmp_path))
        assert p.returncode == 2, args
        assert "Traceback" not in p.stderr
        assert p.stderr.startswith("ocibox-runtime: ")


def test_checkpoint_of_a_missing_container(tmp_path):
    p = ours("checkpoint", "x", root=str(tmp_path))
    assert p.returncode == 1 and "container x does not exist" in p.stderr


def test_list_empty(tmp_path):
    assert ours("list", "-q", root=str(tmp_path)).stdout == ""
    p = ours("list", "--format", "json", root=str(tmp_path))
    assert json.loads(p.stdout) == []
    assert ours("list", root=str(tmp_path)).stdout.split() == [
        "ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER",
    ]  # fmt: skip


def test_spec_command(tmp_path):
    p = subprocess.run([*OURS, "spec"], cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "config.json").read_text()) == default_config(terminal=True)
    again = subprocess.run(
        [*OURS, "spec", "--bundle", str(tmp_path)], capture_output=True, text=True
    )
    assert again.returncode == 1 and "exists" in again.stderr
    rootless = tmp_path / "rl"
    rootless.mkdir()
    subprocess.run([*OURS, "spec", "--rootless", "-b", str(rootless)], check=True)
    cfg = json.loads((rootless / "config.json").read_text())
    assert {"type": "user"} in cfg["linux"]["namespaces"]


def test_log_file_json(tmp_path):
    log = tmp_path / "log.json"
    p = ours("--log", str(log), "--log-format", "json", "state", "nosuch", root=str(tmp_path))
    assert p.returncode == 1
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["level"] == "error" and "does not exist" in entry["msg"]


def test_hot_paths_import_little(tmp_path):
    """state/start/kill/delete load no ctypes, no process code, nothing from other parts."""
    code = (
        "import sys; from ocibox.runtime import cli; "
        f"cli.main(['--root', {str(tmp_path)!r}, 'state', 'x']); "
        "heavy = ('ctypes', 'ocibox.runtime.process', 'ocibox.runtime.linux', 'click', "
        "'ocibox.image', 'argparse', 'tempfile', 'signal', 'socket', 'typing'); "
        "print(','.join(m for m in sys.modules if m.startswith(heavy)))"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.stdout.strip() == ""


def test_all_skips_unreadable(tmp_path):
    (tmp_path / "junk id").mkdir()
    (tmp_path / "creating").mkdir()
    found = Container.all(str(tmp_path))
    assert [c.id for c in found] == ["creating"]
    # No state and nobody holding the lock: the create that made it died.
    assert found[0].status() == "stopped"
    assert os.path.isdir(tmp_path / "junk id")
    fd = os.open(tmp_path / "creating", os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a create in progress holds it
        assert Container.load(str(tmp_path), "creating").status() == "creating"
    finally:
        os.close(fd)
    Container.load(str(tmp_path), "creating").delete()  # a dead create's leftovers go
    assert not (tmp_path / "creating").exists()


def test_state_version_is_the_spec_version():
    from ocibox.runtime import container, spec

    assert container.OCI_VERSION == spec.OCI_VERSION

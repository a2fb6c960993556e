"""Shared fixtures: peer programs, a busybox rootfs, and the ocibox command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "ls", "cat", "echo", "true", "false", "id", "env", "sleep", "touch", "rm", "mkdir")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "root" in item.keywords and os.geteuid() != 0:
            item.add_marker(pytest.mark.skip(reason="needs root (chown, mknod)"))


def need(program: str) -> str:
    """Path of a peer program, or skip the test saying which is missing."""
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
    if path is None:
        pytest.skip(f"peer program {program!r} is not installed (make peers installs it)")
    return path


def run(args: list[str], **kw) -> subprocess.CompletedProcess:
    """Run a command; on failure the assertion shows its stderr."""
    proc = subprocess.run(args, capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}"
    return proc


def ocibox_cmd(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "ocibox.cli", *args], capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, f"ocibox {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
    return proc


@pytest.fixture
def ocibox():
    return ocibox_cmd


@pytest.fixture
def busybox_rootfs(tmp_path: Path) -> Path:
    """A tiny root filesystem: static busybox with a few applet links and an /etc."""
    if not os.path.exists(BUSYBOX):
        pytest.skip("busybox-static is not installed (make peers installs it)")
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    etc = root / "etc"
    etc.mkdir()
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    for d in ("tmp", "root", "proc", "sys", "dev"):
        (root / d).mkdir()
    (root / "tmp").chmod(0o1777)
    return root

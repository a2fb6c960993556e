"""Fixtures for runtime tests: bundles from busybox, and runc and ocibox-runtime side by side."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from ocibox.runtime.spec import default_config

OURS = [sys.executable, "-m", "ocibox.runtime.cli"]


class Runtime:
    """One runtime program with a private --root, so tests never see each other's containers."""

    def __init__(self, name: str, argv: list[str], root: Path) -> None:
        self.name = name
        self.argv = argv
        self.root = root
        self.made: list[str] = []

    def __call__(self, *args: str, check: bool = True, timeout: float = 30, input=None):
        # Files, not pipes: a created or detached container keeps its stdio open,
        # and a pipe would make us wait for the container to exit.
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.run(
                [*self.argv, "--root", str(self.root), *args],
                stdout=out,
                stderr=err,
                input=input.encode() if input is not None else None,
                stdin=None if input is not None else subprocess.DEVNULL,
                timeout=timeout,
            )
            out.seek(0)
            err.seek(0)
            proc.stdout = out.read().decode(errors="replace")
            proc.stderr = err.read().decode(errors="replace")
        if check:
            assert proc.returncode == 0, (
                f"{self.name} {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
            )
        return proc

    def state(self, cid: str) -> dict:
        return json.loads(self("state", cid).stdout)

    def wait_status(self, cid: str, status: str, timeout: float = 5.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            # The container may not exist yet while a `run` in the background creates it.
            p = self("state", cid, check=time.monotonic() > deadline)
            st = json.loads(p.stdout) if p.returncode == 0 else {}
            if st.get("status") == status or time.monotonic() > deadline:
                return st
            time.sleep(0.02)

    def new_id(self) -> str:
        cid = f"t-{uuid.uuid4().hex[:10]}"
        self.made.append(cid)
        return cid

    def cleanup(self) -> None:
        for cid in self.made:
            subprocess.run([*self.argv, "--root", str(self.root), "delete", "--force", cid],
                           capture_output=True)  # fmt: skip


def _top_conftest():
    import importlib.util

    path = Path(__file__).parent.parent / "conftest.py"
    spec = importlib.util.spec_from_file_location("_ocibox_tests_conftest_rt", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


need = _top_conftest().need


@pytest.fixture
def ours(tmp_path_factory):
    rt = Runtime("ocibox-runtime", OURS, tmp_path_factory.mktemp("ours-root"))
    yield rt
    rt.cleanup()


@pytest.fixture
def runc(tmp_path_factory):
    rt = Runtime("runc", [need("runc")], tmp_path_factory.mktemp("runc-root"))
    yield rt
    rt.cleanup()


@pytest.fixture(params=["runc", "ours"])
def both(request):
    """Each test body runs once per runtime; compare against recorded expectations."""
    return request.getfixturevalue(request.param)


class Bundle:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.config = default_config(terminal=False)

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    def write(self, args: list[str] | None = None, edit=None) -> str:
        if args is not None:
            self.config["process"]["args"] = args
        if edit:
            edit(self.config)
        (self.path / "config.json").write_text(json.dumps(self.config, indent=1))
        return str(self.path)


@pytest.fixture
def bundle(busybox_rootfs: Path) -> Bundle:
    # busybox_rootfs is <tmp_path>/rootfs: the bundle is its parent.
    for applet in (
        "hostname",
        "grep",
        "ps",
        "cut",
        "stat",
        "head",
        "wc",
        "sort",
        "readlink",
        "tty",
        "stty",
    ):
        link = busybox_rootfs / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    return Bundle(busybox_rootfs.parent)

"""Fixtures for client and copy tests: registries on free loopback ports, test images.

``ocibox_registry`` is ocibox's own server in a subprocess; ``docker_registry``
is Debian's docker-registry (distribution 2.8) started by hand from a config
file (never its system service). Both listen on 127.0.0.1 with plain HTTP.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("_ocibox_tests_root_dist", Path(__file__).parents[1] / "conftest.py")
_root = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_root)
need = _root.need
run = _root.run
ocibox_cmd = _root.ocibox_cmd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}):\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port}:\n{log.read_text()}")


@dataclass
class Server:
    name: str
    port: int
    root: Path
    proc: subprocess.Popen

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def ref(self, path: str) -> str:
        return f"docker://{self.host}/{path}"


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_ocibox_registry(tmp_path: Path, **settings) -> Server:
    """ocibox's registry in a subprocess; ``settings`` go to its JSON config file."""
    import json

    port = free_port()
    root = tmp_path / "ocibox-registry"
    log = tmp_path / "ocibox-registry.log"
    config = tmp_path / "ocibox-registry.json"
    config.write_text(json.dumps({"access_log": "", **settings}))
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ocibox.cli", "registry", "serve", "--config", str(config),
                                 "--addr", f"127.0.0.1:{port}", "--root", str(root)],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc, log)
    except BaseException:
        _stop(proc)
        raise
    return Server("ocibox", port, root, proc)


@pytest.fixture
def ocibox_registry(tmp_path):
    server = start_ocibox_registry(tmp_path)
    try:
        yield server
    finally:
        _stop(server.proc)


DOCKER_REGISTRY_CONFIG = """\
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
{auth}"""


def stop(server: Server) -> None:
    _stop(server.proc)


def start_docker_registry(tmp_path: Path, auth: str = "") -> Server:
    program = need("docker-registry")
    port = free_port()
    root = tmp_path / "docker-registry"
    config = tmp_path / "docker-registry.yml"
    config.write_text(DOCKER_REGISTRY_CONFIG.format(root=root, port=port, auth=auth))
    log = tmp_path / "docker-registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([program, "serve", str(config)], stdout=out, stderr=subprocess.STDOUT)
    wait_port(port, proc, log)
    return Server("docker-registry", port, root, proc)


@pytest.fixture
def docker_registry(tmp_path):
    server = start_docker_registry(tmp_path)
    try:
        yield server
    finally:
        _stop(server.proc)


@pytest.fixture(params=["ocibox", "docker-registry"])
def any_registry(request, tmp_path):
    if request.param == "ocibox":
        yield request.getfixturevalue("ocibox_registry")
    else:
        yield request.getfixturevalue("docker_registry")


@pytest.fixture
def image_layout(tmp_path, busybox_rootfs) -> Path:
    """An OCI layout with one busybox image tagged v1 (two layers, OCI gzip)."""
    from ocibox.image.layout import Layout
    from ocibox.image.mutate import import_rootfs

    path = tmp_path / "src-layout"
    layout = Layout.init(str(path))
    import_rootfs(layout, "v1", str(busybox_rootfs))
    extra = tmp_path / "extra"
    (extra / "etc").mkdir(parents=True)
    (extra / "etc" / "motd").write_text("hello from ocibox\n")
    import_rootfs(layout, "v1", str(extra))
    return path


@pytest.fixture
def no_auth_files(tmp_path, monkeypatch):
    """Keep the user's real credential files out of the tests."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    return tmp_path / "home"

"""podman interop: a docker-archive written by ocibox loads with ``podman load`` and runs;
archives written by ``podman save`` (docker-archive and oci-archive) are read by ocibox."""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from conftest import need, ocibox_cmd, run
from ocibox.image.layout import Layout

pytestmark = pytest.mark.peer


@pytest.fixture
def podman():
    program = need("podman")
    if os.geteuid() != 0:
        pytest.skip("podman interop runs as root here (rootless storage is not set up)")
    name = f"localhost/ocibox-test-{uuid.uuid4().hex[:8]}:v1"
    yield program, name
    subprocess.run([program, "rmi", "-f", name], capture_output=True)


def test_podman_load_runs_our_archive_and_we_read_podman_save(image_layout, tmp_path, podman, no_auth_files):
    program, name = podman
    archive = tmp_path / "ours.tar"
    ocibox_cmd("copy", "-q", f"oci:{image_layout}:v1", f"docker-archive:{archive}:{name}")
    loaded = run([program, "load", "-i", str(archive)], timeout=120)
    assert name in loaded.stdout
    out = run([program, "run", "--rm", "--runtime", "runc", name, "/bin/cat", "/etc/motd"], timeout=120)
    assert out.stdout == "hello from ocibox\n"
    src = Layout.open(str(image_layout)).image("v1")
    for fmt in ("oci-archive", "docker-archive"):
        saved = tmp_path / f"podman-{fmt}.tar"
        run([program, "save", "--format", fmt, "-o", str(saved), name], timeout=120)
        ocibox_cmd("copy", "-q", f"{fmt}:{saved}", f"oci:{tmp_path}/from-{fmt}:v1")
        got = Layout.open(str(tmp_path / f"from-{fmt}")).image("v1")
        assert got.config.diff_ids == src.config.diff_ids

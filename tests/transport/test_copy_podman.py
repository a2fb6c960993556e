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


def test_additional_tags_in_docker_archive_podman_loads_all(image_layout, tmp_path, podman, no_auth_files):
    import json
    import tarfile

    program, name = podman
    extra = [name.replace(":v1", ":v2"), f"localhost/ocibox-extra-{uuid.uuid4().hex[:8]}:latest"]
    archive = tmp_path / "tags.tar"
    ocibox_cmd("copy", "-q", "--additional-tag", extra[0], "--additional-tag", extra[1],
               f"oci:{image_layout}:v1", f"docker-archive:{archive}:{name}")
    with tarfile.open(archive) as tf:
        assert json.load(tf.extractfile("manifest.json"))[0]["RepoTags"] == [name, *extra]
    try:
        loaded = run([program, "load", "-i", str(archive)], timeout=120).stdout
        listed = run([program, "images", "--format", "{{.Repository}}:{{.Tag}}"], timeout=60).stdout.split()
        for tag in (name, *extra):
            assert tag in loaded and tag in listed, (tag, loaded, listed)
        ids = {run([program, "image", "inspect", "--format", "{{.Id}}", t]).stdout for t in (name, *extra)}
        assert len(ids) == 1  # one image, three names
    finally:
        subprocess.run([program, "rmi", "-f", *extra], capture_output=True)


def test_additional_tag_elsewhere_is_refused(image_layout, tmp_path):
    proc = ocibox_cmd("copy", "--additional-tag", "a/b:c", f"oci:{image_layout}:v1", f"oci:{tmp_path}/o:v1",
                      check=False)
    assert proc.returncode != 0 and "docker-archive: destinations only" in proc.stderr
    proc = ocibox_cmd("copy", "--additional-tag", "a/b@sha256:" + "0" * 64, f"oci:{image_layout}:v1",
                      f"docker-archive:{tmp_path}/d.tar", check=False)
    assert proc.returncode != 0 and "not by digest" in proc.stderr and "Traceback" not in proc.stderr
    # no primary name: the additional tags alone; familiar names, as docker save writes them
    ocibox_cmd("copy", "-q", "--additional-tag", "docker.io/library/busybox:x", f"oci:{image_layout}:v1",
               f"docker-archive:{tmp_path}/e.tar")
    import json
    import tarfile

    with tarfile.open(tmp_path / "e.tar") as tf:
        assert json.load(tf.extractfile("manifest.json"))[0]["RepoTags"] == ["busybox:x"]

"""ocibox sync: repositories between registries and directories, copying only what is missing."""

from __future__ import annotations

import json

import pytest

from conftest import need, ocibox_cmd, run

pytestmark = pytest.mark.peer


def _push_tags(image_layout, server, repo, tags):
    for t in tags:
        ocibox_cmd("copy", "-q", f"oci:{image_layout}:v1", server.ref(f"{repo}:{t}"))


def test_registry_to_registry_then_up_to_date(image_layout, ocibox_registry, docker_registry, no_auth_files):
    _push_tags(image_layout, ocibox_registry, "src/app", ["a", "b", "c"])
    first = ocibox_cmd("sync", "--src", "docker", "--dest", "docker",
                       f"{ocibox_registry.host}/src/app", f"{docker_registry.host}/mirror")
    assert "3 copied" in first.stderr
    tags = json.loads(ocibox_cmd("list-tags", docker_registry.ref("mirror/app")).stdout)["Tags"]
    assert sorted(tags) == ["a", "b", "c"]
    _push_tags(image_layout, ocibox_registry, "src/app", ["d"])
    second = ocibox_cmd("sync", "--src", "docker", "--dest", "docker",
                        f"{ocibox_registry.host}/src/app", f"{docker_registry.host}/mirror")
    assert "1 copied, 3 up to date" in second.stderr
    scoped = ocibox_cmd("sync", "-q", "--scoped", "--src", "docker", "--dest", "docker",
                        f"{ocibox_registry.host}/src/app:a", f"{docker_registry.host}/s")
    assert scoped.stderr == ""
    tags = json.loads(ocibox_cmd("list-tags", docker_registry.ref("s/src/app")).stdout)["Tags"]
    assert tags == ["a"]


def test_registry_to_dir_and_back_and_skopeo_reads(image_layout, ocibox_registry, tmp_path, no_auth_files):
    _push_tags(image_layout, ocibox_registry, "src/app", ["a", "b"])
    ocibox_cmd("sync", "--src", "docker", "--dest", "dir", f"{ocibox_registry.host}/src/app", str(tmp_path / "d"))
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["app:a", "app:b"]
    again = ocibox_cmd("sync", "--src", "docker", "--dest", "dir", f"{ocibox_registry.host}/src/app",
                       str(tmp_path / "d"))
    assert "0 copied, 2 up to date" in again.stderr
    skopeo = need("skopeo")
    run([skopeo, "copy", "-q", f"dir:{tmp_path}/d/app:a", f"oci:{tmp_path}/sk:v1"])
    back = ocibox_cmd("sync", "--src", "dir", "--dest", "docker", str(tmp_path / "d"),
                      f"{ocibox_registry.host}/back")
    assert "2 copied" in back.stderr


def test_yaml_source(image_layout, ocibox_registry, docker_registry, tmp_path, no_auth_files):
    _push_tags(image_layout, ocibox_registry, "src/app", ["1.0", "1.1", "2.0"])
    _push_tags(image_layout, ocibox_registry, "src/other", ["x"])
    spec = tmp_path / "sync.yml"
    spec.write_text(f"""
{ocibox_registry.host}:
  tls-verify: false
  images:
    src/other: []
  images-by-tag-regex:
    src/app: ^1\\.
""")
    out = ocibox_cmd("sync", "--src", "yaml", "--dest", "docker", str(spec), f"{docker_registry.host}/y")
    assert "3 copied" in out.stderr
    tags = json.loads(ocibox_cmd("list-tags", docker_registry.ref("y/app")).stdout)["Tags"]
    assert sorted(tags) == ["1.0", "1.1"]


def test_bad_sync_arguments(tmp_path):
    proc = ocibox_cmd("sync", "--src", "dir", "--dest", "docker", str(tmp_path / "none"), "localhost:1/x",
                      check=False)
    assert proc.returncode != 0 and "no such directory" in proc.stderr and "Traceback" not in proc.stderr

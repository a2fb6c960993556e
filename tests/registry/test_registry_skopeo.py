"""Interop with skopeo: push OCI and Docker images, a multi-arch index and an artifact, pull them back.

The test images are built by hand into an OCI layout (gzip tars made with
tarfile, JSON via ocibox.image.models) so that these tests depend only on
the layout store, not on the layer tooling.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from conftest import need, run
from ocibox import mediatypes as mt
from ocibox.image.layout import Layout
from ocibox.image.models import Descriptor, ImageConfig, Index, Manifest, Platform

pytestmark = pytest.mark.peer


def _layer(files: dict[str, bytes]) -> tuple[bytes, str]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    plain = raw.getvalue()
    return gzip.compress(plain, mtime=0), "sha256:" + hashlib.sha256(plain).hexdigest()


def add_image(layout: Layout, *, layers: int = 3, arch: str = "amd64", seed: str = "",
              tag: str | None = None) -> Descriptor:
    config = ImageConfig.new(Platform(architecture=arch, os="linux"), created="2024-01-01T00:00:00Z")
    descs = []
    for i in range(layers):
        blob, diff_id = _layer({f"file{i}.txt": f"{seed} layer {i}\n".encode() * 1000,
                                f"rand{i}": os.urandom(50_000)})
        digest, size = layout.blobs.put(blob)
        descs.append(Descriptor(mt.OCI_LAYER_GZIP, digest, size))
        config.data["rootfs"]["diff_ids"].append(diff_id)
    cdesc = layout.put_json(mt.OCI_CONFIG, config.to_json())
    manifest = Manifest(config=cdesc, layers=tuple(descs))
    desc = layout.put_json(mt.OCI_MANIFEST, manifest.to_json())
    if tag:
        layout.tag(tag, desc)
    return desc


@pytest.fixture
def skopeo():
    return need("skopeo")


@pytest.fixture
def source(tmp_path) -> Layout:
    layout = Layout.init(str(tmp_path / "src"))
    add_image(layout, tag="v1")
    amd = add_image(layout, layers=1, arch="amd64", seed="amd")
    arm = add_image(layout, layers=1, arch="arm64", seed="arm")
    index = Index(manifests=(Descriptor(amd.media_type, amd.digest, amd.size, platform=Platform("amd64", "linux")),
                             Descriptor(arm.media_type, arm.digest, arm.size, platform=Platform("arm64", "linux"))))
    layout.tag("multi", layout.put_json(mt.OCI_INDEX, index.to_json()))
    return layout


def _copy(skopeo: str, src: str, dst: str, *extra: str) -> None:
    run([skopeo, "--insecure-policy", "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
         *extra, src, dst])


def _tagged_digest(path: Path, tag: str) -> str:
    return Layout.open(str(path)).resolve(tag).digest


def test_skopeo_push_pull_oci(skopeo, source, server, tmp_path):
    registry = f"127.0.0.1:{server.port}"
    _copy(skopeo, f"oci:{source.path}:v1", f"docker://{registry}/test/image:v1")
    want = source.resolve("v1").digest
    r = server.client.request("HEAD", "/v2/test/image/manifests/v1")
    assert r.status == 200 and r.headers["Docker-Content-Digest"] == want
    _copy(skopeo, f"docker://{registry}/test/image:v1", f"oci:{tmp_path / 'back'}:v1")
    assert _tagged_digest(tmp_path / "back", "v1") == want
    raw = run([skopeo, "inspect", "--tls-verify=false", "--raw", f"docker://{registry}/test/image:v1"]).stdout
    assert hashlib.sha256(raw.encode()).hexdigest() == want.split(":")[1]
    tags = json.loads(run([skopeo, "list-tags", "--tls-verify=false", f"docker://{registry}/test/image"]).stdout)
    assert tags["Tags"] == ["v1"]


def test_skopeo_multi_arch_index(skopeo, source, server, tmp_path):
    registry = f"127.0.0.1:{server.port}"
    _copy(skopeo, f"oci:{source.path}:multi", f"docker://{registry}/test/multi:latest", "--all")
    want = source.resolve("multi").digest
    r = server.client.request("GET", "/v2/test/multi/manifests/latest")
    assert r.headers["Content-Type"] == mt.OCI_INDEX
    assert r.headers["Docker-Content-Digest"] == want
    _copy(skopeo, f"docker://{registry}/test/multi:latest", f"oci:{tmp_path / 'back'}:multi", "--all")
    assert _tagged_digest(tmp_path / "back", "multi") == want


def test_skopeo_docker_format(skopeo, source, server, tmp_path):
    registry = f"127.0.0.1:{server.port}"
    _copy(skopeo, f"oci:{source.path}:v1", f"docker://{registry}/test/docker:v1", "--format", "v2s2")
    r = server.client.request("GET", "/v2/test/docker/manifests/v1")
    assert r.status == 200 and r.headers["Content-Type"] == mt.DOCKER_MANIFEST
    digest = r.headers["Docker-Content-Digest"]
    _copy(skopeo, f"docker://{registry}/test/docker:v1", f"dir:{tmp_path / 'dir'}")
    pulled = (tmp_path / "dir" / "manifest.json").read_bytes()
    assert pulled == r.body and "sha256:" + hashlib.sha256(pulled).hexdigest() == digest
    # cross-repository: a second push of the same layers mounts or skips them
    _copy(skopeo, f"docker://{registry}/test/docker:v1", f"docker://{registry}/other/docker:v1")
    r2 = server.client.request("HEAD", "/v2/other/docker/manifests/v1")
    assert r2.headers["Docker-Content-Digest"] == digest


def test_skopeo_artifact_with_subject(skopeo, source, server, tmp_path):
    registry = f"127.0.0.1:{server.port}"
    _copy(skopeo, f"oci:{source.path}:v1", f"docker://{registry}/test/art:v1")
    subject = source.resolve("v1")
    empty = source.put_json(mt.OCI_EMPTY, mt.EMPTY_JSON)
    blob = b"signature bytes"
    digest, size = source.blobs.put(blob)
    art = Manifest(config=empty, layers=(Descriptor("application/vnd.example.sig", digest, size),),
                   artifact_type="application/vnd.example.sig",
                   subject=Descriptor(subject.media_type, subject.digest, subject.size))
    desc = source.put_json(mt.OCI_MANIFEST, art.to_json())
    source.tag("sig", desc)
    _copy(skopeo, f"oci:{source.path}:sig", f"docker://{registry}/test/art:sig")
    r = server.client.request("GET", f"/v2/test/art/referrers/{subject.digest}")
    assert [d["digest"] for d in r.json()["manifests"]] == [desc.digest]
    assert r.json()["manifests"][0]["artifactType"] == "application/vnd.example.sig"


@pytest.fixture
def docker_registry(tmp_path):
    """Debian's docker-registry (distribution 2.8) on a free loopback port."""
    import socket
    import subprocess
    import time
    import urllib.request

    program = need("docker-registry")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "distribution.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                      f"    rootdirectory: {tmp_path / 'distribution'}\n  delete:\n    enabled: true\n"
                      f"http:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen([program, "serve", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        else:
            pytest.fail("docker-registry did not start: " + proc.stderr.read1().decode())
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_round_trip_through_docker_registry(skopeo, source, server, docker_registry, tmp_path):
    ours = f"127.0.0.1:{server.port}"
    for tag, extra in (("v1", ()), ("multi", ("--all",))):
        want = source.resolve(tag).digest
        _copy(skopeo, f"oci:{source.path}:{tag}", f"docker://{ours}/from/layout:{tag}", *extra)
        _copy(skopeo, f"docker://{ours}/from/layout:{tag}", f"docker://{docker_registry}/peer/copy:{tag}", *extra)
        _copy(skopeo, f"docker://{docker_registry}/peer/copy:{tag}", f"docker://{ours}/back/again:{tag}", *extra)
        r = server.client.request("HEAD", f"/v2/back/again/manifests/{tag}")
        assert r.status == 200 and r.headers["Docker-Content-Digest"] == want
        raw = run([skopeo, "inspect", "--tls-verify=false", "--raw",
                   f"docker://{docker_registry}/peer/copy:{tag}"]).stdout
        assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == want

"""A misbehaving registry: dropped connections, wrong bytes, bad credentials,
unknown media types, 503s. Each failure is one clear line and a non-zero exit;
nothing appears at the destination."""

from __future__ import annotations

import json

import pytest
from fake_registry import FakeRegistry

from conftest import ocibox_cmd
from ocibox.image.layout import Layout


def _copy(fake: FakeRegistry, dest, *extra: str):
    return ocibox_cmd("copy", "-q", *extra, f"docker://{fake.host}/test/app:v1", f"oci:{dest}:v1",
                      check=False)


def _one_line(proc) -> str:
    lines = [x for x in proc.stderr.splitlines() if not x.startswith("  hint:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def _same_image(src, dest) -> None:
    a, b = Layout.open(str(src)), Layout.open(str(dest))
    assert a.resolve("v1").digest == b.resolve("v1").digest
    for d in a.reachable():
        assert b.blobs.read(d) == a.blobs.read(d)


def test_dropped_connection_resumes_with_range(image_layout, tmp_path, no_auth_files):
    dest = tmp_path / "dest"
    with FakeRegistry(str(image_layout), faults={"drop"}) as fake:
        proc = _copy(fake, dest)
    assert proc.returncode == 0, proc.stderr
    _same_image(image_layout, dest)
    ranged = [r for (m, p, r) in fake.log if m == "GET" and "/blobs/" in p and r]
    assert ranged, "the copy should have resumed with a Range request"


def test_dropped_connection_without_range_support(image_layout, tmp_path, no_auth_files):
    dest = tmp_path / "dest"
    with FakeRegistry(str(image_layout), faults={"drop", "norange"}) as fake:
        proc = _copy(fake, dest)
    # every full GET drops half-way, so a server ignoring Range never delivers: clear failure
    assert proc.returncode != 0
    assert "download failed" in _one_line(proc)
    assert not dest.exists()


def test_wrong_bytes_detected_nothing_written(image_layout, tmp_path, no_auth_files):
    dest = tmp_path / "dest"
    with FakeRegistry(str(image_layout), faults={"wrong"}) as fake:
        proc = _copy(fake, dest)
    assert proc.returncode != 0
    line = _one_line(proc)
    assert "digest mismatch" in line and "sha256:" in line
    assert not dest.exists()


def test_wrong_bytes_into_existing_layout_leave_no_tag(image_layout, tmp_path, no_auth_files):
    dest = tmp_path / "dest"
    Layout.init(str(dest))
    with FakeRegistry(str(image_layout), faults={"wrong"}) as fake:
        proc = _copy(fake, dest)
    assert proc.returncode != 0
    assert Layout.open(str(dest)).refs() == []
    assert list(Layout.open(str(dest)).blobs.temporaries()) == []


def test_bad_basic_credentials(image_layout, tmp_path, no_auth_files):
    with FakeRegistry(str(image_layout), faults={"basic"}) as fake:
        proc = _copy(fake, tmp_path / "dest", "--src-creds", "user:wrong")
        assert proc.returncode != 0
        assert "unauthorized as 'user'" in _one_line(proc)
        ok = _copy(fake, tmp_path / "dest2", "--src-creds", "user:secret")
        assert ok.returncode == 0, ok.stderr
        missing = _copy(fake, tmp_path / "dest3")
        assert "needs credentials" in _one_line(missing)


def test_bearer_token_flow_and_bad_credentials(image_layout, tmp_path, no_auth_files):
    with FakeRegistry(str(image_layout), faults={"bearer"}) as fake:
        bad = _copy(fake, tmp_path / "dest", "--src-creds", "user:wrong")
        assert bad.returncode != 0
        assert "authentication failed for user 'user'" in _one_line(bad)
        ok = _copy(fake, tmp_path / "dest2", "--src-creds", "user:secret")
        assert ok.returncode == 0, ok.stderr
    assert ["repository:test/app:pull"] in fake.tokens_issued
    # one token for the whole copy: it is cached per scope
    assert fake.tokens_issued.count(["repository:test/app:pull"]) == 2  # one failed, one good


def test_credentials_from_auth_json(image_layout, tmp_path, no_auth_files, monkeypatch):
    import base64

    with FakeRegistry(str(image_layout), faults={"bearer"}) as fake:
        auth = tmp_path / "auth.json"
        auth.write_text(json.dumps({"auths": {fake.host: {
            "auth": base64.b64encode(b"user:secret").decode()}}}))
        monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth))
        proc = _copy(fake, tmp_path / "dest")
        assert proc.returncode == 0, proc.stderr


def test_unknown_media_type(image_layout, tmp_path, no_auth_files):
    with FakeRegistry(str(image_layout), faults={"mediatype"}) as fake:
        proc = _copy(fake, tmp_path / "dest")
    assert proc.returncode != 0
    assert "unsupported manifest media type 'application/vnd.example.unknown+json'" in _one_line(proc)


@pytest.mark.parametrize("fault", ["flaky", "ratelimit"])
def test_503_and_429_retried(image_layout, tmp_path, no_auth_files, fault):
    dest = tmp_path / "dest"
    with FakeRegistry(str(image_layout), faults={fault}) as fake:
        proc = _copy(fake, dest)
    assert proc.returncode == 0, proc.stderr
    _same_image(image_layout, dest)


def test_retries_give_up_with_one_line(image_layout, tmp_path, no_auth_files):
    with FakeRegistry(str(image_layout), faults={"flaky"}) as fake:
        proc = _copy(fake, tmp_path / "dest", "--retry-times", "1")
    assert proc.returncode != 0
    assert "503" in _one_line(proc)


def test_missing_tag(image_layout, tmp_path, no_auth_files):
    with FakeRegistry(str(image_layout)) as fake:
        proc = ocibox_cmd("copy", f"docker://{fake.host}/test/app:nope", f"oci:{tmp_path}/d:v1",
                          check=False)
    assert proc.returncode != 0
    assert "manifest unknown" in [x for x in proc.stderr.splitlines() if x.startswith("ocibox:")][0]


def test_unreachable_registry(tmp_path, no_auth_files):
    from conftest import free_port

    proc = ocibox_cmd("copy", "-q", f"docker://127.0.0.1:{free_port()}/a:b", f"oci:{tmp_path}/d", check=False)
    assert proc.returncode != 0
    assert "unreachable" in _one_line(proc)


@pytest.mark.parametrize("text", ["docker://UPPER/Case", "oci", "nothing:x", "docker:/x"])
def test_bad_locations(text, tmp_path):
    proc = ocibox_cmd("copy", text, f"oci:{tmp_path}/d", check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("ocibox: ")


def test_credentials_never_sent_to_another_host(image_layout, no_auth_files):
    """A tag page link to another host is followed without the registry's token."""
    import asyncio

    from ocibox.distribution.auth import Credentials
    from ocibox.distribution.client import Options, Registry

    with FakeRegistry(str(image_layout)) as other, \
            FakeRegistry(str(image_layout), faults={"bearer"}) as fake:
        fake.next_link = f"http://{other.host}/v2/test/app/tags/list?last=v1"

        async def go():
            async with Registry(fake.host, Options(creds=Credentials("user", "secret"))) as reg:
                return await reg.list_tags("test/app")

        assert asyncio.run(go()) == ["v1", "other"]
    assert "Bearer good-token" in fake.auth_seen
    assert other.auth_seen and not any(other.auth_seen)


def test_docker_archive_link_loop(tmp_path, no_auth_files):
    import io
    import tarfile

    archive = tmp_path / "loop.tar"
    with tarfile.open(archive, "w") as tf:
        body = json.dumps([{"Config": "c.json", "RepoTags": [], "Layers": []}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(body)
        tf.addfile(info, io.BytesIO(body))
        link = tarfile.TarInfo("c.json")
        link.type = tarfile.SYMTYPE
        link.linkname = "c.json"
        tf.addfile(link)
    proc = ocibox_cmd("copy", f"docker-archive:{archive}", f"oci:{tmp_path}/out", check=False)
    assert "too many levels of links" in _one_line(proc)


@pytest.mark.peer
def test_registry_to_registry_faults(image_layout, ocibox_registry, no_auth_files):
    """Between registries: a dropped source connection resumes inside the upload stream;
    wrong source bytes are refused by the destination and nothing is tagged there."""
    src_digest = Layout.open(str(image_layout)).resolve("v1").digest
    with FakeRegistry(str(image_layout), faults={"drop"}) as fake:
        proc = ocibox_cmd("copy", "-q", f"docker://{fake.host}/test/app:v1", ocibox_registry.ref("r/app:v1"),
                          check=False)
    assert proc.returncode == 0, proc.stderr
    inspected = json.loads(ocibox_cmd("inspect", ocibox_registry.ref("r/app:v1")).stdout)
    assert inspected["Digest"] == src_digest
    with FakeRegistry(str(image_layout), faults={"wrong"}) as fake:
        proc = ocibox_cmd("copy", "-q", f"docker://{fake.host}/test/app:v1", ocibox_registry.ref("w/app:v1"),
                          check=False)
    assert "digest mismatch" in _one_line(proc)
    missing = ocibox_cmd("inspect", ocibox_registry.ref("w/app:v1"), check=False)
    assert missing.returncode != 0 and "manifest unknown" in missing.stderr


@pytest.mark.parametrize("body", [b"{nope", b'[{"RepoTags": []}]', b'{"a": 1}'])
def test_malformed_docker_archive(tmp_path, body):
    import io
    import tarfile

    archive = tmp_path / "bad.tar"
    with tarfile.open(archive, "w") as tf:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(body)
        tf.addfile(info, io.BytesIO(body))
    proc = ocibox_cmd("copy", f"docker-archive:{archive}", f"oci:{tmp_path}/out", check=False)
    line = _one_line(proc)
    assert str(archive) in line


def test_malformed_sync_yaml(tmp_path):
    spec = tmp_path / "bad.yml"
    spec.write_text("a: [unclosed\n")
    proc = ocibox_cmd("sync", "--src", "yaml", "--dest", "dir", str(spec), str(tmp_path / "d"), check=False)
    assert "not valid YAML" in _one_line(proc)


def test_registry_token_flag(image_layout, tmp_path, no_auth_files):
    with FakeRegistry(str(image_layout), faults={"bearer"}) as fake:
        ok = _copy(fake, tmp_path / "dest", "--src-registry-token", "good-token")
        assert ok.returncode == 0, ok.stderr
        bad = _copy(fake, tmp_path / "dest2", "--src-registry-token", "stale")
        assert bad.returncode != 0 and "unauthorized" in _one_line(bad)
        both = _copy(fake, tmp_path / "dest3", "--src-registry-token", "t", "--src-creds", "a:b")
        assert "exclude each other" in _one_line(both)
    assert fake.tokens_issued == []  # the token was used as given, never fetched


def test_no_retries_still_answers_challenges(image_layout, tmp_path, no_auth_files):
    with FakeRegistry(str(image_layout), faults={"bearer"}) as fake:
        proc = _copy(fake, tmp_path / "dest", "--retry-times", "0", "--src-creds", "user:secret")
    assert proc.returncode == 0, proc.stderr


def test_https_proxy_env_is_honoured(image_layout, tmp_path, no_auth_files, monkeypatch):
    """A registry reached through HTTP_PROXY: the proxy (here the fake itself, which
    accepts absolute-form request targets) sees the requests."""
    with FakeRegistry(str(image_layout)) as fake:
        monkeypatch.setenv("HTTP_PROXY", f"http://{fake.host}")
        monkeypatch.setenv("NO_PROXY", "")
        proc = ocibox_cmd("copy", "-q", "--src-tls-verify=false", "docker://registry.invalid:5000/test/app:v1",
                          f"oci:{tmp_path}/dest:v1", check=False)
    assert proc.returncode == 0, proc.stderr
    assert any(p.endswith("/manifests/v1") for _, p, _ in fake.log)


def test_blob_redirect_to_storage_host_without_credentials(image_layout, tmp_path, no_auth_files):
    """Blob GETs redirected to another host (object storage) are followed there
    without the registry's bearer token; the copy completes and verifies."""
    dest = tmp_path / "dest"
    with FakeRegistry(str(image_layout)) as storage, \
            FakeRegistry(str(image_layout), faults={"bearer"}) as fake:
        fake.blob_redirect = f"http://{storage.host}"
        proc = _copy(fake, dest, "--src-creds", "user:secret")
    assert proc.returncode == 0, proc.stderr
    _same_image(image_layout, dest)
    assert any("/blobs/" in p for _, p, _ in storage.log)
    assert storage.auth_seen and not any(storage.auth_seen)
    assert "Bearer good-token" in fake.auth_seen

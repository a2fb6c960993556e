"""Storage: restarts resume uploads, the on-disk layout, garbage collection."""

from __future__ import annotations

import json
import os
import time

from conftest import OCI_MANIFEST, sha256
from ocibox.registry.gc import collect_garbage
from ocibox.registry.storage.filesystem import FilesystemDriver
from ocibox.registry.store import blob_path

NAME = "library/demo"


def test_upload_resumes_after_restart(make_server, tmp_path):
    root = str(tmp_path / "reg")
    first = make_server(root=root)
    data = os.urandom(500_000)
    location = first.client.request("POST", f"/v2/{NAME}/blobs/uploads/").headers["Location"]
    r = first.client.request("PATCH", location, data[:200_000], {"Content-Range": "0-199999"})
    assert r.status == 202
    first.stop()

    second = make_server(root=root)  # the hash state is gone; the partial file is re-hashed
    c = second.client
    r = c.request("GET", location)
    assert r.status == 204 and r.headers["Range"] == "0-199999"
    r = c.request("PATCH", location, data[200_000:], {"Content-Range": f"200000-{len(data) - 1}"})
    assert r.status == 202
    r = c.request("PUT", f"{location}?digest={sha256(data)}")
    assert r.status == 201, r.body
    assert c.request("GET", f"/v2/{NAME}/blobs/{sha256(data)}").body == data


def test_pushes_survive_restart(make_server, tmp_path):
    root = str(tmp_path / "reg")
    first = make_server(root=root, durable=True)
    digest, manifest = first.client.push_image(NAME, "v1", layers=3)
    first.stop()
    c = make_server(root=root).client
    r = c.request("GET", f"/v2/{NAME}/manifests/v1")
    assert r.status == 200 and r.body == manifest


def test_sha512_blob(client):
    import hashlib

    data = b"sha512 content"
    digest = "sha512:" + hashlib.sha512(data).hexdigest()
    location = client.request("POST", f"/v2/{NAME}/blobs/uploads/").headers["Location"]
    client.request("PATCH", location, data)
    r = client.request("PUT", f"{location}?digest={digest}")
    assert r.status == 201, r.body
    assert client.request("GET", f"/v2/{NAME}/blobs/{digest}").body == data


def _age(root: str, seconds: float) -> None:
    """Make every file under root look ``seconds`` old."""
    past = time.time() - seconds
    for d, _, files in os.walk(root):
        for f in files:
            os.utime(os.path.join(d, f), (past, past))


def test_gc_keeps_referenced_and_fresh_removes_the_rest(server, client):
    root = server.config.root
    digest, manifest = client.push_image(NAME, "v1", layers=2)
    orphan = client.push_blob(NAME, b"orphan blob, no manifest")
    location = client.request("POST", f"/v2/{NAME}/blobs/uploads/").headers["Location"]
    client.request("PATCH", location, b"stale upload")
    driver = FilesystemDriver(root)

    report = collect_garbage(driver, grace=3600, upload_ttl=86400)
    assert report.blobs_removed == [] and report.uploads_removed == 0  # everything is fresh

    _age(root, 7200)
    fresh = client.push_blob(NAME, b"fresh orphan")
    report = collect_garbage(driver, grace=3600, upload_ttl=3600, dry_run=True)
    assert report.blobs_removed == [orphan]
    assert os.path.exists(driver.local_path(blob_path(orphan)))

    report = collect_garbage(driver, grace=3600, upload_ttl=3600)
    assert report.blobs_removed == [orphan] and report.uploads_removed == 1
    assert client.request("GET", f"/v2/{NAME}/blobs/{orphan}").status == 404
    assert client.request("GET", f"/v2/{NAME}/blobs/{fresh}").status == 200
    assert client.request("GET", location).status == 404
    r = client.request("GET", f"/v2/{NAME}/manifests/v1")
    assert r.status == 200 and r.body == manifest
    for layer in json.loads(manifest)["layers"]:
        assert client.request("HEAD", f"/v2/{NAME}/blobs/{layer['digest']}").status == 200


def test_gc_after_manifest_delete(server, client):
    digest, manifest = client.push_image(NAME, "v1", layers=1)
    layer = json.loads(manifest)["layers"][0]["digest"]
    assert client.request("DELETE", f"/v2/{NAME}/manifests/{digest}").status == 202
    _age(server.config.root, 7200)
    report = collect_garbage(FilesystemDriver(server.config.root), grace=3600)
    assert layer in report.blobs_removed and digest in report.blobs_removed


def test_gc_spares_a_blob_named_by_a_push_during_the_grace_period(server, client):
    """An old blob that a new manifest names is kept: the push touched its link."""
    root = server.config.root
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    old = client.push_blob(NAME, config)
    _age(root, 7200)
    m = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [],
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               "digest": old, "size": len(config)}}).encode()
    assert client.push_manifest(NAME, "new", m).status == 201
    report = collect_garbage(FilesystemDriver(root), grace=3600)
    assert report.blobs_removed == []


def test_gc_removes_stale_temporary_files(server, client):
    root = server.config.root
    client.push_image(NAME, "v1")
    tmp = os.path.join(root, "blobs", "sha256", "00", ".tmp-leftover")
    os.makedirs(os.path.dirname(tmp), exist_ok=True)
    with open(tmp, "wb") as f:
        f.write(b"half")
    _age(root, 7200)
    collect_garbage(FilesystemDriver(root), grace=3600)
    assert not os.path.exists(tmp)
    assert client.request("GET", f"/v2/{NAME}/manifests/v1").status == 200


def test_layout_on_disk(server, client):
    digest, _ = client.push_image(NAME, "v1")
    root = server.config.root
    hexd = digest.split(":")[1]
    assert os.path.isfile(os.path.join(root, "blobs", "sha256", hexd[:2], hexd))
    repo = os.path.join(root, "repositories", *NAME.split("/"))
    with open(os.path.join(repo, "_manifests", "tags", "v1")) as f:
        assert f.read() == digest
    with open(os.path.join(repo, "_manifests", "revisions", "sha256", hexd)) as f:
        assert f.read() == OCI_MANIFEST


def test_gc_on_a_schedule(make_server):
    server = make_server(gc_interval=0.2, gc_grace=3600)
    client = server.client
    client.push_image(NAME, "v1")
    orphan = client.push_blob(NAME, b"old orphan")
    _age(server.config.root, 7200)
    for _ in range(50):
        if client.request("HEAD", f"/v2/{NAME}/blobs/{orphan}").status == 404:
            break
        time.sleep(0.1)
    assert client.request("HEAD", f"/v2/{NAME}/blobs/{orphan}").status == 404
    assert client.request("GET", f"/v2/{NAME}/manifests/v1").status == 200


def test_unknown_endpoint(client):
    r = client.request("GET", "/v2/library/demo/nothing")
    assert r.status == 404 and r.codes == ["UNSUPPORTED"]
    r = client.request("POST", "/v2/library/demo/tags/list")
    assert r.status == 405 and r.codes == ["UNSUPPORTED"]


def test_gc_spares_an_old_upload_finished_now(server, client):
    data = b"written long ago"
    location = client.request("POST", f"/v2/{NAME}/blobs/uploads/").headers["Location"]
    client.request("PATCH", location, data)
    _age(server.config.root, 7200)
    assert client.request("PUT", f"{location}?digest={sha256(data)}").status == 201
    report = collect_garbage(FilesystemDriver(server.config.root), grace=3600)
    assert report.blobs_removed == []


def test_gc_spares_a_manifest_pushed_again(server, client):
    digest, manifest = client.push_image(NAME, "v1")
    assert client.request("DELETE", f"/v2/{NAME}/manifests/{digest}").status == 202
    _age(server.config.root, 7200)
    assert client.push_manifest(NAME, "v1", manifest).status == 201
    # marked through its new revision; the push also touched the bytes, for a gc already past marking
    report = collect_garbage(FilesystemDriver(server.config.root), grace=3600)
    assert report.blobs_removed == []
    assert client.request("GET", f"/v2/{NAME}/manifests/v1").body == manifest

"""Manifests (end-3, end-7, end-9), tags and catalog (end-8a/b), referrers (end-12a/b)."""

from __future__ import annotations

import json
import os

import pytest

from conftest import OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, sha256

NAME = "library/demo"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"


def test_push_and_pull_by_tag_and_digest(client):
    digest, data = client.push_image(NAME, "v1", layers=2)
    for ref in ("v1", digest):
        r = client.request("GET", f"/v2/{NAME}/manifests/{ref}", headers={"Accept": OCI_MANIFEST})
        assert r.status == 200
        assert r.body == data
        assert r.headers["Content-Type"] == OCI_MANIFEST
        assert r.headers["Docker-Content-Digest"] == digest
        r = client.request("HEAD", f"/v2/{NAME}/manifests/{ref}")
        assert r.status == 200 and r.body == b""
        assert r.headers["Content-Length"] == str(len(data))
        assert r.headers["Docker-Content-Digest"] == digest


def test_put_response_headers(client):
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    cd = client.push_blob(NAME, config)
    # odd whitespace and key order: the exact bytes must be kept
    data = (b'{ "schemaVersion" : 2,\n "mediaType": "%s",\n "layers": [],\n'
            b' "config": {"mediaType": "%s", "size": %d, "digest": "%s"} }'
            % (OCI_MANIFEST.encode(), OCI_CONFIG.encode(), len(config), cd.encode()))
    r = client.push_manifest(NAME, "exact", data)
    assert r.status == 201, r.body
    assert r.headers["Docker-Content-Digest"] == sha256(data)
    assert r.headers["Location"] == f"/v2/{NAME}/manifests/{sha256(data)}"
    assert "OCI-Subject" not in r.headers
    assert client.request("GET", f"/v2/{NAME}/manifests/exact").body == data


def test_docker_schema2_and_list(client):
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    cd = client.push_blob(NAME, config)
    layer = client.push_blob(NAME, b"layer")
    m = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
                    "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                               "digest": cd, "size": len(config)},
                    "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                                "digest": layer, "size": 5}]}).encode()
    assert client.push_manifest(NAME, "docker", m, DOCKER_MANIFEST).status == 201
    lst = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": [
        {"mediaType": DOCKER_MANIFEST, "digest": sha256(m), "size": len(m),
         "platform": {"architecture": "amd64", "os": "linux"}}]}).encode()
    assert client.push_manifest(NAME, "list", lst, DOCKER_LIST).status == 201
    r = client.request("GET", f"/v2/{NAME}/manifests/list")
    assert r.headers["Content-Type"] == DOCKER_LIST and r.body == lst
    assert client.request("GET", f"/v2/{NAME}/manifests/docker").headers["Content-Type"] == DOCKER_MANIFEST


def test_oci_index(client):
    d1, m1 = client.push_image(NAME, None, seed="amd64")
    d2, m2 = client.push_image(NAME, None, seed="arm64")
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": d1, "size": len(m1)},
        {"mediaType": OCI_MANIFEST, "digest": d2, "size": len(m2)}]}).encode()
    r = client.push_manifest(NAME, "multi", index, OCI_INDEX)
    assert r.status == 201
    assert client.request("GET", f"/v2/{NAME}/manifests/multi").headers["Content-Type"] == OCI_INDEX


def test_index_child_must_exist(client):
    missing = sha256(b"no such manifest")
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": missing, "size": 10}]}).encode()
    r = client.push_manifest(NAME, "bad", index, OCI_INDEX)
    assert r.status == 400 and r.codes == ["MANIFEST_BLOB_UNKNOWN"]


def test_missing_blobs_each_reported(client):
    a, b = sha256(b"a"), sha256(b"b")
    m = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG, "digest": a, "size": 1},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": b, "size": 1}]}
                   ).encode()
    r = client.push_manifest(NAME, "bad", m)
    assert r.status == 400
    assert r.codes == ["MANIFEST_BLOB_UNKNOWN", "MANIFEST_BLOB_UNKNOWN"]
    assert {e["detail"]["digest"] for e in r.json()["errors"]} == {a, b}
    # a blob of another repository does not count
    client.push_blob("other/repo", b"a")
    client.push_blob("other/repo", b"b")
    assert client.push_manifest(NAME, "bad", m).status == 400
    assert client.request("GET", f"/v2/{NAME}/manifests/bad").status == 404


def test_put_by_digest(client):
    digest, data = client.push_image(NAME, None)
    assert client.request("GET", f"/v2/{NAME}/manifests/{digest}").body == data
    r = client.push_manifest(NAME, sha256(b"something else"), data)
    assert r.status == 400 and r.codes == ["DIGEST_INVALID"]


@pytest.mark.parametrize("body,ctype", [
    (b"not json", OCI_MANIFEST),
    (b"[]", OCI_MANIFEST),
    (b'{"schemaVersion": 2, "mediaType": "%s", "layers": []}' % OCI_MANIFEST.encode(), OCI_MANIFEST),
    (b'{"schemaVersion": 2, "mediaType": "%s", "manifests": []}' % OCI_INDEX.encode(), OCI_MANIFEST),
    (b'{"schemaVersion": 1, "name": "x"}', "application/vnd.docker.distribution.manifest.v1+json"),
])
def test_invalid_manifests(client, body, ctype):
    r = client.push_manifest(NAME, "bad", body, ctype)
    assert r.status == 400 and r.codes == ["MANIFEST_INVALID"]


def test_oversize_manifest(make_server):
    client = make_server(max_manifest_size=1000).client
    body = b'{"schemaVersion":2,"annotations":{"a":"' + b"x" * 2000 + b'"}}'
    r = client.push_manifest(NAME, "big", body)
    assert r.status == 413
    # the default limit accepts 4 MiB manifests (the spec asks for at least that)


def test_default_limit_is_4_mib(server):
    assert server.config.max_manifest_size == 4 << 20


def test_unknown_manifest_and_repo(client):
    client.push_image(NAME, "v1")
    r = client.request("GET", f"/v2/{NAME}/manifests/nope")
    assert r.status == 404 and r.codes == ["MANIFEST_UNKNOWN"]
    r = client.request("HEAD", f"/v2/{NAME}/manifests/{sha256(b'x')}")
    assert r.status == 404
    r = client.request("GET", "/v2/no/such/repo/manifests/latest")
    assert r.status == 404 and r.codes == ["NAME_UNKNOWN"]


@pytest.mark.parametrize("ref", ["-bad", "a" * 129, "sha256:zz", "has%20space"])
def test_invalid_reference(client, ref):
    client.push_image(NAME, "v1")
    r = client.request("GET", f"/v2/{NAME}/manifests/{ref}")
    assert r.status in (400, 404)
    assert r.codes[0] in ("MANIFEST_INVALID", "DIGEST_INVALID", "MANIFEST_UNKNOWN")


def test_delete_tag_and_manifest(client):
    digest, _ = client.push_image(NAME, "v1")
    r = client.request("PUT", f"/v2/{NAME}/manifests/v2",
                       client.request("GET", f"/v2/{NAME}/manifests/v1").body,
                       {"Content-Type": OCI_MANIFEST})
    assert r.status == 201
    assert client.request("DELETE", f"/v2/{NAME}/manifests/v1").status == 202
    assert client.request("GET", f"/v2/{NAME}/manifests/v1").status == 404
    assert client.request("GET", f"/v2/{NAME}/manifests/v2").status == 200
    assert client.request("DELETE", f"/v2/{NAME}/manifests/{digest}").status == 202
    assert client.request("GET", f"/v2/{NAME}/manifests/{digest}").status == 404
    assert client.request("GET", f"/v2/{NAME}/manifests/v2").status == 404
    r = client.request("DELETE", f"/v2/{NAME}/manifests/{digest}")
    assert r.status == 404 and r.codes == ["MANIFEST_UNKNOWN"]


def test_delete_manifest_refused_when_disabled(make_server):
    client = make_server(delete_enabled=False).client
    digest, _ = client.push_image(NAME, "v1")
    for ref in ("v1", digest):
        r = client.request("DELETE", f"/v2/{NAME}/manifests/{ref}")
        assert r.status == 405 and r.codes == ["UNSUPPORTED"]
    assert client.request("GET", f"/v2/{NAME}/manifests/v1").status == 200


# --- tags and catalog --------------------------------------------------------------


def test_tags_list_and_pagination(client):
    digest, data = client.push_image(NAME, "a")
    tags = ["b", "C", "d", "E", "f", "latest", "v1.0"]
    for tag in tags:
        assert client.push_manifest(NAME, tag, data).status == 201
    everything = sorted(["a", *tags], key=lambda t: (t.lower(), t))
    r = client.request("GET", f"/v2/{NAME}/tags/list")
    assert r.json() == {"name": NAME, "tags": everything}
    assert "Link" not in r.headers
    seen, url = [], f"/v2/{NAME}/tags/list?n=3"
    while url:
        r = client.request("GET", url)
        assert r.status == 200
        page = r.json()["tags"]
        assert len(page) <= 3
        seen += page
        link = r.headers.get("Link")
        url = link[1:link.index(">")] if link else None
        if link:
            assert link.endswith('rel="next"')
    assert seen == everything
    r = client.request("GET", f"/v2/{NAME}/tags/list?n=0")
    assert r.json()["tags"] == [] and "Link" not in r.headers
    r = client.request("GET", f"/v2/{NAME}/tags/list?last=d")
    assert r.json()["tags"] == everything[everything.index("d") + 1:]
    r = client.request("GET", f"/v2/{NAME}/tags/list?n=2&last=b")
    assert r.json()["tags"] == everything[2:4]


def test_tags_list_unknown_repo(client):
    r = client.request("GET", "/v2/nothing/here/tags/list")
    assert r.status == 404 and r.codes == ["NAME_UNKNOWN"]


def test_catalog(client):
    for name in ("zeta", "alpha/one", "alpha/two", "mid"):
        client.push_image(name, "latest")
    r = client.request("GET", "/v2/_catalog")
    assert r.json() == {"repositories": ["alpha/one", "alpha/two", "mid", "zeta"]}
    r = client.request("GET", "/v2/_catalog?n=2")
    assert r.json() == {"repositories": ["alpha/one", "alpha/two"]}
    assert r.headers["Link"] == '</v2/_catalog?n=2&last=alpha%2Ftwo>; rel="next"'
    r = client.request("GET", "/v2/_catalog?n=2&last=alpha%2Ftwo")
    assert r.json() == {"repositories": ["mid", "zeta"]}
    assert "Link" not in r.headers


# --- referrers -----------------------------------------------------------------------


def test_referrers(client):
    subject_digest, subject = client.push_image(NAME, "v1")
    subject_desc = {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": len(subject)}
    sbom, _ = client.push_image(NAME, None, seed="sbom", subject=subject_desc,
                                artifact_type="application/vnd.example.sbom.v1",
                                annotations={"org.example.kind": "sbom"})
    sig, _ = client.push_image(NAME, None, seed="sig", subject=subject_desc)
    r = client.request("GET", f"/v2/{NAME}/referrers/{subject_digest}")
    assert r.status == 200
    assert r.headers["Content-Type"] == OCI_INDEX
    assert "OCI-Filters-Applied" not in r.headers
    body = r.json()
    assert body["schemaVersion"] == 2 and body["mediaType"] == OCI_INDEX
    by_digest = {d["digest"]: d for d in body["manifests"]}
    assert set(by_digest) == {sbom, sig}
    assert by_digest[sbom]["artifactType"] == "application/vnd.example.sbom.v1"
    assert by_digest[sbom]["annotations"] == {"org.example.kind": "sbom"}
    assert by_digest[sig]["artifactType"] == OCI_CONFIG  # no artifactType: the config's type
    r = client.request("GET", f"/v2/{NAME}/referrers/{subject_digest}?artifactType=application/vnd.example.sbom.v1")
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    assert [d["digest"] for d in r.json()["manifests"]] == [sbom]
    # deleting a referrer removes it from the list
    assert client.request("DELETE", f"/v2/{NAME}/manifests/{sig}").status == 202
    r = client.request("GET", f"/v2/{NAME}/referrers/{subject_digest}")
    assert [d["digest"] for d in r.json()["manifests"]] == [sbom]


def test_subject_header_and_subject_may_be_missing(client):
    ghost = {"mediaType": OCI_MANIFEST, "digest": sha256(b"not yet pushed"), "size": 14}
    config = b"{}"
    cd = client.push_blob(NAME, config)
    m = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "artifactType": "application/vnd.example.sig",
                    "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": cd, "size": 2},
                    "layers": [], "subject": ghost}).encode()
    r = client.push_manifest(NAME, sha256(m), m)
    assert r.status == 201, r.body
    assert r.headers["OCI-Subject"] == ghost["digest"]
    r = client.request("GET", f"/v2/{NAME}/referrers/{ghost['digest']}")
    assert [d["digest"] for d in r.json()["manifests"]] == [sha256(m)]


def test_referrers_empty_and_invalid(client):
    client.push_image(NAME, "v1")
    r = client.request("GET", f"/v2/{NAME}/referrers/{sha256(b'nothing')}")
    assert r.status == 200 and r.json()["manifests"] == []
    r = client.request("GET", f"/v2/{NAME}/referrers/sha256:short")
    assert r.status == 400


def test_referrers_include_tag_schema_index(client):
    """A client that used the fallback tag keeps its referrers listed."""
    subject_digest, subject = client.push_image(NAME, "v1")
    subject_desc = {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": len(subject)}
    ref_digest, ref = client.push_image(NAME, None, seed="old", subject=subject_desc)
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": ref_digest, "size": len(ref)}]}).encode()
    tag = subject_digest.replace(":", "-")
    assert client.push_manifest(NAME, tag, index, OCI_INDEX).status == 201
    r = client.request("GET", f"/v2/{NAME}/manifests/{tag}")
    assert r.body == index
    r = client.request("GET", f"/v2/{NAME}/referrers/{subject_digest}")
    assert [d["digest"] for d in r.json()["manifests"]] == [ref_digest]


def test_tags_list_skips_writes_in_progress(server, client):
    client.push_image(NAME, "v1")
    tags_dir = os.path.join(server.config.root, "repositories", *NAME.split("/"), "_manifests", "tags")
    with open(os.path.join(tags_dir, ".tmp-abc-v2"), "w") as f:
        f.write("partial")
    assert client.request("GET", f"/v2/{NAME}/tags/list").json()["tags"] == ["v1"]


def test_referrers_of_a_repository_not_yet_pushed(client):
    r = client.request("GET", f"/v2/new/repo/referrers/{sha256(b'x')}")
    assert r.status == 200 and r.json()["manifests"] == []

"""Blobs and uploads, endpoint by endpoint (end-2, end-4a/b, end-5, end-6, end-10, end-11, end-13)."""

from __future__ import annotations

import os

import pytest

from conftest import sha256

NAME = "library/demo"


def test_base_endpoint(client):
    r = client.request("GET", "/v2/")
    assert r.status == 200
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert client.request("GET", "/healthz").status == 200


def test_monolithic_post(client):
    data = os.urandom(100_000)
    digest = sha256(data)
    r = client.request("POST", f"/v2/{NAME}/blobs/uploads/?digest={digest}", data)
    assert r.status == 201
    assert r.headers["Location"] == f"/v2/{NAME}/blobs/{digest}"
    assert r.headers["Docker-Content-Digest"] == digest
    r = client.request("GET", r.headers["Location"])
    assert r.status == 200 and r.body == data
    assert r.headers["Docker-Content-Digest"] == digest
    r = client.request("HEAD", f"/v2/{NAME}/blobs/{digest}")
    assert r.status == 200 and r.body == b""
    assert r.headers["Content-Length"] == str(len(data))
    assert r.headers["Docker-Content-Digest"] == digest


def test_post_then_put(client):
    data = b"post then put"
    r = client.request("POST", f"/v2/{NAME}/blobs/uploads/")
    assert r.status == 202
    location = r.headers["Location"]
    assert r.headers["Docker-Upload-UUID"] in location
    r = client.request("PUT", f"{location}?digest={sha256(data)}", data,
                       {"Content-Type": "application/octet-stream"})
    assert r.status == 201, r.body
    assert client.request("GET", f"/v2/{NAME}/blobs/{sha256(data)}").body == data
    # the session is gone once closed
    assert client.request("GET", location).status == 404


def test_chunked_upload_and_status(client):
    data = os.urandom(300_000)
    location = client.request("POST", f"/v2/{NAME}/blobs/uploads/", b"",
                              {"Content-Length": "0"}).headers["Location"]
    offset = 0
    for size in (100_000, 150_000):
        chunk = data[offset:offset + size]
        r = client.request("PATCH", location, chunk, {
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{offset}-{offset + size - 1}"})
        assert r.status == 202, r.body
        offset += size
        assert r.headers["Range"] == f"0-{offset - 1}"
        location = r.headers["Location"]
    r = client.request("GET", location)
    assert r.status == 204
    assert r.headers["Range"] == f"0-{offset - 1}"
    assert r.headers["Location"] == location
    # final chunk in the closing PUT
    r = client.request("PUT", f"{location}?digest={sha256(data)}", data[offset:],
                       {"Content-Range": f"{offset}-{len(data) - 1}"})
    assert r.status == 201, r.body
    assert client.request("GET", f"/v2/{NAME}/blobs/{sha256(data)}").body == data


def test_chunk_out_of_order_is_416(client):
    location = client.request("POST", f"/v2/{NAME}/blobs/uploads/").headers["Location"]
    assert client.request("PATCH", location, b"abcd", {"Content-Range": "0-3"}).status == 202
    r = client.request("PATCH", location, b"efgh", {"Content-Range": "10-13"})
    assert r.status == 416
    assert r.codes == ["BLOB_UPLOAD_INVALID"]
    assert r.headers["Range"] == "0-3"
    # a repeated first chunk is out of order too
    assert client.request("PATCH", location, b"abcd", {"Content-Range": "0-3"}).status == 416
    r = client.request("GET", location)
    assert r.status == 204 and r.headers["Range"] == "0-3"
    r = client.request("PUT", f"{location}?digest={sha256(b'abcdefgh')}", b"efgh",
                       {"Content-Range": "4-7"})
    assert r.status == 201


def test_streamed_patch_without_content_range(client):
    data = os.urandom(2_000_000)

    def body():
        for i in range(0, len(data), 65536):
            yield data[i:i + 65536]

    location = client.request("POST", f"/v2/{NAME}/blobs/uploads/").headers["Location"]
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", client.port)
    conn.request("PATCH", location, body=body(), headers={"Content-Type": "application/octet-stream"},
                 encode_chunked=True)
    r = conn.getresponse()
    r.read()
    conn.close()
    assert r.status == 202
    assert r.headers["Range"] == f"0-{len(data) - 1}"
    r = client.request("PUT", f"{r.headers['Location']}?digest={sha256(data)}")
    assert r.status == 201
    assert client.request("GET", f"/v2/{NAME}/blobs/{sha256(data)}").body == data


def test_chunk_content_length_must_match_range(client):
    location = client.request("POST", f"/v2/{NAME}/blobs/uploads/").headers["Location"]
    r = client.request("PATCH", location, b"abc", {"Content-Range": "0-9"})
    assert r.status == 400 and r.codes == ["SIZE_INVALID"]
    assert client.request("GET", location).headers["Range"] == "0-0"


def test_wrong_digest(client):
    data = b"some content"
    wrong = sha256(b"other content")
    r = client.request("POST", f"/v2/{NAME}/blobs/uploads/?digest={wrong}", data)
    assert r.status == 400 and r.codes == ["DIGEST_INVALID"]
    assert client.request("HEAD", f"/v2/{NAME}/blobs/{wrong}").status == 404
    assert client.request("HEAD", f"/v2/{NAME}/blobs/{sha256(data)}").status == 404
    location = client.request("POST", f"/v2/{NAME}/blobs/uploads/").headers["Location"]
    r = client.request("PUT", f"{location}?digest={wrong}", data)
    assert r.status == 400 and r.codes == ["DIGEST_INVALID"]
    assert client.request("HEAD", f"/v2/{NAME}/blobs/{wrong}").status == 404


@pytest.mark.parametrize("digest", ["", "sha256:abc", "md5:d41d8cd98f00b204e9800998ecf8427e",
                                    "sha256:" + "A" * 64, "nonsense"])
def test_invalid_digest_on_put(client, digest):
    location = client.request("POST", f"/v2/{NAME}/blobs/uploads/").headers["Location"]
    r = client.request("PUT", f"{location}?digest={digest}", b"x")
    assert r.status == 400 and r.codes == ["DIGEST_INVALID"]


def test_put_without_digest(client):
    location = client.request("POST", f"/v2/{NAME}/blobs/uploads/").headers["Location"]
    r = client.request("PUT", location, b"x")
    assert r.status == 400 and r.codes == ["DIGEST_INVALID"]


def test_short_body_is_not_committed(client):
    data = b"0123456789" * 10
    digest = sha256(data)
    head = (f"POST /v2/{NAME}/blobs/uploads/?digest={digest} HTTP/1.1\r\n"
            f"Host: x\r\nContent-Length: {len(data)}\r\n\r\n").encode()
    client.raw(head + data[:40])
    assert client.request("HEAD", f"/v2/{NAME}/blobs/{digest}").status == 404
    # and a chunk cut short leaves the upload as it was
    location = client.request("POST", f"/v2/{NAME}/blobs/uploads/").headers["Location"]
    head = (f"PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Range: 0-99\r\n"
            f"Content-Length: 100\r\n\r\n").encode()
    client.raw(head + data[:40])
    r = client.request("GET", location)
    assert r.status == 204 and r.headers["Range"] == "0-0"
    r = client.request("PUT", f"{location}?digest={digest}", data, {"Content-Range": "0-99"})
    assert r.status == 201


def test_unknown_upload(client):
    for method in ("GET", "PATCH", "PUT", "DELETE"):
        r = client.request(method, f"/v2/{NAME}/blobs/uploads/3f0b8c56-2d6d-4c0e-9a57-0123456789ab"
                           f"?digest={sha256(b'')}", b"")
        assert r.status == 404 and r.codes == ["BLOB_UPLOAD_UNKNOWN"], method
    r = client.request("GET", f"/v2/{NAME}/blobs/uploads/..%2f..%2fetc")
    assert r.status in (400, 404)


def test_upload_belongs_to_its_repository(client):
    location = client.request("POST", f"/v2/{NAME}/blobs/uploads/").headers["Location"]
    other = location.replace(NAME, "other/repo")
    assert client.request("GET", other).status == 404


def test_cancel_upload(client):
    location = client.request("POST", f"/v2/{NAME}/blobs/uploads/").headers["Location"]
    client.request("PATCH", location, b"abc")
    assert client.request("DELETE", location).status == 204
    assert client.request("GET", location).status == 404


def test_range_requests(client):
    data = bytes(range(256)) * 40
    digest = client.push_blob(NAME, data)
    r = client.request("GET", f"/v2/{NAME}/blobs/{digest}", headers={"Range": "bytes=100-199"})
    assert r.status == 206 and r.body == data[100:200]
    assert r.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    r = client.request("GET", f"/v2/{NAME}/blobs/{digest}", headers={"Range": "bytes=10000-"})
    assert r.status == 206 and r.body == data[10000:]
    r = client.request("GET", f"/v2/{NAME}/blobs/{digest}", headers={"Range": "bytes=999999-"})
    assert r.status == 416


def test_unknown_blob(client):
    digest = sha256(b"never pushed")
    client.push_blob(NAME, b"something")
    for method in ("GET", "HEAD"):
        r = client.request(method, f"/v2/{NAME}/blobs/{digest}")
        assert r.status == 404
    assert client.request("GET", f"/v2/{NAME}/blobs/{digest}").codes == ["BLOB_UNKNOWN"]


def test_blob_is_per_repository(client):
    digest = client.push_blob("team/a", b"shared")
    assert client.request("HEAD", f"/v2/team/b/blobs/{digest}").status == 404


def test_delete_blob(client):
    digest = client.push_blob(NAME, b"to be deleted")
    r = client.request("DELETE", f"/v2/{NAME}/blobs/{digest}")
    assert r.status == 202
    assert client.request("GET", f"/v2/{NAME}/blobs/{digest}").status == 404
    r = client.request("DELETE", f"/v2/{NAME}/blobs/{digest}")
    assert r.status == 404 and r.codes == ["BLOB_UNKNOWN"]


def test_delete_refused_when_disabled(make_server):
    client = make_server(delete_enabled=False).client
    digest = client.push_blob(NAME, b"kept")
    r = client.request("DELETE", f"/v2/{NAME}/blobs/{digest}")
    assert r.status == 405 and r.codes == ["UNSUPPORTED"]
    assert client.request("GET", f"/v2/{NAME}/blobs/{digest}").status == 200


def test_mount_from_another_repository(client):
    digest = client.push_blob("src/repo", b"mount me")
    r = client.request("POST", f"/v2/dst/repo/blobs/uploads/?mount={digest}&from=src/repo")
    assert r.status == 201
    assert r.headers["Location"] == f"/v2/dst/repo/blobs/{digest}"
    assert r.headers["Docker-Content-Digest"] == digest
    assert client.request("GET", f"/v2/dst/repo/blobs/{digest}").body == b"mount me"


def test_mount_falls_back_to_upload(client):
    digest = client.push_blob("src/repo", b"mount me")
    missing = sha256(b"missing")
    r = client.request("POST", f"/v2/dst/repo/blobs/uploads/?mount={missing}&from=src/repo")
    assert r.status == 202 and "/blobs/uploads/" in r.headers["Location"]
    # the blob exists, but not in the named repository
    r = client.request("POST", f"/v2/dst/repo/blobs/uploads/?mount={digest}&from=other/repo")
    assert r.status == 202


def test_mount_without_from(make_server, tmp_path):
    client = make_server().client
    digest = client.push_blob("src/repo", b"anywhere")
    r = client.request("POST", f"/v2/dst/repo/blobs/uploads/?mount={digest}")
    assert r.status == 201
    strict = make_server(root=str(tmp_path / "strict"), mount_without_from=False).client
    digest = strict.push_blob("src/repo", b"anywhere")
    r = strict.request("POST", f"/v2/dst/repo/blobs/uploads/?mount={digest}")
    assert r.status == 202


def test_blob_stored_once(server, client):
    digest = client.push_blob("one/repo", b"dedup")
    client.push_blob("two/repo", b"dedup")
    root = server.config.root
    found = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(root, "blobs")) for f in fs]
    assert len([f for f in found if f.endswith(digest.split(":")[1])]) == 1


@pytest.mark.parametrize("name", ["UPPER/case", "a//b", "-lead", "trail-", "a/../b", "_x", "a" * 256])
def test_invalid_names(client, name):
    r = client.request("POST", f"/v2/{name}/blobs/uploads/")
    assert r.status in (400, 404)
    if r.status == 400:
        assert r.codes == ["NAME_INVALID"]


def test_patch_after_finish_is_unknown(client):
    location = client.request("POST", f"/v2/{NAME}/blobs/uploads/").headers["Location"]
    assert client.request("PUT", f"{location}?digest={sha256(b'done')}", b"done").status == 201
    r = client.request("PATCH", location, b"more")
    assert r.status == 404 and r.codes == ["BLOB_UPLOAD_UNKNOWN"]


def test_blob_and_chunk_limits(make_server):
    client = make_server(max_blob_size=1000, max_chunk_size=600).client
    r = client.request("POST", f"/v2/{NAME}/blobs/uploads/?digest={sha256(b'x' * 700)}", b"x" * 700)
    assert r.status == 413 and r.codes == ["SIZE_INVALID"]
    location = client.request("POST", f"/v2/{NAME}/blobs/uploads/").headers["Location"]
    assert client.request("PATCH", location, b"x" * 500, {"Content-Range": "0-499"}).status == 202
    r = client.request("PATCH", location, b"x" * 501, {"Content-Range": "500-1000"})
    assert r.status == 413
    assert client.request("GET", location).headers["Range"] == "0-499"
    assert client.request("PUT", f"{location}?digest={sha256(b'x' * 1000)}", b"x" * 500,
                          {"Content-Range": "500-999"}).status == 201

"""The same API over the in-memory driver: handlers depend on the driver interface only."""

from __future__ import annotations

import json
import os

import pytest

from conftest import sha256
from ocibox.registry.gc import collect_garbage
from ocibox.registry.storage.memory import MemoryDriver

NAME = "mem/repo"


@pytest.fixture
def memory(make_server):
    driver = MemoryDriver()
    return driver, make_server(driver=driver).client


def test_push_pull_over_memory(memory):
    driver, client = memory
    digest, manifest = client.push_image(NAME, "v1", layers=2)
    r = client.request("GET", f"/v2/{NAME}/manifests/v1")
    assert r.body == manifest
    layer = json.loads(manifest)["layers"][0]
    r = client.request("GET", f"/v2/{NAME}/blobs/{layer['digest']}")
    assert r.status == 200 and sha256(r.body) == layer["digest"]
    r = client.request("HEAD", f"/v2/{NAME}/blobs/{layer['digest']}")
    assert r.status == 200 and r.headers["Content-Length"] == str(layer["size"]) and r.body == b""
    assert client.request("GET", "/v2/_catalog").json() == {"repositories": [NAME]}
    assert client.request("GET", f"/v2/{NAME}/tags/list").json()["tags"] == ["v1"]


def test_streamed_ranges(memory):
    _, client = memory
    data = os.urandom(5000)
    digest = client.push_blob(NAME, data)
    url = f"/v2/{NAME}/blobs/{digest}"
    r = client.request("GET", url, headers={"Range": "bytes=100-199"})
    assert r.status == 206 and r.body == data[100:200]
    assert r.headers["Content-Range"] == "bytes 100-199/5000"
    r = client.request("GET", url, headers={"Range": "bytes=4900-"})
    assert r.status == 206 and r.body == data[4900:]
    r = client.request("GET", url, headers={"Range": "bytes=-10"})
    assert r.status == 206 and r.body == data[-10:]
    assert client.request("GET", url, headers={"Range": "bytes=6000-"}).status == 416


def test_chunked_upload_and_gc_over_memory(memory):
    driver, client = memory
    data = os.urandom(100_000)
    location = client.request("POST", f"/v2/{NAME}/blobs/uploads/").headers["Location"]
    assert client.request("PATCH", location, data[:60_000], {"Content-Range": "0-59999"}).status == 202
    assert client.request("PATCH", location, data[:10], {"Content-Range": "0-9"}).status == 416
    r = client.request("PUT", f"{location}?digest={sha256(data)}", data[60_000:],
                       {"Content-Range": f"60000-{len(data) - 1}"})
    assert r.status == 201
    report = collect_garbage(driver, grace=-1, upload_ttl=-1)  # everything counts as old
    assert report.blobs_removed == [sha256(data)]
    assert client.request("GET", f"/v2/{NAME}/blobs/{sha256(data)}").status == 404

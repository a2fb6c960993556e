"""Blob GET and HEAD: bytes read and written in chunks (ocibox.registry.sending), ranges, ETag."""

from __future__ import annotations

import asyncio
import http.client
import os
import re
import socket
import threading

import pytest
from aiohttp import web

from ocibox.registry import sending

NAME = "library/get"
CHUNK = sending.CHUNK


def blob_file(server, digest: str) -> str:
    hexpart = digest.split(":", 1)[1]
    return os.path.join(server.config.root, "blobs", "sha256", hexpart[:2], hexpart)


def test_whole_blob_over_several_chunks(server):
    client = server.client
    data = os.urandom(3 * CHUNK + 12345)
    digest = client.push_blob(NAME, data)
    r = client.request("GET", f"/v2/{NAME}/blobs/{digest}")
    assert r.status == 200 and r.body == data
    assert r.headers["Content-Length"] == str(len(data))
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.headers["ETag"] == f'"{digest}"'
    assert r.headers["Content-Type"] == "application/octet-stream"
    r = client.request("HEAD", f"/v2/{NAME}/blobs/{digest}")
    assert r.status == 200 and r.body == b""
    assert r.headers["Content-Length"] == str(len(data))


def test_ranges_across_chunk_boundaries(client):
    data = os.urandom(2 * CHUNK + 7)
    digest = client.push_blob(NAME, data)
    url = f"/v2/{NAME}/blobs/{digest}"
    for first, last in ((CHUNK - 10, CHUNK + 10), (1, 2 * CHUNK + 6), (2 * CHUNK, 2 * CHUNK + 6)):
        r = client.request("GET", url, headers={"Range": f"bytes={first}-{last}"})
        assert r.status == 206 and r.body == data[first:last + 1]
        assert r.headers["Content-Range"] == f"bytes {first}-{last}/{len(data)}"
    r = client.request("GET", url, headers={"Range": "bytes=-100"})
    assert r.status == 206 and r.body == data[-100:]


def test_if_none_match(client):
    digest = client.push_blob(NAME, b"cached elsewhere")
    url = f"/v2/{NAME}/blobs/{digest}"
    r = client.request("GET", url, headers={"If-None-Match": f'"{digest}"'})
    assert r.status == 304 and r.body == b""
    r = client.request("GET", url, headers={"If-None-Match": '"sha256:other"'})
    assert r.status == 200 and r.body == b"cached elsewhere"


def test_blob_not_in_page_cache(server):
    """Reads the page cache cannot answer at once go to a thread and still give every byte."""
    if not sending._NOWAIT:
        pytest.skip("this Python has no os.RWF_NOWAIT")
    client = server.client
    data = os.urandom(2 * CHUNK + 1)
    digest = client.push_blob(NAME, data)
    path = blob_file(server, digest)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # clean pages can be dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        try:
            os.preadv(fd, [bytearray(16)], 0, os.RWF_NOWAIT)
            pytest.skip(f"the page cache kept {path} after POSIX_FADV_DONTNEED")
        except BlockingIOError:
            pass  # what the server will meet
        except OSError as e:
            pytest.skip(f"RWF_NOWAIT unsupported here ({e})")
    finally:
        os.close(fd)
    r = client.request("GET", f"/v2/{NAME}/blobs/{digest}")
    assert r.status == 200 and r.body == data


def test_sent_bytes_metric_counts_blob_bodies(client):
    data = os.urandom(CHUNK + 1)
    digest = client.push_blob(NAME, data)
    assert client.request("GET", f"/v2/{NAME}/blobs/{digest}").body == data
    text = client.request("GET", "/metrics").body.decode()
    sent = int(re.search(r"^ocibox_registry_sent_bytes_total (\d+)$", text, re.M).group(1))
    assert sent >= len(data)


def test_truncated_file_cuts_the_response_short(tmp_path):
    """A file shorter than the promised length closes the connection, never hangs or pads."""
    path = tmp_path / "short"
    path.write_bytes(b"x" * 1000)

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = 5000
        await response.prepare(request)
        with open(path, "rb") as f:
            await sending.send(response, f, 5000)
        await response.write_eof()
        return response

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    loop.run_until_complete(site.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", sock.getsockname()[1], timeout=10)
        conn.request("GET", "/")
        r = conn.getresponse()
        assert r.status == 200
        with pytest.raises(http.client.IncompleteRead) as e:
            r.read()
        assert e.value.partial == b"x" * 1000
        conn.close()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(runner.cleanup())
        loop.close()

"""The registry client against ocibox's registry and Debian's docker-registry."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os

import pytest

from ocibox import mediatypes as mt
from ocibox.distribution.client import Options, Registry
from ocibox.errors import BlobNotFound, DigestMismatch, ReferenceNotFound

pytestmark = pytest.mark.peer


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def chunks_of(data: bytes, offset: int = 0, size: int = 100_000):
    for i in range(offset, len(data), size):
        yield data[i:i + size]


def run(coro):
    return asyncio.run(coro)


def _registry(server) -> Registry:
    return Registry(server.host, Options(no_auth_lookup=True))


def test_blobs_manifests_tags(any_registry):
    payload = os.urandom(700_000)
    reg = _registry(any_registry)

    async def go():
        async with reg:
            manifest, dig = await _push_image_async(reg, payload)
            got = await reg.get_manifest("t/app", "v1")
            assert got.data == manifest and got.digest == dig and got.media_type == mt.OCI_MANIFEST
            assert (await reg.get_manifest("t/app", dig)).data == manifest
            assert (await reg.head_manifest("t/app", "v1"))[0] == dig
            assert await reg.blob_size("t/app", sha(payload)) == len(payload)
            assert await reg.blob_size("t/app", sha(b"nope")) is None
            out = bytearray()
            async for c in reg.blob_chunks("t/app", sha(payload), len(payload)):
                out += c
            assert bytes(out) == payload
            tail = bytearray()
            async for c in reg.blob_chunks("t/app", sha(payload), len(payload), offset=500_000):
                tail += c
            assert bytes(tail) == payload[500_000:]
            for t in ("v2", "v3", "a", "b"):
                await reg.put_manifest("t/app", t, manifest, mt.OCI_MANIFEST)
            assert sorted(await reg.list_tags("t/app")) == ["a", "b", "v1", "v2", "v3"]
            assert sorted(await reg.list_tags("t/app", page_size=2)) == ["a", "b", "v1", "v2", "v3"]
            with pytest.raises(ReferenceNotFound, match="manifest unknown"):
                await reg.get_manifest("t/app", "missing")
            with pytest.raises(BlobNotFound):
                async for _ in reg.blob_chunks("t/app", sha(b"nope"), 4):
                    pass
            await reg.delete_manifest("t/app", dig)
            with pytest.raises(ReferenceNotFound):
                await reg.get_manifest("t/app", dig)
    run(go())


async def _push_image_async(reg, payload, repo="t/app", tag="v1", chunk_size=None):
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [sha(payload)]}}).encode()
    await reg.upload_blob(repo, sha(payload), len(payload), lambda o: chunks_of(payload, o),
                          chunk_size=chunk_size)
    await reg.upload_blob(repo, sha(config), len(config), lambda o: chunks_of(config, o))
    manifest = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                           "config": {"mediaType": mt.OCI_CONFIG, "digest": sha(config), "size": len(config)},
                           "layers": [{"mediaType": mt.OCI_LAYER, "digest": sha(payload),
                                       "size": len(payload)}]}).encode()
    await reg.put_manifest(repo, tag, manifest, mt.OCI_MANIFEST)
    return manifest, sha(manifest)


def test_chunked_upload_and_mount(any_registry):
    payload = os.urandom(1_300_000)

    async def go():
        async with _registry(any_registry) as reg:
            await _push_image_async(reg, payload, chunk_size=256 * 1024)
            assert await reg.blob_size("t/app", sha(payload)) == len(payload)
            assert await reg.mount_blob("t/other", sha(payload), "t/app")
            assert await reg.blob_size("t/other", sha(payload)) == len(payload)
            assert not await reg.mount_blob("t/third", sha(b"absent"), "t/app")
    run(go())


@pytest.mark.parametrize("chunk_size", [200_000, None], ids=["chunked", "monolithic"])
def test_upload_resumes_from_registry_offset(any_registry, chunk_size):
    """The body source fails half-way: the retry asks the registry where it
    stands and sends only the rest (a monolithic PUT that broke may have kept
    nothing, in which case the rest is everything)."""
    payload = os.urandom(1_000_000)
    offsets = []

    def open_at(offset):
        offsets.append(offset)

        async def gen():
            sent = 0
            async for c in chunks_of(payload, offset, 200_000):
                if len(offsets) == 1 and sent >= 400_000:
                    raise ConnectionResetError("simulated drop")
                sent += len(c)
                yield c
        return gen()

    async def go():
        async with Registry(any_registry.host, Options(no_auth_lookup=True, backoff=0.01)) as reg:
            await reg.upload_blob("t/app", sha(payload), len(payload), open_at, chunk_size=chunk_size)
            assert await reg.blob_size("t/app", sha(payload)) == len(payload)
    run(go())
    assert offsets[0] == 0 and len(offsets) >= 2
    if chunk_size:
        assert offsets[1] == 400_000


@pytest.mark.parametrize("chunk_size", [200_000, None], ids=["chunked", "streamed"])
def test_upload_stream_learns_digest_at_the_end(any_registry, chunk_size):
    payload = os.urandom(700_001)

    async def go():
        async with _registry(any_registry) as reg:
            got = await reg.upload_stream("t/app", lambda: chunks_of(payload, 0, 65_536), chunk_size=chunk_size)
            assert got == (sha(payload), len(payload))
            assert await reg.blob_size("t/app", sha(payload)) == len(payload)
            out = bytearray()
            async for c in reg.blob_chunks("t/app", sha(payload), len(payload)):
                out += c
            assert bytes(out) == payload
            assert await reg.upload_stream("t/app", lambda: chunks_of(b"")) == (sha(b""), 0)
    run(go())


@pytest.mark.parametrize("chunk_size", [200_000, None], ids=["chunked", "streamed"])
def test_upload_stream_resumes_by_making_the_stream_again(any_registry, chunk_size):
    """The stream breaks half-way: it is made again, hashed whole, and only what the
    registry lacks is sent (in chunks, what it acknowledged is not sent twice)."""
    payload = os.urandom(1_000_000)
    opened = []
    sent = []

    def open_stream():
        opened.append(len(opened))

        async def gen():
            n = 0
            async for c in chunks_of(payload, 0, 200_000):
                if len(opened) == 1 and n >= 400_000:
                    raise ConnectionResetError("simulated drop")
                n += len(c)
                yield c
        return gen()

    async def go():
        async with Registry(any_registry.host, Options(no_auth_lookup=True, backoff=0.01)) as reg:
            got = await reg.upload_stream("t/app", open_stream, chunk_size=chunk_size, progress=sent.append)
            assert got == (sha(payload), len(payload))
            assert await reg.blob_size("t/app", sha(payload)) == len(payload)
    run(go())
    assert len(opened) == 2
    if chunk_size:
        assert sum(sent) == len(payload)  # 400_000 before the drop, the other 600_000 after


def test_upload_stream_that_changes_starts_again(any_registry):
    """A stream made again with other bytes: the registry refuses the mixed blob's
    digest, and the upload starts over from byte 0 with the stream as it is now."""
    first, second = os.urandom(600_000), os.urandom(600_000)
    opened = []

    def open_stream():
        opened.append(1)

        async def gen():
            n = 0
            async for c in chunks_of(first if len(opened) == 1 else second, 0, 200_000):
                if len(opened) == 1 and n >= 400_000:
                    raise ConnectionResetError("simulated drop")
                n += len(c)
                yield c
        return gen()

    async def go():
        async with Registry(any_registry.host, Options(no_auth_lookup=True, backoff=0.01)) as reg:
            got = await reg.upload_stream("t/app", open_stream, chunk_size=200_000)
            assert got == (sha(second), len(second))
            assert await reg.blob_size("t/app", sha(second)) == len(second)
    run(go())
    assert len(opened) == 3


def test_wrong_digest_upload_refused(any_registry):
    async def go():
        async with _registry(any_registry) as reg:
            with pytest.raises(DigestMismatch):
                await reg.upload_blob("t/app", sha(b"other"), 5, lambda o: chunks_of(b"hello", o))
            assert await reg.blob_size("t/app", sha(b"hello")) is None
    run(go())


def test_referrers_api_or_tag_fallback(any_registry):
    payload = os.urandom(1000)

    async def go():
        async with _registry(any_registry) as reg:
            manifest, dig = await _push_image_async(reg, payload)
            empty = mt.EMPTY_JSON
            await reg.upload_blob("t/app", mt.EMPTY_JSON_DIGEST, 2, lambda o: chunks_of(empty, o))
            ref = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_MANIFEST,
                              "artifactType": "application/vnd.example.sbom",
                              "config": {"mediaType": mt.OCI_EMPTY, "digest": mt.EMPTY_JSON_DIGEST, "size": 2},
                              "layers": [{"mediaType": mt.OCI_EMPTY, "digest": mt.EMPTY_JSON_DIGEST, "size": 2}],
                              "subject": {"mediaType": mt.OCI_MANIFEST, "digest": dig,
                                          "size": len(manifest)}}).encode()
            ref_digest = await reg.put_manifest("t/app", sha(ref), ref, mt.OCI_MANIFEST)
            found = await reg.referrers("t/app", dig)
            if not found:
                # a registry without the referrers API (distribution 2.8): the tag schema
                index = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": [
                    {"mediaType": mt.OCI_MANIFEST, "digest": ref_digest, "size": len(ref),
                     "artifactType": "application/vnd.example.sbom"}]}).encode()
                await reg.put_manifest("t/app", dig.replace(":", "-"), index, mt.OCI_INDEX)
                found = await reg.referrers("t/app", dig)
            assert [m["digest"] for m in found] == [ref_digest]
            assert await reg.referrers("t/app", dig, "application/vnd.other") == []
    run(go())


def test_large_manifest_read_whole(any_registry):
    """A 1.5 MB index arrives in many pieces; it is read to the end and verified."""
    payload = os.urandom(100)

    async def go():
        async with _registry(any_registry) as reg:
            manifest, dig = await _push_image_async(reg, payload)
            entry = {"mediaType": mt.OCI_MANIFEST, "digest": dig, "size": len(manifest),
                     "annotations": {"org.example.padding": "x" * 400}}
            index = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX,
                                "manifests": [entry] * 3000}).encode()
            assert len(index) > 1_000_000
            await reg.put_manifest("t/app", "big", index, mt.OCI_INDEX)
            got = await reg.get_manifest("t/app", "big")
            assert got.data == index and got.digest == sha(index)
    run(go())

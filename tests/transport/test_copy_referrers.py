"""copy --referrers: an image with the artifacts that refer to it (an SBOM, and a
signature of the SBOM), through the referrers API (ocibox's registry), the tag
schema (docker-registry 2.8 has no referrers API) and OCI layouts; and skopeo's
--multi-arch and --remove-signatures."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest
from test_copy import multiarch_layout  # noqa: F401  (a fixture)

from conftest import ocibox_cmd
from ocibox import mediatypes as mt
from ocibox.distribution.client import Registry
from ocibox.distribution.options import Options
from ocibox.image.layout import Layout
from ocibox.image.models import Descriptor

pytestmark = pytest.mark.peer
SBOM_TYPE = "application/spdx+json"
SIG_TYPE = "application/vnd.example.signature"


def _artifact(lay: Layout, artifact_type: str, payload: bytes, subject: Descriptor) -> Descriptor:
    lay.blobs.put(mt.EMPTY_JSON)
    blob = lay.put_json(artifact_type, payload)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "artifactType": artifact_type,
        "config": {"mediaType": mt.OCI_EMPTY, "digest": mt.EMPTY_JSON_DIGEST, "size": 2},
        "layers": [blob.to_dict()],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size},
        "annotations": {"org.opencontainers.image.created": "2026-11-27T00:00:00Z"},
    }, separators=(",", ":")).encode()
    desc = lay.put_json(mt.OCI_MANIFEST, manifest)
    lay.update_index(lambda ms: [*ms, desc])  # untagged, as oras and regclient keep referrers
    return desc


@pytest.fixture
def signed_layout(image_layout) -> tuple[Path, Descriptor, Descriptor, Descriptor]:
    """image_layout's v1 with an SBOM whose subject is v1 and a signature whose subject is the SBOM."""
    lay = Layout.open(str(image_layout))
    image = lay.resolve("v1")
    sbom = _artifact(lay, SBOM_TYPE, b'{"spdxVersion":"SPDX-2.3"}', image)
    sig = _artifact(lay, SIG_TYPE, b"signature bytes", sbom)
    return image_layout, image, sbom, sig


def referrers(server, repository: str, dig: str) -> list[dict]:
    async def ask():
        async with Registry(server.host, Options()) as reg:
            return await reg.referrers(repository, dig)
    return asyncio.run(ask())


def layout_referrers(path: Path, dig: str) -> list[str]:
    lay = Layout.open(str(path))
    found = []
    for entry in lay.index().manifests:
        doc = json.loads(lay.blobs.read(entry.digest))
        if (doc.get("subject") or {}).get("digest") == dig:
            assert entry.ref_name is None and entry.artifact_type == doc["artifactType"]
            found.append(entry.digest)
    return found


def test_referrers_through_api_tag_schema_and_layouts(signed_layout, ocibox_registry, docker_registry, tmp_path,
                                                      no_auth_files):
    layout, image, sbom, sig = signed_layout
    # layout -> ocibox's registry (referrers API)
    out = ocibox_cmd("copy", "--referrers", f"oci:{layout}:v1", ocibox_registry.ref("a/app:v1"))
    assert "2 referrers" in out.stderr
    listed = referrers(ocibox_registry, "a/app", image.digest)
    assert [(d["digest"], d["artifactType"]) for d in listed] == [(sbom.digest, SBOM_TYPE)]
    assert [d["digest"] for d in referrers(ocibox_registry, "a/app", sbom.digest)] == [sig.digest]
    # another repository of the same registry (blobs mounted, referrers through the API)
    ocibox_cmd("copy", "-q", "--referrers", ocibox_registry.ref("a/app:v1"), ocibox_registry.ref("c/app:v1"))
    assert [d["digest"] for d in referrers(ocibox_registry, "c/app", image.digest)] == [sbom.digest]
    assert [d["digest"] for d in referrers(ocibox_registry, "c/app", sbom.digest)] == [sig.digest]
    # without --referrers nothing but the image goes
    ocibox_cmd("copy", "-q", f"oci:{layout}:v1", ocibox_registry.ref("plain/app:v1"))
    assert referrers(ocibox_registry, "plain/app", image.digest) == []
    # registry -> docker-registry (no referrers API: the sha256-<hex> tag schema)
    ocibox_cmd("copy", "-q", "--referrers", ocibox_registry.ref("a/app:v1"), docker_registry.ref("b/app:v1"))
    for _ in range(2):  # a second copy adds no duplicates to the tag-schema index
        fallback = json.loads(ocibox_cmd("inspect", "--raw",
                                         docker_registry.ref("b/app:sha256-" + image.digest[7:])).stdout)
        assert [m["digest"] for m in fallback["manifests"]] == [sbom.digest]
        ocibox_cmd("copy", "-q", "--referrers", ocibox_registry.ref("a/app:v1"), docker_registry.ref("b/app:v1"))
    assert [d["digest"] for d in referrers(docker_registry, "b/app", sbom.digest)] == [sig.digest]
    # docker-registry (tag schema) -> an OCI layout: untagged index.json entries, blobs present
    out_layout = tmp_path / "out"
    for _ in range(2):
        ocibox_cmd("copy", "-q", "--referrers", docker_registry.ref("b/app:v1"), f"oci:{out_layout}:v1")
    assert layout_referrers(out_layout, image.digest) == [sbom.digest]
    assert layout_referrers(out_layout, sbom.digest) == [sig.digest]
    lay = Layout.open(str(out_layout))
    sbom_doc = json.loads(lay.blobs.read(sbom.digest))
    assert lay.blobs.read(sbom_doc["layers"][0]["digest"]) == b'{"spdxVersion":"SPDX-2.3"}'
    assert lay.resolve("v1").digest == image.digest
    # and an image that has none copies with --referrers as without
    ocibox_cmd("copy", "-q", "--referrers", ocibox_registry.ref("plain/app:v1"), f"oci:{tmp_path}/none:v1")
    assert len(Layout.open(str(tmp_path / "none")).index().manifests) == 1


def test_referrers_refusals(signed_layout, tmp_path):
    layout, image, sbom, sig = signed_layout
    proc = ocibox_cmd("copy", "--referrers", f"oci:{layout}:v1", f"dir:{tmp_path}/d", check=False)
    assert proc.returncode != 0 and "cannot hold referrers" in proc.stderr
    proc = ocibox_cmd("copy", "--referrers", "--format", "v2s2", f"oci:{layout}:v1", f"oci:{tmp_path}/c:v1",
                      check=False)
    assert proc.returncode != 0 and "they would refer to nothing" in proc.stderr and "Traceback" not in proc.stderr
    proc = ocibox_cmd("copy", "--referrers", "--remove-signatures", f"oci:{layout}:v1", f"oci:{tmp_path}/r:v1",
                      check=False)
    assert proc.returncode != 0 and "exclude each other" in proc.stderr
    # --remove-signatures alone: accepted, and nothing but the image is copied
    ocibox_cmd("copy", "-q", "--remove-signatures", f"oci:{layout}:v1", f"oci:{tmp_path}/s:v1")
    assert [m.digest for m in Layout.open(str(tmp_path / "s")).index().manifests] == [image.digest]


def test_multi_arch_index_only_to_a_registry(multiarch_layout, docker_registry, no_auth_files):  # noqa: F811
    """As skopeo: the registry refuses an index whose images it lacks; once they are there, it takes it."""
    index = Layout.open(str(multiarch_layout)).resolve("multi")
    proc = ocibox_cmd("copy", "--multi-arch", "index-only", f"oci:{multiarch_layout}:multi",
                      docker_registry.ref("io/app:idx"), check=False)
    assert proc.returncode != 0 and "MANIFEST_BLOB_UNKNOWN" in proc.stderr and "Traceback" not in proc.stderr
    ocibox_cmd("copy", "-q", "--multi-arch", "all", f"oci:{multiarch_layout}:multi", docker_registry.ref("io/app:all"))
    out = ocibox_cmd("copy", "--multi-arch", "index-only", f"oci:{multiarch_layout}:multi",
                     docker_registry.ref("io/app:idx"))
    assert "Copying blob" not in out.stderr
    raw = ocibox_cmd("inspect", "--raw", docker_registry.ref("io/app:idx")).stdout.encode()
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == index.digest


def test_multi_arch(multiarch_layout, tmp_path):  # noqa: F811
    lay = Layout.open(str(multiarch_layout))
    index = lay.resolve("multi")
    ocibox_cmd("copy", "-q", "--multi-arch", "all", f"oci:{multiarch_layout}:multi", f"oci:{tmp_path}/all:multi")
    every = Layout.open(str(tmp_path / "all"))
    assert every.resolve("multi").digest == index.digest
    assert every.reachable([every.resolve("multi")]) == lay.reachable([index])
    ocibox_cmd("copy", "-q", "--multi-arch", "system", f"oci:{multiarch_layout}:multi", f"oci:{tmp_path}/sys:x")
    assert Layout.open(str(tmp_path / "sys")).resolve("x").digest == lay.resolve("amd64").digest
    ocibox_cmd("copy", "-q", "--multi-arch", "index-only", f"oci:{multiarch_layout}:multi",
               f"oci:{tmp_path}/idx:multi")
    only = Layout.open(str(tmp_path / "idx"))
    assert only.resolve("multi").digest == index.digest
    children = json.loads(only.blobs.read(index.digest))["manifests"]
    assert not any(only.blobs.has(c["digest"]) for c in children)
    proc = ocibox_cmd("copy", "--all", "--multi-arch", "all", f"oci:{multiarch_layout}:multi",
                      f"oci:{tmp_path}/bad:x", check=False)
    assert proc.returncode != 0 and "exclude each other" in proc.stderr

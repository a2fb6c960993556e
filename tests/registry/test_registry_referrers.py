"""The referrers API in pages: n, Link, and the artifactType filter kept across pages."""

from __future__ import annotations

import re

from conftest import OCI_INDEX

NAME = "ref/paged"
SBOM, SIG = "application/vnd.example.sbom", "application/vnd.example.sig"


def _walk(c, url: str) -> tuple[list[dict], list]:
    """Follow Link headers from ``url``; every descriptor and every page's response."""
    found, replies = [], []
    while url:
        r = c.request("GET", url)
        assert r.status == 200, r.body
        assert r.headers["Content-Type"] == OCI_INDEX
        body = r.json()
        assert body["schemaVersion"] == 2 and body["mediaType"] == OCI_INDEX
        found += body["manifests"]
        replies.append(r)
        link = r.headers.get("Link")
        url = re.fullmatch(r'<([^>]+)>; rel="next"', link).group(1) if link else None
    return found, replies


def test_referrers_pages(make_server):
    c = make_server(referrers_page=7).client
    subject_digest, subject = c.push_image(NAME, "v1")
    desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject_digest,
            "size": len(subject)}
    pushed = {}
    for i in range(25):
        kind = SBOM if i % 3 == 0 else SIG
        digest, _ = c.push_image(NAME, None, seed=f"r{i}", subject=desc, artifact_type=kind)
        pushed[digest] = kind
    base = f"/v2/{NAME}/referrers/{subject_digest}"

    # no n: the registry's own page size (7), in digest order, every referrer once
    found, replies = _walk(c, base)
    assert [len(r.json()["manifests"]) for r in replies] == [7, 7, 7, 4]
    assert [d["digest"] for d in found] == sorted(pushed)
    assert all("OCI-Filters-Applied" not in r.headers for r in replies)

    # n chosen by the client
    found, replies = _walk(c, f"{base}?n=10")
    assert [len(r.json()["manifests"]) for r in replies] == [10, 10, 5]
    assert [d["digest"] for d in found] == sorted(pushed)
    assert "n=10" in replies[0].headers["Link"]

    # the filter is applied on every page and carried by every next link
    sboms = sorted(d for d, k in pushed.items() if k == SBOM)
    found, replies = _walk(c, f"{base}?artifactType={SBOM}&n=3")
    assert [d["digest"] for d in found] == sboms and len(sboms) == 9
    assert all(d["artifactType"] == SBOM for d in found)
    assert len(replies) == 3 and all(r.headers["OCI-Filters-Applied"] == "artifactType" for r in replies)
    assert all("artifactType=application%2Fvnd.example.sbom" in r.headers["Link"] for r in replies[:-1])

    # a page that exactly ends the list has no Link; n=0 is an empty page
    r = c.request("GET", f"{base}?n=25")
    assert len(r.json()["manifests"]) == 25 and "Link" not in r.headers
    r = c.request("GET", f"{base}?n=0")
    assert r.json()["manifests"] == [] and "Link" not in r.headers
    assert c.request("GET", f"{base}?n=many").status == 400


def test_referrers_default_page_is_large(client):
    subject_digest, subject = client.push_image(NAME, "v1")
    desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": subject_digest,
            "size": len(subject)}
    for i in range(3):
        client.push_image(NAME, None, seed=f"s{i}", subject=desc)
    r = client.request("GET", f"/v2/{NAME}/referrers/{subject_digest}")
    assert len(r.json()["manifests"]) == 3 and "Link" not in r.headers

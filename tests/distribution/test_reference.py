"""The reference grammar: defaults, limits and errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocibox.distribution.reference import InvalidReference, Reference

D = "sha256:" + "a" * 64


@pytest.mark.parametrize("text, registry, repository, tag, digest", [
    ("busybox", "docker.io", "library/busybox", None, None),
    ("busybox:1.36", "docker.io", "library/busybox", "1.36", None),
    ("team/app", "docker.io", "team/app", None, None),
    ("docker.io/busybox", "docker.io", "library/busybox", None, None),
    ("index.docker.io/team/app:v1", "docker.io", "team/app", "v1", None),
    ("localhost/app", "localhost", "app", None, None),
    ("localhost:5000/a/b/c:t", "localhost:5000", "a/b/c", "t", None),
    ("127.0.0.1:5000/app@" + D, "127.0.0.1:5000", "app", None, D),
    ("[::1]:5000/app:x@" + D, "[::1]:5000", "app", "x", D),
    ("Registry/app", "Registry", "app", None, None),
    ("quay.io/a__b/c-d.e---f:Tag_1.-x", "quay.io", "a__b/c-d.e---f", "Tag_1.-x", None),
    ("localhost:5000", "docker.io", "library/localhost", "5000", None),  # as docker reads it
])
def test_parse(text, registry, repository, tag, digest):
    r = Reference.parse(text)
    assert (r.registry, r.repository, r.tag, r.digest) == (registry, repository, tag, digest)


def test_str_and_familiar():
    r = Reference.parse("busybox:1")
    assert str(r) == "docker.io/library/busybox:1"
    assert r.familiar() == "busybox:1"
    assert r.api_host == "registry-1.docker.io"
    assert Reference.parse("l:1/a").reference == "latest"
    assert Reference.parse("l:1/a@" + D).reference == D


@pytest.mark.parametrize("text, words", [
    ("", "empty"),
    ("Busybox", "upper-case"),
    ("a//b", "is empty"),
    ("a/-b", "characters"),
    ("a_", "characters"),
    ("a:-tag", "tag"),
    ("a:" + "t" * 129, "tag"),
    ("a:", "tag"),
    ("a@sha256:abc", "sha256 needs 64"),
    ("a@md5:" + "a" * 32, "unsupported"),
    ("bad_host:5000/x", "registry"),
    ("host.io:port/x", "registry"),
    ("h.io/" + "a" * 260, "255"),
    ("a b", "white space"),
    (":tag", "no repository"),
])
def test_invalid(text, words):
    with pytest.raises(InvalidReference) as e:
        Reference.parse(text)
    assert words in str(e.value)
    assert "\n" not in str(e.value)


def test_name_at_limit():
    repo = "a" * (255 - len("h.io/"))
    assert Reference.parse(f"h.io/{repo}").repository == repo

_component = st.from_regex(r"\A[a-z0-9]{1,6}(?:(?:[._]|__|-{1,2})[a-z0-9]{1,6}){0,2}\Z")
_host = st.from_regex(r"\A(?:localhost|[a-z0-9]{1,8}(?:\.[a-z0-9]{1,8}){1,2})(?::[0-9]{1,5})?\Z")
_tag = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}\Z")
_digest = st.from_regex(r"\A[a-f0-9]{64}\Z").map(lambda h: "sha256:" + h)


@given(_host, st.lists(_component, min_size=1, max_size=4), st.none() | _tag, st.none() | _digest)
def test_roundtrip_property(host, path, tag, digest):
    text = f"{host}/{'/'.join(path)}" + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    r = Reference.parse(text)
    assert (r.registry, r.repository, r.tag, r.digest) == (host, "/".join(path), tag, digest)
    assert str(r) == text
    assert Reference.parse(str(r)) == r


@given(st.text(max_size=80))
def test_any_text_parses_or_fails_cleanly(text):
    try:
        r = Reference.parse(text)
    except InvalidReference as e:
        assert "\n" not in e.message
    else:
        assert Reference.parse(str(r)) == r

"""The registry's grammar checks: what passes can never leave its directory."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocibox.registry.app import CONTENT_RANGE
from ocibox.registry.errors import ApiError
from ocibox.registry.names import check_digest, check_name, check_reference, is_tag

SPEC_NAME = re.compile(r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*")
SPEC_TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")


@given(st.text(alphabet="abz09._-/A%:", max_size=40))
def test_names_follow_the_spec_regex(text):
    expected = SPEC_NAME.fullmatch(text) is not None and len(text) <= 255
    try:
        check_name(text)
        ok = True
    except ApiError as e:
        assert e.code == "NAME_INVALID" and e.status == 400
        ok = False
    assert ok == expected
    if ok:
        parts = text.split("/")
        assert ".." not in parts and "." not in parts and "" not in parts
        assert not any(p.startswith(("_", ".", "-")) for p in parts)


@given(st.text(alphabet="aZ09._-/:", max_size=140))
def test_tags_follow_the_spec_regex(text):
    assert is_tag(text) == (SPEC_TAG.fullmatch(text) is not None)
    if is_tag(text):
        assert "/" not in text and not text.startswith(".")


@pytest.mark.parametrize("ref,expected", [
    ("latest", ("latest", None)),
    ("sha256:" + "a" * 64, (None, "sha256:" + "a" * 64)),
])
def test_references(ref, expected):
    assert check_reference(ref) == expected


@pytest.mark.parametrize("bad", ["sha256:" + "a" * 63, "sha256:" + "A" * 64, "sha256:../../x", "md5:abc", ":",
                                 "sha256:" + "a" * 64 + "\n"])
def test_bad_digests(bad):
    with pytest.raises(ApiError) as e:
        check_digest(bad)
    assert e.value.code == "DIGEST_INVALID"


@pytest.mark.parametrize("header,ok", [("0-99", True), ("bytes=0-99", True), ("bytes 0-99/100", True),
                                       ("0-", False), ("-5", False), ("a-b", False), ("0-99,200-300", False)])
def test_content_range(header, ok):
    assert (CONTENT_RANGE.fullmatch(header) is not None) == ok

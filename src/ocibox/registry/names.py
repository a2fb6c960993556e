"""The grammar of repository names, tags and digests on the registry API.

Everything that comes from a URL is checked here before it is used to build a
storage path; a value that passes cannot contain ``..``, a leading ``/`` or
any character outside the specification's sets.
"""

from __future__ import annotations

import re

from .. import digest as _digest
from ..errors import InvalidDigest
from .errors import ApiError

NAME = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*")
TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
# Clients limit host[:port]/name to 255 characters; the old specification said < 256 for the name.
NAME_MAX = 255


def check_name(name: str) -> str:
    if len(name) > NAME_MAX or not NAME.fullmatch(name):
        raise ApiError("NAME_INVALID", "invalid repository name", detail={"name": name})
    return name


def is_tag(reference: str) -> bool:
    return TAG.fullmatch(reference) is not None


def check_tag(tag: str) -> str:
    if not is_tag(tag):
        raise ApiError("MANIFEST_INVALID", "invalid tag", detail={"tag": tag})
    return tag


def check_digest(value: str | None) -> str:
    """A digest from the network: grammar, a supported algorithm, exact hex length."""
    if not value:
        raise ApiError("DIGEST_INVALID", "a digest is required")
    try:
        _digest.parse(value)
    except InvalidDigest as e:
        raise ApiError("DIGEST_INVALID", e.message, detail={"digest": value}) from None
    return value


def check_reference(reference: str) -> tuple[str | None, str | None]:
    """A manifest reference: (tag, None) or (None, digest)."""
    if ":" in reference:
        return None, check_digest(reference)
    return check_tag(reference), None

"""Image references: ``[host[:port]/]path[:tag][@digest]``.

The grammar is distribution's (reference/reference.go, documented in the
distribution specification's ``<name>`` rule)::

    reference       := name [ ":" tag ] [ "@" digest ]
    name            := [domain "/"] path-component ["/" path-component]*
    domain          := host [":" port]
    host            := domain-name | IPv4 | "[" IPv6 "]"
    domain-name     := domain-component ["." domain-component]*
    domain-component:= [a-zA-Z0-9] | [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]
    path-component  := [a-z0-9]+ (separator [a-z0-9]+)*
    separator       := [_.] | "__" | "-"+
    tag             := [\\w][\\w.-]{0,127}

The first component is a registry only when it contains ``.`` or ``:``, is
``localhost``, or has upper-case letters; otherwise the registry is docker.io,
and a one-component docker.io name is put under ``library/``. The full name
(registry and path) may not exceed 255 characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .. import digest as _digest
from ..errors import InvalidDigest, OciboxError

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
NAME_MAX = 255
TAG_MAX = 128

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_DOMAIN = re.compile(rf"^{_HOST}(?::[0-9]+)?$")
_PATH_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[_.]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$", re.ASCII)


class InvalidReference(OciboxError):
    """An image reference that does not follow the grammar."""

    exit_code = 2

    def __init__(self, text: str, rule: str) -> None:
        super().__init__(f"invalid image reference {text!r}: {rule}",
                         hint="expected [HOST[:PORT]/]NAME[:TAG][@DIGEST], e.g. "
                              "localhost:5000/team/app:1.0")
        self.text = text
        self.rule = rule


def check_tag(tag: str, text: str | None = None) -> str:
    if not _TAG.fullmatch(tag or ""):
        raise InvalidReference(text if text is not None else tag,
                               f"tag {tag!r} must be 1-128 of letters, digits, _ . - "
                               "and not start with . or -")
    return tag


def check_repository(path: str, text: str | None = None) -> str:
    for component in path.split("/"):
        if not _PATH_COMPONENT.fullmatch(component):
            why = ("has upper-case letters" if component.lower() != component and component
                   else "is empty" if not component else "has characters other than a-z 0-9 . _ -"
                   " or a separator at an end")
            raise InvalidReference(text if text is not None else path,
                                   f"repository path component {component!r} {why}")
    return path


@dataclass(frozen=True)
class Reference:
    """A parsed reference; ``tag`` and ``digest`` may both be set, or neither."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str, *, default_registry: str = DOCKER_HUB) -> Reference:
        if not isinstance(text, str) or not text:
            raise InvalidReference(str(text), "empty")
        if text != text.strip() or any(c.isspace() for c in text):
            raise InvalidReference(text, "contains white space")
        rest, digest = text, None
        if "@" in rest:
            rest, digest = rest.split("@", 1)
            try:
                _digest.parse(digest)
            except InvalidDigest as e:
                raise InvalidReference(text, e.message.removeprefix("invalid digest ")) from None
        tag = None
        slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > slash:
            rest, tag = rest[:colon], rest[colon + 1:]
            check_tag(tag, text)
        if not rest:
            raise InvalidReference(text, "no repository name")
        first, _, remainder = rest.partition("/")
        if remainder and ("." in first or ":" in first or first == "localhost"
                          or first.lower() != first):
            registry, path = first, remainder
            if not _DOMAIN.fullmatch(registry):
                raise InvalidReference(text, f"registry {registry!r} is not a host[:port]")
        else:
            registry, path = default_registry, rest
        if registry in ("index.docker.io", "registry-1.docker.io"):
            registry = DOCKER_HUB
        if registry == DOCKER_HUB and "/" not in path:
            path = f"library/{path}"
        check_repository(path, text)
        if len(registry) + 1 + len(path) > NAME_MAX:
            raise InvalidReference(text, f"name is longer than {NAME_MAX} characters")
        return cls(registry, path, tag, digest)

    # --- derived -------------------------------------------------------------

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What goes after /manifests/: the digest when there is one, else the tag."""
        return self.digest or self.tag or "latest"

    def with_tag(self, tag: str | None) -> Reference:
        return Reference(self.registry, self.repository, check_tag(tag) if tag else None, None)

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.registry, self.repository, self.tag, _digest.validate(digest))

    def defaulted(self) -> Reference:
        """With ``latest`` when neither a tag nor a digest was given."""
        if self.tag or self.digest:
            return self
        return Reference(self.registry, self.repository, "latest", None)

    @property
    def api_host(self) -> str:
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    def __str__(self) -> str:
        s = self.name
        if self.tag:
            s += f":{self.tag}"
        if self.digest:
            s += f"@{self.digest}"
        return s

    def familiar(self) -> str:
        """The short form people type: ``busybox`` for docker.io/library/busybox."""
        s = str(self)
        if self.registry == DOCKER_HUB:
            s = s.removeprefix("docker.io/").removeprefix("library/")
        return s


def parse(text: str) -> Reference:
    return Reference.parse(text)

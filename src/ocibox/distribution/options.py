"""How to reach a registry, and what a manifest fetch returns: plain data, no HTTP
code, so that code which only names these (copies between local locations) does
not pay for importing the HTTP client."""

from __future__ import annotations

from dataclasses import dataclass

from .auth import Credentials


@dataclass
class Options:
    """How to reach a registry (skopeo's per-side flags)."""

    tls_verify: bool | None = None  # None: verify, unless registries.conf marks the registry insecure
    cert_dir: str | None = None
    creds: Credentials | None = None
    plain_http: bool | None = None  # None: HTTPS, falling back to HTTP for localhost or no TLS verify
    retries: int = 3
    backoff: float = 0.2
    timeout: float = 300.0
    no_auth_lookup: bool = False
    registry_token: str | None = None  # a bearer token to send as it is (skopeo's --registry-token)


@dataclass
class Fetched:
    """A manifest or index as fetched: exact bytes, media type, digest."""

    data: bytes
    media_type: str
    digest: str

    @property
    def size(self) -> int:
        return len(self.data)

"""Bearer tokens over a client's lifetime: renewed before they expire (expires_in
counted from issued_at), re-fetched when a 401 brings a new challenge, and
fetched with the OAuth2 refresh-token POST when auth.json holds an identitytoken."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from fake_registry import FakeRegistry

from ocibox.distribution.auth import AuthError, Credentials
from ocibox.distribution.client import Options, Registry, _token_lifetime


def _manifest_twice(fake: FakeRegistry, options: Options) -> None:
    async def go():
        async with Registry(fake.host, options) as reg:
            first = await reg.get_manifest("test/app", "v1")
            again = await reg.get_manifest("test/app", "v1")
            assert first.digest == again.digest
    asyncio.run(go())


@pytest.mark.parametrize("issued_ago, fetches", [(None, 1), (0, 1), (1000, 2)])
def test_token_renewed_when_issued_at_says_it_expired(image_layout, no_auth_files, issued_ago, fetches):
    with FakeRegistry(str(image_layout), faults={"bearer"}) as fake:
        fake.token_issued_ago = issued_ago
        _manifest_twice(fake, Options(creds=Credentials("user", "secret")))
    assert len(fake.tokens_issued) == fetches


def test_token_lifetime_arithmetic():
    assert _token_lifetime(300, None) == 290
    assert _token_lifetime(0, None) == 54  # the spec's 60 s minimum, renewed 6 s early
    now = time.strftime("%Y-%m-%dT%H:%M:%S.999999999Z", time.gmtime(time.time() - 100))
    assert 180 < _token_lifetime(300, now) < 191  # 200 s left, less a 10 s margin
    assert _token_lifetime(300, "not a date") == 290
    future = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 5000))
    assert _token_lifetime(300, future) == 290  # a clock ahead never lengthens it


def test_revoked_token_refetched_on_new_challenge(image_layout, no_auth_files):
    with FakeRegistry(str(image_layout), faults={"bearer", "revoke"}) as fake:
        async def go():
            async with Registry(fake.host, Options(creds=Credentials("user", "secret"))) as reg:
                fetched = await reg.get_manifest("test/app", "v1")
                config = json.loads(fetched.data)["config"]
                data = await reg.read_blob("test/app", config["digest"], config["size"])
                assert len(data) == config["size"]
        asyncio.run(go())
    assert len(fake.tokens_issued) == 2
    assert fake.auth_seen.count("Bearer good-token") >= 2  # the manifest GET, the refused blob GET
    assert "Bearer good-token-2" in fake.auth_seen


def test_identity_token_uses_oauth2_refresh_grant(image_layout, tmp_path, no_auth_files, monkeypatch):
    with FakeRegistry(str(image_layout), faults={"bearer", "oauth"}) as fake:
        auth = tmp_path / "auth.json"
        auth.write_text(json.dumps({"auths": {fake.host: {"identitytoken": "refresh-secret"}}}))
        monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth))
        _manifest_twice(fake, Options())
        assert fake.oauth_forms == [{"grant_type": "refresh_token", "refresh_token": "refresh-secret",
                                     "client_id": "containers/image", "service": "fake",
                                     "scope": "repository:test/app:pull"}]
        auth.write_text(json.dumps({"auths": {fake.host: {"identitytoken": "stale"}}}))
        with pytest.raises(AuthError, match="authentication failed for the identity token"):
            _manifest_twice(fake, Options())

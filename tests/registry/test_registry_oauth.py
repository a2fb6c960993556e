"""The token endpoint's OAuth2 side: password and refresh_token grants, offline tokens, expiry fields."""

from __future__ import annotations

import base64
import calendar
import json
import time
import urllib.parse

import bcrypt
import pytest

NAME = "alice/app"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _hash(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


@pytest.fixture
def htpasswd(tmp_path):
    path = tmp_path / "htpasswd"
    path.write_text(f"alice:{_hash('s3cret')}\nbob:{_hash('b0b')}\n")
    return path


@pytest.fixture
def registry(make_server, htpasswd):
    rules = [{"users": ["*"], "repositories": ["{user}/**"], "actions": ["*"]}]
    return make_server(auth="token", htpasswd=str(htpasswd), access=rules)


def post(c, **fields):
    return c.request("POST", "/token", urllib.parse.urlencode(fields).encode(), FORM)


def claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_password_grant_offline_then_refresh(registry):
    c = registry.client
    r = post(c, grant_type="password", username="alice", password="s3cret", service="ocibox",
             client_id="ocibox-test", access_type="offline", scope=f"repository:{NAME}:pull,push")
    assert r.status == 200, r.body
    body = r.json()
    assert body["scope"] == f"repository:{NAME}:pull,push"
    assert body["expires_in"] == 300 and body["issued_at"].endswith("Z")
    issued = calendar.timegm(time.strptime(body["issued_at"], "%Y-%m-%dT%H:%M:%SZ"))
    assert abs(issued - time.time()) < 60
    refresh = body["refresh_token"]
    assert c.request("POST", f"/v2/{NAME}/blobs/uploads/", headers=bearer(body["access_token"])).status == 202
    # a refresh token is not an access token
    r = c.request("GET", f"/v2/{NAME}/tags/list", headers=bearer(refresh))
    assert r.status == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    # refresh for other scopes: cut down to what the rules allow; the same refresh token comes back
    r = post(c, grant_type="refresh_token", refresh_token=refresh, service="ocibox", client_id="ocibox-test",
             scope=f"repository:{NAME}:delete repository:bob/app:pull")
    assert r.status == 200, r.body
    body = r.json()
    assert body["scope"] == f"repository:{NAME}:delete" and body["refresh_token"] == refresh
    assert claims(body["access_token"])["sub"] == "alice"
    assert [a["name"] for a in claims(body["access_token"])["access"]] == [NAME]
    # without access_type=offline there is no refresh token
    r = post(c, grant_type="password", username="alice", password="s3cret", service="ocibox", client_id="x")
    assert r.status == 200 and "refresh_token" not in r.json() and r.json()["scope"] == ""


def test_offline_token_on_get(registry):
    c = registry.client
    auth = {"Authorization": "Basic " + base64.b64encode(b"alice:s3cret").decode()}
    r = c.request("GET", f"/token?service=ocibox&scope=repository:{NAME}:pull&offline_token=true", headers=auth)
    body = r.json()
    assert r.status == 200 and body["refresh_token"] and body["token"] == body["access_token"]
    assert r.headers["Cache-Control"] == "no-store"
    r = post(c, grant_type="refresh_token", refresh_token=body["refresh_token"], service="ocibox",
             client_id="t", scope=f"repository:{NAME}:pull")
    assert r.status == 200 and r.json()["scope"] == f"repository:{NAME}:pull"
    assert "refresh_token" not in c.request("GET", f"/token?service=ocibox&scope=repository:{NAME}:pull",
                                            headers=auth).json()
    # anonymous users get no refresh token
    assert "refresh_token" not in c.request("GET", "/token?service=ocibox&offline_token=true").json()


@pytest.mark.parametrize("fields, status, error", [
    ({"grant_type": "password", "username": "alice", "password": "wrong"}, 400, "invalid_grant"),
    ({"grant_type": "password", "username": "nobody", "password": "x"}, 400, "invalid_grant"),
    ({"grant_type": "refresh_token", "refresh_token": "garbage"}, 400, "invalid_grant"),
    ({"grant_type": "refresh_token"}, 400, "invalid_grant"),
    ({"grant_type": "authorization_code", "code": "x"}, 400, "unsupported_grant_type"),
    ({}, 400, "invalid_request"),
    ({"grant_type": "password", "username": "alice", "password": "s3cret", "client_id": ""}, 400,
     "invalid_request"),
    ({"grant_type": "password", "username": "alice", "password": "s3cret", "service": "other"}, 400,
     "invalid_request"),
])
def test_oauth_errors(registry, fields, status, error):
    fields = {"service": "ocibox", "client_id": "t", **fields}
    r = post(registry.client, **fields)
    assert r.status == status and r.json()["error"] == error, r.body


def test_refresh_token_revoked_by_password_change(make_server, htpasswd, tmp_path):
    root = str(tmp_path / "reg")
    first = make_server(auth="token", htpasswd=str(htpasswd), root=root)
    r = post(first.client, grant_type="password", username="bob", password="b0b", service="ocibox",
             client_id="t", access_type="offline")
    refresh = r.json()["refresh_token"]
    first.stop()
    # another server on the same root (same key) honours it...
    second = make_server(auth="token", htpasswd=str(htpasswd), root=root)
    assert post(second.client, grant_type="refresh_token", refresh_token=refresh, service="ocibox",
                client_id="t").status == 200
    second.stop()
    # ...until bob's password changes
    htpasswd.write_text(htpasswd.read_text().replace(htpasswd.read_text().splitlines()[1].split(":", 1)[1],
                                                     _hash("new")))
    third = make_server(auth="token", htpasswd=str(htpasswd), root=root)
    r = post(third.client, grant_type="refresh_token", refresh_token=refresh, service="ocibox", client_id="t")
    assert r.status == 400 and r.json()["error"] == "invalid_grant"


def test_refresh_token_ttl(make_server, htpasswd):
    c = make_server(auth="token", htpasswd=str(htpasswd), refresh_token_ttl=1).client
    refresh = post(c, grant_type="password", username="bob", password="b0b", service="ocibox",
                   client_id="t", access_type="offline").json()["refresh_token"]
    assert claims(refresh)["exp"] - claims(refresh)["iat"] == 1
    time.sleep(2.1)
    r = post(c, grant_type="refresh_token", refresh_token=refresh, service="ocibox", client_id="t")
    assert r.status == 400 and r.json()["error"] == "invalid_grant"


def test_token_ttl_floor(tmp_path):
    from ocibox.errors import UsageError
    from ocibox.registry.config import load_config

    path = tmp_path / "c.toml"
    path.write_text('auth = "token"\ntoken_ttl = 30\n')
    with pytest.raises(UsageError, match="at least 60"):
        load_config(str(path))


def test_htpasswd_changes_apply_while_serving(make_server, htpasswd):
    """A new password for bob in the running server: old password and old refresh tokens stop working."""
    c = make_server(auth="token", htpasswd=str(htpasswd)).client
    refresh = post(c, grant_type="password", username="bob", password="b0b", service="ocibox",
                   client_id="t", access_type="offline").json()["refresh_token"]
    basic = {"Authorization": "Basic " + base64.b64encode(b"bob:b0b").decode()}
    assert c.request("GET", "/token?service=ocibox", headers=basic).status == 200
    lines = htpasswd.read_text().splitlines()
    replacement = htpasswd.with_name("htpasswd.new")
    replacement.write_text(f"{lines[0]}\nbob:{_hash('n3w')}\ndave:{_hash('d')}\n")
    replacement.replace(htpasswd)  # as htpasswd(1) and config tools do: a new file renamed over
    assert c.request("GET", "/token?service=ocibox", headers=basic).status == 401
    r = post(c, grant_type="refresh_token", refresh_token=refresh, service="ocibox", client_id="t")
    assert r.status == 400 and r.json()["error"] == "invalid_grant"
    assert post(c, grant_type="password", username="bob", password="n3w", service="ocibox",
                client_id="t").status == 200
    assert post(c, grant_type="password", username="dave", password="d", service="ocibox",
                client_id="t").status == 200
    # a broken file keeps the last good users
    htpasswd.write_text("dave:$apr1$md5$hash\n")
    assert post(c, grant_type="password", username="dave", password="d", service="ocibox",
                client_id="t").status == 200

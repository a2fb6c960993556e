"""Authentication: htpasswd basic auth, the token endpoint and bearer tokens, TLS."""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import urllib.parse

import bcrypt
import pytest

from conftest import OCI_MANIFEST, need, run
from ocibox.errors import UsageError
from ocibox.registry.auth import Htpasswd

NAME = "private/repo"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def htpasswd(tmp_path) -> str:
    path = tmp_path / "htpasswd"
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$", 1)
    path.write_text(f"# users\nalice:{hashed}\n")
    return str(path)


def test_htpasswd_file_checks(htpasswd, tmp_path):
    users = Htpasswd(htpasswd)
    assert users.check("alice", "s3cret") and users.check("alice", "s3cret")
    assert not users.check("alice", "wrong") and not users.check("bob", "s3cret")
    bad = tmp_path / "md5"
    bad.write_text("bob:$apr1$abc$def\n")
    with pytest.raises(UsageError, match="only bcrypt"):
        Htpasswd(str(bad))


def test_basic_auth(make_server, htpasswd):
    c = make_server(auth="htpasswd", htpasswd=htpasswd).client
    r = c.request("GET", "/v2/")
    assert r.status == 401 and r.codes == ["UNAUTHORIZED"]
    assert r.headers["WWW-Authenticate"] == 'Basic realm="ocibox"'
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert c.request("GET", "/v2/", headers=basic("alice", "wrong")).status == 401
    assert c.request("GET", "/v2/", headers=basic("alice", "s3cret")).status == 200
    r = c.request("POST", f"/v2/{NAME}/blobs/uploads/")
    assert r.status == 401
    r = c.request("POST", f"/v2/{NAME}/blobs/uploads/", headers=basic("alice", "s3cret"))
    assert r.status == 202
    assert c.request("GET", f"/v2/{NAME}/tags/list").status == 401
    assert c.request("GET", "/v2/_catalog", headers=basic("alice", "s3cret")).status == 200
    assert c.request("GET", "/healthz").status == 200


def test_basic_auth_anonymous_pull(make_server, htpasswd):
    c = make_server(auth="htpasswd", htpasswd=htpasswd, anonymous_pull=True).client
    data = b"public blob"
    digest = "sha256:" + __import__("hashlib").sha256(data).hexdigest()
    r = c.request("POST", f"/v2/{NAME}/blobs/uploads/?digest={digest}", data, basic("alice", "s3cret"))
    assert r.status == 201
    assert c.request("GET", "/v2/").status == 401  # tells clients to send credentials if they have any
    assert c.request("GET", f"/v2/{NAME}/blobs/{digest}").status == 200
    assert c.request("DELETE", f"/v2/{NAME}/blobs/{digest}").status == 401
    assert c.request("POST", f"/v2/{NAME}/blobs/uploads/").status == 401
    assert c.request("GET", "/v2/_catalog").status == 401


def _challenge(header: str) -> dict[str, str]:
    scheme, _, rest = header.partition(" ")
    assert scheme == "Bearer"
    out = {}
    for part in rest.split('",'):
        key, _, value = part.partition("=")
        out[key.strip()] = value.strip('"')
    return out


def _token(c, challenge: dict[str, str], headers=None) -> str:
    url = urllib.parse.urlsplit(challenge["realm"])
    query = urllib.parse.urlencode({"service": challenge["service"], "scope": challenge.get("scope", "")})
    r = c.request("GET", f"{url.path}?{query}", headers=headers)
    assert r.status == 200, r.body
    body = r.json()
    assert body["token"] == body["access_token"] and body["expires_in"] > 0
    return body["token"]


def test_token_flow(make_server, htpasswd):
    c = make_server(auth="token", htpasswd=htpasswd).client
    r = c.request("GET", "/v2/")
    assert r.status == 401
    ch = _challenge(r.headers["WWW-Authenticate"])
    assert ch["realm"] == f"http://127.0.0.1:{c.port}/token" and ch["service"] == "ocibox"
    r = c.request("POST", f"/v2/{NAME}/blobs/uploads/")
    ch = _challenge(r.headers["WWW-Authenticate"])
    assert ch["scope"] == f"repository:{NAME}:pull,push"
    token = _token(c, ch, basic("alice", "s3cret"))
    bearer = {"Authorization": f"Bearer {token}"}
    assert c.request("POST", f"/v2/{NAME}/blobs/uploads/", headers=bearer).status == 202
    # the token is scoped: another repository, or delete, needs another token
    r = c.request("POST", "/v2/other/repo/blobs/uploads/", headers=bearer)
    assert r.status == 401 and 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
    assert c.request("GET", "/v2/", headers=bearer).status == 200
    assert c.request("GET", "/v2/", headers={"Authorization": "Bearer nonsense"}).status == 401
    # wrong credentials at the token endpoint
    url = f"/token?service=ocibox&scope=repository:{NAME}:pull"
    assert c.request("GET", url, headers=basic("alice", "nope")).status == 401
    # anonymous gets a token without grants
    anon = c.request("GET", url).json()["token"]
    r = c.request("GET", f"/v2/{NAME}/tags/list", headers={"Authorization": f"Bearer {anon}"})
    assert r.status == 401


def test_token_password_grant(make_server, htpasswd):
    c = make_server(auth="token", htpasswd=htpasswd).client
    form = urllib.parse.urlencode({"grant_type": "password", "username": "alice", "password": "s3cret",
                                   "service": "ocibox", "scope": f"repository:{NAME}:pull,push",
                                   "client_id": "test"}).encode()
    r = c.request("POST", "/token", form, {"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 200
    token = r.json()["access_token"]
    assert c.request("POST", f"/v2/{NAME}/blobs/uploads/",
                     headers={"Authorization": f"Bearer {token}"}).status == 202


def test_token_anonymous_pull(make_server, htpasswd):
    server = make_server(auth="token", htpasswd=htpasswd, anonymous_pull=True)
    c = server.client
    ch = _challenge(c.request("POST", f"/v2/{NAME}/blobs/uploads/").headers["WWW-Authenticate"])
    bearer = {"Authorization": f"Bearer {_token(c, ch, basic('alice', 's3cret'))}"}
    config = b"{}"
    digest = "sha256:" + __import__("hashlib").sha256(config).hexdigest()
    assert c.request("POST", f"/v2/{NAME}/blobs/uploads/?digest={digest}", config, bearer).status == 201
    m = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [],
                    "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest,
                               "size": 2}}).encode()
    assert c.request("PUT", f"/v2/{NAME}/manifests/v1", m, {**bearer, "Content-Type": OCI_MANIFEST}).status == 201
    assert c.request("GET", f"/v2/{NAME}/manifests/v1").status == 200
    assert c.request("DELETE", f"/v2/{NAME}/manifests/v1").status == 401


def test_token_key_survives_restart(make_server, htpasswd, tmp_path):
    root = str(tmp_path / "reg")
    first = make_server(auth="token", htpasswd=htpasswd, root=root)
    ch = _challenge(first.client.request("GET", f"/v2/{NAME}/tags/list").headers["WWW-Authenticate"])
    token = _token(first.client, ch, basic("alice", "s3cret"))
    first.stop()
    second = make_server(auth="token", htpasswd=htpasswd, root=root)
    r = second.client.request("GET", f"/v2/{NAME}/tags/list", headers={"Authorization": f"Bearer {token}"})
    assert r.status == 404  # authorized; the repository just does not exist


@pytest.fixture
def certificate(tmp_path) -> tuple[str, str]:
    need("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return str(cert), str(key)


def test_tls(make_server, certificate):
    import http.client

    cert, key = certificate
    server = make_server(tls_cert=cert, tls_key=key)
    context = ssl.create_default_context(cafile=cert)
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=10)
    conn.request("GET", "/v2/")
    assert conn.getresponse().status == 200
    conn.close()


@pytest.mark.peer
@pytest.mark.parametrize("mode", ["htpasswd", "token"])
def test_skopeo_with_credentials(make_server, htpasswd, certificate, tmp_path, mode):
    skopeo = need("skopeo")
    cert, key = certificate
    server = make_server(auth=mode, htpasswd=htpasswd, tls_cert=cert, tls_key=key)
    layout = tmp_path / "layout"
    from test_registry_skopeo import add_image

    from ocibox.image.layout import Layout

    src = Layout.init(str(layout))
    want = add_image(src, layers=2, tag="v1").digest
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "ca.crt").write_text(open(cert).read())
    dest = f"docker://127.0.0.1:{server.port}/{NAME}:v1"
    proc = subprocess.run([skopeo, "--insecure-policy", "copy", "--dest-cert-dir", str(certs),
                           f"oci:{layout}:v1", dest], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "unauthorized" in proc.stderr.lower() or "denied" in proc.stderr.lower()
    run([skopeo, "--insecure-policy", "copy", "--dest-cert-dir", str(certs), "--dest-creds", "alice:s3cret",
         f"oci:{layout}:v1", dest])
    back = tmp_path / "back"
    run([skopeo, "--insecure-policy", "copy", "--src-cert-dir", str(certs), "--src-creds", "alice:s3cret",
         dest, f"oci:{back}:v1"])
    assert Layout.open(str(back)).resolve("v1").digest == want

"""Credentials and TLS end to end: login/logout, stored credentials, Basic (docker-registry
htpasswd) and Bearer (ocibox's token server), custom CAs, untrusted certificates."""

from __future__ import annotations

import json
import subprocess

import bcrypt
import pytest

from conftest import need, ocibox_cmd, start_docker_registry, start_ocibox_registry, stop

pytestmark = pytest.mark.peer


@pytest.fixture
def htpasswd(tmp_path) -> str:
    path = tmp_path / "htpasswd"
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$", 1)
    path.write_text(f"alice:{hashed}\n")
    return str(path)


@pytest.fixture
def certificate(tmp_path) -> tuple[str, str, str]:
    """(cert, key, a cert dir holding the CA as ca.crt)."""
    need("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "ca.crt").write_bytes(cert.read_bytes())
    return str(cert), str(key), str(certs)


def _error(proc) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    return [x for x in proc.stderr.splitlines() if x.startswith("ocibox:")][0]


def test_login_basic_docker_registry(image_layout, htpasswd, tmp_path, no_auth_files, monkeypatch):
    server = start_docker_registry(tmp_path, auth=f"auth:\n  htpasswd:\n    realm: test\n    path: {htpasswd}\n")
    try:
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
        dest = server.ref("a/app:v1")
        assert "needs credentials" in _error(ocibox_cmd("copy", "-q", f"oci:{image_layout}:v1", dest, check=False))
        bad = ocibox_cmd("login", "-u", "alice", "-p", "wrong", server.host, check=False)
        assert "unauthorized as 'alice'" in _error(bad)
        assert not (tmp_path / "run" / "containers" / "auth.json").exists()
        ocibox_cmd("login", "-u", "alice", "-p", "s3cret", server.host)
        stored = json.loads((tmp_path / "run" / "containers" / "auth.json").read_text())
        assert server.host in stored["auths"]
        ocibox_cmd("copy", "-q", f"oci:{image_layout}:v1", dest)
        ocibox_cmd("copy", "-q", dest, f"oci:{tmp_path}/back:v1")
        ocibox_cmd("logout", server.host)
        assert "needs credentials" in _error(ocibox_cmd("inspect", dest, check=False))
        assert "not logged in" in _error(ocibox_cmd("logout", server.host, check=False))
        ocibox_cmd("inspect", "--creds", "alice:s3cret", dest)
        # skopeo reads the auth.json ocibox writes
        skopeo = need("skopeo")
        proc = subprocess.run([sys_python(), "-m", "ocibox.cli", "login", "-u", "alice", "--password-stdin",
                               server.host], input="s3cret\n", capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        out = subprocess.run([skopeo, "inspect", "--tls-verify=false", dest], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
    finally:
        stop(server)


def sys_python() -> str:
    import sys

    return sys.executable


def test_bearer_and_tls_ocibox_registry(image_layout, htpasswd, certificate, tmp_path, no_auth_files):
    cert, key, certs = certificate
    server = start_ocibox_registry(tmp_path, auth="token", htpasswd=htpasswd, tls_cert=cert, tls_key=key)
    try:
        dest = server.ref("b/app:v1")
        src = f"oci:{image_layout}:v1"
        untrusted = ocibox_cmd("copy", "-q", "--dest-creds", "alice:s3cret", src, dest, check=False)
        assert "TLS certificate not trusted" in _error(untrusted)
        bad = ocibox_cmd("copy", "-q", "--dest-cert-dir", certs, "--dest-creds", "alice:nope", src, dest,
                         check=False)
        assert "authentication failed for user 'alice'" in _error(bad)
        ocibox_cmd("copy", "-q", "--dest-cert-dir", certs, "--dest-creds", "alice:s3cret", src, dest)
        ocibox_cmd("copy", "-q", "--src-tls-verify=false", "--src-creds", "alice:s3cret", dest,
                   f"oci:{tmp_path}/back:v1")
        tags = json.loads(ocibox_cmd("list-tags", "--cert-dir", certs, "--creds", "alice:s3cret",
                                     server.ref("b/app")).stdout)
        assert tags["Tags"] == ["v1"]
    finally:
        stop(server)


def test_insecure_registry_from_registries_conf(image_layout, certificate, tmp_path, no_auth_files,
                                                monkeypatch):
    cert, key, _ = certificate
    server = start_ocibox_registry(tmp_path, tls_cert=cert, tls_key=key)
    try:
        src, dest = f"oci:{image_layout}:v1", server.ref("c/app:v1")
        conf = tmp_path / "registries.conf"
        conf.write_text('[[registry]]\nlocation = "elsewhere.example"\ninsecure = true\n')
        monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(conf))
        assert "TLS certificate not trusted" in _error(ocibox_cmd("copy", "-q", src, dest, check=False))
        conf.write_text(f'[[registry]]\nlocation = "{server.host}"\ninsecure = true\n')
        ocibox_cmd("copy", "-q", src, dest)
        conf.write_text(f'[registries.insecure]\nregistries = ["{server.host}"]\n')
        ocibox_cmd("copy", "-q", dest, f"oci:{tmp_path}/back:v1")
        # an explicit flag wins over the file
        assert "TLS certificate not trusted" in _error(
            ocibox_cmd("copy", "-q", "--src-tls-verify=true", dest, f"oci:{tmp_path}/b2:v1", check=False))
    finally:
        stop(server)


def test_no_creds_ignores_stored_credentials(image_layout, htpasswd, tmp_path, no_auth_files):
    server = start_docker_registry(tmp_path, auth=f"auth:\n  htpasswd:\n    realm: test\n    path: {htpasswd}\n")
    try:
        authfile = tmp_path / "auth.json"
        ocibox_cmd("login", "--authfile", str(authfile), "-u", "alice", "-p", "s3cret", server.host)
        src, dest = f"oci:{image_layout}:v1", server.ref("n/app:v1")
        ocibox_cmd("copy", "-q", "--authfile", str(authfile), src, dest)
        refused = ocibox_cmd("copy", "-q", "--authfile", str(authfile), "--dest-no-creds", src, dest, check=False)
        assert "needs credentials" in _error(refused)
        refused = ocibox_cmd("copy", "-q", "--authfile", str(authfile), "--src-no-creds", dest,
                             f"oci:{tmp_path}/x:v1", check=False)
        assert "needs credentials" in _error(refused)
        ocibox_cmd("copy", "-q", "--authfile", str(authfile), "--retry-times", "0", dest, f"oci:{tmp_path}/y:v1")
        both = ocibox_cmd("copy", "--dest-creds", "alice:s3cret", "--dest-no-creds", src, dest, check=False)
        assert "exclude each other" in _error(both)
    finally:
        stop(server)

"""Credential files, credential helpers and WWW-Authenticate parsing."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from ocibox.distribution import auth
from ocibox.distribution.auth import AuthError, Credentials, parse_challenges


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def test_challenges():
    [c] = parse_challenges('Bearer realm="https://auth.example/token",service="registry.example",'
                           'scope="repository:a/b:pull,push"')
    assert c.scheme == "bearer"
    assert c.params == {"realm": "https://auth.example/token", "service": "registry.example",
                        "scope": "repository:a/b:pull,push"}
    [b] = parse_challenges('Basic realm="Registry Realm"')
    assert b.scheme == "basic" and b.params["realm"] == "Registry Realm"
    both = parse_challenges('Basic realm="x", Bearer realm="y",service=z')
    assert [c.scheme for c in both] == ["basic", "bearer"]
    assert both[1].params == {"realm": "y", "service": "z"}
    assert parse_challenges("") == []


def test_creds_parse():
    assert Credentials.parse("u:p:q") == Credentials("u", "p:q")
    assert Credentials.parse("u") == Credentials("u", "")
    with pytest.raises(AuthError):
        Credentials.parse(":p")


def test_lookup_order_and_namespaces(no_auth_files, tmp_path, monkeypatch):
    home = no_auth_files
    containers = home / ".config" / "containers"
    containers.mkdir(parents=True)
    (containers / "auth.json").write_text(json.dumps({"auths": {
        "reg.example": {"auth": _b64("hostwide:1")},
        "reg.example/team": {"auth": _b64("team:2")},
    }}))
    docker = home / ".docker"
    docker.mkdir()
    (docker / "config.json").write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": _b64("hub:3")},
        "reg.example": {"auth": _b64("docker:4")},
    }}))
    assert auth.lookup("reg.example", "team/app") == Credentials("team", "2")
    assert auth.lookup("reg.example", "other/app") == Credentials("hostwide", "1")
    assert auth.lookup("docker.io", "library/busybox") == Credentials("hub", "3")
    assert auth.lookup("registry-1.docker.io", "library/busybox") == Credentials("hub", "3")
    assert auth.lookup("nowhere.example", "x") is None
    runtime = tmp_path / "run"
    (runtime / "containers").mkdir(parents=True)
    (runtime / "containers" / "auth.json").write_text(json.dumps({"auths": {
        "reg.example": {"auth": _b64("runtime:5")}}}))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert auth.lookup("reg.example", "other/app") == Credentials("runtime", "5")


def test_credential_helper(no_auth_files, tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-fake"
    helper.write_text('#!/bin/sh\nread host\n[ "$1" = get ] && [ "$host" = reg.example ] && '
                      'echo \'{"ServerURL":"reg.example","Username":"helper","Secret":"s3"}\' && exit 0\n'
                      'echo "credentials not found in native keychain"; exit 1\n')
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    docker = no_auth_files / ".docker"
    docker.mkdir(parents=True)
    (docker / "config.json").write_text(json.dumps({"credHelpers": {"reg.example": "fake",
                                                                     "other.example": "fake",
                                                                     "gone.example": "missing"}}))
    assert auth.lookup("reg.example", "a") == Credentials("helper", "s3")
    assert auth.lookup("other.example", "a") is None
    with pytest.raises(AuthError, match="docker-credential-missing is not installed"):
        auth.lookup("gone.example", "a")


def test_store_and_remove(no_auth_files, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    path = auth.store("reg.example:5000", Credentials("u", "p"))
    assert path == str(tmp_path / "run" / "containers" / "auth.json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert json.loads(open(path).read())["auths"]["reg.example:5000"]["auth"] == _b64("u:p")
    assert auth.lookup("reg.example:5000", "x") == Credentials("u", "p")
    assert auth.remove("reg.example:5000")
    assert not auth.remove("reg.example:5000")
    assert auth.lookup("reg.example:5000", "x") is None


def test_malformed_file_is_one_clear_error(no_auth_files, monkeypatch, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(bad))
    with pytest.raises(AuthError, match="unreadable credentials file"):
        auth.lookup("reg.example")


def test_identity_tokens_from_auth_file_and_helper(no_auth_files, tmp_path, monkeypatch):
    auth_file = tmp_path / "auth.json"
    auth_file.write_text(json.dumps({"auths": {
        "only-token.example": {"identitytoken": "rt-1"},
        "both.example": {"auth": _b64("u:p"), "identitytoken": "rt-2"},
    }, "credHelpers": {"helper.example": "fake"}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth_file))
    assert auth.lookup("only-token.example") == Credentials("", "", "rt-1")
    assert auth.lookup("both.example").identity_token == "rt-2"
    assert "rt-2" not in repr(auth.lookup("both.example"))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-fake"
    helper.write_text('#!/bin/sh\necho \'{"Username":"<token>","Secret":"rt-3"}\'\n')
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    assert auth.lookup("helper.example") == Credentials("", "", "rt-3")

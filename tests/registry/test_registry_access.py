"""Access rules: per-user and per-group grants on repository globs, in basic and token auth."""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.parse

import bcrypt
import pytest
from test_podman import image, podman_program, podmans  # noqa: F401 (fixtures)

from conftest import OCI_MANIFEST, need, run, sha256
from ocibox.errors import UsageError
from ocibox.registry.auth import Policy, Scope
from ocibox.registry.config import RegistryConfig, load_config

USERS = ("alice", "bob", "carol")
RULES = [
    {"users": ["*"], "repositories": ["public/**"], "actions": ["pull"]},
    {"users": ["anonymous"], "repositories": ["public/*"], "actions": ["pull"]},
    {"users": ["*"], "repositories": ["{user}/**"], "actions": ["*"]},
    {"groups": ["dev"], "repositories": ["team/**", "public/**"], "actions": ["pull", "push"]},
]
GROUPS = {"dev": ["carol"]}


def basic(user: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:pw-{user}".encode()).decode()}


@pytest.fixture
def htpasswd(tmp_path) -> str:
    path = tmp_path / "htpasswd"
    lines = [f"{u}:" + bcrypt.hashpw(f"pw-{u}".encode(), bcrypt.gensalt(rounds=4)).decode() for u in USERS]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def policy(anonymous_pull: bool = False) -> Policy:
    return Policy.from_settings(RULES, GROUPS, anonymous_pull)


def test_policy_union_of_rules_and_globs():
    p = policy()
    assert p.actions("alice", "alice/app") == {"pull", "push", "delete"}
    assert p.actions("alice", "alice/a/b/c") == {"pull", "push", "delete"}
    assert p.actions("alice", "alicex/app") == frozenset()  # {user} is a whole component
    assert p.actions("alice", "bob/app") == frozenset()
    assert p.actions("alice", "public/x/y") == {"pull"}
    assert p.actions("carol", "public/x/y") == {"pull", "push"}  # union of two rules
    assert p.actions("carol", "team/a/b") == {"pull", "push"}
    assert p.actions("alice", "team/a") == frozenset()
    assert p.actions(None, "public/x") == {"pull"}
    assert p.actions(None, "public/x/y") == frozenset()  # one * stays inside a component
    assert p.actions(None, "anonymous/x") == frozenset()  # {user} never matches anonymous
    assert p.allowed("bob", Scope("repository", "bob/x", frozenset({"pull", "push"}))) == {"pull", "push"}
    assert p.allowed("bob", Scope("registry", "catalog", frozenset({"*"}))) == {"*"}
    assert p.allowed(None, Scope("registry", "catalog", frozenset({"*"}))) == frozenset()
    # no rules: every known user may do everything; anonymous_pull adds pulls for anonymous
    default = Policy.from_settings([], {}, True)
    assert default.actions("anyone", "x/y") == {"pull", "push", "delete"}
    assert default.actions(None, "x/y") == {"pull"}
    assert Policy.from_settings([], {}, False).actions(None, "x") == frozenset()


@pytest.mark.parametrize("rules, groups, message", [
    ([{"users": ["a"], "repositories": ["x"], "actions": ["write"]}], {}, "unknown action 'write'"),
    ([{"users": ["a"], "repositories": ["x"]}], {}, "needs repositories"),
    ([{"repositories": ["x"], "actions": ["pull"]}], {}, "needs users or groups"),
    ([{"groups": ["ops"], "repositories": ["x"], "actions": ["pull"]}], {}, "unknown group 'ops'"),
    ([{"users": ["a"], "repos": ["x"], "actions": ["pull"]}], {}, "unknown key 'repos'"),
    (["a"], {}, "a rule is a table"),
    ([], {"dev": "alice"}, "groups.dev must be a list"),
])
def test_policy_errors(rules, groups, message):
    with pytest.raises(UsageError, match=message):
        Policy.from_settings(rules, groups, False)


def test_config_file_with_rules(tmp_path, htpasswd):
    path = tmp_path / "r.toml"
    path.write_text(f'auth = "htpasswd"\nhtpasswd = "{htpasswd}"\n[groups]\ndev = ["carol"]\n'
                    '[[access]]\ngroups = ["dev"]\nrepositories = ["team/**"]\nactions = ["*"]\n')
    config = load_config(str(path))
    assert config.groups == {"dev": ["carol"]} and config.access[0]["actions"] == ["*"]
    path.write_text('[[access]]\nusers = ["a"]\nrepositories = ["x"]\nactions = ["pull"]\n')
    with pytest.raises(UsageError, match="access rules need auth"):
        load_config(str(path))
    path.write_text('auth = "token"\naccess = "everyone"\n')
    with pytest.raises(UsageError, match="access must be a list"):
        load_config(str(path))


def _push(c, name: str, headers: dict[str, str], tag: str = "v1") -> int:
    """Push a small image; the status of the first refused request, or 201."""
    config = json.dumps({"repo": name}).encode()
    r = c.request("POST", f"/v2/{name}/blobs/uploads/?digest={sha256(config)}", config, headers)
    if r.status != 201:
        return r.status
    m = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [],
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               "digest": sha256(config), "size": len(config)}}).encode()
    r = c.request("PUT", f"/v2/{name}/manifests/{tag}", m, {**headers, "Content-Type": OCI_MANIFEST})
    return r.status


def test_basic_auth_rules(make_server, htpasswd):
    c = make_server(auth="htpasswd", htpasswd=htpasswd, access=RULES, groups=GROUPS).client
    assert _push(c, "alice/app", basic("alice")) == 201
    assert _push(c, "carol/app", basic("carol")) == 201
    assert _push(c, "public/tool", basic("carol")) == 201
    assert _push(c, "team/a/b", basic("carol")) == 201
    r = c.request("POST", "/v2/alice/app/blobs/uploads/", headers=basic("bob"))
    assert r.status == 403 and r.codes == ["DENIED"]
    assert c.request("GET", "/v2/alice/app/manifests/v1", headers=basic("bob")).status == 403
    assert c.request("GET", "/v2/public/tool/manifests/v1", headers=basic("bob")).status == 200
    assert _push(c, "public/tool", basic("bob")) == 403
    assert c.request("DELETE", "/v2/team/a/b/manifests/v1", headers=basic("carol")).status == 403
    assert c.request("DELETE", "/v2/carol/app/manifests/v1", headers=basic("carol")).status == 202
    # anonymous: public/* only, and a refusal asks for credentials (401), not DENIED
    assert c.request("GET", "/v2/").status == 401  # so that clients with credentials send them
    assert c.request("GET", "/v2/public/tool/manifests/v1").status == 200
    r = c.request("GET", "/v2/team/a/b/manifests/v1")
    assert r.status == 401 and r.codes == ["UNAUTHORIZED"]
    assert c.request("POST", "/v2/public/tool/blobs/uploads/").status == 401
    # a mount needs pull on the source
    digest = sha256(json.dumps({"repo": "alice/app"}).encode())
    r = c.request("POST", f"/v2/bob/app/blobs/uploads/?mount={digest}&from=alice/app", headers=basic("bob"))
    assert r.status == 403
    # the catalog lists what the user may pull; anonymous users must log in for it
    def catalog(user):
        r = c.request("GET", "/v2/_catalog", headers=basic(user))
        assert r.status == 200, r.body
        return r.json()["repositories"]
    assert catalog("alice") == ["alice/app", "public/tool"]
    assert catalog("bob") == ["public/tool"]
    assert catalog("carol") == ["carol/app", "public/tool", "team/a/b"]
    assert c.request("GET", "/v2/_catalog").status == 401
    r = c.request("GET", "/v2/_catalog?n=1", headers=basic("alice"))
    assert r.json()["repositories"] == ["alice/app"] and "last=alice%2Fapp" in r.headers["Link"]


def _claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _get_token(c, scopes: list[str], headers=None) -> dict:
    query = urllib.parse.urlencode([("service", "ocibox")] + [("scope", s) for s in scopes])
    r = c.request("GET", f"/token?{query}", headers=headers)
    assert r.status == 200, r.body
    return r.json()


def test_token_grants_only_what_rules_allow(make_server, htpasswd):
    c = make_server(auth="token", htpasswd=htpasswd, access=RULES, groups=GROUPS).client
    body = _get_token(c, ["repository:alice/app:pull,push,delete", "repository:bob/app:pull,push",
                          "repository:public/x:pull,push", "registry:catalog:*"], basic("alice"))
    access = {(a["type"], a["name"]): a["actions"] for a in _claims(body["token"])["access"]}
    assert access == {("repository", "alice/app"): ["delete", "pull", "push"],
                      ("repository", "public/x"): ["pull"], ("registry", "catalog"): ["*"]}
    alice = {"Authorization": "Bearer " + body["token"]}
    assert _push(c, "alice/app", alice) == 201
    # refused by the rules: DENIED (a new token would not help)
    r = c.request("POST", "/v2/bob/app/blobs/uploads/", headers=alice)
    assert r.status == 403 and r.codes == ["DENIED"]
    r = c.request("POST", "/v2/public/x/blobs/uploads/", headers=alice)
    assert r.status == 403 and r.codes == ["DENIED"]
    # allowed by the rules but not in this token: a challenge for a wider token
    r = c.request("GET", "/v2/alice/other/tags/list", headers=alice)
    assert r.status == 401 and 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
    r = c.request("GET", "/v2/_catalog", headers=alice)
    assert r.status == 200 and r.json()["repositories"] == ["alice/app"]
    # anonymous: pull of public/* only; catalog not granted
    anon = _get_token(c, ["repository:public/x:pull,push", "repository:team/x:pull", "registry:catalog:*"])
    assert [(a["name"], a["actions"]) for a in _claims(anon["token"])["access"]] == [("public/x", ["pull"])]
    r = c.request("GET", "/v2/team/x/tags/list", headers={"Authorization": "Bearer " + anon["token"]})
    assert r.status == 401
    assert c.request("GET", "/v2/public/x/tags/list").status == 404  # anonymous, allowed, not there


@pytest.mark.peer
@pytest.mark.parametrize("mode", ["htpasswd", "token"])
def test_skopeo_under_rules(make_server, htpasswd, tmp_path, mode):
    skopeo = need("skopeo")
    server = make_server(auth=mode, htpasswd=htpasswd, access=RULES, groups=GROUPS)
    from test_registry_skopeo import add_image

    from ocibox.image.layout import Layout

    layout = tmp_path / "layout"
    want = add_image(Layout.init(str(layout)), layers=2, tag="v1").digest
    base = f"docker://127.0.0.1:{server.port}"

    def copy(creds: str | None, src: str, dst: str) -> subprocess.CompletedProcess:
        argv = [skopeo, "--insecure-policy", "copy", "--src-tls-verify=false", "--dest-tls-verify=false"]
        if creds:
            argv += ["--src-creds" if src.startswith("docker") else "--dest-creds", creds]
        return subprocess.run([*argv, src, dst], capture_output=True, text=True, timeout=120)

    # refused: 403 (skopeo's first request is a HEAD, so it has no error body to quote)
    proc = copy("bob:pw-bob", f"oci:{layout}:v1", f"{base}/alice/app:v1")
    assert proc.returncode != 0 and ("403" in proc.stderr or "denied" in proc.stderr), proc.stderr
    assert not (server.config.root and __import__("os").path.exists(f"{server.config.root}/repositories/alice"))
    run([skopeo, "--insecure-policy", "copy", "--dest-tls-verify=false", "--dest-creds", "alice:pw-alice",
         f"oci:{layout}:v1", f"{base}/alice/app:v1"])
    run([skopeo, "--insecure-policy", "copy", "--dest-tls-verify=false", "--dest-creds", "carol:pw-carol",
         f"oci:{layout}:v1", f"{base}/public/app:v1"])
    # bob may not read alice's repository, but may read public/ (and so may anonymous users)
    proc = copy("bob:pw-bob", f"{base}/alice/app:v1", f"oci:{tmp_path / 'no'}:v1")
    assert proc.returncode != 0 and ("403" in proc.stderr or "denied" in proc.stderr), proc.stderr
    for creds, out in (("bob:pw-bob", "bob"), (None, "anon")):
        proc = copy(creds, f"{base}/public/app:v1", f"oci:{tmp_path / out}:v1")
        assert proc.returncode == 0, proc.stderr
        assert Layout.open(str(tmp_path / out)).resolve("v1").digest == want
    proc = subprocess.run([skopeo, "list-tags", "--tls-verify=false", "--creds", "bob:pw-bob",
                           f"{base}/alice/app"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0


def test_rules_need_auth():
    from ocibox.registry.app import make_guard

    with pytest.raises(UsageError, match="access rules need auth"):
        make_guard(RegistryConfig(access=RULES))


@pytest.mark.peer
def test_podman_under_rules(make_server, htpasswd, podmans, image, tmp_path):  # noqa: F811 (fixtures)
    def _refused(proc: subprocess.CompletedProcess) -> bool:
        text = proc.stderr.lower()
        return proc.returncode != 0 and ("denied" in text or "403" in text)  # DENIED, not a login prompt

    pusher, puller = podmans
    layout, _, image_id = image
    server = make_server(auth="token", htpasswd=htpasswd, access=RULES, groups=GROUPS)
    registry = f"127.0.0.1:{server.port}"
    loaded = pusher("pull", f"oci:{layout}:v1").stdout.split()[-1]
    pusher("login", "--tls-verify=false", "-u", "bob", "-p", "pw-bob", registry)
    # bob may push to his own namespace, not to alice's nor to public/
    pusher("push", "--tls-verify=false", loaded, f"docker://{registry}/bob/busybox:v1")
    for target in ("alice/busybox:v1", "public/busybox:v1"):
        proc = pusher("push", "--tls-verify=false", loaded, f"docker://{registry}/{target}", check=False)
        assert _refused(proc), proc.stderr
    assert c_tags(server, "bob/busybox") == ["v1"]
    # alice may not pull bob's image; bob may
    puller("login", "--tls-verify=false", "-u", "alice", "-p", "pw-alice", registry)
    proc = puller("pull", "--tls-verify=false", f"{registry}/bob/busybox:v1", check=False)
    assert _refused(proc), proc.stderr
    puller("login", "--tls-verify=false", "-u", "bob", "-p", "pw-bob", registry)
    assert "sha256:" + puller("pull", "--tls-verify=false", f"{registry}/bob/busybox:v1").stdout.split()[-1] \
        == image_id


def c_tags(server, name: str) -> list[str]:
    token = _get_token(server.client, [f"repository:{name}:pull"], basic("bob"))["token"]
    r = server.client.request("GET", f"/v2/{name}/tags/list", headers={"Authorization": f"Bearer {token}"})
    assert r.status == 200, r.body
    return r.json()["tags"]


def test_cli_access_command(tmp_path, htpasswd):
    import sys

    config = tmp_path / "rules.json"
    config.write_text(json.dumps({"auth": "htpasswd", "htpasswd": htpasswd, "access": RULES, "groups": GROUPS}))
    cli = [sys.executable, "-m", "ocibox.cli", "registry", "access", "--config", str(config)]
    out = subprocess.run([*cli, "carol", "carol/x", "team/a/b", "alice/x", "public/p"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["carol/x\tpull,push,delete", "team/a/b\tpull,push", "alice/x\t-",
                                       "public/p\tpull,push"]
    out = subprocess.run([*cli, "anonymous", "public/p", "public/p/q"], capture_output=True, text=True, timeout=60)
    assert out.stdout.splitlines() == ["public/p\tpull", "public/p/q\t-"]
    config.write_text(json.dumps({"auth": "token", "access": [{"users": ["a"], "actions": ["pull"]}]}))
    out = subprocess.run([*cli, "a", "x"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "needs repositories" in out.stderr and "Traceback" not in out.stderr

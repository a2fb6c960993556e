"""Interop with podman: log in, push and pull against ocibox's registry, with htpasswd and token auth.

The image comes from the ocibox library (``import_rootfs`` of the busybox
rootfs, two layers) and enters podman's store with ``podman pull oci:...``.
Every podman command runs with a private storage root, run root, temporary
directory and credentials file under the test's tmp dir (vfs driver: no
mounts to leave behind), so the host's podman store and logins are untouched.
Podman only moves images here; it runs no container, so the machine's
containers.conf ulimits do not matter.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from conftest import OCI_MANIFEST, need
from ocibox.image.layout import Layout

pytestmark = pytest.mark.peer

USER, PASSWORD = "alice", "s3cret"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


class Podman:
    """podman with its own storage and credentials; ``store`` names a separate image store."""

    def __init__(self, program: str, base: Path, runroot: str, store: str) -> None:
        self.authfile = base / f"auth-{store}.json"
        self.authfile.write_text("{}")
        self.argv = [program, "--root", str(base / store / "root"), "--runroot", f"{runroot}/{store}",
                     "--tmpdir", str(base / "tmp"), "--storage-driver", "vfs", "--events-backend", "none"]

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        argv = [*self.argv, *args]
        if args[0] in ("login", "logout", "push", "pull"):
            argv[len(self.argv) + 1:len(self.argv) + 1] = ["--authfile", str(self.authfile)]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if check:
            assert proc.returncode == 0, f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr}"
        return proc


@pytest.fixture
def podman_program() -> str:
    return need("podman")


@pytest.fixture
def podmans(podman_program, tmp_path) -> Iterator[tuple[Podman, Podman]]:
    """Two podmans with separate stores: one pushes, the other pulls into an empty store."""
    base = tmp_path / "podman"
    (base / "tmp").mkdir(parents=True)
    runroot = tempfile.mkdtemp(prefix="ocibox-podman-")  # podman wants a run root under 50 characters
    try:
        yield Podman(podman_program, base, runroot, "pusher"), Podman(podman_program, base, runroot, "puller")
    finally:
        shutil.rmtree(runroot, ignore_errors=True)


@pytest.fixture
def htpasswd(tmp_path) -> str:
    path = tmp_path / "htpasswd"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$", 1)
    path.write_text(f"{USER}:{hashed}\n")
    return str(path)


@pytest.fixture
def image(tmp_path, busybox_rootfs) -> tuple[Path, str, str]:
    """An OCI layout made by the ocibox library: busybox plus an /etc/motd layer, tagged v1.

    Returns the layout path, the manifest digest and the config digest (podman's image ID).
    """
    from ocibox.image.mutate import import_rootfs

    path = tmp_path / "layout"
    layout = Layout.init(str(path))
    import_rootfs(layout, "v1", str(busybox_rootfs))
    extra = tmp_path / "extra"
    (extra / "etc").mkdir(parents=True)
    (extra / "etc" / "motd").write_text("pushed by podman\n")
    desc = import_rootfs(layout, "v1", str(extra))
    return path, desc.digest, layout.image("v1").manifest.config.digest


def _auth_headers(server, mode: str, name: str) -> dict[str, str]:
    """Credentials for a direct look at the registry: Basic, or a pull token from /token."""
    basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    if mode == "htpasswd":
        return {"Authorization": basic}
    r = server.client.request("GET", f"/token?service=ocibox&scope=repository:{name}:pull",
                              headers={"Authorization": basic})
    assert r.status == 200, r.body
    return {"Authorization": "Bearer " + r.json()["token"]}


def _refused(proc: subprocess.CompletedProcess) -> bool:
    text = proc.stderr.lower()
    return proc.returncode != 0 and any(
        word in text for word in ("unauthorized", "authentication required", "invalid username/password",
                                  "denied"))


@pytest.mark.parametrize("mode", ["htpasswd", "token"])
def test_podman_login_push_pull(mode, make_server, htpasswd, podmans, image, tmp_path):
    pusher, puller = podmans
    layout, layout_digest, image_id = image
    server = make_server(auth=mode, htpasswd=htpasswd)
    registry = f"127.0.0.1:{server.port}"
    name = "podman/busybox"

    # Into podman's private store straight from the ocibox-made layout: the image ID is the config digest.
    loaded = pusher("pull", f"oci:{layout}:v1").stdout.split()[-1]
    assert "sha256:" + loaded == image_id
    assert pusher("image", "inspect", "--format", "{{.Digest}}", loaded).stdout.strip() == layout_digest

    # Without credentials, a push is refused.
    proc = pusher("push", "--tls-verify=false", loaded, f"docker://{registry}/{name}:v1", check=False)
    assert _refused(proc), proc.stderr

    # A wrong password is refused and stores nothing; the right one logs in.
    proc = pusher("login", "--tls-verify=false", "-u", USER, "-p", "wrong", registry, check=False)
    assert proc.returncode != 0 and "invalid username/password" in proc.stderr.lower(), proc.stderr
    assert registry not in json.loads(pusher.authfile.read_text()).get("auths", {})
    proc = pusher("login", "--tls-verify=false", "-u", USER, "-p", PASSWORD, registry)
    assert "Login Succeeded" in proc.stdout
    assert registry in json.loads(pusher.authfile.read_text())["auths"]

    # Push in podman's default (OCI) format and as Docker schema2; the registry serves the digests
    # podman reports, with the media type it pushed.
    pushed = {}
    for tag, fmt, media_type in (("v1", "oci", OCI_MANIFEST), ("v2s2", "v2s2", DOCKER_MANIFEST)):
        digestfile = tmp_path / f"digest-{tag}"
        pusher("push", "--tls-verify=false", "--format", fmt, "--digestfile", str(digestfile),
               loaded, f"docker://{registry}/{name}:{tag}")
        digest = digestfile.read_text().strip()
        r = server.client.request("GET", f"/v2/{name}/manifests/{tag}",
                                  headers={**_auth_headers(server, mode, name),
                                           "Accept": f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"})
        assert r.status == 200, r.body
        assert r.headers["Docker-Content-Digest"] == digest
        assert "sha256:" + hashlib.sha256(r.body).hexdigest() == digest
        assert r.headers["Content-Type"] == media_type
        manifest = json.loads(r.body)
        assert manifest["config"]["digest"] == image_id  # the config travels byte for byte
        assert len(manifest["layers"]) == 2
        pushed[tag] = digest

    # A second podman with an empty store: refused before login, then pulls the same digests back.
    proc = puller("pull", "--tls-verify=false", f"{registry}/{name}:v1", check=False)
    assert _refused(proc), proc.stderr
    puller("login", "--tls-verify=false", "-u", USER, "-p", PASSWORD, registry)
    for tag, digest in pushed.items():
        # by tag, then by digest: the same image ID, and podman records the digest it was served
        for ref in (f"{registry}/{name}:{tag}", f"{registry}/{name}@{digest}"):
            pulled_id = puller("pull", "--tls-verify=false", ref).stdout.split()[-1]
            assert "sha256:" + pulled_id == image_id
            repo_digests = puller("image", "inspect", "--format", "{{json .RepoDigests}}", ref).stdout
            assert f"{registry}/{name}@{digest}" in json.loads(repo_digests)
    # one image in the puller's store, with both manifests' digests
    assert puller("images", "-q", "--no-trunc").stdout.split() == [image_id]

    # Logged out, the pull is refused again.
    puller("logout", registry)
    proc = puller("pull", "--tls-verify=false", f"{registry}/{name}:v1", check=False)
    assert _refused(proc), proc.stderr

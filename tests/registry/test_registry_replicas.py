"""Two ``ocibox registry serve`` processes on one --root, and gc from a third, all at once."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from multiprocessing.pool import ThreadPool
from pathlib import Path

import pytest
from test_registry_cli import start

from conftest import OCI_MANIFEST, Client, sha256

NAME = "replica/app"
pytestmark = pytest.mark.slow


def _serve(root: Path, *args: str) -> tuple[subprocess.Popen, int]:
    # no access log: start() pipes stderr and nobody reads it while the test runs
    config = root.parent / "quiet.toml"
    config.write_text('access_log = ""\n')
    return start("--root", str(root), "--config", str(config), *args)


def _stop(*procs: subprocess.Popen) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        assert proc.wait(10) == 0, proc.stderr.read().decode()


def _upload_across(clients: list[Client], name: str, data: bytes, rng: random.Random) -> str:
    """A chunked upload started on one server, continued and finished on either."""
    c = rng.choice(clients)
    r = c.request("POST", f"/v2/{name}/blobs/uploads/")
    assert r.status == 202, r.body
    location = r.headers["Location"]
    step = max(1, len(data) // 3)
    for off in range(0, len(data), step):
        chunk = data[off:off + step]
        r = rng.choice(clients).request("PATCH", location, chunk,
                                        {"Content-Range": f"{off}-{off + len(chunk) - 1}"})
        assert r.status == 202, r.body
        location = r.headers["Location"]
    r = rng.choice(clients).request("PUT", f"{location}?digest={sha256(data)}")
    assert r.status == 201, r.body
    return sha256(data)


def _manifest(config: str, layers: list[tuple[str, int]]) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
                       "layers": [{"mediaType": "application/octet-stream", "digest": d, "size": n}
                                  for d, n in layers]}).encode()


def _pusher(clients, worker: int, tag_of, done, errors, stop: threading.Event) -> None:
    rng = random.Random(worker)
    n = 0
    try:
        while not stop.is_set():
            layers = []
            for _ in range(2):
                data = os.urandom(rng.randrange(1, 300_000))
                layers.append((_upload_across(clients, NAME, data, rng), len(data)))
            # a layer shared by every image: pushed again and again while gc runs
            shared = b"common layer" * 1000
            layers.append((rng.choice(clients).push_blob(NAME, shared), len(shared)))
            config = rng.choice(clients).push_blob(NAME, b"{}")
            manifest = _manifest(config, layers)
            tag = tag_of(worker, n)
            r = rng.choice(clients).push_manifest(NAME, tag, manifest)
            assert r.status == 201, r.body
            done.append((tag, manifest))
            n += 1
    except Exception as e:  # reported by the test thread
        errors.append(e)


def _gc_loop(root: Path, stop: threading.Event, runs: list[int], errors) -> None:
    while not stop.is_set():
        proc = subprocess.run([sys.executable, "-m", "ocibox.cli", "registry", "gc", "--root", str(root),
                               "--grace", "5", "--json"], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            errors.append(AssertionError(proc.stderr))
            return
        runs.append(len(json.loads(proc.stdout)["blobs_removed"]))
        time.sleep(0.1)


def _plant_orphan(root: Path, data: bytes) -> Path:
    digest = hashlib.sha256(data).hexdigest()
    path = root / "blobs" / "sha256" / digest[:2] / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    old = time.time() - 7200
    os.utime(path, (old, old))
    return path


def test_two_servers_one_root_with_gc(tmp_path):
    root = tmp_path / "data"
    a, port_a = _serve(root)
    b, port_b = _serve(root)
    clients = [Client(port_a), Client(port_b)]
    orphans = [_plant_orphan(root, f"orphan {i}".encode()) for i in range(5)]
    done: list[tuple[str, bytes]] = []
    errors: list[BaseException] = []
    gc_runs: list[int] = []
    stop = threading.Event()
    try:
        # four workers push their own tags; two push one tag ("shared") from both servers
        workers = [threading.Thread(target=_pusher, args=(clients, i, lambda w, n: f"w{w}-{n}", done, errors, stop))
                   for i in range(4)]
        workers += [threading.Thread(target=_pusher, args=(clients, 10 + i, lambda w, n: "shared", done, errors,
                                                           stop)) for i in range(2)]
        gc = threading.Thread(target=_gc_loop, args=(root, stop, gc_runs, errors))
        for t in [*workers, gc]:
            t.start()
        time.sleep(8)
        stop.set()
        for t in [*workers, gc]:
            t.join(60)
        assert not errors, errors
        assert len(gc_runs) >= 3 and len(done) >= 20, (gc_runs, len(done))
        assert not any(p.exists() for p in orphans), "gc removed nothing while pushes went on"

        # every tag intact, read through both servers: the manifest, and every blob it names
        latest = {}
        for tag, manifest in done:
            latest.setdefault(tag, []).append(manifest)
        for tag, manifests in latest.items():
            for c in clients:
                r = c.request("GET", f"/v2/{NAME}/manifests/{tag}")
                assert r.status == 200, (tag, r.body)
                assert r.body in manifests if tag == "shared" else r.body == manifests[-1]
                assert r.headers["Docker-Content-Digest"] == sha256(r.body)
        for _, manifest in done:
            m = json.loads(manifest)
            for desc in [m["config"], *m["layers"]]:
                blob = random.choice(clients).request("GET", f"/v2/{NAME}/blobs/{desc['digest']}")
                assert blob.status == 200 and sha256(blob.body) == desc["digest"]
        tags = clients[0].request("GET", f"/v2/{NAME}/tags/list").json()["tags"]
        assert sorted(tags) == sorted(latest)
    finally:
        stop.set()
        _stop(a, b)
    # every blob file hashes to its name; no upload left open
    for dirpath, _, files in os.walk(root / "blobs"):
        for f in files:
            assert not f.startswith(".tmp-"), f"temporary file left: {f}"
            with open(os.path.join(dirpath, f), "rb") as fh:
                assert hashlib.sha256(fh.read()).hexdigest() == f, f"blob {f} does not hash to its name"
    assert list((root / "repositories" / NAME / "_uploads").iterdir()) == []


def test_one_upload_written_through_two_servers_at_once(tmp_path):
    """Two streamed PATCHes of one upload, one to each server, at the same time: one after the other."""
    root = tmp_path / "data"
    a, port_a = _serve(root)
    b, port_b = _serve(root)
    try:
        ca, cb = Client(port_a), Client(port_b)
        for _ in range(3):
            location = ca.request("POST", f"/v2/{NAME}/blobs/uploads/").headers["Location"]
            d1, d2 = os.urandom(6 << 20), os.urandom(6 << 20)
            results: dict[int, int] = {}

            def patch(c: Client, data: bytes, key: int, location: str = location, results=results) -> None:
                results[key] = c.request("PATCH", location, data).status

            threads = [threading.Thread(target=patch, args=(c, d, k)) for c, d, k in ((ca, d1, 1), (cb, d2, 2))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert results == {1: 202, 2: 202}
            uuid = location.rsplit("/", 1)[1]
            data = (root / "repositories" / NAME / "_uploads" / uuid / "data").read_bytes()
            assert data in (d1 + d2, d2 + d1), "the two requests' bytes interleaved"
            r = cb.request("PUT", f"{location}?digest={sha256(data)}")
            assert r.status == 201, r.body
            assert ca.request("GET", f"/v2/{NAME}/blobs/{sha256(data)}").body == data
    finally:
        _stop(a, b)


def test_token_servers_started_together_share_one_key(tmp_path):
    import base64

    import bcrypt

    users = tmp_path / "htpasswd"
    users.write_text("bob:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode() + "\n")
    root = tmp_path / "data"
    args = ("--auth", "token", "--htpasswd", str(users))
    procs = []
    try:
        # started at the same moment on an empty root: both create the key
        with ThreadPool(2) as pool:
            procs = pool.map(lambda _: _serve(root, *args), range(2))
        (a, port_a), (b, port_b) = procs
        auth = {"Authorization": "Basic " + base64.b64encode(b"bob:pw").decode()}
        for issuer, verifier in ((port_a, port_b), (port_b, port_a)):
            r = Client(issuer).request("GET", f"/token?service=ocibox&scope=repository:{NAME}:pull", headers=auth)
            token = r.json()["token"]
            r = Client(verifier).request("GET", f"/v2/{NAME}/tags/list", headers={"Authorization": f"Bearer {token}"})
            assert r.status == 404, r.body  # accepted; the repository is just not there
    finally:
        _stop(*(p for p, _ in procs))



def test_lock_held_elsewhere_is_429(make_server, tmp_path):
    """A lock another process holds past lock_timeout: TOOMANYREQUESTS with Retry-After, nothing named."""
    server = make_server(lock_timeout=0.3)
    c = server.client
    config = c.push_blob(NAME, b"{}")
    manifest = _manifest(config, [])
    lock_file = Path(server.config.root) / "_locks" / "gc.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, time\n"
                               f"f = open({str(lock_file)!r}, 'a'); fcntl.flock(f, fcntl.LOCK_EX)\n"
                               "print('held', flush=True); time.sleep(60)"], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"held"  # as gc holds it while it deletes a blob
        r = c.push_manifest(NAME, "v1", manifest)
        assert r.status == 429 and r.codes == ["TOOMANYREQUESTS"] and r.headers["Retry-After"] == "1"
        assert c.request("GET", f"/v2/{NAME}/manifests/v1").status == 404
    finally:
        holder.kill()
        holder.wait()
    assert c.push_manifest(NAME, "v1", manifest).status == 201


def test_push_and_delete_of_one_manifest_through_two_servers(tmp_path):
    """One server pushes a manifest (with a subject) under a tag again and again; the other deletes it.

    Afterwards no tag points at a deleted manifest, and the referrers list it exactly when it exists.
    """
    root = tmp_path / "data"
    a, port_a = _serve(root)
    b, port_b = _serve(root)
    pusher, deleter = Client(port_a), Client(port_b)
    try:
        subject_digest, subject = pusher.push_image(NAME, "base")
        config = pusher.push_blob(NAME, b"{}")
        versions = []
        for i in range(2):
            m = json.loads(_manifest(config, []))
            m["subject"] = {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": len(subject)}
            m["annotations"] = {"v": str(i)}
            versions.append(json.dumps(m).encode())
        stop = threading.Event()
        errors: list[BaseException] = []

        def push() -> None:
            n = 0
            while not stop.is_set():
                r = pusher.push_manifest(NAME, f"t{n % 3}", versions[n % 2])
                if r.status != 201:
                    errors.append(AssertionError(r.body))
                n += 1

        def delete() -> None:
            while not stop.is_set():
                r = deleter.request("DELETE", f"/v2/{NAME}/manifests/{sha256(versions[0])}")
                if r.status not in (202, 404):
                    errors.append(AssertionError(r.body))

        threads = [threading.Thread(target=push), threading.Thread(target=delete)]
        for t in threads:
            t.start()
        time.sleep(4)
        stop.set()
        for t in threads:
            t.join(30)
        assert not errors, errors[:3]
        tags = pusher.request("GET", f"/v2/{NAME}/tags/list").json()["tags"]
        for tag in tags:
            r = deleter.request("GET", f"/v2/{NAME}/manifests/{tag}")
            assert r.status == 200, f"tag {tag} points at a deleted manifest"
        listed = {d["digest"] for d in pusher.request("GET", f"/v2/{NAME}/referrers/{subject_digest}").json()["manifests"]}
        for data in versions:
            exists = pusher.request("HEAD", f"/v2/{NAME}/manifests/{sha256(data)}").status == 200
            assert (sha256(data) in listed) == exists
    finally:
        _stop(a, b)

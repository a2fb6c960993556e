"""``ocibox registry serve`` and ``gc`` as programs: config files, access log, signals, SIGKILL."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from conftest import Client, sha256
from ocibox.errors import UsageError
from ocibox.registry.config import RegistryConfig, load_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(*args: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ocibox.cli", "registry", "serve",
                             "--addr", f"127.0.0.1:{port}", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return proc, port
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"serve exited {proc.returncode}: {proc.stderr.read().decode()}")
            time.sleep(0.05)
    proc.kill()
    pytest.fail("registry did not start")


def test_serve_with_toml_config_and_access_log(tmp_path):
    log = tmp_path / "access.log"
    config = tmp_path / "registry.toml"
    config.write_text(f'root = "{tmp_path / "data"}"\ndelete-enabled = false\naccess_log = "{log}"\n'
                      "max_manifest_size = 65536\n")
    proc, port = start("--config", str(config))
    try:
        c = Client(port)
        digest = c.push_blob("cli/test", b"hello")
        assert c.request("DELETE", f"/v2/cli/test/blobs/{digest}").status == 405
        assert c.request("PUT", "/v2/cli/test/manifests/big", b"x" * 70000).status == 413
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert (tmp_path / "data" / "blobs" / "sha256").is_dir()
    text = log.read_text()
    assert f'"POST /v2/cli/test/blobs/uploads/?digest={digest} HTTP/1.1" 201' in text
    assert '"DELETE' in text and " 405 " in text


def test_config_file_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("colour = 'blue'\n")
    with pytest.raises(UsageError, match="unknown setting"):
        load_config(str(bad))
    bad.write_text("max_manifest_size = 'big'\n")
    with pytest.raises(UsageError, match="must be a int"):
        load_config(str(bad))
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"addr": "0.0.0.0:6000", "gc_grace": 10}))
    config = load_config(str(good))
    assert config.host_port() == ("0.0.0.0", 6000) and config.gc_grace == 10.0
    assert RegistryConfig().max_manifest_size == 4 << 20


def test_serve_bad_address_is_one_line():
    proc = subprocess.run([sys.executable, "-m", "ocibox.cli", "registry", "serve", "--addr", "nonsense"],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stderr.startswith("ocibox: invalid address") and "Traceback" not in proc.stderr


def test_gc_command(tmp_path):
    root = tmp_path / "data"
    proc, port = start("--root", str(root))
    try:
        c = Client(port)
        c.push_image("gc/test", "v1")
        orphan = c.push_blob("gc/test", b"orphan")
    finally:
        proc.terminate()
        proc.wait(10)
    out = subprocess.run([sys.executable, "-m", "ocibox.cli", "registry", "gc", "--root", str(root),
                          "--grace", "0", "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["blobs_removed"] == [orphan]


def _push_many(port: int, worker: int, done: list[tuple[str, str, bytes]], stop: threading.Event) -> None:
    c = Client(port)
    n = 0
    while not stop.is_set():
        name, tag = f"crash/w{worker}", f"t{n}"
        try:
            layers = []
            for _ in range(3):
                data = os.urandom(200_000)
                loc = c.request("POST", f"/v2/{name}/blobs/uploads/").headers["Location"]
                for off in range(0, len(data), 65536):
                    chunk = data[off:off + 65536]
                    r = c.request("PATCH", loc, chunk, {"Content-Range": f"{off}-{off + len(chunk) - 1}"})
                    loc = r.headers["Location"]
                assert c.request("PUT", f"{loc}?digest={sha256(data)}").status == 201
                layers.append({"mediaType": "application/octet-stream", "digest": sha256(data), "size": len(data)})
            cfg = c.push_blob(name, b"{}")
            m = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": cfg, "size": 2},
                            "layers": layers}).encode()
            if c.push_manifest(name, tag, m).status == 201:
                done.append((name, tag, m))
        except (OSError, KeyError, AssertionError, TypeError):
            return  # the server died under us
        n += 1


@pytest.mark.slow
def test_sigkill_during_concurrent_pushes(tmp_path):
    root = tmp_path / "data"
    proc, port = start("--root", str(root))
    done: list[tuple[str, str, bytes]] = []
    stop = threading.Event()
    workers = [threading.Thread(target=_push_many, args=(port, i, done, stop)) for i in range(6)]
    for w in workers:
        w.start()
    time.sleep(2.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    stop.set()
    for w in workers:
        w.join(30)
    assert done, "no push completed before the kill"
    print(f"{len(done)} pushes completed before SIGKILL")

    # no half blob: every file in the blob store hashes to its name
    for dirpath, _, files in os.walk(root / "blobs"):
        for f in files:
            if f.startswith(".tmp-"):
                continue
            with open(os.path.join(dirpath, f), "rb") as fh:
                assert hashlib.sha256(fh.read()).hexdigest() == f, f"half blob {f}"

    proc, port = start("--root", str(root))
    try:
        c = Client(port)
        for name, tag, manifest in done:
            r = c.request("GET", f"/v2/{name}/manifests/{tag}")
            assert r.status == 200 and r.body == manifest, (name, tag)
            for layer in json.loads(manifest)["layers"]:
                blob = c.request("GET", f"/v2/{name}/blobs/{layer['digest']}")
                assert blob.status == 200 and sha256(blob.body) == layer["digest"]
    finally:
        proc.terminate()
        proc.wait(10)


def test_serve_auth_misconfigured_is_one_line(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('auth = "htpasswd"\n')
    proc = subprocess.run([sys.executable, "-m", "ocibox.cli", "registry", "serve", "--config", str(config),
                           "--root", str(tmp_path / "r")], capture_output=True, text=True)
    assert proc.returncode != 0 and proc.stderr.startswith("ocibox: auth = \"htpasswd\" needs")
    config.write_text(f'auth = "htpasswd"\nhtpasswd = "{tmp_path / "missing"}"\n')
    proc = subprocess.run([sys.executable, "-m", "ocibox.cli", "registry", "serve", "--config", str(config),
                           "--root", str(tmp_path / "r")], capture_output=True, text=True)
    assert proc.returncode != 0 and "cannot read htpasswd file" in proc.stderr


def test_metrics(server, client):
    client.push_image("metrics/test", "v1")
    client.request("GET", "/v2/metrics/test/manifests/v1")
    client.request("GET", "/v2/metrics/test/manifests/missing")
    text = client.request("GET", "/metrics").body.decode()
    assert 'ocibox_registry_requests_total{endpoint="manifests",method="GET",status="200"} 1' in text
    assert 'ocibox_registry_requests_total{endpoint="manifests",method="GET",status="404"} 1' in text
    assert 'ocibox_registry_requests_total{endpoint="uploads",method="POST",status="201"}' in text
    assert 'ocibox_registry_request_duration_seconds_bucket{endpoint="manifests",le="+Inf"} 3' in text
    received = int(text.split("\nocibox_registry_received_bytes_total ")[1].split()[0])
    assert received > 1000


def test_serve_auth_flags(tmp_path):
    import base64

    import bcrypt

    users = tmp_path / "htpasswd"
    users.write_text("bob:" + bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode() + "\n")
    proc, port = start("--root", str(tmp_path / "data"), "--auth", "htpasswd", "--htpasswd", str(users),
                       "--anonymous-pull")
    try:
        c = Client(port)
        assert c.request("POST", "/v2/a/blobs/uploads/").status == 401
        auth = {"Authorization": "Basic " + base64.b64encode(b"bob:pw").decode()}
        assert c.request("POST", "/v2/a/blobs/uploads/", headers=auth).status == 202
        assert c.request("GET", "/v2/a/tags/list").status == 404  # anonymous pull allowed; nothing there
        assert c.request("GET", "/v2/").status == 401  # clients with credentials learn to send them
    finally:
        proc.terminate()
        proc.wait(10)

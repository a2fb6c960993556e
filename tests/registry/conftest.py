"""Fixtures for registry tests: an ocibox registry on a free loopback port, and a client.

The server runs in-process, in its own thread and event loop, so that tests
can drive it with a plain blocking HTTP client (http.client) and control every
header and byte that goes out.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import importlib.util
import json
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from ocibox.registry.config import RegistryConfig

_spec = importlib.util.spec_from_file_location("_ocibox_tests_root", Path(__file__).parents[1] / "conftest.py")
_root = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_root)
need = _root.need
run = _root.run

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self):
        return json.loads(self.body)

    @property
    def codes(self) -> list[str]:
        return [e["code"] for e in self.json()["errors"]]


class Client:
    def __init__(self, port: int) -> None:
        self.port = port

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return Reply(r.status, r.headers, r.read())
        finally:
            conn.close()

    def raw(self, data: bytes) -> bytes:
        """Send raw bytes, half-close, and return whatever comes back."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            out = b""
            while chunk := s.recv(65536):
                out += chunk
            return out

    # --- helpers ---------------------------------------------------------

    def push_blob(self, name: str, data: bytes) -> str:
        digest = sha256(data)
        r = self.request("POST", f"/v2/{name}/blobs/uploads/?digest={digest}", data,
                         {"Content-Type": "application/octet-stream"})
        assert r.status == 201, r.body
        return digest

    def push_manifest(self, name: str, ref: str, data: bytes, media_type: str = OCI_MANIFEST) -> Reply:
        return self.request("PUT", f"/v2/{name}/manifests/{ref}", data, {"Content-Type": media_type})

    def push_image(self, name: str, tag: str | None, *, layers: int = 1, seed: str = "x",
                   subject: dict | None = None, artifact_type: str | None = None,
                   annotations: dict | None = None) -> tuple[str, bytes]:
        config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed,
                             "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        cd = self.push_blob(name, config)
        descs = []
        for i in range(layers):
            blob = f"layer {i} of {seed}".encode() * 100
            descs.append({"mediaType": OCI_LAYER, "digest": self.push_blob(name, blob), "size": len(blob)})
        m = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
        if artifact_type:
            m["artifactType"] = artifact_type
        m["config"] = {"mediaType": OCI_CONFIG, "digest": cd, "size": len(config)}
        m["layers"] = descs
        if subject:
            m["subject"] = subject
        if annotations:
            m["annotations"] = annotations
        data = json.dumps(m).encode()
        r = self.push_manifest(name, tag or sha256(data), data)
        assert r.status == 201, r.body
        return sha256(data), data


class Server:
    """An ocibox registry served from a thread; stop() and start() again on the same root."""

    def __init__(self, config: RegistryConfig, driver=None) -> None:
        self.config = config
        self.driver = driver
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Server:
        from ocibox.registry.app import make_app
        from ocibox.registry.server import start

        ready = threading.Event()
        loop = asyncio.new_event_loop()

        def main() -> None:
            asyncio.set_event_loop(loop)
            app = make_app(self.config, self.driver)
            self._runner, self.port = loop.run_until_complete(start(self.config, app))
            if self.config.addr.endswith(":0"):
                self.config = self.config.updated(addr=f"127.0.0.1:{self.port}")
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=main, daemon=True)
        self._thread.start()
        assert ready.wait(10), "registry did not start"
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def client(self) -> Client:
        return Client(self.port)


@pytest.fixture
def make_server(tmp_path):
    servers: list[Server] = []

    def make(driver=None, **settings) -> Server:
        settings.setdefault("root", str(tmp_path / "registry"))
        settings.setdefault("durable", False)
        settings.setdefault("access_log", "")
        server = Server(RegistryConfig(addr="127.0.0.1:0", **settings), driver).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        if server._thread.is_alive():
            server.stop()


@pytest.fixture
def server(make_server) -> Server:
    return make_server()


@pytest.fixture
def client(server) -> Client:
    return server.client

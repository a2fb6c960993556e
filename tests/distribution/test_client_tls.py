"""The client against Debian's docker-registry serving TLS on loopback: plain HTTP
is tried first there, the registry's 400 to it sends the client on to HTTPS, and
the certificate is verified against --cert-dir."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from conftest import need, start_docker_registry, stop
from ocibox.distribution.client import Options, Registry, TLSError
from ocibox.errors import NotFound

pytestmark = pytest.mark.peer


def test_loopback_tls_registry_found_after_plain_http_probe(tmp_path, no_auth_files):
    need("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "ca.crt").write_bytes(cert.read_bytes())
    server = start_docker_registry(tmp_path, auth=f"  tls:\n    certificate: {cert}\n    key: {key}\n")
    try:
        async def go():
            async with Registry(server.host, Options(cert_dir=str(certs), no_auth_lookup=True)) as reg:
                assert await reg.ping() == f"https://{server.host}"
                with pytest.raises(NotFound, match="repository not found"):  # a request over TLS
                    await reg.list_tags("none/here")
            async with Registry(server.host, Options(no_auth_lookup=True)) as reg:
                with pytest.raises(TLSError, match="TLS certificate not trusted"):
                    await reg.ping()
        asyncio.run(go())
    finally:
        stop(server)

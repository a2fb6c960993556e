"""Start-up: the registry commands never import aiohttp (~120 ms of imports and SSL
contexts); the client speaks HTTP through ocibox.distribution._http."""

from __future__ import annotations

import subprocess
import sys

import pytest
from fake_registry import FakeRegistry

CODE = """
import runpy, sys
sys.argv = ["ocibox", *sys.argv[1:]]
try:
    runpy.run_module("ocibox.cli", run_name="__main__", alter_sys=True)
except SystemExit as e:
    assert not e.code, f"exit {e.code}"
assert "aiohttp" not in sys.modules, "aiohttp was imported"
assert "ocibox.distribution._http" in sys.modules
"""


@pytest.mark.parametrize("command", ["copy", "inspect", "list-tags", "sync"])
def test_registry_commands_do_not_import_aiohttp(image_layout, tmp_path, no_auth_files, command):
    with FakeRegistry(str(image_layout)) as fake:
        args = {
            "copy": ["copy", "-q", f"docker://{fake.host}/test/app:v1", f"oci:{tmp_path}/out:v1"],
            "inspect": ["inspect", f"docker://{fake.host}/test/app:v1"],
            "list-tags": ["list-tags", f"docker://{fake.host}/test/app"],
            "sync": ["sync", "-q", "--src", "docker", "--dest", "dir", f"{fake.host}/test/app", str(tmp_path / "s")],
        }[command]
        proc = subprocess.run([sys.executable, "-c", CODE, *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert any(p.endswith("/tags/list" if command == "list-tags" else "/manifests/v1") for _, p, _ in fake.log)


def test_loopback_plain_http_registry_makes_no_tls_context(image_layout, no_auth_files):
    """Plain HTTP is tried first on loopback, so no CA bundle is loaded for it."""
    import asyncio

    from ocibox.distribution.client import Options, Registry

    with FakeRegistry(str(image_layout)) as fake:
        async def go():
            async with Registry(fake.host, Options(no_auth_lookup=True)) as reg:
                assert reg.options.tls_verify  # not marked insecure: https would be verified
                assert (await reg.ping()) == f"http://{fake.host}"
                await reg.get_manifest("test/app", "v1")
                assert reg._http._ssl is None
        asyncio.run(go())


SMALL = """
import runpy, sys
sys.argv = ["ocibox", *sys.argv[1:]]
try:
    runpy.run_module("ocibox.cli", run_name="__main__", alter_sys=True)
except SystemExit as e:
    assert not e.code, f"exit {e.code}"
heavy = sorted(m for m in ("ocibox.transport.copy", "ocibox.transport.layers", "ocibox.image.layout",
                           "ocibox._fs", "tarfile", "tempfile", "shutil", "tomllib") if m in sys.modules)
assert not heavy, f"imported: {heavy}"
"""


@pytest.mark.parametrize("command", ["inspect", "list-tags"])
def test_small_commands_import_no_copy_machinery(image_layout, no_auth_files, command):
    """inspect and list-tags read a manifest or a tag list: no copying, layout, archive
    or temporary-file code is imported for them (~15 ms of start-up)."""
    with FakeRegistry(str(image_layout)) as fake:
        args = {"inspect": ["inspect", f"docker://{fake.host}/test/app:v1"],
                "list-tags": ["list-tags", f"docker://{fake.host}/test/app"]}[command]
        proc = subprocess.run([sys.executable, "-c", SMALL, *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr

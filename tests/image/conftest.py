"""Fixtures for image tests; also puts this directory on sys.path for ``treecmp``.

Test modules here that ``import conftest`` get this file, not tests/conftest.py,
so ``need`` and ``run`` from there are re-exported.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))


def _top_conftest():
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "conftest.py")
    spec = importlib.util.spec_from_file_location("_ocibox_tests_conftest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_top = _top_conftest()
need = _top.need
run = _top.run


@pytest.fixture
def layout_with_image(tmp_path, busybox_rootfs, ocibox):
    """A layout made by ocibox: the busybox rootfs imported, then configured; tag "v1"."""
    layout = tmp_path / "oci"
    ocibox("layout", "init", "--layout", str(layout))
    ocibox("layout", "import", "--image", f"{layout}:v1", str(busybox_rootfs))
    ocibox("layout", "config", "--image", f"{layout}:v1", "--config.entrypoint", "/bin/sh",
           "--config.env", "PATH=/bin", "--config.workingdir", "/root")
    return layout

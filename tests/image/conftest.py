"""Fixtures for image tests; also puts this directory on sys.path for ``treecmp``."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture
def layout_with_image(tmp_path, busybox_rootfs, ocibox):
    """A layout made by ocibox: the busybox rootfs imported, then configured; tag "v1"."""
    layout = tmp_path / "oci"
    ocibox("layout", "init", "--layout", str(layout))
    ocibox("layout", "import", "--image", f"{layout}:v1", str(busybox_rootfs))
    ocibox("layout", "config", "--image", f"{layout}:v1", "--config.entrypoint", "/bin/sh",
           "--config.env", "PATH=/bin", "--config.workingdir", "/root")
    return layout

"""Bounded memory: a copy's peak RSS does not grow with the size of a layer."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ocibox_cmd
from ocibox.image.layout import Layout
from ocibox.image.mutate import import_rootfs

pytestmark = [pytest.mark.peer, pytest.mark.slow]
MiB = 1 << 20


def _peak_kib(*args: str) -> int:
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-m", "ocibox.cli", *args],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stderr.strip().splitlines()[-1])


def test_peak_rss_flat_in_layer_size(tmp_path, ocibox_registry, no_auth_files):
    if not os.path.exists("/usr/bin/time"):
        pytest.skip("/usr/bin/time is not installed")
    peaks = {}
    for size in (4, 160):
        root = tmp_path / f"root{size}"
        root.mkdir()
        (root / "data").write_bytes(os.urandom(size * MiB))
        layout = tmp_path / f"layout{size}"
        import_rootfs(Layout.init(str(layout)), "v1", str(root), compression="none")
        push = _peak_kib("copy", "-q", f"oci:{layout}:v1", ocibox_registry.ref(f"m{size}/app:v1"))
        pull = _peak_kib("copy", "-q", ocibox_registry.ref(f"m{size}/app:v1"), f"oci:{tmp_path}/out{size}:v1")
        peaks[size] = (push, pull)
    small, big = peaks[4], peaks[160]
    print("peak RSS KiB (push, pull):", peaks)
    # 156 MiB more layer, at most 24 MiB more memory (buffers, not the layer)
    assert big[0] - small[0] < 24 * 1024, peaks
    assert big[1] - small[1] < 24 * 1024, peaks
    ocibox_cmd("inspect", ocibox_registry.ref("m160/app:v1"))

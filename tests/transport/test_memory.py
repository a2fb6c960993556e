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


def test_six_layers_at_once_stay_small(tmp_path, busybox_rootfs, no_auth_files):
    """Blobs copied in parallel each hold a small buffer, not megabytes: oci: -> oci:
    and dir: of six 16 MiB layers peak within a few MiB of a one-file image's copy;
    compressing them holds one compressor per CPU, not per job."""
    if not os.path.exists("/usr/bin/time"):
        pytest.skip("/usr/bin/time is not installed")
    tiny, six = tmp_path / "tiny", tmp_path / "six"
    import_rootfs(Layout.init(str(tiny)), "v1", str(busybox_rootfs / "etc"), compression="none")
    lay = Layout.init(str(six))
    for i in range(6):
        root = tmp_path / f"r{i}"
        root.mkdir()
        (root / "data").write_bytes(os.urandom(16 * MiB))
        import_rootfs(lay, "v1", str(root), compression="none")
    base = _peak_kib("copy", "-q", f"oci:{tiny}:v1", f"oci:{tmp_path}/t:v1")
    plain = max(_peak_kib("copy", "-q", f"oci:{six}:v1", f"oci:{tmp_path}/o:v1"),
                _peak_kib("copy", "-q", f"oci:{six}:v1", f"dir:{tmp_path}/d"))
    compressed = _peak_kib("copy", "-q", "--dest-compress", f"oci:{six}:v1", f"oci:{tmp_path}/c:v1")
    print("peak RSS KiB (tiny, six layers, six compressed):", base, plain, compressed)
    assert plain - base < 6 * 1024, (base, plain)  # was 13 MiB more with 1 MiB buffers per blob
    cpus = min(6, os.cpu_count() or 1)
    assert compressed - base < (8 + 6 * cpus) * 1024, (base, compressed)


def test_six_registry_layers_pulled_at_once_stay_small(tmp_path, ocibox_registry, busybox_rootfs, no_auth_files):
    """A pull holds a few 256 KiB pieces per blob (the socket read, the writer's queue),
    not megabytes: six 16 MiB layers from a registry peak within a few MiB of a tiny
    image's pull (it was ~20 MiB more with 1 MiB pieces and a growing read buffer)."""
    if not os.path.exists("/usr/bin/time"):
        pytest.skip("/usr/bin/time is not installed")
    tiny, six = tmp_path / "tiny", tmp_path / "six"
    import_rootfs(Layout.init(str(tiny)), "v1", str(busybox_rootfs / "etc"), compression="none")
    lay = Layout.init(str(six))
    for i in range(6):
        root = tmp_path / f"r{i}"
        root.mkdir()
        (root / "data").write_bytes(os.urandom(16 * MiB))
        import_rootfs(lay, "v1", str(root), compression="none")
    for name, layout in (("tiny", tiny), ("six", six)):
        ocibox_cmd("copy", "-q", "--preserve-digests", f"oci:{layout}:v1", ocibox_registry.ref(f"{name}/app:v1"))
    base = _peak_kib("copy", "-q", ocibox_registry.ref("tiny/app:v1"), f"oci:{tmp_path}/t:v1")
    pulled = _peak_kib("copy", "-q", ocibox_registry.ref("six/app:v1"), f"oci:{tmp_path}/s:v1")
    print("peak RSS KiB (tiny pull, six-layer pull):", base, pulled)
    assert pulled - base < 12 * 1024, (base, pulled)

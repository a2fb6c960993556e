"""The image bench/registry.py pushes and pulls: 3 gzip layers, made once with the ocibox library.

Cached as an OCI layout in bench/work/registry-image/<scale>/ (git-ignored) and rebuilt
only when GENERATOR changes. The content is deterministic (seeded) and mostly
incompressible, so the compressed layers are about as big as the files in them:

| scale | layer 1 | layer 2 | layer 3 | total |
| --- | --- | --- | --- | --- |
| full | 1500 files, half text, half random (~64 MiB, ~40 MiB gzip) | 60 MiB random in 30 files | 200 MiB random in 4 files | ~300 MB |
| quick | a tenth of each | | | ~30 MB |
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

MiB = 1 << 20
GENERATOR = "registry-image-v1"
TAG = "bench"
MTIME = 1_700_000_000

SCALES = {
    # name: (layer-1 files, layer-1 MiB, layer-2 files, layer-2 MiB, layer-3 files, layer-3 MiB)
    "full": (1500, 64, 30, 60, 4, 200),
    "quick": (150, 6, 6, 6, 2, 20),
}


def _random_bytes(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n)


def _text_bytes(rng: random.Random, n: int) -> bytes:
    words = [b"registry", b"layer", b"manifest", b"digest", b"blob", b"oci", b"image", b"tag",
             b"index", b"config", b"upload", b"pull", b"push", b"mount", b"range"]
    out = bytearray()
    while len(out) < n:
        out += b" ".join(rng.choices(words, k=12)) + b"\n"
    return bytes(out[:n])


def _files(root: Path, count: int, total_mib: int, seed: int, *, text_share: float) -> None:
    rng = random.Random(seed)
    size = total_mib * MiB // count
    for i in range(count):
        d = root / "data" / f"{seed}" / f"d{i // 50:03d}"
        d.mkdir(parents=True, exist_ok=True)
        make = _text_bytes if rng.random() < text_share else _random_bytes
        path = d / f"f{i:05d}.bin"
        path.write_bytes(make(rng, size))
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), (MTIME, MTIME), follow_symlinks=False)
    os.utime(root, (MTIME, MTIME))


def layout_path(scale: str, work: Path) -> Path:
    return work / "registry-image" / scale / "layout"


def ensure(scale: str, work: Path) -> Path:
    """The OCI layout holding the image (tag ``bench``); built on first use."""
    from ocibox.image.layout import Layout
    from ocibox.image.mutate import history_entry, import_rootfs

    base = work / "registry-image" / scale
    path, stamp = base / "layout", base / "GENERATOR"
    if path.exists() and stamp.exists() and stamp.read_text() == GENERATOR:
        return path
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    n1, m1, n2, m2, n3, m3 = SCALES[scale]
    print(f"image: building the {scale} image with the ocibox library in {path}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    layout = Layout.init(str(path))
    for i, (count, mib, text) in enumerate(((n1, m1, 0.5), (n2, m2, 0.0), (n3, m3, 0.0)), 1):
        rootfs = base / f"rootfs{i}"
        _files(rootfs, count, mib, seed=i, text_share=text)
        import_rootfs(layout, TAG, str(rootfs), history=history_entry(f"bench/registry.py layer {i}"))
        shutil.rmtree(rootfs)
    stamp.write_text(GENERATOR)
    print(f"image: built in {time.perf_counter() - t0:.1f} s: {describe(path)}", file=sys.stderr, flush=True)
    return path


def manifest(path: Path) -> tuple[str, dict]:
    index = json.loads((path / "index.json").read_text())
    desc = next(m for m in index["manifests"]
                if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == TAG)
    algo, hexd = desc["digest"].split(":")
    return desc["digest"], json.loads((path / "blobs" / algo / hexd).read_text())


def total_bytes(path: Path) -> int:
    _, m = manifest(path)
    return m["config"]["size"] + sum(layer["size"] for layer in m["layers"])


def describe(path: Path) -> str:
    _, m = manifest(path)
    sizes = ", ".join(f"{layer['size'] / MiB:.1f}" for layer in m["layers"])
    return f"{len(m['layers'])} gzip layers of {sizes} MiB ({total_bytes(path) / 1e6:.0f} MB in all)"

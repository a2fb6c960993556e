"""Copy: ocibox against skopeo, side by side in one run.

    .venv/bin/python bench/copy_images.py            # ~300 MB image, 3 rounds
    .venv/bin/python bench/copy_images.py --write    # ... and keep the figures in bench/RESULTS.md (its copy section)
    .venv/bin/python bench/copy_images.py --quick    # ~30 MB image, 1 round

Cases, each with a fresh destination every round and the two tools alternating:
  push  oci: layout -> docker-registry (distribution 2.8, loopback, plain HTTP)
  pull  docker-registry -> oci: layout
  sync  a repository of 10 small images (2 MiB each) into an empty registry (ocibox sync, skopeo sync)
The image (5 gzip layers of mostly incompressible data) is made once with the ocibox
library and cached in bench/work/copy-image/<scale>. Prints median wall times and
the ratio ocibox/skopeo (<= 1.0 means ocibox is at least as fast).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _common import write_section  # noqa: E402

WORK = HERE / "work"
PY = str(ROOT / ".venv" / "bin" / "python")
MiB = 1 << 20


def make_image(scale: str) -> Path:
    sys.path.insert(0, str(ROOT / "src"))
    from ocibox.image.layout import Layout
    from ocibox.image.mutate import import_rootfs

    total = 320 if scale == "full" else 32
    path = WORK / "copy-image" / scale / "layout"
    if (path / "index.json").exists():
        return path
    shutil.rmtree(path.parent, ignore_errors=True)
    path.parent.mkdir(parents=True)
    lay = Layout.init(str(path))
    rng = random.Random(42)
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        for i in range(5):
            d = Path(tmp) / f"l{i}"
            (d / "data").mkdir(parents=True)
            per = total // 5
            for j in range(8):
                # mostly random, a little repetitive: gzip shrinks it a little
                n = per * MiB // 8
                (d / "data" / f"f{j}").write_bytes(rng.randbytes(n * 15 // 16) + bytes(n // 16))
            import_rootfs(lay, "bench", str(d))
    small = WORK / "copy-image" / scale / "small"
    slay = Layout.init(str(small))
    for k in range(10):
        with tempfile.TemporaryDirectory(dir=WORK) as tmp:
            (Path(tmp) / "f").write_bytes(rng.randbytes(2 * MiB))
            import_rootfs(slay, f"s{k}", tmp)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_registry(tmp: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cfg = tmp / "reg.yml"
    cfg.write_text(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {tmp}/reg\n"
                   f"  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen(["docker-registry", "serve", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"127.0.0.1:{port}"


PEAK: dict[str, int] = {}  # tool -> highest peak RSS (KiB) seen in any case


def timed(argv: list[str]) -> float:
    tool = "ocibox" if argv[0] == PY else "skopeo"
    t = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *argv], check=True, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - t
    PEAK[tool] = max(PEAK.get(tool, 0), int(proc.stderr.strip().splitlines()[-1]))
    return elapsed


def ocibox(*args: str) -> list[str]:
    return [PY, "-m", "ocibox.cli", "copy", "-q", *args]


def skopeo(*args: str) -> list[str]:
    return ["skopeo", "copy", "-q", "--src-tls-verify=false", "--dest-tls-verify=false", *args]


SYNC = {
    "ocibox": [PY, "-m", "ocibox.cli", "sync", "-q"],
    "skopeo": ["skopeo", "sync", "--src-tls-verify=false", "--dest-tls-verify=false"],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--write", action="store_true", help="Also write bench/RESULTS.md (its copy section).")
    a = ap.parse_args()
    scale = "quick" if a.quick else "full"
    rounds = a.rounds or (1 if a.quick else 3)
    WORK.mkdir(exist_ok=True)
    image = make_image(scale)
    small = image.parent / "small"
    size = sum(f.stat().st_size for f in (image / "blobs" / "sha256").iterdir())
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(dir=WORK) as tmpdir:
        tmp = Path(tmpdir)
        proc, host = start_registry(tmp)
        try:
            # the pull source, pushed once by skopeo
            subprocess.run(skopeo(f"oci:{image}:bench", f"docker://{host}/src/img:bench"), check=True)
            for k in range(10):
                subprocess.run(skopeo(f"oci:{small}:s{k}", f"docker://{host}/small/img:s{k}"), check=True)
            for r in range(rounds):
                for tool in (("ocibox", "skopeo") if r % 2 == 0 else ("skopeo", "ocibox")):
                    mk = ocibox if tool == "ocibox" else skopeo
                    # a registry of its own, so that no tool can mount blobs pushed before
                    fresh, fresh_host = start_registry(Path(tempfile.mkdtemp(dir=tmp)))
                    try:
                        push = timed(mk(f"oci:{image}:bench", f"docker://{fresh_host}/{tool}/push:bench"))
                    finally:
                        fresh.terminate()
                        fresh.wait()
                    dest = tmp / f"{tool}-{r}"
                    pull = timed(mk(f"docker://{host}/src/img:bench", f"oci:{dest}:bench"))
                    shutil.rmtree(dest)
                    # sync: 10 tags of one repository into a registry that has none of them
                    fresh, fresh_host = start_registry(Path(tempfile.mkdtemp(dir=tmp)))
                    try:
                        sync = timed([*SYNC[tool], "--src", "docker", "--dest", "docker",
                                      f"{host}/small/img", f"{fresh_host}/mirror"])
                    finally:
                        fresh.terminate()
                        fresh.wait()
                    for case, v in (("push oci: -> registry", push), ("pull registry -> oci:", pull),
                                    ("sync 10 images registry -> registry", sync)):
                        results.setdefault(case, {}).setdefault(tool, []).append(v)
        finally:
            proc.terminate()
            proc.wait()
    lines = [f"image: {size / MiB:.0f} MiB in 5 layers; {rounds} round(s); median wall seconds; "
             "both tools fsync the blobs they write", "",
             "| case | ocibox | skopeo | ratio |", "| --- | --- | --- | --- |"]
    for case, by in results.items():
        o, s = statistics.median(by["ocibox"]), statistics.median(by["skopeo"])
        lines.append(f"| {case} | {o:.2f} | {s:.2f} | {o / s:.2f} |")
    lines += ["", f"peak RSS over all cases: ocibox {PEAK['ocibox'] / 1024:.0f} MiB, "
              f"skopeo {PEAK['skopeo'] / 1024:.0f} MiB"]
    version = subprocess.run(["skopeo", "--version"], capture_output=True, text=True).stdout.strip()
    lines += ["", f"{version}; docker-registry (distribution 2.8) on loopback; cpus: {os.cpu_count()}; "
              f"{time.strftime('%Y-%m-%d %H:%M')}"]
    print("\n".join(lines))
    if a.write:
        write_section(HERE / "RESULTS.md", "copy",
                      "## copy: ocibox copy and sync against skopeo\n\n" + "\n".join(lines))


if __name__ == "__main__":
    main()

"""Registry client start-up: small commands where start-up is most of the time,
ocibox against skopeo, side by side in one run.

    .venv/bin/python bench/client_startup.py                    # 15 rounds
    .venv/bin/python bench/client_startup.py --baseline-src DIR # also an older ocibox (its src/)

Cases (docker-registry on loopback, plain HTTP; every tool gets --tls-verify=false
where it has the flag, as in copy_images.py):
  inspect    ocibox inspect / skopeo inspect of a one-layer 2 MiB image
  pull       copy of that image into a fresh oci: layout
  list-tags  list-tags of its repository
The tools alternate within each round; prints the median and the minimum wall
time of each (the minimum is the steadier figure on a busy machine) and the
ratios ocibox/skopeo. A baseline tree, when given, runs as a third tool with
PYTHONPATH pointing at it (e.g. `git archive OLD src | tar -x -C /tmp/old`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from copy_images import PY, WORK, make_image, start_registry  # noqa: E402


def timed(argv: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t


def commands(tool: str, host: str, dest: str) -> dict[str, list[str]]:
    ref = f"docker://{host}/small/img:s0"
    if tool == "skopeo":
        flag = ["--tls-verify=false"]
        return {"inspect": ["skopeo", "inspect", *flag, ref],
                "pull": ["skopeo", "copy", "-q", "--src-tls-verify=false", ref, f"oci:{dest}:s0"],
                "list-tags": ["skopeo", "list-tags", *flag, f"docker://{host}/small/img"]}
    ocibox = [PY, "-m", "ocibox.cli"]
    return {"inspect": [*ocibox, "inspect", ref],
            "pull": [*ocibox, "copy", "-q", ref, f"oci:{dest}:s0"],
            "list-tags": [*ocibox, "list-tags", f"docker://{host}/small/img"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--baseline-src", help="an older ocibox src/ directory to run as 'baseline'")
    a = ap.parse_args()
    WORK.mkdir(exist_ok=True)
    small = make_image("quick").parent / "small"
    tools = ["ocibox", "skopeo"] + (["baseline"] if a.baseline_src else [])
    envs = {t: dict(os.environ) for t in tools}
    if a.baseline_src:
        envs["baseline"]["PYTHONPATH"] = str(Path(a.baseline_src).resolve())
    times: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory(dir=WORK) as tmpdir:
        tmp = Path(tmpdir)
        proc, host = start_registry(tmp)
        try:
            subprocess.run(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"oci:{small}:s0",
                            f"docker://{host}/small/img:s0"], check=True)
            for r in range(a.rounds):
                order = tools[r % len(tools):] + tools[:r % len(tools)]
                for tool in order:
                    dest = tmp / f"{tool}-{r}"
                    for case, argv in commands("skopeo" if tool == "skopeo" else "ocibox", host,
                                               str(dest)).items():
                        times.setdefault((case, tool), []).append(timed(argv, envs[tool]))
                    shutil.rmtree(dest, ignore_errors=True)
        finally:
            proc.terminate()
            proc.wait()
    head = "| case | " + " | ".join(f"{t} median / min" for t in tools) + " | ocibox/skopeo median / min |"
    if a.baseline_src:
        head += " ocibox/baseline median / min |"
    lines = [f"{a.rounds} rounds, wall seconds; cpus: {os.cpu_count()}; "
             f"load average at the end: {os.getloadavg()[0]:.1f}", "", head,
             "|" + " --- |" * (head.count("|") - 1)]
    for case in ("inspect", "pull", "list-tags"):
        med = {t: statistics.median(times[(case, t)]) for t in tools}
        low = {t: min(times[(case, t)]) for t in tools}
        row = f"| {case} | " + " | ".join(f"{med[t]:.3f} / {low[t]:.3f}" for t in tools)
        row += f" | {med['ocibox'] / med['skopeo']:.2f} / {low['ocibox'] / low['skopeo']:.2f} |"
        if a.baseline_src:
            row += f" {med['ocibox'] / med['baseline']:.2f} / {low['ocibox'] / low['baseline']:.2f} |"
        lines.append(row)
    print("\n".join(lines))


if __name__ == "__main__":
    main()

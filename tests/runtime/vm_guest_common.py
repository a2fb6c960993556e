"""What the guest-side drivers of the VM tests share (they run as `python vm_*_guest.py`,
so this module, beside them, is on their sys.path)."""

from __future__ import annotations

import json
import os
import time
import traceback


def cat(path: str) -> str | None:
    """A file's text, stripped; None when it does not exist, "<error>" when it cannot be read."""
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as e:
        return f"<{e.strerror}>" if e.errno != 2 else None


def run_scenarios(scenarios, runtimes, results: dict, out: str) -> None:
    """Each scenario under each runtime: results["<scenario>/<runtime>"] is what it returned
    (or its traceback), and ``out`` is rewritten after each, so a guest that dies part way
    still leaves what it did. By hand, VMT_ONLY=name runs the scenarios so named alone."""
    only = os.environ.get("VMT_ONLY")
    for scenario in scenarios:
        label = scenario.__name__.removeprefix("scenario_")
        if only and only not in label:
            continue
        for name in runtimes:
            key = f"{label}/{name}"
            t0 = time.monotonic()
            try:
                results[key] = scenario(name)
            except Exception:
                results[key] = {"error": traceback.format_exc()}
            print(f"{key}: {time.monotonic() - t0:.1f} s", flush=True)
            with open(out, "w") as f:
                json.dump(results, f, indent=1)

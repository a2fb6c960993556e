"""The same input gives the same image digest, given SOURCE_DATE_EPOCH."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def _build(layout, source, env) -> str:
    for args in (["import", "--image", f"{layout}:t", str(source)],
                 ["config", "--image", f"{layout}:t", "--config.cmd", "sh", "--config.env", "A=1"]):
        subprocess.run([sys.executable, "-m", "ocibox.cli", "layout", *args], env=env, check=True,
                       capture_output=True)
    index = json.loads((layout / "index.json").read_text())
    return index["manifests"][0]["digest"]


def test_same_tree_same_digest(tmp_path):
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "f").write_text("content\n")
    (src / "link").symlink_to("a/b/f")
    env = dict(os.environ, SOURCE_DATE_EPOCH="1700000000")
    first = _build(tmp_path / "one", src, env)
    # touch everything: newer mtimes are clamped to the epoch
    for path in (src / "a", src / "a" / "b", src / "a" / "b" / "f"):
        os.utime(path)
    second = _build(tmp_path / "two", src, env)
    assert first == second
    env["SOURCE_DATE_EPOCH"] = "1700000001"
    assert _build(tmp_path / "three", src, env) != first

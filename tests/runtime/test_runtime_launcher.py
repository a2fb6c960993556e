"""The installed launcher (scripts/ocibox-runtime via make): same answers as `python -m`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

LAUNCHER = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "ocibox-runtime"
MODULE = [sys.executable, "-m", "ocibox.runtime.cli"]

pytestmark = pytest.mark.skipif(
    not LAUNCHER.exists() or "@PYTHON@" in LAUNCHER.read_text() or "-IS" not in LAUNCHER.read_text(),
    reason="needs the launcher installed by `make venv`",
)


def _run(argv: list[str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*argv, *args], capture_output=True, text=True, stdin=subprocess.DEVNULL)


def test_interpreter_is_the_venvs_version():
    shebang = LAUNCHER.read_text().splitlines()[0]
    interpreter = shebang[2:].split()[0]
    out = _run([interpreter, "-I", "-S", "-c", "import sys; print(sys.version_info[:2])"]).stdout
    assert out.strip() == str(sys.version_info[:2])


def test_same_answers_as_the_module(tmp_path):
    cdir = tmp_path / "c1"
    cdir.mkdir()
    (cdir / "state.json").write_text(json.dumps({"ociVersion": "1.2.0", "id": "c1", "pid": 0,
                                                 "bundle": "/b", "created": "x"}))  # fmt: skip
    for args in (("--version",), ("state", "c1"), ("state", "nope"), ("bogus",), ("kill", "c1", "NOSIG"),
                 ("delete", "--force", "nope")):  # fmt: skip
        ours = _run([str(LAUNCHER)], "--root", str(tmp_path), *args)
        module = _run(MODULE, "--root", str(tmp_path), *args)
        assert (ours.returncode, ours.stdout, ours.stderr) == (
            module.returncode, module.stdout, module.stderr), args
        assert "Traceback" not in ours.stderr


def test_output_reaches_a_pipe_in_full(tmp_path):
    """exit_fast skips the interpreter's teardown: what was written must still be flushed."""
    for i in range(3):
        cdir = tmp_path / f"c{i}"
        cdir.mkdir()
        (cdir / "state.json").write_text(json.dumps({"ociVersion": "1.2.0", "id": f"c{i}", "pid": 0}))
    p = _run([str(LAUNCHER)], "--root", str(tmp_path), "list", "--format", "json")
    assert p.returncode == 0
    assert [s["id"] for s in json.loads(p.stdout)] == ["c0", "c1", "c2"]

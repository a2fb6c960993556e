"""jsonlite: the runtime's JSON without the json package gives json's results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ocibox.runtime import jsonlite

DOCS = [
    {"a": 1, "b": [1, 2, {"c": "é\n\"x\t"}], "d": {}, "e": [], "f": None, "g": True, "h": 1.5,
     "i": {"x": {"y": [{}]}}, "j": -0.0, "k": 1e300, "l": "\u2603"},
    [], {}, "s", 3, [1, [2, [3]]],
    {"ociVersion": "1.2.0", "id": "x", "pid": 0, "status": "stopped", "annotations": {"k": "v"}},
]  # fmt: skip


@pytest.mark.parametrize("doc", DOCS)
def test_same_text_as_json(doc):
    for indent in (None, 1, 2):
        assert jsonlite.dumps(doc, indent=indent) == json.dumps(doc, indent=indent)
    assert jsonlite.dumps(doc, separators=(",", ":")) == json.dumps(doc, separators=(",", ":"))
    text = json.dumps(doc)
    assert jsonlite.loads(text) == json.loads(text)
    assert jsonlite.loads(f" \n{text}\t\n".encode()) == json.loads(text)


@pytest.mark.parametrize("bad", ["", "{", "[1,]", "1 2", '{"a":1}x', "nul"])
def test_errors_are_jsons(bad):
    with pytest.raises(json.JSONDecodeError):
        jsonlite.loads(bad)


def test_unserialisable():
    with pytest.raises(TypeError):
        jsonlite.dumps({"s": {1, 2}})


def test_state_path_does_not_import_json_or_re():
    code = ("import sys; from ocibox.runtime import cli; cli.main(['--root', '/nonexistent', 'state', 'x']);"
            "print(sorted(m for m in ('json', 're') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def _lean(code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh `python -I -S` with ocibox importable, as the launcher runs."""
    import ocibox

    src = str(Path(ocibox.__file__).resolve().parents[1])
    return subprocess.run([sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {src!r}); {code}"],
                          capture_output=True, text=True)  # fmt: skip


@pytest.mark.parametrize("bad", ["[1,2", '{"a": tru}', '["x', '{"a" 1}', "{", "nul"])
def test_errors_without_json_loaded(bad):
    """_json reports most errors through json.decoder: not yet imported, it left a SystemError."""
    p = _lean(f"from ocibox.runtime import jsonlite\ntry: jsonlite.loads({bad!r})\n"
              "except ValueError as e: print(type(e).__name__)")  # fmt: skip
    assert p.stdout.strip() == "JSONDecodeError", p.stderr


def test_state_path_imports_no_os_errors_or_future(tmp_path):
    cdir = tmp_path / "c1"
    cdir.mkdir()
    (cdir / "state.json").write_text(json.dumps({"ociVersion": "1.2.0", "id": "c1", "pid": 0}))
    code = (f"from ocibox.runtime import cli; cli.main(['--root', {str(tmp_path)!r}, 'state', 'c1']);"
            "print(sorted(m for m in ('os', 'ocibox.errors', '__future__', 'json', 're') if m in sys.modules))")  # fmt: skip
    p = _lean(code)
    assert '"status": "stopped"' in p.stdout, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "[]"

"""The copy commands' faces: progress rendering, manifest-digest, --digestfile, help."""

from __future__ import annotations

import io
import json

from conftest import ocibox_cmd
from ocibox.cli.images import _Bars
from ocibox.image.layout import Layout
from ocibox.image.models import Descriptor


def test_bars_render_and_clear():
    out = io.StringIO()
    bars = _Bars(out)
    a = Descriptor("application/octet-stream", "sha256:" + "a" * 64, 2 << 20)
    bars.progress("start", a, 0)
    bars.progress("bytes", a, 1 << 20)
    bars.last = 0  # no throttling for the test
    bars.progress("bytes", a, 1 << 20)
    bars.report("Copying blob aaaaaaaaaaaa done (2.0 MiB)")
    bars.progress("done", a, 0)
    text = out.getvalue()
    assert "[" + "=" * 30 + "]" in text and "2.0 / 2.0 MiB" in text
    assert "done (2.0 MiB)" in text
    assert text.endswith("\x1b[J")  # the last bar is cleared away
    assert bars.drawn == 0


def test_pipe_gets_lines_and_digestfile(image_layout, tmp_path):
    proc = ocibox_cmd("copy", "--digestfile", str(tmp_path / "digest"), f"oci:{image_layout}:v1",
                      f"oci:{tmp_path}/out:v1")
    assert "\x1b" not in proc.stderr
    assert [x for x in proc.stderr.splitlines() if x.startswith("Copying blob")]
    digest = Layout.open(str(image_layout)).resolve("v1").digest
    assert (tmp_path / "digest").read_text() == digest


def test_manifest_digest(image_layout, tmp_path):
    lay = Layout.open(str(image_layout))
    desc = lay.resolve("v1")
    path = tmp_path / "manifest.json"
    path.write_bytes(lay.blobs.read(desc.digest))
    assert ocibox_cmd("manifest-digest", str(path)).stdout.strip() == desc.digest
    schema1 = tmp_path / "s1.json"
    schema1.write_text(json.dumps({"schemaVersion": 1, "name": "x", "tag": "y"}))
    proc = ocibox_cmd("manifest-digest", str(schema1), check=False)
    assert proc.returncode != 0 and "schema1" in proc.stderr
    missing = ocibox_cmd("manifest-digest", str(tmp_path / "none"), check=False)
    assert missing.returncode != 0 and "Traceback" not in missing.stderr


def test_help_lists_commands():
    out = ocibox_cmd("--help").stdout
    for name in ("copy", "inspect", "list-tags", "delete", "login", "logout", "manifest-digest", "sync"):
        assert name in out
    assert "--dest-compress-format" in ocibox_cmd("copy", "--help").stdout


def test_local_copies_do_not_import_the_http_client(image_layout, tmp_path):
    import subprocess
    import sys

    code = (f"import sys\nfrom ocibox.transport import copy, CopyOptions\n"
            f"copy('oci:{image_layout}:v1', 'dir:{tmp_path}/d', CopyOptions())\n"
            f"copy('dir:{tmp_path}/d', 'oci-archive:{tmp_path}/a.tar:v1', CopyOptions())\n"
            "assert 'aiohttp' not in sys.modules, 'aiohttp imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_copy_options_are_not_changed_by_a_copy(image_layout, tmp_path):
    """One CopyOptions for several copies (as sync does): an oci: destination's OCI format
    does not leak into the next copy, which keeps the Docker source's format."""
    from ocibox.transport import CopyOptions, copy

    ocibox_cmd("copy", "-q", "--format", "v2s2", f"oci:{image_layout}:v1", f"dir:{tmp_path}/docker")
    options = CopyOptions()
    copy(f"dir:{tmp_path}/docker", f"oci:{tmp_path}/oci:v1", options)
    assert options.format is None
    copy(f"dir:{tmp_path}/docker", f"dir:{tmp_path}/again", options)
    assert json.loads((tmp_path / "again" / "manifest.json").read_bytes())["mediaType"] == \
        "application/vnd.docker.distribution.manifest.v2+json"

"""`features` says what this runtime does: hooks and seccomp are supported."""

from __future__ import annotations

from ocibox.runtime.features import features


def test_features_hooks_and_seccomp():
    f = features()
    assert f["hooks"] == ["prestart", "createRuntime", "createContainer", "startContainer",
                          "poststart", "poststop"]  # fmt: skip
    sec = f["linux"]["seccomp"]
    assert sec["enabled"] is True  # libseccomp.so.2 is present on these machines
    assert {"SCMP_ACT_ERRNO", "SCMP_ACT_ALLOW", "SCMP_ACT_KILL_PROCESS"} <= set(sec["actions"])
    assert "SCMP_CMP_MASKED_EQ" in sec["operators"] and "SCMP_ARCH_X86_64" in sec["archs"]
    assert "SCMP_ACT_NOTIFY" in sec["actions"]  # with listenerPath (test_runtime_seccomp_notify)


def test_libseccomp_version_and_intel_rdt_as_runc_says():
    import json
    import shutil
    import subprocess

    import pytest

    runc = shutil.which("runc") or pytest.skip("runc is not installed (make peers)")
    theirs = json.loads(subprocess.run([runc, "features"], capture_output=True, text=True,
                                       check=True).stdout)  # fmt: skip
    ours = features()
    key = "io.github.seccomp.libseccomp.version"
    assert ours["annotations"][key] == theirs["annotations"][key]
    assert ours["linux"]["intelRdt"] == {"enabled": False}  # refused with a clear error (config)

"""Default runtime configurations: content, freshness, and agreement with runc spec."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from ocibox.runtime.spec import OCI_VERSION, default_config


def _mount(cfg: dict, dest: str) -> dict | None:
    return next((m for m in cfg["mounts"] if m["destination"] == dest), None)


def _ns(cfg: dict) -> list[str]:
    return [n["type"] for n in cfg["linux"]["namespaces"]]


def test_default_config_content():
    cfg = default_config()
    assert cfg["ociVersion"] == OCI_VERSION == "1.2.0"
    p = cfg["process"]
    assert p["terminal"] is False
    assert p["user"] == {"uid": 0, "gid": 0}
    assert p["args"] == ["sh"]
    assert p["cwd"] == "/"
    assert [e.split("=")[0] for e in p["env"]] == ["PATH", "TERM"]
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    assert p["capabilities"] == {"bounding": caps, "effective": caps, "permitted": caps}
    assert p["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
    assert p["noNewPrivileges"] is True
    assert cfg["root"] == {"path": "rootfs", "readonly": True}
    assert cfg["hostname"]
    assert [m["destination"] for m in cfg["mounts"]] == [
        "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup",
    ]  # fmt: skip
    assert _mount(cfg, "/sys")["type"] == "sysfs"
    assert "ro" in _mount(cfg, "/sys")["options"]
    assert _mount(cfg, "/sys/fs/cgroup")["type"] == "cgroup"
    assert "ro" in _mount(cfg, "/sys/fs/cgroup")["options"]
    assert "gid=5" in _mount(cfg, "/dev/pts")["options"]
    assert _ns(cfg) == ["pid", "network", "ipc", "uts", "mount", "cgroup"]
    assert "uidMappings" not in cfg["linux"]
    assert cfg["linux"]["resources"] == {"devices": [{"allow": False, "access": "rwm"}]}
    assert "/proc/kcore" in cfg["linux"]["maskedPaths"]
    assert "/proc/sys" in cfg["linux"]["readonlyPaths"]
    json.dumps(cfg)  # plain JSON types only


def test_terminal_flag():
    assert default_config(terminal=True)["process"]["terminal"] is True


def test_rootless_variant():
    cfg = default_config(rootless=True)
    assert _ns(cfg) == ["pid", "ipc", "uts", "mount", "cgroup", "user"]
    mapping_u = [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
    mapping_g = [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
    assert cfg["linux"]["uidMappings"] == mapping_u
    assert cfg["linux"]["gidMappings"] == mapping_g
    sys_mount = _mount(cfg, "/sys")
    assert sys_mount["type"] == "none" and sys_mount["source"] == "/sys"
    assert sys_mount["options"][0] == "rbind" and "ro" in sys_mount["options"]
    assert _mount(cfg, "/sys/fs/cgroup") is None
    assert "resources" not in cfg["linux"]
    for m in cfg["mounts"]:
        assert not any(o.startswith(("uid=", "gid=")) for o in m.get("options", []))


def test_each_call_returns_fresh_objects():
    a = default_config()
    a["process"]["args"].append("x")
    a["process"]["capabilities"]["bounding"].clear()
    a["mounts"][1]["options"].append("x")
    a["linux"]["maskedPaths"].clear()
    b = default_config()
    assert b["process"]["args"] == ["sh"]
    assert b["process"]["capabilities"]["bounding"]
    assert "x" not in b["mounts"][1]["options"]
    assert b["linux"]["maskedPaths"]
    # Lists inside one config are not shared either.
    caps = b["process"]["capabilities"]
    assert caps["bounding"] is not caps["effective"] is not caps["permitted"]


def test_import_is_light():
    code = (
        "import sys; import ocibox.runtime.spec; "
        "bad = [m for m in sys.modules if m.startswith(('ocibox.image', 'click', 'zstandard', "
        "'isal', 'http', 'asyncio'))]; print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def _runc_spec(tmp_path, *args: str) -> dict:
    runc = shutil.which("runc") or next(
        (p for p in ("/usr/sbin/runc", "/usr/bin/runc") if os.path.exists(p)), None
    )
    if runc is None:
        pytest.skip("runc is not installed: cannot compare with `runc spec`")
    subprocess.run([runc, "spec", *args], cwd=tmp_path, check=True, capture_output=True)
    return json.loads((tmp_path / "config.json").read_text())


# Intended differences from `runc spec` (runc 1.1): ociVersion and hostname are
# ours; no ambient or inheritable capabilities (newer runc gives none either);
# a cgroup namespace (as runc 1.2 adds); terminal defaults to false; and the
# rootless variant has no /sys/fs/cgroup mount, since the rbind of /sys brings it.
@pytest.mark.peer
@pytest.mark.parametrize("rootless", [False, True])
def test_matches_runc_spec(tmp_path, rootless):
    theirs = _runc_spec(tmp_path, *(["--rootless"] if rootless else []))
    ours = default_config(rootless=rootless, terminal=theirs["process"]["terminal"])
    for key in ("terminal", "user", "args", "env", "cwd", "rlimits", "noNewPrivileges"):
        assert ours["process"][key] == theirs["process"][key], key
    for key in ("bounding", "effective", "permitted"):
        assert ours["process"]["capabilities"][key] == theirs["process"]["capabilities"][key]
    assert ours["root"] == theirs["root"]
    their_mounts = theirs["mounts"]
    if rootless:
        their_mounts = [m for m in their_mounts if m["destination"] != "/sys/fs/cgroup"]
        for m in their_mounts:  # runc says "none" or "bind"; both mean a bind mount
            if "rbind" in m.get("options", []):
                m["type"] = "none"
    assert ours["mounts"] == their_mounts
    for key in ("maskedPaths", "readonlyPaths", "uidMappings", "gidMappings", "resources"):
        assert ours["linux"].get(key) == theirs["linux"].get(key), key
    assert [n for n in _ns(ours) if n != "cgroup"] == [n for n in _ns(theirs) if n != "cgroup"]

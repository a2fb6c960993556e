"""Where a cgroup v1 (hybrid) host puts a container, under runc and ocibox-runtime, with the
runtime started from a cgroup that is not the root (as a service manager or a shim would).

runc 1.1's fs manager: an absolute cgroupsPath from each hierarchy's root; a relative one,
and none (the container's id), under the runtime's own cgroup in each v1 hierarchy, and from
the root of the v2 hierarchy of a hybrid host.
"""

from __future__ import annotations

import os
import uuid

import pytest

pytestmark = [pytest.mark.root, pytest.mark.peer]

V1 = "/sys/fs/cgroup"
# The memory hierarchy is left as the test found it (the caller's own, often not the root);
# cpuset needs cpus copied down before a process may enter: left at the root too.
_MOVED = ("pids", "blkio", "freezer", "devices", "cpu", "cpuacct", "systemd")


def _v1_host():
    if not os.path.isdir(f"{V1}/pids") or not os.path.ismount(f"{V1}/pids"):
        pytest.skip("a cgroup v1 host (pids hierarchy) needed")


@pytest.fixture
def driver(tmp_path):
    """A wrapper that starts the runtime from <hierarchy>/ocibox-test/<unique>/driver."""
    _v1_host()
    name = f"ocibox-test/place-{uuid.uuid4().hex[:8]}"
    dirs = [f"{V1}/{h}/{name}/driver" for h in _MOVED if os.path.ismount(f"{V1}/{h}")]
    if os.path.isdir(f"{V1}/unified"):
        dirs.append(f"{V1}/unified/{name}/driver")
    for d in dirs:
        os.makedirs(d, exist_ok=True)
    script = tmp_path / "driver.sh"
    script.write_text("#!/bin/sh\n" + "".join(f"echo $$ > {d}/cgroup.procs\n" for d in dirs)
                      + 'exec "$@"\n')  # fmt: skip
    script.chmod(0o755)
    yield str(script), name, dirs
    for d in dirs:
        os.rmdir(d)
        os.rmdir(os.path.dirname(d))


def _placed(rt, bundle, cid: str, where: str | None) -> dict[str, str]:
    def edit(c):
        c["linux"].pop("cgroupsPath", None)
        if where == "bare":  # no resources either: cgroups all the same, as runc gives
            c["linux"].pop("resources", None)
        elif where:
            c["linux"]["cgroupsPath"] = where
    b = bundle.write(["sleep", "30"], edit)
    rt("run", "-d", "--bundle", b, cid)
    with open(f"/proc/{rt.state(cid)['pid']}/cgroup") as f:
        lines = {line.split(":")[1]: line.strip().split(":", 2)[2] for line in f}
    return {k.removeprefix("name="): v.replace(cid, "ID") for k, v in lines.items()}


def _mountpoint(ctrl: str) -> str:
    return f"{V1}/{ctrl or 'unified'}"


@pytest.mark.parametrize("where", [None, "rel/x", "/ocibox-test-abs/x", "bare"])
def test_cgroups_path_placed_as_runc(runc, ours, bundle, driver, where):
    script, name, dirs = driver
    given = where not in (None, "bare")  # a cgroupsPath
    got = {}
    try:
        for rt in (ours, runc):  # ours first: "rel" is then ours to make and remove
            wrapped = type(rt)(rt.name, [script, *rt.argv], rt.root)
            cid = rt.new_id()
            got[rt.name] = placed = _placed(wrapped, bundle, cid, where)
            wrapped("delete", "--force", cid)
            if rt is ours:
                # delete removed what create made (the parents too) and nothing more
                for ctrl, path in placed.items():
                    assert not os.path.exists(_mountpoint(ctrl) + path.replace("ID", cid))
                    if given:
                        assert not os.path.exists(_mountpoint(ctrl) + os.path.dirname(path))
                assert all(os.path.isdir(d) for d in dirs)
    finally:
        for ctrl, path in (got.get("runc") or {}).items():  # runc leaves the parents it made
            if given and os.path.isdir(_mountpoint(ctrl) + os.path.dirname(path)):
                os.rmdir(_mountpoint(ctrl) + os.path.dirname(path))
    assert got["ocibox-runtime"] == got["runc"]
    mine = got["ocibox-runtime"]
    tail = where.lstrip("/") if given else "ID"
    if given and where.startswith("/"):
        assert mine["pids"] == mine["memory"] == f"/{tail}"
    else:
        assert mine["pids"] == mine["systemd"] == f"/{name}/driver/{tail}"
    if "" in mine:
        assert mine[""] == f"/{tail}"  # the v2 part of a hybrid host: from its root

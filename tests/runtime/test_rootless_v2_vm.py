"""Rootless on pure cgroup v2 with a delegated subtree: runc and ocibox-runtime in a VM.

This host's cgroups are hybrid, so cgroup v2 delegation (a subtree chowned to a user,
controllers enabled in its root-owned parent, as systemd's Delegate=yes) is tried in a
guest (tests/runtime/vmhost.py): vm_rootless_guest.py runs both runtimes as the user
from a cgroup of that subtree and records what they did; the tests compare.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import vmhost

pytestmark = [pytest.mark.slow, pytest.mark.peer, pytest.mark.root]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
MIB = 1 << 20


@pytest.fixture(scope="module")
def vm(tmp_path_factory) -> dict:
    vmhost.require(REPO, programs=("runc", "setpriv"))
    job = tmp_path_factory.mktemp("vmjob")
    # the system's interpreter: the user the runtimes run as must be able to run it too
    python = Path("/usr/bin/python3") if os.access("/usr/bin/python3", os.X_OK) else None
    return vmhost.run_driver(HERE / "vm_rootless_guest.py", REPO, job, python,
                             any_error=True, timeout=900)  # fmt: skip


def _pair(vm: dict, scenario: str) -> tuple[dict, dict]:
    return vm[f"{scenario}/runc"], vm[f"{scenario}/ours"]


def test_guest_is_pure_cgroup_v2_and_the_spec_maps_the_user(vm):
    host = vm["host"]
    assert len(host["mounts"]) == 1 and " - cgroup2 " in host["mounts"][0], host["mounts"]
    assert host["spec"]["rc"] == 0, host["spec"]
    assert host["maps"] == [{"containerID": 0, "hostID": 4321, "size": 1}]


def test_delegated_subtree_takes_the_container_and_its_limits(vm):
    runc, ours = _pair(vm, "delegated")
    for r, name in ((runc, "runc"), (ours, "ours")):
        for label in ("relative", "absolute", "none"):
            assert r[label]["create"]["rc"] == 0, (name, label, r[label]["create"]["err"])
        # relative and none: under the parent of the runtime's cgroup (/deleg/u/shell)
        assert r["relative"]["cgroup"] == f"/deleg/u/rel-{name}"
        assert r["absolute"]["cgroup"] == f"/deleg/u/abs-{name}"
        assert r["none"]["cgroup"] == f"/deleg/u/none-{name}"
        for label in ("relative", "absolute", "none"):
            got = r[label]["files"]
            assert (got["memory.max"], got["pids.max"]) == (str(64 * MIB), "33"), (name, label)
            assert got["owner"] == 4321  # made by the user
            assert r[label]["delete"]["rc"] == 0 and r[label]["left"] is False, (name, label)
    for label in ("relative", "absolute", "none"):
        assert ours[label]["files"] == runc[label]["files"], label
        # the controllers the parent gave, turned on by both in the user's subtree_control
        assert ours[label]["parent_subtree_control"] == runc[label]["parent_subtree_control"]
    assert ours["none"]["files"]["cgroup.controllers"] == "cpu memory pids"


def test_pause_exec_ps_update_in_the_delegated_cgroup(vm):
    runc, ours = _pair(vm, "delegated")
    for r in (runc["none"], ours["none"]):
        assert r["pause"]["rc"] == 0 and r["paused"] == "1", r["pause"]
        assert r["resume"]["rc"] == 0, r["resume"]
        assert r["exec"]["rc"] == 0 and r["exec"]["out"] == "0::/\n", r["exec"]
        assert r["ps"]["rc"] == 0 and len(r["ps"]["out"].splitlines()) == 2, r["ps"]
        assert r["update"]["rc"] == 0 and r["updated"] == "44", r["update"]


def test_no_limits_lands_where_runc_puts_it(vm):
    runc, ours = _pair(vm, "no_limits")
    assert runc["create"]["rc"] == 0 and ours["create"]["rc"] == 0
    assert runc["cgroup"] == "/deleg/u/nolim-runc"
    assert ours["cgroup"] == "/deleg/u/nolim-ours"


def test_no_limits_runs_and_is_deleted_as_runc(vm):
    # runc's spec --rootless as it is: /sys/fs/cgroup a cgroup mount over the /sys rbind,
    # no cgroup namespace (the kernel refuses a fresh cgroup2 there: both bind the host's)
    runc, ours = _pair(vm, "no_limits")
    assert runc["create"]["rc"] == 0 and ours["create"]["rc"] == 0, (runc, ours)
    for r in (runc, ours):
        assert r["delete"]["rc"] == 0 and r["left"] is False, (runc, ours)


def test_out_of_reach_as_runc(vm):
    runc, ours = _pair(vm, "refused")
    assert set(runc) == set(ours)
    for label in runc:
        r, o = runc[label], ours[label]
        assert (o["create"]["rc"] == 0) == (r["create"]["rc"] == 0), (label, r, o)
        assert o["cgroup"] == (r["cgroup"] and r["cgroup"].replace("runc", "ours")), label
        assert o["made"] == r["made"], label  # nothing left behind by a failure
    assert ours["root_path"]["create"]["rc"] != 0
    assert "linux.cgroupsPath /deleg/other/x" in ours["root_path"]["create"]["err"]
    assert ours["plain_limits"]["create"]["rc"] != 0
    assert "cannot set this limit" in ours["plain_limits"]["create"]["err"]
    assert ours["plain_nothing"]["cgroup"] == "/plain/shell"
    assert ours["part_pids"]["cgroup"] == "/part/u/part_pids-ours"
    assert ours["part_pids"]["files"]["pids.max"] == "9"
    assert ours["part_memory"]["create"]["rc"] != 0  # runc: "openat2 .../memory.max: no such file"
    assert ("linux.resources.memory: cannot set this limit: the memory controller is not "
            "delegated to this user (/sys/fs/cgroup/part/u has pids in cgroup.controllers)"
            in ours["part_memory"]["create"]["err"])  # fmt: skip

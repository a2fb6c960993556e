"""containerd's CRI with the systemd cgroup driver, as a modern Kubernetes node runs it:
ocibox-runtime against runc in a VM with systemd as PID 1 (vmhost).

kubelet with cgroupDriver systemd gives a pod the cgroup parent
/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice, and
containerd, whose runc options say ``SystemdCgroup = true``, runs the runtime with
--systemd-cgroup and the cgroupsPath "kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>":
each container is the transient unit cri-containerd-<id>.scope. This host has
neither systemd as PID 1 nor a unified hierarchy, so the guest (vm_cri_guest.py)
runs test_runtime_cri's private containerd, both handlers with SystemdCgroup, and
the same sessions under each: the sandbox's and a limited container's units
(systemctl show) and cgroup files, UpdateContainerResources reaching both,
ContainerStats, StopContainer, removal, and what is left in systemd and in the
cgroup tree; then a burstable privileged pod sharing one pid namespace (a
container's leftovers killed, OOMKilled, a privileged unit, containerd restarted,
the pod stopped with a container running); and a guaranteed pod, whose container
on v2 has kubelet's MemoryQoS limits (unified memory.high and memory.min, set and
updated). One boot per layout: pure cgroup v2, and the hybrid one (v1 controllers).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import vmhost

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.peer]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
MIB = 1 << 20


@pytest.fixture(scope="module", params=["v2", "hybrid"])
def guest(request, tmp_path_factory) -> tuple[str, dict]:
    vmhost.require(REPO, programs=("runc", "containerd", "ctr", "containerd-shim-runc-v2"))
    if not Path("/lib/systemd/systemd").exists():
        pytest.skip("systemd is not installed (apt-get install systemd)")
    try:
        import grpc  # noqa: F401  (the guest runs the checkout's interpreter, with it)
    except ImportError:
        pytest.skip("grpcio is not installed (the [test] extra: pip install -e '.[test]')")
    job = tmp_path_factory.mktemp("vmjob")
    results = vmhost.run_driver(HERE / "vm_cri_guest.py", REPO, job, timeout=1500,
                                init=["/lib/systemd/systemd", "--unit=vmhost.service"],
                                root_files=vmhost.SYSTEMD_UNIT,
                                hybrid=request.param == "hybrid")  # fmt: skip
    return request.param, results


def _transcripts(results: dict, scenario: str = "pod") -> tuple[list[str], list[str]]:
    for handler in ("runc", "ocibox"):
        got = results[f"{scenario}/{handler}"]
        assert "error" not in got, got["error"]
    return results[f"{scenario}/runc"]["transcript"], results[f"{scenario}/ocibox"]["transcript"]


def _records(lines: list[str], prefix: str) -> dict[str, str]:
    return dict(line.removeprefix(prefix).split("=", 1) for line in lines
                if line.startswith(prefix))  # fmt: skip


def test_guest_layout(guest):
    layout, results = guest
    host = results["host"]
    assert host["pid1"] == "systemd"
    if layout == "v2":
        assert host["v2"] and host["mounts"] == ["cgroup2"], host
    else:
        assert not host["v2"] and host["mounts"] == ["cgroup", "cgroup2"], host


@pytest.mark.parametrize("scenario", ["pod", "ends", "guaranteed"])
def test_session_as_runc(guest, scenario):
    _, results = guest
    runc, ours = _transcripts(results, scenario)
    assert ours == runc


def test_units_in_the_pod_slice(guest):
    layout, results = guest
    _, ours = _transcripts(results)
    slice_ = "kubepods-besteffort-podUID.slice"
    for what in ("sandbox unit ", "created unit "):
        unit = _records(ours, what)
        assert unit["Slice"] == slice_ and unit["Delegate"] == "yes", unit
        assert unit["ActiveState"] == "active", unit
    group = f"/kubepods.slice/kubepods-besteffort.slice/{slice_}/cri-containerd-CID.scope"
    assert _records(ours, "created unit ")["ControlGroup"] == group
    v2 = f"0::{group}"
    if layout == "v2":
        assert f"container cgroup ['{v2}']" in ours
        assert "exec cgroup ['0::/'] 0" in ours  # its own cgroup namespace
    else:
        container = next(line for line in ours if line.startswith("container cgroup ["))
        assert f":memory:{group}'" in container and f"'{v2}'" in container, container
        # an exec joins the unit's v1 cgroups and its v2 one (runc's hybrid "" path)
        exec_ = next(line for line in ours if line.startswith("exec cgroup ["))
        assert f":memory:{group}'" in exec_ and f"'{v2}'" in exec_, exec_


def test_limits_and_update_reach_unit_and_files(guest):
    layout, results = guest
    _, ours = _transcripts(results)
    created, updated = _records(ours, "created unit "), _records(ours, "updated unit ")
    assert created["CPUQuotaPerSecUSec"] == "500ms" and updated["CPUQuotaPerSecUSec"] == "250ms"
    cfiles, ufiles = _records(ours, "created file "), _records(ours, "updated file ")
    if layout == "v2":
        assert created["MemoryMax"] == str(128 * MIB) and updated["MemoryMax"] == str(64 * MIB)
        assert cfiles["memory.max"] == str(128 * MIB) and ufiles["memory.max"] == str(64 * MIB)
        assert cfiles["cpu.max"] == "50000 100000" and ufiles["cpu.max"] == "25000 100000"
    else:
        assert created["MemoryLimit"] == str(128 * MIB) and updated["MemoryLimit"] == str(64 * MIB)
        assert cfiles["memory.limit_in_bytes"] == str(128 * MIB)
        assert ufiles["memory.limit_in_bytes"] == str(64 * MIB)
        assert (cfiles["cpu.cfs_quota_us"], ufiles["cpu.cfs_quota_us"]) == ("50000", "25000")
    assert (created["AllowedCPUs"], updated["AllowedCPUs"]) == ("0-1", "0")
    assert (cfiles["cpuset.cpus"], ufiles["cpuset.cpus"]) == ("0-1", "0")
    assert "stats True cpu True memory True" in ours


def test_stop_and_remove_leave_nothing(guest):
    layout, results = guest
    _, ours = _transcripts(results)
    assert any(line.startswith("stopped EXITED exit=9 reason='Error' ") for line in ours), ours
    assert "stdout F got TERM" in ours
    assert "stopped unit []" in ours and "stopped dir False" in ours
    assert "held []" in ours and "left units []" in ours and "left dirs []" in ours
    stopped = next(line for line in ours if line.startswith("slice stopped "))
    if layout == "v2":
        assert stopped == "slice stopped [] []"
    else:  # the v1 hierarchies systemd does not manage keep the pod's directory (kubelet's)
        assert stopped.startswith("slice stopped [] ['cpuset:kubepods-besteffort-podUID.slice'")
        assert ":memory" not in stopped and ":pids" not in stopped, stopped


def test_pod_ends(guest):
    """A shared pid namespace's leftovers killed with the scope's (kill --all), OOMKilled,
    a privileged container's unit (no device policy), containerd restarted, the pod
    stopped with a container running; nothing left after."""
    layout, results = guest
    _, ours = _transcripts(results, "ends")
    assert ours[0] == "main processes True" and ours[2] == "main left None []"
    assert ours[1].startswith("main EXITED exit=2 reason='Error' ")
    assert ours[3].startswith("hog EXITED exit=137 reason='OOMKilled' "), ours[3]
    priv = _records(ours, "priv unit ")
    assert priv["DevicePolicy"] == "auto" and "DeviceAllow" not in priv, priv
    assert priv["Slice"] == "kubepods-burstable-podUID.slice"
    rest = [line for line in ours[4:] if not line.startswith("priv unit ")]
    assert rest[:4] == ["restarted ready 0", "priv RUNNING", "exec b'still\\n' 0", rest[3]]
    assert rest[3].startswith("priv EXITED exit=137 reason='Error' ")
    assert rest[4:7] == ["held []", "left units []", "left dirs []"]
    if layout == "v2":
        assert rest[-1] == "slice stopped [] []"


def test_guaranteed_pod_and_memory_qos(guest):
    """A guaranteed pod's slice is right under kubepods.slice; on v2, kubelet's MemoryQoS
    (linux.resources.unified memory.high and memory.min) reaches the unit and the files,
    at creation and on update."""
    layout, results = guest
    _, ours = _transcripts(results, "guaranteed")
    created = _records(ours, "created unit ")
    assert created["Slice"] == "kubepods-podUID.slice"
    assert created["ControlGroup"] == "/kubepods.slice/kubepods-podUID.slice/cri-containerd-CID.scope"
    if layout == "v2":
        assert (created["MemoryHigh"], created["MemoryMin"]) == (str(96 * MIB), str(8 * MIB))
        updated = _records(ours, "updated unit ")
        assert (updated["MemoryHigh"], updated["MemoryMin"]) == (str(64 * MIB), str(4 * MIB))
        assert updated["MemoryMax"] == str(96 * MIB) and updated["CPUQuotaPerSecUSec"] == "300ms"
        cfiles, ufiles = _records(ours, "created file "), _records(ours, "updated file ")
        assert (cfiles["memory.high"], cfiles["memory.min"]) == (str(96 * MIB), str(8 * MIB))
        assert (ufiles["memory.high"], ufiles["memory.min"]) == (str(64 * MIB), str(4 * MIB))
    assert ours[-4:-1] == ["held []", "left units []", "left dirs []"]
    if layout == "v2":
        assert ours[-1] == "slice stopped [] []"

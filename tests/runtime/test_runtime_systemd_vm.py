"""--systemd-cgroup against runc's, with systemd as PID 1 in a VM (vmhost, cgroup v2).

One boot runs the same bundle under `runc --systemd-cgroup` and
`ocibox-runtime --systemd-cgroup` with podman's cgroupsPath form and the same
resources, and records for each: the unit's properties (systemctl show), the
cgroup of the init and the files of the unit's cgroup, the same after update,
pause/resume, exec, ps, events --stats, kill --all, and what delete leaves.
The tests compare the two records. The guest boots the host's own root over
9p; vmhost's systemd unit runs the script and powers off (no other service
starts until the script starts dbus).
"""

from __future__ import annotations

import re

import pytest
from vm_systemd_common import boot_systemd, props, script

pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.peer]

PROPS = ("Slice", "Delegate", "DefaultDependencies", "MemoryAccounting", "CPUAccounting",
         "IOAccounting", "TasksAccounting", "MemoryMax", "MemoryLow", "MemorySwapMax",
         "CPUWeight", "CPUQuotaPerSecUSec", "CPUQuotaPeriodUSec", "TasksMax", "AllowedCPUs",
         "AllowedMemoryNodes", "DevicePolicy", "DeviceAllow", "Description", "ControlGroup",
         "TimeoutStopUSec", "CollectMode")  # fmt: skip
FILES = ("memory.max", "memory.low", "memory.swap.max", "cpu.weight", "cpu.max", "pids.max",
         "cpuset.cpus", "cpuset.mems")  # fmt: skip

RESOURCES = {
    "memory": {"limit": 67108864, "reservation": 33554432, "swap": 100663296},
    "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
    "pids": {"limit": 100},
}
ANNOTATIONS = {"org.systemd.property.TimeoutStopSec": "7",
               "org.systemd.property.CollectMode": "'inactive-or-failed'"}  # fmt: skip

# After vm_systemd_common.HEAD (the bundle; runtime, podman_both, ours_log).
_SCRIPT = r"""
show() {  # RT WHAT UNIT
  systemctl show @PROPS@ "$3" | sed "s/^/$1 $2 /"
}
files() {  # RT WHAT DIR
  for f in @FILES@; do echo "$1 $2 file $f=$(cat $3/$f 2>&1)"; done
}
for RT in runc ocibox; do
  R=$(runtime $RT)
  ID=sd-$RT
  U=libpod-$ID.scope
  CG=/sys/fs/cgroup/machine.slice/$U
  cp $W/config.base $B/config.json
  $PY - $ID <<'EOF'
import json, sys
p = "/var/lib/ocibox-vm/bundle/config.json"
c = json.load(open(p))
c["linux"]["cgroupsPath"] = "machine.slice:libpod:" + sys.argv[1]
json.dump(c, open(p, "w"))
EOF
  $R create --bundle $B $ID; echo "$RT create rc=$?"
  $R start $ID; echo "$RT start rc=$?"
  show $RT created $U
  PID=$($R state $ID | $PY -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
  echo "$RT initcgroup $(cat /proc/$PID/cgroup)"
  files $RT created $CG
  echo "$RT procs $(wc -l < $CG/cgroup.procs)"
  $R update --memory 134217728 --pids-limit 50 --cpu-quota 20000 $ID; echo "$RT update rc=$?"
  show $RT updated $U
  files $RT updated $CG
  $R pause $ID; echo "$RT pause rc=$?"
  echo "$RT paused $($R state $ID | $PY -c 'import json,sys; print(json.load(sys.stdin)["status"])') $(grep frozen $CG/cgroup.events)"
  $R resume $ID; echo "$RT resume rc=$?"
  echo "$RT resumed $($R state $ID | $PY -c 'import json,sys; print(json.load(sys.stdin)["status"])') $(grep frozen $CG/cgroup.events)"
  $R exec -d $ID sleep 999; echo "$RT exec rc=$?"
  echo "$RT ps $($R ps --format json $ID | $PY -c 'import json,sys; print(len(json.load(sys.stdin)))')"
  echo "$RT procs-after-exec $(wc -l < $CG/cgroup.procs)"
  echo "$RT stats $($R events --stats $ID | $PY -c 'import json,sys; d=json.load(sys.stdin)["data"]; print(d["memory"]["usage"]["usage"] > 0, d["pids"]["current"])')"
  $R kill --all $ID KILL; echo "$RT kill rc=$?"
  sleep 1
  $R delete $ID; echo "$RT delete rc=$?"
  echo "$RT deleted $(systemctl show -p LoadState -p ActiveState $U | tr '\n' ' ') dir=$(test -d $CG && echo yes || echo no)"
  # A kubepods-like nested slice; delete of a running container (the unit is stopped).
  $PY - $ID <<'EOF'
import json, sys
p = "/var/lib/ocibox-vm/bundle/config.json"
c = json.load(open(p))
c["linux"]["cgroupsPath"] = "kubepods-besteffort.slice:cri-containerd:k" + sys.argv[1]
c["linux"]["resources"] = {"devices": c["linux"]["resources"]["devices"]}
json.dump(c, open(p, "w"))
EOF
  KU=cri-containerd-k$ID.scope
  $R run -d --bundle $B k$ID; echo "$RT run rc=$?"
  KPID=$($R state k$ID | $PY -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
  echo "$RT kinitcgroup $(cat /proc/$KPID/cgroup)"
  show $RT kube $KU
  $R delete --force k$ID; echo "$RT kdelete rc=$?"
  echo "$RT kdeleted $(systemctl show -p LoadState $KU) dir=$(test -d /sys/fs/cgroup/kubepods.slice/kubepods-besteffort.slice/$KU && echo yes || echo no)"
done
# A cgroupfs path under --systemd-cgroup, and no such slice name.
$PY - <<'EOF'
import json
p = "/var/lib/ocibox-vm/bundle/config.json"
c = json.load(open(p))
c["linux"]["cgroupsPath"] = "/not/systemd"
json.dump(c, open(p, "w"))
EOF
env PYTHONPATH=$SRC $PY -m ocibox.runtime.cli --root $W/r2 --systemd-cgroup create --bundle $B bad 2>&1 | sed 's/^/ocibox badpath /'
echo "ocibox badpath-units $(systemctl list-units --all --no-legend 'libpod-bad*' | wc -l)"
# A resource cgroupfs refuses once the unit exists: create fails, and the unit goes.
$PY - <<'EOF'
import json
p = "/var/lib/ocibox-vm/bundle/config.json"
c = json.load(open(p))
c["linux"]["cgroupsPath"] = "machine.slice:libpod:fail"
c["linux"]["resources"] = {"hugepageLimits": [{"pageSize": "3MB", "limit": 1}]}
json.dump(c, open(p, "w"))
EOF
env PYTHONPATH=$SRC $PY -m ocibox.runtime.cli --root $W/r2 --systemd-cgroup create --bundle $B fail 2>&1 | sed 's/^/ocibox failed /'
echo "ocibox failed-left $(systemctl list-units --all --no-legend 'libpod-fail*' | wc -l) $(ls /sys/fs/cgroup/machine.slice | grep -c fail) $(ls $W/r2 | wc -l)"
ours_log
# The system bus, as a user that is not root would reach systemd (dbus-daemon in between:
# Hello, a match rule for JobRemoved).
systemctl start dbus.service; echo "bus dbus rc=$?"
$PY - <<EOF
import os, subprocess, sys
sys.path.insert(0, "$SRC")
from ocibox.runtime.linux import dbus
from ocibox.runtime.linux.cgroups import systemd as sd
p = subprocess.Popen(["sleep", "300"])
c = dbus.Connection(dbus.SYSTEM_BUS, bus=True)
print("bus hello", c.unique_name.startswith(":"))
sd.start_unit(c, "ocibox-bus.scope", [("PIDs", ("au", [p.pid])), ("Slice", ("s", "system.slice")),
                                      ("Delegate", ("b", True))])
print("bus started", open(f"/proc/{p.pid}/cgroup").read().strip())
sd.stop_unit("ocibox-bus.scope", c)
print("bus stopped", os.path.exists("/sys/fs/cgroup/system.slice/ocibox-bus.scope"))
EOF
# podman with its systemd cgroup manager (its default on systemd hosts), runc then ours.
podman_left() { ls /sys/fs/cgroup/machine.slice/ | grep -c $1; }
podman_both -p Slice -p ControlGroup -p MemoryMax -p TasksMax -p Delegate
"""


@pytest.fixture(scope="module")
def guest(tmp_path_factory):
    text = script(_SCRIPT, props=PROPS, files=FILES, resources=RESOURCES,
                  config={"annotations": ANNOTATIONS})  # fmt: skip
    return boot_systemd(tmp_path_factory, text, records=("runc", "ocibox", "bus"),
                        keep=r"Traceback| rc=[1-9]")  # fmt: skip


def test_both_ran_every_step(guest):
    out, text = guest
    for rt in ("runc", "ocibox"):
        for step in ("create", "start", "update", "pause", "resume", "exec", "kill", "delete",
                     "run", "kdelete"):  # fmt: skip
            assert out[rt].get(step) == ["rc=0"], f"{rt} {step}:\n{text}"


def test_unit_properties_as_runc(guest):
    out, text = guest
    for what in ("created", "updated"):
        runc, ours = props(out["runc"], what, "runc"), props(out["ocibox"], what, "ocibox")
        assert set(runc.pop("DeviceAllow").split()) == set(ours.pop("DeviceAllow").split())
        assert ours == runc, what
    created = props(out["ocibox"], "created", "ocibox")
    assert created["Slice"] == "machine.slice" and created["Delegate"] == "yes"
    assert created["MemoryMax"] == "67108864" and created["TasksMax"] == "100"
    assert created["ControlGroup"] == "/machine.slice/libpod-ID.scope"
    # org.systemd.property.* annotations (TimeoutStopSec in seconds becomes ...USec)
    assert created["TimeoutStopUSec"] == "7s" and created["CollectMode"] == "inactive-or-failed"
    updated = props(out["ocibox"], "updated", "ocibox")
    assert updated["MemoryMax"] == "134217728" and updated["TasksMax"] == "50"
    assert updated["CPUQuotaPerSecUSec"] == "200ms"


def test_cgroup_files_as_runc(guest):
    out, _ = guest
    for what in ("created", "updated"):
        runc = [v for v in out["runc"][what] if v.startswith("file ")]
        ours = [v for v in out["ocibox"][what] if v.startswith("file ")]
        assert ours == runc, what
    files = dict(v[5:].split("=", 1) for v in out["ocibox"]["updated"] if v.startswith("file "))
    assert files["memory.max"] == "134217728" and files["pids.max"] == "50"
    assert files["cpu.max"] == "20000 100000"


def test_init_in_the_units_cgroup(guest):
    out, _ = guest
    assert out["ocibox"]["initcgroup"] == ["0::/machine.slice/libpod-sd-ocibox.scope"]
    assert out["runc"]["initcgroup"] == ["0::/machine.slice/libpod-sd-runc.scope"]
    kube = "0::/kubepods.slice/kubepods-besteffort.slice/cri-containerd-ksd-{}.scope"
    assert out["ocibox"]["kinitcgroup"] == [kube.format("ocibox")]
    assert out["runc"]["kinitcgroup"] == [kube.format("runc")]
    runc, ours = props(out["runc"], "kube", "runc"), props(out["ocibox"], "kube", "ocibox")
    assert ours["Slice"] == runc["Slice"] == "kubepods-besteffort.slice"


def test_lifecycle_on_the_unit(guest):
    out, _ = guest
    for rt in ("runc", "ocibox"):
        o = out[rt]
        assert o["procs"] == ["1"], rt
        assert o["paused"] == ["paused frozen 1"], rt
        assert o["resumed"] == ["running frozen 0"], rt
        assert o["ps"] == ["2"] and o["procs-after-exec"] == ["2"], rt
        assert o["stats"] == ["True 2"], rt


def test_delete_removes_unit_and_cgroup(guest):
    out, _ = guest
    for rt in ("runc", "ocibox"):
        assert out[rt]["deleted"] == ["LoadState=not-found ActiveState=inactive  dir=no"], rt
        assert out[rt]["kdeleted"] == ["LoadState=not-found dir=no"], rt


def test_bad_path_refused_without_a_unit(guest):
    out, text = guest
    assert any('expected "slice:prefix:name"' in v for v in out["ocibox"]["badpath"]), text
    assert out["ocibox"]["badpath-units"] == ["0"]


def test_failed_create_stops_its_unit(guest):
    out, text = guest
    assert any("hugepageLimits" in v for v in out["ocibox"]["failed"]), text
    assert out["ocibox"]["failed-left"] == ["0 0 0"], text


def test_output_has_no_traceback(guest):
    _, text = guest
    assert "Traceback" not in text, text
    assert not re.search(r"^ocibox (create|start|update) rc=[1-9]", text, re.M)


def test_system_bus_fallback(guest):
    """Through dbus-daemon (Hello, AddMatch for JobRemoved) as well as systemd's own socket."""
    out, text = guest
    assert out["bus"].get("dbus") == ["rc=0"], text
    assert out["bus"]["hello"] == ["True"], text
    assert out["bus"]["started"] == ["0::/system.slice/ocibox-bus.scope"], text
    assert out["bus"]["stopped"] == ["False"], text


def test_podman_systemd_cgroup_manager(guest):
    """podman --cgroup-manager=systemd runs, limits and removes a container with ours as with runc."""
    out, text = guest
    if out["runc"].get("podman-rund") != ["rc=0"]:
        pytest.skip(f"podman with runc does not work in the VM either:\n{text[-3000:]}")
    for key in ("podman-rund", "podman-show", "podman-rm", "podman-after"):
        assert out["ocibox"].get(key) == out["runc"].get(key), f"{key}:\n{text}"
    show = dict(v.split("=", 1) for v in out["ocibox"]["podman-show"])
    assert show["Slice"] == "machine.slice" and show["ControlGroup"] == "/machine.slice/libpod-ID.scope"
    assert show["MemoryMax"] == "67108864" and show["TasksMax"] == "77"
    assert out["ocibox"]["podman-after"] == ["0 0"]

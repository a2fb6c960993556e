"""--systemd-cgroup: cgroupsPath parsing, resources as unit properties, and the refusals.

The units themselves need systemd as PID 1: test_runtime_systemd_vm.py boots one
in a VM and compares with runc there. Here (no systemd) only what needs none.
"""

from __future__ import annotations

import os

import pytest

from ocibox.errors import BundleError
from ocibox.runtime.linux.cgroups import systemd as sd

MAX = 2**64 - 1


def test_parse_defaults_and_forms():
    assert sd.parse("abc", None) == ("system.slice", "runc-abc.scope")
    assert sd.parse("abc", "") == ("system.slice", "runc-abc.scope")
    assert sd.parse("abc", "machine.slice:libpod:123") == ("machine.slice", "libpod-123.scope")
    assert sd.parse("abc", ":cri-containerd:xyz") == ("system.slice", "cri-containerd-xyz.scope")
    assert sd.parse("abc", "system.slice:containerd:") == ("system.slice", "containerd-abc.scope")
    assert sd.parse("abc", "a.slice::n") == ("a.slice", "n.scope")
    # A name that is a slice makes that slice; the prefix is left out.
    assert sd.parse("abc", "kubepods.slice:x:kubepods-pod1.slice") == (
        "kubepods.slice", "kubepods-pod1.slice")  # fmt: skip


@pytest.mark.parametrize("path", ["/foo/bar", "foo", "a:b", "a:b:c:d", "a.slice:b/c:d",
                                  "a:b:c", "-a.slice:p:n", "a--b.slice:p:n", "x/y.slice:p:n"])  # fmt: skip
def test_parse_refuses(path):
    with pytest.raises(BundleError):
        sd.parse("abc", path)


def test_parse_says_the_form():
    with pytest.raises(BundleError, match="slice:prefix:name"):
        sd.parse("abc", "/foo/bar")


def test_expand_slice_and_unit_cgroup():
    assert sd.expand_slice("system.slice") == "/system.slice"
    assert sd.expand_slice("a-b-c.slice") == "/a.slice/a-b.slice/a-b-c.slice"
    assert sd.expand_slice("-.slice") == "/"
    assert sd.unit_cgroup("machine.slice", "libpod-1.scope") == "machine.slice/libpod-1.scope"
    assert sd.unit_cgroup("-.slice", "x.scope") == "x.scope"
    assert sd.unit_cgroup("kubepods-burstable.slice", "cri-1.scope") == (
        "kubepods.slice/kubepods-burstable.slice/cri-1.scope")  # fmt: skip
    # A slice unit sits where its own name says.
    assert sd.unit_cgroup("kubepods.slice", "kubepods-pod1.slice") == (
        "kubepods.slice/kubepods-pod1.slice")  # fmt: skip


def test_range_to_bits():
    assert sd.range_to_bits("0", "x") == b"\x01"
    assert sd.range_to_bits("0-3,6", "x") == b"\x4f"
    assert sd.range_to_bits("8", "x") == b"\x00\x01"
    assert sd.range_to_bits("1,9-10", "x") == b"\x02\x06"
    for bad in ("a", "3-1", "1-"):
        with pytest.raises(BundleError):
            sd.range_to_bits(bad, "linux.resources.cpu.cpus")


def props(resources, **kw):
    return dict(sd.resource_properties(resources, **kw))


def test_memory_cpu_pids_properties():
    p = props({"memory": {"limit": 64 << 20, "reservation": 32 << 20, "swap": 96 << 20},
               "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0-1",
                       "mems": "0"},
               "pids": {"limit": 42}})  # fmt: skip
    assert p["MemoryMax"] == ("t", 64 << 20)
    assert p["MemoryLow"] == ("t", 32 << 20)
    assert p["MemorySwapMax"] == ("t", 32 << 20)  # memory+swap in the spec, swap alone here
    assert p["CPUWeight"] == ("t", 39)  # 1 + (1024 - 2) * 9999 / 262142
    assert p["CPUQuotaPeriodUSec"] == ("t", 100000)
    assert p["CPUQuotaPerSecUSec"] == ("t", 500000)
    assert p["TasksMax"] == ("t", 42)
    assert p["AllowedCPUs"] == ("ay", b"\x03")
    assert p["AllowedMemoryNodes"] == ("ay", b"\x01")


def test_no_swap_is_no_property():
    """memory+swap equal to memory (containerd's on v2, for a limit alone): runc sets no
    MemorySwapMax (the unit shows infinity); memory.swap.max gets 0 through cgroupfs."""
    p = props({"memory": {"limit": 64 << 20, "swap": 64 << 20}})
    assert p["MemoryMax"] == ("t", 64 << 20) and "MemorySwapMax" not in p


def test_hybrid_paths_include_the_v2_one():
    """On a hybrid host the unit's v2 cgroup is one of the container's paths (runc's ""),
    so that an exec joins it; systemd made it and put the init there."""
    mounts = {"memory": "/sys/fs/cgroup/memory", "name=systemd": "/sys/fs/cgroup/systemd"}
    assert set(sd._v1_paths(mounts, "a.slice/x.scope")) == {"memory", "name=systemd"}
    paths = sd._v1_paths({**mounts, "unified": "/sys/fs/cgroup/unified"}, "a.slice/x.scope")
    assert paths["unified"].startswith("/sys/fs/cgroup/unified/")
    assert paths["unified"].endswith("/a.slice/x.scope")


def test_unlimited_values_are_infinity():
    p = props({"memory": {"limit": -1}, "pids": {"limit": -1}, "cpu": {"quota": -1}})
    assert p["MemoryMax"] == ("t", MAX)
    assert p["MemorySwapMax"] == ("t", MAX)
    assert p["TasksMax"] == ("t", MAX)
    assert p["CPUQuotaPerSecUSec"] == ("t", MAX)
    assert "CPUQuotaPeriodUSec" not in p


def test_cpu_quota_rounds_up_to_ten_ms():
    p = props({"cpu": {"quota": 12345, "period": 100000}})
    assert p["CPUQuotaPerSecUSec"] == ("t", 130000)
    # No period: the kernel's default (100 ms).
    assert props({"cpu": {"quota": 20000}})["CPUQuotaPerSecUSec"] == ("t", 200000)
    # An update with a quota alone is per the period in force.
    p = props({"cpu": {"quota": 20000}}, period_now=50000)
    assert p["CPUQuotaPerSecUSec"] == ("t", 400000) and "CPUQuotaPeriodUSec" not in p


def test_old_systemd_gets_no_newer_properties():
    p = props({"cpu": {"period": 50000, "quota": 10000, "cpus": "0"}}, version=241)
    assert "CPUQuotaPeriodUSec" not in p and "AllowedCPUs" not in p
    assert p["CPUQuotaPerSecUSec"] == ("t", 200000)


def test_nothing_given_nothing_set():
    assert sd.resource_properties({}) == []
    assert sd.resource_properties({"memory": {}, "cpu": {}}) == []


def test_unified_keys():
    p = props({"unified": {"memory.high": "1000000", "memory.max": "max", "pids.max": "7",
                           "cpu.weight": "50", "cpu.max": "max 20000",
                           "io.weight": "default 100"}})  # fmt: skip
    assert p["MemoryHigh"] == ("t", 1000000)
    assert p["MemoryMax"] == ("t", MAX)
    assert p["TasksMax"] == ("t", 7)
    assert p["CPUWeight"] == ("t", 50)
    assert p["CPUQuotaPerSecUSec"] == ("t", MAX) and p["CPUQuotaPeriodUSec"] == ("t", 20000)
    assert "io.weight" not in str(p)  # no systemd form: cgroupfs alone writes it
    with pytest.raises(BundleError, match="memory.max"):
        props({"unified": {"memory.max": "lots"}})


def test_swap_without_limit_refused():
    with pytest.raises(BundleError, match="swap"):
        props({"memory": {"swap": 1 << 20}})


def test_device_properties():
    p = props({"devices": [{"allow": False, "access": "rwm"},
                           {"allow": True, "type": "c", "major": 4, "minor": 64, "access": "rw"},
                           {"allow": True, "type": "b", "major": 8, "access": "r"}]})  # fmt: skip
    assert p["DevicePolicy"] == ("s", "strict")
    allow = dict(p["DeviceAllow"][1])
    # A device by number only where the host has it (as runc); all by the device program.
    assert ("/dev/char/4:64" in allow) == os.path.exists("/sys/dev/char/4:64")
    # A major alone by its /proc/devices name where there is one (as runc).
    assert allow["block-sd" if "8 sd" in open("/proc/devices").read() else "block-8"] == "r"
    assert allow["char-*"] == "m" and allow["block-*"] == "m"  # the defaults: mknod of any
    assert allow["/dev/char/1:3"] == "rwm" and allow["char-pts"] == "rwm"  # null, ptys
    assert "/dev/char/10:200" not in allow or os.path.exists("/sys/dev/char/10:200")


def test_device_deny_after_allow_all():
    # systemd cannot deny within allow-all: it allows all, the device program denies.
    p = props({"devices": [{"allow": True, "access": "rwm"},
                           {"allow": False, "type": "c", "major": 1, "minor": 3}]})  # fmt: skip
    assert p["DevicePolicy"] == ("s", "auto") and p["DeviceAllow"] == ("a(ss)", [])


def test_device_deny_removes_an_earlier_allow():
    p = props({"devices": [{"allow": False, "access": "rwm"},
                           {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                           {"allow": False, "type": "c", "major": 1, "minor": 3, "access": "w"}]})  # fmt: skip
    # The defaults come after, and allow /dev/null again: rwm. A rule of its own:
    p = props({"devices": [{"allow": False, "access": "rwm"},
                           {"allow": True, "type": "b", "major": 7, "access": "rwm"},
                           {"allow": False, "type": "b", "major": 7, "access": "w"}]})  # fmt: skip
    name = "block-" + sd._device_groups().get(("b", 7), "7")
    assert dict(p["DeviceAllow"][1])[name] == "rm"


@pytest.mark.skipif(sd.running(), reason="this host runs systemd")
def test_create_without_systemd_is_refused(ours, bundle):
    def edit(c):
        c["linux"]["cgroupsPath"] = "system.slice:ocibox:x"

    cid = ours.new_id()
    p = ours("--systemd-cgroup", "create", "--bundle", bundle.write(["true"], edit), cid,
             check=False)  # fmt: skip
    assert p.returncode == 1
    assert "systemd is not running" in p.stderr and "Traceback" not in p.stderr
    assert not os.path.exists(ours.root / cid)


def test_cgroupfs_path_under_systemd_is_refused(ours, bundle):
    def edit(c):
        c["linux"]["cgroupsPath"] = "/ocibox-test/x"

    cid = ours.new_id()
    p = ours("--systemd-cgroup", "create", "--bundle", bundle.write(["true"], edit), cid,
             check=False)  # fmt: skip
    assert p.returncode == 1
    assert 'expected "slice:prefix:name"' in p.stderr and "Traceback" not in p.stderr


def test_no_dbus_import_without_the_flag():
    import subprocess
    import sys

    code = ("import sys; from ocibox.runtime import cli, create, container, stats; "
            "print(any(m.endswith(('.dbus', '.systemd')) for m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def test_annotation_properties():
    got = dict(sd.annotation_properties({
        "org.systemd.property.TimeoutStopUSec": "uint64 123456789",
        "org.systemd.property.CollectMode": "'inactive-or-failed'",
        "org.systemd.property.TimeoutStopSec": "7",
        "org.systemd.property.RuntimeMaxSec": "1.5",
        "org.systemd.property.Delegate": "true",
        "org.systemd.property.Wants": "['a.service', 'b.service']",
        "org.systemd.property.Nice": "int32 -5",
        "io.kubernetes.other": "ignored",
    }))  # fmt: skip
    assert got == {
        # Both name TimeoutStopUSec; in key order the USec one comes last and wins.
        "TimeoutStopUSec": ("t", 123456789),
        "CollectMode": ("s", "inactive-or-failed"),
        "RuntimeMaxUSec": ("t", 1500000),
        "Delegate": ("b", True),
        "Wants": ("as", ["a.service", "b.service"]),
        "Nice": ("i", -5),
    }
    assert sd.annotation_properties({"org.systemd.property.TimeoutStopUSec": "uint64 5"}) == [
        ("TimeoutStopUSec", ("t", 5))]  # fmt: skip


@pytest.mark.parametrize("key, value", [
    ("org.systemd.property.X", "1"), ("org.systemd.property.Bad-Name", "1"),
    ("org.systemd.property.CollectMode", "inactive"), ("org.systemd.property.TimeoutStopSec", "'x'"),
    ("org.systemd.property.Wants", "['a', 1]"), ("org.systemd.property.Nice", "uint64 'x'"),
])  # fmt: skip
def test_annotation_properties_refused(key, value):
    with pytest.raises(BundleError, match="annotation"):
        sd.annotation_properties({key: value})


def test_v1_unified_refused():
    from ocibox.errors import NotImplementedYet

    with pytest.raises(NotImplementedYet, match="cgroup v1"):
        sd.check_resources({"unified": {"memory.max": "1M"}}, True)
    sd.check_resources({"unified": {"memory.max": "1M"}}, False)
    sd.check_resources({"memory": {"limit": 1 << 20}}, True)


def test_v1_properties_as_runc():
    # runc 1.1's legacy manager: MemoryLimit, CPUShares (as given), the quota per
    # second, BlockIOWeight, TasksMax; swap and reservation are left to cgroupfs.
    res = {"memory": {"limit": 64 << 20, "reservation": 1 << 20, "swap": 128 << 20},
           "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"},
           "blockIO": {"weight": 300}, "pids": {"limit": 42}}  # fmt: skip
    props = dict(sd.v1_resource_properties(res, 252))
    assert props["MemoryLimit"] == ("t", 64 << 20)
    assert props["CPUShares"] == ("t", 512)
    assert props["CPUQuotaPerSecUSec"] == ("t", 500000)
    assert props["CPUQuotaPeriodUSec"] == ("t", 100000)
    assert props["BlockIOWeight"] == ("t", 300)
    assert props["TasksMax"] == ("t", 42)
    assert props["AllowedCPUs"] == ("ay", b"\x01")
    assert not {"MemoryMax", "MemoryLow", "MemorySwapMax", "CPUWeight"} & set(props)
    assert dict(sd.v1_resource_properties({"pids": {"limit": -1}}))["TasksMax"] == ("t", 2**64 - 1)
    # an update of the quota alone: per second of the period in force
    props = dict(sd.v1_resource_properties({"cpu": {"quota": 20000}}, 252, 50000))
    assert props == {"CPUQuotaPerSecUSec": ("t", 400000)}
    assert sd.v1_resource_properties({"pids": {"limit": 0}, "memory": {}}) == []

"""linux.netDevices: a host interface moved (and renamed) into the container's network namespace.

These machines have no dummy driver; one end of a veth pair serves as the interface.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest

from ocibox.errors import BundleError
from ocibox.runtime.linux import netdev

pytestmark = [pytest.mark.root]


def _exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


@pytest.fixture
def veth():
    """(kept end, end to move) of a new veth pair on the host."""
    if not os.path.exists("/usr/sbin/ip") and not os.path.exists("/sbin/ip"):
        pytest.skip("iproute2's ip is not installed")
    a, b = f"oxa{uuid.uuid4().hex[:8]}", f"oxb{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b], check=True)
    yield a, b
    subprocess.run(["ip", "link", "del", a], capture_output=True)


def _edit(devices):
    def edit(cfg):
        cfg["linux"]["netDevices"] = devices

    return edit


SHOW = "ls /sys/class/net | sort | tr '\\n' ' '"


def test_interface_is_moved_and_renamed(ours, bundle, veth):
    kept, moved = veth
    cid = ours.new_id()
    b = bundle.write(["sh", "-c", SHOW + "; sleep 30"], _edit({moved: {"name": "eth5"}}))
    ours("create", "--bundle", b, cid)
    # From create on, the interface lives in the container, under its new name.
    assert not _exists(moved)
    pid = ours.state(cid)["pid"]
    names = os.listdir(f"/proc/{pid}/root/sys/class/net")
    assert "eth5" in names and moved not in names
    ours("start", cid)
    ours("delete", "--force", cid)
    # The namespace is gone, and a virtual interface with it (a physical one
    # would go back to the host's initial namespace).
    assert not _exists(moved)
    assert not _exists(kept)


def test_interface_keeps_its_name_without_name(ours, bundle, veth):
    _, moved = veth
    b = bundle.write(["sh", "-c", SHOW], _edit({moved: {}}))
    p = ours("run", "--bundle", b, ours.new_id())
    assert p.stdout.split() == sorted(["lo", moved])


def test_missing_host_interface_is_refused(ours, bundle):
    b = bundle.write(["true"], _edit({"oxnothere0": {}}))
    p = ours("run", "--bundle", b, ours.new_id(), check=False)
    assert p.returncode != 0
    assert "the host has no network interface 'oxnothere0'" in p.stderr


def test_name_taken_in_the_container_fails_clearly(ours, bundle, veth):
    _, moved = veth
    b = bundle.write(["true"], _edit({moved: {"name": "lo"}}))
    p = ours("run", "--bundle", b, ours.new_id(), check=False)
    assert p.returncode != 0
    assert "an interface named 'lo' already exists there" in p.stderr
    # A failed create leaves the interface on the host.
    assert _exists(moved)


@pytest.mark.parametrize(
    "devices,needle",
    [
        ({"eth0": {"name": "a" * 16}}, "not a valid interface name"),
        ({"eth0": {"name": "a/b"}}, "not a valid interface name"),
        ({"lo": {"name": "x"}, "eth0": {"name": "x"}}, "two interfaces would be named 'x'"),
        (["eth0"], "must be an object"),
    ],
)
def test_bad_net_devices_are_refused(devices, needle):
    with pytest.raises(BundleError, match=needle):
        netdev.check(devices, True)


def test_net_devices_need_a_network_namespace():
    with pytest.raises(BundleError, match="network namespace"):
        netdev.check({"eth0": {}}, False)


def test_features_says_net_devices_are_supported():
    from ocibox.runtime.features import features

    assert features()["linux"]["netDevices"] == {"enabled": True}


def test_interface_goes_back_from_a_joined_namespace_on_delete(ours, bundle, veth, tmp_path):
    kept, moved = veth
    _give_addresses(moved)
    holder = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    try:
        deadline = time.monotonic() + 5
        while os.readlink(f"/proc/{holder.pid}/ns/net") == os.readlink("/proc/self/ns/net"):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        path = f"/proc/{holder.pid}/ns/net"

        def edit(cfg):
            cfg["linux"]["netDevices"] = {moved: {"name": "ctr0"}}
            cfg["linux"]["namespaces"] = [
                {"type": "network", "path": path} if n["type"] == "network" else n
                for n in cfg["linux"]["namespaces"]
            ]

        cid = ours.new_id()
        ours("create", "--bundle", bundle.write(["true"], edit), cid)
        assert not _exists(moved)
        inside = subprocess.run(["nsenter", "--net=" + path, "cat", "/proc/net/dev"],
                                capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert "ctr0:" in inside
        ours("delete", "--force", cid)
        # Back on the host under its own name and with its addresses; the
        # namespace lives on without it.
        assert _exists(moved)
        assert _has_given_addresses(moved)
        inside = subprocess.run(["nsenter", "--net=" + path, "cat", "/proc/net/dev"],
                                capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert "ctr0:" not in inside
    finally:
        holder.kill()
        holder.wait()


def test_addresses_move_with_the_interface(ours, bundle, veth):
    _, moved = veth
    subprocess.run(["ip", "addr", "add", "169.254.169.13/32", "dev", moved], check=True)
    subprocess.run(["ip", "addr", "add", "fd00::13/64", "dev", moved, "nodad"], check=True)
    link = bundle.rootfs / "bin" / "ip"
    if not link.exists():
        link.symlink_to("busybox")
    b = bundle.write(["ip", "-o", "addr", "show", "dev", "eth5"], _edit({moved: {"name": "eth5"}}))
    p = ours("run", "--bundle", b, ours.new_id())
    assert "inet 169.254.169.13/32" in p.stdout
    assert "inet6 fd00::13/64" in p.stdout


def _host_addresses(name: str) -> str:
    return subprocess.run(["ip", "-o", "addr", "show", "dev", name],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip


def _give_addresses(name: str) -> None:
    subprocess.run(["ip", "addr", "add", "169.254.169.14/32", "dev", name], check=True)
    subprocess.run(["ip", "addr", "add", "fd00::14/64", "dev", name, "nodad"], check=True)


def _has_given_addresses(name: str) -> bool:
    shown = _host_addresses(name)
    return "inet 169.254.169.14/32" in shown and "inet6 fd00::14/64" in shown


def test_failed_hook_after_the_move_gives_the_interface_back(ours, bundle, veth):
    # createRuntime runs with the interface already in the container's namespace;
    # its failure must not take the interface (a veth: deleted) down with the namespace.
    kept, moved = veth
    _give_addresses(moved)

    def edit(cfg):
        cfg["linux"]["netDevices"] = {moved: {"name": "eth5"}}
        cfg["hooks"] = {"createRuntime": [{"path": "/bin/sh", "args": [
            "sh", "-c", f"test ! -e /sys/class/net/{moved} && exit 3"]}]}  # fmt: skip

    p = ours("create", "--bundle", bundle.write(["true"], edit), ours.new_id(), check=False)
    assert p.returncode != 0
    assert "exit status 3" in p.stderr  # so the hook saw the interface moved away
    assert _exists(moved) and _exists(kept)
    assert _has_given_addresses(moved)


def test_init_failing_after_the_move_gives_the_interface_back(ours, bundle, veth):
    kept, moved = veth
    _give_addresses(moved)

    def edit(cfg):
        cfg["linux"]["netDevices"] = {moved: {"name": "eth5"}}
        cfg["mounts"].append({"destination": "/mnt", "type": "bind",
                              "source": "/nonexistent/ocibox", "options": ["bind"]})  # fmt: skip

    p = ours("create", "--bundle", bundle.write(["true"], edit), ours.new_id(), check=False)
    assert p.returncode != 0
    assert "/nonexistent/ocibox" in p.stderr
    assert _exists(moved) and _exists(kept)
    assert _has_given_addresses(moved)


def test_create_failing_after_the_init_is_ready_gives_the_interface_back(ours, bundle, veth,
                                                                         tmp_path):  # fmt: skip
    # The last step of create, the pid file, fails: the init is killed, the interface kept.
    _, moved = veth
    _give_addresses(moved)
    b = bundle.write(["true"], _edit({moved: {"name": "eth5"}}))
    pid_file = tmp_path / "no-such-dir" / "pid"
    p = ours("create", "--bundle", b, "--pid-file", str(pid_file), ours.new_id(), check=False)
    assert p.returncode != 0
    assert _exists(moved)
    assert _has_given_addresses(moved)

"""The runtime's D-Bus client against a real dbus-daemon (a private bus of our own).

dbus-daemon checks every message it routes and drops a client that sends a
malformed one, so a body that goes through it, from one of our connections to
another, is marshalled as the specification says.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from ocibox.runtime.linux import dbus

pytestmark = pytest.mark.peer

_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={path}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


@pytest.fixture(scope="module")
def bus(tmp_path_factory):
    if shutil.which("dbus-daemon") is None:
        pytest.skip("dbus-daemon is not installed (apt-get install dbus)")
    d = tmp_path_factory.mktemp("bus")
    path = d / "bus.sock"
    (d / "bus.conf").write_text(_CONFIG.format(path=path))
    proc = subprocess.Popen(["dbus-daemon", "--nofork", f"--config-file={d / 'bus.conf'}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    for _ in range(500):
        if path.exists():
            break
        time.sleep(0.01)
    yield str(path)
    proc.terminate()
    proc.wait()


BUS = ("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus")


def test_signature_split():
    assert dbus.split("ssa(sv)a(sa(sv))") == ["s", "s", "a(sv)", "a(sa(sv))"]
    assert dbus.split("a{sv}uay") == ["a{sv}", "u", "ay"]
    with pytest.raises(ValueError):
        dbus.split("a(sv")
    with pytest.raises(ValueError):
        dbus.split("sz")


def test_marshal_round_trip():
    sig = "yba{sv}a(ss)ayxtdos"
    values = [7, True, {"a": ("u", 5), "b": ("as", ["x", "y"])}, [("p", "rwm")], b"\x0f\x01",
              -3, 2**64 - 1, 1.5, "/a/b", "text"]  # fmt: skip
    got = dbus.unmarshal(sig, dbus.marshal(sig, values))
    assert got == [7, True, {"a": 5, "b": ["x", "y"]}, [("p", "rwm")], b"\x0f\x01", -3,
                   2**64 - 1, 1.5, "/a/b", "text"]  # fmt: skip
    # An empty array of 8-aligned elements is still padded to 8 (not counted in its length).
    data = dbus.marshal("ua(st)", [1, []])
    assert data == b"\x01\0\0\0" + b"\0\0\0\0"


def test_hello_and_methods(bus):
    c = dbus.Connection(bus, bus=True)
    try:
        assert c.unique_name.startswith(":")
        names = c.call(*BUS, "ListNames")[0]
        assert "org.freedesktop.DBus" in names and c.unique_name in names
        assert c.call(*BUS, "GetNameOwner", "s", ("org.freedesktop.DBus",)) == [
            "org.freedesktop.DBus"
        ]
    finally:
        c.close()


def test_error_reply_is_a_clear_error(bus):
    c = dbus.Connection(bus, bus=True)
    try:
        with pytest.raises(dbus.DBusError) as e:
            c.call(*BUS, "GetNameOwner", "s", ("org.example.Nobody",))
        assert e.value.name == "org.freedesktop.DBus.Error.NameHasNoOwner"
        assert "GetNameOwner" in e.value.message and "org.example.Nobody" in e.value.message
    finally:
        c.close()


def test_signal_kept_while_waiting_for_a_reply(bus):
    c = dbus.Connection(bus, bus=True)
    try:
        # RequestName sends NameAcquired (a signal) before or with its reply.
        assert c.call(*BUS, "RequestName", "su", ("org.example.Ocibox", 0)) == [1]
        sig = c.wait_signal(lambda m: m.body == ["org.example.Ocibox"])
        assert sig.fields["member"] == "NameAcquired"
        # The one for the unique name (sent after Hello) is still kept.
        assert c.wait_signal(lambda m: m.fields.get("member") == "NameAcquired").body == [
            c.unique_name
        ]
    finally:
        c.close()


def test_a_call_to_a_peer_arrives_intact(bus):
    """What systemd's StartTransientUnit takes, sent through dbus-daemon to another client."""
    a, b = dbus.Connection(bus, bus=True), dbus.Connection(bus, bus=True)
    try:
        props = [("Description", ("s", "libcontainer container x")), ("PIDs", ("au", [1, 2])),
                 ("Delegate", ("b", True)), ("MemoryMax", ("t", 2**64 - 1)),
                 ("AllowedCPUs", ("ay", b"\x05")),
                 ("DeviceAllow", ("a(ss)", [("char-pts", "rwm"), ("/dev/char/1:3", "rwm")]))]  # fmt: skip
        fields = {"path": "/org/freedesktop/systemd1", "interface": dbus.MANAGER,
                  "member": "StartTransientUnit", "destination": b.unique_name,
                  "signature": "ssa(sv)a(sa(sv))"}  # fmt: skip
        a.send(dbus.Message(1, 99, fields, ["x.scope", "replace", props, []], flags=1))
        got = b.receive()
        while got.kind == 4:  # NameAcquired for b's unique name, and the like
            got = b.receive()
        assert got.kind == 1 and got.fields["member"] == "StartTransientUnit"
        assert got.fields["sender"] == a.unique_name
        name, mode, recv, aux = got.body
        assert (name, mode, aux) == ("x.scope", "replace", [])
        assert recv == [(k, v) for k, (_, v) in props]
        # Both still connected: the daemon took the message as well-formed.
        assert a.call(*BUS, "GetId")[0] == b.call(*BUS, "GetId")[0]
    finally:
        a.close()
        b.close()


def test_no_socket_is_a_clear_error(tmp_path):
    with pytest.raises(OSError):
        dbus.Connection(str(tmp_path / "none"), bus=True)


def test_a_reply_that_never_comes_times_out(bus):
    """A call to a peer that does not answer: an error after the connection's timeout,
    however much other traffic arrives meanwhile."""
    a, b = dbus.Connection(bus, bus=True, timeout=1.0), dbus.Connection(bus, bus=True)
    try:
        with pytest.raises(dbus.DBusError, match="no answer in 1 s"):
            a.call(b.unique_name, "/x", "org.example.X", "Never")
        with pytest.raises(dbus.DBusError, match="no answer in 1 s"):
            a.wait_signal(lambda m: False)
    finally:
        a.close()
        b.close()

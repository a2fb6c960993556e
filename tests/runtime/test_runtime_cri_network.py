"""Pods with a network of their own: containerd's CRI plugin, CNI, and ocibox-runtime.

A Kubernetes pod that is not on the host's network gets a network namespace
that containerd makes and pins (``/var/run/netns/cni-...``) and hands to the
CNI plugins; the runtime then runs the sandbox and every container of the pod
with that namespace joined by path (``linux.namespaces`` network ``path``).
The plugins are Debian's (containernetworking-plugins, in /usr/lib/cni):
``bridge`` with ``host-local`` addresses on a bridge and subnet of this test's
own, plus ``loopback``, which containerd runs for ``lo``. The configuration is
written into the private containerd's (test_runtime_cri's) CNI directory once
it runs, and its CRI plugin picks it up: Status says NetworkReady.

The same session runs under the ``runc`` and ``ocibox`` handlers, and their
transcripts, addresses taken out, must be equal: the sandbox's address from
PodSandboxStatus; a server container and a client container of the pod in the
pod's namespace (not the host's), the client reaching the server on
127.0.0.1 and seeing the pod's address on eth0; the host reaching the server
at the pod's address through the bridge; PortForward into the pod's namespace
(containerd dials localhost there); and after the pod is removed, its
namespace gone, its address given back to host-local, nothing held by the
runtime and no cgroup left.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import test_runtime_cri
from test_runtime_cri import (
    POD,
    Node,
    _both,
    _container_config,
    _create,
    _log,
    _run_pod,
    _status,
    _teardown,
    _wait_exited,
    pb,
)
from test_runtime_cri_stream import _forward

pytestmark = [pytest.mark.peer, pytest.mark.root]

PLUGINS = Path("/usr/lib/cni")
BRIDGE = "ocbxcri0"
SUBNET = "10.213.47"  # /24: nothing on these machines routes it
PORT = 8080

# the private containerd: test_runtime_cri's fixture, made again for this module
node = test_runtime_cri.node


@pytest.fixture(scope="module")
def net(node: Node):
    """The CNI plugins and configuration given to the running containerd."""
    for plugin in ("bridge", "host-local", "loopback"):
        if not os.access(PLUGINS / plugin, os.X_OK):
            pytest.skip(f"{PLUGINS / plugin} is missing (containernetworking-plugins; "
                        "make peers installs it)")  # fmt: skip
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        subprocess.run(["ip", "link", "del", BRIDGE], check=True)
    short = Path(node.short)
    for plugin in ("bridge", "host-local", "loopback"):
        (short / "cni-bin" / plugin).symlink_to(PLUGINS / plugin)
    ipam = short / "cni-ipam"
    conf = {"cniVersion": "0.4.0", "name": "ocibox-cri", "plugins": [{
        "type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": f"{SUBNET}.0/24"}]],
                 "dataDir": str(ipam)}}]}  # fmt: skip
    (short / "cni-conf" / "10-ocibox.conflist").write_text(json.dumps(conf))
    deadline = time.monotonic() + 20
    while not _network_ready(node):
        assert time.monotonic() < deadline, "the CRI plugin did not load the CNI configuration"
        time.sleep(0.1)
    try:
        yield ipam / "ocibox-cri"
    finally:
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)


def _network_ready(node: Node) -> bool:
    conditions = node.cri("Status", b"").msg(1).msgs(1)
    return {c.str(1): bool(c.int(2)) for c in conditions}.get("NetworkReady", False)


def _netns_of(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


def _exec(node: Node, cid: str, script: str) -> str:
    resp = node.cri("ExecSync", pb((1, cid), (2, ["sh", "-c", script]), (3, 10)))
    return (resp.bytes(1) + resp.bytes(2)).decode() + f"exit={resp.int(3)}"


def _network_session(node: Node, ipam: Path, handler: str) -> list[str]:
    out = []
    sid, sandbox, parent = _run_pod(node, handler, "net", network=POD)
    resp = node.cri("PodSandboxStatus", pb((1, sid), (2, True)))
    ip = resp.msg(1).msg(5).str(1)  # PodSandboxStatus.network.ip
    info = json.loads(resp.map(2)["info"])
    netns_path = info["runtimeSpec"]["linux"]["namespaces"]
    netns_path = next(n["path"] for n in netns_path if n["type"] == "network")
    out.append(f"sandbox ip in subnet {ip.startswith(SUBNET + '.')} "
               f"netns pinned {netns_path.startswith('/var/run/netns/cni-')}")  # fmt: skip
    pod_net = _netns_of(info["pid"])
    out.append(f"sandbox in its own netns {pod_net != _netns_of(os.getpid())}")
    out.append(f"address held {(ipam / ip).is_file()}")

    script = (f"mkdir /www && echo served in the pod > /www/index.html && "
              f"exec busybox httpd -f -p {PORT} -h /www")  # fmt: skip
    server = _create(node, sid, sandbox, _container_config(
        "server", ["sh", "-c", script], network=POD))  # fmt: skip
    node.cri("StartContainer", pb((1, server)))
    client_script = (f"busybox wget -q -O - http://127.0.0.1:{PORT}/index.html; "
                     "busybox ip -o -4 addr show | while read -r n dev fam addr rest; do "
                     'echo "$dev $addr"; done; readlink /proc/self/ns/net')  # fmt: skip
    # the client waits for the server to listen: httpd binds as it starts
    wait = (f"i=0; until busybox wget -q -O /dev/null http://127.0.0.1:{PORT}/index.html "
            '|| [ "$i" -gt 200 ]; do i=$((i + 1)); sleep 0.05; done; ')  # fmt: skip
    client = _create(node, sid, sandbox, _container_config(
        "client", ["sh", "-c", wait + client_script], network=POD))  # fmt: skip
    node.cri("StartContainer", pb((1, client)))
    status = _wait_exited(node, client)
    lines = [line.replace(ip, "<pod-ip>").replace(pod_net, "<pod-netns>")
             for line in _log(status.str(15))]  # fmt: skip
    out.append(f"client exit={status.int(7)}")
    out += lines

    _, sinfo = _status(node, server, verbose=True)
    out.append(f"server in the pod's netns {_netns_of(sinfo['pid']) == pod_net}")
    out.append("exec " + _exec(node, server, "busybox ip -o link show eth0 | "
                                             "grep -o '<[^>]*>'"))  # fmt: skip
    with urllib.request.urlopen(f"http://{ip}:{PORT}/index.html", timeout=10) as r:
        out.append(f"host to pod {r.status} {r.read()!r}")
    got = _forward(node, sid, PORT, b"GET /index.html HTTP/1.0\r\n\r\n")
    head, _, body = got.get(0, b"").partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n")[0]
    out.append(f"forwarded {status_line!r} {body!r} error {got.get(1)!r}")

    out.append(_teardown(node, handler, sid, parent, server, client))
    out.append(f"netns gone {not os.path.exists(netns_path)} "
               f"address released {not (ipam / ip).exists()}")  # fmt: skip
    return out


def test_cri_pod_network(node, net):
    out = _both(lambda handler: _network_session(node, net, handler))
    assert out[:3] == ["sandbox ip in subnet True netns pinned True",
                       "sandbox in its own netns True", "address held True"]  # fmt: skip
    assert out[3] == "client exit=0"
    assert out[4:8] == ["stdout F served in the pod", "stdout F lo 127.0.0.1/8",
                        "stdout F eth0 <pod-ip>/24", "stdout F <pod-netns>"]  # fmt: skip
    assert out[8:] == [
        "server in the pod's netns True",
        "exec <BROADCAST,MULTICAST,UP,LOWER_UP,M-DOWN>\nexit=0",
        "host to pod 200 b'served in the pod\\n'",
        "forwarded b'HTTP/1.1 200 OK' b'served in the pod\\n' error None",
        "held [] cgroups []",
        "netns gone True address released True",
    ]
    assert not re.search(rf"{SUBNET}\.\d+", "\n".join(out)), "addresses differ per run"

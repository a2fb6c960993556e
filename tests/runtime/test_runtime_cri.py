"""Kubernetes' way in: containerd's CRI plugin runs pods with ocibox-runtime.

kubelet drives a container runtime through the CRI (k8s.io/cri-api, gRPC
service ``runtime.v1.RuntimeService``); containerd 1.6 serves it from its
plugin ``io.containerd.grpc.v1.cri``. Here a private containerd (Debian's 1.6:
its own config, root, state and sockets) runs with that plugin and two runtime
handlers of type ``io.containerd.runc.v2``: ``ocibox``, the default, whose
``BinaryName`` is ocibox-runtime, and ``runc``. Each has its own shim ``Root``
(the runtime's --root is ``<Root>/k8s.io``), so the test can ask either runtime
what it holds.

No network is needed: the pods use the node's network (NamespaceOption network
= NODE), and the CNI configuration directory is an empty one (the host's podman
bridge is never read). The sandbox ("pause") image and the containers' image are
busybox-static images made by the ocibox library, imported into the ``k8s.io``
namespace with ``ctr images import``; ``sandbox_image`` names the pause one.

The CRI messages are encoded and decoded here by hand (protobuf's wire format:
varints and length-delimited fields; field numbers from cri-api's
pkg/apis/runtime/v1/api.proto), and grpcio carries them as raw bytes.

The same sessions run under both handlers and their transcripts, ids and times
taken out, must be equal: a pod's sandbox, a container writing to stdout and
stderr with an env and a read-only bind mount, the pod's IPC namespace and
/dev/shm shared with another container, ExecSync, the log file in the
CRI format, the exit code and reason, limits set at creation and changed by
UpdateContainerResources (the runtime's ``update``), ContainerStats read from
the cgroups the runtime made, StopContainer's SIGTERM and, past the grace
period, SIGKILL; OOMKilled; a securityContext (user, read-only root,
capabilities, no_new_privs, RuntimeDefault seccomp, a sandbox sysctl); a
privileged container; a terminal; a pod sharing one pid namespace, where what a
container's main process leaves behind is killed when it exits; a pod stopped
with a container running; containerd restarted under a running pod; mount
propagation HostToContainer and Bidirectional; a
container whose command does not exist (StartContainer fails with the
runtime's reason); and every time, that neither runtime nor the cgroup
hierarchies keep anything afterwards.

What these sessions needed of ocibox-runtime is also checked against runc
directly: ``kill --all`` of a stopped container succeeds (the shim sends it when
deleting every exited task; refused, the CRI plugin kept the container
RUNNING), the words for a command that cannot run, and an rshared bind under
rootfsPropagation rshared sending the container's mounts to the host.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from test_runtime_containerd import _shims_of, _umount_under

from ocibox.image.layout import Layout

try:
    import grpc
except ImportError:  # a test dependency (pyproject's [test] extra)
    grpc = None

pytestmark = [pytest.mark.peer, pytest.mark.root]

REPO = Path(__file__).resolve().parents[2]
RUNTIME = Path(os.environ.get("OCIBOX_TEST_RUNTIME") or REPO / ".venv" / "bin" / "ocibox-runtime")
PAUSE = "localhost/ocibox-cri-pause:v1"
BUSYBOX = "localhost/ocibox-cri-busybox:v1"
HANDLERS = ("runc", "ocibox")


def need(program: str) -> str:
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
    if path is None:
        pytest.skip(f"peer program {program!r} is not installed (make peers installs it)")
    return path

RUNTIMES = "/runtime.v1.RuntimeService/"
IMAGES = "/runtime.v1.ImageService/"

# --- protobuf's wire format, the little the CRI messages here need ---------------------------


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int32/int64: ten bytes of two's complement
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def pb(*fields: tuple[int, object]) -> bytes:
    """A message from (number, value) pairs.

    str and int/bool: proto3 scalars (left out when zero); bytes: an embedded
    message, always written (its presence may matter); list: a repeated field;
    dict: a map<string, string>.
    """
    out = bytearray()
    for num, value in fields:
        if isinstance(value, list):
            out += pb(*((num, v) for v in value))
        elif isinstance(value, dict):
            out += pb(*((num, pb((1, k), (2, v))) for k, v in value.items()))
        elif isinstance(value, bool | int):
            if value:
                out += _varint(num << 3) + _varint(int(value))
        elif isinstance(value, str | bytes):
            data = value.encode() if isinstance(value, str) else value
            if data or isinstance(value, bytes):
                out += _varint(num << 3 | 2) + _varint(len(data)) + data
        else:
            raise TypeError(f"field {num}: {type(value).__name__}")
    return bytes(out)


class Msg:
    """A decoded message: each field number's values, as varints (int) or bytes."""

    def __init__(self, data: bytes) -> None:
        self.fields: dict[int, list[int | bytes]] = {}
        i = 0
        while i < len(data):
            key, i = self._read_varint(data, i)
            num, kind = key >> 3, key & 7
            if kind == 0:
                value, i = self._read_varint(data, i)
            elif kind == 2:
                size, i = self._read_varint(data, i)
                value, i = data[i : i + size], i + size
            elif kind in (1, 5):  # fixed64, fixed32: none in these messages, skipped
                width = 8 if kind == 1 else 4
                value, i = int.from_bytes(data[i : i + width], "little"), i + width
            else:
                raise ValueError(f"wire type {kind} of field {num}")
            self.fields.setdefault(num, []).append(value)

    @staticmethod
    def _read_varint(data: bytes, i: int) -> tuple[int, int]:
        n = shift = 0
        while True:
            byte = data[i]
            n |= (byte & 0x7F) << shift
            i += 1
            if not byte & 0x80:
                return n, i
            shift += 7

    def int(self, num: int) -> int:
        n = self.fields.get(num, [0])[-1]
        return n - (1 << 64) if n >= 1 << 63 else n

    def str(self, num: int) -> str:
        return self.fields.get(num, [b""])[-1].decode()

    def bytes(self, num: int) -> bytes:
        return self.fields.get(num, [b""])[-1]

    def msg(self, num: int) -> Msg:
        return Msg(self.bytes(num))

    def msgs(self, num: int) -> list[Msg]:
        return [Msg(v) for v in self.fields.get(num, [])]

    def map(self, num: int) -> dict[str, str]:
        return {m.str(1): m.str(2) for m in self.msgs(num)}


# CRI enums (api.proto)
POD, CONTAINER, NODE = 0, 1, 2  # NamespaceMode
SANDBOX_READY, SANDBOX_NOTREADY = 0, 1
STATES = {0: "CREATED", 1: "RUNNING", 2: "EXITED", 3: "UNKNOWN"}


class Cri:
    """runtime.v1.RuntimeService over containerd's socket, raw bytes both ways."""

    def __init__(self, sock: str) -> None:
        self.channel = grpc.insecure_channel(f"unix://{sock}")

    def __call__(self, method: str, request: bytes, timeout: float = 30,
                 service: str = RUNTIMES) -> Msg:  # fmt: skip
        call = self.channel.unary_unary(service + method)  # no (de)serializers: bytes
        return Msg(call(request, timeout=timeout))

    def error(self, method: str, request: bytes) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as info:
            self(method, request)
        return info.value

    def close(self) -> None:
        self.channel.close()


# --- the private containerd -------------------------------------------------------------------


def _config(short: str, root: str, systemd_cgroup: bool = False) -> str:
    """``systemd_cgroup``: both handlers' SystemdCgroup (the shim runs the runtime with
    --systemd-cgroup), as on a node whose kubelet has cgroupDriver systemd."""
    runtimes = ""
    for handler, binary in (("ocibox", str(RUNTIME)), ("runc", need("runc"))):
        runtimes += f"""
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{handler}]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{handler}.options]
        BinaryName = "{binary}"
        Root = "{short}/{handler}"
        SystemdCgroup = {str(systemd_cgroup).lower()}
"""
    return f"""version = 2
root = "{root}"
state = "{short}/state"
[grpc]
  address = "{short}/c.sock"
[ttrpc]
  address = "{short}/t.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # a sandbox's oom_score_adj is -998, and lowering it needs CAP_SYS_RESOURCE (often
  # missing, as on these machines): capped at containerd's own, as when it runs rootless
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{short}/cni-bin"
    conf_dir = "{short}/cni-conf"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "ocibox"
    snapshotter = "overlayfs"
{runtimes}"""


def _rootfs(at: Path) -> Path:
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        pytest.skip("busybox-static is not installed (make peers installs it)")
    (at / "bin").mkdir(parents=True)
    shutil.copy2(busybox, at / "bin" / "busybox")
    for applet in ("sh", "cat", "echo", "sleep", "touch", "test", "[", "id", "true", "grep",
                   "yes", "head", "ls", "mkdir", "mount", "readlink"):
        (at / "bin" / applet).symlink_to("busybox")
    (at / "etc").mkdir()
    (at / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (at / "etc" / "group").write_text("root:x:0:\n")
    for d in ("tmp", "root", "proc", "sys", "dev"):
        (at / d).mkdir()
    (at / "tmp").chmod(0o1777)
    return at


def _import_images(ctr: list[str], work: Path) -> None:
    from ocibox.image.mutate import ConfigEdit, edit_config, import_rootfs

    layout = work / "layout"
    lay = Layout.init(str(layout))
    import_rootfs(lay, "v1", str(_rootfs(work / "rootfs")))
    edit_config(lay, "v1", ConfigEdit(cmd=["/bin/sh"], env=["PATH=/bin"]))
    # the sandbox's process: sleeps until StopPodSandbox kills it, as pause does
    edit_config(lay, "v1", ConfigEdit(cmd=["/bin/sleep", "2147483647"]), new_tag="pause")
    for tag, name in (("v1", BUSYBOX), ("pause", PAUSE)):
        archive = work / f"{tag}.tar"
        copy = [sys.executable, "-m", "ocibox.cli", "copy", f"oci:{layout}:{tag}",
                f"oci-archive:{archive}:v1"]  # fmt: skip
        proc = subprocess.run(copy, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        base = name.rsplit(":", 1)[0]
        proc = subprocess.run([*ctr, "images", "import", "--base-name", base, str(archive)],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert proc.returncode == 0, proc.stderr


class Containerd:
    """The private containerd; a test may stop and start it again (its shims live on)."""

    def __init__(self, program: str, conf: Path, log: Path, ctr: list[str]) -> None:
        self.argv = [program, "--config", str(conf)]
        self.log_path = log
        self.ctr = ctr
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while subprocess.run([*self.ctr, "version"], capture_output=True).returncode != 0:
            assert self.proc.poll() is None, self.log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "containerd did not come up"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


class Node:
    """What a session needs: the CRI client, containerd, and where things are on the host."""

    def __init__(self, cri: Cri, daemon: Containerd, short: str, work: Path) -> None:
        self.cri = cri
        self.daemon = daemon
        self.short = short
        self.work = work
        self.cgroup_parents: list[str] = []

    def restart(self) -> None:
        """containerd stopped and started: the CRI plugin recovers its pods from the shims."""
        self.daemon.stop()
        self.daemon.start()
        deadline = time.monotonic() + 20
        while True:  # "server is not initialized yet" until its recovery is done
            try:
                self.cri("Status", b"")
                return
            except grpc.RpcError:
                assert time.monotonic() < deadline, "the CRI plugin did not come back"
                time.sleep(0.1)

    def runtime(self, handler: str, *args: str) -> subprocess.CompletedProcess:
        """The handler's runtime program, with the --root its shim gives it."""
        binary = str(RUNTIME) if handler == "ocibox" else need("runc")
        return subprocess.run([binary, "--root", f"{self.short}/{handler}/k8s.io", *args],
                              capture_output=True, text=True, timeout=30)  # fmt: skip

    def held(self, handler: str) -> list[str]:
        proc = self.runtime(handler, "list", "--quiet")
        assert proc.returncode == 0, proc.stderr
        return sorted(proc.stdout.split())


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    if grpc is None:
        pytest.skip("grpcio is not installed (the [test] extra: pip install -e '.[test]')")
    containerd = need("containerd")
    ctr = need("ctr")
    need("containerd-shim-runc-v2")
    need("runc")
    if not os.access(RUNTIME, os.X_OK):
        pytest.skip(f"{RUNTIME} is not installed (make venv installs it)")
    work = tmp_path_factory.mktemp("cri")
    short = tempfile.mkdtemp(prefix="ocibox-cri-")  # sockets need short paths
    os.chmod(short, 0o755)
    for d in ("cni-bin", "cni-conf"):
        os.mkdir(f"{short}/{d}")
    root = str(work / "containerd-root")
    conf = work / "containerd.toml"
    conf.write_text(_config(short, root))
    sock = f"{short}/c.sock"
    argv = [ctr, "-a", sock, "-n", "k8s.io"]
    daemon = Containerd(containerd, conf, work / "containerd.log", argv)
    cri = made = None
    try:
        daemon.start()
        _import_images(argv, work)
        cri = Cri(sock)
        deadline = time.monotonic() + 10
        for image in (PAUSE, BUSYBOX):  # the CRI plugin learns of them from containerd's events
            while not cri("ImageStatus", pb((1, pb((1, image)))), service=IMAGES).fields:
                assert time.monotonic() < deadline, f"the CRI plugin never saw {image}"
                time.sleep(0.1)
        made = Node(cri, daemon, short, work)
        yield made
    finally:
        if cri is not None:
            if daemon.proc is not None:
                _remove_all(cri)
            cri.close()
        daemon.stop()
        for pid in _shims_of(sock):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for parent in made.cgroup_parents if made else []:
            _kill_cgroup(parent)  # a failed stop leaves the processes with no shim
            _cgroups_left(parent)
        _umount_under(root, short)
        shutil.rmtree(short, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


def _kill_cgroup(parent: str) -> None:
    pids = Path("/sys/fs/cgroup/pids") / parent.lstrip("/")
    for procs in pids.glob("*/cgroup.procs"):
        for pid in procs.read_text().split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 5
    while any(p.read_text() for p in pids.glob("*/cgroup.procs")) and time.monotonic() < deadline:
        time.sleep(0.05)


def _remove_all(cri: Cri) -> None:
    """Whatever a failed test left: every sandbox stopped and removed (containers with it)."""
    try:
        for sandbox in cri("ListPodSandbox", b"").msgs(1):
            sid = sandbox.str(1)
            cri("StopPodSandbox", pb((1, sid)))
            cri("RemovePodSandbox", pb((1, sid)))
    except grpc.RpcError:
        pass


# --- CRI requests -------------------------------------------------------------------------------


def _sandbox_config(name: str, log_dir: str, cgroup_parent: str, pid: int,
                    sysctls: dict[str, str], privileged: bool,
                    network: int = NODE) -> bytes:  # fmt: skip
    metadata = pb((1, name), (2, uuid.uuid4().hex), (3, "ocibox-test"), (4, 0))
    namespaces = pb((1, network), (2, pid))  # the node's network, or the pod's own (CNI)
    security = pb((1, namespaces), (6, privileged))
    linux = pb((1, cgroup_parent), (2, security), (3, sysctls))
    return pb((1, metadata), (3, log_dir), (6, {"app": name}),
              (7, {"ocibox.test/note": "a pod"}), (8, linux))  # fmt: skip


def _container_config(name: str, command: list[str], *, envs: dict[str, str] | None = None,
                      mounts: list[bytes] | None = None, resources: bytes = b"",
                      pid: int = CONTAINER, security: tuple = (), tty: bool = False,
                      network: int = NODE) -> bytes:  # fmt: skip
    namespaces = pb((1, network), (2, pid))
    return pb(
        (1, pb((1, name))),
        (2, pb((1, BUSYBOX))),
        (3, command),
        (6, [pb((1, k), (2, v)) for k, v in (envs or {}).items()]),
        (7, mounts or []),
        (9, {"container": name}),
        (10, {"ocibox.test/role": name}),
        (11, f"{name}/0.log"),
        (14, tty),
        (15, pb((1, resources), (2, pb((3, namespaces), *security)))),
    )


def _resources(cpu_quota: int, memory: int) -> bytes:
    """LinuxContainerResources: a CFS quota over a 100 ms period, a memory limit."""
    return pb((1, 100000), (2, cpu_quota), (4, memory))


def _limits(parent: str, cid: str) -> str:
    """The container's v1 cgroup files the runtime wrote the limits to."""
    place = f"{parent.lstrip('/')}/{cid}"
    memory = Path(f"/sys/fs/cgroup/memory/{place}/memory.limit_in_bytes").read_text().strip()
    quota = Path(f"/sys/fs/cgroup/cpu/{place}/cpu.cfs_quota_us").read_text().strip()
    return f"memory {int(memory) >> 20} MiB, quota {quota}"


def _run_pod(node: Node, handler: str, name: str, pid: int = CONTAINER,
             sysctls: dict[str, str] | None = None, privileged: bool = False,
             network: int = NODE) -> tuple[str, bytes, str]:  # fmt: skip
    """RunPodSandbox under ``handler``: the sandbox's id, its config and its cgroup parent."""
    parent = f"/ocibox-cri-{uuid.uuid4().hex[:8]}"
    node.cgroup_parents.append(parent)
    log_dir = node.work / f"pods-{handler}-{name}"
    log_dir.mkdir()
    config = _sandbox_config(name, str(log_dir), parent, pid, sysctls or {}, privileged, network)
    sid = node.cri("RunPodSandbox", pb((1, config), (2, handler))).str(1)
    assert sid
    return sid, config, parent


def _create(node: Node, sid: str, sandbox: bytes, config: bytes) -> str:
    cid = node.cri("CreateContainer", pb((1, sid), (2, config), (3, sandbox))).str(1)
    assert cid
    return cid


def _status(node: Node, cid: str, verbose: bool = False) -> tuple[Msg, dict]:
    resp = node.cri("ContainerStatus", pb((1, cid), (2, verbose)))
    info = json.loads(resp.map(2).get("info", "{}"))
    return resp.msg(1), info


def _wait_exited(node: Node, cid: str) -> Msg:
    deadline = time.monotonic() + 15
    while True:
        status, _ = _status(node, cid)
        if STATES[status.int(3)] == "EXITED":
            return status
        assert time.monotonic() < deadline, f"{cid} did not exit"
        time.sleep(0.05)


def _summary(status: Msg) -> str:
    """A ContainerStatus without ids and times: what must be the same under both handlers."""
    mounts = [f"{m.str(1)}<-{Path(m.str(2)).name}:{'ro' if m.int(3) else 'rw'}"
              for m in status.msgs(14)]  # fmt: skip
    return (f"{STATES[status.int(3)]} exit={status.int(7)} reason={status.str(10)!r} "
            f"started={status.int(5) > 0} finished={status.int(6) > 0} "
            f"labels={status.map(12)} annotations={status.map(13)} mounts={mounts} "
            f"log={Path(status.str(15)).relative_to(Path(status.str(15)).parents[1])}")  # fmt: skip


def _log(path: str) -> list[str]:
    """The CRI log file: '<RFC 3339 time> <stream> <F|P> <text>' lines, as (stream, tag, text).

    stdout and stderr are copied by separate goroutines, so the two streams'
    lines are kept apart (their interleaving is not the container's).
    """
    lines = Path(path).read_text().splitlines()
    for line in lines:
        stamp = line.split(" ", 1)[0]
        assert stamp[:4].isdigit() and "T" in stamp and stamp.endswith("Z"), line
    split = [line.split(" ", 3)[1:] for line in lines]
    return [" ".join(s) for s in split if s[0] == "stdout"] + [
        " ".join(s) for s in split if s[0] == "stderr"
    ]


def _cgroups_left(parent: str) -> list[str]:
    """Directories under the pod's cgroup parent, in every hierarchy; then all of it goes.

    The parent itself is made by the runtime (kubelet would have made it) and
    stays, under runc as under ours.
    """
    left = []
    for hierarchy in sorted(Path("/sys/fs/cgroup").iterdir()):
        d = hierarchy / parent.lstrip("/")
        if d.is_dir() and not d.is_symlink():
            children = [c for c in d.iterdir() if c.is_dir()]
            left += [f"{hierarchy.name}/{c.name}" for c in children]
            for c in [*children, d]:
                try:
                    c.rmdir()
                except OSError:
                    pass
    return left


def _teardown(node: Node, handler: str, sid: str, parent: str, *cids: str) -> str:
    """Remove the containers and the pod, as kubelet does; say what is left of them."""
    for cid in cids:
        node.cri("RemoveContainer", pb((1, cid)))
    node.cri("StopPodSandbox", pb((1, sid)))
    node.cri("RemovePodSandbox", pb((1, sid)))
    return f"held {node.held(handler)} cgroups {_cgroups_left(parent)}"


# --- the sessions -------------------------------------------------------------------------------


def _pod_session(node: Node, handler: str) -> list[str]:
    out = []
    sid, sandbox, parent = _run_pod(node, handler, "web")
    resp = node.cri("PodSandboxStatus", pb((1, sid), (2, True)))
    st = resp.msg(1)
    out.append(f"sandbox {st.int(3) == SANDBOX_READY} {st.map(7)} {st.map(8)} "
               f"{st.msg(2).str(1)} {st.msg(2).str(3)}")  # fmt: skip
    info = json.loads(resp.map(2)["info"])
    assert info["runtimeHandler"] == handler
    binary = str(RUNTIME) if handler == "ocibox" else need("runc")
    assert info["runtimeOptions"]["binary_name"] == binary
    # the sandbox's container is the runtime's, under the shim's --root
    state = json.loads(node.runtime(handler, "state", sid).stdout)
    assert (state["status"], state["pid"]) == ("running", info["pid"])
    out.append(f"held {node.held(handler) == [sid]}")
    pod_ipc = os.readlink(f"/proc/{info['pid']}/ns/ipc")

    data = node.work / handler / "data"
    data.mkdir(parents=True)
    (data / "msg").write_text("the host")
    script = ('echo "$GREETING from $(cat /data/msg)"; echo to-stderr >&2; '
              "touch /data/x 2>/dev/null || echo read-only; echo in-the-pod > /dev/shm/note; "
              "while [ ! -e /tmp/go ]; do sleep 0.05; done; echo bye; exit 3")  # fmt: skip
    mount = pb((1, "/data"), (2, str(data)), (3, True))
    app = _create(node, sid, sandbox, _container_config(
        "app", ["sh", "-c", script], envs={"GREETING": "hello"}, mounts=[mount]))  # fmt: skip
    status, _ = _status(node, app)
    out.append(f"created {STATES[status.int(3)]}")
    node.cri("StartContainer", pb((1, app)))
    status, info = _status(node, app, verbose=True)
    out.append(f"started {STATES[status.int(3)]}")
    state = json.loads(node.runtime(handler, "state", app).stdout)
    assert (state["status"], state["pid"]) == ("running", info["pid"])
    assert state["bundle"].endswith(app)

    exec_script = "echo exec-out; echo exec-err >&2; id -u; touch /tmp/go; exit 5"
    resp = node.cri("ExecSync", pb((1, app), (2, ["sh", "-c", exec_script]), (3, 10)))
    out.append(f"exec {resp.bytes(1)!r} {resp.bytes(2)!r} {resp.int(3)}")
    status = _wait_exited(node, app)
    out.append(f"app {_summary(status)}")
    out += _log(status.str(15))
    node.cri("StopContainer", pb((1, app), (2, 10)))  # idempotent: it has exited
    out.append(f"stopped again {STATES[_status(node, app)[0].int(3)]}")

    # StopContainer: SIGTERM, trapped, within the grace period
    script = "trap 'echo got TERM; exit 9' TERM; while true; do sleep 0.05; done"
    sleeper = _create(node, sid, sandbox, _container_config(
        "sleeper", ["sh", "-c", script], resources=_resources(50000, 128 << 20)))  # fmt: skip
    node.cri("StartContainer", pb((1, sleeper)))
    out.append(f"sleeper {STATES[_status(node, sleeper)[0].int(3)]}")
    out.append(f"held {node.held(handler) == sorted([sid, sleeper])}")
    # UpdateContainerResources: the shim's `update --resources -`
    out.append(f"limits {_limits(parent, sleeper)}")
    node.cri("UpdateContainerResources", pb((1, sleeper), (2, _resources(25000, 64 << 20))))
    out.append(f"updated {_limits(parent, sleeper)}")
    # the pod's IPC namespace and /dev/shm, joined by path: what app left there
    resp = node.cri("ExecSync", pb((1, sleeper), (2, ["cat", "/dev/shm/note"]), (3, 10)))
    ipc = node.cri("ExecSync", pb((1, sleeper), (2, ["readlink", "/proc/self/ns/ipc"]), (3, 10)))
    out.append(f"shm {resp.bytes(1)!r} same ipc {ipc.bytes(1).decode().strip() == pod_ipc}")
    # ContainerStats: the shim reads the cgroups the runtime placed the container in
    stats = node.cri("ContainerStats", pb((1, sleeper))).msg(1)
    cpu, memory = stats.msg(2).msg(2).int(1), stats.msg(3).msg(2).int(1)
    out.append(f"stats {stats.msg(1).str(1) == sleeper} cpu {cpu > 0} memory {memory > 0}")
    node.cri("StopContainer", pb((1, sleeper), (2, 10)))
    status, _ = _status(node, sleeper)
    out.append(f"sleeper {_summary(status)}")
    out += _log(status.str(15))

    for cid in (app, sleeper):
        node.cri("RemoveContainer", pb((1, cid)))
        err = node.cri.error("ContainerStatus", pb((1, cid)))
        out.append(f"removed {err.code().name}")
    out.append(f"held {node.held(handler) == [sid]}")
    node.cri("StopPodSandbox", pb((1, sid)))
    st = node.cri("PodSandboxStatus", pb((1, sid))).msg(1)
    out.append(f"sandbox stopped {st.int(3) == SANDBOX_NOTREADY} held {node.held(handler)}")
    node.cri("RemovePodSandbox", pb((1, sid)))
    out.append(f"sandbox removed {node.cri.error('PodSandboxStatus', pb((1, sid))).code().name}")
    out.append(f"held {node.held(handler)} cgroups {_cgroups_left(parent)}")
    return out


def _both(session) -> list[str]:
    theirs = session("runc")
    mine = session("ocibox")
    assert mine == theirs
    return mine


def test_cri_version_status(node):
    resp = node.cri("Version", pb((1, "v1")))
    assert (resp.str(1), resp.str(2), resp.str(4)) == ("0.1.0", "containerd", "v1")
    assert resp.str(3).startswith("1.6")
    conditions = node.cri("Status", b"").msg(1).msgs(1)
    # no CNI configuration: the node may run host-network pods only
    assert {c.str(1): bool(c.int(2)) for c in conditions} == {
        "RuntimeReady": True, "NetworkReady": False}  # fmt: skip


def test_cri_pod_lifecycle(node):
    out = _both(lambda handler: _pod_session(node, handler))
    assert out[:5] == [
        "sandbox True {'app': 'web'} {'ocibox.test/note': 'a pod'} web ocibox-test",
        "held True", "created CREATED", "started RUNNING",
        "exec b'exec-out\\n0\\n' b'exec-err\\n' 5",
    ]  # fmt: skip
    assert out[5].startswith("app EXITED exit=3 reason='Error' started=True finished=True ")
    assert out[5].endswith(" mounts=['/data<-data:ro'] log=app/0.log")
    assert out[6:11] == ["stdout F hello from the host", "stdout F read-only", "stdout F bye",
                         "stderr F to-stderr", "stopped again EXITED"]  # fmt: skip
    assert out[11:17] == ["sleeper RUNNING", "held True", "limits memory 128 MiB, quota 50000",
                          "updated memory 64 MiB, quota 25000",
                          "shm b'in-the-pod\\n' same ipc True", "stats True cpu True memory True"]
    assert out[17].startswith("sleeper EXITED exit=9 reason='Error' ")
    assert out[18:] == [
        "stdout F got TERM", "removed NOT_FOUND", "removed NOT_FOUND", "held True",
        "sandbox stopped True held []", "sandbox removed NOT_FOUND", "held [] cgroups []",
    ]  # fmt: skip


def _start_error_session(node: Node, handler: str) -> list[str]:
    """A container whose command does not exist: StartContainer fails with the runtime's reason."""
    out = []
    sid, sandbox, parent = _run_pod(node, handler, "broken")
    cid = _create(node, sid, sandbox, _container_config("missing", ["/no/such/program", "x"]))
    err = node.cri.error("StartContainer", pb((1, cid)))
    out.append(f"start {err.code().name}")
    for message in (err.details(), _status(node, cid)[0].str(11)):
        assert "/no/such/program" in message and "no such file or directory" in message, message
    out.append(f"missing {_summary(_status(node, cid)[0])}")
    out += _log(_status(node, cid)[0].str(15))
    out.append(f"held {node.held(handler) == [sid]}")
    out.append(_teardown(node, handler, sid, parent, cid))
    return out


def test_cri_start_error(node):
    out = _both(lambda handler: _start_error_session(node, handler))
    assert out[0] == "start UNKNOWN"
    assert out[1].startswith("missing EXITED exit=128 reason='StartError' started=False ")
    assert out[2:] == ["held True", "held [] cgroups []"]


def _shared_pid_session(node: Node, handler: str) -> list[str]:
    """A pod sharing one pid namespace (shareProcessNamespace): the container joins the
    sandbox's by path, and when its main process exits the shim kills what it left
    behind with `kill --all` of the stopped container."""
    out = []
    sid, sandbox, parent = _run_pod(node, handler, "shared", pid=POD)
    script = "sleep 1000 & while [ ! -e /tmp/go ]; do sleep 0.05; done; exit 2"
    cid = _create(node, sid, sandbox, _container_config("main", ["sh", "-c", script], pid=POD))
    node.cri("StartContainer", pb((1, cid)))
    resp = node.cri("ExecSync", pb((1, cid), (2, ["cat", "/proc/1/cmdline"]), (3, 10)))
    out.append(f"pid 1 {resp.bytes(1)!r} {resp.int(3)}")
    procs = Path(f"/sys/fs/cgroup/pids/{parent.lstrip('/')}/{cid}/cgroup.procs")
    out.append(f"processes {len(procs.read_text().split()) >= 2}")  # sh, sleep 1000 (, sleep 0.05)
    node.cri("ExecSync", pb((1, cid), (2, ["touch", "/tmp/go"]), (3, 10)))
    status = _wait_exited(node, cid)
    out.append(f"main {STATES[status.int(3)]} exit={status.int(7)}")
    deadline = time.monotonic() + 10
    while procs.exists() and procs.read_text().split() and time.monotonic() < deadline:
        time.sleep(0.05)
    out.append(f"left behind {procs.read_text().split() if procs.exists() else []}")
    out.append(_teardown(node, handler, sid, parent, cid))
    return out


def test_cri_shared_pid_namespace(node):
    out = _both(lambda handler: _shared_pid_session(node, handler))
    assert out[0] == "pid 1 b'/bin/sleep\\x002147483647\\x00' 0"
    assert out[1:] == ["processes True", "main EXITED exit=2", "left behind []",
                      "held [] cgroups []"]


def _security_session(node: Node, handler: str) -> list[str]:
    """A pod's securityContext as kubelet passes it: user and group, a read-only root,
    capabilities dropped but one, no_new_privs, the runtime's default seccomp profile
    (containerd's), and a namespaced sysctl set on the sandbox."""
    sid, sandbox, parent = _run_pod(node, handler, "secure",
                                    sysctls={"kernel.shm_rmid_forced": "1"})  # fmt: skip
    security = (
        (1, pb((1, ["NET_BIND_SERVICE"]), (2, ["ALL"]))),  # capabilities: add, drop
        (5, pb((1, 1000))), (12, pb((1, 1000))),  # run_as_user, run_as_group
        (7, True), (11, True),  # readonly_rootfs, no_new_privs
        (15, pb()),  # seccomp: RuntimeDefault (0), present
    )  # fmt: skip
    script = ("id; touch /x 2>/dev/null || echo read-only root; "
              "grep -E '^(Cap(Prm|Eff|Bnd)|NoNewPrivs|Seccomp):' /proc/self/status; "
              "cat /proc/sys/kernel/shm_rmid_forced")  # fmt: skip
    cid = _create(node, sid, sandbox, _container_config(
        "secure", ["sh", "-c", script], security=security))  # fmt: skip
    node.cri("StartContainer", pb((1, cid)))
    status = _wait_exited(node, cid)
    out = [f"secure {STATES[status.int(3)]} exit={status.int(7)}", *_log(status.str(15))]
    out.append(_teardown(node, handler, sid, parent, cid))
    return out


def test_cri_security_context(node):
    out = _both(lambda handler: _security_session(node, handler))
    assert out == [
        "secure EXITED exit=0", "stdout F uid=1000 gid=1000 groups=1000",
        "stdout F read-only root", "stdout F CapPrm:\t0000000000000000",
        "stdout F CapEff:\t0000000000000000",
        f"stdout F CapBnd:\t{1 << 10:016x}",  # CAP_NET_BIND_SERVICE alone
        "stdout F NoNewPrivs:\t1", "stdout F Seccomp:\t2",  # a filter: containerd's profile
        "stdout F 1", "held [] cgroups []",
    ]  # fmt: skip


def _kill_session(node: Node, handler: str) -> list[str]:
    """Ends kubelet reports: a container ignoring SIGTERM killed after its grace
    period, one killed by the memory cgroup (OOMKilled, from the shim's OOM events
    on the cgroup the runtime made), one with a terminal (the runtime's
    --console-socket), and one still running when its pod is stopped."""
    out = []
    sid, sandbox, parent = _run_pod(node, handler, "ends")
    lingering = _create(node, sid, sandbox, _container_config("lingering", ["sleep", "1000"]))
    node.cri("StartContainer", pb((1, lingering)))
    terminal = _create(node, sid, sandbox, _container_config(
        "terminal", ["sh", "-c", "tty; echo on-a-tty"], tty=True))  # fmt: skip
    node.cri("StartContainer", pb((1, terminal)))
    status = _wait_exited(node, terminal)
    out.append(f"terminal {STATES[status.int(3)]} exit={status.int(7)}")
    out += _log(status.str(15))
    stubborn = _create(node, sid, sandbox, _container_config(
        "stubborn", ["sh", "-c", "trap '' TERM; while true; do sleep 0.05; done"]))  # fmt: skip
    hog = _create(node, sid, sandbox, _container_config(
        "hog", ["sh", "-c", "a=$(yes | head -c 100000000); echo survived"],
        resources=_resources(0, 16 << 20)))  # fmt: skip
    for cid in (stubborn, hog):
        node.cri("StartContainer", pb((1, cid)))
    node.cri("StopContainer", pb((1, stubborn), (2, 1)))  # TERM, then KILL after 1 s
    status = _wait_exited(node, stubborn)
    out.append(f"stubborn {STATES[status.int(3)]} exit={status.int(7)} {status.str(10)}")
    status = _wait_exited(node, hog)
    out.append(f"hog {STATES[status.int(3)]} exit={status.int(7)} {status.str(10)}")
    out += _log(status.str(15))
    node.cri("StopPodSandbox", pb((1, sid)))  # kills what still runs
    status, _ = _status(node, lingering)
    out.append(f"lingering {STATES[status.int(3)]} exit={status.int(7)} {status.str(10)}")
    node.cri("RemovePodSandbox", pb((1, sid)))  # removes the containers with it
    out.append(f"held {node.held(handler)} cgroups {_cgroups_left(parent)}")
    return out


def test_cri_ends_and_terminal(node):
    out = _both(lambda handler: _kill_session(node, handler))
    assert out == [
        "terminal EXITED exit=0", "stdout F /dev/pts/0", "stdout F on-a-tty",
        "stubborn EXITED exit=137 Error", "hog EXITED exit=137 OOMKilled",
        "lingering EXITED exit=137 Error", "held [] cgroups []",
    ]  # fmt: skip


def _privileged_session(node: Node, handler: str) -> list[str]:
    """A privileged container: every capability, no seccomp, the host's devices."""
    sid, sandbox, parent = _run_pod(node, handler, "priv", privileged=True)
    script = ("grep -E '^(CapEff|Seccomp):' /proc/self/status; "
              "grep -E '^sysfs /sys ' /proc/mounts; ls /dev")  # fmt: skip
    cid = _create(node, sid, sandbox, _container_config(
        "priv", ["sh", "-c", script], security=((2, True),)))  # fmt: skip
    node.cri("StartContainer", pb((1, cid)))
    status = _wait_exited(node, cid)
    out = [f"priv {STATES[status.int(3)]} exit={status.int(7)}", *_log(status.str(15))]
    out.append(_teardown(node, handler, sid, parent, cid))
    return out


def test_cri_privileged(node):
    out = _both(lambda handler: _privileged_session(node, handler))
    caps = Path("/proc/self/status").read_text().split("CapBnd:\t")[1][:16]  # all we have
    assert out[:3] == ["priv EXITED exit=0", f"stdout F CapEff:\t{caps}", "stdout F Seccomp:\t0"]
    assert out[3].startswith("stdout F sysfs /sys sysfs rw,")
    devices = {line.removeprefix("stdout F ") for line in out[4:-1]}
    # the host's devices (kmsg: never in an unprivileged container) with the usual ones;
    # runc's and ours' lists are equal
    assert devices >= {"kmsg", "null", "pts", "shm", "mqueue"}
    assert out[-1] == "held [] cgroups []"


def _restart_session(node: Node, handler: str) -> list[str]:
    """containerd restarted under a running pod (an upgrade): the CRI plugin finds the
    sandbox and container again through the shim, which asks the runtime their state."""
    out = []
    sid, sandbox, parent = _run_pod(node, handler, "lasting")
    script = "while [ ! -e /tmp/go ]; do sleep 0.05; done; exit 4"
    cid = _create(node, sid, sandbox, _container_config("survivor", ["sh", "-c", script]))
    node.cri("StartContainer", pb((1, cid)))
    node.restart()
    st = node.cri("PodSandboxStatus", pb((1, sid))).msg(1)
    out.append(f"sandbox ready {st.int(3) == SANDBOX_READY}")
    out.append(f"survivor {STATES[_status(node, cid)[0].int(3)]}")
    resp = node.cri("ExecSync", pb((1, cid), (2, ["touch", "/tmp/go"]), (3, 10)))
    out.append(f"exec {resp.int(3)}")
    status = _wait_exited(node, cid)
    out.append(f"survivor {STATES[status.int(3)]} exit={status.int(7)}")
    out.append(_teardown(node, handler, sid, parent, cid))
    return out


def test_cri_containerd_restart(node):
    out = _both(lambda handler: _restart_session(node, handler))
    assert out == ["sandbox ready True", "survivor RUNNING", "exec 0", "survivor EXITED exit=4",
                   "held [] cgroups []"]  # fmt: skip


def _propagation_session(node: Node, handler: str) -> list[str]:
    """Mount propagation as a pod asks it: HostToContainer (rslave: a mount the host
    makes later shows inside) and Bidirectional (rshared, privileged: a mount made
    inside shows on the host, as CSI drivers need). containerd wants the host paths
    on a shared mount: a bind of the test's directory onto itself, made shared."""
    base = node.work / handler / "prop"
    (base / "in").mkdir(parents=True)
    (base / "out").mkdir()
    out = []
    try:
        for argv in (["mount", "--bind", base, base], ["mount", "--make-shared", base]):
            subprocess.run(argv, check=True)
        sid, sandbox, parent = _run_pod(node, handler, "prop", privileged=True)
        script = ("while [ ! -e /in/sub/file ]; do sleep 0.05; done; cat /in/sub/file; "
                  "mkdir /out/sub && mount -t tmpfs tmpfs /out/sub && "
                  "echo from-container > /out/sub/file; sleep 1000")  # fmt: skip
        mounts = [pb((1, "/in"), (2, str(base / "in")), (5, 1)),  # HOST_TO_CONTAINER
                  pb((1, "/out"), (2, str(base / "out")), (5, 2))]  # BIDIRECTIONAL  # fmt: skip
        cid = _create(node, sid, sandbox, _container_config(
            "prop", ["sh", "-c", script], mounts=mounts, security=((2, True),)))  # fmt: skip
        node.cri("StartContainer", pb((1, cid)))
        (base / "in" / "sub").mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", base / "in" / "sub"], check=True)
        (base / "in" / "sub" / "file").write_text("from-host\n")
        seen, deadline = base / "out" / "sub" / "file", time.monotonic() + 10
        while not seen.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        out.append(f"host sees {seen.read_text() if seen.exists() else None!r}")
        node.cri("StopContainer", pb((1, cid)))
        status = _wait_exited(node, cid)
        out.append(f"prop {STATES[status.int(3)]} exit={status.int(7)}")
        out += _log(status.str(15))
        out.append(_teardown(node, handler, sid, parent, cid))
    finally:
        _umount_under(str(base))
    return out


def test_cri_mount_propagation(node):
    out = _both(lambda handler: _propagation_session(node, handler))

    assert out == ["host sees 'from-container\\n'", "prop EXITED exit=137",
                   "stdout F from-host", "held [] cgroups []"]  # fmt: skip


# --- what the CRI sessions needed of the runtime, checked against runc directly ---------------


def test_kill_all_of_stopped_container(both, bundle):
    """containerd's shim deletes an exited task with `kill --all ID 9` first: runc succeeds."""
    cid = both.new_id()
    both("run", "-d", "--bundle", bundle.write(["true"]), cid)
    assert both.wait_status(cid, "stopped")["status"] == "stopped"
    both("kill", "--all", cid, "KILL")
    proc = both("kill", cid, "KILL", check=False)  # one process: refused, in words the shim knows
    assert proc.returncode != 0 and "container not running" in proc.stderr
    both("delete", cid)


@pytest.mark.parametrize(("program", "words"), [
    ("/no/such/program",
     'exec: "/no/such/program": stat /no/such/program: no such file or directory'),
    ("/tmp", 'exec: "/tmp": permission denied'),
    ("/etc/passwd", 'exec: "/etc/passwd": permission denied'),
])  # fmt: skip
def test_missing_program_words(both, bundle, program, words):
    """runc's reasons for a command that cannot run: kubelet shows them, podman maps them."""
    proc = both("create", "--bundle", bundle.write([program]), both.new_id(), check=False)
    assert proc.returncode != 0 and words in proc.stderr.replace('\\"', '"')  # runc's logfmt


def test_bidirectional_bind_reaches_host(both, bundle, tmp_path):
    """containerd's Bidirectional mount: rootfsPropagation rshared and an rshared bind of
    a shared host mount; a mount made there in the container shows on the host."""
    source = tmp_path / "shared"
    source.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", source], check=True)
    try:
        subprocess.run(["mount", "--make-shared", source], check=True)
        (source / "sub").mkdir()
        for applet in ("mount", "grep"):
            (bundle.rootfs / "bin" / applet).unlink(missing_ok=True)
            (bundle.rootfs / "bin" / applet).symlink_to("busybox")

        def edit(cfg):
            cfg["process"]["capabilities"] = {k: ["CAP_SYS_ADMIN"] for k in
                                              ("bounding", "effective", "permitted")}  # fmt: skip
            cfg["linux"]["rootfsPropagation"] = "rshared"
            cfg["mounts"].append({"destination": "/b", "type": "bind", "source": str(source),
                                  "options": ["rbind", "rshared"]})  # fmt: skip

        script = "mount -t tmpfs from-container /b/sub && echo made > /b/sub/file"
        both("run", "--bundle", bundle.write(["sh", "-c", script], edit), both.new_id())
        assert (source / "sub" / "file").read_text() == "made\n"
    finally:
        _umount_under(str(source))

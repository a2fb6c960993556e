"""Creating the container's processes: the intermediate child and the container init.

No re-exec: the runtime forks itself.

    runtime (parent) --fork--> intermediate --fork--> init (pid 1 of the new pid namespace)

The intermediate joins namespaces by path and creates the user, pid and time
ones (a new pid namespace only applies to children, hence the second fork; a
new user namespace needs the parent to write its id maps). The init builds the root filesystem, applies the
process settings, reports "ready", then blocks opening ``exec.fifo`` for
writing until ``start`` opens it, and execs the user program.

Two pipes carry the sync protocol, one short line per message:

    parent -> children:  mapped | cgrouped | netmoved | hooked STATE
    children -> parent:  userns | pid N | netns | hooks | ready | error MESSAGE | log MESSAGE

(``log`` only under --debug: the children's steps, logged by the parent.)

The cgroups are joined while the children are already at work. On a kernel
with cgroup v1 the first write to a cgroup.procs waits ~12 ms for an RCU grace
period; the parent starts on it as soon as it has forked, moving the
intermediate, which meanwhile makes only the namespaces that apply to children
(user, pid, time) and forks the init at once. The intermediate then stays
until it has been moved (it holds the read end of a third pipe until the
parent closes the other); once it knows the init's pid, the parent moves the
init too (in case it was forked first: cheap, the grace period is paid) and
says ``cgrouped``. The init meanwhile makes its other namespaces and mounts
the root filesystem, and waits for ``cgrouped`` before anything that depends
on its cgroup: a new cgroup namespace (unshared then, so that it is rooted at
the container's cgroup), cgroup mounts, device nodes, the hooks, and the exec.
"""

from __future__ import annotations

import _signal as signal  # the C module: the signal module imports enum (~3 ms of start-up)
import os
import time

from ..errors import BundleError, NotImplementedYet, OciboxError
from . import hooks
from . import jsonlite as json
from .container import debug, debugging, set_debug
from .linux import capabilities as caps
from .linux import mounts as mnt
from .linux import namespaces as nsmod
from .linux import rlimits, rootfs, seccomp
from .linux import syscalls as sc

PR_SET_CHILD_SUBREAPER = 36


class InitConfig:
    """What the init needs, checked and parsed in the parent before any fork.

    A plain class: dataclasses would pull in inspect, a few milliseconds of
    start-up on every create.
    """

    def __init__(self, config: dict, rootfs: str, namespaces: nsmod.Namespaces,
                 mounts: list[mnt.Mount], caps: dict[str, int], *, no_pivot: bool = False,
                 preserve_fds: int = 0, warnings: list[str] | None = None,
                 console_socket: str | None = None,
                 console_fd: int | None = None) -> None:  # fmt: skip
        self.config = config
        self.rootfs = rootfs
        self.fifo_fd = -1  # O_PATH handle on exec.fifo, inherited through the forks
        self.namespaces = namespaces
        self.mounts = mounts
        self.caps = caps
        self.no_pivot = no_pivot
        self.preserve_fds = preserve_fds
        self.warnings = warnings or []
        self.console_socket = console_socket
        self.console_fd = console_fd  # a connected socket of the runtime's own (run)
        self.no_new_keyring = False
        self.close_in_child: tuple[int, ...] = ()
        self.keyring_name: str | None = None
        self.cgroups = False  # whether the init waits for the parent to join its cgroups
        self.hold_fd = -1  # the intermediate waits on it (EOF) until it is in the cgroups
        self.state: dict | None = None  # the spec's state while creating (a seccomp listener's)
        self.netdevs: dict[str, str] = {}  # linux.netDevices: host name -> name in the container
        self.cgrouped_early = False  # "cgrouped" came while the init waited for its interfaces
        self.netns_fd = -1  # the init's network namespace, held until create is done
        self.netdevs_moved: dict[str, list[str]] = {}  # host name -> its addresses (hex)


def prepare(
    config: dict,
    bundle: str,
    *,
    no_pivot: bool = False,
    preserve_fds: int = 0,
    console_socket: str | None = None,
    console_fd: int | None = None,
) -> InitConfig:
    process = _check_process(config, console_socket, console_fd)
    rootfs_path = _rootfs_path(config, bundle)
    linux = config.get("linux") or {}
    ns = _namespaces(linux)
    hooks.check(config.get("hooks"))
    warnings: list[str] = []
    _check_unsupported(config, warnings)
    mounts = [mnt.parse(m, i) for i, m in enumerate(config.get("mounts") or [])]
    if os.geteuid() != 0:
        from . import rootless

        rootless.check(ns.has("user"), not ns.new & sc.CLONE_NEWUSER, mounts, linux)
    for m in mounts:
        if m.is_bind and m.source and not m.source.startswith("/"):
            m.source = os.path.join(bundle, m.source)  # relative to the bundle, says the spec
    rlimits.check(process.get("rlimits") or [])
    netdevs = {}
    if linux.get("netDevices") is not None:
        from .linux import netdev

        netdevs = netdev.check(linux["netDevices"], ns.has("network"))
    ic = InitConfig(
        config=config,
        rootfs=rootfs_path,
        namespaces=ns,
        mounts=mounts,
        caps=caps.parse(process.get("capabilities"), warnings.append),
        no_pivot=no_pivot,
        preserve_fds=preserve_fds,
        warnings=warnings,
        console_socket=console_socket,
        console_fd=console_fd,
    )
    ic.netdevs = netdevs
    return ic


def _check_process(config: dict, console_socket: str | None, console_fd: int | None) -> dict:
    process = config.get("process")
    if not isinstance(process, dict) or not process.get("args"):
        raise BundleError("config.json: process.args is missing; there is nothing to run")
    if process.get("terminal") and not console_socket and console_fd is None:
        raise NotImplementedYet(
            "config.json: process.terminal is true: a terminal needs --console-socket",
            hint='pass --console-socket, or set "terminal": false in config.json',
        )
    if console_socket and not process.get("terminal"):
        raise BundleError("--console-socket is only for a process with terminal: true")
    return process


def _rootfs_path(config: dict, bundle: str) -> str:
    root = config.get("root") or {}
    path = os.path.realpath(os.path.join(bundle, root.get("path") or "rootfs"))
    if not os.path.isdir(path):
        raise BundleError(f"root filesystem {path} is not a directory")
    return path


def _namespaces(linux: dict) -> nsmod.Namespaces:
    ns = nsmod.parse(linux.get("namespaces") or [])
    if not ns.has("mount"):
        raise BundleError("config.json: a mount namespace is required",
                          hint='add {"type": "mount"} to linux.namespaces')  # fmt: skip
    if ns.new & sc.CLONE_NEWUSER and not (linux.get("uidMappings") and linux.get("gidMappings")):
        raise BundleError(
            "config.json: a new user namespace needs linux.uidMappings and gidMappings"
        )
    return ns


def _check_unsupported(config: dict, warnings: list[str]) -> None:
    """Say plainly what this runtime does not do, rather than silently skip it."""
    process = config.get("process") or {}
    linux = config.get("linux") or {}
    for key in ("apparmorProfile", "selinuxLabel"):
        if process.get(key):
            warnings.append(f"process.{key}: no LSM support here; {process[key]!r} not applied")
    if linux.get("mountLabel"):
        warnings.append("linux.mountLabel: no SELinux support here; not applied")
    if linux.get("intelRdt"):
        raise NotImplementedYet("config.json: linux.intelRdt is not supported yet")
    if linux.get("memoryPolicy") is not None:
        from .linux import mempolicy

        mempolicy.check(linux["memoryPolicy"])
    if "scheduler" in process:
        check_scheduler(process["scheduler"])
    if "ioPriority" in process:
        check_io_priority(process["ioPriority"])
    personality = linux.get("personality")
    if personality is not None:
        _check_personality(personality)


_IOPRIO_CLASSES = {"IOPRIO_CLASS_RT": 1, "IOPRIO_CLASS_BE": 2, "IOPRIO_CLASS_IDLE": 3}


def check_io_priority(prio) -> None:
    """process.ioPriority: class and priority (0, highest, to 7), both required."""
    where = "config.json: process.ioPriority"
    if not isinstance(prio, dict):
        raise BundleError(f"{where} must be an object")
    if prio.get("class") not in _IOPRIO_CLASSES:
        raise BundleError(f"{where}.class: unknown {prio.get('class')!r}",
                          hint=f"use one of {', '.join(_IOPRIO_CLASSES)}")  # fmt: skip
    level = prio.get("priority")
    if type(level) is not int or not 0 <= level <= 7:
        raise BundleError(f"{where}.priority must be an integer from 0 to 7, not {level!r}")


# process.scheduler: sched_setattr(2)'s policies and flags, by the spec's names.
_SCHED_POLICIES = {"SCHED_OTHER": 0, "SCHED_FIFO": 1, "SCHED_RR": 2, "SCHED_BATCH": 3,
                   "SCHED_ISO": 4, "SCHED_IDLE": 5, "SCHED_DEADLINE": 6}  # fmt: skip
_SCHED_FLAGS = {"SCHED_FLAG_RESET_ON_FORK": 0x01, "SCHED_FLAG_RECLAIM": 0x02,
                "SCHED_FLAG_DL_OVERRUN": 0x04, "SCHED_FLAG_KEEP_POLICY": 0x08,
                "SCHED_FLAG_KEEP_PARAMS": 0x10, "SCHED_FLAG_UTIL_CLAMP_MIN": 0x20,
                "SCHED_FLAG_UTIL_CLAMP_MAX": 0x40}  # fmt: skip


def check_scheduler(sched) -> None:
    """process.scheduler, checked before anything is created (the kernel checks the rest)."""
    where = "config.json: process.scheduler"
    if not isinstance(sched, dict):
        raise BundleError(f"{where} must be an object")
    policy = sched.get("policy")
    if policy not in _SCHED_POLICIES:
        raise BundleError(f"{where}.policy: unknown policy {policy!r}",
                          hint=f"use one of {', '.join(_SCHED_POLICIES)}")  # fmt: skip
    if policy == "SCHED_ISO":
        raise NotImplementedYet(f"{where}.policy: SCHED_ISO is not implemented by Linux")
    for key in ("nice", "priority", "runtime", "deadline", "period"):
        value = sched.get(key, 0)
        if type(value) is not int or (key not in ("nice", "priority") and value < 0):
            raise BundleError(f"{where}.{key} must be an integer, not {value!r}")
    if not -20 <= sched.get("nice", 0) <= 19:
        raise BundleError(f"{where}.nice must be from -20 to 19, not {sched['nice']}")
    if sched.get("priority", 0) and policy not in ("SCHED_FIFO", "SCHED_RR"):
        raise BundleError(f"{where}.priority is only for SCHED_FIFO and SCHED_RR")
    if policy != "SCHED_DEADLINE" and any(sched.get(k) for k in ("runtime", "deadline", "period")):
        raise BundleError(f"{where}: runtime, deadline and period are only for SCHED_DEADLINE")
    flags = sched.get("flags") or []
    if not isinstance(flags, list):
        raise BundleError(f"{where}.flags must be an array")
    for flag in flags:
        if flag not in _SCHED_FLAGS:
            raise BundleError(f"{where}.flags: unknown flag {flag!r}")


def _scheduler(sched: dict) -> None:
    flags = 0
    for flag in sched.get("flags") or []:
        flags |= _SCHED_FLAGS[flag]
    try:
        sc.sched_setattr(_SCHED_POLICIES[sched["policy"]], flags, sched.get("nice", 0),
                         sched.get("priority", 0), sched.get("runtime", 0),
                         sched.get("deadline", 0), sched.get("period", 0))  # fmt: skip
    except OSError as e:
        raise BundleError(f"config.json: process.scheduler ({sched['policy']}): "
                          f"{os.strerror(e.errno)}") from None  # fmt: skip


def _io_priority(prio: dict) -> None:
    value = _IOPRIO_CLASSES[prio["class"]] << 13 | (prio.get("priority", 0) & 0x1FFF)
    try:
        sc.ioprio_set(value)
    except OSError as e:
        raise BundleError(f"config.json: process.ioPriority: {e.strerror}") from None


# --- the parent's side ---------------------------------------------------------


def spawn(ic: InitConfig, *, subreaper: bool = False, on_cgroups=None, on_hooks=None) -> int:
    """Fork the container; return the init's host pid once it is ready and waiting.

    ``on_cgroups(pid)`` moves ``pid`` into the container's cgroups: first the
    intermediate's, as soon as it is forked (that call makes the cgroups), then
    the init's; the children go on meanwhile, and wait where they must (see the
    module's doc).
    ``on_hooks(init_pid)`` runs the runtime-side create hooks when the init asks,
    and returns the state to hand to the init's own hooks.
    """
    if subreaper:
        sc.prctl(PR_SET_CHILD_SUBREAPER, 1)
    _idmap_trees(ic)
    try:
        return _spawn(ic, subreaper, on_cgroups, on_hooks)
    finally:
        for m in ic.mounts:
            if m.tree_fd >= 0:
                os.close(m.tree_fd)
                m.tree_fd = -1


def _idmap_trees(ic: InitConfig) -> None:
    """The idmapped mounts' sources, idmapped here in the host's user namespace (see mounts)."""
    linux = ic.config.get("linux") or {}
    has_userns = ic.namespaces.has("user")
    if has_userns and any(m.idmap for m in ic.mounts) and not linux.get("uidMappings"):
        raise NotImplementedYet(
            "idmapped mounts in a joined user namespace: give linux.uidMappings and gidMappings"
        )
    try:
        for m in ic.mounts:
            if m.idmap:
                mnt.idmap_tree(m, linux, has_userns)
    except BaseException:
        for m in ic.mounts:
            if m.tree_fd >= 0:
                os.close(m.tree_fd)
                m.tree_fd = -1
        raise


def _spawn(ic: InitConfig, subreaper: bool, on_cgroups, on_hooks) -> int:
    ic.cgroups = on_cgroups is not None
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    hold_w = -1
    if ic.cgroups:
        ic.hold_fd, hold_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        _child_main(ic, to_child_r, from_child_w, (to_child_w, from_child_r, hold_w))
    debug(f"forked the intermediate process {pid}")
    os.close(to_child_r)
    os.close(from_child_w)
    if ic.hold_fd >= 0:
        os.close(ic.hold_fd)
    talk = _Talk(ic, pid, to_child_w, on_hooks)
    lines = _lines(from_child_r)
    try:
        if on_cgroups is not None:
            talk.error = _join_cgroups(on_cgroups, pid, lines, from_child_r)
            os.close(hold_w)  # the intermediate may go now
            hold_w = -1
            if not talk.error:
                talk.on_cgroups = lambda init: _join_cgroups(on_cgroups, init, lines, from_child_r)
                talk.converse(lines)
        else:
            talk.converse(lines)
    except BaseException:
        try:
            give_back_netdevs(ic)
        except OciboxError as back:  # the first error is the one to report
            debug(back.message)
        _kill(talk.init_pid or pid)
        raise
    finally:
        os.close(to_child_w)
        os.close(from_child_r)
        if hold_w >= 0:
            os.close(hold_w)
        _reap(pid)
    if talk.error:
        _undo(ic, talk.init_pid, subreaper, talk.error)
    return talk.init_pid


class _Talk:
    """The runtime's side of the intermediate's and the init's messages until the init is ready.

    Each message is a line "verb argument" (see _child_main and _init); the
    runtime answers those that wait for it (id maps written, cgroups joined,
    network devices moved, create hooks run).
    """

    def __init__(self, ic: InitConfig, pid: int, to_child: int, on_hooks) -> None:
        self.ic = ic
        self.pid = pid
        self.to_child = to_child
        self.on_hooks = on_hooks
        self.on_cgroups = None  # init pid -> error or None, once the intermediate has joined
        self.init_pid = 0
        self.error: str | None = None

    def converse(self, lines) -> None:
        ready = hooks_wanted = netns_wanted = False
        for line in lines:
            verb, _, arg = line.partition(" ")
            if verb == "log":
                at, _, msg = arg.partition(" ")
                debug(msg.replace("\\n", "\n"), int(at))
                continue
            if verb == "userns":
                debug(f"intermediate {self.pid}: new user namespace; writing its id maps")
                _write_id_maps(self.pid, self.ic.config["linux"])
                _send(self.to_child, b"mapped\n")
            elif verb == "pid":
                if not self._init_forked(int(arg)):
                    return
            elif verb == "hooks":
                hooks_wanted = True
            elif verb == "netns":
                netns_wanted = True
            elif verb == "ready":
                debug(f"init {self.init_pid}: ready, waiting for start")
                ready = True
            elif verb == "error":
                self.error = arg.replace("\\n", "\n")
                return
            if netns_wanted and self.init_pid:
                netns_wanted = False
                if not self._netdevs():
                    return
            if hooks_wanted and self.init_pid:
                hooks_wanted = False
                debug(f"running the runtime's create hooks for init {self.init_pid}")
                state = self.on_hooks(self.init_pid) if self.on_hooks else {}
                _send(self.to_child, b"hooked " + json.dumps(state).encode() + b"\n")
            if ready and self.init_pid:
                return
        self.error = self.error or "the container's init exited before it was ready"

    def _init_forked(self, init_pid: int) -> bool:
        self.init_pid = init_pid
        debug(f"intermediate {self.pid}: forked the init, {init_pid}")
        if self.on_cgroups is not None:
            self.error = self.on_cgroups(init_pid)
            if self.error:
                return False
            _send(self.to_child, b"cgrouped\n")
        return True

    def _netdevs(self) -> bool:
        try:
            _move_netdevs(self.ic, self.init_pid)
        except OciboxError as e:
            self.error = e.message
            return False
        _send(self.to_child, b"netmoved\n")
        return True


def _undo(ic: InitConfig, init_pid: int, subreaper: bool, error: str) -> None:
    """A create that failed: the network devices back, the init killed; raise the error."""
    try:
        give_back_netdevs(ic)
    except OciboxError as e:
        error += f"; {e.message}"
    if init_pid:
        _kill(init_pid)
        if subreaper:
            _reap(init_pid)
    raise BundleError(error)


def _move_netdevs(ic: InitConfig, init_pid: int) -> None:
    """linux.netDevices: the host's interfaces into the init's network namespace."""
    from .linux import netdev

    debug(f"moving {', '.join(ic.netdevs)} into the network namespace of init {init_pid}")
    # Held until create is done: should it fail, the interfaces are fetched from there.
    ic.netns_fd = os.open(f"/proc/{init_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    netdev.move_all(ic.netdevs, ic.netns_fd, init_pid, ic.netdevs_moved)


def give_back_netdevs(ic: InitConfig) -> None:
    """A create that fails: the interfaces moved so far go back to the host, as they were."""
    if ic.netns_fd < 0:
        return
    from .linux import netdev

    moved = {host: ic.netdevs[host] for host in ic.netdevs_moved}
    debug(f"create failed: moving {', '.join(moved) or 'no interface'} back to the host")
    try:
        if moved:
            netdev.hand_back(moved, ic.netns_fd, ic.netdevs_moved)
    finally:
        release_netns(ic)


def release_netns(ic: InitConfig) -> None:
    if ic.netns_fd >= 0:
        os.close(ic.netns_fd)
        ic.netns_fd = -1
    ic.netdevs_moved = {}


def _lines(fd: int):
    buf = b""
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.decode(errors="replace")


def _send(fd: int, msg: bytes) -> None:
    """A message to the children; if they are gone, their error (or EOF) is read next."""
    try:
        os.write(fd, msg)
    except BrokenPipeError:
        pass


def _join_cgroups(on_cgroups, pid: int, lines, fd: int) -> str | None:
    """Run ``on_cgroups(pid)``; if it fails because a child already failed, return its error."""
    try:
        on_cgroups(pid)
    except (OciboxError, OSError):
        # A child that died of its own error (so that the move failed for want
        # of a process) wrote its message before it died: it says more than ours.
        os.set_blocking(fd, False)
        try:
            for line in lines:
                verb, _, arg = line.partition(" ")
                if verb == "error":
                    return arg.replace("\\n", "\n")
        except BlockingIOError:
            pass
        raise
    return None


def _write_id_maps(pid: int, linux: dict) -> None:
    """The new user namespace's id maps, written from outside it (as runc's parent does).

    Not root: the kernel takes only our own ids, and a gid map from a
    process without CAP_SETGID only once setgroups(2) is denied there;
    other maps need newuidmap/newgidmap (setuid, by /etc/subuid).
    """
    rootless = os.geteuid() != 0
    if rootless and _own_gid_only(linux["gidMappings"]):
        _write_map(pid, "setgroups", "deny", "")
    for name, key in (("uid_map", "uidMappings"), ("gid_map", "gidMappings")):
        lines = "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in linux[key])
        _write_map(pid, name, lines, rootless and "new" + name.replace("_", ""))


def _own_gid_only(maps: list[dict]) -> bool:
    """runc's test for a rootless single mapping: container gid 0 is our egid, alone."""
    return [(m["containerID"], m["hostID"], m["size"]) for m in maps] == [(0, os.getegid(), 1)]


def _write_map(pid: int, name: str, text: str, tool: str) -> None:
    try:
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write(text)
        return
    except OSError as e:
        if not (tool and e.errno == 1):  # EPERM: the setuid helper may write it
            raise BundleError(f"writing {name} for the user namespace: {e.strerror}") from None
    import shutil
    import subprocess

    exe = shutil.which(tool)
    if exe is None:
        raise BundleError(
            f"writing {name} for the user namespace: Operation not permitted, and no {tool}",
            hint=f"map only your own uid and gid (as spec --rootless run by you does), or "
            f"install {tool} (package uidmap) and give the user ranges in /etc/subuid and gid",
        )
    run = subprocess.run([exe, str(pid), *text.split()], capture_output=True, text=True)
    if run.returncode != 0:
        why = run.stderr.strip().removeprefix(f"{tool}: ") or f"exit {run.returncode}"
        raise BundleError(f"writing {name} for the user namespace with {tool}: {why}")


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


# --- the children's side -------------------------------------------------------


def _child_main(ic: InitConfig, rfd: int, wfd: int, close: tuple[int, ...]) -> None:
    """Run the intermediate (and, after its fork, the init). Never returns."""
    code = 1
    try:
        for fd in (*close, *ic.close_in_child):
            if fd >= 0:  # hold_w is -1 when there are no cgroups to join
                os.close(fd)
        if debugging():  # the parent logs for us: the log file may be out of our reach
            set_debug(
                lambda msg, at=None: _report(
                    wfd, OciboxError(msg), prefix=b"log %d " % (at or time.time_ns())
                )
            )
        _intermediate(ic, rfd, wfd)
        code = 0
    except BaseException as e:  # noqa: B036 - a forked child must never unwind into the parent's code
        _report(wfd, e)
    finally:
        os._exit(code)


def _report(wfd: int, e: BaseException, prefix: bytes = b"error ") -> bool:
    if isinstance(e, OciboxError):
        msg = e.message + (f" ({e.hint})" if e.hint else "")
    elif isinstance(e, OSError):
        msg = f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
    else:
        msg = f"{type(e).__name__}: {e}"
    try:
        os.write(wfd, prefix + msg.replace("\n", "\\n").encode(errors="replace")[:3000] + b"\n")
        return True
    except OSError:
        return False


class _RuntimeGone(OciboxError):
    """The runtime closed its end of the pipe: it failed, and says why itself."""


def _read_line(fd: int) -> str:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            raise _RuntimeGone("the runtime went away during create")
        buf += chunk
    return buf[:-1].decode()


def _intermediate(ic: InitConfig, rfd: int, wfd: int) -> None:
    ns = ic.namespaces
    if ns.new & sc.CLONE_NEWNET:
        nsmod.prepare_loopback()  # before a user namespace is entered
    fds = nsmod.open_joins(ns)
    nsmod.join(fds)
    if ns.new & sc.CLONE_NEWUSER:
        nsmod.unshare(sc.CLONE_NEWUSER)
        os.write(wfd, b"userns\n")
        if _read_line(rfd) != "mapped":
            raise OciboxError("user namespace was not mapped")
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    elif ns.has("user") and "user" not in ns.host:
        _root_of_joined_userns()
    # Only what takes effect in children is made here; the init makes the rest
    # itself, so that the parent learns its pid (and starts on the cgroups) sooner.
    if ns.new & _FOR_CHILDREN:
        nsmod.unshare(ns.new & _FOR_CHILDREN)
    offsets = (ic.config.get("linux") or {}).get("timeOffsets")
    if offsets:
        _time_offsets(offsets, ns.new & sc.CLONE_NEWTIME)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _init(ic, wfd, rfd)
        except BaseException as e:  # noqa: B036 - see _child_main
            # After "ready" the pipe is closed: the container's stderr is all that is left.
            if not _report(wfd, e) and not isinstance(e, _RuntimeGone):
                _report(2, e, prefix=b"ocibox-runtime: ")
        finally:
            os._exit(code)
    os.write(wfd, f"pid {pid}\n".encode())
    if ic.hold_fd >= 0:
        os.read(ic.hold_fd, 1)  # EOF once the parent has moved us into the cgroups


def _root_of_joined_userns() -> None:
    """Become root of a user namespace joined by path (a pod's), as runc's init does:
    our host ids are not mapped there, and a file made on a mount of that namespace
    (the /dev tmpfs) fails with EOVERFLOW."""
    try:
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    except OSError as e:
        raise BundleError(f"cannot become root in the joined user namespace: {e.strerror}",
                          hint="its uid and gid maps must map 0") from None  # fmt: skip


# Namespaces that unshare gives to the caller's children, not to the caller.
_FOR_CHILDREN = sc.CLONE_NEWPID | sc.CLONE_NEWTIME
# Those the init makes for itself; the cgroup one once it is in its cgroups.
_FOR_INIT = sc.CLONE_NEWNS | sc.CLONE_NEWUTS | sc.CLONE_NEWIPC | sc.CLONE_NEWNET


def _time_offsets(offsets: dict, new_timens: int) -> None:
    """linux.timeOffsets: only a new time namespace, before its first process, takes them."""
    if not new_timens:
        raise BundleError("config.json: linux.timeOffsets needs a new time namespace")
    lines = []
    for clock in ("monotonic", "boottime"):
        if clock in offsets:
            o = offsets[clock]
            lines.append(f"{clock} {o.get('secs', 0)} {o.get('nanosecs', 0)}\n")
    try:
        with open("/proc/self/timens_offsets", "w") as f:
            f.write("".join(lines))
    except OSError as e:
        raise BundleError(f"config.json: linux.timeOffsets: {e.strerror}") from None


_PERSONALITIES = {"LINUX": 0x0000, "LINUX32": 0x0008}


def _check_personality(p) -> None:
    """linux.personality: a domain; the spec defines no flags ("currently no flag values
    are supported"), so any flag is an invalid value, refused as the spec says."""
    where = "config.json: linux.personality"
    if not isinstance(p, dict):
        raise BundleError(f"{where} must be an object")
    domain = p.get("domain")
    if domain not in _PERSONALITIES:
        raise BundleError(f"{where}.domain: unknown domain {domain!r}",
                          hint="use LINUX or LINUX32")  # fmt: skip
    flags = p.get("flags") or []
    if not isinstance(flags, list):
        raise BundleError(f"{where}.flags must be an array")
    if flags:
        raise BundleError(f"{where}.flags: {flags[0]!r} is not a valid flag: the runtime "
                          "specification defines none yet", hint="leave flags out, or empty")  # fmt: skip


def _personality(p: dict) -> None:
    domain = p["domain"]
    try:
        sc.personality(_PERSONALITIES[domain])
    except OSError as e:
        raise BundleError(f"config.json: linux.personality {domain}: {e.strerror}") from None


def _enter_cgroups(ic: InitConfig, rfd: int) -> None:
    """Wait until the parent has moved us into our cgroups; then make the cgroup namespace."""
    debug("init: mounts before the cgroup ones done; waiting for its cgroups")
    if ic.cgroups and not ic.cgrouped_early and _read_line(rfd) != "cgrouped":
        raise OciboxError("unexpected message from the runtime")
    if ic.namespaces.new & sc.CLONE_NEWCGROUP:
        nsmod.unshare(sc.CLONE_NEWCGROUP)


class _Init:
    """What the init's steps share (a plain class: see InitConfig)."""

    __slots__ = ("ic", "wfd", "rfd", "config", "process", "linux", "hooks", "state", "sfilter",
                 "console_sock")  # fmt: skip

    def __init__(self, ic: InitConfig, wfd: int, rfd: int) -> None:
        self.ic = ic
        self.wfd = wfd  # to the runtime: progress, "ready", or the error that ends us
        self.rfd = rfd  # from the runtime: until the create hooks have run
        self.config = ic.config
        self.process: dict = ic.config["process"]
        self.linux: dict = ic.config.get("linux") or {}
        self.hooks: dict = ic.config.get("hooks") or {}
        self.state: dict = {}  # the spec's state, from the runtime, for our hooks
        self.sfilter: seccomp.Filter | None = None  # compiled while host libraries are reachable
        self.console_sock = None  # to the --console-socket (or run's own), for the pty


def _init(ic: InitConfig, wfd: int, rfd: int) -> None:
    """The container's init: its environment built in the runtime-spec's order, then exec.

    Each step below is one function; the ones that need the host (its
    libraries, its paths, its /proc) come before pivot_root, the ones that need
    the container's /proc after it; the cgroup-dependent part of the root
    filesystem waits for the runtime to have moved us (see the module's doc).
    """
    st = _Init(ic, wfd, rfd)
    _make_namespaces(st)  # and the network interfaces moved in by the runtime
    _new_session(st)
    _process_domain(st)  # personality, memory policy
    _set_hostname(st)
    _oom_score(st)
    _build_rootfs(st)  # mounts, cgroups (waited for), devices, cwd
    _create_hooks(st)  # the runtime's, then createContainer
    _prepare_from_host(st)  # seccomp compiled, console connected: the last host access
    _enter_rootfs(st)  # pivot_root, sysctl, readonly and masked paths, the console
    exe, args, env = _process_settings(st)  # rlimits, user, caps, no_new_privs, seccomp
    _report_ready(st, exe)
    _wait_for_start_and_exec(st, exe, args, env)


def _make_namespaces(st: _Init) -> None:
    """Those the init makes for itself; with netDevices, wait for the runtime to move them."""
    ic = st.ic
    if ic.hold_fd >= 0:
        os.close(ic.hold_fd)
    if ic.namespaces.new & _FOR_INIT:
        nsmod.unshare(ic.namespaces.new & _FOR_INIT)
    if ic.namespaces.new & sc.CLONE_NEWNET:
        nsmod.loopback_up()
    if ic.netdevs:
        # The runtime moves the interfaces in once our network namespace exists.
        os.write(st.wfd, b"netns\n")
        while (line := _read_line(st.rfd)) != "netmoved":
            if line != "cgrouped":
                raise OciboxError(f"unexpected message from the runtime: {line!r}")
            ic.cgrouped_early = True


def _new_session(st: _Init) -> None:
    """A session of our own, and a session keyring named after the container (as runc)."""
    os.setsid()
    if not st.ic.no_new_keyring:
        try:
            sc.join_session_keyring(st.ic.keyring_name)
        except OSError as e:
            # As runc: a kernel or a user namespace without keyrings is not an error.
            if e.errno not in (38, 13, 1):  # ENOSYS, EACCES, EPERM
                raise BundleError(f"creating the session keyring: {e.strerror}") from None


def _process_domain(st: _Init) -> None:
    """linux.personality and linux.memoryPolicy: both inherited through exec."""
    linux = st.linux
    if linux.get("personality"):
        _personality(linux["personality"])
    if linux.get("memoryPolicy") is not None:
        from .linux import mempolicy  # inherited through exec, as the spec wants

        mempolicy.apply(mempolicy.check(linux["memoryPolicy"]))


def _set_hostname(st: _Init) -> None:
    cfg = st.config
    if st.ic.namespaces.has("uts"):
        if cfg.get("hostname"):
            sc.sethostname(cfg["hostname"])
        if cfg.get("domainname"):
            sc.setdomainname(cfg["domainname"])
    elif cfg.get("hostname"):
        raise BundleError("config.json: hostname needs a uts namespace of its own")


def _oom_score(st: _Init) -> None:
    if "oomScoreAdj" in st.process:
        _write("/proc/self/oom_score_adj", str(st.process["oomScoreAdj"]), "oomScoreAdj")


def _build_rootfs(st: _Init) -> None:
    """The mounts, the cgroups (waited for before their mounts), the devices, and cwd."""
    ic, linux = st.ic, st.linux
    rootfs.prepare(
        ic.rootfs,
        ic.mounts,
        linux.get("devices") or [],
        propagation=linux.get("rootfsPropagation", ""),
        in_userns=ic.namespaces.has("user"),
        before_cgroups=lambda: _enter_cgroups(ic, st.rfd),
    )
    cwd = st.process.get("cwd") or "/"
    if not cwd.startswith("/"):
        raise BundleError(f"config.json: process.cwd must be absolute, not {cwd!r}")
    os.makedirs(mnt.secure_join(ic.rootfs, cwd), 0o755, exist_ok=True)


def _create_hooks(st: _Init) -> None:
    """prestart and createRuntime (the runtime's, in its namespaces), then createContainer.

    Ours run in the container's namespaces, while host paths are still reachable.
    The runtime's state comes back with its "hooked", for startContainer too.
    """
    hook_cfg = st.hooks
    if any(
        hook_cfg.get(k) for k in ("prestart", "createRuntime", "createContainer", "startContainer")
    ):
        os.write(st.wfd, b"hooks\n")
        verb, _, arg = _read_line(st.rfd).partition(" ")
        if verb != "hooked":
            raise OciboxError("unexpected message from the runtime")
        st.state = json.loads(arg)
        hooks.run(hook_cfg, "createContainer", st.state)
        # After pivot_root the host's Python library is out of reach: import now.
        import subprocess  # noqa: F401
    os.close(st.rfd)


def _prepare_from_host(st: _Init) -> None:
    """What needs the host's libraries or paths: the seccomp profile, the console socket."""
    process, linux = st.process, st.linux
    # libseccomp is loaded and the profile compiled while the host's libraries are reachable.
    if linux.get("seccomp"):
        st.sfilter = seccomp.Filter(linux["seccomp"], st.ic.state)
    if process.get("terminal"):
        from .linux import console  # and socket with it, while the host's library is reachable

        if st.ic.console_fd is not None:
            import socket

            st.console_sock = socket.socket(fileno=st.ic.console_fd)
        else:
            st.console_sock = console.connect(st.ic.console_socket)


def _enter_rootfs(st: _Init) -> None:
    """pivot_root (or chroot), then what needs the container's /proc and /dev."""
    ic, linux = st.ic, st.linux
    debug(
        f"init: root filesystem {ic.rootfs} ready for {'chroot' if ic.no_pivot else 'pivot_root'}"
    )
    if ic.no_pivot:
        rootfs.chroot(ic.rootfs)
    else:
        rootfs.pivot(ic.rootfs)
    rootfs.reopen_dev_null()
    rootfs.write_sysctl(linux.get("sysctl") or {})
    rootfs.readonly_paths(linux.get("readonlyPaths") or [])
    rootfs.mask_paths(linux.get("maskedPaths") or [])
    if (st.config.get("root") or {}).get("readonly"):
        rootfs.readonly_root()
    if st.console_sock is not None:
        from .linux import console

        console.setup(st.console_sock, st.process.get("consoleSize"))


def _process_settings(st: _Init):
    """The process settings (see apply_process); then signals that end a waiting init."""
    exe, args, env = apply_process(st.process, st.ic.caps, st.ic.preserve_fds, st.sfilter)
    # As pid 1 of its namespace the init would ignore a default-action signal
    # even from the host; while it waits, a handler makes kill work as on runc.
    for s in (
        signal.SIGTERM,
        signal.SIGINT,
        signal.SIGHUP,
        signal.SIGQUIT,
        signal.SIGUSR1,
        signal.SIGUSR2,
    ):
        signal.signal(s, _die)
    return exe, args, env


def _report_ready(st: _Init, exe: str) -> None:
    """Tell the runtime that create is done; the pipe, and the log through it, close."""
    if not os.path.isdir("/proc/self/fd"):
        _reopen_fifo(-1)  # says clearly what is missing, while create can still report it
    debug(f"init: process settings applied; {exe} to exec")
    set_debug(None)  # the pipe is closed next
    os.write(st.wfd, b"ready\n")
    os.close(st.wfd)


def _wait_for_start_and_exec(st: _Init, exe: str, args: list[str], env: dict[str, str]) -> None:
    """Block on exec.fifo until start opens it; startContainer hooks; exec the program."""
    # exec.fifo, opened O_PATH by the parent (which can reach the state
    # directory), is reopened for writing through the container's /proc.
    fd = _reopen_fifo(st.ic.fifo_fd)
    if st.hooks.get("startContainer"):
        try:
            hooks.run(st.hooks, "startContainer", {**st.state, "status": "created"})
        except OciboxError as e:
            os.write(fd, b"E" + e.message.encode(errors="replace")[:3000])
            os._exit(1)
    os.write(fd, b"0")
    try:
        os.execve(exe, args, env)
    except OSError as e:
        os.write(2, f"ocibox-runtime: exec {args[0]}: {e.strerror}\n".encode())
        os._exit(127)


def apply_process(process: dict, cap_sets: dict[str, int], preserve_fds: int = 0, sfilter=None):
    """Apply process settings to the calling process; return (path, args, env) to exec.

    Shared by the container's init and by exec'd processes: rlimits, user and
    groups, capabilities, umask, cwd, noNewPrivileges, inherited fds, signals.
    """
    rlimits.apply(process.get("rlimits") or [])
    if "scheduler" in process:
        _scheduler(process["scheduler"])  # while the capabilities a real-time policy needs are ours
    if process.get("ioPriority"):
        _io_priority(process["ioPriority"])
    nnp = bool(process.get("noNewPrivileges"))
    if sfilter is not None and not nnp:
        sfilter.load()  # needs CAP_SYS_ADMIN without no_new_privs: before the drop
    user = process.get("user") or {}
    _chown_stdio(user.get("uid", 0))
    _switch_user(user, cap_sets)
    env = _with_home(process.get("env") or [], user)
    os.umask(user.get("umask", 0o022))
    cwd = process.get("cwd") or "/"
    try:
        os.chdir(cwd)
    except OSError as e:
        raise BundleError(f"process.cwd {cwd}: {e.strerror}") from None
    args = process["args"]
    exe = _lookup(args[0], env)
    if nnp:
        sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
        if sfilter is not None:
            sfilter.load()
    _close_on_exec_from(3 + preserve_fds)
    for fd in range(3, 3 + preserve_fds):
        try:
            os.set_inheritable(fd, True)
        except OSError:
            pass
    # Python ignores SIGPIPE and SIGXFSZ; an ignored signal stays ignored across exec.
    for s in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(s, signal.SIG_DFL)
    return exe, args, _env_dict(env)


def _reopen_fifo(fifo_fd: int) -> int:
    """Open exec.fifo for writing (blocking until start) through the container's /proc.

    Deliberately not through a descriptor of the host's /proc kept across
    pivot_root: a process in the container could walk from it to the host's root.
    """
    try:
        return os.open(f"/proc/self/fd/{fifo_fd}", os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise BundleError(
            "the container has no /proc mounted, which the runtime needs",
            hint='add {"destination": "/proc", "type": "proc"} to mounts',
        ) from None


def _close_on_exec_from(first: int) -> None:
    """Descriptors the runtime itself inherited must not reach the container's program."""
    try:
        fds = [int(n) for n in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc in the container: try every plausible number
        fds = list(range(first, 1024))
    for fd in fds:
        if fd >= first:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass


def _die(signum: int, _frame) -> None:
    os._exit(128 + signum)


def _write(path: str, value: str, what: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as e:
        raise BundleError(f"config.json: {what} {value}: {e.strerror}") from None


def _chown_stdio(uid: int) -> None:
    """As runc, stdio goes to the process's user (its uid; the gid is left to the mount).

    A user other than root can then open /dev/stdout, /dev/stderr (conmon's pipes:
    nginx-style logging) or its terminal again. /dev/null is left alone, and so is
    what the kernel refuses here (an owner or id this user namespace does not map,
    a read-only file system).
    """
    import errno

    try:
        null = os.stat("/dev/null").st_rdev
    except OSError:
        null = None
    for fd in (0, 1, 2):
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        if st.st_uid == uid or (null is not None and st.st_rdev == null):
            continue
        try:
            os.fchown(fd, uid, -1)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.EPERM, errno.EROFS):
                raise BundleError(f"handing stdio (fd {fd}) to user {uid}: {e.strerror}") from None


def _switch_user(user: dict, sets: dict[str, int]) -> None:
    uid, gid = user.get("uid", 0), user.get("gid", 0)
    caps.drop_bounding(sets["bounding"])
    groups = user.get("additionalGids") or []
    may_setgroups = _setgroups_allowed()
    if groups and not may_setgroups:
        raise BundleError("process.user.additionalGids: setgroups is denied in this user "
                          "namespace (a rootless single-id mapping)",
                          hint="leave additionalGids out, or map gids with newgidmap")  # fmt: skip
    sc.prctl(sc.PR_SET_KEEPCAPS, 1)
    try:
        if may_setgroups:
            os.setgroups(groups)
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as e:
        unmapped = e.errno == 22  # EINVAL: an id the user namespace does not map
        raise BundleError(f"switching to user {uid}:{gid}: {e.strerror}",
                          hint="map it in linux.uidMappings and gidMappings"
                          if unmapped else None) from None  # fmt: skip
    sc.prctl(sc.PR_SET_KEEPCAPS, 0)
    caps.apply(sets)


def _setgroups_allowed() -> bool:
    """False in a user namespace whose setgroups(2) is denied (a rootless runtime's)."""
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() != "deny"
    except OSError:  # no /proc here, or a kernel before 3.19
        return True


def _with_home(env: list[str], user: dict) -> list[str]:
    """HOME from the container's /etc/passwd when the config does not set it (as runc)."""
    if any(e.startswith("HOME=") for e in env):
        return env
    uid, home = user.get("uid", 0), "/"
    try:
        with open("/etc/passwd") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) > 5 and fields[2] == str(uid):
                    home = fields[5] or "/"
                    break
    except OSError:
        pass
    return [*env, f"HOME={home}"]


def _env_dict(env: list[str]) -> dict[str, str]:
    out = {}
    for item in env:
        k, sep, v = item.partition("=")
        if sep:
            out[k] = v
    return out


def _lookup(name: str, env: list[str]) -> str:
    """The executable ``name`` names, by the container's PATH, as seen from inside."""
    if "/" in name:
        candidates = [name]
    else:
        path = _env_dict(env).get(
            "PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        )
        candidates = [os.path.join(d or ".", name) for d in path.split(":")]
    for c in candidates:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    if "/" in name:
        # runc's words (Go's exec.LookPath), which podman maps to exit codes 127 and 126
        # and kubelet shows as the container's message
        try:
            os.stat(name)
        except OSError as e:
            raise BundleError(f'exec: "{name}": stat {name}: {e.strerror.lower()}') from None
        raise BundleError(f'exec: "{name}": permission denied')
    raise BundleError(f'exec: "{name}": executable file not found in $PATH')

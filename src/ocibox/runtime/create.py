"""The create and run operations: from a bundle to a created (or running) container."""

from __future__ import annotations

import os

from ..errors import BundleError, OciboxError
from . import jsonlite as json
from .container import (
    CONFIG_COPY,
    FIFO,
    OCI_VERSION,
    Container,
    debug,
    now_rfc3339,
    proc_start_time,
    write_atomic,
)
from .linux.cgroup_warmup import warm_up as warm_cgroup_writes


def _net_devices_back(ic, config: dict) -> dict:
    """What delete moves back: interfaces given to a network namespace that outlives us."""
    if not ic.netdevs:
        return {}
    from .linux import netdev

    path = netdev.joined_path(config.get("linux") or {})
    if not path:
        return {}
    return {"netDevices": {"path": path, "devices": ic.netdevs, "addresses": ic.netdevs_moved}}


def load_config(bundle: str) -> dict:
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            config = json.loads(f.read())
    except FileNotFoundError:
        raise BundleError(
            f"{path} does not exist", hint="make one with: ocibox-runtime spec"
        ) from None
    except ValueError as e:
        raise BundleError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise BundleError(f"{path}: not a JSON object")
    return config


def create(
    root: str,
    cid: str,
    bundle: str,
    *,
    pid_file: str | None = None,
    no_pivot: bool = False,
    preserve_fds: int = 0,
    console_socket: str | None = None,
    console_fd: int | None = None,
    pidfd_socket: str | None = None,
    no_new_keyring: bool = False,
    subreaper: bool = False,
    systemd_cgroup: bool = False,
    warn=None,
) -> Container:
    """Build the container and leave its init waiting for ``start``.

    The steps of the runtime-spec's create, in its order: the config checked
    (before anything exists), the state directory with its own copy of the
    config and exec.fifo, the processes (namespaces, cgroups, root filesystem,
    devices, the create hooks as the init asks: see process), and the state
    saved last. A failure at any step undoes the ones before it.
    ``systemd_cgroup``: the cgroup is a transient systemd unit (--systemd-cgroup).
    ``pidfd_socket``: a unix socket that gets a pidfd of the init (linux.pidfd).
    """
    bundle = os.path.abspath(bundle)
    config = load_config(bundle)
    linux = config.get("linux") or {}
    if systemd_cgroup:
        _check_systemd(cid, linux.get("cgroupsPath"), config.get("annotations") or {},
                       linux.get("resources") or {})  # fmt: skip
    warm_cgroup_writes()  # if the command line has not already
    from . import process  # after the warm-up began: its imports overlap the wait

    ic = process.prepare(config, bundle, no_pivot=no_pivot, preserve_fds=preserve_fds,
                         console_socket=console_socket and os.path.abspath(console_socket),
                         console_fd=console_fd)  # fmt: skip
    ic.no_new_keyring = no_new_keyring
    ic.keyring_name = cid
    ic.state = {"ociVersion": OCI_VERSION, "id": cid, "status": "creating", "bundle": bundle,
                "annotations": config.get("annotations") or {}}  # fmt: skip
    for w in ic.warnings:
        if warn:
            warn(w)
    held = pidfd_to = None
    try:
        if ic.console_socket and ic.console_fd is None:
            # The runtime connects, not the init: as root of a user namespace the init is
            # kept out of the socket by its owner and mode (runc connects in its parent too).
            from .linux import console

            held = console.connect(ic.console_socket)
            ic.console_fd = held.fileno()
        if pidfd_socket:
            from .linux import pidfd

            pidfd_to = pidfd.connect(pidfd_socket)
        c = _Creating(cid, bundle, config, ic, Container.reserve(root, cid))
        c.systemd = systemd_cgroup
        debug(f"container {cid}: creating from bundle {bundle} (root {root})")
        try:
            _make_state_dir(c)
            # or the init would hold them for ever (the pidfd socket's peer would see no EOF)
            ic.close_in_child = (c.container.create_lock,
                                 *((pidfd_to.fileno(),) if pidfd_to is not None else ()))  # fmt: skip
            c.init_pid = process.spawn(ic, subreaper=subreaper, on_cgroups=_cgroup_joiner(c),
                                       on_hooks=_hook_runner(c))  # fmt: skip
            _save_state(c, pid_file)
            if pidfd_to is not None:
                pidfd.send(pidfd_to, c.init_pid)
        except BaseException as e:
            _undo(c, e)
            raise
    finally:
        # the init has its own copy of the console socket; on an error (an id in use, say)
        # a caller that goes on must not hold them either
        for sock in (held, pidfd_to):
            if sock is not None:
                sock.close()
    c.container.release()
    return c.container


class _Creating:
    """What the steps of one create share (a plain class: see process.InitConfig)."""

    __slots__ = ("cid", "bundle", "config", "ic", "container", "hooks", "cgroup_paths",
                 "cgroup_created", "init_pid", "systemd", "systemd_unit")  # fmt: skip

    def __init__(self, cid: str, bundle: str, config: dict, ic, container: Container) -> None:
        self.cid = cid
        self.bundle = bundle
        self.config = config
        self.ic = ic  # process.InitConfig
        self.container = container  # reserved: its directory exists, its create lock held
        self.hooks: dict = config.get("hooks") or {}
        self.cgroup_paths: dict[str, str] = {}  # controller -> the container's cgroup
        self.cgroup_created: list[str] = []  # those we made, which delete removes
        self.init_pid = 0
        self.systemd = False  # --systemd-cgroup: the cgroup is a systemd unit
        self.systemd_unit = ""  # its name, once made


def _make_state_dir(c: _Creating) -> None:
    """The container's own copy of config.json, and exec.fifo, which start opens."""
    c_dir = c.container.dir
    # Later changes to the bundle's config.json must not affect the container.
    write_atomic(os.path.join(c_dir, CONFIG_COPY), json.dumps(c.config).encode())
    fifo = os.path.join(c_dir, FIFO)
    os.mkfifo(fifo, 0o622)
    os.chmod(fifo, 0o622)  # past the umask: an init that is not root must open it
    c.ic.fifo_fd = os.open(fifo, os.O_PATH | os.O_CLOEXEC)


def _cgroup_joiner(c: _Creating):
    """``on_cgroups`` for spawn, or None when a rootless runtime may write no cgroup.

    A config with neither resources nor cgroupsPath gets cgroups too, as runc
    gives it: <the runtime's own cgroup>/<id> (see cgroups.v1/v2), so that pause,
    ps, kill --all and events have the container's processes, and only them.
    """
    linux = c.config.get("linux") or {}
    resources = linux.get("resources")
    cgroups_path = linux.get("cgroupsPath")
    from . import rootless

    is_rootless = not c.systemd and rootless.rootless()  # --systemd-cgroup: root's systemd
    if is_rootless and not rootless.use_cgroups(c.cid, cgroups_path, resources or {}):
        debug(f"container {c.cid}: rootless, no writable cgroup: it stays in ours")
        return None
    from .linux import cgroups

    calls = []

    def on_cgroups(pid: int) -> None:
        # First the intermediate's: the cgroups are made; then the init's.
        calls.append(pid)
        if c.systemd:
            # The unit is made for the init alone: a scope that held only the
            # intermediate, which exits now, would be emptied and stopped by systemd
            # before the init got in.
            if len(calls) == 1:
                return
            from .linux.cgroups import systemd

            paths, made, c.systemd_unit = systemd.apply(c.cid, cgroups_path, resources or {},
                                                        pid, c.config.get("annotations"))  # fmt: skip
            c.cgroup_paths.update(paths)
            c.cgroup_created.extend(made)
        elif not c.cgroup_paths:
            paths, made = cgroups.apply(c.cid, cgroups_path, resources or {}, pid,
                                        rootless=is_rootless)  # fmt: skip
            c.cgroup_paths.update(paths)
            c.cgroup_created.extend(made)
        else:
            from .linux.cgroups.fs import join

            join(c.cgroup_paths, pid)
        debug(f"container {c.cid}: process {pid} joined cgroups "
              f"{' '.join(c.cgroup_paths.values())}")  # fmt: skip

    return on_cgroups


def _hook_runner(c: _Creating):
    """``on_hooks`` for spawn: the prestart and createRuntime hooks, in the runtime's namespaces."""

    def on_hooks(pid: int) -> dict:
        from . import hooks

        state = {"ociVersion": OCI_VERSION, "id": c.cid, "status": "creating", "pid": pid,
                 "bundle": c.bundle, "annotations": c.config.get("annotations") or {}}  # fmt: skip
        hooks.run(c.hooks, "prestart", state)
        hooks.run(c.hooks, "createRuntime", state)
        return state

    return on_hooks


def _save_state(c: _Creating, pid_file: str | None) -> None:
    """The init waits on exec.fifo: the state says "created" from now on."""
    from . import process

    found = proc_start_time(c.init_pid)
    if found is None:
        raise OciboxError(f"container {c.cid}: its init exited during create")
    c.container.save(
        {
            "ociVersion": OCI_VERSION,
            "id": c.cid,
            "pid": c.init_pid,
            "pidStartTime": found[1],
            "bundle": c.bundle,
            "rootfs": c.ic.rootfs,
            "created": now_rfc3339(),
            "annotations": c.config.get("annotations") or {},
            "cgroupPaths": c.cgroup_paths,
            "cgroupCreated": c.cgroup_created,
            **({"systemdUnit": c.systemd_unit} if c.systemd_unit else {}),
            "hooks": bool(c.hooks),
            **_net_devices_back(c.ic, c.config),
        }
    )
    debug(f"container {c.cid}: created, init {c.init_pid} waits on exec.fifo")
    os.close(c.ic.fifo_fd)
    c.ic.fifo_fd = -1
    if pid_file:
        write_atomic(os.path.abspath(pid_file), str(c.init_pid).encode())
    process.release_netns(c.ic)  # last: until here a failure gives the interfaces back


def _undo(c: _Creating, e: BaseException) -> None:
    """A failed create: everything it made goes, and the name is free again."""
    from . import process

    debug(f"container {c.cid}: create failed ({e}); cleaning up")
    if c.ic.fifo_fd >= 0:
        os.close(c.ic.fifo_fd)
    try:
        process.give_back_netdevs(c.ic)  # before the namespace dies with the init
    except OciboxError as back:
        debug(f"container {c.cid}: {back.message}")
    if c.init_pid:
        try:
            os.kill(c.init_pid, 9)
        except ProcessLookupError:
            pass
    if c.cgroup_created and not c.container.state:
        c.container.state = {"cgroupCreated": c.cgroup_created}
        if c.systemd_unit:
            c.container.state["systemdUnit"] = c.systemd_unit
    c.container.destroy()
    c.container.release()


def _check_systemd(cid: str, cgroups_path: str | None, annotations: dict, resources: dict) -> None:
    """--systemd-cgroup: refused early with a path not of its form (or unit properties in
    annotations that cannot be read), without systemd, or with v2 limits on cgroup v1."""
    from .linux.cgroups import systemd

    systemd.parse(cid, cgroups_path)  # the path's form first, as runc
    systemd.annotation_properties(annotations)
    systemd.check_host()
    if resources.get("unified"):
        from .linux.cgroups.fs import UNIFIED, mode

        systemd.check_resources(resources, mode() != UNIFIED)


_FORWARDED = ("HUP", "INT", "QUIT", "TERM", "USR1", "USR2", "WINCH", "ALRM", "CONT", "PIPE")


def run(root: str, cid: str, bundle: str, *, detach: bool = False, keep: bool = False, **kw) -> int:
    """create + start, and unless detached wait for the container and return its exit code.

    A process with a terminal and no --console-socket gets one from us: the
    runtime holds the pty master and copies between it and its own stdio.
    """
    console = None
    if not detach and not kw.get("console_socket"):
        config = load_config(os.path.abspath(bundle))
        if (config.get("process") or {}).get("terminal"):
            import socket

            console, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            kw["console_fd"] = theirs.detach()
    try:
        container = create(root, cid, bundle, subreaper=not detach, **kw)
    finally:
        if kw.get("console_fd") is not None:
            os.close(kw["console_fd"])
    proxy = None
    try:
        if console is not None:
            from .linux.console import Proxy

            proxy = Proxy(_receive_master(console))
        container.start()
    except BaseException:
        if proxy is not None:
            proxy.close()
        container.delete(force=True)
        raise
    if detach:
        return 0
    if proxy is not None:
        code = proxy.run(container.pid, _forward_signals)
    else:
        code = wait(container.pid)
    if not keep:
        container.delete(force=True)
    return code


def _receive_master(sock) -> int:
    import socket

    _, fds, _, _ = socket.recv_fds(sock, 4096, 1)
    sock.close()
    if not fds:
        raise OciboxError("the container's init sent no terminal")
    return fds[0]


def _forward_signals(pid: int, skip: tuple[str, ...] = ()) -> None:
    import _signal as signal

    from .signals import NUMBERS

    def forward(signum: int, _frame) -> None:
        debug(f"forwarding signal {signum} to process {pid}")
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for name in _FORWARDED:
        if name not in skip:
            signal.signal(NUMBERS[name], forward)


def exit_code(status: int) -> int:
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def wait(pid: int) -> int:
    """Wait for ``pid`` (our child, thanks to the subreaper flag), forwarding signals to it."""
    _forward_signals(pid)
    while True:
        try:
            got, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 255
        if got == pid:
            debug(f"process {pid} exited (wait status {status})")
            return exit_code(status)

"""checkpoint and restore: a running container frozen to image files by CRIU, and back.

CRIU (criu(8), its command line) does the work: it dumps the container's tree of
processes with their namespaces, mounts and cgroup membership, and rebuilds
them. The runtime tells it what it cannot know, as runc does:

    --root ROOTFS                  the container's root (restore mounts it there)
    --external mnt[DEST]:KEY       every bind mount of the config: outside the
                                   container, so not dumped; KEY is its destination
    --external net[INODE]:KEY      a network namespace joined by path (extRootNetNS)
    --cgroup-root [CTRL:]PATH      restore into the new container's cgroups
    --restore-sibling              the restored init becomes our child (run -d alike)
    --action-script FILE           prestart and createRuntime hooks at criu's
                                   setup-namespaces (runc's notification), and the
                                   restore undone at post-restore if the restorer
                                   is gone (see _ActionScript)

After a checkpoint that did not leave the container running, the container is
destroyed (its cgroups and state, the poststop hooks run), as runc does: the id
is free for ``restore``, which creates the container again from the bundle and
the images, and leaves it running.

The images directory also gets descriptors.json (runc's): what the init's stdio
was, so that pipes can be handed over on restore (``--inherit-fd``).

A terminal (process.terminal) is the one thing done otherwise than runc, whose
criu RPC option orphan-pts-master has no command-line flag. As LXC does with
criu's command line, the pty's slave is dumped as an external tty and the
/dev/console bind of it as an external mount; tty.info keeps the tty's key:

    dump     --external tty[RDEV:DEV]   --external mnt[/dev/console]:console
    restore  --inherit-fd fd[N]:tty[RDEV:DEV]   --external mnt[console]:/dev/pts/M

where fd N is the slave of a new pty (the host's), whose master goes to
--console-socket, as at create; a foreground restore without one copies between
the master and its own stdio, as run does. Images with a terminal are therefore
not exchangeable with runc's.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from ..errors import (
    BundleError,
    ContainerStateError,
    NotFound,
    NotImplementedYet,
    OciboxError,
    UsageError,
)
from . import jsonlite as json
from .container import CONFIG_COPY, OCI_VERSION, Container, debug, now_rfc3339, proc_start_time

DUMP_LOG = "dump.log"
RESTORE_LOG = "restore.log"
DESCRIPTORS = "descriptors.json"
TTY_INFO = "tty.info"  # the key of the init's terminal, as criu names it (LXC's file name)
CONSOLE_KEY = "console"  # the /dev/console bind mount's key
PTY_SLAVE_MAJORS = range(136, 144)  # UNIX98_PTY_SLAVE_MAJOR and the majors after it
NET_KEY = "extRootNetNS"  # runc's key for a joined network namespace
CGROUP_MODES = ("soft", "full", "strict", "ignore")
PR_GET_CHILD_SUBREAPER = 37


class Options:
    """What checkpoint and restore share (runc's flags of the same names)."""

    def __init__(self, image_path: str | None = None, work_path: str | None = None, *,
                 tcp_established: bool = False, ext_unix_sk: bool = False,
                 shell_job: bool = False, file_locks: bool = False,
                 manage_cgroups_mode: str | None = None, empty_ns: str | None = None,
                 criu: str | None = None, auto_dedup: bool = False,
                 lazy_pages: bool = False, lsm_profile: str | None = None,
                 lsm_mount_context: str | None = None) -> None:  # fmt: skip
        self.image_path = os.path.abspath(image_path or "checkpoint")  # runc's default
        self.work_path = os.path.abspath(work_path) if work_path else self.image_path
        self.tcp_established = tcp_established
        self.ext_unix_sk = ext_unix_sk
        self.shell_job = shell_job
        self.file_locks = file_locks
        if manage_cgroups_mode and manage_cgroups_mode not in CGROUP_MODES:
            raise UsageError(f"--manage-cgroups-mode {manage_cgroups_mode!r}: "
                             f"use one of {', '.join(CGROUP_MODES)}")  # fmt: skip
        self.manage_cgroups_mode = manage_cgroups_mode or "soft"
        if empty_ns and empty_ns not in ("network", "net"):
            raise NotImplementedYet(f"--empty-ns {empty_ns}: only the network namespace can be empty")
        self.empty_ns = bool(empty_ns)
        self.criu = criu
        self.auto_dedup = auto_dedup
        self.lazy_pages = lazy_pages
        # restore's: the LSM profile and mount context of the restored process (runc's
        # flags, criu's options of the same names)
        self.lsm_profile = _check_lsm_profile(lsm_profile) if lsm_profile else None
        self.lsm_mount_context = lsm_mount_context or None

    def common_args(self) -> list[str]:
        args = ["-D", self.image_path, "-W", self.work_path, "-v4",
                f"--manage-cgroups={self.manage_cgroups_mode}"]  # fmt: skip
        for flag, on in (("--tcp-established", self.tcp_established),
                         ("--ext-unix-sk", self.ext_unix_sk), ("--shell-job", self.shell_job),
                         ("--file-locks", self.file_locks), ("--auto-dedup", self.auto_dedup),
                         ("--lazy-pages", self.lazy_pages)):  # fmt: skip
            if on:
                args.append(flag)
        return args


LSM_TYPES = ("apparmor", "selinux", "none")  # what criu's --lsm-profile takes


def _check_lsm_profile(value: str) -> str:
    """--lsm-profile TYPE:NAME, refused here when criu would refuse it: a type criu does
    not know, or an LSM this kernel does not run (criu then fails late, in its log)."""
    kind, sep, name = value.partition(":")
    if not sep or kind not in LSM_TYPES:
        raise UsageError(f"--lsm-profile {value!r}: use TYPE:NAME, TYPE one of {', '.join(LSM_TYPES)}")
    if kind != "none" and kind not in host_lsms():
        raise NotImplementedYet(f"--lsm-profile {value}: this host does not run the {kind} LSM "
                                f"(/sys/kernel/security/lsm does not list it)",
                                hint=f"restore without --lsm-profile (or with none:{name}), "
                                     f"or on a host whose kernel runs {kind}")  # fmt: skip
    return value


def host_lsms() -> set[str]:
    """The LSMs the kernel runs (securityfs's list), as criu finds them; empty when
    securityfs is not there."""
    try:
        with open("/sys/kernel/security/lsm") as f:
            found = set(f.read().strip().split(","))
    except OSError:
        found = set()
    if os.path.exists("/sys/fs/selinux/enforce"):  # libselinux's test, which criu uses
        found.add("selinux")
    return found


def find_criu(path: str | None) -> str:
    """The criu binary: the global --criu, else criu on $PATH or in /usr/sbin, /sbin."""
    if path:
        found = shutil.which(path) if "/" not in path else (path if os.access(path, os.X_OK) else None)
        if not found:
            raise NotFound(f"criu binary {path!r} (--criu) not found or not executable")
        return found
    found = shutil.which("criu") or shutil.which("criu", path="/usr/sbin:/sbin:/usr/local/sbin")
    if not found:
        raise NotFound("checkpoint and restore need CRIU, and criu is not installed",
                       hint="install criu (apt-get install criu), or name it with --criu PATH")  # fmt: skip
    return found


def _criu_failed(what: str, log: str, p: subprocess.CompletedProcess | None = None) -> OciboxError:
    """An error naming criu's own reason: the Error lines of its log (else its stderr)."""
    reasons: list[str] = []
    try:
        with open(log, errors="replace") as f:
            reasons = [line.strip() for line in f if "Error (" in line]
    except OSError:
        pass
    if not reasons and p is not None:
        reasons = [ln for ln in (p.stderr or "").splitlines() if ln.strip()]
    reason = "; ".join(reasons[-4:]) or "no reason given"
    return OciboxError(f"{what} failed: {reason}", hint=f"criu's log: {log}")


def _bind_mounts(config: dict) -> list[dict]:
    return [m for m in config.get("mounts") or []
            if m.get("type") == "bind" or {"bind", "rbind"} & set(m.get("options") or [])]  # fmt: skip


def _joined_netns(config: dict) -> str | None:
    for ns in (config.get("linux") or {}).get("namespaces") or []:
        if ns.get("type") == "network" and ns.get("path"):
            return ns["path"]
    return None


# --- checkpoint -------------------------------------------------------------------


def checkpoint(c: Container, opts: Options, *, leave_running: bool = False,
               pre_dump: bool = False, parent_path: str | None = None,
               page_server: str | None = None, status_fd: str | int | None = None) -> None:  # fmt: skip
    """Dump ``c`` to ``opts.image_path``; unless it is left running, it is destroyed.

    ``page_server`` (ADDRESS:PORT) sends the memory pages to ``criu page-server``
    there; with ``opts.lazy_pages`` criu serves them itself, lazily, on that address
    until a ``criu lazy-pages`` daemon has taken them all, and writes a NUL byte to
    ``status_fd`` once it serves (runc's lazy migration).
    """
    extra = _page_server_args(page_server, listen=opts.lazy_pages)
    fds: tuple[int, ...] = ()
    if opts.lazy_pages and status_fd is not None:
        fds = (_status_fd(status_fd),)
        extra += ["--status-fd", str(fds[0])]
    c._exclusive(_checkpoint, c, opts, leave_running, pre_dump, parent_path, extra, fds)
    if not (leave_running or pre_dump):
        # criu has killed the tree; the container goes as runc's does (poststop hooks too).
        c.delete(force=True)


def _page_server_args(page_server: str | None, listen: bool) -> list[str]:
    """criu's flags for ADDRESS:PORT: the page server to send to, or, for a lazy dump
    (``listen``), where criu serves the pages itself (as runc's RPC does)."""
    if not page_server:
        return []
    address, _, port = page_server.rpartition(":")
    address = address.strip("[]")  # [IPv6]:PORT
    if not address or not (port.isdigit() and 0 < int(port) < 65536):
        raise UsageError(f"--page-server {page_server!r}: use --page-server ADDRESS:PORT "
                         "(a port from 1 to 65535)")
    return [*([] if listen else ["--page-server"]), "--address", address, "--port", port]


def _status_fd(value: str | int) -> int:
    """--status-fd: a descriptor of ours, open for writing (runc checks the same)."""
    import fcntl

    try:
        fd = int(value)
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except ValueError:
        raise UsageError(f"--status-fd {value!r}: not a file descriptor number") from None
    except OSError as e:
        raise UsageError(f"--status-fd {value}: {e.strerror}") from None
    if flags & os.O_ACCMODE == os.O_RDONLY:
        raise UsageError(f"--status-fd {value}: not open for writing")
    return fd


def _checkpoint(c: Container, opts: Options, leave_running: bool, pre_dump: bool,
                parent_path: str | None, extra: list[str], fds: tuple[int, ...]) -> None:  # fmt: skip
    status = c.status()
    if status not in ("running", "paused"):
        raise ContainerStateError(f"cannot checkpoint container {c.id}: it is {status}",
                                  hint="only a running or paused container can be checkpointed")  # fmt: skip
    criu = find_criu(opts.criu)
    config = c.config()
    rootfs = (c.state or {}).get("rootfs")
    if not rootfs:
        raise OciboxError(f"container {c.id}: its state records no root filesystem")
    for d in (opts.image_path, opts.work_path):
        os.makedirs(d, 0o700, exist_ok=True)
    pid = c.pid
    args = [criu, "pre-dump" if pre_dump else "dump", "-t", str(pid), *opts.common_args(),
            "-o", DUMP_LOG, "--root", rootfs]  # fmt: skip
    if leave_running and not pre_dump:
        args.append("--leave-running")
    if pre_dump or parent_path:
        args.append("--track-mem")
    if parent_path:
        # criu takes it relative to the images directory (runc's --parent-path is too).
        args += ["--prev-images-dir", parent_path]
    if opts.empty_ns:
        args += ["--empty-ns", "net"]
    for m in _bind_mounts(config):
        args += ["--external", f"mnt[{m['destination']}]:{m['destination']}"]
    netns = _joined_netns(config)
    if netns and not opts.empty_ns:
        args += ["--external", f"net[{os.stat(netns).st_ino}]:{NET_KEY}"]
    for path in (config.get("linux") or {}).get("maskedPaths") or []:
        if os.path.exists(f"/proc/{pid}/root{path}") and not os.path.isdir(f"/proc/{pid}/root{path}"):
            args += ["--external", f"mnt[{path}]:/dev/null"]
    if status == "paused":
        paths = (c.state or {}).get("cgroupPaths") or {}
        freezer = paths.get("freezer") or paths.get("unified")
        if freezer:
            args += ["--freeze-cgroup", freezer]
    _write_descriptors(pid, opts.image_path)
    tty = _terminal_key(pid)
    if tty:
        args += ["--external", tty]
        if _is_mount_point(pid, "/dev/console"):
            args += ["--external", f"mnt[/dev/console]:{CONSOLE_KEY}"]
    with open(os.path.join(opts.image_path, TTY_INFO), "w") as f:
        f.write(tty or "")
    args += extra
    debug(f"container {c.id}: {' '.join(args)}")
    p = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       pass_fds=fds)  # fmt: skip
    if p.returncode != 0:
        raise _criu_failed(f"checkpoint of container {c.id}: criu {args[1]}",
                           os.path.join(opts.work_path, DUMP_LOG), p)  # fmt: skip
    debug(f"container {c.id}: criu {args[1]} done in {opts.image_path}")


def _write_descriptors(pid: int, image_path: str) -> None:
    fds = []
    for fd in range(3):
        try:
            fds.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            fds.append("/dev/null")
    with open(os.path.join(image_path, DESCRIPTORS), "w") as f:
        f.write(json.dumps(fds))


def _terminal_key(pid: int) -> str | None:
    """criu's key for the pty slave the init has as stdio (its rdev and its devpts' dev, in
    hex: criu's tty[%lx:%lx]); None when its stdio holds no terminal."""
    import stat

    for fd in range(3):
        try:
            st = os.stat(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) in PTY_SLAVE_MAJORS:
            return f"tty[{st.st_rdev:x}:{st.st_dev:x}]"
    return None


def _is_mount_point(pid: int, path: str) -> bool:
    try:
        with open(f"/proc/{pid}/mountinfo") as f:
            return any(line.split()[4] == path for line in f)
    except OSError:
        return False


# --- restore ----------------------------------------------------------------------


def restore(root: str, cid: str, bundle: str, opts: Options, *, detach: bool = False,
            pid_file: str | None = None, no_subreaper: bool = False,
            console_socket: str | None = None, warn=None) -> int:  # fmt: skip
    """Create container ``cid`` from ``bundle`` and the images, running; unless detached,
    wait for it and return its exit code (then it is deleted, as after ``run``)."""
    from .create import load_config

    bundle = os.path.abspath(bundle)
    config = load_config(bundle)
    if not os.path.exists(os.path.join(opts.image_path, "inventory.img")):
        raise NotFound(f"{opts.image_path} holds no checkpoint (no inventory.img)",
                       hint="give the checkpoint's directory with --image-path")  # fmt: skip
    tty = _check_terminal(config, opts.image_path, console_socket, detach)
    criu = find_criu(opts.criu)
    root_path = (config.get("root") or {}).get("path") or "rootfs"
    rootfs = os.path.join(bundle, root_path)
    if not os.path.isdir(rootfs):
        raise BundleError(f"the root filesystem {rootfs} does not exist")
    os.makedirs(opts.work_path, 0o700, exist_ok=True)
    c = Container.reserve(root, cid)
    debug(f"container {cid}: restoring from {opts.image_path} (bundle {bundle})")
    made: list[str] = []
    master = None
    subreaper = False
    try:
        subreaper = not (detach or no_subreaper) and _make_subreaper()
        from .container import write_atomic

        write_atomic(os.path.join(c.dir, CONFIG_COPY), json.dumps(config).encode())
        # A state with no pid yet: "creating" while we hold the lock, "stopped" (delete
        # cleans up) if we die half-way; the cgroups join it once made.
        c.save({"ociVersion": OCI_VERSION, "id": cid, "pid": 0, "bundle": bundle,
                "rootfs": rootfs, "created": now_rfc3339(),
                "annotations": config.get("annotations") or {}})  # fmt: skip
        hooks = _restore_hooks(cid, bundle, config)
        pid, paths, made, ran, master = _run_criu_restore(c, criu, config, rootfs, opts, tty,
                                                          console_socket, hooks)  # fmt: skip
        found = proc_start_time(pid)
        if found is None:
            raise OciboxError(f"container {cid}: its restored init exited at once")
        c.save({"ociVersion": OCI_VERSION, "id": cid, "pid": pid, "pidStartTime": found[1],
                "bundle": bundle, "rootfs": rootfs, "created": now_rfc3339(),
                "annotations": config.get("annotations") or {}, "cgroupPaths": paths,
                "cgroupCreated": made, "hooks": bool(config.get("hooks"))})  # fmt: skip
        if hooks and not ran:
            # criu never ran its setup-namespaces action (runc's hooks run only at that
            # notification, so runc runs none then, nor do we): the process runs already.
            debug(f"container {cid}: criu reached no setup-namespaces: no hook ran")
    except BaseException:
        if master is not None:
            os.close(master)
        if c.state and c.state.get("pid"):
            try:
                os.kill(c.state["pid"], 9)
            except ProcessLookupError:
                pass
        elif made:
            c.state = {"cgroupCreated": made}
        c.destroy()
        c.release()
        if subreaper:  # a library caller goes on as it was
            from .linux import syscalls as sc
            from .process import PR_SET_CHILD_SUBREAPER

            sc.prctl(PR_SET_CHILD_SUBREAPER, 0)
        raise
    c.release()
    if pid_file:
        from .container import write_atomic

        write_atomic(os.path.abspath(pid_file), str(pid).encode())
    if detach:
        return 0
    from .create import _forward_signals, wait

    if master is not None:
        from .linux.console import Proxy

        code = Proxy(master).run(pid, _forward_signals)
    else:
        code = wait(pid)
    c.delete(force=True)
    return code


def _make_subreaper() -> bool:
    """Make this process a child subreaper (the restored init's orphans come to it, as
    at run); whether it was made one here (False when it was one already)."""
    import ctypes

    from .linux import syscalls as sc
    from .process import PR_SET_CHILD_SUBREAPER

    was = ctypes.c_int(0)
    sc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.addressof(was))
    if was.value:
        return False
    sc.prctl(PR_SET_CHILD_SUBREAPER, 1)
    return True


def _check_terminal(config: dict, image_path: str, console_socket: str | None,
                    detach: bool) -> str | None:  # fmt: skip
    """The dumped terminal's key when the container has one; the mismatches between
    config, images and flags refused."""
    terminal = bool((config.get("process") or {}).get("terminal"))
    if console_socket and not terminal:
        raise BundleError("--console-socket is only for a process with terminal: true")
    try:
        with open(os.path.join(image_path, TTY_INFO)) as f:
            tty = f.read().strip() or None
    except FileNotFoundError:
        tty = "unknown" if terminal else None  # not dumped by us: runc's images, say
    if not terminal:
        if tty:
            raise BundleError("the checkpoint's process has a terminal, and config.json says "
                              "process.terminal is false")  # fmt: skip
        return None
    if tty == "unknown":
        if not os.path.exists(os.path.join(image_path, "tty-info.img")):
            raise BundleError("config.json: process.terminal is true, and the checkpoint's "
                              "process had no terminal (criu dumped none)")  # fmt: skip
        # runc's images, say: its terminal is criu's orphan-pts-master, RPC only
        raise NotImplementedYet(f"cannot restore {image_path}: its process has a terminal and the "
                                f"checkpoint was not made by ocibox-runtime (no {TTY_INFO}); "
                                f"a terminal checkpointed by runc is restored only through "
                                f"criu's RPC (orphan-pts-master), which ocibox-runtime does not use",
                                hint="restore it with the runtime that checkpointed it (runc "
                                     "restore --console-socket ...), or checkpoint the container "
                                     "with ocibox-runtime")  # fmt: skip
    if not tty:
        raise BundleError("config.json: process.terminal is true, and the checkpoint's process "
                          "had no terminal")  # fmt: skip
    import re

    if not re.fullmatch(r"tty\[[0-9a-f]+:[0-9a-f]+\]", tty):
        raise BundleError(f"{os.path.join(image_path, TTY_INFO)}: {tty[:40]!r} is not a "
                          f"terminal's key (tty[RDEV:DEV])")  # fmt: skip
    if detach and not console_socket:
        raise UsageError("restore -d of a container with a terminal needs --console-socket",
                         hint="pass --console-socket, as to create -d; or restore in the "
                              "foreground, which joins the terminal to our stdio")  # fmt: skip
    return tty


def _new_terminal(console_socket: str | None) -> tuple[int, int, str, object]:
    """A new pty for the restored init: master, slave, the slave's path, and the connected
    console socket (connected first: a bad --console-socket fails before criu runs), None
    without one (a foreground restore keeps the master, as runc's)."""
    from .linux import console

    sock = console.connect(console_socket) if console_socket else None
    try:
        master, slave = os.openpty()
    except OSError as e:
        if sock is not None:
            sock.close()
        raise OciboxError(f"cannot open a terminal for the restored container: {e.strerror}") from None
    return master, slave, os.ttyname(slave), sock


def _send_terminal(master: int, name: str, sock) -> None:
    import socket

    try:
        socket.send_fds(sock, [name.encode()], [master])
    except OSError as e:
        raise BundleError(f"sending the terminal to the console socket: {e.strerror}") from None
    finally:
        sock.close()


def _restore_hooks(cid: str, bundle: str, config: dict):
    """A function running prestart and createRuntime with the restored init's pid, as runc
    runs them on restore (runc runs no poststart then, nor do we); None without such hooks.

    The state they get says "creating", where runc 1.1's says "stopped" (its current
    state, there being no init yet to look at; the VM test records it). Restore is not
    in the runtime-spec, but its words for the states are: "stopped" is "the container
    process has exited", which a hook would act on (clean up, say) while the process is
    being restored and will run; "creating", "the container is being created", is what
    the same hooks get at create, and what restore is doing."""
    hooks = config.get("hooks") or {}
    if not (hooks.get("prestart") or hooks.get("createRuntime")):
        return None

    def run(pid: int) -> None:
        from . import hooks as hookmod

        state = {"ociVersion": OCI_VERSION, "id": cid, "status": "creating", "pid": pid,
                 "bundle": bundle, "annotations": config.get("annotations") or {}}  # fmt: skip
        hookmod.run(hooks, "prestart", state)
        hookmod.run(hooks, "createRuntime", state)

    return run


_ACTION_SCRIPT = """#!/bin/sh
# ocibox-runtime restore ({pid}), for criu. At setup-namespaces: {setup}.
# At post-restore: fail (criu then undoes the restore) if the restorer is gone.
# Its pipes are reached through its /proc: they go with it (an open fails at once, a
# read ends), so this never waits for a restorer that is gone (killed, say).
# Shell builtins only: PATH is the caller's.
alive() {{
    {{ read -r stat < /proc/{pid}/stat; }} 2>/dev/null || return 1
    set -- ${{stat##*) }}
    [ "${{20}}" = {start} ] && [ -p /proc/{pid}/fd/{req} ] && [ -p /proc/{pid}/fd/{rep} ]
}}
case "$CRTOOLS_SCRIPT_ACTION" in
setup-namespaces) alive{handshake} ;;
post-restore) alive ;;
esac
"""
_HANDSHAKE = (' && echo "$CRTOOLS_INIT_PID" > /proc/{pid}/fd/{req} '
              '&& read -r answer < /proc/{pid}/fd/{rep} && [ "$answer" = ok ]')  # fmt: skip
ACTION_SCRIPT = "restore.action.sh"  # in the state directory (else in the work path)


class _ActionScript:
    """criu's --action-script for a restore: it ties criu to this process (the restorer)
    and runs the hooks when criu reaches setup-namespaces, as runc runs them from criu's
    notification of that name (the namespaces exist, the process is not restored yet).

    criu's command line has no notifications, only action scripts: ours writes the pid
    into one pipe of this process and waits for a line on another, which this process,
    waiting for criu, answers once the hooks have run ("ok") or failed. The pipes have
    no name: the script opens them as /proc/PID/fd/N, which fails at once when this
    process is gone (named fifos would block the script's open for ever then, and criu
    with it). At post-restore it checks that this process is still there: a restorer
    killed half-way has criu undo the restore (kill what it made), as runc's criu does
    when runc's end of its RPC socket closes; killed criu would leave half-restored
    tasks behind instead.
    """

    def __init__(self, work_path: str, state_dir: str, cid: str, run=None) -> None:
        # Both ends of both pipes are held here (close-on-exec: criu does not get them):
        # the requests' reader never sees an end, an answer waits for a late reader,
        # and once this process is gone nothing writes the answers any more.
        self.req, self._req_w = os.pipe()
        self._rep_r, self.rep = os.pipe()
        os.set_blocking(self.req, False)
        pid = os.getpid()
        found = proc_start_time(pid)
        fds = {"pid": pid, "req": self.req, "rep": self.rep}
        self.script = self._place(work_path, state_dir, cid, run is not None)
        if self.script:
            handshake = _HANDSHAKE.format(**fds) if run else ""
            setup = ("hand the init's pid to the restorer,\n# wait until it has run the "
                     "prestart and createRuntime hooks") if run else "the same check"  # fmt: skip
            text = _ACTION_SCRIPT.format(**fds, start=found[1] if found else -1,
                                         handshake=handshake, setup=setup)  # fmt: skip
            self._remove()
            with open(os.open(self.script, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700), "w") as f:
                f.write(text)
        self.run = run
        self.ran = False
        self.error: BaseException | None = None

    @staticmethod
    def _place(work_path: str, state_dir: str, cid: str, needed: bool) -> str | None:
        """Where the script goes: criu executes it, so not on a noexec mount (a work
        path on /tmp, say); the state directory first, which delete removes whole.
        None when neither will do and no hooks need it."""
        where = next((d for d in (state_dir, work_path)
                      if not os.statvfs(d).f_flag & os.ST_NOEXEC), None)  # fmt: skip
        if where is None:
            if not needed:
                return None
            raise OciboxError(f"restore runs the prestart and createRuntime hooks from a script "
                              f"criu executes, and both {work_path} (--work-path) and "
                              f"{state_dir} are on noexec mounts",
                              hint="give a --work-path on a mount that allows execution")  # fmt: skip
        return os.path.join(where, ACTION_SCRIPT if where == state_dir else f"restore-{cid}.action.sh")

    def args(self) -> list[str]:
        return ["--action-script", self.script] if self.script else []

    def answer(self) -> None:
        """criu's script has written the pid: run the hooks, say how it went."""
        data = os.read(self.req, 64).decode(errors="replace").strip()
        ok = False
        try:
            pid = int(data)
        except ValueError:
            self.error = OciboxError(f"criu's setup-namespaces gave no pid ({data!r})")
        else:
            try:  # a hook's error is its own, whatever its type (a ValueError too)
                self.ran = True
                self.run(pid)
                ok = True
            except Exception as e:
                self.error = e
        os.write(self.rep, b"ok\n" if ok else b"failed\n")

    def wait(self, child: int) -> int:
        """Wait for criu (``child``), answering its script meanwhile; its wait status."""
        import select

        while True:
            got, status = os.waitpid(child, os.WNOHANG)
            if got == child:
                return status
            if select.select([self.req], [], [], 0.05)[0]:
                self.answer()

    def close(self) -> None:
        for fd in (self.req, self._req_w, self._rep_r, self.rep):
            os.close(fd)
        self._remove()

    def _remove(self) -> None:
        try:
            if self.script:
                os.unlink(self.script)
        except FileNotFoundError:
            pass


def _run_criu_restore(c: Container, criu: str, config: dict, rootfs: str, opts: Options,
                      tty: str | None = None, console_socket: str | None = None,
                      hooks=None) -> tuple[int, dict, list, bool, int | None]:  # fmt: skip
    """criu restore, itself in the container's new cgroups: the restored init's pid, the
    cgroups' paths and those made, whether the hooks ran (at setup-namespaces), and the
    new terminal's master when no console socket took it."""
    pidfile = os.path.join(opts.work_path, f"restore-{c.id}.pid")
    try:
        os.unlink(pidfile)
    except FileNotFoundError:
        pass
    args = [criu, "restore", *opts.common_args(), "-o", RESTORE_LOG, "--root", rootfs,
            "--restore-detached", "--restore-sibling", "--pidfile", pidfile]  # fmt: skip
    for m in _bind_mounts(config):
        source = m.get("source") or ""
        if not os.path.exists(source):
            raise BundleError(f"mount {m['destination']}: its source {source} does not exist")
        args += ["--external", f"mnt[{m['destination']}]:{source}"]
    # Masked files are dumped as external mounts keyed /dev/null (by runc too), devices
    # that are bind mounts by their path: both come from the host's.
    linux = config.get("linux") or {}
    if linux.get("maskedPaths"):
        args += ["--external", "mnt[/dev/null]:/dev/null"]
    for d in linux.get("devices") or []:
        if d.get("path"):
            args += ["--external", f"mnt[{d['path']}]:{d['path']}"]
    if opts.empty_ns:
        args += ["--empty-ns", "net"]
    if opts.lsm_profile:
        args += ["--lsm-profile", opts.lsm_profile]
    if opts.lsm_mount_context:
        args += ["--lsm-mount-context", opts.lsm_mount_context]
    keep: list[int] = []
    netns = _joined_netns(config)
    if netns and not opts.empty_ns:
        fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        keep.append(fd)
        args += ["--inherit-fd", f"fd[{fd}]:{NET_KEY}"]
    args += _stdio_pipes(opts.image_path)
    master = sock = None
    if tty:
        # The slave goes to criu (closed here once it runs), the master to the console
        # socket once criu has restored the container (the pty buffers until then), or
        # back to restore, which copies between it and our stdio.
        master, slave, name, sock = _new_terminal(console_socket)
        keep.append(slave)
        args += ["--inherit-fd", f"fd[{slave}]:{tty}",
                 "--external", f"mnt[{CONSOLE_KEY}]:{name}"]  # fmt: skip
    channel = None
    try:
        channel = _ActionScript(opts.work_path, c.dir, c.id, hooks)
        args += channel.args()
        pid, paths, made = _criu_restore_in_cgroups(c, args, config, opts, keep, pidfile, channel)
        if sock is not None:
            _send_terminal(master, name, sock)
    except BaseException:
        if master is not None:
            os.close(master)
        raise
    finally:
        if sock is not None:
            sock.close()
        if channel is not None:
            channel.close()
    if sock is not None:
        os.close(master)
        master = None
    return pid, paths, made, bool(channel and channel.ran), master


def _criu_restore_in_cgroups(c: Container, args: list[str], config: dict, opts: Options,
                             keep: list[int], pidfile: str,
                             hooks: _ActionScript | None) -> tuple[int, dict, list]:  # fmt: skip
    """Run criu restore with ``args`` in the container's cgroups (made here); the restored
    init's pid, the cgroup paths and those made. The ``keep`` fds go to criu only."""
    cg = _cgroup_plan(c.id, config)
    debug(f"container {c.id}: {' '.join(args)}")
    # criu is forked first and waits for its command line: it goes into the new
    # cgroups (whatever it makes starts there), whose paths --cgroup-root names.
    err_path = os.path.join(opts.work_path, "restore.stderr")
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        _exec_criu_when_told(r, w, keep, err_path)
    os.close(r)
    for fd in keep:
        os.close(fd)
    paths: dict = {}
    made: list = []
    try:
        if cg is not None:
            paths, made = cg(child)
            args += cgroup_root_args(paths)
            # Recorded before criu runs: should this process be killed, delete --force
            # finds the cgroups, and what criu left in them.
            c.save({**(c.state or {}), "cgroupPaths": paths, "cgroupCreated": made})
        os.write(w, json.dumps(args).encode())
    except BaseException:
        os.kill(child, 9)
        os.waitpid(child, 0)
        if made:
            from .linux.cgroup_remove import remove

            remove(made)
        raise
    finally:
        os.close(w)
    status = hooks.wait(child) if hooks else os.waitpid(child, 0)[1]
    if status != 0:
        if made:
            from .linux.cgroup_remove import remove

            remove(made)
        if hooks and hooks.error:
            raise hooks.error  # a hook failed, and criu stopped the restore for it
        try:
            with open(err_path, errors="replace") as f:
                err = f.read()
        except OSError:
            err = ""
        raise _criu_failed(f"restore of container {c.id}: criu restore",
                           os.path.join(opts.work_path, RESTORE_LOG),
                           subprocess.CompletedProcess(args, status, "", err))  # fmt: skip
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError) as e:
        raise OciboxError(f"restore of container {c.id}: criu left no pid ({e})") from None
    return pid, paths, made


def _exec_criu_when_told(r: int, w: int, keep: list[int], err_path: str) -> None:
    """The forked child: read criu's command line from the parent, then become criu.

    No parent-death signal: criu killed half-way leaves half-restored tasks (criu's
    own, waiting for it for ever); the action script has criu undo the restore instead
    when the restorer is gone."""
    try:
        os.close(w)
        data = b""
        while chunk := os.read(r, 65536):
            data += chunk
        if not data:
            os._exit(125)  # the parent gave up
        args = json.loads(data)
        for fd in keep:
            os.set_inheritable(fd, True)
        fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(fd, 2)
        os.execv(args[0], args)
    except BaseException:
        pass
    os._exit(127)


def _stdio_pipes(image_path: str) -> list[str]:
    """--inherit-fd for each pipe the init had as stdio: ours take their place (runc's way)."""
    try:
        with open(os.path.join(image_path, DESCRIPTORS), "rb") as f:
            fds = json.loads(f.read())
    except (OSError, ValueError):
        return []
    out = []
    for i, what in enumerate(fds[:3] if isinstance(fds, list) else []):
        if isinstance(what, str) and what.startswith("pipe:"):
            out += ["--inherit-fd", f"fd[{i}]:{what}"]
    return out


def _cgroup_plan(cid: str, config: dict):
    """A function that makes the container's cgroups and moves criu (by pid) into them;
    None when rootless with none in reach. It returns the paths and those made. With
    neither linux.resources nor cgroupsPath the place is create's (and runc's restore's):
    <the runtime's own cgroup>/<id>, so that pause, ps, kill --all, events and update
    find the restored container as they find a created one."""
    linux = config.get("linux") or {}
    resources = linux.get("resources")
    cgroups_path = linux.get("cgroupsPath")
    from . import rootless
    from .linux import cgroups

    is_rootless = rootless.rootless()
    if is_rootless and not rootless.use_cgroups(cid, cgroups_path, resources or {}):
        return None

    def make(pid: int) -> tuple[dict, list]:
        return cgroups.apply(cid, cgroups_path, resources or {}, pid, rootless=is_rootless)

    return make


def cgroup_root_args(paths: dict[str, str]) -> list[str]:
    """--cgroup-root for each hierarchy: the container's cgroup, relative to the mount."""
    from .linux.cgroups import hierarchies

    mounts = hierarchies()
    out = []
    for ctrl, path in paths.items():
        mp = mounts.get(ctrl)
        if not mp:
            continue
        rel = "/" + os.path.relpath(path, mp).lstrip("./")
        out += ["--cgroup-root", rel if ctrl == "unified" else f"{ctrl}:{rel}"]
    return out

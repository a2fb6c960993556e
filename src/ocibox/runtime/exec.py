"""exec: run another process inside a created or running container.

    runtime --fork--> joiner (enters the cgroups and namespaces of the init)
                       --fork--> process (in the container's pid namespace) --exec-->

The joiner reports the process's host pid; the process reports a failure
before exec over a close-on-exec pipe, so an empty read means the exec
happened. In the foreground the runtime is a child subreaper, waits for the
process and returns its exit code.
"""

from __future__ import annotations

import os

from ..errors import BundleError, NotImplementedYet, OciboxError, UsageError
from . import jsonlite as json
from . import process as proc
from .container import (
    CREATED,
    PAUSED,
    RUNNING,
    Container,
    ContainerStateError,
    debug,
    write_atomic,
)
from .linux import capabilities as caps
from .linux import namespaces as nsmod
from .linux import rlimits
from .linux import syscalls as sc

# Namespaces to enter, user first (it governs the rest), mount last.
_ORDER = ("user", "cgroup", "ipc", "uts", "network", "pid", "time", "mount")
_PROC_NAMES = {"network": "net", "mount": "mnt", "cgroup": "cgroup", "user": "user",
               "ipc": "ipc", "uts": "uts", "pid": "pid", "time": "time"}  # fmt: skip


def build_process(container: Container, *, process_file: str | None, args: list[str],
                  env: list[str], cwd: str | None, user: str | None, caps_add: list[str],
                  no_new_privs: bool, additional_gids: list[str],
                  tty: bool = False) -> dict:  # fmt: skip
    """The process to run: from --process, or the container's own with the flags applied."""
    if process_file:
        try:
            with open(process_file, "rb") as f:
                p = json.loads(f.read())
        except (OSError, ValueError) as e:
            raise UsageError(f"--process {process_file}: {e}") from None
        if not isinstance(p, dict) or not p.get("args"):
            raise UsageError(f"--process {process_file}: a process object with args is needed")
        return p
    if not args:
        raise UsageError("exec needs a command, or --process FILE")
    base = json.loads(json.dumps(container.config().get("process") or {}))
    base["args"] = args
    base["terminal"] = tty
    merged = {e.partition("=")[0]: e for e in base.get("env") or []}
    for e in env:
        merged[e.partition("=")[0]] = e
    base["env"] = list(merged.values())
    if cwd:
        base["cwd"] = cwd
    if user:
        uid, _, gid = user.partition(":")
        if not uid.isdigit() or (gid and not gid.isdigit()):
            raise UsageError(f"--user {user!r}: use numeric uid[:gid]")
        base["user"] = {"uid": int(uid), "gid": int(gid or 0)}
    if additional_gids:
        if not all(g.isdigit() for g in additional_gids):
            raise UsageError("--additional-gids takes numeric group ids")
        base.setdefault("user", {})["additionalGids"] = [int(g) for g in additional_gids]
    if caps_add:
        sets = base.setdefault("capabilities", {})
        for which in caps.SETS:
            sets[which] = list(dict.fromkeys([*(sets.get(which) or []), *caps_add]))
    if no_new_privs:
        base["noNewPrivileges"] = True
    return base


def exec_process(container: Container, process: dict, *, detach: bool = False,
                 pid_file: str | None = None, preserve_fds: int = 0, warn=None,
                 console_socket: str | None = None, pidfd_socket: str | None = None,
                 cgroups: list[str] = ()) -> int:  # fmt: skip
    status = container.status()
    if status == PAUSED:
        raise ContainerStateError(f"cannot exec in container {container.id}: it is paused")
    if status not in (CREATED, RUNNING):
        raise ContainerStateError(f"cannot exec in container {container.id}: it is {status}")
    cgroup_paths = sub_cgroups((container.state or {}).get("cgroupPaths") or {}, cgroups)
    if cgroup_paths:
        from .create import warm_cgroup_writes

        warm_cgroup_writes()  # the joiner's move then shares its grace period
    sock = pidfd_to = None
    try:
        if process.get("terminal"):
            if not console_socket:
                raise NotImplementedYet("exec with a terminal needs --console-socket")
            from .linux import console

            sock = console.connect(console_socket)
        if pidfd_socket:
            from .linux import pidfd

            pidfd_to = pidfd.connect(pidfd_socket)
        target = _start(container, process, cgroup_paths, sock, detach=detach,
                        preserve_fds=preserve_fds, warn=warn)  # fmt: skip
        if pid_file:
            write_atomic(os.path.abspath(pid_file), str(target).encode())
        if pidfd_to is not None:
            pidfd.send(pidfd_to, target)
    finally:
        # on an error too, for a caller that goes on: the sockets' peers see their end
        for s in (sock, pidfd_to):
            if s is not None:
                s.close()
    if detach:
        return 0
    from .create import wait

    return wait(target)


def _start(container: Container, process: dict, cgroup_paths: dict[str, str], sock, *,
           detach: bool, preserve_fds: int, warn) -> int:  # fmt: skip
    """Fork the joiner, which forks the process; the process's host pid once it runs."""
    rlimits.check(process.get("rlimits") or [])
    if "scheduler" in process:
        proc.check_scheduler(process["scheduler"])
    if "ioPriority" in process:
        proc.check_io_priority(process["ioPriority"])
    cap_sets = caps.parse(process.get("capabilities"), warn)
    init = container.pid
    profile = (container.config().get("linux") or {}).get("seccomp")
    sfilter = None
    if profile:
        from .linux import seccomp

        # before any fork: libseccomp is a host library
        sfilter = seccomp.Filter(profile, container.oci_state())
    ns_fds = _open_namespaces(init)
    if not detach:
        sc.prctl(proc.PR_SET_CHILD_SUBREAPER, 1)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            _joiner(cgroup_paths, ns_fds, process, cap_sets, preserve_fds, w, sock, sfilter)
            code = 0
        except BaseException as e:  # noqa: B036 - a forked child must never return
            proc._report(w, e)
        finally:
            os._exit(code)
    os.close(w)
    if sfilter is not None:
        sfilter.close()  # the child's copy of a listener connection is the one that sends
    if sock is not None:
        sock.close()
    for _, fd in ns_fds:
        os.close(fd)
    target, error = 0, None
    for line in proc._lines(r):
        verb, _, arg = line.partition(" ")
        if verb == "pid":
            target = int(arg)
        elif verb == "error":
            error = arg.replace("\\n", "\n")
    os.close(r)
    proc._reap(pid)
    if error:
        debug(f"exec in container {container.id} failed: {error}")
        if target and not detach:
            proc._reap(target)
        # runc's words for what failed once the process was forked (its parent.start()):
        # the shim passes them on, and kubectl shows them for an exec that cannot run
        raise BundleError(f"unable to start container process: {error}")
    debug(f"exec in container {container.id}: process {target} runs {process['args'][0]}")
    if not target:
        raise OciboxError(f"exec in container {container.id}: the process did not start")
    return target


def sub_cgroups(paths: dict[str, str], specs: list[str]) -> dict[str, str]:
    """exec --cgroup (runc 1.1's): the process joins sub-cgroups of the container's.

    Each spec is ``path`` (every hierarchy; then the only spec, as runc's) or
    ``controller[,controller...]:path`` (cgroup v1 only; repeatable, one path per
    controller). The sub-cgroups must exist, inside the container's: nothing is
    made here.
    """
    out = dict(paths)
    for spec in specs:
        names, colon, sub = spec.partition(":")
        if ":" in sub:
            raise UsageError(f"exec --cgroup {spec}: use [CONTROLLER[,CONTROLLER...]:]PATH")
        if not colon:
            sub = spec
            if len(specs) > 1:
                raise UsageError(f"exec --cgroup {spec}: a path without controllers is for "
                                 "every hierarchy, and then the only --cgroup",
                                 hint="name the controllers (memory,pids:PATH) of each")  # fmt: skip
        elif "" in names.split(","):
            raise UsageError(f"exec --cgroup {spec}: an empty controller name before the ':'")
        parts = [p for p in sub.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise UsageError(f"exec --cgroup {spec}: the path must stay inside the container's cgroup")
        if not paths:
            raise ContainerStateError(f"exec --cgroup {spec}: the container has no cgroups")
        if not colon:
            wanted = list(paths)
        elif set(paths) == {"unified"}:
            raise UsageError(f"exec --cgroup {spec}: controllers can only be named on cgroup v1")
        else:
            wanted = names.split(",")
            unknown = [c for c in wanted if c not in paths]
            if unknown:
                raise UsageError(f"exec --cgroup {spec}: no such controller in the container's "
                                 f"cgroups: {', '.join(unknown)}")  # fmt: skip
        for controller in wanted:
            target = os.path.join(paths[controller], *parts)
            if not os.path.isdir(target):
                raise ContainerStateError(f"exec --cgroup {spec}: {target} does not exist")
            out[controller] = target
    return out


def _open_namespaces(init: int) -> list[tuple[str, int]]:
    """Open the init's namespaces that differ from ours, before anything is entered."""
    fds = []
    for kind in _ORDER:
        name = _PROC_NAMES[kind]
        try:
            theirs = os.readlink(f"/proc/{init}/ns/{name}")
        except FileNotFoundError:
            continue  # a kernel without this namespace type
        except OSError as e:
            raise OciboxError(
                f"cannot read the container's {kind} namespace: {e.strerror}"
            ) from None
        if theirs == os.readlink(f"/proc/self/ns/{name}"):
            continue
        fds.append((kind, os.open(f"/proc/{init}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)))
    return fds


def _cpus(text: str) -> set[int]:
    """A cpu list such as "0-3,6"."""
    out: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def _joiner(cgroup_paths, ns_fds, process, cap_sets, preserve_fds, w, sock, sfilter) -> None:
    affinity = process.get("execCPUAffinity") or {}
    if affinity.get("initial"):
        os.sched_setaffinity(0, _cpus(affinity["initial"]))  # before the cgroup move
    for path in dict.fromkeys(cgroup_paths.values()):
        try:
            with open(os.path.join(path, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        except OSError as e:
            raise OciboxError(f"joining cgroup {path}: {e.strerror}") from None
    nsmod.join(ns_fds)
    if any(kind == "user" for kind, _ in ns_fds):
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    pid = os.fork()
    if pid == 0:
        try:
            if sock is not None:
                from .linux import console

                os.setsid()
                console.setup(sock, process.get("consoleSize"), bind_console=False)
            if affinity.get("final"):
                os.sched_setaffinity(0, _cpus(affinity["final"]))
            exe, args, env = proc.apply_process(process, cap_sets, preserve_fds, sfilter)
            os.execve(exe, args, env)
        except BaseException as e:  # noqa: B036 - see above
            proc._report(w, e)
        finally:
            os._exit(127)
    os.write(w, f"pid {pid}\n".encode())

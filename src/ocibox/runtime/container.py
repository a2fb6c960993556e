"""A container's state directory and the spec's state machine.

Each container lives in ``<root>/<id>/``:

- ``state.json``: what ``create`` recorded (init pid and its start time, bundle,
  annotations, creation time), written atomically once the init is ready;
- ``exec.fifo``: the init blocks opening it for writing until ``start`` opens it
  for reading; ``start`` removes it, so its absence is the "started" marker.

The status is never stored: like runc, it is derived each time from the init
process (alive, and the same process, by its start time) and the marker:

    no state.json yet           -> creating
    init alive, fifo present    -> created
    init alive, fifo gone       -> running
    init dead (or a zombie)     -> stopped

This module stays import-light, for ``state``, ``start``, ``kill`` and
``delete``: a start-up of the interpreter costs ~6 ms, and these commands add
as little as they can to it. They import no ``os`` (~0.8 ms: os builds
os.environ as a MutableMapping, which loads _collections_abc): the ``posix``
module that os wraps (and re-exports) is used directly, with a few small path
helpers. ``ocibox.errors`` (~0.2 ms) is imported where an error is raised,
``fcntl`` where a lock is taken, and JSON goes through ``jsonlite``.
"""

import posix
import time

from . import jsonlite as json

DEFAULT_ROOT = "/run/ocibox-runtime"
# The runtime-spec version the state complies with; the same as spec.OCI_VERSION
# (checked by a test), kept here so that create need not import typing.
OCI_VERSION = "1.2.0"
STATE_FILE = "state.json"
FIFO = "exec.fifo"
CONFIG_COPY = "config.json"

CREATING, CREATED, RUNNING, STOPPED = "creating", "created", "running", "stopped"
PAUSED = "paused"  # a runtime-defined status, as the spec allows (runc's name)


# --debug: where the steps worth logging go (the CLI sets it); None when off,
# so that logging costs a global lookup and nothing more.
_debug_sink = None


def set_debug(sink) -> None:
    """Send debug messages to ``sink(msg)`` (None: drop them)."""
    global _debug_sink
    _debug_sink = sink


def debugging() -> bool:
    return _debug_sink is not None


def debug(msg: str, at: int | None = None) -> None:
    """Log one step at debug level, if --debug asked for it (``at``: when, in time_ns)."""
    if _debug_sink is not None:
        _debug_sink(msg, at)


def __getattr__(name: str):
    # ContainerStateError lives in ocibox.errors now; importers from here still get it.
    if name == "ContainerStateError":
        from ..errors import ContainerStateError

        return ContainerStateError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _exists(path: str) -> bool:
    try:
        posix.stat(path)
    except (OSError, ValueError):
        return False
    return True


def _isdir(path: str) -> bool:
    try:
        return posix.stat(path).st_mode & 0o170000 == 0o040000  # S_ISDIR
    except (OSError, ValueError):
        return False


def _join(directory: str, name: str) -> str:
    """os.path.join for a relative ``name``."""
    return f"{directory}{name}" if not directory or directory.endswith("/") else f"{directory}/{name}"


def validate_id(cid: str) -> None:
    ok = cid not in ("", ".", "..") and all(c.isalnum() or c in "_+-." for c in cid)
    if not ok or not cid.isascii():
        from ..errors import UsageError

        raise UsageError(f"invalid container id {cid!r}", hint="use letters, digits, _ + - and .")


def now_rfc3339(ns: int | None = None) -> str:
    """``ns`` (time.time_ns(), default now) in RFC 3339, UTC, to the nanosecond."""
    ns = time.time_ns() if ns is None else ns
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"


def proc_start_time(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of ``pid``, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    return fields[0].decode(), int(fields[19])


def write_atomic(path: str, data: bytes) -> None:
    # /run is a tmpfs: a rename is enough, and tempfile would cost start-up time.
    tmp = f"{path}.{posix.getpid()}.tmp"
    fd = posix.open(tmp, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC | posix.O_CLOEXEC, 0o600)
    try:
        posix.write(fd, data)
    finally:
        posix.close(fd)
    posix.replace(tmp, path)


class Container:
    def __init__(self, root: str, cid: str, state: dict | None = None) -> None:
        self.root = root
        self.id = cid
        self.dir = _join(root, cid)
        self.state = state  # None while creating
        self._held = False  # whether this object holds the directory's lock

    # --- loading -------------------------------------------------------------

    @classmethod
    def load(cls, root: str, cid: str) -> "Container":
        validate_id(cid)
        path = _join(root, cid)
        try:
            with open(_join(path, STATE_FILE), "rb") as f:
                state = json.loads(f.read())
        except FileNotFoundError:
            if not _isdir(path):
                from ..errors import NotFound

                raise NotFound(f"container {cid} does not exist") from None
            state = None
        except (OSError, ValueError) as e:
            from ..errors import OciboxError

            raise OciboxError(f"container {cid}: unreadable state: {e}") from None
        return cls(root, cid, state)

    @classmethod
    def all(cls, root: str) -> "list[Container]":
        from ..errors import NotFound, UsageError

        try:
            names = sorted(posix.listdir(root))
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            try:
                out.append(cls.load(root, name))
            except (NotFound, UsageError):
                continue
        return out

    # --- status --------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self.state["pid"] if self.state else 0

    def init_alive(self) -> bool:
        if not self.state:
            return False
        found = proc_start_time(self.pid)
        if found is None or found[0] in ("Z", "X"):
            return False
        return found[1] == self.state.get("pidStartTime", found[1])

    def status(self) -> str:
        if self.state is None or not self.state.get("pid", 1):
            # create holds the directory's lock until the state is written (restore
            # until it has a pid): a free lock (or one we hold) and no state (or no
            # pid) means create or restore died half-way.
            if self._held:
                return STOPPED
            fd = self._lock(blocking=False, shared=True)
            if fd is None:
                return CREATING
            posix.close(fd)
            return STOPPED
        if not self.init_alive():
            return STOPPED
        if self._freezer_state() == "FROZEN":
            return PAUSED
        if _exists(_join(self.dir, FIFO)):
            return CREATED
        return RUNNING

    def _freezer_state(self) -> str:
        paths = (self.state or {}).get("cgroupPaths") or {}
        path = paths.get("freezer")
        if not path and paths.get("unified"):
            # cgroup v2 (cgroup.freeze): read here, as state must not import linux.cgroups
            try:
                with open(_join(paths["unified"], "cgroup.events")) as f:
                    return "FROZEN" if "frozen 1" in f.read().split("\n") else "THAWED"
            except OSError:
                return ""
        if not path:
            return ""
        try:
            with open(_join(path, "freezer.state")) as f:
                return f.read().strip()
        except OSError:
            return ""

    def oci_state(self) -> dict:
        """The spec's state object (with runc's extra fields, which containerd reads)."""
        status = self.status()
        s = self.state or {}
        out = {
            "ociVersion": s.get("ociVersion", ""),
            "id": self.id,
            "pid": self.pid if status in (CREATED, RUNNING, PAUSED) else 0,
            "status": status,
            "bundle": s.get("bundle", ""),
            "rootfs": s.get("rootfs", ""),
            "created": s.get("created", ""),
            "owner": "",
        }
        if s.get("annotations"):
            out["annotations"] = s["annotations"]
        return out

    # --- locking --------------------------------------------------------------

    def _lock(self, blocking: bool = True, shared: bool = False) -> int | None:
        """An flock on the state directory; None if not blocking and it is taken."""
        import fcntl

        try:
            fd = posix.open(self.dir, posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC)
        except FileNotFoundError:
            from ..errors import NotFound

            raise NotFound(f"container {self.id} does not exist") from None
        op = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB)
        try:
            fcntl.flock(fd, op)
        except BlockingIOError:
            posix.close(fd)
            return None
        return fd

    def _exclusive(self, action, *args):
        """Run ``action`` holding the container's lock, so that two operations never interleave."""
        fd = self._lock()
        self._held = True
        try:
            if not _isdir(self.dir):
                from ..errors import NotFound

                raise NotFound(f"container {self.id} does not exist")
            if self.state is None:
                fresh = Container.load(self.root, self.id)
                self.state = fresh.state
            return action(*args)
        finally:
            self._held = False
            posix.close(fd)

    # --- lifecycle -------------------------------------------------------------

    def start(self, timeout: float | None = None) -> None:
        """Let the created container's init exec the user program."""
        self._exclusive(self._start, timeout)

    def _start(self, timeout: float | None) -> None:
        status = self.status()
        if status != CREATED:
            from ..errors import ContainerStateError

            raise ContainerStateError(f"cannot start container {self.id}: it is {status}",
                                      hint="only a created container can be started")  # fmt: skip
        fifo = _join(self.dir, FIFO)
        try:
            fd = posix.open(fifo, posix.O_RDONLY | posix.O_NONBLOCK | posix.O_CLOEXEC)
        except FileNotFoundError:
            from ..errors import ContainerStateError

            raise ContainerStateError(
                f"cannot start container {self.id}: already started"
            ) from None
        debug(f"container {self.id}: opened exec.fifo, letting init {self.pid} exec")
        try:
            self._await_release(fd, timeout)
        finally:
            posix.close(fd)
        try:
            posix.unlink(fifo)
        except FileNotFoundError:
            pass
        debug(f"container {self.id}: started")
        if self.state and self.state.get("hooks"):
            self._hooks("poststart", RUNNING)

    def _hooks(self, kind: str, status: str, config: dict | None = None, warn=None) -> None:
        from .hooks import run_warn

        config = config if config is not None else self.config()
        state = {**self.oci_state(), "status": status}
        run_warn(config.get("hooks"), kind, state, warn or _stderr_warning)

    def _await_release(self, fd: int, timeout: float | None) -> None:
        import select

        poller = select.poll()
        poller.register(fd, select.POLLIN)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if poller.poll(50) and self._released(fd):
                return
            if not self.init_alive():
                if self._released(fd):  # it may have answered just before exiting
                    return
                from ..errors import ContainerStateError

                raise ContainerStateError(f"cannot start container {self.id}: its init exited")
            if not _exists(_join(self.dir, FIFO)):
                # Another start won the race and has already let the init go.
                from ..errors import ContainerStateError

                raise ContainerStateError(f"cannot start container {self.id}: already started")
            if deadline is not None and time.monotonic() > deadline:
                from ..errors import OciboxError

                raise OciboxError(f"container {self.id}: timed out waiting for its init")
            # A writer that has not yet opened its end makes poll report POLLHUP
            # at once; a short sleep keeps that from spinning.
            time.sleep(0.001)

    def _released(self, fd: int) -> bool:
        """Whether the init answered "0" on the fifo; an "E" answer is its error."""
        try:
            data = posix.read(fd, 4096)
        except BlockingIOError:
            return False
        if data[:1] == b"E":  # a startContainer hook failed; the init has exited
            msg = data[1:].decode(errors="replace")
            from ..errors import ContainerStateError

            raise ContainerStateError(f"cannot start container {self.id}: {msg}")
        return data[:1] == b"0"

    def kill(self, sig: int, all_processes: bool = False) -> None:
        status = self.status()
        if status == STOPPED and all_processes:
            # As runc 1.1: --all signals whatever is left in the cgroup (often nothing) and
            # succeeds. containerd's shim sends it when an exited task is deleted (CRI's
            # handling of every container's exit), and an error there left the pod's
            # container RUNNING in kubelet's eyes. The init's pid may be reused: not used.
            pids = _cgroup_pids(self.state.get("cgroupPaths") or {}) if self.state else []
        elif status not in (CREATED, RUNNING, PAUSED):
            from ..errors import ContainerStateError

            # "container not running" is runc's words, which containerd's shim matches
            # to tell an exited process from a failed kill.
            raise ContainerStateError(
                f"cannot kill container {self.id}: container not running (it is {status})",
                hint="only a created or running container takes signals")  # fmt: skip
        else:
            pids = self.processes() if all_processes else [self.pid]
        for pid in pids:
            debug(f"container {self.id}: sending signal {sig} to process {pid}")
            try:
                posix.kill(pid, sig)
            except ProcessLookupError:
                pass
        if sig == 9 and status == PAUSED:
            # As runc: frozen tasks die only once thawed (podman kill of a paused container).
            self._freeze("THAWED")

    def processes(self) -> list[int]:
        """Host pids of every process in the container (its pid namespace, or cgroup)."""
        pids = _cgroup_pids(self.state.get("cgroupPaths") or {}) if self.state else []
        if pids:
            return pids
        try:
            ns = posix.readlink(f"/proc/{self.pid}/ns/pid")
        except OSError:
            return []
        if ns == posix.readlink("/proc/self/ns/pid"):
            return [self.pid]  # shares the host's pid namespace: only what we know
        out = []
        for name in posix.listdir("/proc"):
            if name.isdigit():
                try:
                    if posix.readlink(f"/proc/{name}/ns/pid") == ns:
                        out.append(int(name))
                except OSError:
                    continue
        return out

    def pause(self) -> None:
        self._exclusive(self._pause)

    def _pause(self) -> None:
        status = self.status()
        if status not in (CREATED, RUNNING):
            from ..errors import ContainerStateError

            raise ContainerStateError(f"cannot pause container {self.id}: it is {status}")
        self._freeze("FROZEN")

    def resume(self) -> None:
        self._exclusive(self._resume)

    def _resume(self) -> None:
        status = self.status()
        if status != PAUSED:
            from ..errors import ContainerStateError

            raise ContainerStateError(f"cannot resume container {self.id}: it is {status}")
        self._freeze("THAWED")

    def _freeze(self, want: str) -> None:
        from .linux import cgroups

        cgroups.freeze((self.state or {}).get("cgroupPaths") or {}, want == "FROZEN", self.id)

    def delete(self, force: bool = False) -> None:
        self._exclusive(self._delete, force)

    def _delete(self, force: bool) -> None:
        status = self.status()
        if status != STOPPED:
            if not force:
                from ..errors import ContainerStateError

                raise ContainerStateError(
                    f"cannot delete container {self.id}: it is {status}",
                    hint="stop it first, or use delete --force",
                )
            if status in (CREATED, RUNNING, PAUSED):
                for pid in self.processes() or [self.pid]:
                    debug(f"container {self.id}: {status}, delete --force kills process {pid}")
                    try:
                        posix.kill(pid, 9)
                    except ProcessLookupError:
                        pass
                if status == PAUSED:
                    self._freeze("THAWED")  # frozen tasks die only once thawed
                self._wait_stopped(5.0)
        elif force and self.state and not self.state.get("pid", 1):
            # A restore whose runtime was killed: what runs in the cgroups it made (the
            # restored process, had criu finished after that), which keeps them busy.
            made = set(self.state.get("cgroupCreated") or ())
            paths = {k: v for k, v in (self.state.get("cgroupPaths") or {}).items() if v in made}
            for pid in _cgroup_pids(paths):
                debug(f"container {self.id}: delete --force kills process {pid}, left in its cgroup")
                try:
                    posix.kill(pid, 9)
                except ProcessLookupError:
                    pass
        config = self.config() if self.state and self.state.get("hooks") else None
        back = (self.state or {}).get("netDevices")
        debug(f"container {self.id}: destroying (cgroups, state directory)")
        self.destroy()
        if config and (config.get("hooks") or {}).get("poststop"):
            self._hooks("poststop", STOPPED, config)
        if back:  # interfaces given to a joined network namespace go back to the host
            from .linux import netdev

            netdev.restore(back["devices"], back["path"], back.get("addresses") or {})

    def _wait_stopped(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.init_alive():
            if time.monotonic() > deadline:
                from ..errors import OciboxError

                raise OciboxError(f"container {self.id}: init {self.pid} did not die after SIGKILL")
            time.sleep(0.002)

    def destroy(self) -> None:
        """Remove everything create made on the host: cgroups, then the state directory."""
        if self.state and self.state.get("systemdUnit"):
            from .linux.cgroups import systemd

            debug(f"container {self.id}: stopping systemd unit {self.state['systemdUnit']}")
            systemd.stop_unit(self.state["systemdUnit"])
        if self.state and self.state.get("cgroupCreated"):
            from .linux.cgroup_remove import remove

            debug(f"container {self.id}: removing cgroups {' '.join(self.state['cgroupCreated'])}")
            remove(self.state["cgroupCreated"], own=list((self.state.get("cgroupPaths") or {}).values()))
        for name in (STATE_FILE, FIFO, CONFIG_COPY):
            try:
                posix.unlink(_join(self.dir, name))
            except FileNotFoundError:
                pass
        for name in posix.listdir(self.dir) if _isdir(self.dir) else []:
            posix.unlink(_join(self.dir, name))
        try:
            posix.rmdir(self.dir)
        except FileNotFoundError:
            pass

    # --- creation ------------------------------------------------------------

    @classmethod
    def reserve(cls, root: str, cid: str) -> "Container":
        """Claim ``cid``: its state directory is made here, exclusively."""
        import errno
        import os

        from ..errors import AlreadyExists, OciboxError

        validate_id(cid)
        os.makedirs(root, 0o700, exist_ok=True)
        path = _join(root, cid)
        try:
            posix.mkdir(path, 0o711)
        except FileExistsError:
            from ..errors import AlreadyExists

            raise AlreadyExists(f"container {cid} already exists") from None
        except OSError as e:
            if e.errno == errno.EACCES:
                from ..errors import OciboxError

                raise OciboxError(f"cannot create {path}: permission denied") from None
            raise
        c = cls(root, cid)
        # Held until create has written the state (or cleaned up): meanwhile the
        # container is "creating", and other operations wait.
        c.create_lock = c._lock()
        return c

    def release(self) -> None:
        """Give up the lock reserve took."""
        fd = getattr(self, "create_lock", None)
        if fd is not None:
            posix.close(fd)
            self.create_lock = None

    def config(self) -> dict:
        """The config.json the container was created from (a copy kept in its state dir)."""
        try:
            with open(_join(self.dir, CONFIG_COPY), "rb") as f:
                return json.loads(f.read())
        except (OSError, ValueError):
            return {}

    def save(self, state: dict) -> None:
        self.state = state
        write_atomic(_join(self.dir, STATE_FILE), json.dumps(state).encode())


def _stderr_warning(msg: str) -> None:
    import sys

    sys.stderr.write(f"ocibox-runtime: warning: {msg}\n")


def _cgroup_pids(paths: dict[str, str]) -> list[int]:
    """The pids in the container's cgroup and in its sub-cgroups (exec --cgroup's, or what
    its processes made), read in the first hierarchy that can be, as runc's GetAllPids."""
    for path in paths.values():
        try:
            return _tree_pids(path)
        except OSError:
            continue
    return []


def _tree_pids(path: str) -> list[int]:
    with open(_join(path, "cgroup.procs")) as f:
        pids = [int(x) for x in f.read().split()]
    for entry in posix.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            try:
                pids += _tree_pids(entry.path)
            except FileNotFoundError:  # removed meanwhile
                continue
    return pids

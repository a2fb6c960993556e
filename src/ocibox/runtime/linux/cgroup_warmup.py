"""The first write to a cgroup.procs, paid early and in a thread (create and exec use it).

On these kernels the first write to any cgroup.procs waits for an RCU grace
period (~10-20 ms: the cgroup threadgroup rwsem switches its readers to the
slow path); writes that follow within a grace period are free. A thread
moves this process into the cgroup it is already in (a no-op move, with the
same wait) while the main thread goes on with its imports, the config and the
fork; the container's own moves then wait for the same grace period, or none,
instead of a fresh one. Harmless where it buys nothing.

That wait is most of create's time, so it starts as early as it can: the
command line starts it for create and run before it imports anything else,
which is why this module uses nothing but ``posix`` (os alone costs ~0.8 ms).
"""

import posix

_started = False


def warm_up() -> None:
    """Start the thread's write (once per process)."""
    global _started
    if _started:
        return
    _started = True
    import _thread

    fd = _own_cgroup_procs()
    if fd < 0:
        return
    about_to_write = _thread.allocate_lock()
    about_to_write.acquire()
    _thread.start_new_thread(_write_self, (fd, about_to_write))
    # A new thread needs the GIL to start, and the main thread, busy importing,
    # would give it up only at the next switch interval (5 ms): wait until the
    # thread is about to write (it keeps the GIL until the write releases it).
    about_to_write.acquire()


def _write_self(fd: int, about_to_write) -> None:
    about_to_write.release()
    try:
        posix.write(fd, b"0")  # "0": the writer's own process
    except OSError:
        pass
    finally:
        posix.close(fd)


def _own_cgroup_procs() -> int:
    """The cgroup.procs of one of this process's own cgroups, open for writing (-1: none)."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return -1
    for line in lines:
        _, controllers, path = line.split(":", 2)
        path = path.rstrip("/")
        if not controllers:  # cgroup v2: hybrid, then unified
            dirs = (f"/sys/fs/cgroup/unified{path}", f"/sys/fs/cgroup{path}")
        elif "," in controllers or controllers.startswith("name="):
            continue  # where such a hierarchy is mounted is not a fixed name
        else:
            dirs = (f"/sys/fs/cgroup/{controllers}{path}",)
        for d in dirs:
            try:
                return posix.open(f"{d}/cgroup.procs", posix.O_WRONLY | posix.O_CLOEXEC)
            except OSError:
                continue
    return -1

"""Removing a container's cgroup directories, with nothing but ``posix``.

``delete`` does this for every container, so it lives apart from the cgroups
package: importing that (its __init__, fs.py, os, ocibox.errors) would cost
``delete`` ~1.5 ms, a sixth of the command.
"""

import errno
import posix
import time


def remove(dirs: list[str]) -> None:
    """Remove cgroup directories, deepest first (they must be empty of processes).

    The deepest (the container's own) is tried for a while: its killed processes
    may take a moment to leave. A parent made along the way stays, at once, while
    another cgroup (another container's) is still under it.
    """
    for i, path in enumerate(sorted(set(dirs), key=len, reverse=True)):
        for _ in range(100 if i == 0 else 1):
            try:
                posix.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno != errno.EBUSY:
                    break
                time.sleep(0.005)

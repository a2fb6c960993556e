"""Removing a container's cgroup directories, with nothing but ``posix``.

``delete`` does this for every container, so it lives apart from the cgroups
package: importing that (its __init__, fs.py, os, ocibox.errors) would cost
``delete`` ~1.5 ms, a sixth of the command.
"""

import errno
import posix
import time


def remove(dirs: list[str], own: list[str] = ()) -> None:
    """Remove cgroup directories, deepest first (they must be empty of processes).

    The deepest (the container's own) is tried for a while: its killed processes
    may take a moment to leave. A parent made along the way stays, at once, while
    another cgroup (another container's) is still under it. The sub-cgroups of
    the ``own`` directories (the container's, which its processes or an exec
    --cgroup user made) go first, at each try, as runc removes them: a cgroup with
    children cannot be removed, and a killed process may be leaving one of them.
    """
    own = {path for path in own if path in dirs}
    for i, path in enumerate(sorted(set(dirs), key=len, reverse=True)):
        for _ in range(100 if i == 0 else 1):
            if path in own:
                _remove_children(path)
            try:
                posix.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno != errno.EBUSY:
                    break
                time.sleep(0.005)


def _remove_children(path: str) -> None:
    try:
        entries = [e.path for e in posix.scandir(path) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return
    for child in entries:
        _remove_children(child)
        try:
            posix.rmdir(child)
        except OSError:
            pass  # busy: the parent's removal fails, and the next try comes back here

"""Default OCI runtime configurations (config.json), as ``runc spec`` writes them.

Kept import-light on purpose: ``ocibox-runtime spec`` and the image converter
both start from these defaults, and the runtime's start-up path imports this.
Every call returns fresh objects, so callers may edit the result freely.
"""

from __future__ import annotations

import os
from typing import Any

OCI_VERSION = "1.2.0"
DEFAULT_HOSTNAME = "ocibox"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# The capability set runc gives a default container.
DEFAULT_CAPABILITIES = ("CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE")

MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

_NOSUID_NOEXEC_NODEV = ["nosuid", "noexec", "nodev"]


def _mounts(rootless: bool) -> list[dict[str, Any]]:
    devpts_options = ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]
    if not rootless:
        # gid 5 is "tty" on the usual distributions; a user namespace that maps
        # one id cannot map it, so the rootless variant leaves it out.
        devpts_options.append("gid=5")
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": devpts_options,
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": [*_NOSUID_NOEXEC_NODEV, "mode=1777", "size=65536k"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": list(_NOSUID_NOEXEC_NODEV),
        },
    ]
    if rootless:
        # Without its own network namespace a container may not mount sysfs;
        # a read-only recursive bind of the host's /sys (which carries
        # /sys/fs/cgroup with it) stands in, so no cgroup mount is added.
        mounts.append(
            {
                "destination": "/sys",
                "type": "none",
                "source": "/sys",
                "options": ["rbind", *_NOSUID_NOEXEC_NODEV, "ro"],
            }
        )
    else:
        mounts.append(
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": [*_NOSUID_NOEXEC_NODEV, "ro"],
            }
        )
        mounts.append(
            {
                "destination": "/sys/fs/cgroup",
                "type": "cgroup",
                "source": "cgroup",
                "options": [*_NOSUID_NOEXEC_NODEV, "relatime", "ro"],
            }
        )
    return mounts


def _linux(rootless: bool) -> dict[str, Any]:
    kinds = ["pid", "network", "ipc", "uts", "mount", "cgroup"]
    linux: dict[str, Any] = {}
    if rootless:
        # No network namespace: an unprivileged user could not configure one.
        kinds = [k for k in kinds if k != "network"] + ["user"]
        linux["uidMappings"] = [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
    else:
        # Cgroup settings need privileges, so only the privileged variant has them.
        linux["resources"] = {"devices": [{"allow": False, "access": "rwm"}]}
    linux["namespaces"] = [{"type": k} for k in kinds]
    linux["maskedPaths"] = list(MASKED_PATHS)
    linux["readonlyPaths"] = list(READONLY_PATHS)
    return linux


def default_config(*, rootless: bool = False, terminal: bool = False) -> dict[str, Any]:
    """A sound default runtime configuration for a Linux container.

    The same content as ``runc spec`` (or ``runc spec --rootless``): root 0:0
    running ``sh`` in a read-only ``rootfs`` with a minimal capability set,
    ``noNewPrivileges``, the usual pseudo-filesystems and masked paths. The
    rootless variant adds a user namespace mapping root to the current
    effective uid and gid, and drops what an unprivileged user cannot do.
    """
    caps = list(DEFAULT_CAPABILITIES)
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": terminal,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": [f"PATH={DEFAULT_PATH}", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": list(caps), "permitted": list(caps)},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": DEFAULT_HOSTNAME,
        "mounts": _mounts(rootless),
        "linux": _linux(rootless),
    }

"""What `ocibox-runtime features` reports: the runtime-spec features.md document."""

from __future__ import annotations

from .container import OCI_VERSION


def features() -> dict:
    from .linux.capabilities import NAMES
    from .linux.mounts import _FLAGS, PROPAGATION
    from .linux.namespaces import FLAGS

    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": [],
        "mountOptions": sorted([*_FLAGS, *PROPAGATION]),
        "linux": {
            "namespaces": sorted(FLAGS),
            "capabilities": ["CAP_" + n for n in NAMES],
            "cgroup": {"v1": True, "v2": False, "systemd": False, "systemdUser": False},
            "seccomp": {"enabled": False},
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
        },
        "annotations": {"org.opencontainers.runtime-spec.features.ocibox": "0.1.0"},
    }

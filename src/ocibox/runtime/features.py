"""What `ocibox-runtime features` reports: the runtime-spec features.md document."""

from __future__ import annotations

import ctypes

from .container import OCI_VERSION

HOOKS = ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"]
_ARCHS = ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64",
          "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL",
          "SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64",
          "SCMP_ARCH_PPC64LE", "SCMP_ARCH_RISCV64", "SCMP_ARCH_S390", "SCMP_ARCH_S390X"]  # fmt: skip


def _libseccomp():
    """libseccomp as the seccomp module loads it; None when it is not there."""
    from .linux import seccomp

    try:
        return seccomp._lib()
    except Exception:
        return None


def _seccomp(lib) -> dict:
    from .linux import seccomp

    if lib is None:
        return {"enabled": False}
    archs = [a for a in _ARCHS
             if lib.seccomp_arch_resolve_name(a.removeprefix("SCMP_ARCH_").lower().encode())]  # fmt: skip
    return {
        "enabled": True,
        "actions": sorted(a for a in seccomp._ACTIONS),
        "operators": sorted(seccomp._OPS),
        "archs": archs,
        "knownFlags": sorted(seccomp._FLAGS),
        "supportedFlags": seccomp.supported_flags(),
    }


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


def _libseccomp_version(lib) -> dict:
    """libseccomp's version as runc reports it (its own annotation key), when it is there
    (seccomp_version came with libseccomp 2.3)."""
    try:
        lib.seccomp_version.restype = ctypes.POINTER(_Version)
    except AttributeError:  # no libseccomp (None), or one older than 2.3
        return {}
    v = lib.seccomp_version()
    if not v:
        return {}
    v = v.contents
    return {"io.github.seccomp.libseccomp.version": f"{v.major}.{v.minor}.{v.micro}"}


def features() -> dict:
    from .linux import mempolicy
    from .linux.capabilities import NAMES
    from .linux.mounts import _FLAGS, _RECURSIVE, PROPAGATION
    from .linux.namespaces import FLAGS

    lib = _libseccomp()
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": HOOKS,
        "mountOptions": sorted([*_FLAGS, *PROPAGATION, *_RECURSIVE, "idmap", "ridmap", "tmpcopyup"]),
        "linux": {
            "namespaces": sorted(FLAGS),
            "capabilities": ["CAP_" + n for n in NAMES],
            "cgroup": {"v1": True, "v2": True, "systemd": True, "systemdUser": False},
            "seccomp": _seccomp(lib),
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": True}},
            "netDevices": {"enabled": True},
            "memoryPolicy": {"modes": list(mempolicy.MODES), "flags": list(mempolicy.FLAGS)},
        },
        "annotations": {"org.opencontainers.runtime-spec.features.ocibox": "0.1.0",
                        **_libseccomp_version(lib)},
    }

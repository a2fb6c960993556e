"""linux.seccomp: the whole profile compiled by libseccomp (through ctypes).

The filter is built while the host's libraries are still reachable (libseccomp
is loaded before pivot_root) and loaded as late as the process allows: with
noNewPrivileges just before the user program runs; without it, while the init
still holds CAP_SYS_ADMIN, which loading a filter then requires.
"""

from __future__ import annotations

import ctypes

from ...errors import BundleError, NotImplementedYet

_ALLOW = 0x7FFF0000
_ACTIONS = {
    "SCMP_ACT_KILL": 0x00000000,
    "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000,
    "SCMP_ACT_TRACE": 0x7FF00000,
    "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_ALLOW": _ALLOW,
}
_WITH_DATA = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")
_OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
        "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}  # fmt: skip
# Filter attributes (enum scmp_filter_attr) for the spec's flags, and NNP.
_ATTR_NNP = 3
_FLAGS = {"SECCOMP_FILTER_FLAG_TSYNC": 4, "SECCOMP_FILTER_FLAG_LOG": 6,
          "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 7}  # fmt: skip
EPERM = 1


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]  # fmt: skip


def _lib():
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError:
        raise NotImplementedYet(
            "linux.seccomp needs libseccomp.so.2, which is not installed"
        ) from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(_ArgCmp)]  # fmt: skip
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib


def _action(name: str | None, errno_ret: int | None, where: str) -> int:
    if name == "SCMP_ACT_NOTIFY":
        raise NotImplementedYet(f"{where}: SCMP_ACT_NOTIFY is not supported yet")
    if name not in _ACTIONS:
        raise BundleError(f"{where}: unknown seccomp action {name!r}")
    value = _ACTIONS[name]
    if name in _WITH_DATA:
        value |= (
            EPERM if errno_ret is None and name == "SCMP_ACT_ERRNO" else errno_ret or 0
        ) & 0xFFFF
    return value


class Filter:
    """A compiled profile, ready to load into the calling process."""

    def __init__(self, profile: dict) -> None:
        self.lib = _lib()
        where = "config.json: linux.seccomp"
        if profile.get("listenerPath"):
            raise NotImplementedYet(f"{where}.listenerPath is not supported yet")
        self.default = _action(profile.get("defaultAction"), profile.get("defaultErrnoRet"), where)
        self.ctx = self.lib.seccomp_init(self.default)
        if not self.ctx:
            raise BundleError(f"{where}: seccomp_init failed")
        self._check(self.lib.seccomp_attr_set(self.ctx, _ATTR_NNP, 0), "setting attributes")
        for flag in profile.get("flags") or []:
            if flag not in _FLAGS:
                raise BundleError(f"{where}.flags: unknown flag {flag!r}")
            self._check(self.lib.seccomp_attr_set(self.ctx, _FLAGS[flag], 1), f"flag {flag}")
        for arch in profile.get("architectures") or []:
            token = self.lib.seccomp_arch_resolve_name(
                arch.removeprefix("SCMP_ARCH_").lower().encode()
            )
            if token == 0:
                raise BundleError(f"{where}.architectures: unknown architecture {arch!r}")
            ret = self.lib.seccomp_arch_add(self.ctx, token)
            if ret not in (0, -17):  # -EEXIST: the native one is there already
                self._check(ret, f"adding architecture {arch}")
        for i, rule in enumerate(profile.get("syscalls") or []):
            self._add(rule, f"{where}.syscalls[{i}]")

    def _check(self, ret: int, what: str) -> None:
        if ret < 0:
            import os

            raise BundleError(f"config.json: linux.seccomp: {what}: {os.strerror(-ret)}")

    def _add(self, rule: dict, where: str) -> None:
        action = _action(rule.get("action"), rule.get("errnoRet"), where)
        if action == self.default:
            return  # libseccomp refuses rules that repeat the default action
        conds = []
        for j, a in enumerate(rule.get("args") or []):
            op = _OPS.get(a.get("op"))
            if op is None:
                raise BundleError(f"{where}.args[{j}]: unknown operator {a.get('op')!r}")
            conds.append(_ArgCmp(a.get("index", 0), op, a.get("value", 0), a.get("valueTwo", 0)))
        # Several conditions on one argument cannot share a rule: each gets its own.
        indexes = [c.arg for c in conds]
        groups = [[c] for c in conds] if len(set(indexes)) != len(indexes) else [conds]
        for name in rule.get("names") or []:
            nr = self.lib.seccomp_syscall_resolve_name(name.encode())
            if nr < 0:
                continue  # a syscall this kernel or architecture does not have
            for group in groups:
                array = (_ArgCmp * len(group))(*group)
                ret = self.lib.seccomp_rule_add_array(self.ctx, action, nr, len(group), array)
                if ret == -17:
                    # -EEXIST: on some architecture the rule duplicates one already added,
                    # e.g. x86's socketcall drops socket's argument conditions, so
                    # "socket if a0 != 16" and "socket if a2 != 9" (podman's profile)
                    # become one rule there. The other architectures have taken it.
                    continue
                self._check(ret, f"rule for {name}")

    def load(self) -> None:
        ret = self.lib.seccomp_load(self.ctx)
        self.lib.seccomp_release(self.ctx)
        self._check(ret, "loading the filter")

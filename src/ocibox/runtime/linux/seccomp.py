"""linux.seccomp: the whole profile compiled by libseccomp (through ctypes).

The filter is built while the host's libraries are still reachable (libseccomp
is loaded before pivot_root) and loaded as late as the process allows: with
noNewPrivileges just before the user program runs; without it, while the init
still holds CAP_SYS_ADMIN, which loading a filter then requires.

SCMP_ACT_NOTIFY: libseccomp loads a filter with such rules with
SECCOMP_FILTER_FLAG_NEW_LISTENER; the notify descriptor it returns is sent, with
the container process state as JSON, over one connection to listenerPath
(SCM_RIGHTS), by the process that loaded the filter, right after loading it.
The connection is made, and a handle on the host's /proc kept (to learn the
process's pid as the host sees it), while the profile is compiled: host paths
are still reachable then.
"""

from __future__ import annotations

import ctypes
import os

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
    "SCMP_ACT_NOTIFY": 0x7FC00000,
}
_NOTIFY = _ACTIONS["SCMP_ACT_NOTIFY"]
# The runtime's own calls between loading the filter and exec: a notification
# for sendmsg would wait for a listener that has not got the descriptor yet.
_NOT_NOTIFIABLE = ("sendmsg", "write")
# The fields of the spec's state (the runtime's state file has more).
_STATE_KEYS = ("ociVersion", "id", "status", "pid", "bundle", "annotations")
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
    lib.seccomp_notify_fd.argtypes = [ctypes.c_void_p]
    return lib


def _action(name: str | None, errno_ret: int | None, where: str) -> int:
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

    def __init__(self, profile: dict, state: dict | None = None) -> None:
        """``state``: the spec's state of the container, for a listener (its pid is
        filled in with the loading process's own when it has none)."""
        self.lib = _lib()
        self.listener = None
        where = "config.json: linux.seccomp"
        self.default = _action(profile.get("defaultAction"), profile.get("defaultErrnoRet"), where)
        if self.default == _NOTIFY:
            raise BundleError(f"{where}.defaultAction: SCMP_ACT_NOTIFY cannot be the default "
                              "action (the runtime's own calls would wait on the listener)")  # fmt: skip
        notify = [r for r in profile.get("syscalls") or [] if r.get("action") == "SCMP_ACT_NOTIFY"]
        for r in notify:
            for name in r.get("names") or []:
                if name in _NOT_NOTIFIABLE:
                    raise BundleError(f"{where}: SCMP_ACT_NOTIFY cannot be used for {name}, "
                                      "which the runtime calls after loading the filter")  # fmt: skip
        if notify and not profile.get("listenerPath"):
            raise BundleError(f"{where}: SCMP_ACT_NOTIFY needs a listenerPath")
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
        if notify:  # last: a profile refused above leaves the listener untouched
            self.listener = _Listener(profile["listenerPath"], profile.get("listenerMetadata", ""),
                                      state or {}, where)  # fmt: skip

    def _check(self, ret: int, what: str) -> None:
        if ret < 0:
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
        fd = self.lib.seccomp_notify_fd(self.ctx) if ret == 0 and self.listener else -1
        self.lib.seccomp_release(self.ctx)
        self._check(ret, "loading the filter")
        if self.listener:
            self._check(fd, "getting the notify descriptor")
            self.listener.send(fd)

    def close(self) -> None:
        """Drop what a filter never loaded holds (the listener's connection)."""
        if self.listener:
            self.listener.close()


class _Listener:
    """One connection to listenerPath, made early, used once right after loading."""

    def __init__(self, path: str, metadata: str, state: dict, where: str) -> None:
        import socket

        from .. import jsonlite  # now: after pivot_root the host's library is out of reach

        self.where = f"{where}.listenerPath {path}"
        self.metadata = metadata
        self.state = {k: state[k] for k in _STATE_KEYS if k in state}
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self.sock.connect(path)
        except OSError as e:
            self.sock.close()
            raise BundleError(f"{self.where}: {e.strerror}") from None
        self.send_fds = socket.send_fds
        self.dumps = jsonlite.dumps
        # Our pid as the host sees it: "self" in the host's /proc, whatever our namespaces.
        self.proc = os.open("/proc", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def send(self, fd: int) -> None:
        try:
            pid = int(os.readlink("self", dir_fd=self.proc))
            state = {**self.state, "pid": self.state.get("pid") or pid}
            msg = {"ociVersion": state.get("ociVersion", ""), "fds": ["seccompFd"], "pid": pid,
                   "metadata": self.metadata, "state": state}  # fmt: skip
            self.send_fds(self.sock, [self.dumps(msg).encode()], [fd])
        except OSError as e:
            raise BundleError(
                f"{self.where}: sending the notify descriptor: {e.strerror}"
            ) from None
        finally:
            os.close(fd)
            self.close()

    def close(self) -> None:
        self.sock.close()
        if self.proc >= 0:
            os.close(self.proc)
            self.proc = -1

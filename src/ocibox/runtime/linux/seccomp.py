"""linux.seccomp: the whole profile compiled by libseccomp (through ctypes).

The filter is built while the host's libraries are still reachable (libseccomp
is loaded before pivot_root) and loaded as late as the process allows: with
noNewPrivileges just before the user program runs; without it, while the init
still holds CAP_SYS_ADMIN, which loading a filter then requires.

libseccomp compiles; we load. The profile's BPF program is exported
(seccomp_export_bpf, into a memfd) as soon as it is compiled, and loaded with
the seccomp(2) system call and the filter flags it needs: linux.seccomp.flags
(TSYNC, LOG, SPEC_ALLOW, and WAIT_KILLABLE_RECV, which libseccomp 2.5 does not
know) and NEW_LISTENER for SCMP_ACT_NOTIFY, as seccomp_load would have set them.
A flag this kernel lacks is refused when the profile is compiled.

SCMP_ACT_NOTIFY: a filter with such rules is loaded with
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
# seccomp(2)'s filter flags (linux/seccomp.h), by the spec's names where it has them.
_TSYNC, _NEW_LISTENER, _TSYNC_ESRCH, _WAIT_KILLABLE_RECV = 1, 8, 16, 32
_FLAGS = {"SECCOMP_FILTER_FLAG_TSYNC": _TSYNC, "SECCOMP_FILTER_FLAG_LOG": 2,
          "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
          "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": _WAIT_KILLABLE_RECV}  # fmt: skip
_SET_MODE_FILTER = 1
_SYS_SECCOMP = 277 if os.uname().machine == "aarch64" else 317
EPERM = 1
EFAULT = 14


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]  # fmt: skip


def _sock_fprog(program):
    """struct sock_fprog, what seccomp(2) takes, for ``program`` (8-byte instructions).
    The class is made here, not at import: create imports this module every time."""

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    return SockFprog(len(program) // 8, ctypes.addressof(program))


_libc = None


def _seccomp_syscall(flags: int, prog) -> int:
    """seccomp(SECCOMP_SET_MODE_FILTER, flags, prog): its return value, or -errno."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    ret = _libc.syscall(_SYS_SECCOMP, _SET_MODE_FILTER, ctypes.c_uint(flags), prog)
    return -ctypes.get_errno() if ret < 0 else ret


def _kernel_flags(flags: int) -> int:
    """What the kernel needs with ``flags``: WAIT_KILLABLE_RECV only goes with a listener,
    and TSYNC with one only with TSYNC_ESRCH (else a tid and an fd would look alike)."""
    if flags & _WAIT_KILLABLE_RECV:
        flags |= _NEW_LISTENER
    if flags & _TSYNC and flags & _NEW_LISTENER:
        flags |= _TSYNC_ESRCH
    return flags


def supported_flags() -> list[str]:
    """The spec's flags this kernel takes: given no program, it says EFAULT to those it
    knows and EINVAL to the others, and loads nothing."""
    return sorted(name for name, bit in _FLAGS.items()
                  if _seccomp_syscall(_kernel_flags(bit), None) == -EFAULT)  # fmt: skip


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
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
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
        self.flags = _check_flags(profile.get("flags"), bool(notify), where)
        self.ctx = self.lib.seccomp_init(self.default)
        if not self.ctx:
            raise BundleError(f"{where}: seccomp_init failed")
        try:
            self._compile(profile, where)
            self.program = self._export()
        finally:
            self.lib.seccomp_release(self.ctx)
            self.ctx = None
        if notify:  # last: a profile refused above leaves the listener untouched
            self.listener = _Listener(profile["listenerPath"], profile.get("listenerMetadata", ""),
                                      state or {}, where)  # fmt: skip

    def _compile(self, profile: dict, where: str) -> None:
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

    def _export(self):
        """The compiled BPF program, kept (in a buffer of our own) until it is loaded."""
        fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
        try:
            self._check(self.lib.seccomp_export_bpf(self.ctx, fd), "exporting the filter")
            size = os.lseek(fd, 0, os.SEEK_CUR)
            data = os.pread(fd, size, 0)
        finally:
            os.close(fd)
        if not data or len(data) % 8 or len(data) // 8 > 0xFFFF:
            raise BundleError(f"config.json: linux.seccomp: libseccomp exported {len(data)} "
                              "bytes, not a BPF program")  # fmt: skip
        return ctypes.create_string_buffer(data, len(data))

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
        """Install the filter on the calling thread; a listener gets its notify descriptor."""
        flags = _kernel_flags(self.flags | (_NEW_LISTENER if self.listener else 0))
        prog = _sock_fprog(self.program)
        ret = _seccomp_syscall(flags, ctypes.byref(prog))
        self._check(ret, "loading the filter")
        if self.listener:
            self.listener.send(ret)  # the notify descriptor
        elif ret > 0:  # TSYNC without a listener: a thread that could not take the filter
            raise BundleError(f"config.json: linux.seccomp: thread {ret} could not be "
                              "synchronised (SECCOMP_FILTER_FLAG_TSYNC)")  # fmt: skip

    def close(self) -> None:
        """Drop what a filter never loaded holds (the listener's connection)."""
        if self.listener:
            self.listener.close()


def _check_flags(flags, notify: bool, where: str) -> int:
    """linux.seccomp.flags as seccomp(2)'s bits: known to us and to this kernel."""
    if flags is None:
        return 0
    if not isinstance(flags, list):
        raise BundleError(f"{where}.flags must be an array")
    bits = 0
    for flag in flags:
        if flag not in _FLAGS:
            raise BundleError(f"{where}.flags: unknown flag {flag!r}",
                              hint=f"use one of {', '.join(_FLAGS)}")  # fmt: skip
        if _seccomp_syscall(_kernel_flags(_FLAGS[flag]), None) != -EFAULT:
            raise BundleError(f"{where}.flags: {flag} is not supported by this kernel "
                              f"({os.uname().release})")  # fmt: skip
        bits |= _FLAGS[flag]
    if bits & _WAIT_KILLABLE_RECV and not notify:
        raise BundleError(f"{where}.flags: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV is for "
                          "notifications: it needs a rule with SCMP_ACT_NOTIFY (and a "
                          "listenerPath)")  # fmt: skip
    return bits


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

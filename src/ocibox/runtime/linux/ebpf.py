"""The device rules of cgroup v2: a BPF_PROG_TYPE_CGROUP_DEVICE program, through bpf(2).

cgroup v2 has no devices controller; the kernel asks an eBPF program attached
to the cgroup instead. The program is assembled here from the rules (a few
instructions per rule, no compiler) and attached with BPF_F_ALLOW_MULTI, as
runc does. The rules are read as on cgroup v1: in order, each overriding the
ones before it, over a default of deny; so the program tests them from the last
to the first and the first one that matches decides.
"""

from __future__ import annotations

import ctypes
import os
import struct

from ...errors import BundleError, NotImplementedYet

_SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351}
_BPF_PROG_LOAD, _BPF_PROG_ATTACH, _BPF_PROG_DETACH, _BPF_PROG_QUERY = 5, 8, 9, 16
_BPF_PROG_TYPE_CGROUP_DEVICE = 15
_BPF_CGROUP_DEVICE = 6  # attach type
_BPF_F_ALLOW_MULTI = 2

# struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }
# access_type = access << 16 | type
_DEV = {"b": 1, "c": 2}
_ACC = {"m": 1, "r": 2, "w": 4}

# Opcodes (linux/bpf.h, linux/bpf_common.h).
_LDX_W = 0x61  # dst = *(u32 *)(src + off)
_AND32_K = 0x54
_RSH32_K = 0x74
_MOV32_X = 0xBC
_MOV64_K = 0xB7
_JEQ_K = 0x15
_JNE_K = 0x55
_EXIT = 0x95


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def _access_bits(access: str, where: str) -> int:
    bits = 0
    for ch in access:
        if ch not in _ACC:
            raise BundleError(f"{where}: unknown device access {ch!r} (use r, w and m)")
        bits |= _ACC[ch]
    return bits


def _rule_block(rule: tuple[str, int, int, str, bool], where: str) -> bytes:
    """Instructions that return the rule's verdict if it matches, else fall through."""
    kind, major, minor, access, allow = rule
    acc = _access_bits(access, where)
    # (code, dst, src, imm, is_jump_to_next_rule)
    body: list[tuple[int, int, int, int, bool]] = []
    if kind != "a":
        body.append((_JNE_K, 2, 0, _DEV[kind], True))
    if allow:
        # An allow rule covers a request only if it grants every bit asked for.
        if acc != 7:
            body += [(_MOV32_X, 1, 3, 0, False), (_AND32_K, 1, 0, ~acc & 7, False),
                     (_JNE_K, 1, 0, 0, True)]  # fmt: skip
    else:
        # A deny rule refuses a request that asks for any bit it names.
        body += [(_MOV32_X, 1, 3, 0, False), (_AND32_K, 1, 0, acc, False),
                 (_JEQ_K, 1, 0, 0, True)]  # fmt: skip
    if kind != "a" and major is not None and major >= 0:  # "a" is every device, as "a *:*"
        body.append((_JNE_K, 4, 0, major, True))
    if kind != "a" and minor is not None and minor >= 0:
        body.append((_JNE_K, 5, 0, minor, True))
    body += [(_MOV64_K, 0, 0, 1 if allow else 0, False), (_EXIT, 0, 0, 0, False)]
    out = b""
    for i, (code, dst, src, imm, jump) in enumerate(body):
        out += _insn(code, dst, src, len(body) - i - 1 if jump else 0, imm)
    return out


def assemble(rules: list[tuple[str, int, int, str, bool]]) -> bytes:
    """The program for ``rules``: (type a|b|c, major, minor, access, allow); -1 is any."""
    prog = (
        _insn(_LDX_W, 2, 1, 0)  # r2 = access_type
        + _insn(_AND32_K, 2, 0, 0, 0xFFFF)  # r2 = device type
        + _insn(_LDX_W, 3, 1, 0)
        + _insn(_RSH32_K, 3, 0, 0, 16)  # r3 = access asked for
        + _insn(_LDX_W, 4, 1, 4)  # r4 = major
        + _insn(_LDX_W, 5, 1, 8)  # r5 = minor
    )
    for i in range(len(rules) - 1, -1, -1):
        prog += _rule_block(rules[i], f"linux.resources.devices[{i}]")
        kind, major, minor, access, allow = rules[i]
        if kind == "a" and allow and set(access) >= set("rwm"):
            return prog  # matches everything: the verifier refuses code left unreachable
    return prog + _insn(_MOV64_K, 0, 0, 0, 0) + _insn(_EXIT)


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _bpf(cmd: int, attr: ctypes.Array, what: str) -> int:
    nr = _SYS_BPF.get(os.uname().machine)
    if nr is None:
        raise NotImplementedYet(f"cgroup v2 devices: bpf(2) on {os.uname().machine} is not known")
    ret = _libc().syscall(ctypes.c_long(nr), ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr)))
    if ret < 0:
        err = ctypes.get_errno()
        raise BundleError(f"cgroup v2 devices: {what}: {os.strerror(err)}")
    return ret


def load(prog: bytes) -> int:
    """Load a device program; return its file descriptor."""
    insns = ctypes.create_string_buffer(prog, len(prog))
    license = ctypes.create_string_buffer(b"Apache")
    log = ctypes.create_string_buffer(65536)
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("<IIQQIIQ", attr, 0, _BPF_PROG_TYPE_CGROUP_DEVICE, len(prog) // 8,
                     ctypes.addressof(insns), ctypes.addressof(license), 1, len(log),
                     ctypes.addressof(log))  # fmt: skip
    attr[48:56] = b"ocibox\0\0"  # prog_name
    try:
        return _bpf(_BPF_PROG_LOAD, attr, "loading the device program")
    except BundleError as e:
        lines = log.value.decode(errors="replace").strip().splitlines()
        detail = [line for line in lines if not line.startswith("processed ")]
        raise BundleError(e.message + (f" ({detail[-1]})" if detail else "")) from None


def attach(cgroup_dir: str, prog_fd: int) -> None:
    """Attach a loaded device program to a cgroup v2 directory (with BPF_F_ALLOW_MULTI)."""
    dfd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        attr = ctypes.create_string_buffer(struct.pack("<IIII", dfd, prog_fd,
                                                       _BPF_CGROUP_DEVICE, _BPF_F_ALLOW_MULTI),
                                           32)  # fmt: skip
        _bpf(_BPF_PROG_ATTACH, attr, f"attaching to {cgroup_dir}")
    finally:
        os.close(dfd)


def set_devices(cgroup_dir: str, rules: list[tuple[str, int, int, str, bool]]) -> None:
    """Assemble, load and attach the program for ``rules`` to ``cgroup_dir``.

    The attachment keeps the program alive; our descriptor is closed at once.
    """
    fd = load(assemble(rules))
    try:
        attach(cgroup_dir, fd)
    finally:
        os.close(fd)

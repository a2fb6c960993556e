"""The device rules of cgroup v2: a BPF_PROG_TYPE_CGROUP_DEVICE program, through bpf(2).

cgroup v2 has no devices controller; the kernel asks an eBPF program attached
to the cgroup instead. The program is assembled here from the rules (a few
instructions per rule, no compiler) and attached with BPF_F_ALLOW_MULTI, as
runc does; every device program attached to the cgroup before, ours or another
tool's, goes, as with runc's (a single one is swapped with BPF_F_REPLACE), so
the rules in force are exactly the latest (create, update). The rules are read
as on cgroup v1: in order, each overriding the ones before it, over a default
of deny; so the program tests them from the last to the first and the first one
that matches decides.
"""

from __future__ import annotations

import ctypes
import os
import struct

from ...errors import BundleError, NotImplementedYet

_SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351}
_BPF_PROG_LOAD, _BPF_PROG_ATTACH, _BPF_PROG_DETACH, _BPF_PROG_QUERY = 5, 8, 9, 16
_BPF_PROG_GET_FD_BY_ID, _BPF_OBJ_GET_INFO_BY_FD = 13, 15
_BPF_PROG_TYPE_CGROUP_DEVICE = 15
_BPF_CGROUP_DEVICE = 6  # attach type
_BPF_F_ALLOW_MULTI, _BPF_F_REPLACE = 2, 4
_NAME = b"ocibox"  # prog_name: how our programs are told from others on a cgroup

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


def load(prog: bytes, name: bytes = _NAME) -> int:
    """Load a device program named ``name`` (at most 15 bytes); return its file descriptor."""
    insns = ctypes.create_string_buffer(prog, len(prog))
    license = ctypes.create_string_buffer(b"Apache")
    log = ctypes.create_string_buffer(65536)
    attr = ctypes.create_string_buffer(128)
    struct.pack_into("<IIQQIIQ", attr, 0, _BPF_PROG_TYPE_CGROUP_DEVICE, len(prog) // 8,
                     ctypes.addressof(insns), ctypes.addressof(license), 1, len(log),
                     ctypes.addressof(log))  # fmt: skip
    attr[48:64] = name[:15].ljust(16, b"\0")  # prog_name
    try:
        return _bpf(_BPF_PROG_LOAD, attr, "loading the device program")
    except BundleError as e:
        lines = log.value.decode(errors="replace").strip().splitlines()
        detail = [line for line in lines if not line.startswith("processed ")]
        raise BundleError(e.message + (f" ({detail[-1]})" if detail else "")) from None


def _dir_fd(cgroup_dir: str) -> int:
    return os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def attached(cgroup_dir: str) -> list[int]:
    """The ids of the device programs attached to ``cgroup_dir`` itself (BPF_PROG_QUERY)."""
    ids = (ctypes.c_uint32 * 64)()
    dfd = _dir_fd(cgroup_dir)
    try:
        attr = ctypes.create_string_buffer(struct.pack("<IIIIQI", dfd, _BPF_CGROUP_DEVICE, 0, 0,
                                                       ctypes.addressof(ids), len(ids)), 64)  # fmt: skip
        _bpf(_BPF_PROG_QUERY, attr, f"listing the programs of {cgroup_dir}")
    finally:
        os.close(dfd)
    (count,) = struct.unpack_from("<I", attr, 24)
    return list(ids[:count])


def _open_id(prog_id: int) -> int:
    attr = ctypes.create_string_buffer(struct.pack("<III", prog_id, 0, 0), 16)
    return _bpf(_BPF_PROG_GET_FD_BY_ID, attr, f"opening program {prog_id}")


def _name(prog_fd: int) -> bytes:
    """The prog_name of a loaded program (struct bpf_prog_info: name at offset 64)."""
    info = ctypes.create_string_buffer(96)
    attr = ctypes.create_string_buffer(struct.pack("<IIQ", prog_fd, len(info),
                                                   ctypes.addressof(info)), 16)  # fmt: skip
    _bpf(_BPF_OBJ_GET_INFO_BY_FD, attr, "reading a program's name")
    return info.raw[64:80].split(b"\0", 1)[0]


def _attached_fds(cgroup_dir: str) -> list[int]:
    """Descriptors of the device programs on ``cgroup_dir`` (the caller closes them)."""
    fds = []
    for prog_id in attached(cgroup_dir):
        try:
            fds.append(_open_id(prog_id))
        except BundleError:
            continue  # detached meanwhile
    return fds


def names(cgroup_dir: str) -> list[str]:
    """The names of the device programs on ``cgroup_dir`` ("ocibox" for ours)."""
    out = []
    for fd in _attached_fds(cgroup_dir):
        try:
            out.append(_name(fd).decode(errors="replace"))
        finally:
            os.close(fd)
    return out


def attach(cgroup_dir: str, prog_fd: int, replace_fd: int = -1) -> None:
    """Attach a loaded device program to a cgroup v2 directory (with BPF_F_ALLOW_MULTI),
    in place of the attached program ``replace_fd`` if one is given (BPF_F_REPLACE)."""
    flags = _BPF_F_ALLOW_MULTI | (_BPF_F_REPLACE if replace_fd >= 0 else 0)
    dfd = _dir_fd(cgroup_dir)
    try:
        attr = ctypes.create_string_buffer(struct.pack("<IIIII", dfd, prog_fd, _BPF_CGROUP_DEVICE,
                                                       flags, max(replace_fd, 0)), 32)  # fmt: skip
        _bpf(_BPF_PROG_ATTACH, attr, f"attaching to {cgroup_dir}")
    finally:
        os.close(dfd)


def detach(cgroup_dir: str, prog_fd: int) -> None:
    dfd = _dir_fd(cgroup_dir)
    try:
        attr = ctypes.create_string_buffer(struct.pack("<III", dfd, prog_fd, _BPF_CGROUP_DEVICE),
                                           32)  # fmt: skip
        _bpf(_BPF_PROG_DETACH, attr, f"detaching a program from {cgroup_dir}")
    finally:
        os.close(dfd)


def set_devices(cgroup_dir: str, rules: list[tuple[str, int, int, str, bool]]) -> None:
    """Assemble, load and attach the program for ``rules`` to ``cgroup_dir``, in place of
    every device program attached to it before (ours at create or by an earlier
    update, or another tool's), as runc does: the container's devices are the
    rules given, not their intersection with someone else's.

    With a single old program the swap is atomic (BPF_F_REPLACE); with more the
    new one is attached first, then the old ones go. The attachment keeps the
    program alive; our descriptors are closed.
    """
    fd = load(assemble(rules))
    old = _attached_fds(cgroup_dir)
    try:
        if len(old) == 1:
            attach(cgroup_dir, fd, old[0])
        else:
            attach(cgroup_dir, fd)
            for old_fd in old:
                detach(cgroup_dir, old_fd)
    finally:
        os.close(fd)
        for old_fd in old:
            os.close(old_fd)

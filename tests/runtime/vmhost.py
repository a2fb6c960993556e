"""Boot this host's own kernel under QEMU (TCG) on a pure cgroup v2 hierarchy, and run a command.

The host's cgroups are hybrid (v1 controllers, v2 with only hugetlb), so code for a
unified host cannot be tried on it. A guest can: this module builds a small
initramfs (static busybox, the modules for virtio and 9p, an /init script),
boots /boot/vmlinuz-* under qemu-system-x86_64 with TCG, and the guest:

  - mounts the host's / read-only over 9p (tag host0, QEMU's readonly=on) with a
    tmpfs overlay on top (writes land in guest memory and vanish at power-off),
  - mounts proc, sysfs, devtmpfs, devpts, tmpfs on /tmp, /run and /dev/shm,
  - mounts cgroup2 alone on /sys/fs/cgroup (no v1 hierarchy, cgroup_no_v1=all) and
    enables every controller in the root's cgroup.subtree_control (or, with
    boot(hybrid=True), mounts none and lets systemd as PID 1 mount a hybrid layout),
  - mounts the job directory (a host temporary directory, tag job) rw at
    /run/vmhost/job, and copies boot(root_files=...) onto the root,
  - switch_roots into the overlay and execs the init: by default a shell script
    that runs the job's script and powers off.

    from vmhost import boot, require, skip_reason
    require(checkout)             # in a pytest fixture: skip when no VM boots here, or
                                  # when the guest cannot see the checkout (GUEST_TMPFS)
    r = boot("cat /sys/fs/cgroup/cgroup.subtree_control", timeout=300)
    r.returncode, r.output        # the script's exit status and stdout+stderr
    r.job                         # the job directory (files the guest left there)
    r.console                     # the serial console (kernel messages), to debug a boot

    # another PID 1: systemd, running the script as a unit and powering off after it
    boot(script, init=["/lib/systemd/systemd", "--unit=vmhost.service"],
         root_files=SYSTEMD_UNIT)

One boot costs about 5 s plus the command; the guest is slow (TCG emulates
every instruction), so a test module boots once and runs a whole script.
scripts/vm-run is the same from a shell.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

QEMU = "qemu-system-x86_64"
BUSYBOX = "/bin/busybox"
JOB = "/run/vmhost/job"  # the job directory inside the guest
CACHE = Path(tempfile.gettempdir())
# The host's files under these are not seen in the guest (fresh mounts there).
GUEST_TMPFS = ("/tmp", "/run", "/dev", "/proc", "/sys")

# Modules the initramfs loads, dependencies first (resolved from modules.dep).
MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay", "virtio_blk")

_INIT = r"""#!/bin/busybox sh
# vmhost's stage 1: the modules, the host's root over 9p, the pseudo filesystems, cgroup2.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.order); do insmod "/modules/$m" || echo "vmhost: insmod $m failed"; done
arg() { for a in $(cat /proc/cmdline); do case "$a" in "vmhost.$1="*) echo "${a#*=}";; esac; done; }
fail() { echo "vmhost: $*"; echo "VMHOST-FAILED"; echo o > /proc/sysrq-trigger; sleep 10; }
mkdir -p /lower /upper /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose host0 /lower \
  || fail "mounting the host's root over 9p"
mount -t tmpfs -o mode=0755 tmpfs /upper
mkdir -p /upper/data /upper/work
mount -t overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work overlay /newroot \
  || fail "mounting the overlay"
N=/newroot
mount -t proc proc $N/proc
mount -t sysfs sysfs $N/sys
mount -t devtmpfs devtmpfs $N/dev
mkdir -p $N/dev/pts $N/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts $N/dev/pts
mount -t tmpfs tmpfs $N/dev/shm
mount -t tmpfs -o mode=1777 tmpfs $N/tmp
mount -t tmpfs -o mode=0755 tmpfs $N/run
if [ "$(arg cgroups)" != systemd ]; then  # else the init (systemd) mounts them its way
  mount -t cgroup2 -o nsdelegate cgroup2 $N/sys/fs/cgroup || fail "mounting cgroup2"
  for c in $(cat $N/sys/fs/cgroup/cgroup.controllers); do
    echo "+$c" > $N/sys/fs/cgroup/cgroup.subtree_control || echo "vmhost: cannot enable $c"
  done
fi
mkdir -p $N/run/vmhost/job
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 job $N/run/vmhost/job \
  || fail "mounting the job directory"
# The host may be a container image's root: the guest is a machine (systemd reads
# the kernel command line only then).
rm -f $N/.dockerenv
[ -d $N/run/vmhost/job/root ] && cp -a $N/run/vmhost/job/root/. $N/
hostname vmhost
echo "VMHOST-STAGE1-DONE"
init=$(arg init | sed 's/,/ /g')
exec switch_root $N ${init:-/bin/sh /run/vmhost/job/.stage2}
"""

# The default init after switch_root (the host's /bin/sh): run the script, record its
# status, power off. /proc/sysrq-trigger's "o" powers off without any init system.
_STAGE2 = f"""#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
export PYTHONDONTWRITEBYTECODE=1 TERM=dumb
cd /
/bin/sh {JOB}/script > {JOB}/output 2>&1 < /dev/null
echo $? > {JOB}/rc
sync
echo VMHOST-DONE
echo o > /proc/sysrq-trigger
sleep 30
"""


# A unit that runs the job's script under systemd as PID 1 and powers off after it:
#   boot(script, init=["/lib/systemd/systemd", "--unit=vmhost.service"], root_files=SYSTEMD_UNIT)
# (or systemd.unit=... in append; or a unit WantedBy a target, for a full boot).
SYSTEMD_UNIT = {
    "/etc/systemd/system/vmhost.service": f"""[Unit]
Description=vmhost job
DefaultDependencies=no
After=sysinit.target

[Service]
Type=oneshot
ExecStart=/bin/sh {JOB}/.stage2
StandardOutput=journal+console
"""
}


@dataclass
class Result:
    returncode: int | None  # None: the script never finished (timeout, a failed boot)
    output: str  # the script's stdout and stderr
    console: str  # the serial console: the kernel's messages and stage 1's
    job: Path  # the job directory (the guest's /run/vmhost/job)


def kernel() -> tuple[Path, Path] | None:
    """The kernel image and its modules directory: $OCIBOX_VM_KERNEL, else the newest
    /boot/vmlinuz-* whose /lib/modules/<version> exists."""
    env = os.environ.get("OCIBOX_VM_KERNEL")
    images = [Path(env)] if env else sorted(Path("/boot").glob("vmlinuz-*"), reverse=True)
    for image in images:
        version = image.name.removeprefix("vmlinuz-")
        mods = Path("/lib/modules") / version
        if image.is_file() and (mods / "modules.dep").is_file():
            return image, mods
    return None


def skip_reason() -> str | None:
    """Why a VM cannot be booted here, or None when it can."""
    if shutil.which(QEMU) is None:
        return f"{QEMU} is not installed (scripts/install-peers.sh installs qemu-system-x86)"
    if os.uname().machine != "x86_64":
        return "the VM harness boots x86_64 kernels only"
    if not os.path.exists(BUSYBOX):
        return "busybox-static is not installed (scripts/install-peers.sh installs it)"
    if kernel() is None:
        return "no /boot/vmlinuz-* with its /lib/modules (install linux-image-amd64)"
    if not os.access(kernel()[0], os.R_OK):
        return f"{kernel()[0]} is not readable (run as root)"
    return None


def hidden(path: str | os.PathLike) -> str | None:
    """Why the guest cannot see ``path``, or None when it can: the host's files under
    GUEST_TMPFS are not there (fresh mounts), whether the path or its symlinks' target is."""
    path = Path(os.path.abspath(path))
    for seen in (path, path.resolve()):
        under = [d for d in GUEST_TMPFS if seen.is_relative_to(d)]
        if under:
            name = str(path) if seen == path else f"{path} (that is {seen})"
            return f"{name} is under {under[0]}, mounted afresh in the VM: the guest cannot see it"
    return None


def require(*paths: str | os.PathLike, programs: tuple[str, ...] = ()) -> None:
    """pytest.skip with the reason when no VM can be booted here, when the guest cannot
    see one of ``paths`` (what it must run: the checkout, an interpreter), or when one
    of ``programs`` (the peers the guest runs: runc, criu...) is not installed."""
    missing = [p for p in programs
               if shutil.which(p) is None and shutil.which(p, path="/usr/sbin") is None]  # fmt: skip
    reason = (skip_reason() or next(filter(None, map(hidden, paths)), None)
              or missing and f"peer program {missing[0]!r} is not installed (make peers installs it)")  # fmt: skip
    if reason:
        import pytest

        pytest.skip(reason)


def run_driver(driver: Path, repo: Path, job: Path, python: Path | None = None, *,
               any_error: bool = False, **boot_args) -> dict:  # fmt: skip
    """Boot and run ``driver`` (a guest-side Python script: DRIVER REPO OUT.json) with
    ``python``, by default the checkout's interpreter (else this one), and return the JSON
    it wrote. For a test fixture, after require(repo): skips when the guest cannot see the
    interpreter, fails when the driver wrote nothing or exited non-zero, and with
    ``any_error`` when it recorded an "error" for any scenario (else each test looks at its
    own)."""
    import pytest

    if python is None:
        python = repo / ".venv" / "bin" / "python"
        if not python.exists():
            python = Path(sys.executable)
    require(python, driver)
    r = boot(f"{python} {driver} {repo} {JOB}/results.json", job=job, **boot_args)
    try:
        results = json.loads((job / "results.json").read_text())
    except (OSError, ValueError):
        pytest.fail(
            f"the guest wrote no results (exit {r.returncode}):\n{r.output}\n{r.console[-4000:]}"
        )
    assert r.returncode == 0, f"the guest's driver failed:\n{r.output}"
    for key, value in results.items() if any_error else ():  # see run_scenarios
        assert not isinstance(value, dict) or "error" not in value, f"{key}:\n{value['error']}"
    return results


def _modules(mods: Path) -> list[str]:
    """The .ko files for MODULES with their dependencies, each after what it needs."""
    deps: dict[str, list[str]] = {}
    for line in (mods / "modules.dep").read_text().splitlines():
        name, _, rest = line.partition(":")
        deps[name] = rest.split()
    by_name = {}
    for path in deps:
        base = os.path.basename(path).split(".ko")[0]
        by_name[base] = path
        by_name[base.replace("-", "_")] = path
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in reversed(deps.get(path, [])):
            visit(dep)
        order.append(path)

    for name in MODULES:
        if name in by_name:
            visit(by_name[name])
    return order


def _ko_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".xz":
        import lzma

        return lzma.decompress(data)
    if path.suffix == ".gz":
        return gzip.decompress(data)
    if path.suffix == ".zst":
        return subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout
    return data


class _Cpio:
    """A newc cpio archive (what the kernel unpacks as an initramfs)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.ino = 1

    def add(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)):
        self.ino += 1
        fields = (self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        entry = header + name.encode() + b"\0"
        entry += b"\0" * (-len(entry) % 4) + data
        self.parts.append(entry + b"\0" * (-len(entry) % 4))

    def bytes(self) -> bytes:
        self.add("TRAILER!!!", 0)
        return b"".join(self.parts)


def initramfs() -> Path:
    """The initramfs for this kernel, built once and cached in the temporary directory
    (keyed by kernel version and by what goes in it)."""
    image, mods = kernel()
    order = _modules(mods)
    key = hashlib.sha256(
        (_INIT + "\n".join(order) + str(os.stat(BUSYBOX).st_mtime)).encode()
    ).hexdigest()[:12]
    path = CACHE / f"ocibox-vmhost-{mods.name}-{key}.cpio.gz"
    if path.exists():
        return path
    c = _Cpio()
    for d in ("bin", "dev", "proc", "sys", "modules", "lower", "upper", "newroot"):
        c.add(d, 0o040755)
    c.add("dev/console", 0o020600, rdev=(5, 1))
    c.add("bin/busybox", 0o100755, Path(BUSYBOX).read_bytes())
    c.add("bin/sh", 0o120777, b"busybox")
    names = []
    for rel in order:
        name = os.path.basename(rel).split(".ko")[0] + ".ko"
        c.add(f"modules/{name}", 0o100644, _ko_bytes(mods / rel))
        names.append(name)
    c.add("modules.order", 0o100644, "\n".join(names).encode() + b"\n")
    c.add("init", 0o100755, _INIT.encode())
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(gzip.compress(c.bytes(), compresslevel=1))
    tmp.replace(path)
    return path


def boot(
    script: str = "",
    *,
    init: list[str] | None = None,
    timeout: float = 600,
    memory_mb: int = 2048,
    cpus: int = 2,
    disk_mb: int = 0,
    append: str = "",
    files: dict[str, str | bytes] | None = None,
    root_files: dict[str, str | bytes] | None = None,
    job: Path | None = None,
    hybrid: bool = False,
) -> Result:
    """Boot the VM, run ``script`` (sh) in it as root, power off; return what it did.

    ``init``: a different PID 1 after switch_root (argv; no spaces or commas in
    it), e.g. ["/lib/systemd/systemd"]. The script is then left in the job
    directory (/run/vmhost/job/script) for that init to run; whatever the guest
    writes to /run/vmhost/job/rc becomes returncode, /run/vmhost/job/output
    becomes output, and the guest must power itself off (or time out).
    ``disk_mb``: a blank raw virtio disk of that size, /dev/vda in the guest.
    ``append``: more kernel command line. ``files``: more files for the job
    directory. ``root_files``: absolute path -> content, put on the guest's root
    (the tmpfs overlay) before the init starts, e.g. a systemd unit (see
    SYSTEMD_UNIT). ``job``: the job directory to use (e.g. pytest's tmp_path;
    default: a new temporary directory, which the caller removes: Result.job).
    ``hybrid``: cgroup v1 hierarchies too, for systemd as ``init``: stage 1 mounts
    no cgroup, and systemd (252 allows it) mounts the hybrid layout, v1
    controllers and /sys/fs/cgroup/unified (systemd.unified_cgroup_hierarchy=0).
    """
    image, _ = kernel()
    ramfs = initramfs()
    job = Path(job or tempfile.mkdtemp(prefix="ocibox-vmjob-"))
    (job / "script").write_text(script)
    (job / ".stage2").write_text(_STAGE2)
    for name, data in (files or {}).items():
        (job / name).write_bytes(data if isinstance(data, bytes) else data.encode())
    shutil.rmtree(job / "root", ignore_errors=True)
    for name, data in (root_files or {}).items():
        if not name.startswith("/") or ".." in name.split("/"):
            raise ValueError(f"root_files: {name!r} must be an absolute path without '..'")
        dest = job / "root" / name.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data if isinstance(data, bytes) else data.encode())
    for name in ("rc", "output"):
        (job / name).unlink(missing_ok=True)
    cmdline = (
        "console=ttyS0 panic=-1 loglevel=4 cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1"
    )
    if hybrid:
        if not init:
            raise ValueError("hybrid: systemd mounts the cgroups; give it as init")
        cmdline = ("console=ttyS0 panic=-1 loglevel=4 systemd.unified_cgroup_hierarchy=0 "
                   "SYSTEMD_CGROUP_ENABLE_LEGACY_FORCE=1 vmhost.cgroups=systemd")  # fmt: skip
    if init:
        if any("," in a or " " in a for a in init):
            raise ValueError(f"init {init!r}: no spaces or commas in its arguments")
        cmdline += " vmhost.init=" + ",".join(init)
    if append:
        cmdline += " " + append
    accel = os.environ.get("OCIBOX_VM_ACCEL", "tcg")  # KVM guests hang here (nested virt)
    argv = [
        QEMU, "-accel", accel, "-cpu", "max" if accel == "tcg" else "host",
        "-m", str(memory_mb), "-smp", str(cpus), "-nodefaults", "-no-reboot",
        "-display", "none", "-serial", f"file:{job / 'console.log'}",
        "-kernel", str(image), "-initrd", str(ramfs), "-append", cmdline,
        "-virtfs", "local,path=/,mount_tag=host0,security_model=passthrough,readonly=on,"
        "multidevs=remap,id=host0",
        "-virtfs", f"local,path={job},mount_tag=job,security_model=passthrough,id=job",
    ]  # fmt: skip
    if disk_mb:
        disk = job / "disk.raw"
        with open(disk, "wb") as f:
            f.truncate(disk_mb << 20)
        argv += ["-drive", f"file={disk},if=virtio,format=raw,cache=unsafe"]
    with open(job / "qemu.log", "wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    rc_text = _text(job / "rc").strip()
    return Result(
        returncode=int(rc_text) if rc_text.lstrip("-").isdigit() else None,
        output=_text(job / "output"),
        console=_text(job / "console.log") + _text(job / "qemu.log"),
        job=job,
    )


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def main(argv: list[str] | None = None) -> int:
    """scripts/vm-run: boot, run a command, print its output, exit with its status."""
    import argparse

    p = argparse.ArgumentParser(prog="vm-run", description=__doc__.split("\n\n")[0])
    p.add_argument("--init", help="another PID 1 (argv, space-separated)")
    p.add_argument("--disk-mb", type=int, default=0, help="a blank virtio disk, /dev/vda")
    p.add_argument("--memory-mb", type=int, default=2048)
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--append", default="", help="more kernel command line")
    p.add_argument("--console", action="store_true", help="print the serial console too")
    p.add_argument("command", nargs="+", help="run with sh -c in the guest")
    args = p.parse_args(argv)
    reason = skip_reason()
    if reason:
        print(f"vm-run: {reason}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    r = boot(
        " ".join(args.command) if len(args.command) == 1 else shlex.join(args.command),
        init=args.init.split() if args.init else None,
        timeout=args.timeout,
        memory_mb=args.memory_mb,
        disk_mb=args.disk_mb,
        append=args.append,
    )
    if args.console or r.returncode is None:
        sys.stderr.write(r.console)
    sys.stdout.write(r.output)
    print(f"vm-run: {time.monotonic() - t0:.1f} s, exit {r.returncode}", file=sys.stderr)
    if r.returncode is None:
        print(f"vm-run: the job directory is kept: {r.job}", file=sys.stderr)
    else:
        shutil.rmtree(r.job, ignore_errors=True)
    return 125 if r.returncode is None else r.returncode


if __name__ == "__main__":
    raise SystemExit(main())

"""process.scheduler, process.ioPriority and linux.personality, as the runtime-spec says.

runc 1.1 knows none of these fields (it ignores them), so the spec is the
reference: what the container sees in /proc/self/stat and from busybox's
ionice, and what the host's chrt says of the container's process. Where the
fields are left out, ours and runc's containers must look the same.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess

import pytest

pytestmark = [pytest.mark.root, pytest.mark.peer]

# /proc/self/stat fields 19, 40, 41: nice, rt_priority, policy; then busybox's ionice.
SEES = "cut -d' ' -f19,40,41 /proc/self/stat; ionice"
_SYS_IOPRIO_GET = 252 if os.uname().machine == "x86_64" else 31


def _ioprio(pid: int) -> tuple[int, int]:
    libc = ctypes.CDLL(None, use_errno=True)
    value = libc.syscall(_SYS_IOPRIO_GET, 1, pid)  # IOPRIO_WHO_PROCESS
    assert value >= 0, os.strerror(ctypes.get_errno())
    return value >> 13, value & 0x1FFF


def _chrt(pid: int) -> str:
    chrt = shutil.which("chrt") or pytest.skip("chrt (util-linux) is needed")
    return subprocess.run([chrt, "-p", str(pid)], capture_output=True, text=True, check=True).stdout


def test_defaults_are_runcs(runc, ours, bundle):
    b = bundle.write(["sh", "-c", SEES])
    theirs = runc("run", "--bundle", b, runc.new_id()).stdout
    mine = ours("run", "--bundle", b, ours.new_id()).stdout
    assert mine == theirs


def test_batch_with_nice_and_io_priority(ours, bundle):
    def edit(cfg):
        cfg["process"]["scheduler"] = {"policy": "SCHED_BATCH", "nice": 7}
        cfg["process"]["ioPriority"] = {"class": "IOPRIO_CLASS_BE", "priority": 6}

    p = ours("run", "--bundle", bundle.write(["sh", "-c", SEES], edit), ours.new_id())
    assert p.stdout.split("\n")[:2] == ["7 0 3", "best-effort: prio 6"]
    cid = ours.new_id()
    ours("run", "-d", "--bundle", bundle.write(["sleep", "30"], edit), cid)
    pid = ours.state(cid)["pid"]
    assert "SCHED_BATCH" in _chrt(pid)
    assert os.getpriority(os.PRIO_PROCESS, pid) == 7
    assert _ioprio(pid) == (2, 6)
    ours("delete", "--force", cid)


def test_idle_io_class_and_idle_policy(ours, bundle):
    def edit(cfg):
        cfg["process"]["scheduler"] = {"policy": "SCHED_IDLE"}
        cfg["process"]["ioPriority"] = {"class": "IOPRIO_CLASS_IDLE", "priority": 0}

    p = ours("run", "--bundle", bundle.write(["sh", "-c", SEES], edit), ours.new_id())
    assert p.stdout.split("\n")[:2] == ["0 0 5", "idle"]


def test_fifo_with_priority_and_reset_on_fork(ours, bundle):
    """A real-time policy: the container's cpu cgroup needs real-time runtime of its own."""
    if not os.path.exists("/sys/fs/cgroup/cpu/cpu.rt_runtime_us"):
        pytest.skip("cgroup v1 cpu controller with real-time group scheduling needed")

    def edit(cfg):
        cfg["process"]["scheduler"] = {"policy": "SCHED_FIFO", "priority": 10,
                                       "flags": ["SCHED_FLAG_RESET_ON_FORK"]}  # fmt: skip
        cfg["linux"]["resources"]["cpu"] = {"realtimeRuntime": 10000, "realtimePeriod": 1000000}

    # The shell runs FIFO; a child it forks is back to SCHED_OTHER (reset on fork).
    script = "cut -d' ' -f40,41 /proc/self/stat; cut -d' ' -f40,41 /proc/$$/stat"
    p = ours("run", "--bundle", bundle.write(["sh", "-c", script], edit), ours.new_id())
    assert p.stdout.split() == ["0", "0", "10", "1"]
    cid = ours.new_id()
    ours("run", "-d", "--bundle", bundle.write(["sleep", "30"], edit), cid)
    out = _chrt(ours.state(cid)["pid"])
    assert "SCHED_FIFO|SCHED_RESET_ON_FORK" in out and "priority: 10" in out
    ours("delete", "--force", cid)


def test_fifo_refused_by_the_kernel_fails_create_clearly(ours, bundle):
    """Without real-time runtime in its cgroup the kernel refuses FIFO: create fails, in one line."""
    if not os.path.exists("/sys/fs/cgroup/cpu/cpu.rt_runtime_us"):
        pytest.skip("cgroup v1 cpu controller with real-time group scheduling needed")

    def edit(cfg):
        cfg["process"]["scheduler"] = {"policy": "SCHED_FIFO", "priority": 10}
        cfg["linux"]["resources"].pop("cpu", None)

    cid = ours.new_id()
    p = ours("create", "--bundle", bundle.write(["true"], edit), cid, check=False)
    assert p.returncode == 1
    assert p.stderr.strip() == (
        "ocibox-runtime: config.json: process.scheduler (SCHED_FIFO): Operation not permitted"
    )
    assert not (ours.root / cid).exists()


def test_deadline(ours, bundle):
    def edit(cfg):
        cfg["process"]["scheduler"] = {
            "policy": "SCHED_DEADLINE", "runtime": 2_000_000, "deadline": 8_000_000,
            "period": 10_000_000, "flags": ["SCHED_FLAG_RESET_ON_FORK"],
        }  # fmt: skip
        cfg["linux"]["resources"].pop("cpu", None)

    cid = ours.new_id()
    p = ours("run", "-d", "--bundle", bundle.write(["sleep", "30"], edit), cid, check=False)
    if p.returncode != 0 and "Device or resource busy" in p.stderr:
        pytest.skip("the kernel admits no more SCHED_DEADLINE bandwidth here")
    assert p.returncode == 0, p.stderr
    pid = ours.state(cid)["pid"]
    out = _chrt(pid)
    assert "SCHED_DEADLINE" in out
    assert "runtime/deadline/period parameters: 2000000/8000000/10000000" in out
    ours("delete", "--force", cid)


def test_exec_takes_its_own_scheduler(ours, bundle, tmp_path):
    cid = ours.new_id()
    ours("run", "-d", "--bundle", bundle.write(["sleep", "30"]), cid)
    pf = tmp_path / "p.json"
    pf.write_text('{"args": ["sh", "-c", "cut -d\' \' -f19,41 /proc/self/stat; ionice"],'
                  ' "cwd": "/", "env": ["PATH=/bin"],'
                  ' "scheduler": {"policy": "SCHED_BATCH", "nice": 3},'
                  ' "ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 2}}')  # fmt: skip
    p = ours("exec", "-p", str(pf), cid)
    assert p.stdout.split("\n")[:2] == ["3 3", "best-effort: prio 2"]
    ours("delete", "--force", cid)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("scheduler", {"policy": "SCHED_LOTTERY"}, "process.scheduler.policy: unknown policy 'SCHED_LOTTERY'"),
        ("scheduler", {"nice": 1}, "process.scheduler.policy: unknown policy None"),
        ("scheduler", {"policy": "SCHED_OTHER", "nice": 20}, "process.scheduler.nice must be from -20 to 19"),
        ("scheduler", {"policy": "SCHED_OTHER", "priority": 5}, "priority is only for SCHED_FIFO and SCHED_RR"),
        ("scheduler", {"policy": "SCHED_RR", "runtime": 5}, "only for SCHED_DEADLINE"),
        ("scheduler", {"policy": "SCHED_OTHER", "flags": ["SCHED_FLAG_FAST"]}, "unknown flag 'SCHED_FLAG_FAST'"),
        ("scheduler", {"policy": "SCHED_ISO"}, "SCHED_ISO is not implemented by Linux"),
        ("ioPriority", {"class": "IOPRIO_CLASS_BE", "priority": 8}, "priority must be an integer from 0 to 7"),
        ("ioPriority", {"class": "IOPRIO_CLASS_NONE", "priority": 0}, "ioPriority.class: unknown"),
    ],
)  # fmt: skip
def test_bad_values_fail_before_anything_exists(ours, bundle, field, value, message):
    def edit(cfg):
        cfg["process"].pop("scheduler", None)
        cfg["process"].pop("ioPriority", None)
        cfg["process"][field] = value

    cid = ours.new_id()
    p = ours("create", "--bundle", bundle.write(["true"], edit), cid, check=False)
    assert p.returncode == 1 and message in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) <= 2  # the message, and perhaps a hint
    assert not (ours.root / cid).exists()


def test_personality_flags(ours, bundle):
    """The spec defines no personality flags: an empty list is fine, any flag is refused."""

    def edit(cfg):
        cfg["linux"]["personality"] = {"domain": "LINUX32", "flags": []}

    p = ours("run", "--bundle", bundle.write(["sh", "-c", "uname -m"], edit), ours.new_id())
    assert p.stdout.strip() in ("i686", "armv8l", "armv7l")
    bundle.config["linux"]["personality"]["flags"] = ["ADDR_NO_RANDOMIZE"]
    cid = ours.new_id()
    p = ours("create", "--bundle", bundle.write(["true"]), cid, check=False)
    assert p.returncode == 1
    assert "linux.personality.flags: 'ADDR_NO_RANDOMIZE' is not a valid flag" in p.stderr
    assert not (ours.root / cid).exists()

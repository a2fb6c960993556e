"""runtime-tools' validation areas not covered elsewhere, checked against runc.

State of a stopped container, delete --force of a running one (every process
and cgroup gone), kill --all reaching every process, a hook's timeout, and
oomScoreAdj set and unset.
"""

from __future__ import annotations

import os
import time

import pytest

pytestmark = [pytest.mark.root, pytest.mark.peer]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _container_pids(init: int) -> list[int]:
    """Host pids in the pid namespace of ``init``."""
    ns = os.readlink(f"/proc/{init}/ns/pid")
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.readlink(f"/proc/{name}/ns/pid") == ns:
                    out.append(int(name))
            except OSError:
                pass
    return out


def _wait_gone(pids: list[int], timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if _alive(p)]
        if not left:
            return []
        time.sleep(0.02)
    return left


def test_state_of_a_stopped_container(both, bundle):
    """The spec's state of a stopped container: status stopped, the same id, bundle and
    annotations; runc reports pid 0 once the process is gone, and so do we."""
    cid = both.new_id()

    def edit(cfg):
        cfg["annotations"] = {"org.example.key": "value"}

    both("run", "-d", "--bundle", bundle.write(["true"], edit), cid)
    st = both.wait_status(cid, "stopped")
    assert st["status"] == "stopped" and st["id"] == cid and st["pid"] == 0
    assert st["bundle"] == str(bundle.path)
    assert st["annotations"] == {"org.example.key": "value"}
    assert both("start", cid, check=False).returncode == 1
    both("delete", cid)


def test_delete_force_on_running_kills_everything(both, bundle):
    """delete --force on a running container: every process of it dies, its cgroups go."""
    cid = both.new_id()
    both("run", "-d", "--bundle", bundle.write(["sh", "-c", "sleep 60 & sleep 60 & wait"]), cid)
    init = both.state(cid)["pid"]
    deadline = time.monotonic() + 5
    while len(_container_pids(init)) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    pids = _container_pids(init)
    assert len(pids) == 3
    with open(f"/proc/{init}/cgroup") as f:
        mine = [line.split(":", 2) for line in f.read().splitlines()]
    paths = [f"/sys/fs/cgroup/{c}{p}" for _, c, p in mine if c in ("memory", "pids")]
    both("delete", "--force", cid)
    assert _wait_gone(pids) == []
    assert not any(os.path.isdir(p) for p in paths), paths
    assert both("state", cid, check=False).returncode == 1


def test_kill_all_reaches_every_process(both, bundle):
    """kill --all signals each process, not just the init: children die too, even with the
    init ignoring the signal."""
    cid = both.new_id()
    # The children start before the trap: an ignored signal is inherited.
    b = bundle.write(["sh", "-c", "sleep 60 & sleep 60 & trap '' TERM; wait; sleep 60"])
    both("run", "-d", "--bundle", b, cid)
    init = both.state(cid)["pid"]
    deadline = time.monotonic() + 5
    while len(_container_pids(init)) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    children = [p for p in _container_pids(init) if p != init]
    assert len(children) == 2
    both("kill", "--all", cid, "TERM")
    assert _wait_gone(children) == []
    assert _alive(init)  # it ignores TERM and goes on to its last sleep
    assert both.state(cid)["status"] == "running"
    both("kill", "--all", cid, "KILL")
    assert both.wait_status(cid, "stopped")["status"] == "stopped"
    both("delete", cid)


def test_hook_timeout_fails_create(both, bundle):
    """A createRuntime hook that outlives its timeout fails create, soon after the timeout."""
    cid = both.new_id()

    def edit(cfg):
        cfg["hooks"] = {"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "20"],
                                           "timeout": 1}]}  # fmt: skip

    t0 = time.monotonic()
    p = both("create", "--bundle", bundle.write(["true"], edit), cid, check=False)
    took = time.monotonic() - t0
    assert p.returncode != 0
    assert took < 10, took
    assert "timed out" in p.stderr or "timeout" in p.stderr, p.stderr
    st = both("state", cid, check=False)
    assert st.returncode != 0 or '"stopped"' in st.stdout


@pytest.mark.parametrize("adj", [None, 700])
def test_oom_score_adj(runc, ours, bundle, adj):
    """Set, the container's process has it; unset, it keeps what it inherited (the same
    under both runtimes, started alike)."""

    def edit(cfg):
        cfg["process"].pop("oomScoreAdj", None)
        if adj is not None:
            cfg["process"]["oomScoreAdj"] = adj

    b = bundle.write(["cat", "/proc/self/oom_score_adj"], edit)
    theirs = runc("run", "--bundle", b, runc.new_id()).stdout.strip()
    mine = ours("run", "--bundle", b, ours.new_id()).stdout.strip()
    assert mine == theirs
    if adj is not None:
        assert mine == str(adj)
    else:
        with open("/proc/self/oom_score_adj") as f:
            assert mine == f.read().strip()


def test_oom_score_adj_below_ours_needs_cap_sys_resource(runc, ours, bundle):
    """Lowering oom_score_adj takes CAP_SYS_RESOURCE, which these machines lack: both
    runtimes fail create; ours says so in one line."""
    with open("/proc/self/oom_score_adj") as f:
        current = int(f.read())
    if current <= -1000:
        pytest.skip("oom_score_adj is already at its minimum")
    with open("/proc/self/status") as f:
        status = f.read()
    cap_eff = int(next(ln for ln in status.splitlines() if ln.startswith("CapEff:")).split()[1], 16)
    if cap_eff >> 24 & 1:  # CAP_SYS_RESOURCE
        pytest.skip("CAP_SYS_RESOURCE is held here: lowering is allowed")

    def edit(cfg):
        cfg["process"]["oomScoreAdj"] = current - 1

    b = bundle.write(["true"], edit)
    assert runc("run", "--bundle", b, runc.new_id(), check=False).returncode != 0
    cid = ours.new_id()
    p = ours("run", "--bundle", b, cid, check=False)
    assert p.returncode == 1
    assert p.stderr.strip() == (
        f"ocibox-runtime: config.json: oomScoreAdj {current - 1}: Permission denied"
    )
    assert not (ours.root / cid).exists()

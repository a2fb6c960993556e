"""kill of a paused container: SIGKILL thaws it (frozen tasks die only once thawed).

podman kill (SIGKILL by default) and ctr task kill -s KILL of a paused container
rely on it: runc signals, then thaws the cgroup for SIGKILL only. Another
signal leaves the container paused, pending.
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.root]


def test_kill_paused(both, bundle):
    cid = both.new_id()
    both("run", "-d", "--bundle", bundle.write(["sh", "-c", "trap '' USR1; sleep 1000"]), cid)
    both.wait_status(cid, "running")
    both("pause", cid)
    both("kill", cid, "USR1")
    assert both.state(cid)["status"] == "paused"
    both("kill", cid, "KILL")
    assert both.wait_status(cid, "stopped")["status"] == "stopped"
    both("delete", cid)

"""The process's stdio is handed to its user (uid) before it runs, as runc does.

A user other than root can then open /dev/stdout and /dev/stderr again (images
that log to /dev/stdout, under podman's conmon pipes); /dev/null stays root's.
"""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.root]


def test_stdio_owned_by_the_user(both, bundle):
    def edit(cfg):
        cfg["process"]["user"] = {"uid": 1000, "gid": 1000}

    # (>>: each open of /dev/stdout is a new file description; runc hands the process
    # pipes of its own, ours the caller's file)
    script = "echo out >> /dev/stdout; echo err >> /dev/stderr; stat -L -c %u /dev/stdout /dev/null >> /dev/stdout"
    cid = both.new_id()
    p = both("run", "--bundle", bundle.write(["sh", "-c", script], edit), cid, check=False)
    assert (p.returncode, p.stdout.split(), p.stderr) == (0, ["out", "1000", "0"], "err\n")
    cid = both.new_id()
    both("run", "-d", "--bundle", bundle.write(["sleep", "30"]), cid)
    p = both("exec", "--user", "1000:1000", cid, "sh", "-c", script, check=False)
    assert (p.returncode, p.stdout.split(), p.stderr) == (0, ["out", "1000", "0"], "err\n")
    both("delete", "--force", cid)

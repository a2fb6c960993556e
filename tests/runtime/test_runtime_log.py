"""--debug, --log and --log-format: runc's log lines, and the steps worth a debug line."""

from __future__ import annotations

import json
import re
import time

import pytest

pytestmark = [pytest.mark.root, pytest.mark.peer]

TEXT = re.compile(
    r'^time="(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z)" level=(\w+) msg="((?:[^"\\]|\\.)*)"'
)


def _json_lines(path) -> list[dict]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    for entry in lines:
        assert {"level", "msg", "time"} <= set(entry), entry
        time.strptime(entry["time"][:19], "%Y-%m-%dT%H:%M:%S")
    return lines


def test_json_log_lines_are_runcs(both, bundle, tmp_path):
    """Both runtimes write JSON lines with level, msg and time; the error is the last line."""
    log = tmp_path / f"{both.name}.json"
    opts = ("--debug", "--log", str(log), "--log-format", "json")
    cid = both.new_id()
    both(*opts, "run", "--bundle", bundle.write(["true"]), cid)
    p = both(*opts, "kill", cid, "KILL", check=False)  # run removed it: an error
    assert p.returncode == 1
    lines = _json_lines(log)
    assert {e["level"] for e in lines} == {"debug", "error"}
    assert lines[-1]["level"] == "error" and "does not exist" in lines[-1]["msg"]


def test_text_log_lines_are_runcs(both, bundle, tmp_path):
    log = tmp_path / f"{both.name}.log"
    cid = both.new_id()
    both("--debug", "--log", str(log), "run", "--bundle", bundle.write(["true"]), cid)
    lines = log.read_text().splitlines()
    assert lines and all(TEXT.match(line) for line in lines), lines[:3]
    assert {TEXT.match(line).group(3) for line in lines} == {"debug"}


def test_debug_without_log_goes_to_stderr(both, bundle):
    p = both("--debug", "run", "--bundle", bundle.write(["true"]), both.new_id())
    lines = p.stderr.splitlines()
    assert lines and all(TEXT.match(line) for line in lines), p.stderr


def test_no_debug_no_lines(both, bundle, tmp_path):
    """Without --debug a successful command logs nothing, to the file or to stderr."""
    log = tmp_path / f"{both.name}-quiet.log"
    cid = both.new_id()
    p = both("--log", str(log), "run", "--bundle", bundle.write(["true"]), cid)
    assert p.stderr == ""
    assert not log.exists() or log.read_text() == ""


def test_debug_lines_say_each_step(ours, bundle, tmp_path):
    """ours: creation steps (cgroups, init, ready), hooks run, signals sent, deletion."""
    log = tmp_path / "steps.json"
    opts = ("--debug", "--log", str(log), "--log-format", "json")

    def edit(cfg):
        cfg["hooks"] = {k: [{"path": "/bin/true"}] for k in ("prestart", "createContainer",
                                                           "poststart", "poststop")}  # fmt: skip

    cid = ours.new_id()
    ours(*opts, "create", "--bundle", bundle.write(["sleep", "30"], edit), cid)
    pid = ours.state(cid)["pid"]
    ours(*opts, "start", cid)
    ours(*opts, "kill", cid, "KILL")
    ours.wait_status(cid, "stopped")
    ours(*opts, "delete", cid)
    msgs = [e["msg"] for e in _json_lines(log)]
    text = "\n".join(msgs)
    for want in (
        f"container {cid}: creating from bundle",
        f"process {pid} joined cgroups /sys/fs/cgroup/",
        "init: mounts before the cgroup ones done; waiting for its cgroups",
        "running prestart hook 0 (/bin/true)",
        "running createContainer hook 0 (/bin/true)",  # run by the init, logged by the parent
        f"init {pid}: ready, waiting for start",
        f"container {cid}: created, init {pid} waits on exec.fifo",
        f"container {cid}: started",
        "running poststart hook 0 (/bin/true)",
        f"container {cid}: sending signal 9 to process {pid}",
        f"container {cid}: removing cgroups",
        "running poststop hook 0 (/bin/true)",
    ):
        assert want in text, want
    # In order: each step's first line comes after the previous one's.
    order = ["creating from bundle", "running prestart", "running createContainer",
             "waits on exec.fifo", "started", "sending signal", "removing cgroups",
             "running poststop"]  # fmt: skip
    firsts = [next(i for i, m in enumerate(msgs) if w in m) for w in order]
    assert firsts == sorted(firsts)


def test_debug_logs_a_failed_create(ours, bundle, tmp_path):
    log = tmp_path / "failed.log"
    cid = ours.new_id()
    p = ours("--debug", "--log", str(log), "create", "--bundle", bundle.write(["no-such"]), cid,
             check=False)  # fmt: skip
    assert p.returncode == 1
    lines = [TEXT.match(line) for line in log.read_text().splitlines()]
    assert all(lines)
    assert any(m.group(3) == "debug" and "create failed" in m.group(4) for m in lines)
    assert lines[-1].group(3) == "error" and "executable file not found" in lines[-1].group(4)

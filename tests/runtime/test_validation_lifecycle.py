"""runtime-tools' lifecycle areas, under runc and ocibox-runtime with the same expectations.

Areas (runtime-spec runtime.md, config.md "POSIX-platform Hooks"): operations
without an id or on a container that does not exist, state through the
lifecycle, kill of created, running and stopped containers, delete of
non-stopped ones, config.json edited after create, the pid file, and hooks
(their stdin state, args, env, order, timeouts and failures). Where runc departs
from the spec, the test says so and checks ours the spec's way.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

pytestmark = [pytest.mark.root, pytest.mark.peer]


@pytest.mark.parametrize("op", ["state", "start", "kill", "delete", "pause", "resume", "ps"])
def test_operation_without_an_id_fails(both, op):
    p = both(op, check=False)
    assert p.returncode != 0
    assert "Traceback" not in p.stderr


def test_create_without_an_id_fails(both, bundle):
    p = both("create", "--bundle", bundle.write(["true"]), check=False)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert both("list", "-q").stdout.split() == []


@pytest.mark.parametrize("op", [("state",), ("start",), ("kill", "KILL"), ("delete",),
                                ("delete", "--force"), ("pause",), ("resume",)])  # fmt: skip
def test_operation_on_a_container_that_does_not_exist_fails(both, op):
    cid = both.new_id()
    p = both(op[0], *op[1:], cid, check=False)
    if op == ("delete", "--force"):
        # runc: --force on a missing container is not an error (idempotent cleanup); ours too
        assert p.returncode == 0
    else:
        assert p.returncode != 0, p.stdout
        assert "Traceback" not in p.stderr


def test_state_through_the_lifecycle(both, bundle):
    annotations = {"org.example.key": "value", "org.example.other": "x y"}
    b = bundle.write(["sleep", "30"], lambda c: c.update(annotations=annotations))
    cid = both.new_id()
    both("create", "--bundle", b, cid)
    created = both.state(cid)
    assert created["status"] == "created" and created["id"] == cid
    assert created["bundle"] == b and os.path.isabs(created["bundle"])
    assert created["pid"] > 0 and os.path.exists(f"/proc/{created['pid']}")
    assert created["annotations"] == annotations
    assert created["ociVersion"].startswith("1.")
    both("start", cid)
    running = both.state(cid)
    assert running["status"] == "running" and running["pid"] == created["pid"]
    assert running["annotations"] == annotations
    both("kill", cid, "KILL")
    stopped = both.wait_status(cid, "stopped")
    assert stopped["status"] == "stopped" and stopped["annotations"] == annotations
    assert stopped["id"] == cid and stopped["bundle"] == b
    # kill_no_effect: a signal to a stopped container fails and changes nothing
    assert both("kill", cid, "KILL", check=False).returncode != 0
    assert both.state(cid) == stopped
    both("delete", cid)
    assert both("state", cid, check=False).returncode != 0


def test_kill_created_container_delivers_the_signal(both, bundle):
    """kill of a created container sends the signal to its init (it has not run the program)."""
    cid = both.new_id()
    both("create", "--bundle", bundle.write(["sleep", "30"]), cid)
    pid = both.state(cid)["pid"]
    both("kill", cid, "KILL")
    st = both.wait_status(cid, "stopped")
    assert st["status"] == "stopped"
    assert not os.path.exists(f"/proc/{pid}/exe") or _zombie(pid)
    # start after that: an error
    assert both("start", cid, check=False).returncode != 0
    both("delete", cid)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in "ZX"
    except OSError:
        return True


def test_delete_of_running_container_has_no_effect(both, bundle):
    cid = both.new_id()
    both("run", "-d", "--bundle", bundle.write(["sleep", "30"]), cid)
    before = both.state(cid)
    p = both("delete", cid, check=False)
    assert p.returncode != 0
    assert both.state(cid) == before
    os.kill(before["pid"], 0)  # still there
    both("delete", "--force", cid)
    assert both("state", cid, check=False).returncode != 0


def test_delete_of_created_container(runc, ours, bundle):
    """The spec: deleting a container that is not stopped MUST fail and have no effect.

    runc 1.1 deletes a created container without --force (it kills the waiting init).
    """
    b = bundle.write(["sleep", "30"])
    for rt in (runc, ours):
        cid = rt.new_id()
        rt("create", "--bundle", b, cid)
        p = rt("delete", cid, check=False)
        if rt is runc:
            assert p.returncode == 0 and rt("state", cid, check=False).returncode != 0
        else:
            assert p.returncode != 0 and rt.state(cid)["status"] == "created"
            rt("delete", "--force", cid)


def test_config_edited_after_create_does_not_change_the_container(both, bundle, tmp_path):
    out = tmp_path / f"out-{both.name}"
    out.mkdir()

    def edit(cfg):
        cfg["mounts"].append({"destination": "/out", "type": "bind", "source": str(out),
                              "options": ["bind"]})  # fmt: skip
        cfg["process"]["env"] = ["PATH=/bin", "WHICH=first"]

    b = bundle.write(["sh", "-c", "echo $WHICH $0 > /out/f", "created"], edit)
    cid = both.new_id()
    both("create", "--bundle", b, cid)
    bundle.config["process"]["env"] = ["PATH=/bin", "WHICH=second"]
    bundle.write(["sh", "-c", "echo $WHICH $0 > /out/f", "edited"])
    both("start", cid)
    both.wait_status(cid, "stopped")
    assert (out / "f").read_text() == "first created\n"
    both("delete", cid)


def test_pid_file_relative_and_for_run(both, bundle, tmp_path):
    """--pid-file: written by create (and run -d) with the init's pid; a relative path is the caller's."""
    work = tmp_path / f"cwd-{both.name}"
    work.mkdir()
    b = bundle.write(["sleep", "30"])
    cid = both.new_id()
    # no pipes: the created container holds its stdio open
    p = subprocess.run([*both.argv, "--root", str(both.root), "create", "--pid-file", "rel.pid",
                        "--bundle", b, cid], cwd=work, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)  # fmt: skip
    assert p.returncode == 0
    assert (work / "rel.pid").read_text() == str(both.state(cid)["pid"])
    both("delete", "--force", cid)
    cid = both.new_id()
    both("run", "-d", "--pid-file", str(work / "run.pid"), "--bundle", b, cid)
    assert int((work / "run.pid").read_text()) == both.state(cid)["pid"]
    both("delete", "--force", cid)


# --- hooks --------------------------------------------------------------------


def _record(where, name):
    """A hook that saves its stdin, args and env under ``where``/``name``."""
    return {"path": "/bin/sh",
            "args": ["sh", "-c", f'cat > {where}/{name}.state; echo "$@" > {where}/{name}.args; '
                     f'env | sort > {where}/{name}.env', "hook-arg0", "a", "b c"],
            "env": ["HOOK_VAR=yes", "OTHER=1=2"]}  # fmt: skip


@pytest.mark.parametrize("kind", ["prestart", "createRuntime", "poststart", "poststop"])
def test_hook_stdin_args_and_env(runc, ours, bundle, tmp_path, kind):
    """Every hook gets the state on stdin, its args and exactly its env (hooks_stdin)."""
    annotations = {"org.example.hook": "hook stdin test"}
    results = {}
    for rt in (runc, ours):
        where = tmp_path / rt.name
        where.mkdir()
        b = bundle.write(["sleep", "0.2"], lambda c, w=where: c.update(
            annotations=annotations, hooks={kind: [_record(w, kind)]}))  # fmt: skip
        cid = rt.new_id()
        rt("create", "--bundle", b, cid)
        pid = rt.state(cid)["pid"]
        rt("start", cid)
        rt.wait_status(cid, "stopped")
        rt("delete", cid)
        st = json.loads((where / f"{kind}.state").read_text())
        assert st["id"] == cid and st["bundle"] == b
        assert st["annotations"] == annotations
        assert st["ociVersion"].startswith("1.")
        if kind != "poststop":
            assert st["pid"] == pid
        assert (where / f"{kind}.args").read_text() == "a b c\n"
        env = (where / f"{kind}.env").read_text().split()
        assert "HOOK_VAR=yes" in env and "OTHER=1=2" in env
        assert not any(e.startswith("PATH=") for e in env)  # only what the hook's env says
        results[rt.name] = st["status"]
    # The spec's statuses: prestart and createRuntime run while the container is
    # being created, poststart once it runs, poststop after it stopped.
    want = {"prestart": "creating", "createRuntime": "creating", "poststart": "running",
            "poststop": "stopped"}[kind]  # fmt: skip
    assert results["ocibox-runtime"] == want
    # runc 1.1 runs poststart hooks at the end of create, before start: "created".
    assert results["runc"] == (want if kind != "poststart" else "created")


def test_hooks_of_one_kind_run_in_order(both, bundle, tmp_path):
    log = tmp_path / f"order-{both.name}"

    def hook(n):
        return {"path": "/bin/sh", "args": ["sh", "-c", f"echo {n} >> {log}"]}

    b = bundle.write(["true"], lambda c: c.update(
        hooks={k: [hook(f"{k}{i}") for i in range(3)] for k in ("prestart", "poststop")}))  # fmt: skip
    both("run", "--bundle", b, both.new_id())
    assert log.read_text().split() == [f"prestart{i}" for i in range(3)] + [
        f"poststop{i}" for i in range(3)]  # fmt: skip


def test_prestart_failure_stops_and_deletes_the_container(both, bundle, tmp_path):
    """prestart_fail: an error, the program never runs, and the container is gone."""
    out = tmp_path / f"out-{both.name}"
    out.mkdir()
    poststop_log = tmp_path / f"poststop-{both.name}"

    def edit(cfg):
        cfg["root"]["readonly"] = False
        cfg["mounts"].append({"destination": "/out", "type": "bind", "source": str(out),
                              "options": ["bind"]})  # fmt: skip
        cfg["hooks"] = {"prestart": [{"path": "/bin/false", "args": ["false"]}],
                        "poststop": [{"path": "/bin/sh",
                                      "args": ["sh", "-c", f"echo ran > {poststop_log}"]}]}  # fmt: skip

    b = bundle.write(["sh", "-c", "touch /out/output"], edit)
    cid = both.new_id()
    created = both("create", "--bundle", b, cid, check=False)
    started = both("start", cid, check=False) if created.returncode == 0 else created
    assert created.returncode != 0 or started.returncode != 0
    time.sleep(0.3)
    assert not (out / "output").exists()
    assert both("state", cid, check=False).returncode != 0
    assert cid not in both("list", "-q").stdout.split()


def test_hook_timeout(both, bundle, tmp_path):
    """A hook that outlives its timeout fails the operation, within about that time."""
    hook = {"path": "/bin/sh", "args": ["sh", "-c", "exec sleep 20"], "timeout": 1}
    b = bundle.write(["true"], lambda c: c.update(hooks={"prestart": [hook]}))
    cid = both.new_id()
    t0 = time.monotonic()
    p = both("create", "--bundle", b, cid, check=False)
    assert p.returncode != 0
    assert time.monotonic() - t0 < 10
    assert both("state", cid, check=False).returncode != 0


def test_hook_timeout_with_a_child_holding_its_output(runc, ours, bundle):
    """The hook's own child keeps stdout open: the timeout must still end the operation.

    runc 1.1 kills the hook at its timeout but then waits for its output to
    close, so it fails only once the child is done (here after 6 s).
    """
    hook = {"path": "/bin/sh", "args": ["sh", "-c", "sleep 6; echo late"], "timeout": 1}
    b = bundle.write(["true"], lambda c: c.update(hooks={"prestart": [hook]}))
    took = {}
    for rt in (runc, ours):
        t0 = time.monotonic()
        p = rt("create", "--bundle", b, rt.new_id(), check=False, timeout=60)
        took[rt.name] = time.monotonic() - t0
        assert p.returncode != 0
    assert took["runc"] >= 6
    assert took["ocibox-runtime"] < 4


def test_poststart_failure_fails_runc_create(runc, bundle, tmp_path):
    """runc 1.1 departs from the spec: it runs poststart in create and fails create with it."""
    fail = {"path": "/bin/sh", "args": ["sh", "-c", "exit 9"]}
    cid = runc.new_id()
    p = runc("create", "--bundle", bundle.write(["sleep", "1"], lambda c: c.update(
        hooks={"poststart": [fail]})), cid, check=False)  # fmt: skip
    assert p.returncode != 0 and "exit status 9" in p.stderr


def test_poststart_and_poststop_failures_are_warnings(ours, bundle, tmp_path):
    """The spec's way (ours only, see above for runc): warnings, and the lifecycle goes on."""
    both = ours
    log = tmp_path / f"log-{both.name}"

    def edit(cfg):
        fail = {"path": "/bin/sh", "args": ["sh", "-c", "exit 9"]}
        ok = {"path": "/bin/sh", "args": ["sh", "-c", f"echo $0 >> {log}", "ok"]}
        cfg["hooks"] = {"poststart": [fail, ok], "poststop": [fail, ok]}

    cid = both.new_id()
    both("create", "--bundle", bundle.write(["sleep", "1"], edit), cid)
    p = both("start", cid, check=False)
    assert p.returncode == 0, p.stderr  # poststart failed: start still succeeds
    assert "warning" in p.stderr and "poststart hook 0" in p.stderr
    assert both.state(cid)["status"] == "running"
    both.wait_status(cid, "stopped")
    p = both("delete", cid, check=False)
    assert p.returncode == 0, p.stderr  # poststop failed: delete still succeeds
    assert "warning" in p.stderr and "poststop hook 0" in p.stderr
    assert both("state", cid, check=False).returncode != 0
    # the remaining hooks of the kind still ran
    assert log.read_text().split() == ["ok", "ok"]


@pytest.mark.parametrize("cid", ["../escape", "a/b", ".", "..", "with space"])
def test_create_with_an_unusable_id_fails(both, bundle, cid):
    p = both("create", "--bundle", bundle.write(["true"]), cid, check=False)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert not (both.root.parent / "escape").exists()
    assert both("list", "-q").stdout.split() == []


def test_container_killed_from_outside_is_stopped(both, bundle):
    """state follows the process: an init killed behind the runtime's back is stopped."""
    cid = both.new_id()
    both("run", "-d", "--bundle", bundle.write(["sleep", "30"]), cid)
    os.kill(both.state(cid)["pid"], 9)
    assert both.wait_status(cid, "stopped")["status"] == "stopped"
    assert both("kill", cid, "TERM", check=False).returncode != 0
    both("delete", cid)
    # and a created one: start then fails
    cid = both.new_id()
    both("create", "--bundle", bundle.write(["sleep", "30"]), cid)
    os.kill(both.state(cid)["pid"], 9)
    assert both.wait_status(cid, "stopped")["status"] == "stopped"
    assert both("start", cid, check=False).returncode != 0
    both("delete", cid)


@pytest.mark.parametrize("kind", ["prestart", "createRuntime"])
def test_hook_that_cannot_run_fails_create(both, bundle, tmp_path, kind):
    (tmp_path / "not-exec").write_text("#!/bin/sh\n")
    for path in ("/no/such/hook", str(tmp_path / "not-exec")):
        b = bundle.write(["true"], lambda c, p=path: c.update(hooks={kind: [{"path": p}]}))
        cid = both.new_id()
        p = both("create", "--bundle", b, cid, check=False)
        assert p.returncode != 0 and "Traceback" not in p.stderr
        assert both("state", cid, check=False).returncode != 0

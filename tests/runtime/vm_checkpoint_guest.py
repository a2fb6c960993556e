"""Run inside the vmhost guest by test_checkpoint_vm.py: checkpoint and restore a counting
busybox container under runc and under ocibox-runtime; records go into one JSON file.

    python vm_checkpoint_guest.py REPO OUT.json

The container counts once a second into /data/count, a bind mount of a guest
directory (an external mount for criu), in cgroup /ckpt/<runtime>/c1. Nothing is
asserted here: the host compares the records.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
import traceback

REPO, OUT = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(REPO, "src"))

from ocibox.runtime.spec import default_config  # noqa: E402

RUNTIMES = {"runc": ["runc"], "ours": [sys.executable, "-m", "ocibox.runtime.cli"]}
ENV = dict(os.environ, PYTHONPATH=os.path.join(REPO, "src"))
COUNTER = "i=0; while true; do echo $i > /data/count; i=$((i+1)); sleep 1; done"
results: dict = {}
calls = 0
# Each hook appends a line to a log: its kind and the state it was given (JSON); and to
# log.prog its kind and the command line of the state's pid at that moment.
HOOK = (r"""s=$(cat); printf '%s %s\n' {kind} "$s" >> {log}; """
        r"""p=$(echo "$s" | sed -n 's/.*"pid": *\([0-9][0-9]*\).*/\1/p'); """
        r"""printf '%s %s\n' {kind} "$(tr '\0' ' ' < /proc/$p/cmdline 2>/dev/null)" >> {log}.prog""")


def detached(name: str, *args: str) -> dict:
    """run -d (or restore -d): the container's stdio is /dev/null, which criu can dump."""
    p = subprocess.run([*RUNTIMES[name], "--root", f"/run/ck-{name}", *args], env=ENV,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=120)  # fmt: skip
    return {"rc": p.returncode}


def rt(name: str, *args: str, timeout: float = 120) -> dict:
    """One runtime command; its output through files, not pipes (a detached container keeps
    its stdio open, and would hold a pipe for ever), each call its own."""
    global calls
    calls += 1
    out, err = f"/tmp/rt/{calls}.out", f"/tmp/rt/{calls}.err"
    os.makedirs("/tmp/rt", exist_ok=True)
    with open(out, "w") as o, open(err, "w") as e:
        try:
            p = subprocess.run([*RUNTIMES[name], "--root", f"/run/ck-{name}", *args], env=ENV,
                               stdin=subprocess.DEVNULL, stdout=o, stderr=e,
                               timeout=timeout)  # fmt: skip
            rc = p.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    with open(out) as o, open(err) as e:
        return {"rc": rc, "out": o.read(), "err": e.read()}


def count(name: str) -> int:
    try:
        with open(f"/tmp/data-{name}/count") as f:
            return int(f.read().strip() or -1)
    except (OSError, ValueError):
        return -1


def wait_count(name: str, above: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = count(name)
        if n > above:
            return n
        time.sleep(0.2)
    return count(name)


def bundle(name: str, cid: str = "c1", script: str = COUNTER, terminal: bool = False) -> str:
    path = f"/tmp/bundles/{name}-{cid}"
    shutil.rmtree(path, ignore_errors=True)
    rootfs = f"{path}/rootfs"
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "data"):
        os.makedirs(f"{rootfs}/{d}")
    shutil.copy2("/bin/busybox", f"{rootfs}/bin/busybox")
    for applet in ("sh", "sleep", "echo", "cat"):
        os.symlink("busybox", f"{rootfs}/bin/{applet}")
    data = f"/tmp/data-{name}" if cid == "c1" else f"/tmp/data-{name}-{cid}"
    shutil.rmtree(data, ignore_errors=True)
    os.makedirs(data)
    config = default_config(terminal=terminal)
    config["process"]["args"] = ["sh", "-c", script]
    config["root"]["readonly"] = False
    config["mounts"].append({"destination": "/data", "type": "bind", "source": data,
                             "options": ["rbind", "rw"]})  # fmt: skip
    config["linux"]["cgroupsPath"] = f"/ckpt/{name}/{cid}"
    log = f"/tmp/hooks-{name}-{cid}.log"
    config["hooks"] = {kind: [{"path": "/bin/sh", "args": ["sh", "-c", HOOK.format(kind=kind, log=log)]}]
                       for kind in ("prestart", "createRuntime", "poststart", "poststop")}  # fmt: skip
    config["linux"]["resources"] = {"pids": {"limit": 50}}
    with open(f"{path}/config.json", "w") as f:
        json.dump(config, f, indent=1)
    return path


def hooks(name: str, cid: str) -> list[list]:
    """[kind, status, whether a pid was given] for each hook run so far."""
    out = []
    try:
        with open(f"/tmp/hooks-{name}-{cid}.log") as f:
            for line in f:
                kind, _, data = line.strip().partition(" ")
                st = json.loads(data)
                out.append([kind, st.get("status"), bool(st.get("pid"))])
    except (OSError, ValueError) as e:
        out.append(["unreadable", str(e), False])
    return out


def hook_programs(name: str, cid: str) -> list[list]:
    """[kind, the program the state's pid ran then (its basename)] for each hook run so far."""
    out = []
    try:
        with open(f"/tmp/hooks-{name}-{cid}.log.prog") as f:
            for line in f:
                kind, _, cmdline = line.strip().partition(" ")
                # criu's processes may retitle themselves ("criu: ...")
                prog = os.path.basename(cmdline.split(" ")[0]).rstrip(":") if cmdline else ""
                out.append([kind, prog])
    except OSError as e:
        out.append(["unreadable", str(e)])
    return out


def log_errors(path: str) -> list[str]:
    try:
        with open(path, errors="replace") as f:
            return [ln.strip() for ln in f if "Error" in ln or "Warn" in ln][-12:]
    except OSError:
        return []


def cgroup_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return next((ln[3:].strip() for ln in f if ln.startswith("0::")), "")
    except OSError:
        return ""


def state(name: str, cid: str) -> dict:
    r = rt(name, "state", cid)
    if r["rc"] != 0:
        return {"rc": r["rc"], "err": r["err"]}
    return json.loads(r["out"])


def scenario(name: str) -> dict:
    rec: dict = {}
    b = bundle(name)
    img, work = f"/tmp/img-{name}", f"/tmp/work-{name}"
    rec["run"] = detached(name, "run", "-d", "--bundle", b, "c1")
    rec["before"] = wait_count(name, 2)
    rec["hooks_run"] = hooks(name, "c1")
    rec["checkpoint"] = rt(name, "checkpoint", "--image-path", img, "--work-path", work, "c1")
    rec["state_after_checkpoint"] = state(name, "c1")
    rec["dump_errors"] = log_errors(f"{work}/dump.log")
    rec["hooks_checkpoint"] = hooks(name, "c1")[len(rec["hooks_run"]):]
    rec["after_checkpoint"] = count(name)
    time.sleep(3)
    rec["later"] = count(name)  # the same: nothing counts while checkpointed
    rec["images"] = sorted(os.listdir(img)) if os.path.isdir(img) else []
    rec["restore"] = rt(name, "restore", "-d", "--image-path", img, "--work-path", work,
                        "--bundle", b, "c1")  # fmt: skip
    rec["restore_errors"] = log_errors(f"{work}/restore.log")
    st = state(name, "c1")
    rec["state_after_restore"] = st
    rec["cgroup_after_restore"] = cgroup_of(st.get("pid") or 0)
    n = len(rec["hooks_run"]) + len(rec["hooks_checkpoint"])
    rec["hooks_restore"] = hooks(name, "c1")[n:]
    rec["hook_programs_restore"] = hook_programs(name, "c1")[n:]
    rec["first_after_restore"] = wait_count(name, rec["later"] - 1)
    rec["resumed"] = wait_count(name, rec["later"] + 1)
    rec["leave_running"] = rt(name, "checkpoint", "--leave-running", "--image-path",
                              f"{img}-2", "c1")  # fmt: skip
    rec["state_after_leave_running"] = state(name, "c1").get("status")
    n = count(name)
    rec["still_counting"] = wait_count(name, n) > n
    rec["kill"] = rt(name, "kill", "c1", "KILL")
    time.sleep(0.5)
    rec["delete"] = rt(name, "delete", "-f", "c1")
    rec["created_checkpoint"] = created_checkpoint(name, b)
    rec["foreground"] = foreground(name)
    rec["failing_hook"] = failing_hook(name)
    rec["no_cgroup_config"] = no_cgroup_config(name)
    if name == "ours":  # runc's criu is driven by RPC (swrk): no action script to drop
        rec["hooks_without_setup_namespaces"] = hooks_without_setup_namespaces(name)
    rec["pre_dump"] = pre_dump(name)
    rec["noexec_work"] = noexec_work(name)
    rec["page_server"] = page_server(name)
    rec["lazy"] = lazy(name)
    rec["lsm"] = lsm(name)
    rec["killed_at_start"] = killed_restorer(name, "start")
    rec["killed_in_hook"] = killed_restorer(name, "hook")
    return rec


def lsm(name: str) -> dict:
    """restore --lsm-profile none:NAME --lsm-mount-context CONTEXT: criu takes both (no
    profile given; no mount has a context= to replace without SELinux), the count goes on."""
    b = bundle(name, "ls")
    img = f"/tmp/img-{name}-ls"
    rec = {"run": detached(name, "run", "-d", "--bundle", b, "ls")}
    wait_count(f"{name}-ls", 0)
    rec["checkpoint"] = rt(name, "checkpoint", "--image-path", img, "ls")
    later = count(f"{name}-ls")
    rec["restore"] = rt(name, "restore", "-d", "--lsm-profile", "none:unconfined",
                        "--lsm-mount-context", "system_u:object_r:container_file_t:s0",
                        "--image-path", img, "--bundle", b, "ls")  # fmt: skip
    rec["restore_errors"] = log_errors(f"{img}/restore.log")
    rec["resumed"] = wait_count(f"{name}-ls", later, 30) > later
    rt(name, "delete", "-f", "ls")
    return rec


def cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def criu_procs() -> set[str]:
    """'PID CMDLINE' of each criu process, and of each action script of ours."""
    out = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        line = cmdline(pid)
        if os.path.basename(line.split(" ")[0]).startswith("criu") or "action.sh" in line:
            out.add(f"{pid} {line}")
    return out


def procs_in(cgroup: str) -> list[str]:
    try:
        with open(f"/sys/fs/cgroup{cgroup}/cgroup.procs") as f:
            return [f"{pid} {cmdline(pid)}" for pid in f.read().split()]
    except OSError:
        return []


# As --criu: kills the runtime that runs it, then becomes criu.
KILL_PARENT = '#!/bin/sh\nkill -9 $PPID\nexec criu "$@"\n'


def killed_restorer(name: str, when: str) -> dict:
    """restore -d whose runtime is SIGKILLed as criu starts ("start": a --criu wrapper
    kills its parent, then execs criu) or while the prestart hook runs ("hook"): what is
    left a while later (criu, its action script, processes in the container's cgroup),
    then what delete --force leaves."""
    cid = f"k{when[0]}"
    b = bundle(name, cid)
    img, cgroup = f"/tmp/img-{name}-{cid}", f"/ckpt/{name}/{cid}"
    rec: dict = {"run": detached(name, "run", "-d", "--bundle", b, cid)}
    wait_count(f"{name}-{cid}", 0)
    rec["checkpoint"] = rt(name, "checkpoint", "--image-path", img, cid)
    marker = f"/tmp/{name}-{cid}.in-hook"
    with open(f"{b}/config.json") as f:
        config = json.load(f)
    config["hooks"]["prestart"] = [{"path": "/bin/sh", "args": ["sh", "-c", f"touch {marker}; sleep 20"]}]
    with open(f"{b}/config.json", "w") as f:
        json.dump(config, f)
    flags = []
    if when == "start":
        with open("/tmp/criu-kill-parent", "w") as f:
            f.write(KILL_PARENT)
        os.chmod("/tmp/criu-kill-parent", 0o755)
        flags = ["--criu", "/tmp/criu-kill-parent"]
    before = criu_procs()
    with open(f"/tmp/killed-{name}-{cid}.err", "w") as err:
        p = subprocess.Popen([*RUNTIMES[name], "--root", f"/run/ck-{name}", *flags, "restore",
                              "-d", "--image-path", img, "--bundle", b, cid], env=ENV,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip
    if when == "hook":
        deadline = time.monotonic() + 120
        while not os.path.exists(marker) and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        rec["in_hook"] = os.path.exists(marker)
        p.kill()
    try:
        rec["restorer"] = p.wait(timeout=120)
    except subprocess.TimeoutExpired:
        p.kill()
        rec["restorer"] = "timeout"
    deadline = time.monotonic() + 60  # what is left once things have settled
    left: list = ["?"]
    while left and time.monotonic() < deadline:
        time.sleep(1)
        left = sorted(criu_procs() - before) + procs_in(cgroup)
    rec["left"] = left
    rec["restore_errors"] = log_errors(f"{img}/restore.log")
    rec["state"] = state(name, cid)
    d = f"/run/ck-{name}/{cid}"
    rec["state_dir"] = sorted(os.listdir(d)) if os.path.isdir(d) else None
    n = count(f"{name}-{cid}")
    time.sleep(2)
    rec["counting"] = count(f"{name}-{cid}") != n
    rec["delete"] = rt(name, "delete", "--force", cid)
    time.sleep(1)
    rec["left_after_delete"] = sorted(criu_procs() - before) + procs_in(cgroup)
    rec["cgroup_after_delete"] = os.path.exists(f"/sys/fs/cgroup{cgroup}")
    rec["state_dir_after_delete"] = os.path.exists(d)
    rec["files_after_delete"] = sorted(f for f in os.listdir(img) if f.startswith("restore-"))
    return rec


def foreground(name: str) -> dict:
    """restore without -d: the runtime waits, returns the exit status, deletes the container."""
    script = "i=0; while [ $i -lt 8 ]; do echo $i > /data/count; i=$((i+1)); sleep 1; done; exit 7"
    b = bundle(name, "fg", script)
    img = f"/tmp/img-{name}-fg"
    rec = {"run": detached(name, "run", "-d", "--bundle", b, "fg")}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not os.path.exists(f"/tmp/data-{name}-fg/count"):
        time.sleep(0.2)
    rec["checkpoint"] = rt(name, "checkpoint", "--image-path", img, "fg")
    rec["restore"] = rt(name, "restore", "--image-path", img, "--bundle", b, "fg", timeout=120)
    with open(f"/tmp/data-{name}-fg/count") as f:
        rec["last"] = f.read().strip()
    rec["state_after"] = state(name, "fg")
    return rec


def no_cgroup_config(name: str) -> dict:
    """A container whose config has neither linux.resources nor cgroupsPath: run, its
    cgroup; checkpointed and restored, its cgroup again, and what needs one (ps, pause,
    resume, kill --all)."""
    b = bundle(name, "nc")
    with open(f"{b}/config.json") as f:
        config = json.load(f)
    del config["linux"]["cgroupsPath"], config["linux"]["resources"], config["hooks"]
    with open(f"{b}/config.json", "w") as f:
        json.dump(config, f)
    img = f"/tmp/img-{name}-nc"
    rec = {"run": detached(name, "run", "-d", "--bundle", b, "nc")}
    wait_count(f"{name}-nc", 0)
    rec["cgroup_at_run"] = cgroup_of(state(name, "nc").get("pid") or 0)
    rec["checkpoint"] = rt(name, "checkpoint", "--image-path", img, "nc")
    rec["restore"] = rt(name, "restore", "-d", "--image-path", img, "--bundle", b, "nc")
    pid = state(name, "nc").get("pid") or 0
    rec["cgroup_after_restore"] = cgroup_of(pid)
    ps = rt(name, "ps", "--format", "json", "nc")
    rec["ps"] = {"rc": ps["rc"], "has_init": ps["rc"] == 0 and pid in json.loads(ps["out"] or "[]")}
    rec["pause"] = rt(name, "pause", "nc")["rc"]
    rec["paused"] = state(name, "nc").get("status")
    rec["resume"] = rt(name, "resume", "nc")["rc"]
    rec["kill_all"] = rt(name, "kill", "--all", "nc", "KILL")["rc"]
    time.sleep(0.5)
    rec["delete"] = rt(name, "delete", "-f", "nc")["rc"]
    rec["cgroup_left"] = bool(rec["cgroup_after_restore"]) and os.path.exists(
        f"/sys/fs/cgroup{rec['cgroup_after_restore']}")
    return rec


NO_SCRIPT = """#!/bin/sh
# criu without the --action-script it is given: it never reaches ours' setup-namespaces
skip=
for a; do
    shift
    if [ -n "$skip" ]; then skip=; continue; fi
    if [ "$a" = --action-script ]; then skip=1; continue; fi
    set -- "$@" "$a"
done
exec {criu} "$@"
"""


def hooks_without_setup_namespaces(name: str) -> dict:
    """restore (ours, --criu a wrapper) where criu runs no action script: no hook runs,
    as none runs under runc when criu sends no setup-namespaces notification."""
    b = bundle(name, "ns")
    img = f"/tmp/img-{name}-ns"
    rec = {"run": detached(name, "run", "-d", "--bundle", b, "ns")}
    wait_count(f"{name}-ns", 0)
    rec["checkpoint"] = rt(name, "checkpoint", "--image-path", img, "ns")
    n = len(hooks(name, "ns"))
    wrapper = "/tmp/criu-no-script"
    with open(wrapper, "w") as f:
        f.write(NO_SCRIPT.format(criu=shutil.which("criu")))
    os.chmod(wrapper, 0o755)
    rec["restore"] = rt(name, "--criu", wrapper, "restore", "-d", "--image-path", img,
                        "--bundle", b, "ns")  # fmt: skip
    rec["status"] = state(name, "ns").get("status")
    rec["hooks_restore"] = hooks(name, "ns")[n:]
    rt(name, "delete", "-f", "ns")
    return rec


def failing_hook(name: str) -> dict:
    """restore with a prestart hook that fails: the restore fails, nothing is left running."""
    b = bundle(name, "fh")
    img = f"/tmp/img-{name}-fh"
    rec = {"run": detached(name, "run", "-d", "--bundle", b, "fh")}
    wait_count(f"{name}-fh", 0)
    rec["checkpoint"] = rt(name, "checkpoint", "--image-path", img, "fh")
    with open(f"{b}/config.json") as f:
        config = json.load(f)
    config["hooks"]["prestart"] = [{"path": "/bin/sh", "args": ["sh", "-c", "echo no way >&2; exit 3"]}]
    with open(f"{b}/config.json", "w") as f:
        json.dump(config, f)
    rec["restore"] = rt(name, "restore", "-d", "--image-path", img, "--bundle", b, "fh")
    rec["state"] = state(name, "fh")
    n = count(f"{name}-fh")
    time.sleep(3)
    rec["counting"] = count(f"{name}-fh") != n
    rec["cgroup_left"] = os.path.exists(f"/sys/fs/cgroup/ckpt/{name}/fh")
    rt(name, "delete", "-f", "fh")
    return rec


def noexec_work(name: str) -> dict:
    """checkpoint and restore with --work-path on a noexec mount (a /tmp of that kind):
    the hooks still run during the restore."""
    b = bundle(name, "nx")
    img, work = f"/tmp/img-{name}-nx", f"/tmp/noexec-{name}"
    os.makedirs(work, exist_ok=True)
    rec = {"mount": subprocess.run(["mount", "-t", "tmpfs", "-o", "noexec", "tmpfs", work]).returncode}
    rec["run"] = detached(name, "run", "-d", "--bundle", b, "nx")
    wait_count(f"{name}-nx", 1)
    rec["checkpoint"] = rt(name, "checkpoint", "--image-path", img, "--work-path", work, "nx")
    n = len(hooks(name, "nx"))
    later = count(f"{name}-nx")
    rec["restore"] = rt(name, "restore", "-d", "--image-path", img, "--work-path", work,
                        "--bundle", b, "nx")  # fmt: skip
    rec["hook_programs_restore"] = hook_programs(name, "nx")[n:]
    rec["resumed"] = wait_count(f"{name}-nx", later, 30) > later
    rt(name, "delete", "-f", "nx")
    return rec


def page_blocks(images: str) -> int:
    return sum(os.stat(f"{images}/{f}").st_blocks for f in os.listdir(images) if f.startswith("pages-"))


def pre_dump(name: str) -> dict:
    """checkpoint --pre-dump, then a dump on top of it (--parent-path) with --auto-dedup:
    the restore resumes, and what the dump took again is punched out of the parent's pages."""
    b = bundle(name, "pd")
    base = f"/tmp/img-{name}-pd"
    rec = {"run": detached(name, "run", "-d", "--bundle", b, "pd")}
    wait_count(f"{name}-pd", 1)
    rec["pre_dump"] = rt(name, "checkpoint", "--pre-dump", "--image-path", f"{base}/1", "pd")
    rec["state_after_pre_dump"] = state(name, "pd").get("status")
    rec["blocks_before"] = page_blocks(f"{base}/1")
    wait_count(f"{name}-pd", count(f"{name}-pd"))
    rec["dump"] = rt(name, "checkpoint", "--parent-path", "../1", "--auto-dedup",
                     "--image-path", f"{base}/2", "pd")  # fmt: skip
    rec["blocks_after"] = page_blocks(f"{base}/1")
    rec["parent_link"] = os.path.islink(f"{base}/2/parent")
    later = count(f"{name}-pd")
    rec["restore"] = rt(name, "restore", "-d", "--image-path", f"{base}/2", "--bundle", b, "pd")
    rec["resumed"] = wait_count(f"{name}-pd", later, 30) > later
    rt(name, "delete", "-f", "pd")
    return rec


def page_server(name: str) -> dict:
    """checkpoint --page-server: the memory pages go to `criu page-server` (into its own
    directory), the rest to --image-path; restored from the two put together."""
    b = bundle(name, "ps")
    img, pages = f"/tmp/img-{name}-ps", f"/tmp/pages-{name}-ps"
    os.makedirs(pages, exist_ok=True)
    port = {"runc": 27001, "ours": 27002}[name]
    rec = {"run": detached(name, "run", "-d", "--bundle", b, "ps")}
    wait_count(f"{name}-ps", 1)
    # -d: it returns once it listens; it takes one dump, then exits
    rec["server"] = subprocess.run(["criu", "page-server", "-d", "-D", pages, "--port", str(port),
                                    "-o", "page-server.log"], capture_output=True, text=True,
                                   timeout=60).returncode  # fmt: skip
    rec["checkpoint"] = rt(name, "checkpoint", "--page-server", f"127.0.0.1:{port}",
                           "--image-path", img, "ps")  # fmt: skip
    rec["pages_at_server"] = sorted(f for f in os.listdir(pages) if f.startswith("pages-"))
    rec["pages_here"] = sorted(f for f in os.listdir(img) if f.startswith("pages-")) if os.path.isdir(img) else []
    for f in os.listdir(pages):
        if f.endswith(".img"):
            shutil.copy(f"{pages}/{f}", f"{img}/{f}")
    later = count(f"{name}-ps")
    rec["restore"] = rt(name, "restore", "-d", "--image-path", img, "--bundle", b, "ps")
    rec["resumed"] = wait_count(f"{name}-ps", later, 30) > later
    rt(name, "delete", "-f", "ps")
    return rec


def lazy(name: str) -> dict:
    """Lazy migration, as runc's test does it: checkpoint --lazy-pages serves the pages
    (NUL on --status-fd once it does), `criu lazy-pages` fetches them for a restore
    --lazy-pages of another container (id, cgroup, data directory), and the checkpoint
    ends once all are taken."""
    b, b2 = bundle(name, "lz"), bundle(name, "lzr")
    img, work = f"/tmp/img-{name}-lz", f"/tmp/work-{name}-lz"
    port = {"runc": 27011, "ours": 27012}[name]
    rec: dict = {"run": detached(name, "run", "-d", "--bundle", b, "lz")}
    wait_count(f"{name}-lz", 1)
    r, w = os.pipe()
    with open(f"/tmp/lazy-{name}.err", "w") as err:
        cpt = subprocess.Popen([*RUNTIMES[name], "--root", f"/run/ck-{name}", "checkpoint",
                                "--lazy-pages", "--page-server", f"127.0.0.1:{port}",
                                "--status-fd", str(w), "--image-path", img, "--work-path", work,
                                "lz"], env=ENV, pass_fds=(w,), stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip
    os.close(w)
    rec["ready"] = bool(select.select([r], [], [], 120)[0]) and os.read(r, 1) == b"\0"
    os.close(r)
    later = count(f"{name}-lz")
    lp = subprocess.Popen(["criu", "lazy-pages", "--page-server", "--address", "127.0.0.1",
                           "--port", str(port), "-D", img, "-o", "lazy-pages.log"],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)  # fmt: skip
    time.sleep(1)  # its socket in the images directory, which restore connects to
    rec["restore"] = rt(name, "restore", "-d", "--lazy-pages", "--image-path", img,
                        "--bundle", b2, "lzr")  # fmt: skip
    rec["restore_errors"] = log_errors(f"{img}/restore.log")
    for proc, key in ((cpt, "checkpoint_rc"), (lp, "lazy_pages_rc")):
        try:
            rec[key] = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            rec[key] = "timeout"
    with open(f"/tmp/lazy-{name}.err") as f:
        rec["checkpoint_err"] = f.read()
    rec["dump_errors"] = log_errors(f"{work}/dump.log")
    rec["first_restored"] = wait_count(f"{name}-lzr", -1, 30)
    rec["count_before"] = later
    rec["state_old"] = state(name, "lz")
    rec["state_new"] = state(name, "lzr").get("status")
    rt(name, "delete", "-f", "lzr")
    rt(name, "delete", "-f", "lz")
    return rec


def terminal_cross(dumper: str, restorer: str) -> dict:
    """A container with a terminal checkpointed by one runtime, restored (onto a console
    socket) by the other: what each does with the other's images."""
    b = bundle(dumper, "ttx", TICKER, terminal=True)
    img = f"/tmp/img-{dumper}-to-{restorer}-tty"
    rec: dict = {}
    c1 = Console(f"/tmp/console-{dumper}-x1.sock")
    rec["run"] = rt(dumper, "run", "-d", "--console-socket", c1.path, "--bundle", b, "ttx")
    rec["ticked"] = c1.wait_master() and c1.read_until(r"tick 1\b")
    rec["checkpoint"] = rt(dumper, "checkpoint", "--image-path", img, "ttx")
    rec["images"] = sorted(os.listdir(img)) if os.path.isdir(img) else []
    if c1.master is not None:
        c1.read_until("$^", timeout=5)
    rec["last_before"] = max(c1.ticks(), default=-1)
    c2 = Console(f"/tmp/console-{dumper}-x2.sock")
    rec["restore"] = rt(restorer, "restore", "-d", "--console-socket", c2.path, "--image-path",
                        img, "--bundle", b, "ttx")  # fmt: skip
    rec["restore_errors"] = log_errors(f"{img}/restore.log")
    rec["state"] = state(restorer, "ttx")
    rec["got_master"] = rec["restore"]["rc"] == 0 and c2.wait_master(30)
    if rec["got_master"]:
        rec["ticked_after"] = c2.read_until(rf"tick {rec['last_before'] + 1}\b", 30)
        rec["output_after"] = c2.text()[-300:]
    rec["cgroup_left"] = os.path.exists(f"/sys/fs/cgroup/ckpt/{dumper}/ttx")
    rt(restorer, "delete", "-f", "ttx")
    return rec


def created_checkpoint(name: str, b: str) -> dict:
    """checkpoint of a container that was only created: refused before criu runs."""
    rt(name, "create", "--bundle", b, "c3")
    r = rt(name, "checkpoint", "--image-path", f"/tmp/img3-{name}", "c3")
    rt(name, "delete", "-f", "c3")
    return r


def cross(dumper: str, restorer: str) -> dict:
    """One runtime's images restored by the other."""
    b = bundle(dumper)
    img = f"/tmp/img-{dumper}-to-{restorer}"
    r = detached(dumper, "run", "-d", "--bundle", b, "cx")
    wait_count(dumper, 1)
    rec = {"run": r, "checkpoint": rt(dumper, "checkpoint", "--image-path", img, "cx")}
    later = count(dumper)
    rec["restore"] = rt(restorer, "restore", "-d", "--image-path", img, "--bundle", b, "cx")
    rec["resumed"] = wait_count(dumper, later, 30) > later
    rt(restorer, "delete", "-f", "cx")
    return rec


# On a terminal: a tick a second in the background, and what is typed echoed back.
TICKER = ("(i=0; while true; do echo tick $i; echo $i > /data/count; i=$((i+1)); sleep 1; done) & "
          "while read l; do echo got:$l; done")  # fmt: skip


class Console:
    """A --console-socket: takes one connection, receives the pty's master, reads it."""

    def __init__(self, path: str) -> None:
        self.path = path
        if os.path.exists(path):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(1)
        self.master: int | None = None
        self.out = b""
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        conn, _ = self.sock.accept()
        _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
        conn.close()
        self.master = fds[0] if fds else None

    def wait_master(self, timeout: float = 60) -> bool:
        self.thread.join(timeout)
        return self.master is not None

    def read_until(self, pattern: str, timeout: float = 60) -> bool:
        """Read the master until ``pattern`` shows in all that was read, or it ends."""
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.text()) and time.monotonic() < deadline:
            if not select.select([self.master], [], [], 0.5)[0]:
                continue
            try:
                data = os.read(self.master, 4096)
            except OSError:  # EIO: no slave any more
                data = b""
            if not data:
                break
            self.out += data
        return bool(re.search(pattern, self.text()))

    def text(self) -> str:
        return self.out.decode(errors="replace")

    def ticks(self) -> list[int]:
        return [int(n) for n in re.findall(r"tick (\d+)", self.text())]


def terminal(name: str) -> dict:
    """A container with a terminal, created with a console socket: checkpointed, restored
    with another console socket, whose master carries the output on and takes input."""
    b = bundle(name, "tty", TICKER, terminal=True)
    img, work = f"/tmp/img-{name}-tty", f"/tmp/work-{name}-tty"
    rec: dict = {}
    c1 = Console(f"/tmp/console-{name}-1.sock")
    rec["run"] = rt(name, "run", "-d", "--console-socket", c1.path, "--bundle", b, "tty")
    rec["got_master"] = c1.wait_master()
    rec["ticked"] = rec["got_master"] and c1.read_until(r"tick 2\b")
    rec["checkpoint"] = rt(name, "checkpoint", "--image-path", img, "--work-path", work, "tty")
    rec["dump_errors"] = log_errors(f"{work}/dump.log")
    if rec["got_master"]:
        c1.read_until("$^", timeout=5)  # what was written before the dump, until EIO
    rec["last_before"] = max(c1.ticks(), default=-1)
    c2 = Console(f"/tmp/console-{name}-2.sock")
    rec["restore"] = rt(name, "restore", "-d", "--console-socket", c2.path, "--image-path", img,
                        "--work-path", work, "--bundle", b, "tty")  # fmt: skip
    rec["restore_errors"] = log_errors(f"{work}/restore.log")
    rec["state"] = state(name, "tty").get("status")
    rec["got_master_after"] = c2.wait_master(30)
    if rec["got_master_after"]:
        rec["ticked_after"] = c2.read_until(rf"tick {rec['last_before'] + 2}\b")
        os.write(c2.master, b"ping\n")
        rec["echoed"] = c2.read_until(r"got:ping")
        rec["ticks_after"] = c2.ticks()
        rec["output_after"] = c2.text()[-300:]
        # Once more: the restored container's terminal is dumped and replaced in turn.
        rec["checkpoint2"] = rt(name, "checkpoint", "--image-path", f"{img}-2", "tty")
        c2.read_until("$^", timeout=5)
        rec["last_before2"] = max(c2.ticks(), default=-1)
        c3 = Console(f"/tmp/console-{name}-3.sock")
        rec["restore2"] = rt(name, "restore", "-d", "--console-socket", c3.path,
                             "--image-path", f"{img}-2", "--bundle", b, "tty")  # fmt: skip
        rec["ticked_after2"] = c3.wait_master(30) and c3.read_until(
            rf"tick {rec['last_before2'] + 1}\b")
        rec["ticks_after2"] = c3.ticks()
    rt(name, "kill", "tty", "KILL")
    time.sleep(0.5)
    rt(name, "delete", "-f", "tty")
    return rec


def terminal_foreground(name: str) -> dict:
    """restore, in the foreground and with no console socket, of a container with a
    terminal, from a terminal: the runtime joins the new pty to its stdio (both ways)
    and returns the container's exit status."""
    script = ("(i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done) & "
              "read l; echo got:$l; exit 5")  # fmt: skip
    b = bundle(name, "ttyfg", script, terminal=True)
    img = f"/tmp/img-{name}-ttyfg"
    rec: dict = {}
    c1 = Console(f"/tmp/console-{name}-fg.sock")
    rec["run"] = rt(name, "run", "-d", "--console-socket", c1.path, "--bundle", b, "ttyfg")
    rec["ticked"] = c1.wait_master() and c1.read_until(r"tick 1\b")
    rec["checkpoint"] = rt(name, "checkpoint", "--image-path", img, "ttyfg")
    if c1.master is not None:
        c1.read_until("$^", timeout=5)
    rec["last_before"] = max(c1.ticks(), default=-1)
    master, slave = os.openpty()
    proc = subprocess.Popen([*RUNTIMES[name], "--root", f"/run/ck-{name}", "restore",
                             "--image-path", img, "--bundle", b, "ttyfg"], env=ENV,
                            stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True)  # fmt: skip
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 120
    typed = False
    while time.monotonic() < deadline:
        text = out.decode(errors="replace")
        if not typed and re.search(rf"tick {rec['last_before'] + 2}\b", text):
            os.write(master, b"bye\n")  # through the runtime to the container's terminal
            typed = True
        if select.select([master], [], [], 0.5)[0]:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the runtime has exited
                break
            if not data:
                break
            out += data
        elif proc.poll() is not None:
            break
    os.close(master)
    try:
        rec["rc"] = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        rec["rc"] = "timeout"
    text = out.decode(errors="replace")
    rec["output"] = text[-400:]
    rec["ticks_after"] = [int(n) for n in re.findall(r"tick (\d+)", text)]
    rec["echoed"] = "got:bye" in text
    rec["state_after"] = state(name, "ttyfg")
    rt(name, "delete", "-f", "ttyfg")
    return rec


def main() -> int:
    subprocess.run(["ip", "link", "set", "lo", "up"])  # criu's kerndat opens a TCP socket
    for args in (["check"], ["check", "--all"]):
        p = subprocess.run(["criu", *args], capture_output=True, text=True)
        results[f"criu {' '.join(args)}"] = {"rc": p.returncode, "out": p.stdout + p.stderr}
    for name in RUNTIMES:
        try:
            results[name] = scenario(name)
        except Exception:
            results[name] = {"error": traceback.format_exc()}
    for name in RUNTIMES:
        try:
            results[f"{name} terminal"] = terminal(name)
            results[f"{name} terminal"]["foreground"] = terminal_foreground(name)
        except Exception:
            results[f"{name} terminal"] = {"error": traceback.format_exc()}
    for dumper, restorer in (("runc", "ours"), ("ours", "runc")):
        key = f"{dumper} to {restorer}"
        try:
            results[key] = cross(dumper, restorer)
        except Exception:
            results[key] = {"error": traceback.format_exc()}
    for dumper, restorer in (("runc", "ours"), ("ours", "runc")):
        key = f"{dumper} to {restorer} terminal"
        try:
            results[key] = terminal_cross(dumper, restorer)
        except Exception:
            results[key] = {"error": traceback.format_exc()}
    with open(OUT, "w") as f:
        json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

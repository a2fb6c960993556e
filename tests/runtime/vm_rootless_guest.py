"""Run inside the vmhost guest (pure cgroup v2) by test_rootless_v2_vm.py: runc and
ocibox-runtime run by an unprivileged user to whom root delegated a cgroup subtree,
as systemd delegates user@.service; every observation goes into one JSON file.

    python vm_rootless_guest.py REPO OUT.json

The layout (made here, as root):

    /deleg          root's; subtree_control +cpu +memory +pids
    /deleg/u        the user's (the directory, cgroup.procs, cgroup.subtree_control,
                    cgroup.threads): the delegated subtree
    /deleg/u/shell  the user's; each runtime is started from it (root moves the shell)
    /part/u/shell   the same, but /part enables pids alone (memory is not delegated)
    /plain/shell    root's: nothing delegated

The bundle is `runc spec --rootless` run by the user (its uid mapped to root),
with a cgroupsPath and limits per scenario. Nothing is asserted here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import traceback

from vm_guest_common import cat, run_scenarios  # beside this script, on its sys.path

REPO, OUT = sys.argv[1], sys.argv[2]
CG = "/sys/fs/cgroup"
UID = 4321  # no passwd entry needed: ids are all the runtimes and the kernel look at
MIB = 1 << 20
_LAUNCHER = os.path.join(REPO, ".venv", "bin", "ocibox-runtime")
_LAUNCH = ("import sys; sys.path.insert(0, {src!r}); from ocibox.runtime.cli import main; "
           "sys.argv[0] = 'ocibox-runtime'; sys.exit(main())")  # fmt: skip
# the lean launcher runs Debian's python3, which the user can reach (the venv's may be
# under /root); else that python3 with the checkout on sys.path
OURS = ([_LAUNCHER] if os.access(_LAUNCHER, os.X_OK)
        else ["/usr/bin/python3", "-c", _LAUNCH.format(src=os.path.join(REPO, "src"))])  # fmt: skip
RUNTIMES = {"runc": [shutil.which("runc") or "/usr/sbin/runc"], "ours": OURS}
FILES = ("memory.max", "pids.max", "cgroup.controllers", "cgroup.subtree_control", "cgroup.freeze")
WORK = "/tmp/rl"
results: dict = {}


def put(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def as_user(argv: list[str], start_in: str, cwd: str = WORK) -> dict:
    """``argv`` as the user, from a shell root first moves into cgroup ``start_in``."""
    script = (f"echo $$ > {CG}{start_in}/cgroup.procs && exec setpriv --reuid={UID} "
              f'--regid={UID} --clear-groups "$@"')  # fmt: skip
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": WORK}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.run(["sh", "-c", script, "sh", *argv], stdin=subprocess.DEVNULL,
                           stdout=out, stderr=err, cwd=cwd, env=env, timeout=300)  # fmt: skip
        out.seek(0)
        err.seek(0)
        return {"rc": p.returncode, "out": out.read().decode(errors="replace"),
                "err": err.read().decode(errors="replace")}  # fmt: skip


def rt(name: str, start_in: str, *args: str) -> dict:
    return as_user([*RUNTIMES[name], "--root", f"{WORK}/root-{name}", *args], start_in)


def own_cgroup(pid: int) -> str | None:
    text = cat(f"/proc/{pid}/cgroup") or ""
    return next((line[3:] for line in text.splitlines() if line.startswith("0::")), None)


def files(cg: str) -> dict:
    out = {name: cat(f"{CG}{cg}/{name}") for name in FILES}
    out["owner"] = os.stat(f"{CG}{cg}").st_uid if os.path.isdir(f"{CG}{cg}") else None
    return out


# --- setup -------------------------------------------------------------------


def delegate(cg: str) -> None:
    """Hand ``cg`` to the user as systemd hands a Delegate=yes unit."""
    os.makedirs(f"{CG}{cg}", exist_ok=True)
    for name in ("", "cgroup.procs", "cgroup.subtree_control", "cgroup.threads"):
        os.chown(os.path.join(f"{CG}{cg}", name), UID, UID)


def setup() -> dict:
    os.makedirs(f"{CG}/deleg/u/shell")
    put(f"{CG}/deleg/cgroup.subtree_control", "+cpu +memory +pids")
    delegate("/deleg/u")
    delegate("/deleg/u/shell")
    os.makedirs(f"{CG}/part/u/shell")
    put(f"{CG}/part/cgroup.subtree_control", "+pids")
    delegate("/part/u")
    delegate("/part/u/shell")
    os.makedirs(f"{CG}/plain/shell")
    os.makedirs(f"{CG}/deleg/other")  # root's, beside the user's subtree
    os.makedirs(WORK)
    os.chmod(WORK, 0o755)
    os.chown(WORK, UID, UID)
    rootfs = f"{WORK}/rootfs"
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp"):
        os.makedirs(f"{rootfs}/{d}")
    shutil.copy2("/bin/busybox", f"{rootfs}/bin/busybox")
    for applet in ("sh", "sleep", "cat", "true", "ps"):
        os.symlink("busybox", f"{rootfs}/bin/{applet}")
    spec = as_user([RUNTIMES["runc"][0], "spec", "--rootless"], "/plain/shell")
    with open(f"{WORK}/config.json") as f:
        base = json.load(f)
    base["process"]["terminal"] = False
    base["root"] = {"path": rootfs, "readonly": True}
    put(f"{WORK}/base.json", json.dumps(base))
    return {"spec": spec, "maps": base["linux"]["uidMappings"],
            "root_subtree_control": cat(f"{CG}/cgroup.subtree_control"),
            "mounts": [line for line in open("/proc/self/mountinfo") if "cgroup" in line]}  # fmt: skip


def bundle(name: str, args: list[str], resources: dict | None, cgroups_path: str | None) -> str:
    with open(f"{WORK}/base.json") as f:
        config = json.load(f)
    config["process"]["args"] = args
    if resources is not None:
        config["linux"]["resources"] = resources
    if cgroups_path is not None:
        config["linux"]["cgroupsPath"] = cgroups_path
    path = f"{WORK}/b-{name}"
    os.makedirs(path)
    put(f"{path}/config.json", json.dumps(config))
    os.chown(path, UID, UID)
    return path


LIMITS = {"memory": {"limit": 64 * MIB}, "pids": {"limit": 33}}


def created(name: str, cid: str, start_in: str, b: str) -> dict:
    """create, then where the init is and what its cgroup holds."""
    r = {"create": rt(name, start_in, "create", "--bundle", b, cid)}
    st = json.loads(rt(name, start_in, "state", cid)["out"] or "{}")
    cg = r["cgroup"] = own_cgroup(st.get("pid", 0)) if r["create"]["rc"] == 0 else None
    r["files"] = files(cg) if cg else None
    return r


def deleted(name: str, cid: str, start_in: str, r: dict) -> None:
    r["delete"] = rt(name, start_in, "delete", "--force", cid)
    cg = r.get("cgroup")
    r["left"] = os.path.exists(f"{CG}{cg}") if cg and cg != start_in else None


# --- scenarios -----------------------------------------------------------------


def scenario_delegated(name: str) -> dict:
    """A relative, an absolute and no cgroupsPath under the delegated subtree, with limits;
    the third is paused, resumed, exec'd into and listed before delete."""
    out = {}
    for label, path in (("relative", f"rel-{name}"), ("absolute", f"/deleg/u/abs-{name}"),
                        ("none", None)):  # fmt: skip
        cid = f"{label}-{name}"
        b = bundle(cid, ["sleep", "100000"], LIMITS, path)
        r = out[label] = created(name, cid, "/deleg/u/shell", b)
        r["parent_subtree_control"] = cat(f"{CG}/deleg/u/cgroup.subtree_control")
        if label == "none" and r["create"]["rc"] == 0:
            rt(name, "/deleg/u/shell", "start", cid)
            r["pause"] = rt(name, "/deleg/u/shell", "pause", cid)
            r["paused"] = files(r["cgroup"])["cgroup.freeze"]
            r["resume"] = rt(name, "/deleg/u/shell", "resume", cid)
            r["exec"] = rt(name, "/deleg/u/shell", "exec", cid, "cat", "/proc/self/cgroup")
            r["ps"] = rt(name, "/deleg/u/shell", "ps", cid)
            r["update"] = rt(name, "/deleg/u/shell", "update", "--pids-limit", "44", cid)
            r["updated"] = cat(f"{CG}{r['cgroup']}/pids.max")
        deleted(name, cid, "/deleg/u/shell", r)
    return out


def scenario_no_limits(name: str) -> dict:
    """spec --rootless as it is (no resources, no cgroupsPath), from the delegated cgroup."""
    cid = f"nolim-{name}"
    r = created(name, cid, "/deleg/u/shell", bundle(cid, ["sleep", "100000"], None, None))
    deleted(name, cid, "/deleg/u/shell", r)
    return r


def scenario_refused(name: str) -> dict:
    """What is out of reach: a cgroupsPath in root's cgroup, limits with no cgroupsPath
    from root's cgroup, and a memory limit where only pids is delegated."""
    out = {}
    for label, start_in, resources, path in (
        ("root_path", "/deleg/u/shell", LIMITS, "/deleg/other/x"),
        ("plain_limits", "/plain/shell", LIMITS, None),
        ("plain_nothing", "/plain/shell", None, None),
        ("part_pids", "/part/u/shell", {"pids": {"limit": 9}}, None),
        ("part_memory", "/part/u/shell", LIMITS, None),
    ):  # fmt: skip
        cid = f"{label}-{name}"
        r = out[label] = created(name, cid, start_in, bundle(cid, ["sleep", "100000"],
                                                             resources, path))  # fmt: skip
        deleted(name, cid, start_in, r)
        top = f"{CG}{os.path.dirname(start_in)}"
        r["made"] = sorted(d for d in os.listdir(top) if os.path.isdir(f"{top}/{d}"))
    return out


def main() -> None:
    try:
        results["host"] = setup()
    except Exception:
        results["host"] = {"error": traceback.format_exc()}
    run_scenarios((scenario_delegated, scenario_no_limits, scenario_refused), RUNTIMES, results, OUT)


if __name__ == "__main__":
    main()

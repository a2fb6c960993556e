"""Rootless containers: runc and ocibox-runtime run by an unprivileged user, side by side.

As root, the tests make the user if it is missing, build a bundle it owns under
/tmp and run both runtimes as that user (setpriv). Our runtime runs from the
source tree with an interpreter the user can reach (the venv's may sit under
/root, which is 0700).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from ocibox.runtime.spec import default_config

pytestmark = [pytest.mark.root, pytest.mark.peer]

USER = "ocibox-rootless"
SRC = str(Path(__file__).resolve().parents[2] / "src")
_LAUNCH = ("import sys; sys.path.insert(0, {src!r}); from ocibox.runtime.cli import main; "
           "sys.argv[0] = 'ocibox-runtime'; sys.exit(main())")  # fmt: skip


def _need(program: str) -> str:
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
    if path is None:
        pytest.skip(f"{program!r} is not installed")
    return path


class User:
    def __init__(self, pw: pwd.struct_passwd, python: str) -> None:
        self.uid, self.gid, self.name = pw.pw_uid, pw.pw_gid, pw.pw_name
        self.python = python

    def run(self, argv: list[str], *, cwd: str | None = None, env: dict | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess:  # fmt: skip
        """``argv`` as the user; stdout and stderr through files (a container keeps its stdio)."""
        base = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": "/",
                "USER": self.name}  # fmt: skip
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.run(
                ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", *argv],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd,
                env={**base, **(env or {})}, timeout=timeout,
            )  # fmt: skip
            out.seek(0)
            err.seek(0)
            proc.stdout = out.read().decode(errors="replace")
            proc.stderr = err.read().decode(errors="replace")
        return proc


@pytest.fixture(scope="module")
def user() -> User:
    if os.geteuid() != 0:
        pytest.skip("needs root: makes an unprivileged user and switches to it")
    _need("setpriv")
    try:
        pw = pwd.getpwnam(USER)
    except KeyError:
        subprocess.run([_need("useradd"), "--no-create-home", "--shell", "/usr/sbin/nologin",
                        USER], check=True, capture_output=True)  # fmt: skip
        pw = pwd.getpwnam(USER)
    probe = User(pw, "").run([_need("unshare"), "--user", "--map-root-user", "true"])
    if probe.returncode != 0:
        pytest.skip(f"unprivileged user namespaces are unavailable: {probe.stderr.strip()}")
    for python in (sys.executable, "/usr/bin/python3"):
        # through a shell: setpriv's own exec still passes /root (0700) with root's
        # capabilities, a program the user's shell runs does not
        ok = User(pw, python).run(["sh", "-c", 'exec "$@"', "sh", python, "-c",
                                   _LAUNCH.format(src=SRC), "--version"])  # fmt: skip
        if ok.returncode == 0:
            return User(pw, python)
    pytest.skip(f"no Python interpreter that user {USER} can run reaches {SRC}")


class Side:
    """One runtime, run by the user, with a --root the user owns."""

    def __init__(self, name: str, argv: list[str], user: User, root: str) -> None:
        self.name, self.argv, self.user, self.root = name, argv, user, root

    def __call__(self, *args: str, cwd: str | None = None, env: dict | None = None,
                 root: bool = True) -> subprocess.CompletedProcess:  # fmt: skip
        return self.user.run([*self.argv, *(["--root", self.root] if root else []), *args],
                             cwd=cwd, env=env)  # fmt: skip

    def ok(self, *args: str, **kw) -> str:
        p = self(*args, **kw)
        assert p.returncode == 0, f"{self.name} {' '.join(args)} failed ({p.returncode}): {p.stderr}"
        return p.stdout

    def state(self, cid: str) -> dict:
        return json.loads(self.ok("state", cid))


class Place:
    """A directory under /tmp the user owns: the bundle and both runtimes' roots."""

    def __init__(self, user: User, rootfs: Path) -> None:
        self.user = user
        self.dir = tempfile.mkdtemp(prefix="ocibox-rl-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        self.bundle = os.path.join(self.dir, "bundle")
        shutil.copytree(rootfs, os.path.join(self.bundle, "rootfs"), symlinks=True)
        for applet in ("ps", "grep", "tty", "stat", "cut", "readlink"):
            link = os.path.join(self.bundle, "rootfs", "bin", applet)
            if not os.path.lexists(link):
                os.symlink("busybox", link)
        for d in ("runc-root", "ours-root", "xdg"):
            os.mkdir(os.path.join(self.dir, d), 0o700)
        self.config = default_config(rootless=True, terminal=False)
        for key, host in (("uidMappings", user.uid), ("gidMappings", user.gid)):
            self.config["linux"][key] = [{"containerID": 0, "hostID": host, "size": 1}]
        self.runtimes: list[Side] = []

    def write(self, args: list[str], edit=None) -> str:
        self.config["process"]["args"] = args
        if edit:
            edit(self.config)
        with open(os.path.join(self.bundle, "config.json"), "w") as f:
            json.dump(self.config, f)
        self._chown()
        return self.bundle

    def _chown(self) -> None:
        for top, dirs, files in os.walk(self.dir):
            for name in [top, *(os.path.join(top, n) for n in dirs + files)]:
                os.lchown(name, self.user.uid, self.user.gid)

    def side(self, which: str) -> Side:
        if which == "runc":
            side = Side("runc", [_need("runc")], self.user, os.path.join(self.dir, "runc-root"))
        else:
            side = Side("ocibox-runtime", [self.user.python, "-c", _LAUNCH.format(src=SRC)],
                        self.user, os.path.join(self.dir, "ours-root"))  # fmt: skip
        self.runtimes.append(side)
        return side

    def cleanup(self) -> None:
        for side in self.runtimes:
            out = side("list", "--quiet")
            for cid in out.stdout.split():
                side("delete", "--force", cid)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def place(user: User, busybox_rootfs: Path):
    p = Place(user, busybox_rootfs)
    yield p
    p.cleanup()


@pytest.fixture(params=["runc", "ours"])
def rt(request, place: Place) -> Side:
    return place.side(request.param)


# --- spec and run --------------------------------------------------------------


def test_spec_rootless_maps_the_user_as_runc(user: User, place: Place) -> None:
    specs = {}
    for which in ("runc", "ours"):
        d = os.path.join(place.dir, f"spec-{which}")
        os.mkdir(d)
        os.chown(d, user.uid, user.gid)
        place.side(which).ok("spec", "--rootless", cwd=d, root=False)
        with open(os.path.join(d, "config.json")) as f:
            specs[which] = json.load(f)
    for spec in specs.values():
        linux = spec["linux"]
        assert linux["uidMappings"] == [{"containerID": 0, "hostID": user.uid, "size": 1}]
        assert linux["gidMappings"] == [{"containerID": 0, "hostID": user.gid, "size": 1}]
        kinds = [n["type"] for n in linux["namespaces"]]
        assert "user" in kinds and "network" not in kinds
        assert "resources" not in linux
        sys_mount = next(m for m in spec["mounts"] if m["destination"] == "/sys")
        assert sys_mount["source"] == "/sys" and "rbind" in sys_mount["options"]
        assert not any(o.startswith("gid=") for m in spec["mounts"] for o in m.get("options", []))


def test_run_as_the_unprivileged_user(rt: Side, place: Place, user: User) -> None:
    bundle = place.write(["sh", "-c", "id; cat /proc/self/uid_map /proc/self/setgroups"])
    out = rt.ok("run", "r1", cwd=bundle)
    assert out.split("\n")[0] == "uid=0(root) gid=0(root) groups=0(root)"
    assert out.split()[3:6] == ["0", str(user.uid), "1"]
    assert out.split()[-1] == "deny"  # setgroups denied before the single-id gid map
    assert rt.ok("list", "--quiet").split() == []


def test_the_runc_rootless_spec_runs_on_both(place: Place) -> None:
    # runc 1.1's own variant: a cgroup mount on top of the /sys rbind and no
    # cgroup namespace, where a cgroup file system may not be mounted: both
    # bind the host's hierarchies (root, mount point and options compared).
    def runc_like(c: dict) -> None:
        c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "cgroup"]
        c["mounts"].append({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]})  # fmt: skip

    script = "grep ' /sys/fs/cgroup/' /proc/self/mountinfo | cut -d' ' -f4,5,6 | sort"
    bundle = place.write(["sh", "-c", script], runc_like)
    seen = {which: place.side(which).ok("run", "r2", cwd=bundle) for which in ("runc", "ours")}
    assert seen["ours"] == seen["runc"]
    assert "ro,nosuid,nodev,noexec" in seen["ours"]


def test_default_root_is_under_xdg_runtime_dir(rt: Side, place: Place) -> None:
    bundle = place.write(["true"])
    xdg = os.path.join(place.dir, "xdg")
    rt.ok("run", "-d", "x1", cwd=bundle, env={"XDG_RUNTIME_DIR": xdg}, root=False)
    made = os.listdir(xdg)
    assert made == ["runc" if rt.name == "runc" else "ocibox-runtime"]
    root = os.path.join(xdg, made[0])
    assert oct(os.stat(root).st_mode & 0o7777) == oct(0o1700)
    assert os.listdir(root) == ["x1"]
    rt.ok("delete", "--force", "x1", env={"XDG_RUNTIME_DIR": xdg}, root=False)


# --- lifecycle -----------------------------------------------------------------


def test_lifecycle(rt: Side, place: Place) -> None:
    bundle = place.write(["sleep", "300"])
    rt.ok("create", "--bundle", bundle, "c1")
    created = rt.state("c1")
    assert created["status"] == "created" and created["pid"] > 0
    rt.ok("start", "c1")
    assert rt.state("c1")["status"] == "running"
    assert rt.ok("exec", "c1", "id").strip() == "uid=0(root) gid=0(root) groups=0(root)"
    procs = rt.ok("exec", "c1", "ps").split("\n")[1:]
    assert [line.split()[-2:] for line in procs if line.strip()][0] == ["sleep", "300"]
    # No cgroup (none writable): pause has no freezer on either runtime.
    paused = rt("pause", "c1")
    assert paused.returncode != 0
    assert rt.state("c1")["status"] == "running"
    rt.ok("kill", "c1", "KILL")
    for _ in range(250):
        if rt.state("c1")["status"] == "stopped":
            break
        time.sleep(0.02)
    assert rt.state("c1")["status"] == "stopped"
    rt.ok("delete", "c1")
    assert rt.ok("list", "--quiet").split() == []


def test_ps_without_cgroups(place: Place) -> None:
    # runc finds a container's processes by its cgroup and has none here; we
    # list the processes of its pid namespace.
    bundle = place.write(["sleep", "300"])
    runc, ours = place.side("runc"), place.side("ours")
    for side in (runc, ours):
        side.ok("run", "-d", "p1", cwd=bundle)
    assert runc("ps", "p1").returncode != 0
    pid = ours.state("p1")["pid"]
    assert str(pid) in [line.split()[1] for line in ours.ok("ps", "p1").split("\n")[1:] if line]



def test_update_without_cgroups_says_why(place: Place) -> None:
    # No cgroup is in the user's reach: both refuse, ours saying why rather than
    # asking for linux.resources (which would make create fail here).
    bundle = place.write(["sleep", "300"])
    runc, ours = place.side("runc"), place.side("ours")
    for side in (runc, ours):
        side.ok("run", "-d", "u1", cwd=bundle)
        assert side("update", "--pids-limit", "10", "u1").returncode == 1
    p = ours("update", "--pids-limit", "10", "u1")
    assert "cannot update container u1: it has no cgroups (it was created rootless" in p.stderr
    assert "hint: delegate a cgroup to the user" in p.stderr

def _receive_terminal(path: str, user: User):
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    os.chown(path, user.uid, user.gid)
    srv.listen(1)
    srv.settimeout(20)
    return srv


def _read_terminal(srv) -> str:
    conn, _ = srv.accept()
    _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
    conn.close()
    out = b""
    try:
        while chunk := os.read(fds[0], 4096):
            out += chunk
    except OSError:  # EIO once the container's side is closed
        pass
    os.close(fds[0])
    return out.decode(errors="replace")


def test_terminal_through_console_socket(rt: Side, place: Place, user: User) -> None:
    def tty(c: dict) -> None:
        c["process"]["terminal"] = True

    bundle = place.write(["sh", "-c", "id; tty; stat -c '%u %g %a' $(tty)"], tty)
    path = os.path.join(place.dir, f"console-{rt.name}.sock")
    srv = _receive_terminal(path, user)
    try:
        rt.ok("create", "--bundle", bundle, "--console-socket", path, "t1")
        rt.ok("start", "t1")
        lines = _read_terminal(srv).replace("\r", "").split("\n")
    finally:
        srv.close()
    assert lines[:3] == ["uid=0(root) gid=0(root) groups=0(root)", "/dev/pts/0", "0 0 620"]


def test_exec_with_a_terminal(rt: Side, place: Place, user: User) -> None:
    bundle = place.write(["sleep", "300"])
    rt.ok("run", "-d", "e1", cwd=bundle)
    path = os.path.join(place.dir, f"exec-{rt.name}.sock")
    srv = _receive_terminal(path, user)
    try:
        rt.ok("exec", "-t", "-d", "--console-socket", path, "e1", "tty")
        out = _read_terminal(srv).replace("\r", "").split("\n")
    finally:
        srv.close()
    assert out[0] == "/dev/pts/0"


# --- what a rootless runtime cannot do ----------------------------------------


def test_limits_without_a_writable_cgroup_are_refused(rt: Side, place: Place) -> None:
    def pids(c: dict) -> None:
        c["linux"]["resources"] = {"pids": {"limit": 50}}

    bundle = place.write(["true"], pids)
    p = rt("run", "l1", cwd=bundle)
    assert p.returncode != 0
    assert "cannot set pids limit" in p.stderr if rt.name == "runc" else (
        "linux.resources.pids: cannot set this limit" in p.stderr)  # fmt: skip


def test_zero_values_need_no_cgroup(rt: Side, place: Place) -> None:
    # runc's Set writes nothing for them, so a rootless container without a writable
    # cgroup runs (ours refused them as limits)
    def zeros(c: dict) -> None:
        c["linux"]["resources"] = {"memory": {"limit": 0, "swap": 0, "disableOOMKiller": False},
                                   "cpu": {"shares": 0, "quota": 0, "period": 0},
                                   "blockIO": {"weight": 0}, "pids": {"limit": 0}}  # fmt: skip

    assert rt.ok("run", "z1", cwd=place.write(["id", "-u"], zeros)).strip() == "0"

def test_device_rules_alone_need_no_cgroup(rt: Side, place: Place) -> None:
    def devices(c: dict) -> None:
        c["linux"]["resources"] = {"devices": [{"allow": False, "access": "rwm"}]}

    assert rt.ok("run", "d1", cwd=place.write(["id", "-u"], devices)).strip() == "0"


def test_rootless_false_makes_cgroup_errors_errors(rt: Side, place: Place) -> None:
    def devices(c: dict) -> None:
        c["linux"]["resources"] = {"devices": [{"allow": False, "access": "rwm"}]}

    bundle = place.write(["true"], devices)
    p = rt.user.run([*rt.argv, "--rootless", "false", "--root", rt.root, "run", "f1"], cwd=bundle)
    assert p.returncode != 0
    assert "permission denied" in p.stderr.lower()


def test_rootless_flag_takes_true_false_auto(place: Place) -> None:
    ours = place.side("ours")
    p = ours.user.run([*ours.argv, "--rootless", "maybe", "list"])
    assert p.returncode == 2 and "use true, false or auto" in p.stderr


def test_a_cgroups_path_out_of_reach_is_refused(rt: Side, place: Place) -> None:
    def path(c: dict) -> None:
        c["linux"]["cgroupsPath"] = "/ocibox-rootless-no-access"

    p = rt("run", "g1", cwd=place.write(["true"], path))
    assert p.returncode != 0
    assert "permission denied" in p.stderr.lower() or "not writable" in p.stderr


def test_delegated_v1_cgroups_are_used(place: Place, user: User) -> None:
    from ocibox.runtime.linux.cgroups import UNIFIED, hierarchies, mode

    mounts = hierarchies()
    if mode(mounts) == UNIFIED:
        pytest.skip("a v2 host: delegation there is the user's systemd slice, not made here")
    name = f"ocibox-rl-{os.getpid()}"
    made = []
    try:
        for ctrl, mp in mounts.items():
            if ctrl != "unified":
                d = os.path.join(mp, name)
                if not os.path.isdir(d):
                    os.mkdir(d)
                    made.append(d)
                os.chown(d, user.uid, user.gid)
                for f in os.listdir(d):
                    os.chown(os.path.join(d, f), user.uid, user.gid)

        seen = {}
        for which in ("runc", "ours"):
            def limited(c: dict, which=which) -> None:
                c["linux"]["cgroupsPath"] = f"/{name}/{which}"
                c["linux"]["resources"] = {"pids": {"limit": 42}}

            bundle = place.write(["sleep", "300"], limited)
            side = place.side(which)
            side.ok("run", "-d", "k1", cwd=bundle)
            pid = side.state("k1")["pid"]
            with open(f"/proc/{pid}/cgroup") as f:
                seen[which] = sorted(f.read().replace(f"/{which}", "/X").split("\n"))
            with open(os.path.join(mounts["pids"], name, which, "pids.max")) as f:
                assert f.read().strip() == "42"
            side.ok("delete", "--force", "k1")
        assert seen["ours"] == seen["runc"]  # v1 everywhere, cgroup v2 left as it was
    finally:
        for d in made:
            for sub in ("runc", "ours"):
                if os.path.isdir(os.path.join(d, sub)):
                    os.rmdir(os.path.join(d, sub))
            os.rmdir(d)


class Delegated:
    """A v1 cgroup the user owns in some hierarchies, under this process's own cgroup in
    each (where a login's would be), and runtimes started from a shell placed in it."""

    def __init__(self, user: User, controllers: list[str]) -> None:
        from ocibox.runtime.linux.cgroups import UNIFIED, hierarchies, mode
        from ocibox.runtime.linux.cgroups.fs import own_v1

        mounts = hierarchies()
        if mode(mounts) == UNIFIED:
            pytest.skip("a v2 host: see test_rootless_v2_vm.py")
        own = self.own = own_v1()
        self.user, self.dirs = user, {}
        name = f"ocibox-rl-{os.getpid()}"
        for ctrl in controllers:
            if ctrl not in mounts:
                pytest.skip(f"no v1 {ctrl} hierarchy here")
            d = os.path.join(mounts[ctrl], own.get(ctrl, ""), name)
            if d in self.dirs.values():
                continue  # co-mounted with one already made
            os.mkdir(d)
            self.dirs[ctrl] = d
            for name in ("cpuset.cpus", "cpuset.mems") if ctrl == "cpuset" else ():
                with open(os.path.join(os.path.dirname(d), name)) as f:
                    Path(d, name).write_text(f.read())  # a new cpuset has none: no task fits
            for path in (d, os.path.join(d, "cgroup.procs"), os.path.join(d, "tasks")):
                os.chown(path, user.uid, user.gid)
        self.mounts = mounts

    def place(self, side: Side) -> Side:
        """``side`` run from a shell that first moves itself into the delegated cgroups."""
        moves = "".join(f"echo $$ > {d}/cgroup.procs && " for d in self.dirs.values())
        return Side(side.name, ["sh", "-c", moves + 'exec "$@"', "sh", *side.argv], self.user,
                    side.root)  # fmt: skip

    def home(self, ctrl: str) -> str:
        """This process's own cgroup in ``ctrl``'s hierarchy (and so the runtime's, there,
        when ``ctrl`` is not delegated)."""
        return os.path.normpath(os.path.join(self.mounts[ctrl], self.own.get(ctrl, "")))

    def where(self, pid: int) -> dict[str, str]:
        """The process's cgroup in each v1 hierarchy, as host paths."""
        out = {}
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                _, names, path = line.rstrip("\n").split(":", 2)
                for ctrl in names.split(","):
                    if ctrl in self.mounts and ctrl != "unified":
                        out[ctrl] = os.path.normpath(self.mounts[ctrl] + path)
        return out

    def left(self) -> list[str]:
        """Cgroups a runtime made under the delegated ones and left behind."""
        return sorted(os.path.join(top, sub) for d in self.dirs.values()
                      for top, subs, _ in os.walk(d) for sub in subs)  # fmt: skip

    def remove(self) -> None:
        for d in self.dirs.values():
            for top, _, _ in sorted(os.walk(d), key=lambda t: -len(t[0])):
                for _ in range(50):  # a runtime's shell may still be exiting
                    try:
                        os.rmdir(top)
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.1)


@pytest.fixture
def delegated(place: Place, user: User):
    # memory, pids and cpu only: what a user is typically given; the others stay root's
    made = []

    def make(controllers=("memory", "pids", "cpu")) -> Delegated:
        made.append(Delegated(user, list(controllers)))
        return made[-1]

    yield make
    place.cleanup()  # the containers first: their cgroups are under the delegated ones
    for d in made:
        d.remove()


def test_own_delegated_v1_cgroup_takes_the_limits(place: Place, delegated) -> None:
    # No cgroupsPath: runc puts the container under the runtime's own cgroup in each
    # hierarchy it may write (here memory, pids, cpu), and leaves it where it is in the
    # others; the limits land in the cgroups it made.
    deleg = delegated()

    def limited(c: dict) -> None:
        c["linux"]["resources"] = {"memory": {"limit": 100 * (1 << 20)}, "pids": {"limit": 42},
                                   "cpu": {"shares": 512}}  # fmt: skip

    bundle = place.write(["sleep", "300"], limited)
    seen = {}
    for which in ("runc", "ours"):
        side = deleg.place(place.side(which))
        cid = f"o-{which}"
        side.ok("run", "-d", cid, cwd=bundle)
        where = deleg.where(side.state(cid)["pid"])
        for ctrl, d in deleg.dirs.items():
            assert where[ctrl] == os.path.join(d, cid), (which, ctrl, where)
        files = {name: open(os.path.join(deleg.dirs[ctrl], cid, name)).read().strip()
                 for ctrl, name in (("memory", "memory.limit_in_bytes"), ("pids", "pids.max"),
                                    ("cpu", "cpu.shares"))}  # fmt: skip
        assert files == {"memory.limit_in_bytes": str(100 * (1 << 20)), "pids.max": "42",
                         "cpu.shares": "512"}, which  # fmt: skip
        seen[which] = {ctrl: path.replace(cid, "ID") for ctrl, path in where.items()}
        side.ok("update", "--pids-limit", "50", "--memory", "200M", cid)
        with open(os.path.join(deleg.dirs["pids"], cid, "pids.max")) as f:
            assert f.read().strip() == "50", which
        with open(os.path.join(deleg.dirs["memory"], cid, "memory.limit_in_bytes")) as f:
            assert f.read().strip() == str(200 * (1 << 20)), which
        # blkio is not delegated: the container has no blkio cgroup to change
        p = side("update", "--blkio-weight", "300", "--pids-limit", "60", cid)
        assert p.returncode != 0, which
        if which == "ours":  # runc sets pids first, then fails on blkio
            assert "linux.resources.blockIO: it has no blkio cgroup of its own" in p.stderr, (
                p.stderr)
            with open(os.path.join(deleg.dirs["pids"], cid, "pids.max")) as f:
                assert f.read().strip() == "50", "a refused update changes nothing"
        side.ok("delete", "--force", cid)
        assert deleg.left() == [], which
    assert seen["ours"] == seen["runc"]
    assert seen["ours"]["blkio"] == deleg.home("blkio")  # not delegated: where the test runs


def test_a_limit_outside_the_delegated_hierarchies_is_refused(place: Place, delegated) -> None:
    deleg = delegated()

    def blkio(c: dict) -> None:
        c["linux"]["resources"] = {"memory": {"limit": 100 * (1 << 20)},
                                   "blockIO": {"weight": 300}}  # fmt: skip

    bundle = place.write(["true"], blkio)
    for which in ("runc", "ours"):
        p = deleg.place(place.side(which))("run", f"b-{which}", cwd=bundle)
        assert p.returncode != 0
        assert "cannot set blkio limit" in p.stderr if which == "runc" else (
            "linux.resources.blockIO: cannot set this limit" in p.stderr
            and "its blkio cgroup" in p.stderr), p.stderr  # fmt: skip
        assert deleg.left() == [], which


def test_undelegated_own_cgroup_leaves_the_container_there(place: Place, delegated) -> None:
    # Devices rules alone need no cgroup: in hierarchies out of reach both leave the
    # container in the runtime's own cgroup, and make one where they may.
    deleg = delegated(["pids"])

    def devices(c: dict) -> None:
        c["linux"]["resources"] = {"devices": [{"allow": False, "access": "rwm"}]}

    bundle = place.write(["sleep", "300"], devices)
    seen = {}
    for which in ("runc", "ours"):
        side = deleg.place(place.side(which))
        side.ok("run", "-d", "d", cwd=bundle)
        seen[which] = deleg.where(side.state("d")["pid"])
        assert side("pause", "d").returncode != 0, which  # no freezer cgroup of its own
        assert side.state("d")["status"] == "running"
        side.ok("delete", "--force", "d")
    assert seen["ours"] == seen["runc"]
    assert seen["ours"]["pids"] == os.path.join(deleg.dirs["pids"], "d")
    assert seen["ours"]["memory"] == deleg.home("memory")  # where the test itself runs


def test_relative_cgroups_path_in_a_fully_delegated_own_cgroup(place: Place, delegated) -> None:
    # A relative cgroupsPath hangs under the runtime's own cgroup in every v1 hierarchy;
    # every one must be within reach (here each is delegated; name=systemd too).
    from ocibox.runtime.linux.cgroups import hierarchies

    deleg = delegated([c for c in hierarchies() if c != "unified"])
    seen = {}
    for which in ("runc", "ours"):
        def rel(c: dict, which=which) -> None:
            c["linux"]["cgroupsPath"] = f"sub/{which}"
            c["linux"]["resources"] = {"pids": {"limit": 17}}

        bundle = place.write(["sleep", "300"], rel)
        side = deleg.place(place.side(which))
        side.ok("run", "-d", "r", cwd=bundle)
        where = deleg.where(side.state("r")["pid"])
        assert where == {c: os.path.join(d, "sub", which) for c, d in deleg.dirs.items()
                         if c in where}, which  # fmt: skip
        with open(os.path.join(deleg.dirs["pids"], "sub", which, "pids.max")) as f:
            assert f.read().strip() == "17"
        seen[which] = {c: p.replace(which, "X") for c, p in where.items()}
        side.ok("delete", "--force", "r")
    assert seen["ours"] == seen["runc"]


def test_relative_cgroups_path_partly_delegated_is_refused(place: Place, delegated) -> None:
    deleg = delegated()

    def rel(c: dict) -> None:
        c["linux"]["cgroupsPath"] = "sub/x"

    bundle = place.write(["true"], rel)
    for which in ("runc", "ours"):
        p = deleg.place(place.side(which))("run", f"p-{which}", cwd=bundle)
        assert p.returncode != 0
        assert "permission denied" in p.stderr if which == "runc" else (
            "linux.cgroupsPath sub/x: a rootless container cannot create or join it"
            in p.stderr), p.stderr  # fmt: skip


def test_unmapped_gid_mount_option_is_refused(rt: Side, place: Place) -> None:
    def gid5(c: dict) -> None:
        next(m for m in c["mounts"] if m["type"] == "devpts")["options"].append("gid=5")

    p = rt("run", "u1", cwd=place.write(["true"], gid5))
    assert p.returncode != 0
    assert "gid=" in p.stderr


def test_no_user_namespace_is_refused(rt: Side, place: Place) -> None:
    def no_userns(c: dict) -> None:
        c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "user"]
        del c["linux"]["uidMappings"], c["linux"]["gidMappings"]

    p = rt("run", "n1", cwd=place.write(["true"], no_userns))
    assert p.returncode != 0
    if rt.name != "runc":
        assert "a rootless container needs a user namespace" in p.stderr


def test_additional_gids_are_refused(rt: Side, place: Place) -> None:
    def groups(c: dict) -> None:
        c["process"]["user"]["additionalGids"] = [0]

    p = rt("run", "a1", cwd=place.write(["id"], groups))
    assert p.returncode != 0
    if rt.name != "runc":
        assert "additionalGids" in p.stderr


def test_maps_of_other_host_ids_are_refused(rt: Side, place: Place) -> None:
    # A spec --rootless made by root maps host id 0: the kernel takes only the
    # caller's own ids (newuidmap, if any, only its /etc/subuid ranges). runc
    # fails later, chowning its stdio pipes to that id ("fchown fd 7").
    def roots(c: dict) -> None:
        for key in ("uidMappings", "gidMappings"):
            c["linux"][key] = [{"containerID": 0, "hostID": 0, "size": 1}]

    p = rt("run", "h1", cwd=place.write(["true"], roots))
    assert p.returncode != 0
    assert ("fchown fd" if rt.name == "runc" else "uid_map") in p.stderr


def _subid_range(user: User, path: str) -> tuple[int, int] | None:
    try:
        with open(path) as f:
            for line in f:
                name, start, count = line.strip().split(":")
                if name == user.name:
                    return int(start), int(count)
    except (OSError, ValueError):
        pass
    return None


def test_more_ids_through_newuidmap(place: Place, user: User) -> None:
    for tool in ("newuidmap", "newgidmap"):
        _need(tool)
    sub = {k: _subid_range(user, f"/etc/sub{k}") for k in ("uid", "gid")}
    if None in sub.values():
        pytest.skip(f"user {user.name} has no range in /etc/subuid or /etc/subgid")

    def wide(c: dict) -> None:
        for k, own in (("uid", user.uid), ("gid", user.gid)):
            c["linux"][f"{k}Mappings"] = [{"containerID": 0, "hostID": own, "size": 1},
                                          {"containerID": 1, "hostID": sub[k][0], "size": 1000}]  # fmt: skip
        c["process"]["user"] = {"uid": 500, "gid": 600}

    script = "id; cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups"
    bundle = place.write(["sh", "-c", script], wide)
    seen = {which: place.side(which).ok("run", "w1", cwd=bundle).split("\n") for which in ("runc", "ours")}
    assert seen["ours"][1:] == seen["runc"][1:]  # the maps, and setgroups allowed
    assert seen["ours"][-2] == "allow"
    assert seen["ours"][1].split() == ["0", str(user.uid), "1"]
    # runc (RootlessEUID) never calls setgroups: its process keeps the user's own
    # group, mapped to 0; ours sets process.user's groups (none).
    assert seen["runc"][0] == "uid=500 gid=600 groups=0(root)"
    assert seen["ours"][0] == "uid=500 gid=600"


@pytest.mark.parametrize("netns", [False, True])
def test_sysfs_needs_a_network_namespace(rt: Side, place: Place, netns: bool) -> None:
    def sysfs(c: dict) -> None:
        c["mounts"] = [m for m in c["mounts"] if m["destination"] != "/sys"]
        c["mounts"].append({"destination": "/sys", "type": "sysfs", "source": "sysfs",
                            "options": ["nosuid", "noexec", "nodev", "ro"]})  # fmt: skip
        if netns:
            c["linux"]["namespaces"].append({"type": "network"})

    p = rt("run", "s1", cwd=place.write(["sh", "-c", "grep -c ' /sys sysfs' /proc/self/mounts"],
                                        sysfs))  # fmt: skip
    if netns:
        assert p.returncode == 0 and p.stdout.strip() == "1", p.stderr
    else:
        assert p.returncode != 0
        if rt.name != "runc":
            assert 'add {"type": "network"}' in p.stderr


def test_exec_as_an_unmapped_user_is_refused(rt: Side, place: Place) -> None:
    rt.ok("run", "-d", "x2", cwd=place.write(["sleep", "300"]))
    p = rt("exec", "--user", "1000", "x2", "id")
    assert p.returncode != 0 and "uid=" not in p.stdout
    assert "unmapped user" in p.stderr if rt.name == "runc" else "map it in linux.uidMappings" in p.stderr

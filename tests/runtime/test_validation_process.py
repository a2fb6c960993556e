"""runtime-tools' process and linux areas, run under runc and ocibox-runtime from one bundle.

Areas (runtime-spec config.md, config-linux.md): process args, env and cwd,
user and groups, noNewPrivileges, rlimits, oomScoreAdj, sysctl, hostname,
uid/gid mappings, namespaces (new, inherited, joined by path, of the wrong
type). Each test compares what the container sees under both runtimes and
checks the spec's expectation on ours.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

pytestmark = [pytest.mark.root, pytest.mark.peer]

APPLETS = ("stat", "cut", "grep", "readlink", "sort", "tr", "od", "awk", "wc", "umask")
NAMESPACES = {"pid": "pid", "network": "net", "ipc": "ipc", "uts": "uts", "mount": "mnt",
              "cgroup": "cgroup", "user": "user"}  # fmt: skip


def _link_applets(bundle) -> None:
    for applet in APPLETS:
        link = bundle.rootfs / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")


def _pair(runc, ours, bundle, args, edit=None):
    """Write the bundle once (edits may append), run it under both: (runc's, ours)."""
    _link_applets(bundle)
    b = bundle.write(args, edit)
    return tuple(rt("run", "--bundle", b, rt.new_id(), check=False) for rt in (runc, ours))


def _both(runc, ours, bundle, script: str, edit=None) -> tuple[str, str]:
    theirs, mine = _pair(runc, ours, bundle, ["sh", "-c", script], edit)
    assert theirs.returncode == 0, theirs.stderr
    assert mine.returncode == 0, mine.stderr
    return theirs.stdout, mine.stdout


def test_args_reach_the_program_exactly(runc, ours, bundle):
    args = ["sh", "-c", "od -c /proc/self/cmdline | head -c 0; cat /proc/$$/cmdline | tr '\\0' '|'",
            "zero", "two words", "", "x=y", "--flag", "ünï"]  # fmt: skip
    theirs, mine = _pair(runc, ours, bundle, args)
    assert mine.returncode == theirs.returncode == 0, mine.stderr
    assert mine.stdout == theirs.stdout == "|".join(args) + "|"


def test_env_is_exactly_process_env(runc, ours, bundle):
    def edit(cfg):
        cfg["process"]["env"] = ["PATH=/bin", "EMPTY=", "EQ=a=b=c", "SPACE=one two",
                                 "DUP=first", "DUP=second", "HOME=/home/x"]  # fmt: skip

    theirs, mine = _both(runc, ours, bundle, "env | grep -v '^PWD=\\|^SHLVL=' | sort", edit)
    assert mine == theirs
    assert mine.split("\n") == [
        "DUP=second", "EMPTY=", "EQ=a=b=c", "HOME=/home/x", "PATH=/bin", "SPACE=one two", "",
    ]  # fmt: skip


def test_home_is_added_from_passwd(runc, ours, bundle):
    """Without HOME in env, both runtimes set it from the rootfs's /etc/passwd (or /)."""

    def edit(cfg):
        cfg["process"]["env"] = ["PATH=/bin"]
        cfg["process"]["user"] = {"uid": 65534, "gid": 65534}

    theirs, mine = _both(runc, ours, bundle, "echo $HOME", edit)
    assert mine == theirs

    def unknown(cfg):
        edit(cfg)
        cfg["process"]["user"] = {"uid": 4321, "gid": 4321}

    theirs, mine = _both(runc, ours, bundle, "echo $HOME", unknown)
    assert mine == theirs == "/\n"


@pytest.mark.parametrize("uid", [0, 1000])
def test_cwd_that_does_not_exist_is_made(runc, ours, bundle, uid):
    def edit(cfg):
        cfg["process"]["cwd"] = "/work/deep/dir/"
        cfg["process"]["user"] = {"uid": uid, "gid": uid}

    theirs, mine = _both(runc, ours, bundle, "pwd; stat -c '%a %u' . .. ../..", edit)
    assert mine == theirs
    assert mine.splitlines()[0] == "/work/deep/dir"
    assert mine.splitlines()[1:] == ["755 0"] * 3


def test_cwd_that_is_a_file_fails(runc, ours, bundle):
    (bundle.rootfs / "afile").write_text("")

    def edit(cfg):
        cfg["process"]["cwd"] = "/afile"

    theirs, mine = _pair(runc, ours, bundle, ["true"], edit)
    assert theirs.returncode != 0 and mine.returncode != 0
    assert "Traceback" not in mine.stderr


@pytest.mark.parametrize("nnp", [True, False])
def test_no_new_privileges(runc, ours, bundle, nnp):
    def edit(cfg):
        cfg["process"]["noNewPrivileges"] = nnp

    theirs, mine = _both(runc, ours, bundle, "grep NoNewPrivs /proc/self/status", edit)
    assert mine == theirs == f"NoNewPrivs:\t{int(nnp)}\n"


def test_user_groups_and_umask(runc, ours, bundle):
    def edit(cfg):
        cfg["process"]["user"] = {"uid": 1234, "gid": 5678, "additionalGids": [5678, 3, 70000],
                                  "umask": 0o077}  # fmt: skip

    script = (
        "grep -E '^(Uid|Gid|Groups):' /proc/self/status; umask; touch /tmp/f; stat -c %a /tmp/f"
    )

    def writable_tmp(cfg):
        edit(cfg)
        cfg["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                              "options": ["mode=1777"]})  # fmt: skip

    theirs, mine = _both(runc, ours, bundle, script, writable_tmp)
    assert mine == theirs
    lines = mine.splitlines()
    assert lines[0].split()[1:] == ["1234"] * 4 and lines[1].split()[1:] == ["5678"] * 4
    assert set(lines[2].split()[1:]) == {"3", "5678", "70000"}
    assert lines[3:] == ["0077", "600"]


def test_user_without_additional_gids_drops_the_runtimes_groups(runc, ours, bundle):
    def edit(cfg):
        cfg["process"]["user"] = {"uid": 1, "gid": 2}

    # The caller's supplementary groups must not leak into the container.
    outs = []
    for rt in (runc, ours):
        _link_applets(bundle)
        b = bundle.write(["sh", "-c", "grep ^Groups: /proc/self/status"], edit)
        p = subprocess.run(["setpriv", "--groups", "4,24,27", *rt.argv, "--root", str(rt.root),
                            "run", "--bundle", b, rt.new_id()],
                           capture_output=True, text=True, timeout=30)  # fmt: skip
        assert p.returncode == 0, p.stderr
        outs.append(p.stdout.split())
    assert outs[0] == outs[1] == ["Groups:"]


def test_rlimits(runc, ours, bundle):
    import resource

    def cap(n):
        hard = resource.getrlimit(n)[1]
        return hard if hard != resource.RLIM_INFINITY else 1 << 20

    limits = [
        ("RLIMIT_CORE", 0, 4096),
        ("RLIMIT_CPU", 100, 200),
        ("RLIMIT_FSIZE", 1 << 20, 1 << 21),
        ("RLIMIT_MEMLOCK", 65536, 65536),
        ("RLIMIT_MSGQUEUE", 1000, 2000),
        ("RLIMIT_NICE", 0, 0),
        ("RLIMIT_NOFILE", 100, min(cap(resource.RLIMIT_NOFILE), 4096)),
        ("RLIMIT_NPROC", 50, 60),
        ("RLIMIT_RTPRIO", 0, 0),
        ("RLIMIT_SIGPENDING", 100, 200),
        ("RLIMIT_STACK", 1 << 20, 1 << 23),
        ("RLIMIT_AS", 1 << 32, 1 << 33),
    ]

    def edit(cfg):
        cfg["process"]["rlimits"] = [{"type": t, "soft": s, "hard": h} for t, s, h in limits]

    theirs, mine = _both(runc, ours, bundle, "cat /proc/self/limits", edit)
    assert mine == theirs
    table = {line[:26].strip(): line[26:].split()[:2] for line in mine.splitlines()[1:]}
    assert table["Max open files"] == ["100", str(limits[6][2])]
    assert table["Max core file size"] == ["0", "4096"]
    assert table["Max stack size"] == [str(1 << 20), str(1 << 23)]
    assert table["Max address space"] == [str(1 << 32), str(1 << 33)]


def test_rlimit_errors(runc, ours, bundle):
    for bad in ({"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1},
                {"type": "RLIMIT_NOFILE", "soft": 20, "hard": 10}):  # fmt: skip

        def edit(cfg, bad=bad):
            cfg["process"]["rlimits"] = [bad]

        theirs, mine = _pair(runc, ours, bundle, ["true"], edit)
        assert theirs.returncode != 0 and mine.returncode != 0, bad
        assert "Traceback" not in mine.stderr


@pytest.mark.parametrize("adj", [0, 300, 1000])
def test_oom_score_adj(runc, ours, bundle, adj):
    def edit(cfg):
        cfg["process"]["oomScoreAdj"] = adj

    theirs, mine = _both(runc, ours, bundle, "cat /proc/self/oom_score_adj", edit)
    assert mine == theirs == f"{adj}\n"


def test_oom_score_adj_below_the_callers_needs_sys_resource(runc, ours, bundle):
    """These machines lack CAP_SYS_RESOURCE: lowering the score fails create on both."""
    with open("/proc/self/status") as f:
        eff = int(next(x for x in f if x.startswith("CapEff:")).split()[1], 16)
    if eff & (1 << 24):
        pytest.skip("CAP_SYS_RESOURCE present: a negative oomScoreAdj is allowed")
    theirs, mine = _pair(runc, ours, bundle, ["true"],
                         lambda c: c["process"].update(oomScoreAdj=-500))  # fmt: skip
    assert theirs.returncode != 0 and mine.returncode != 0
    assert "oomScoreAdj -500: Permission denied" in mine.stderr


def test_oom_score_adj_unset_is_inherited(runc, ours, bundle):
    outs = []
    for rt in (runc, ours):
        _link_applets(bundle)
        b = bundle.write(["cat", "/proc/self/oom_score_adj"])
        p = subprocess.run(["choom", "-n", "123", "--", *rt.argv, "--root", str(rt.root),
                            "run", "--bundle", b, rt.new_id()],
                           capture_output=True, text=True, timeout=30)  # fmt: skip
        assert p.returncode == 0, p.stderr
        outs.append(p.stdout)
    assert outs[0] == outs[1] == "123\n"


def test_sysctl_values(runc, ours, bundle):
    def edit(cfg):
        cfg["linux"]["sysctl"] = {
            "kernel.msgmax": "4096",
            "kernel.shmmax": "12345678",
            "fs.mqueue.msg_max": "20",
            "net.ipv4.ip_local_port_range": "20000\t30000",
            "net.core.somaxconn": "77",
        }

    script = ("cat /proc/sys/kernel/msgmax /proc/sys/kernel/shmmax /proc/sys/fs/mqueue/msg_max "
              "/proc/sys/net/ipv4/ip_local_port_range /proc/sys/net/core/somaxconn")  # fmt: skip
    theirs, mine = _both(runc, ours, bundle, script, edit)
    assert mine == theirs
    assert mine.split() == ["4096", "12345678", "20", "20000", "30000", "77"]
    with open("/proc/sys/kernel/msgmax") as f:
        assert f.read().strip() != "4096"
    with open("/proc/sys/net/core/somaxconn") as f:
        assert f.read().strip() != "77"


@pytest.mark.parametrize("key,ns", [("net.core.somaxconn", "network"), ("kernel.msgmax", "ipc"),
                                    ("kernel.domainname", "uts")])  # fmt: skip
def test_sysctl_needs_its_namespace(runc, ours, bundle, key, ns):
    """A namespaced sysctl with the host's namespace would change the host: refused."""
    with open("/proc/sys/" + key.replace(".", "/")) as f:
        host_value = f.read()

    def edit(cfg):
        cfg["linux"]["sysctl"] = {key: "12" if ns != "uts" else "x.test"}
        cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != ns]
        if ns == "uts":
            cfg.pop("hostname", None)

    theirs, mine = _pair(runc, ours, bundle, ["true"], edit)
    with open("/proc/sys/" + key.replace(".", "/")) as f:
        assert f.read() == host_value
    assert theirs.returncode != 0, theirs.stdout
    assert mine.returncode != 0 and "Traceback" not in mine.stderr


@pytest.mark.parametrize("key", ["vm.swappiness", "kernel.panic"])
def test_sysctl_outside_any_namespace_is_refused(runc, ours, bundle, key):
    path = "/proc/sys/" + key.replace(".", "/")
    with open(path) as f:
        host_value = f.read()
    theirs, mine = _pair(runc, ours, bundle, ["true"],
                         lambda c: c["linux"].update(sysctl={key: "7"}))  # fmt: skip
    with open(path) as f:
        assert f.read() == host_value
    assert theirs.returncode != 0 and mine.returncode != 0
    assert "is not confined to a namespace" in mine.stderr


def test_sysctl_in_a_namespace_joined_by_path(runc, ours, bundle):
    """A joined network namespace takes net.* sysctls; the host's own, joined by path, does not."""
    holder = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    try:
        time.sleep(0.2)
        for path, ok in ((f"/proc/{holder.pid}/ns/net", True), ("/proc/self/ns/net", False)):
            path = path.replace("self", str(os.getpid()))

            def edit(cfg, path=path):
                cfg["linux"]["sysctl"] = {"net.ipv4.ip_default_ttl": "63"}
                cfg["linux"]["namespaces"] = [
                    {"type": "network", "path": path} if n["type"] == "network" else n
                    for n in cfg["linux"]["namespaces"]
                ]

            before = open("/proc/sys/net/ipv4/ip_default_ttl").read()
            theirs, mine = _pair(runc, ours, bundle, ["cat", "/proc/sys/net/ipv4/ip_default_ttl"],
                                 edit)  # fmt: skip
            assert (theirs.returncode == 0) == (mine.returncode == 0) == ok, mine.stderr
            if ok:
                assert theirs.stdout == mine.stdout == "63\n"
            assert open("/proc/sys/net/ipv4/ip_default_ttl").read() == before != "63\n"
    finally:
        holder.kill()
        holder.wait()


def test_hostname_needs_uts_namespace(runc, ours, bundle):
    def edit(cfg):
        cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "uts"]

    host = os.uname().nodename
    theirs, mine = _pair(runc, ours, bundle, ["true"], edit)
    assert theirs.returncode != 0 and mine.returncode != 0
    assert os.uname().nodename == host


def test_unset_namespaces_are_the_runtimes(runc, ours, bundle):
    """A namespace type not listed is inherited (linux_ns_itype); a listed one is new (nopath)."""
    keep = {"mount", "pid"}

    def edit(cfg):
        cfg["linux"]["namespaces"] = [{"type": t} for t in sorted(keep)]
        cfg.pop("hostname", None)
        cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] != "/sys"
                         and not m["destination"].startswith("/sys/")]  # fmt: skip

    script = (
        "for n in pid net ipc uts mnt cgroup user; do echo $n $(readlink /proc/self/ns/$n); done"
    )
    theirs, mine = _both(runc, ours, bundle, script, edit)
    for out in (theirs, mine):
        seen = dict(line.split() for line in out.splitlines())
        for kind, short in NAMESPACES.items():
            host = os.readlink(f"/proc/self/ns/{short}")
            assert (seen[short] == host) == (kind not in keep), (kind, out)


@pytest.mark.parametrize("kind", ["ipc", "uts", "network", "pid", "mount", "cgroup"])
def test_namespace_path_of_the_wrong_type_fails(runc, ours, bundle, kind):
    """linux_ns_path_type: a path to a namespace of another type is an error."""
    other = "ipc" if kind != "ipc" else "uts"
    holder = subprocess.Popen(["unshare", f"--{other}", "sleep", "60"])
    try:
        time.sleep(0.2)

        def edit(cfg):
            cfg["linux"]["namespaces"] = [
                {"type": n["type"], "path": f"/proc/{holder.pid}/ns/{NAMESPACES[other]}"}
                if n["type"] == kind else n
                for n in cfg["linux"]["namespaces"]
            ]  # fmt: skip

        theirs, mine = _pair(runc, ours, bundle, ["true"], edit)
        assert theirs.returncode != 0, theirs.stderr
        assert mine.returncode != 0 and "Traceback" not in mine.stderr
    finally:
        holder.kill()
        holder.wait()


def test_joined_user_namespace_that_does_not_map_root_fails(runc, ours, bundle):
    """A user namespace joined by path whose maps leave 0 out (here: none at all): the
    init cannot become its root, and both refuse; ours names the namespace's maps."""
    holder = subprocess.Popen(["unshare", "--user", "sleep", "60"])
    try:
        time.sleep(0.2)

        def edit(cfg):
            cfg["linux"]["namespaces"].append({"type": "user", "path": f"/proc/{holder.pid}/ns/user"})

        theirs, mine = _pair(runc, ours, bundle, ["true"], edit)
        assert theirs.returncode != 0 and "no uid mappings" in theirs.stderr, theirs.stderr
        assert mine.returncode != 0, mine.stderr
        assert "cannot become root in the joined user namespace: Invalid argument" in mine.stderr
        assert "its uid and gid maps must map 0" in mine.stderr
    finally:
        holder.kill()
        holder.wait()

def test_namespace_paths_ipc_pid_and_mount(runc, ours, bundle):
    """Joining ipc and pid namespaces by path (linux_ns_path)."""
    holder = subprocess.Popen(
        ["unshare", "--ipc", "--pid", "--fork", "--mount-proc", "sleep", "60"]
    )
    child = 0
    try:
        time.sleep(0.3)
        child = int(subprocess.check_output(["pgrep", "-P", str(holder.pid)]).split()[0])
        path = f"/proc/{child}/ns"

        def edit(cfg):
            joined = {"ipc": f"{path}/ipc", "pid": f"{path}/pid"}
            cfg["linux"]["namespaces"] = [
                {"type": n["type"], "path": joined[n["type"]]} if n["type"] in joined else n
                for n in cfg["linux"]["namespaces"]
            ]

        script = ("readlink /proc/self/ns/ipc; readlink /proc/self/ns/pid; echo $$; "
                  "ps -o pid,comm | grep -c sleep")  # fmt: skip
        theirs, mine = _both(runc, ours, bundle, script, edit)
        assert mine.split()[:2] == theirs.split()[:2] == [
            os.readlink(f"{path}/ipc"), os.readlink(f"{path}/pid")]  # fmt: skip
        # not pid 1 there: the namespace's init is the holder's sleep
        assert mine.split()[2] != "1" and theirs.split()[2] != "1"
        assert mine.split()[3] == theirs.split()[3] == "1"
    finally:
        # the forked sleep is its pid namespace's init: killing unshare leaves it
        if child:
            os.kill(child, 9)
        holder.kill()
        holder.wait()


def test_id_mappings_with_several_ranges(runc, ours, bundle):
    maps = [{"containerID": 0, "hostID": 200000, "size": 1000},
            {"containerID": 1000, "hostID": 300000, "size": 500},
            {"containerID": 5000, "hostID": 400000, "size": 10}]  # fmt: skip

    def edit(cfg):
        cfg["linux"]["namespaces"].append({"type": "user"})
        cfg["linux"]["uidMappings"] = maps
        cfg["linux"]["gidMappings"] = maps[:2]
        cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] != "/sys/fs/cgroup"]
        cfg["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [0]}

    os.chown(bundle.rootfs, 200000, 200000)
    for parent in [bundle.path, *bundle.path.parents]:
        if str(parent) in ("/", "/tmp"):
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o111)
    script = "cat /proc/self/uid_map /proc/self/gid_map | tr -s ' '; id"
    theirs, mine = _both(runc, ours, bundle, script, edit)
    assert mine == theirs
    lines = mine.splitlines()
    assert [line.split() for line in lines[:5]] == [
        ["0", "200000", "1000"], ["1000", "300000", "500"], ["5000", "400000", "10"],
        ["0", "200000", "1000"], ["1000", "300000", "500"],
    ]  # fmt: skip


def test_duplicate_rlimit_types_are_an_error(runc, ours, bundle):
    """config.md: duplicated rlimits types MUST be an error.

    runc 1.1 applies both in order (the last wins) and runs the container.
    """

    def edit(cfg):
        cfg["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 200, "hard": 200},
                                     {"type": "RLIMIT_NOFILE", "soft": 100, "hard": 100}]  # fmt: skip

    theirs, mine = _pair(runc, ours, bundle, ["sh", "-c", "ulimit -n"], edit)
    assert theirs.returncode == 0 and theirs.stdout == "100\n"
    assert (
        mine.returncode != 0 and "RLIMIT_NOFILE" in mine.stderr and "Traceback" not in mine.stderr
    )

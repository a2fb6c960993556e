"""ocibox-runtime: runc's command line over ocibox.runtime.

Start-up time matters (containerd and podman call the runtime for every
operation), so this module imports nothing at load time beyond ``posix`` and
``sys`` (not even ``os``: see ocibox.runtime.container); each command imports
what it needs, and arguments are parsed by hand with runc's names: global
flags, then a command, its flags and arguments.
"""

import posix
import sys

PROG = "ocibox-runtime"
VERSION = "0.1.0"

# Global flags: name -> takes a value.
_GLOBAL = {
    "--root": True, "--log": True, "--log-format": True, "--debug": False,
    "--systemd-cgroup": False, "--criu": True, "--rootless": True,
}  # fmt: skip

_CREATE = {
    "--bundle": True, "-b": True, "--console-socket": True, "--pid-file": True,
    "--no-pivot": False, "--no-new-keyring": False, "--preserve-fds": True, "--pidfd-socket": True,
}  # fmt: skip

# command -> (flags, minimum and maximum number of arguments, usage)
_COMMANDS: dict[str, tuple[dict[str, bool], int, int, str]] = {
    "spec": ({"--bundle": True, "-b": True, "--rootless": False}, 0, 0, "spec [--bundle DIR] [--rootless]"),
    "create": (_CREATE, 1, 1, "create [--bundle DIR] [--pid-file FILE] <container-id>"),
    "start": ({}, 1, 1, "start <container-id>"),
    "run": ({**_CREATE, "--detach": False, "-d": False, "--keep": False}, 1, 1,
            "run [--bundle DIR] [-d] [--keep] <container-id>"),
    "state": ({}, 1, 1, "state <container-id>"),
    "kill": ({"--all": False, "-a": False}, 1, 2, "kill [--all] <container-id> [signal]"),
    "delete": ({"--force": False, "-f": False}, 1, 1, "delete [--force] <container-id>"),
    "list": ({"--format": True, "-f": True, "--quiet": False, "-q": False}, 0, 0,
             "list [--format table|json] [--quiet]"),
}  # fmt: skip
_COMMANDS.update({
    "pause": ({}, 1, 1, "pause <container-id>"),
    "resume": ({}, 1, 1, "resume <container-id>"),
    "ps": ({"--format": True, "-f": True}, 1, 1000, "ps [--format table|json] <container-id> [ps options]"),
    "features": ({}, 0, 0, "features"),
})  # fmt: skip
_COMMANDS["exec"] = (
    {"--process": True, "-p": True, "--tty": False, "-t": False, "--detach": False, "-d": False,
     "--pid-file": True, "--console-socket": True, "--cwd": True, "--env": True, "-e": True,
     "--user": True, "-u": True, "--cap": True, "-c": True, "--no-new-privs": False,
     "--additional-gids": True, "-g": True, "--preserve-fds": True, "--ignore-paused": False,
     "--process-label": True, "--apparmor": True, "--cgroup": True, "--pidfd-socket": True},
    1, 100000, "exec [--process FILE] [-d] [-e K=V] [-u UID[:GID]] [--cwd DIR] <container-id> [command...]",
)  # fmt: skip
_MULTI = {"--env", "--cap", "--additional-gids", "--cgroup"}
_COMMANDS["update"] = (
    {
        "--resources": True,
        "-r": True,
        "--memory": True,
        "--memory-reservation": True,
        "--memory-swap": True,
        "--kernel-memory": True,
        "--kernel-memory-tcp": True,
        "--cpu-share": True,
        "--cpu-quota": True,
        "--cpu-period": True,
        "--cpu-rt-period": True,
        "--cpu-rt-runtime": True,
        "--cpuset-cpus": True,
        "--cpuset-mems": True,
        "--pids-limit": True,
        "--blkio-weight": True,
    },
    1,
    1,
    "update [--resources FILE|-] [--memory N] [--cpu-quota N] [--pids-limit N] ... <container-id>",
)
_COMMANDS["events"] = (
    {"--stats": False, "--interval": True},
    1,
    1,
    "events [--stats] [--interval 5s] <container-id>",
)
_CRIU = {"--image-path": True, "--work-path": True, "--tcp-established": False,
         "--ext-unix-sk": False, "--shell-job": False, "--file-locks": False,
         "--manage-cgroups-mode": True, "--empty-ns": True, "--auto-dedup": False,
         "--lazy-pages": False}  # fmt: skip
_COMMANDS["checkpoint"] = (
    {**_CRIU, "--leave-running": False, "--pre-dump": False, "--parent-path": True,
     "--page-server": True, "--status-fd": True}, 1, 1,
    "checkpoint [--image-path DIR] [--work-path DIR] [--leave-running] [--pre-dump] <container-id>",
)  # fmt: skip
_COMMANDS["restore"] = (
    {**_CRIU, "--bundle": True, "-b": True, "--detach": False, "-d": False, "--pid-file": True,
     "--console-socket": True, "--no-subreaper": False, "--no-pivot": False,
     "--lsm-profile": True, "--lsm-mount-context": True},
    1, 1, "restore [--image-path DIR] [--bundle DIR] [-d] [--pid-file FILE] <container-id>",
)  # fmt: skip
_LATER: tuple[str, ...] = ()
_criu_path: str | None = None  # the global --criu (runc's), for checkpoint and restore

_ALIASES = {"-b": "--bundle", "-d": "--detach", "-a": "--all", "-f": "--force", "-q": "--quiet",
            "-p": "--process", "-t": "--tty", "-e": "--env", "-u": "--user", "-c": "--cap",
            "-g": "--additional-gids", "-r": "--resources"}  # fmt: skip
_LIST_ALIASES = {**_ALIASES, "-f": "--format"}


class _Usage(Exception):
    pass


def _parse(
    argv: list[str], spec: dict[str, bool], stop_at_positional: bool, aliases: dict = _ALIASES
) -> tuple[dict, list[str]]:
    flags: dict[str, str | bool] = {}
    args: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            args.extend(argv[i + 1 :])
            break
        if a.startswith("-") and a != "-":
            name, eq, value = a.partition("=")
            if name not in spec:
                # Go's flag package takes -flag and --flag alike.
                alt = "-" + name if not name.startswith("--") else name[1:]
                if alt not in spec:
                    raise _Usage(f"flag provided but not defined: {name}")
                name = alt
            if spec[name]:
                if not eq:
                    i += 1
                    if i >= len(argv):
                        raise _Usage(f"flag needs an argument: {name}")
                    value = argv[i]
                key = aliases.get(name, name)
                if key in _MULTI:
                    flags.setdefault(key, []).append(value)
                else:
                    flags[key] = value
            else:
                flags[aliases.get(name, name)] = value.lower() not in ("false", "0") if eq else True
        else:
            if stop_at_positional:
                args.extend(argv[i:])
                break
            args.append(a)
        i += 1
    return flags, args


class _Log:
    """runc's --log, --log-format and --debug.

    Errors and warnings go to the --log file (stderr gets its own one line
    regardless); debug messages, only with --debug, go to the --log file or,
    without one, to stderr, as runc's do. Lines are runc's (logrus's): text
    ``time="..." level=debug msg="..."`` or JSON ``{"level", "msg", "time"}``.
    """

    def __init__(self, path: str | None, fmt: str, debug: bool) -> None:
        self.path = path
        self.fmt = fmt
        self.debug_on = debug

    def write(self, level: str, msg: str) -> None:
        if not self.path:
            return
        self._emit(self.path, level, msg)

    def debug(self, msg: str, at: int | None = None) -> None:
        """A debug line; ``at`` is when it happened (time_ns) if not now (a child's step)."""
        if self.debug_on:
            self._emit(self.path, "debug", msg, at)

    def _emit(self, path: str | None, level: str, msg: str, at: int | None = None) -> None:
        from .container import now_rfc3339

        t = now_rfc3339(at)
        if self.fmt == "json":
            from . import jsonlite as json

            line = json.dumps({"level": level, "msg": msg, "time": t}, separators=(",", ":"))
        else:
            line = f'time="{t}" level={level} msg="{_quote(msg)}"'
        data = (line + "\n").encode(errors="replace")
        try:
            if path is None:
                posix.write(2, data)
                return
            # Opened for each line: forked children must not inherit the file.
            fd = posix.open(path, posix.O_WRONLY | posix.O_APPEND | posix.O_CREAT | posix.O_CLOEXEC, 0o644)
            try:
                posix.write(fd, data)
            finally:
                posix.close(fd)
        except OSError:
            pass

    def warn(self, msg: str) -> None:
        self.write("warning", msg)
        sys.stderr.write(f"{PROG}: warning: {msg}\n")


def _quote(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    log = _Log(None, "text", False)
    try:
        gflags, rest = _parse(argv, {**_GLOBAL, "--help": False, "-h": False, "--version": False,
                                     "-v": False}, stop_at_positional=True)  # fmt: skip
        if gflags.get("--version") or gflags.get("-v"):
            print(f"{PROG} version {VERSION}\nspec: 1.2.0")
            return 0
        if not rest or gflags.get("--help") or gflags.get("-h") or rest[0] == "help":
            # The topic follows "help"; after --help, it is the command itself.
            return _print_help(rest[1:2] if rest and rest[0] == "help" else rest[:1])
        fmt = str(gflags.get("--log-format", "text"))
        if fmt not in ("text", "json"):
            raise _Usage(f"invalid log format {fmt!r}: use text or json")
        log = _Log(gflags.get("--log") or None, fmt, bool(gflags.get("--debug")))
        if log.debug_on:  # only then: the library's debug() costs nothing otherwise
            from .container import set_debug

            set_debug(log.debug)
            log.debug(f"{PROG} {VERSION} (pid {posix.getpid()}): {' '.join(argv)}")
        if gflags.get("--rootless", "auto") != "auto":
            _set_rootless(str(gflags["--rootless"]))
        cmd, cargs = rest[0], rest[1:]
        if gflags.get("--criu"):
            global _criu_path
            _criu_path = str(gflags["--criu"])
        if cmd in _LATER:
            from ..errors import NotImplementedYet

            raise NotImplementedYet(f"{cmd}: this command is not implemented yet")
        if cmd not in _COMMANDS:
            raise _Usage(f"no such command {cmd!r}")
        spec, lo, hi, usage = _COMMANDS[cmd]
        try:
            aliases = _LIST_ALIASES if cmd in ("list", "ps") else _ALIASES
            # ps and exec pass on what follows the id (to ps(1), or as the command).
            stop = cmd in ("ps", "exec")
            flags, args = _parse(cargs, {**spec, "--help": False, "-h": False}, stop, aliases)
            if flags.get("--help") or flags.get("-h"):
                return _print_help([cmd])
            if not lo <= len(args) <= hi:
                raise _Usage(f'"{cmd}" takes {lo if lo == hi else f"{lo} to {hi}"} argument(s)')
        except _Usage as e:
            raise _Usage(f"{e}\nusage: {PROG} {usage}") from None
        root = str(gflags.get("--root") or _default_root())
        if gflags.get("--systemd-cgroup"):
            flags["systemd-cgroup"] = True  # create and run make a unit; the rest read the state
        return _COMMAND_FUNCS[cmd](root, flags, args, log) or 0
    except _Usage as e:
        msg = str(e)
        log.write("error", msg.split("\n")[0])
        sys.stderr.write(f"{PROG}: {msg}\n")
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        from ..errors import OciboxError

        if not isinstance(e, OciboxError):
            if isinstance(e, OSError):
                msg = f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
                log.write("error", msg)
                sys.stderr.write(f"{PROG}: {msg}\n")
                return 1
            raise
        log.write("error", e.message)
        sys.stderr.write(f"{PROG}: {e.message}\n")
        if e.hint:
            sys.stderr.write(f"  hint: {e.hint}\n")
        return e.exit_code


def exit_fast(code: int) -> None:
    """Leave with ``code`` at once: the standard streams flushed, the interpreter's teardown skipped.

    Finalization (every module and object freed one by one) costs ~1.2 ms, a
    tenth of a ``state``, and nothing of ours needs it: files are closed by
    ``with``, no atexit handlers are registered, and the only threads are
    _thread ones, which exit never waits for. An uncaught exception never gets
    here: it is printed and the interpreter exits as usual.
    """
    # As the interpreter's own exit does: a closed (or absent) stream is skipped,
    # a failed stdout makes the status 120, a failed stderr is let go.
    if sys.stdout is not None and not sys.stdout.closed:
        try:
            sys.stdout.flush()
        except OSError:
            code = 120
    if sys.stderr is not None and not sys.stderr.closed:
        try:
            sys.stderr.flush()
        except OSError:
            pass
    posix._exit(code)


def _set_rootless(value: str) -> None:
    """--rootless true|false|auto: whether cgroup permission errors are tolerated (runc's)."""
    if value not in ("true", "false"):
        raise _Usage(f"--rootless {value!r}: use true, false or auto")
    from . import rootless

    rootless.forced = value == "true"


def _default_root() -> str:
    """/run/ocibox-runtime; for a rootless runtime $XDG_RUNTIME_DIR/ocibox-runtime (as runc's)."""
    xdg = posix.environ.get(b"XDG_RUNTIME_DIR")
    if xdg and _rootless_user():
        import os  # only here: root's commands go without it (start-up time)

        root = os.path.join(os.fsdecode(xdg), "ocibox-runtime")
        os.makedirs(root, 0o700, exist_ok=True)
        os.chmod(root, 0o1700)  # the sticky bit: XDG's "do not prune this"
        return root
    from .container import DEFAULT_ROOT

    return DEFAULT_ROOT


def _rootless_user() -> bool:
    """Not root, or root of a user namespace (rootlesskit's) whose $USER is not root."""
    if posix.geteuid() != 0:
        return True
    try:
        with open("/proc/self/uid_map") as f:
            if f.read().split() == ["0", "0", "4294967295"]:
                return False  # the initial user namespace
    except OSError:
        return False
    return posix.environ.get(b"USER") != b"root"


def _print_help(topic: list[str]) -> int:
    """``--help``, ``help`` and ``help COMMAND``, ``COMMAND --help``."""
    from . import cli_help

    if not topic:
        print(cli_help.global_help(PROG, {name: c[3] for name, c in _COMMANDS.items()}))
        return 0
    cmd = topic[0]
    if cmd not in _COMMANDS:
        raise _Usage(f"no such command {cmd!r}")
    spec, _, _, usage = _COMMANDS[cmd]
    aliases = _LIST_ALIASES if cmd in ("list", "ps") else _ALIASES
    print(cli_help.command_help(PROG, cmd, spec, aliases, usage))
    return 0


# --- commands -------------------------------------------------------------------


def _cmd_spec(root: str, flags: dict, args: list[str], log: _Log) -> int:
    import json
    import os

    from ..errors import AlreadyExists
    from .spec import default_config

    bundle = str(flags.get("--bundle") or ".")
    path = os.path.join(bundle, "config.json")
    if os.path.exists(path):
        raise AlreadyExists(f"{path} exists", hint="remove it first")
    # runc spec asks for a terminal; so do we, to write the same file.
    config = default_config(rootless=bool(flags.get("--rootless")), terminal=True)
    with open(path, "x") as f:
        json.dump(config, f, indent="\t")
    return 0


def _create_kwargs(flags: dict) -> dict:
    from ..errors import UsageError

    fds = str(flags.get("--preserve-fds", "0"))
    if not fds.isdigit():
        raise UsageError(f"--preserve-fds: not a number: {fds!r}")
    return {
        "pid_file": flags.get("--pid-file") or None,
        "console_socket": flags.get("--console-socket") or None,
        "pidfd_socket": flags.get("--pidfd-socket") or None,
        "no_pivot": bool(flags.get("--no-pivot")),
        "no_new_keyring": bool(flags.get("--no-new-keyring")),
        "preserve_fds": int(fds),
        "systemd_cgroup": bool(flags.get("systemd-cgroup")),
    }


def _warm_cgroups() -> None:
    """Before create's imports: the cgroup wait it starts overlaps them (see linux.cgroup_warmup)."""
    from .linux.cgroup_warmup import warm_up

    warm_up()


def _cmd_create(root: str, flags: dict, args: list[str], log: _Log) -> int:
    bundle = str(flags.get("--bundle") or ".")
    _warm_cgroups()
    from .create import create

    create(root, args[0], bundle, warn=log.warn, **_create_kwargs(flags))
    return 0


def _cmd_run(root: str, flags: dict, args: list[str], log: _Log) -> int:
    bundle = str(flags.get("--bundle") or ".")
    _warm_cgroups()
    from .create import run

    return run(root, args[0], bundle, detach=bool(flags.get("--detach")),
               keep=bool(flags.get("--keep")), warn=log.warn, **_create_kwargs(flags))  # fmt: skip


def _cmd_start(root: str, flags: dict, args: list[str], log: _Log) -> int:
    from .container import Container

    Container.load(root, args[0]).start()
    return 0


def _cmd_state(root: str, flags: dict, args: list[str], log: _Log) -> int:
    from . import jsonlite as json
    from .container import Container

    state = Container.load(root, args[0]).oci_state()
    sys.stdout.write(json.dumps(state, indent=2) + "\n")
    return 0


def _cmd_kill(root: str, flags: dict, args: list[str], log: _Log) -> int:
    from .container import Container
    from .signals import parse

    sig = parse(args[1]) if len(args) > 1 else 15
    Container.load(root, args[0]).kill(sig, all_processes=bool(flags.get("--all")))
    return 0


def _cmd_delete(root: str, flags: dict, args: list[str], log: _Log) -> int:
    from .container import Container

    try:
        c = Container.load(root, args[0])
    except Exception as e:
        from ..errors import NotFound  # only now: errors stays off the path that succeeds

        if flags.get("--force") and isinstance(e, NotFound):
            return 0  # runc: deleting what is not there with --force is not an error
        raise
    c.delete(force=bool(flags.get("--force")))
    return 0


def _cmd_list(root: str, flags: dict, args: list[str], log: _Log) -> int:
    from ..errors import UsageError
    from .container import Container

    fmt = str(flags.get("--format") or "table")
    if fmt not in ("table", "json"):
        raise UsageError(f"invalid format {fmt!r}: use table or json")
    containers = Container.all(root)
    if flags.get("--quiet"):
        sys.stdout.write("".join(c.id + "\n" for c in containers))
        return 0
    states = [c.oci_state() for c in containers]
    if fmt == "json":
        import json

        sys.stdout.write(json.dumps(states) + "\n")
        return 0
    rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
    for s in states:
        rows.append(
            (s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"], _owner(root, s["id"]))
        )
    widths = [max(12, *(len(r[i]) + 3 for r in rows)) for i in range(5)]
    for r in rows:
        sys.stdout.write(
            "".join(v.ljust(w) for v, w in zip(r[:5], widths, strict=True)) + r[5] + "\n"
        )
    return 0


def _owner(root: str, cid: str) -> str:
    import os
    import pwd

    try:
        uid = os.stat(os.path.join(root, cid)).st_uid
        return pwd.getpwuid(uid).pw_name
    except (OSError, KeyError):
        return "#?"


def _cmd_pause(root: str, flags: dict, args: list[str], log: _Log) -> int:
    from .container import Container

    Container.load(root, args[0]).pause()
    return 0


def _cmd_resume(root: str, flags: dict, args: list[str], log: _Log) -> int:
    from .container import Container

    Container.load(root, args[0]).resume()
    return 0


def _cmd_ps(root: str, flags: dict, args: list[str], log: _Log) -> int:
    from ..errors import UsageError
    from .container import Container

    fmt = str(flags.get("--format") or "table")
    if fmt not in ("table", "json"):
        raise UsageError(f"invalid format {fmt!r}: use table or json")
    c = Container.load(root, args[0])
    pids = c.processes() if c.status() != "stopped" else []
    if fmt == "json":
        import json

        if len(args) > 1:
            raise UsageError("ps options cannot be used with --format json")
        sys.stdout.write(json.dumps(pids) + "\n")
        return 0
    import subprocess

    out = subprocess.run(["ps", *(args[1:] or ["-ef"])], capture_output=True, text=True)
    if out.returncode != 0:
        raise UsageError(f"ps {' '.join(args[1:])}: {out.stderr.strip()}")
    lines = out.stdout.splitlines()
    header = lines[0].split() if lines else []
    if "PID" not in header:
        raise UsageError("ps options must include the PID column")
    col = header.index("PID")
    wanted = set(pids)
    sys.stdout.write(lines[0] + "\n")
    for line in lines[1:]:
        fields = line.split(None, col + 1)
        if len(fields) > col and fields[col].isdigit() and int(fields[col]) in wanted:
            sys.stdout.write(line + "\n")
    return 0


def _cmd_exec(root: str, flags: dict, args: list[str], log: _Log) -> int:
    from ..errors import NotImplementedYet, OciboxError, UsageError
    from .container import Container
    from .exec import build_process, exec_process

    if flags.get("--tty") and not flags.get("--console-socket"):
        raise NotImplementedYet("exec --tty needs --console-socket (and only then is it used)")
    for unsupported in ("--process-label", "--apparmor"):
        if flags.get(unsupported):
            raise NotImplementedYet(f"exec {unsupported} is not supported yet")
    fds = str(flags.get("--preserve-fds", "0"))
    if not fds.isdigit():
        raise UsageError(f"--preserve-fds: not a number: {fds!r}")
    try:
        c = Container.load(root, args[0])
        process = build_process(
            c,
            process_file=flags.get("--process") or None,
            args=args[1:],
            env=flags.get("--env", []),
            cwd=flags.get("--cwd") or None,
            user=flags.get("--user") or None,
            caps_add=flags.get("--cap", []),
            no_new_privs=bool(flags.get("--no-new-privs")),
            additional_gids=flags.get("--additional-gids", []),
            tty=bool(flags.get("--tty")),
        )
        # As runc: the terminal may come from --process ("terminal": true, as containerd's
        # shim gives it, with --console-socket and no --tty); a console socket needs one.
        if flags.get("--console-socket") and not process.get("terminal"):
            raise UsageError("exec --console-socket: the process has no terminal (--tty or --process)")
        return exec_process(c, process, detach=bool(flags.get("--detach")),
                            pid_file=flags.get("--pid-file") or None, preserve_fds=int(fds),
                            console_socket=flags.get("--console-socket") or None,
                            pidfd_socket=flags.get("--pidfd-socket") or None,
                            cgroups=flags.get("--cgroup", []), warn=log.warn)  # fmt: skip
    except OciboxError as e:
        # runc's: an exec that fails says so and exits 255, which no command's own exit
        # status can be mistaken for (the containerd shim logs the words as given)
        e.message, e.exit_code = f"exec failed: {e.message}", 255
        raise


# update's flags: flag -> (section, key, parser name)
_UPDATE_FLAGS = {
    "--memory": ("memory", "limit", "bytes"), "--memory-reservation": ("memory", "reservation", "bytes"),
    "--memory-swap": ("memory", "swap", "bytes"), "--cpu-share": ("cpu", "shares", "int"),
    "--cpu-quota": ("cpu", "quota", "int"), "--cpu-period": ("cpu", "period", "int"),
    "--cpu-rt-period": ("cpu", "realtimePeriod", "int"),
    "--cpu-rt-runtime": ("cpu", "realtimeRuntime", "int"), "--cpuset-cpus": ("cpu", "cpus", "str"),
    "--cpuset-mems": ("cpu", "mems", "str"), "--pids-limit": ("pids", "limit", "int"),
    "--blkio-weight": ("blockIO", "weight", "int"),
}  # fmt: skip


def _cmd_update(root: str, flags: dict, args: list[str], log: _Log) -> int:
    import json

    from ..errors import NotImplementedYet, UsageError
    from .container import Container
    from .stats import parse_bytes, update

    resources: dict = {}
    source = flags.get("--resources")
    if source:
        try:
            data = sys.stdin.read() if source == "-" else open(source).read()
            resources = json.loads(data)
        except (OSError, ValueError) as e:
            raise UsageError(f"--resources {source}: {e}") from None
    for flag, (section, key, kind) in _UPDATE_FLAGS.items():
        if flag in flags:
            text = str(flags[flag])
            if kind == "bytes":
                value: object = parse_bytes(text)
            elif kind == "int":
                if not text.lstrip("-").isdigit():
                    raise UsageError(f"{flag}: not a number: {text!r}")
                value = int(text)
            else:
                value = text
            resources.setdefault(section, {})[key] = value
    for flag in ("--kernel-memory", "--kernel-memory-tcp"):
        if flag in flags:
            raise NotImplementedYet(f"{flag}: kernel memory limits are not supported")
    update(Container.load(root, args[0]), resources)
    return 0


def _cmd_events(root: str, flags: dict, args: list[str], log: _Log) -> int:
    import json
    import time

    from ..errors import UsageError
    from .container import Container
    from .stats import stats

    text = str(flags.get("--interval") or "5s")
    units = {"ms": 0.001, "s": 1, "m": 60}
    unit = next((u for u in ("ms", "s", "m") if text.endswith(u)), "")
    try:
        interval = float(text[: len(text) - len(unit)]) * units.get(unit, 1)
    except ValueError:
        raise UsageError(f"--interval {text!r}: use e.g. 5s or 500ms") from None
    c = Container.load(root, args[0])
    if c.status() == "stopped":
        from .container import ContainerStateError

        raise ContainerStateError(f"container {c.id} is stopped")
    while True:
        sys.stdout.write(json.dumps(stats(c)) + "\n")
        sys.stdout.flush()
        if flags.get("--stats") or c.status() == "stopped":
            return 0
        time.sleep(interval)


def _cmd_features(root: str, flags: dict, args: list[str], log: _Log) -> int:
    import json

    from .features import features

    sys.stdout.write(json.dumps(features(), indent=2) + "\n")
    return 0


def _criu_options(flags: dict):
    from .checkpoint import Options

    return Options(flags.get("--image-path") or None, flags.get("--work-path") or None,
                   tcp_established=bool(flags.get("--tcp-established")),
                   ext_unix_sk=bool(flags.get("--ext-unix-sk")),
                   shell_job=bool(flags.get("--shell-job")),
                   file_locks=bool(flags.get("--file-locks")),
                   manage_cgroups_mode=flags.get("--manage-cgroups-mode") or None,
                   empty_ns=flags.get("--empty-ns") or None, criu=_criu_path,
                   auto_dedup=bool(flags.get("--auto-dedup")),
                   lazy_pages=bool(flags.get("--lazy-pages")),
                   lsm_profile=flags.get("--lsm-profile") or None,
                   lsm_mount_context=flags.get("--lsm-mount-context") or None)  # fmt: skip


def _cmd_checkpoint(root: str, flags: dict, args: list[str], log: _Log) -> int:
    from .checkpoint import checkpoint
    from .container import Container

    c = Container.load(root, args[0])
    checkpoint(c, _criu_options(flags), leave_running=bool(flags.get("--leave-running")),
               pre_dump=bool(flags.get("--pre-dump")),
               parent_path=flags.get("--parent-path") or None,
               page_server=flags.get("--page-server") or None,
               status_fd=flags.get("--status-fd") or None)  # fmt: skip
    return 0


def _cmd_restore(root: str, flags: dict, args: list[str], log: _Log) -> int:
    from .checkpoint import restore

    return restore(root, args[0], str(flags.get("--bundle") or "."), _criu_options(flags),
                   detach=bool(flags.get("--detach")), pid_file=flags.get("--pid-file") or None,
                   no_subreaper=bool(flags.get("--no-subreaper")),
                   console_socket=flags.get("--console-socket") or None, warn=log.warn)  # fmt: skip


_COMMAND_FUNCS = {
    "spec": _cmd_spec,
    "create": _cmd_create,
    "run": _cmd_run,
    "start": _cmd_start,
    "state": _cmd_state,
    "kill": _cmd_kill,
    "delete": _cmd_delete,
    "list": _cmd_list,
    "pause": _cmd_pause,
    "resume": _cmd_resume,
    "ps": _cmd_ps,
    "features": _cmd_features,
    "exec": _cmd_exec,
    "update": _cmd_update,
    "events": _cmd_events,
    "checkpoint": _cmd_checkpoint,
    "restore": _cmd_restore,
}


if __name__ == "__main__":
    exit_fast(main())

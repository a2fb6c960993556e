"""The words of ``ocibox-runtime --help`` and ``ocibox-runtime COMMAND --help``.

Kept out of cli.py, which every command imports: only a request for help loads
these tables. The flags themselves (names, aliases, whether they take a value)
are cli.py's; a flag named there without a line here is a test failure.
"""

GLOBAL_FLAGS = {
    "--root": ("DIR", "where containers' state lives (default /run/ocibox-runtime; "
                      "$XDG_RUNTIME_DIR/ocibox-runtime for a rootless user)"),
    "--log": ("FILE", "append log lines (errors, warnings, --debug) to FILE"),
    "--log-format": ("text|json", "the format of the log lines (default text)"),
    "--debug": ("", "log what the runtime does, step by step"),
    "--systemd-cgroup": ("", 'cgroupsPath is "slice:prefix:name": make the cgroups a systemd unit'),
    "--rootless": ("true|false|auto", "whether cgroup permission errors are tolerated "
                                      "(auto: when not root)"),
    "--criu": ("PATH", "the criu program for checkpoint and restore (default: criu on PATH)"),
    "--version": ("", "print the version and the runtime-spec version"),
}  # fmt: skip

COMMANDS = {
    "spec": "write a default config.json into the bundle",
    "create": "create a container from a bundle; its process waits for start",
    "start": "let a created container's process run",
    "run": "create and start a container, and wait for it unless --detach",
    "state": "print a container's state as JSON",
    "kill": "send a signal (default SIGTERM) to a container's init or all its processes",
    "delete": "remove a stopped container (--force: any container)",
    "list": "list the containers under --root",
    "pause": "freeze all a container's processes",
    "resume": "thaw a paused container",
    "ps": "list a container's processes",
    "features": "print what this runtime supports, as JSON",
    "exec": "run another process in a running container",
    "update": "change a container's resource limits",
    "events": "print a container's events (OOM kills) or, with --stats, its statistics",
    "checkpoint": "save a running container to disk with criu",
    "restore": "restore a container that checkpoint saved",
}

# Flag -> (value, description); one line per name, aliases share it.
FLAGS = {
    "--bundle": ("DIR", "the bundle directory, which holds config.json (default: the current one)"),
    "--console-socket": ("PATH", "send the terminal's master end to this unix socket (SCM_RIGHTS)"),
    "--pid-file": ("FILE", "write the process's host pid to FILE"),
    "--no-pivot": ("", "enter the root with MS_MOVE and chroot instead of pivot_root"),
    "--no-new-keyring": ("", "keep the caller's session keyring instead of a new one"),
    "--preserve-fds": ("N", "pass file descriptors 3 to 3+N-1 on to the process"),
    "--pidfd-socket": ("PATH", "send a pidfd of the process to this unix socket"),
    "--detach": ("", "do not wait for the process; leave it running"),
    "--keep": ("", "keep the container after it exits (delete it yourself)"),
    "--rootless": ("", "a config for an unprivileged user (user namespace, no cgroups)"),
    "--all": ("", "signal every process in the container's cgroup"),
    "--force": ("", "kill a running container first"),
    "--format": ("table|json", "the output format (default table)"),
    "--quiet": ("", "print the ids only"),
    "--process": ("FILE", "the process to run, as config.json's process object"),
    "--tty": ("", "give the process a terminal (with --console-socket)"),
    "--cwd": ("DIR", "the working directory inside the container"),
    "--env": ("K=V", "set an environment variable (repeatable)"),
    "--user": ("UID[:GID]", "run as this user"),
    "--cap": ("CAP", "add a capability (repeatable)"),
    "--no-new-privs": ("", "set no_new_privs"),
    "--additional-gids": ("GID", "an additional group (repeatable)"),
    "--ignore-paused": ("", "allow exec into a paused container"),
    "--process-label": ("LABEL", "an SELinux label (refused: no LSM support)"),
    "--apparmor": ("PROFILE", "an AppArmor profile (refused: no LSM support)"),
    "--cgroup": ("[CTRL,...:]PATH", "join this existing sub-cgroup of the container's "
                                    "(controllers: v1 only, repeatable; a PATH without "
                                    "them is for every hierarchy, then the only --cgroup)"),
    "--resources": ("FILE|-", "the new linux.resources as JSON (- for stdin)"),
    "--memory": ("BYTES", "memory limit"),
    "--memory-reservation": ("BYTES", "memory soft limit"),
    "--memory-swap": ("BYTES", "memory plus swap limit"),
    "--kernel-memory": ("BYTES", "kernel memory limit (cgroup v1 only; ignored on v2)"),
    "--kernel-memory-tcp": ("BYTES", "kernel TCP memory limit (cgroup v1 only)"),
    "--cpu-share": ("N", "CPU shares (relative weight)"),
    "--cpu-quota": ("USEC", "CPU time allowed per period"),
    "--cpu-period": ("USEC", "the CPU quota's period"),
    "--cpu-rt-period": ("USEC", "real-time period (cgroup v1)"),
    "--cpu-rt-runtime": ("USEC", "real-time runtime per period (cgroup v1)"),
    "--cpuset-cpus": ("LIST", "the CPUs allowed, e.g. 0-1"),
    "--cpuset-mems": ("LIST", "the memory nodes allowed"),
    "--pids-limit": ("N", "the most processes at once"),
    "--blkio-weight": ("N", "block I/O weight (10-1000)"),
    "--stats": ("", "print statistics once and exit"),
    "--interval": ("DURATION", "time between statistics (default 5s)"),
    "--image-path": ("DIR", "where criu's images are written or read"),
    "--work-path": ("DIR", "where criu's logs go (default: the image path)"),
    "--tcp-established": ("", "allow open TCP connections"),
    "--ext-unix-sk": ("", "allow external unix sockets"),
    "--shell-job": ("", "allow a process attached to the caller's terminal"),
    "--file-locks": ("", "save and restore file locks"),
    "--manage-cgroups-mode": ("MODE", "criu's cgroup mode: soft, full, strict or ignore"),
    "--empty-ns": ("NS", "leave this namespace (network) empty"),
    "--leave-running": ("", "leave the container running afterwards"),
    "--pre-dump": ("", "dump memory only, for a later checkpoint with --parent-path"),
    "--parent-path": ("DIR", "the previous pre-dump's images, relative to --image-path"),
    "--page-server": ("ADDRESS:PORT", "send the memory pages to criu page-server there"),
    "--lazy-pages": ("", "memory pages on demand (userfaultfd, with criu lazy-pages)"),
    "--status-fd": ("FD", "with --lazy-pages: a NUL byte is written here once pages are served"),
    "--auto-dedup": ("", "punch the pages taken again out of the parent's images"),
    "--no-subreaper": ("", "do not become the restored process's subreaper"),
    "--lsm-profile": ("TYPE:NAME", "the restored process's LSM profile (apparmor, selinux "
                                   "or none), if the kernel runs that LSM"),
    "--lsm-mount-context": ("CONTEXT", "the SELinux context= of the restored mounts that had one"),
}

# Names that mean something else in one command.
FLAGS_BY_COMMAND = {
    ("list", "--format"): ("table|json", "the output format (default table)"),
    ("ps", "--format"): ("table|json", "table: ps(1)'s output; json: the pids"),
}


def global_help(prog: str, usages: dict[str, str]) -> str:
    lines = [f"usage: {prog} [global flags] COMMAND [flags] [arguments]",
             f"       {prog} COMMAND --help", "", "commands:"]  # fmt: skip
    width = max(map(len, usages))
    lines += [f"  {name:<{width}}  {COMMANDS.get(name, '')}" for name in usages]
    lines += ["", "global flags:"]
    lines += _flag_lines(GLOBAL_FLAGS.items())
    return "\n".join(lines)


def command_help(prog: str, cmd: str, spec: dict[str, bool], aliases: dict[str, str], usage: str) -> str:
    short = {}  # long name -> its one-letter aliases
    for name in spec:
        if not name.startswith("--"):
            short.setdefault(aliases.get(name, name), []).append(name)
    rows = []
    for name in spec:
        if name.startswith("--"):
            value, text = FLAGS_BY_COMMAND.get((cmd, name)) or FLAGS[name]
            names = ", ".join([*short.get(name, ()), name])
            rows.append((names, value, text))
    lines = [f"usage: {prog} {usage}", "", COMMANDS[cmd]]
    if rows:
        lines += ["", "flags:", *_flag_lines((n, (v, t)) for n, v, t in rows)]
    return "\n".join(lines)


def _flag_lines(items) -> list[str]:
    items = [(f"{name} {value}".rstrip(), text) for name, (value, text) in items]
    width = max(len(left) for left, _ in items)
    return [f"  {left:<{width}}  {text}" for left, text in items]

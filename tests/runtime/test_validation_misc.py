"""More runtime-tools areas under runc and ocibox-runtime: /dev/console with a terminal,
hooks that run in the container's namespaces, and a read-only root with writable mounts.
"""

from __future__ import annotations

import os
import socket

import pytest

pytestmark = [pytest.mark.root, pytest.mark.peer]


def _link(bundle, *applets):
    for applet in applets:
        link = bundle.rootfs / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")


def _console_run(rt, bundle_path, sock_path) -> str:
    """create with a console socket, start, and read everything the program writes."""
    cid = rt.new_id()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_path))
    server.listen(1)
    try:
        rt("create", "--console-socket", str(sock_path), "--bundle", bundle_path, cid)
        conn, _ = server.accept()
        _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
        conn.close()
    finally:
        server.close()
    rt("start", cid)
    out = b""
    while True:
        try:
            chunk = os.read(fds[0], 4096)
        except OSError:  # EIO once the program has closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(fds[0])
    rt.wait_status(cid, "stopped")
    rt("delete", cid)
    return out.decode(errors="replace").replace("\r\n", "\n")


def test_dev_console_with_a_terminal(runc, ours, bundle, tmp_path):
    """With process.terminal, /dev/console is the container's terminal (config-linux.md)."""
    _link(bundle, "stat", "readlink", "tty")

    def edit(cfg):
        cfg["process"]["terminal"] = True

    script = ("stat -c '%F %t:%T' /dev/console; tty; readlink /proc/self/fd/0; readlink /proc/self/fd/1; "
              "[ /dev/console -ef /dev/pts/0 ] && echo same-node || echo other-node")  # fmt: skip
    b = bundle.write(["sh", "-c", script], edit)
    theirs = _console_run(runc, b, tmp_path / "runc.sock")
    assert theirs.splitlines()[0] == "character special file 88:0"
    mine = _console_run(ours, b, tmp_path / "ours.sock")
    assert mine == theirs
    assert mine.splitlines()[:2] == ["character special file 88:0", "/dev/pts/0"]


def test_container_namespace_hooks(runc, ours, bundle, tmp_path):
    """createContainer and startContainer run in the container's mount namespace."""
    outs = []
    for rt in (runc, ours):
        log = tmp_path / f"log-{rt.name}"
        log.mkdir()
        os.chmod(log, 0o777)

        def hook(kind, where):
            return {"path": "/bin/sh",
                    "args": ["sh", "-c", f"readlink /proc/self/ns/mnt > {where}/{kind}"]}  # fmt: skip

        def edit(cfg, log=log):
            cfg["mounts"].append({"destination": "/hooklog", "type": "bind", "source": str(log),
                                  "options": ["bind"]})  # fmt: skip
            cfg["hooks"] = {"createContainer": [hook("createContainer", log)],
                            "startContainer": [hook("startContainer", "/hooklog")],
                            "prestart": [hook("prestart", log)]}  # fmt: skip

        _link(bundle, "readlink")
        b = bundle.write(["sleep", "30"], edit)
        bundle.config.pop("hooks")
        bundle.config["mounts"].pop()
        cid = rt.new_id()
        rt("create", "--bundle", b, cid)
        rt("start", cid)
        pid = rt.state(cid)["pid"]
        container_mnt = os.readlink(f"/proc/{pid}/ns/mnt")
        rt("delete", "--force", cid)
        seen = {k: (log / k).read_text().strip() for k in
                ("prestart", "createContainer", "startContainer")}  # fmt: skip
        outs.append({k: v == container_mnt for k, v in seen.items()})
    assert (
        outs[0] == outs[1] == {"prestart": False, "createContainer": True, "startContainer": True}
    )


def test_readonly_root_keeps_its_mounts_writable(runc, ours, bundle):
    _link(bundle, "grep", "cut")

    def edit(cfg):
        cfg["mounts"].append({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs"})

    script = ("touch /scratch/a && echo scratch-rw; touch /dev/shm/a && echo shm-rw; "
              "touch /a 2>/dev/null || echo root-ro; touch /etc/a 2>/dev/null || echo etc-ro; "
              "grep ' / / ' /proc/self/mountinfo | cut -d' ' -f6 | cut -d, -f1")  # fmt: skip
    b = bundle.write(["sh", "-c", script], edit)
    theirs = runc("run", "--bundle", b, runc.new_id())
    mine = ours("run", "--bundle", b, ours.new_id())
    assert mine.stdout == theirs.stdout
    assert mine.stdout.split()[:4] == ["scratch-rw", "shm-rw", "root-ro", "etc-ro"]

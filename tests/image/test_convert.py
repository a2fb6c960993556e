"""Image config -> runtime config (image-spec conversion.md), and agreement with umoci."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess

import pytest

from ocibox.errors import BundleError, InvalidObject
from ocibox.image.convert import merge_env, read_file_in_root, resolve_user, to_runtime_config
from ocibox.image.models import Descriptor, ImageConfig

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
# a comment, and a blank line

app:x:1000:1000::/home/app:/bin/sh
broken:x:notanumber:1::/:/bin/sh
"""
GROUP = """\
root:x:0:
app:x:1000:
staff:x:50:app
wheel:x:10:root, app
audio:x:29:bob
staff2:x:50:app
"""


def _write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def rootfs(tmp_path):
    root = tmp_path / "bundle" / "rootfs"
    _write(root / "etc" / "passwd", PASSWD)
    _write(root / "etc" / "group", GROUP)
    return root


def _image(**config) -> dict:
    return {
        "created": "2024-01-02T03:04:05Z",
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": []},
    }


# --- users --------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, uid, gid, extra, home",
    [
        ("app", 1000, 1000, [50, 10], "/home/app"),  # supplementary groups, deduplicated
        ("root", 0, 0, [10], "/root"),
        ("1000", 1000, 1000, None, "/home/app"),  # numeric: gid from passwd, no groups
        ("1000:50", 1000, 50, None, "/home/app"),
        ("app:50", 1000, 50, None, "/home/app"),
        ("1000:staff", 1000, 50, None, "/home/app"),
        ("app:wheel", 1000, 10, None, "/home/app"),
        ("4242", 4242, 0, None, None),  # unknown numeric uid: used verbatim
        ("4242:4242", 4242, 4242, None, None),
    ],
)
def test_user_forms(rootfs, spec, uid, gid, extra, home):
    cfg = to_runtime_config(_image(User=spec), str(rootfs))
    user = cfg["process"]["user"]
    assert (user["uid"], user["gid"], user.get("additionalGids")) == (uid, gid, extra)
    homes = [e for e in cfg["process"]["env"] if e.startswith("HOME=")]
    assert homes == ([f"HOME={home}"] if home else [])


def test_no_user_keeps_default_root(rootfs):
    cfg = to_runtime_config(_image(), str(rootfs))
    assert cfg["process"]["user"] == {"uid": 0, "gid": 0}
    assert not any(e.startswith("HOME=") for e in cfg["process"]["env"])


def test_image_home_is_not_overridden(rootfs):
    cfg = to_runtime_config(_image(User="app", Env=["HOME=/elsewhere"]), str(rootfs))
    assert [e for e in cfg["process"]["env"] if e.startswith("HOME=")] == ["HOME=/elsewhere"]


def test_unknown_user_names_the_user(rootfs):
    with pytest.raises(BundleError, match="'nosuch'.*not found in .*/etc/passwd"):
        to_runtime_config(_image(User="nosuch"), str(rootfs))


def test_unknown_group_names_the_group(rootfs):
    with pytest.raises(BundleError, match="'nogroup'.*'app:nogroup'.*not found"):
        to_runtime_config(_image(User="app:nogroup"), str(rootfs))


def test_missing_passwd(tmp_path):
    root = tmp_path / "rootfs"
    root.mkdir()
    with pytest.raises(BundleError, match="'app'.*no /etc/passwd") as info:
        to_runtime_config(_image(User="app"), str(root))
    assert info.value.hint
    # Numeric ids need no database at all.
    user = to_runtime_config(_image(User="7:8"), str(root))["process"]["user"]
    assert user == {"uid": 7, "gid": 8}
    assert to_runtime_config(_image(User="7"), str(root))["process"]["user"] == {"uid": 7, "gid": 0}


def test_missing_group_file(rootfs):
    (rootfs / "etc" / "group").unlink()
    with pytest.raises(BundleError, match="'staff'.*no /etc/group"):
        to_runtime_config(_image(User="app:staff"), str(rootfs))
    # A user alone still resolves, just without supplementary groups.
    user = to_runtime_config(_image(User="app"), str(rootfs))["process"]["user"]
    assert user == {"uid": 1000, "gid": 1000}


@pytest.mark.parametrize("spec", ["app:", ":50", "", "-1", "99999999999", "1:99999999999"])
def test_bad_user_specs(rootfs, spec):
    if spec == "":  # empty means "not set"
        assert to_runtime_config(_image(User=spec), str(rootfs))["process"]["user"]["uid"] == 0
        return
    with pytest.raises(BundleError):
        resolve_user(str(rootfs), spec)


def test_passwd_that_is_not_a_file(rootfs):
    (rootfs / "etc" / "passwd").unlink()
    (rootfs / "etc" / "passwd").mkdir()
    with pytest.raises(BundleError, match="not a regular file"):
        resolve_user(str(rootfs), "app")
    assert resolve_user(str(rootfs), "5").uid == 5  # numeric ids do not care


# --- symlinks stay inside the rootfs ------------------------------------------


@pytest.fixture
def host_passwd(tmp_path):
    """A file outside the rootfs that a naive reader would reach: user evil is 6666."""
    path = tmp_path / "host" / "etc" / "passwd"
    _write(path, "evil:x:6666:6666::/evil:/bin/sh\n")
    return path


@pytest.mark.parametrize("kind", ["absolute", "relative", "dotdot-chain"])
def test_symlinked_passwd_resolves_inside_rootfs(rootfs, host_passwd, kind):
    etc_passwd = rootfs / "etc" / "passwd"
    etc_passwd.unlink()
    if kind == "absolute":
        target = str(host_passwd)  # /tmp/.../host/etc/passwd on the host
    elif kind == "relative":
        target = os.path.relpath(host_passwd, etc_passwd.parent)  # ../../../host/etc/passwd
    else:
        target = "../" * 30 + str(host_passwd).lstrip("/")
    etc_passwd.symlink_to(target)
    # Nothing at that path inside the rootfs yet: the host file must not be read.
    with pytest.raises(BundleError, match="'evil'.*no /etc/passwd"):
        resolve_user(str(rootfs), "evil")
    # Chroot-style, the link names this file inside the rootfs.
    inside = rootfs / (str(host_passwd).lstrip("/") if kind != "relative" else "host/etc/passwd")
    _write(inside, "evil:x:7777:7777::/inside:/bin/sh\n")
    if kind == "relative":
        # ../../../host/etc/passwd from /etc climbs to / and stops there.
        assert os.path.normpath(os.path.join("/etc", target)) == "/host/etc/passwd"
    user = resolve_user(str(rootfs), "evil")
    assert (user.uid, user.home) == (7777, "/inside")


def test_symlink_to_host_etc_passwd_never_reads_the_host(rootfs):
    # rootfs/etc/passwd -> /etc/passwd points at itself inside the rootfs: a loop.
    etc_passwd = rootfs / "etc" / "passwd"
    etc_passwd.unlink()
    etc_passwd.symlink_to("/etc/passwd")
    with pytest.raises(BundleError, match="symbolic links"):
        resolve_user(str(rootfs), "root")  # the host has root; we must not find it


def test_symlinked_directory_resolves_inside_rootfs(rootfs, tmp_path):
    shutil.rmtree(rootfs / "etc")
    _write(tmp_path / "private" / "etc" / "passwd", "evil:x:6666:6666::/:/bin/sh\n")
    _write(rootfs / "private" / "etc" / "passwd", "app:x:1234:1234::/:/bin/sh\n")
    (rootfs / "etc").symlink_to("/private/etc")
    assert resolve_user(str(rootfs), "app").uid == 1234
    with pytest.raises(BundleError):
        resolve_user(str(rootfs), "evil")


def test_read_file_in_root_missing_and_fifo(rootfs):
    assert read_file_in_root(str(rootfs), "/etc/nothing") is None
    assert read_file_in_root(str(rootfs), "/etc/passwd/below") is None
    os.mkfifo(rootfs / "etc" / "fifo")
    with pytest.raises(BundleError, match="not a regular file"):
        read_file_in_root(str(rootfs), "/etc/fifo")


# --- process ------------------------------------------------------------------


@pytest.mark.parametrize(
    "entrypoint, cmd, args",
    [
        (["/bin/echo", "hi"], ["a", "b"], ["/bin/echo", "hi", "a", "b"]),
        (["/bin/echo"], None, ["/bin/echo"]),
        (None, ["/bin/ls", "-l"], ["/bin/ls", "-l"]),
        ([], ["/bin/ls"], ["/bin/ls"]),
        (None, None, ["sh"]),  # neither: the default args stay
        ([], [], ["sh"]),
    ],
)
def test_entrypoint_and_cmd(rootfs, entrypoint, cmd, args):
    image = _image(Entrypoint=entrypoint, Cmd=cmd)
    assert to_runtime_config(image, str(rootfs))["process"]["args"] == args


def test_env_merging(rootfs):
    image = _image(Env=["FOO=bar", "PATH=/custom", "EMPTY=", "NOVALUE", "FOO=baz"])
    env = to_runtime_config(image, str(rootfs))["process"]["env"]
    # Image values replace defaults of the same name in place; others follow in order.
    assert env == ["PATH=/custom", "TERM=xterm", "FOO=baz", "EMPTY=", "NOVALUE"]


def test_merge_env_keeps_defaults_not_named_by_the_image():
    assert merge_env(["A=1", "B=2"], []) == ["A=1", "B=2"]
    assert merge_env(["A=1", "B=2"], ["B=3", "C=4"]) == ["A=1", "B=3", "C=4"]


def test_cwd(rootfs):
    assert to_runtime_config(_image(WorkingDir="/srv"), str(rootfs))["process"]["cwd"] == "/srv"
    assert to_runtime_config(_image(WorkingDir=""), str(rootfs))["process"]["cwd"] == "/"
    assert to_runtime_config(_image(), str(rootfs))["process"]["cwd"] == "/"


# --- annotations, volumes, root -----------------------------------------------


def test_annotations(rootfs):
    image = _image(
        Labels={"com.example": "1", "org.opencontainers.image.os": "plan9"},
        ExposedPorts={"80/tcp": {}, "53/udp": {}, "443": {}},
        StopSignal="SIGINT",
    )
    image.update({"author": "Jo", "variant": "v8", "os.version": "10.0", "os.features": ["a", "b"]})
    ann = to_runtime_config(image, str(rootfs))["annotations"]
    assert ann == {
        "org.opencontainers.image.os": "plan9",  # the label wins over the implicit value
        "org.opencontainers.image.architecture": "amd64",
        "org.opencontainers.image.variant": "v8",
        "org.opencontainers.image.os.version": "10.0",
        "org.opencontainers.image.os.features": "a,b",
        "org.opencontainers.image.author": "Jo",
        "org.opencontainers.image.created": "2024-01-02T03:04:05Z",
        "org.opencontainers.image.stopSignal": "SIGINT",
        "org.opencontainers.image.exposedPorts": "443,53/udp,80/tcp",
        "com.example": "1",
    }


def test_labels_win_over_exposed_ports_and_stop_signal(rootfs):
    image = _image(
        ExposedPorts={"80/tcp": {}},
        StopSignal="SIGINT",
        Labels={
            "org.opencontainers.image.exposedPorts": "mine",
            "org.opencontainers.image.stopSignal": "SIGTERM",
        },
    )
    ann = to_runtime_config(image, str(rootfs))["annotations"]
    assert ann["org.opencontainers.image.exposedPorts"] == "mine"
    assert ann["org.opencontainers.image.stopSignal"] == "SIGTERM"


def test_empty_fields_give_no_annotations(rootfs):
    image = {"architecture": "amd64", "os": "linux", "author": "", "config": {"StopSignal": ""}}
    ann = to_runtime_config(image, str(rootfs))["annotations"]
    assert set(ann) == {"org.opencontainers.image.os", "org.opencontainers.image.architecture"}


def test_manifest_annotations_are_not_copied(rootfs):
    desc = Descriptor.of("application/vnd.oci.image.manifest.v1+json", b"{}")
    desc = desc.with_annotations({"org.opencontainers.image.ref.name": "t", "x": "y"})
    cfg = to_runtime_config(_image(), str(rootfs), manifest_descriptor=desc)
    assert "x" not in cfg["annotations"]
    assert "org.opencontainers.image.ref.name" not in cfg["annotations"]


def test_volumes_become_tmpfs_mounts(rootfs):
    image = _image(Volumes={"/var/lib/data": {}, "/data": {}, "/dev/shm": {}})
    mounts = to_runtime_config(image, str(rootfs))["mounts"]
    vols = [m for m in mounts if m["source"] == "none"]
    assert [m["destination"] for m in vols] == ["/data", "/var/lib/data"]  # /dev/shm: base wins
    assert vols[0]["type"] == "tmpfs" and "rw" in vols[0]["options"]
    no_vols = to_runtime_config(image, str(rootfs), volumes=False)["mounts"]
    assert not any(m["source"] == "none" for m in no_vols)


def test_root_and_defaults(rootfs):
    cfg = to_runtime_config(_image(), str(rootfs))
    assert cfg["root"] == {"path": "rootfs", "readonly": False}
    assert cfg["ociVersion"] == "1.2.0"
    assert "network" in [n["type"] for n in cfg["linux"]["namespaces"]]
    other = to_runtime_config(_image(), str(rootfs), root_path="fs")
    assert other["root"]["path"] == "fs"
    named = rootfs.parent / "root-2"
    shutil.copytree(rootfs, named)
    assert to_runtime_config(_image(), str(named) + "/")["root"]["path"] == "root-2"


def test_rootless(rootfs):
    cfg = to_runtime_config(_image(User="app"), str(rootfs), rootless=True)
    kinds = [n["type"] for n in cfg["linux"]["namespaces"]]
    assert "user" in kinds and "network" not in kinds
    assert cfg["linux"]["uidMappings"][0]["hostID"] == os.geteuid()
    assert cfg["process"]["user"]["uid"] == 1000
    assert cfg["root"]["readonly"] is False


def test_base_and_input_are_not_mutated(rootfs):
    base = {"process": {"env": ["A=1"], "args": ["x"]}, "annotations": {"keep": "me"}}
    base_copy = copy.deepcopy(base)
    image = _image(Env=["A=2"], Cmd=["y"], Labels={"l": "v"}, Volumes={"/v": {}})
    image_copy = copy.deepcopy(image)
    cfg = to_runtime_config(image, str(rootfs), base=base)
    assert base == base_copy and image == image_copy
    assert cfg["process"]["env"] == ["A=2"] and cfg["process"]["args"] == ["y"]
    assert cfg["annotations"]["keep"] == "me" and cfg["annotations"]["l"] == "v"
    assert cfg["mounts"][0]["destination"] == "/v"


def test_accepts_image_config_objects(rootfs):
    raw = json.dumps(_image(Cmd=["/bin/true"])).encode()
    cfg = to_runtime_config(ImageConfig.from_bytes(raw), str(rootfs))
    assert cfg["process"]["args"] == ["/bin/true"]


@pytest.mark.parametrize(
    "config",
    [
        {"Cmd": "/bin/sh -c true"},
        {"Entrypoint": [1]},
        {"Env": "A=1"},
        {"User": 0},
        {"Labels": {"a": 1}},
        {"Labels": ["a"]},
        {"ExposedPorts": ["80/tcp"]},
        {"Volumes": {"relative": {}}},
        {"WorkingDir": 5},
    ],
)
def test_mistyped_fields(rootfs, config):
    with pytest.raises(InvalidObject):
        to_runtime_config(_image(**config), str(rootfs))


# --- umoci as the peer ----------------------------------------------------------


def _umoci(*args: str, cwd) -> None:
    subprocess.run(["umoci", *args], cwd=cwd, check=True, capture_output=True)


def _layout_config(layout) -> dict:
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"].replace(":", "/")
    manifest = json.loads((layout / "blobs" / digest).read_text())
    return json.loads(
        (layout / "blobs" / manifest["config"]["digest"].replace(":", "/")).read_bytes()
    )


# Intended differences from umoci 0.4 (checked here or listed):
# - process.terminal is false (umoci keeps runc's true); root.readonly false in both.
# - a numeric uid gets no additionalGids (conversion.md: SHOULD NOT); umoci adds them.
# - a Config.Labels entry wins over an implicit annotation (conversion.md: MUST);
#   umoci lets the implicit value win.
# - empty image fields give no annotation; umoci writes "" values.
# - additionalGids are deduplicated and group members trimmed; umoci does neither.
# - capabilities, ociVersion, hostname, namespaces and masked paths are ocibox's
#   defaults (runtime.spec), not umoci's copy of an older runc's.
@pytest.mark.peer
def test_matches_umoci_unpack(tmp_path):
    if shutil.which("umoci") is None:
        pytest.skip("umoci is not installed: cannot compare with `umoci unpack`")
    _write(tmp_path / "etc" / "passwd", PASSWD)
    # umoci keeps duplicate gids and does not trim " app": plain groups for the comparison.
    _write(tmp_path / "etc" / "group", "app:x:1000:\nstaff:x:50:app\nwheel:x:10:root,app\n")
    _umoci("init", "--layout", "L", cwd=tmp_path)
    _umoci("new", "--image", "L:t", cwd=tmp_path)
    _umoci("insert", "--image", "L:t", "etc", "/etc", cwd=tmp_path)
    # fmt: off
    _umoci(
        "config", "--image", "L:t",
        "--config.user", "app", "--config.env", "FOO=bar", "--config.env", "PATH=/custom",
        "--config.entrypoint", "/bin/echo", "--config.entrypoint", "hi",
        "--config.cmd", "a", "--config.cmd", "b", "--config.workingdir", "/srv",
        "--config.label", "com.example=1", "--config.label", "org.example.x=y",
        "--config.exposedports", "80/tcp", "--config.exposedports", "53/udp",
        "--config.stopsignal", "SIGINT", "--config.volume", "/data", "--author", "Jo <jo@x>",
        cwd=tmp_path,
    )
    # fmt: on
    _umoci("unpack", "--image", "L:t", "B", cwd=tmp_path)
    theirs = json.loads((tmp_path / "B" / "config.json").read_text())
    image = _layout_config(tmp_path / "L")
    ours = to_runtime_config(image, str(tmp_path / "B" / "rootfs"))

    for key in ("user", "args", "env", "cwd"):
        assert ours["process"][key] == theirs["process"][key], key
    assert ours["root"]["path"] == theirs["root"]["path"]
    assert ours["root"].get("readonly", False) == theirs["root"].get("readonly", False)
    assert ours["annotations"] == theirs["annotations"]
    vol = [m for m in theirs["mounts"] if m["destination"] == "/data"]
    assert [m for m in ours["mounts"] if m["destination"] == "/data"] == vol

"""Image configuration to runtime configuration, as image-spec conversion.md says.

The "default generated runtime configuration" starts from ocibox's runtime
defaults (``ocibox.runtime.spec.default_config``) or a caller's ``base``; the
image's fields are then applied on top:

- WorkingDir, Env, Entrypoint and Cmd are copied verbatim; Entrypoint + Cmd
  become ``process.args``; a default env entry whose name the image sets is
  replaced by the image's entry, never kept beside it.
- User is parsed (``user``, ``uid``, ``user:group``, ``uid:gid``, ``user:gid``,
  ``uid:group``); names are looked up in the rootfs's /etc/passwd and
  /etc/group, which are opened chroot-style so a symlink in the rootfs can
  never make ocibox read a host file.
- os, architecture, variant, os.version, os.features, author, created,
  StopSignal and ExposedPorts become ``org.opencontainers.image.*``
  annotations; Config.Labels are copied too and win every conflict.
- Volumes become tmpfs mounts (as umoci does), so application data is not
  written into the root filesystem; ``volumes=False`` leaves them out.
"""

from __future__ import annotations

import copy
import errno
import os
import stat
from collections import deque
from dataclasses import dataclass
from typing import Any

from ..errors import BundleError, InvalidObject
from ..runtime.spec import default_config
from .models import Descriptor, ImageConfig

ANNOTATION_PREFIX = "org.opencontainers.image."
ANNOTATION_EXPOSED_PORTS = "org.opencontainers.image.exposedPorts"
ANNOTATION_STOP_SIGNAL = "org.opencontainers.image.stopSignal"

# Image config field -> annotation key (conversion.md, "Annotation Fields").
_IMPLICIT_ANNOTATIONS = (
    ("os", "org.opencontainers.image.os"),
    ("architecture", "org.opencontainers.image.architecture"),
    ("variant", "org.opencontainers.image.variant"),
    ("os.version", "org.opencontainers.image.os.version"),
    ("os.features", "org.opencontainers.image.os.features"),
    ("author", "org.opencontainers.image.author"),
    ("created", "org.opencontainers.image.created"),
)

# What umoci gives a volume: an empty tmpfs hiding whatever the image has there.
VOLUME_MOUNT_OPTIONS = ("rw", "nosuid", "nodev", "noexec", "relatime")

_MAX_DB_SIZE = 16 << 20  # an /etc/passwd larger than this is not one
_MAX_SYMLINKS = 40  # as the kernel's path walk
_MAX_ID = 2**32 - 2  # (uid_t)-1 means "no change" to the kernel

_WHAT = "image config"


def to_runtime_config(
    image_config: ImageConfig | dict[str, Any],
    rootfs: str,
    *,
    rootless: bool = False,
    base: dict[str, Any] | None = None,
    manifest_descriptor: Descriptor | None = None,
    volumes: bool = True,
    root_path: str | None = None,
) -> dict[str, Any]:
    """Build a runtime config.json dict for an image unpacked at ``rootfs``.

    ``image_config`` is the whole image configuration (the JSON with
    ``architecture``, ``os`` and ``config``). ``rootfs`` is the directory the
    layers were extracted to; its /etc/passwd and /etc/group resolve named
    users and groups. ``root.path`` is ``root_path`` or the last component of
    ``rootfs`` (the bundle is assumed to be its parent), and is writable.

    ``base`` replaces the defaults (it is copied, never changed); without it
    the defaults of ``default_config(rootless=rootless)`` are used.

    ``manifest_descriptor`` is accepted for callers that unpack a manifest, but
    its annotations are deliberately not copied: conversion.md says a converter
    SHOULD NOT extract annotations from manifests or indexes.

    Raises ``InvalidObject`` for a mistyped image field and ``BundleError``
    when the user or group cannot be resolved in the rootfs.
    """
    del manifest_descriptor  # see the docstring
    data = image_config.data if isinstance(image_config, ImageConfig) else image_config
    if not isinstance(data, dict):
        raise InvalidObject(_WHAT, "", "must be an object")
    cfg = data.get("config") or {}
    if not isinstance(cfg, dict):
        raise InvalidObject(_WHAT, "config", "must be an object")

    spec = copy.deepcopy(base) if base is not None else default_config(rootless=rootless)
    process = spec.setdefault("process", {})
    root = spec.setdefault("root", {})
    root["path"] = root_path if root_path is not None else _root_name(rootfs)
    root["readonly"] = False

    _apply_args(process, cfg)
    env = _str_list(cfg, "Env")
    process["env"] = merge_env(process.get("env") or [], env or [])
    working_dir = _str_field(cfg, "WorkingDir")
    process["cwd"] = working_dir or process.get("cwd") or "/"

    user_spec = _str_field(cfg, "User")
    if user_spec:
        user = resolve_user(rootfs, user_spec)
        process["user"] = user.to_runtime()
        if user.home and not any(_env_name(e) == "HOME" for e in process["env"]):
            # An implementation-defined addition, allowed because the image
            # does not set HOME itself (conversion.md, Verbatim Fields note 1).
            process["env"].append(f"HOME={user.home}")

    if volumes:
        _apply_volumes(spec, cfg)
    annotations = _annotations(data, cfg, spec.get("annotations") or {})
    if annotations:
        spec["annotations"] = annotations
    return spec


# --- process ---------------------------------------------------------------


def _apply_args(process: dict[str, Any], cfg: dict[str, Any]) -> None:
    entrypoint = _str_list(cfg, "Entrypoint") or []
    cmd = _str_list(cfg, "Cmd") or []
    # Both set: Cmd is appended to Entrypoint (conversion.md, note 2). Neither
    # set: process.args is implementation-defined, so the base's args stay.
    if entrypoint or cmd:
        process["args"] = entrypoint + cmd


def _env_name(entry: str) -> str:
    return entry.split("=", 1)[0]


def merge_env(defaults: list[str], image_env: list[str]) -> list[str]:
    """``defaults`` with the image's entries applied, as conversion.md allows.

    A default whose name the image sets is replaced in place by the image's
    entry; the image's other entries follow in their order. For a name the
    image sets twice, the last entry wins.
    """
    image_by_name: dict[str, str] = {}
    for entry in image_env:
        image_by_name[_env_name(entry)] = entry
    out: list[str] = []
    seen: set[str] = set()
    for entry in defaults:
        name = _env_name(entry)
        if name in seen:
            continue
        seen.add(name)
        out.append(image_by_name.get(name, entry))
    for entry in image_env:
        name = _env_name(entry)
        if name not in seen:
            seen.add(name)
            out.append(image_by_name[name])
    return out


# --- users and groups --------------------------------------------------------


@dataclass(frozen=True)
class ResolvedUser:
    uid: int
    gid: int
    additional_gids: tuple[int, ...] | None = None  # None: leave process.user alone
    home: str | None = None

    def to_runtime(self) -> dict[str, Any]:
        user: dict[str, Any] = {"uid": self.uid, "gid": self.gid}
        if self.additional_gids:
            user["additionalGids"] = list(self.additional_gids)
        return user


def _numeric(text: str) -> int | None:
    if not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    if value > _MAX_ID:
        raise BundleError(f"user or group id {text} is out of range (0 to {_MAX_ID})")
    return value


def resolve_user(rootfs: str, user_spec: str) -> ResolvedUser:
    """Resolve an image's ``Config.User`` against the rootfs's user databases.

    Numeric ids are used verbatim and need no database. A numeric uid without
    a group takes its primary gid from /etc/passwd when it is listed there
    (else 0). Supplementary groups (``additionalGids``) are looked up only for a
    user given by name and without a group, as conversion.md says.
    """
    user_part, sep, group_part = user_spec.partition(":")
    if not user_part or (sep and not group_part):
        raise BundleError(f"image config: User {user_spec!r} is not user[:group]")
    uid = _numeric(user_part)
    by_name = uid is None
    entry: list[str] | None
    if uid is None:
        passwd = _read_db(rootfs, "/etc/passwd", user_spec)
        if passwd is None:
            raise BundleError(
                f"cannot resolve user {user_part!r}: the rootfs {rootfs} has no /etc/passwd",
                hint="use a numeric uid[:gid] in Config.User, or add the user to the image",
            )
        entry = next((e for e in passwd if e[0] == user_part and _passwd_ok(e)), None)
        if entry is None:
            raise BundleError(
                f"cannot resolve user {user_part!r}: not found in {rootfs}/etc/passwd"
            )
        uid = int(entry[2])
    else:
        # A numeric uid needs no database, but may have a home and primary group there.
        try:
            passwd = _read_db(rootfs, "/etc/passwd", user_spec) or []
        except BundleError:
            passwd = []
        entry = next((e for e in passwd if _passwd_ok(e) and int(e[2]) == uid), None)
    home = entry[5] if entry is not None and len(entry) > 5 and entry[5] else None

    if group_part:
        gid = _numeric(group_part)
        if gid is None:
            gid = _lookup_group(rootfs, group_part, user_spec)
        return ResolvedUser(uid, gid, None, home)
    gid = int(entry[3]) if entry is not None else 0
    if not by_name or entry is None:
        return ResolvedUser(uid, gid, None, home)
    groups = _read_db(rootfs, "/etc/group", user_spec) or []
    extra: list[int] = []
    for g in groups:
        if _group_ok(g) and user_part in (m.strip() for m in g[3].split(",")):
            g_id = int(g[2])
            if g_id not in extra:
                extra.append(g_id)
    return ResolvedUser(uid, gid, tuple(extra), home)


def _lookup_group(rootfs: str, name: str, user_spec: str) -> int:
    groups = _read_db(rootfs, "/etc/group", user_spec)
    if groups is None:
        raise BundleError(
            f"cannot resolve group {name!r} of user {user_spec!r}: "
            f"the rootfs {rootfs} has no /etc/group"
        )
    for g in groups:
        if g[0] == name and _group_ok(g):
            return int(g[2])
    raise BundleError(
        f"cannot resolve group {name!r} of user {user_spec!r}: not found in {rootfs}/etc/group"
    )


def _passwd_ok(e: list[str]) -> bool:
    return len(e) >= 4 and _is_id(e[2]) and _is_id(e[3])


def _group_ok(g: list[str]) -> bool:
    return len(g) >= 4 and _is_id(g[2])


def _is_id(text: str) -> bool:
    return text.isascii() and text.isdigit() and int(text) <= _MAX_ID


def _read_db(rootfs: str, path: str, user_spec: str) -> list[list[str]] | None:
    """The colon-separated records of a file in the rootfs; None when it is missing."""
    data = read_file_in_root(rootfs, path, user_spec)
    if data is None:
        return None
    records = []
    for line in data.decode("utf-8", "replace").splitlines():
        line = line.strip()
        # "+"/"-" lines are NIS compat entries: nothing to resolve from them here.
        if not line or line.startswith(("#", "+", "-")):
            continue
        records.append(line.split(":"))
    return records


def read_file_in_root(root: str, path: str, what: str = "") -> bytes | None:
    """Read ``path`` as if ``root`` were ``/``: symlinks resolve inside ``root``.

    The walk goes one component at a time through directory descriptors with
    O_NOFOLLOW, so an absolute symlink restarts at ``root`` and ``..`` stops
    there; nothing outside ``root`` is ever opened. Returns None when the file
    does not exist; raises ``BundleError`` when it is not a regular file.
    """
    about = f" (resolving user {what!r})" if what else ""
    try:
        root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise BundleError(f"cannot open rootfs {root}{about}: {e.strerror}") from None
    stack = [root_fd]
    try:
        parts = deque(p for p in path.split("/") if p not in ("", "."))
        links = 0
        while parts:
            name = parts.popleft()
            if name == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            try:
                st = os.stat(name, dir_fd=stack[-1], follow_symlinks=False)
            except FileNotFoundError:
                return None
            except NotADirectoryError:
                return None
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > _MAX_SYMLINKS:
                    raise BundleError(f"{root}{path}: too many levels of symbolic links{about}")
                target = os.readlink(name, dir_fd=stack[-1])
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                parts.extendleft(reversed([p for p in target.split("/") if p not in ("", ".")]))
                continue
            if parts:
                if not stat.S_ISDIR(st.st_mode):
                    return None
                flags = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
                stack.append(os.open(name, flags, dir_fd=stack[-1]))
                continue
            if not stat.S_ISREG(st.st_mode):
                raise BundleError(f"{root}{path}: not a regular file{about}")
            return _read_regular(name, stack[-1], f"{root}{path}", about)
        raise BundleError(f"{root}{path}: not a regular file{about}")
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise BundleError(f"cannot read {root}{path}{about}: {e.strerror}") from None
    finally:
        for fd in stack:
            os.close(fd)


def _read_regular(name: str, dir_fd: int, shown: str, about: str) -> bytes:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    fd = os.open(name, flags, dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped since the walk looked
            raise BundleError(f"{shown}: not a regular file{about}")
        chunks = []
        total = 0
        while chunk := os.read(fd, 1 << 16):
            total += len(chunk)
            if total > _MAX_DB_SIZE:
                raise BundleError(f"{shown}: larger than {_MAX_DB_SIZE} bytes{about}")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


# --- mounts and annotations --------------------------------------------------


def _apply_volumes(spec: dict[str, Any], cfg: dict[str, Any]) -> None:
    vols = _get_map(cfg, "Volumes")
    if not vols:
        return
    mounts = spec.setdefault("mounts", [])
    taken = {os.path.normpath(m.get("destination", "")) for m in mounts}
    for dest in sorted(vols):
        if not dest.startswith("/"):
            raise InvalidObject(_WHAT, f"config.Volumes[{dest!r}]", "must be an absolute path")
        if os.path.normpath(dest) in taken:
            continue  # the base already mounts something there; it wins
        mounts.append(
            {
                "destination": dest,
                "type": "tmpfs",
                "source": "none",
                "options": list(VOLUME_MOUNT_OPTIONS),
            }
        )


def _annotations(data: dict[str, Any], cfg: dict[str, Any], base: dict[str, str]) -> dict[str, str]:
    out = dict(base)
    for field, key in _IMPLICIT_ANNOTATIONS:
        value = data.get(field)
        if isinstance(value, list):  # os.features
            value = ",".join(str(v) for v in value)
        if value is not None and not isinstance(value, str):
            raise InvalidObject(_WHAT, field, "must be a string")
        if value:
            out[key] = value
    stop = _str_field(cfg, "StopSignal")
    if stop:
        out[ANNOTATION_STOP_SIGNAL] = stop
    ports = _get_map(cfg, "ExposedPorts")
    if ports:
        out[ANNOTATION_EXPOSED_PORTS] = ",".join(sorted(ports))
    labels = _get_map(cfg, "Labels") or {}
    for k, v in labels.items():
        if not isinstance(v, str):
            raise InvalidObject(_WHAT, f"config.Labels[{k!r}]", "must be a string")
        out[k] = v  # Labels take precedence over every implicit annotation
    return out


# --- typed access to the loosely typed image config --------------------------


def _str_field(cfg: dict[str, Any], key: str) -> str | None:
    value = cfg.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidObject(_WHAT, f"config.{key}", "must be a string")
    return value


def _str_list(cfg: dict[str, Any], key: str) -> list[str] | None:
    value = cfg.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidObject(_WHAT, f"config.{key}", "must be an array of strings")
    return list(value)


def _get_map(cfg: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = cfg.get(key)
    if value is not None and not isinstance(value, dict):
        raise InvalidObject(_WHAT, f"config.{key}", "must be an object")
    return value


def _root_name(rootfs: str) -> str:
    name = os.path.basename(os.path.normpath(rootfs))
    return name if name not in ("", ".", "..", "/") else "rootfs"

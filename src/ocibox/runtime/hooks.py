"""POSIX-platform hooks: each one run with the container's state on its stdin.

Where and when (config.md, "POSIX-platform Hooks"):

    prestart, createRuntime  create, before pivot_root   runtime namespace   (by the runtime)
    createContainer          create, before pivot_root   container namespace (by the init)
    startContainer           start, before the exec      container namespace (by the init)
    poststart                start, after the exec       runtime namespace   (by the runtime)
    poststop                 delete, after the deletion  runtime namespace   (by the runtime)

A failing hook of the first four kinds fails the operation; poststart and
poststop failures are warnings.
"""

from __future__ import annotations

from ..errors import BundleError
from . import jsonlite as json
from .container import debug

KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")


def check(hooks: dict | None) -> None:
    for kind, entries in (hooks or {}).items():
        if kind not in KINDS:
            raise BundleError(f"config.json: hooks.{kind}: unknown kind of hook")
        for i, h in enumerate(entries or []):
            path = h.get("path") if isinstance(h, dict) else None
            if not isinstance(path, str) or not path.startswith("/"):
                raise BundleError(f"config.json: hooks.{kind}[{i}].path must be absolute")
            timeout = h.get("timeout")
            if timeout is not None and (not isinstance(timeout, int) or timeout <= 0):
                raise BundleError(f"config.json: hooks.{kind}[{i}].timeout must be above zero")


def run(hooks: dict | None, kind: str, state: dict) -> None:
    """Run every ``kind`` hook in order; the first failure raises BundleError."""
    entries = (hooks or {}).get(kind) or []
    if not entries:
        return
    import subprocess

    data = json.dumps(state, separators=(",", ":")).encode()
    for i, h in enumerate(entries):
        args = h.get("args") or [h["path"]]
        env = dict(e.split("=", 1) for e in h.get("env") or [] if "=" in e)
        what = f"{kind} hook {i} ({h['path']})"
        debug(f"running {what} for container {state.get('id')} ({state.get('status')})")
        try:
            p = subprocess.run(args, executable=h["path"], input=data, env=env,
                               capture_output=True, timeout=h.get("timeout"))  # fmt: skip
        except subprocess.TimeoutExpired:
            raise BundleError(f"{what}: timed out after {h.get('timeout')}s") from None
        except OSError as e:
            raise BundleError(f"{what}: {e.strerror}") from None
        debug(f"{what} exited with status {p.returncode}")
        if p.returncode != 0:
            detail = p.stderr.decode(errors="replace").strip().splitlines()
            why = f": {detail[-1]}" if detail else ""
            raise BundleError(f"{what} failed with exit status {p.returncode}{why}")


def run_warn(hooks: dict | None, kind: str, state: dict, warn=None) -> None:
    """Run every ``kind`` hook; failures are reported through ``warn`` and do not stop the rest."""
    for i, h in enumerate((hooks or {}).get(kind) or []):
        try:
            run({kind: [h]}, kind, state)
        except BundleError as e:
            if warn:
                warn(e.message.replace(f"{kind} hook 0", f"{kind} hook {i}"))

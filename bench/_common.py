"""Helpers shared by the scripts in bench/: timed runs, machine facts, tables.

Every figure a bench script reports comes from :func:`run_measured`: the command runs
in a fresh child process, its wall time is taken here with ``perf_counter`` and its
peak resident set size (RSS) with ``/usr/bin/time -f %M`` (or, where GNU time is
missing, from ``getrusage(RUSAGE_CHILDREN)`` in a throw-away Python child).
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
WORK = BENCH / "work"
VENV_BIN = REPO / ".venv" / "bin"
GNU_TIME = "/usr/bin/time"

# A child that runs argv and prints its own peak RSS (KiB) on stderr's last line:
# used only when GNU time is not installed.
_RUSAGE_CHILD = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[1:])\n"
    "print('MAXRSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


def tool(name: str) -> str:
    """The path of a program: the venv's own first (ocibox), then PATH."""
    venv = VENV_BIN / name
    if venv.exists():
        return str(venv)
    found = shutil.which(name)
    if not found:
        sys.exit(f"bench: {name} is not installed (try: make peers)")
    return found


class CommandFailed(RuntimeError):
    pass


def run(argv: list[str], *, cwd: str | Path | None = None, quiet: bool = True,
        env: dict[str, str] | None = None) -> str:
    """Run a set-up command (not measured); raise with its stderr if it fails."""
    p = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise CommandFailed(f"{' '.join(map(str, argv))}: exit {p.returncode}\n{p.stderr.strip()}")
    if not quiet and p.stdout:
        print(p.stdout, end="")
    return p.stdout


@dataclass
class Sample:
    seconds: float
    rss_kib: int


def run_measured(argv: list[str], *, cwd: str | Path | None = None,
                 env: dict[str, str] | None = None) -> Sample:
    """Run argv once, in a fresh process; return its wall time and peak RSS."""
    if os.path.exists(GNU_TIME):
        rss_file = WORK / f".rss.{os.getpid()}"
        cmd = [GNU_TIME, "-f", "%M", "-o", str(rss_file), *argv]
    else:
        rss_file = None
        cmd = [sys.executable, "-c", _RUSAGE_CHILD, *argv]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    elapsed = time.perf_counter() - t0
    if p.returncode != 0:
        raise CommandFailed(f"{' '.join(map(str, argv))}: exit {p.returncode}\n{p.stderr.strip()}")
    if rss_file is not None:
        text = rss_file.read_text().split()
        rss_file.unlink()
        rss = int(text[-1])
    else:
        last = [ln for ln in p.stderr.splitlines() if ln.startswith("MAXRSS ")][-1]
        rss = int(last.split()[1])
    return Sample(elapsed, rss)


@dataclass
class Series:
    """The samples of one operation by one tool."""
    samples: list[Sample] = field(default_factory=list)

    def add(self, s: Sample) -> None:
        self.samples.append(s)

    @property
    def median_s(self) -> float:
        return statistics.median(s.seconds for s in self.samples)

    @property
    def min_s(self) -> float:
        return min(s.seconds for s in self.samples)

    @property
    def max_s(self) -> float:
        return max(s.seconds for s in self.samples)

    @property
    def peak_rss_mib(self) -> float:
        return max(s.rss_kib for s in self.samples) / 1024


def ocibox_at(rev: str | None) -> tuple[list[str], dict[str, str] | None, str]:
    """How to run ocibox: the working tree (the venv's editable install), or the sources
    of commit ``rev`` exported under bench/work, so edits in progress do not leak into a
    measurement. Returns (argv prefix, environment, description)."""
    if rev is None:
        return [tool("ocibox")], None, f"working tree (HEAD {git_head()}{dirty()})"
    commit = run(["git", "-C", str(REPO), "rev-parse", "--short", rev]).strip()
    dest = WORK / f"ocibox-{commit}"
    if not (dest / "src" / "ocibox").is_dir():
        rmtree(dest)
        dest.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "src"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        # byte-compile now, so that no measured run pays for it
        run([str(VENV_BIN / "python"), "-m", "compileall", "-q", str(dest / "src")])
    env = dict(os.environ, PYTHONPATH=str(dest / "src"))
    return [str(VENV_BIN / "python"), "-m", "ocibox.cli"], env, f"commit {commit} (exported to {dest.relative_to(REPO)})"


def dirty() -> str:
    try:
        out = run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", "src"])
    except (CommandFailed, OSError):
        return ""
    return ", src/ has uncommitted changes" if out.strip() else ""


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def wait_for_low_load(limit: float, max_wait: float) -> None:
    """Wait (up to max_wait seconds) until the 1-minute load average is below limit."""
    deadline = time.monotonic() + max_wait
    while os.getloadavg()[0] >= limit and time.monotonic() < deadline:
        print(f"  load {load()} >= {limit}: waiting", file=sys.stderr)
        time.sleep(15)


def tool_version(argv: list[str], env: dict[str, str] | None = None) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"
    out = (p.stdout or p.stderr).strip().splitlines()
    return out[0] if out else "unknown"


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def filesystem(path: str | Path) -> str:
    """The type and mount options of the filesystem holding path (from /proc/mounts)."""
    path = os.path.realpath(path)
    best = ("", "unknown", "")
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            _dev, mnt, fstype, opts, *_ = line.split()
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[0]):
                best = (mnt, fstype, opts)
    except OSError:
        pass
    return f"{best[1]} ({best[2]})" if best[0] else "unknown"


def git_head() -> str:
    try:
        return run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]).strip()
    except (CommandFailed, OSError):
        return "unknown"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table whose columns line up in plain text too."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "| " + " | ".join("-" * w for w in widths) + " |"
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def rmtree(path: str | Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def du_bytes(path: str | Path) -> int:
    """Apparent size of a tree's regular files (hardlinks counted once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(root, name))
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            total += st.st_size
    return total


def write_section(path: str | Path, name: str, text: str) -> None:
    """Put ``text`` in the ``name`` section of a shared results file, keeping the others.

    Each benchmark owns the part of bench/RESULTS.md between its two marker
    comments; the file is re-read right before writing, so scripts run one
    after another never erase each other's figures.
    """
    path = Path(path)
    begin, end = f"<!-- bench:{name} begin -->", f"<!-- bench:{name} end -->"
    block = f"{begin}\n{text.rstrip()}\n{end}\n"
    old = path.read_text() if path.exists() else "# Benchmark results\n\n"
    if begin in old and end in old:
        head, _, rest = old.partition(begin)
        _, _, tail = rest.partition(end)
        new = head + block + tail.lstrip("\n")
    else:
        new = old.rstrip("\n") + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)

"""Registry: ocibox's server against Debian's docker-registry (distribution 2.8), side by side.

    .venv/bin/python bench/registry.py                  # ~300 MB image, 3 rounds
    .venv/bin/python bench/registry.py --quick          # ~30 MB image, 1 round, short wrk bursts
    .venv/bin/python bench/registry.py --ocibox-rev HEAD --rounds 3 --profile --results bench/RESULTS.md

Every round starts both servers afresh (plain HTTP on loopback, storage in new
temporary directories, access logs off in both) and runs each operation on the two
in turn, the first server swapping every round:

1. push: ``skopeo copy oci:LAYOUT:bench docker://HOST/bench/image:bench`` (3 gzip layers,
   pushed as they are; the registry is empty, so every blob is uploaded);
2. pull: ``skopeo copy docker://... oci:DIR`` into a new directory on /dev/shm (so the
   client's writes do not weigh on the disk the registry serves from);
3. 8 concurrent pulls: 8 skopeo processes at once, each into its own oci: directory;
4. manifest GETs under load: ``wrk`` against ``/v2/bench/image/manifests/bench`` with
   ``Accept: application/vnd.oci.image.manifest.v1+json``; requests per second and the
   99th-percentile latency; any non-2xx answer is an error;
5. peak RSS: ``VmHWM`` from /proc/PID/status of each server process at the end of the round.

Around each pull the CPU time of the pulling skopeo processes (``getrusage`` of the
waited children) and of the server (/proc/PID/stat) is taken too. On a shared machine
these are steadier than wall time, and a pull is mostly the client's work: serving with
sendfile once cost skopeo ~10 % more CPU (it copies cold page-cache pages), which these
rows show and the wall time only hinted at.

Every pull is checked: the manifest digest that comes back is the one pushed. The
report gives the median of each figure over the rounds (peak RSS: the highest), and
the ratio ocibox/peer with the direction that is better. The machine is shared (2
cores): the load average is recorded before and after; wrk runs with few threads.
With ``--results FILE`` the report replaces (or appends) the ``## registry`` section
of FILE, leaving the rest of it as it was; otherwise it goes to
bench/work/RESULTS-registry[-quick].md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402
import _registry_image as image  # noqa: E402

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
REPO = "bench/image"
WHO = ("ocibox", "distribution")
MiB = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- servers

@dataclass
class Server:
    who: str
    argv: list[str]
    env: dict[str, str] | None
    root: Path
    port: int
    proc: subprocess.Popen | None = None
    log: Path | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Server:
        self.log = self.root.parent / f"{self.who}.log"
        out = open(self.log, "wb")
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.who} exited ({self.proc.returncode}): {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.who} did not answer on {self.host}: {self.log.read_text()[-2000:]}")

    def cpu_s(self) -> float:
        """User and system CPU time the server process has used so far."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def status_kib(self, field_name: str) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def head_digest(self, tag: str) -> str:
        req = urllib.request.Request(f"http://{self.host}/v2/{REPO}/manifests/{tag}", method="HEAD",
                                     headers={"Accept": OCI_MANIFEST})
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.headers["Docker-Content-Digest"]


def ocibox_server(prefix: list[str], env: dict[str, str] | None, run: Path, *,
                  profile: Path | None = None) -> Server:
    root = run / "ocibox-storage"
    root.mkdir()
    port = free_port()
    config = run / "ocibox.toml"
    # access log off, as for distribution below; every other setting is ocibox's default
    config.write_text('access_log = ""\n')
    argv = [*prefix, "registry", "serve", "--addr", f"127.0.0.1:{port}", "--root", str(root),
            "--config", str(config)]
    if profile is not None:
        # prefix is [python, -m, ocibox.cli] or [.venv/bin/ocibox]: run the same code under cProfile
        argv = [str(c.VENV_BIN / "python"), "-m", "cProfile", "-o", str(profile), "-m", "ocibox.cli", *argv[
            3 if prefix[1:2] == ["-m"] else 1:]]
    return Server("ocibox", argv, env, root, port)


def distribution_server(program: str, run: Path) -> Server:
    root = run / "distribution-storage"
    root.mkdir()
    port = free_port()
    config = run / "distribution.yml"
    # Debian's /etc/docker/registry/config.yml without auth and the periodic storage health
    # check, on a loopback port, with its access log off.
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
        "storage:\n  cache:\n    blobdescriptor: inmemory\n"
        f"  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  headers:\n    X-Content-Type-Options: [nosniff]\n")
    return Server("distribution", [program, "serve", str(config)], None, root, port)


# --------------------------------------------------------------------------- operations

def skopeo_argv(skopeo: str, src: str, dst: str) -> list[str]:
    return [skopeo, "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false",
            "--dest-tls-verify=false", src, dst]


def children_cpu_s() -> float:
    """User and system CPU time of every child process waited for so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if p.returncode != 0:
        raise c.CommandFailed(f"{' '.join(argv)}: exit {p.returncode}\n{p.stderr.strip()}")
    return elapsed


def timed_parallel(argvs: list[list[str]]) -> float:
    t0 = time.perf_counter()
    procs = [subprocess.Popen(a, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for a in argvs]
    errors = []
    for a, p in zip(argvs, procs, strict=True):
        _, err = p.communicate()
        if p.returncode != 0:
            errors.append(f"{' '.join(a)}: exit {p.returncode}\n{err.strip()}")
    elapsed = time.perf_counter() - t0
    if errors:
        raise c.CommandFailed("\n".join(errors))
    return elapsed


def pulled_digest(layout: Path) -> str:
    index = json.loads((layout / "index.json").read_text())
    return index["manifests"][0]["digest"]


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if m is None:
        raise ValueError(f"wrk: cannot read the latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: str


def wrk(program: str, host: str, tag: str, threads: int, connections: int, seconds: float) -> WrkResult:
    url = f"http://{host}/v2/{REPO}/manifests/{tag}"
    argv = [program, f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency",
            "-H", f"Accept: {OCI_MANIFEST}", url]
    out = c.run(argv)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = []
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors.append(f"{m.group(1)} non-2xx answers")
    if m := re.search(r"Socket errors: (.*)", out):
        errors.append(f"socket errors: {m.group(1)}")
    return WrkResult(rps, p50, p99, requests, "; ".join(errors))


# --------------------------------------------------------------------------- the rounds

@dataclass
class Figures:
    push_s: list[float] = field(default_factory=list)
    pull_s: list[float] = field(default_factory=list)
    pull8_s: list[float] = field(default_factory=list)
    pull_client_cpu: list[float] = field(default_factory=list)
    pull_server_cpu: list[float] = field(default_factory=list)
    pull8_client_cpu: list[float] = field(default_factory=list)
    pull8_server_cpu: list[float] = field(default_factory=list)
    rps: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    hwm_kib: list[int] = field(default_factory=list)
    idle_kib: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Bench:
    def __init__(self, args: argparse.Namespace, layout: Path) -> None:
        self.args = args
        self.layout = layout
        self.want, _ = image.manifest(layout)
        self.skopeo = c.tool("skopeo")
        self.wrk = c.tool("wrk")
        self.distribution = shutil.which("docker-registry") or c.tool("registry")
        self.ocibox, self.env, self.ocibox_from = c.ocibox_at(args.ocibox_rev)
        self.figures = {w: Figures() for w in WHO}
        self.loads: list[str] = []
        self.shm = Path("/dev/shm") if os.path.isdir("/dev/shm") else c.WORK

    def round(self, rnd: int) -> None:
        order = WHO if rnd % 2 == 0 else WHO[::-1]
        run = Path(tempfile.mkdtemp(prefix="registry-run-", dir=c.WORK))
        pulls = Path(tempfile.mkdtemp(prefix="ocibox-bench-pulls-", dir=self.shm))
        servers = {"ocibox": ocibox_server(self.ocibox, self.env, run),
                   "distribution": distribution_server(self.distribution, run)}
        a = self.args
        try:
            for who in order:
                servers[who].start()
                self.figures[who].idle_kib.append(servers[who].status_kib("VmRSS"))
            self.loads.append(f"round {rnd + 1}: {c.load()} before")
            src = f"oci:{self.layout}:{image.TAG}"
            for who in order:
                s = servers[who]
                c.run(["sync"])
                self.figures[who].push_s.append(timed(skopeo_argv(self.skopeo, src, f"docker://{s.host}/{REPO}:{image.TAG}")))
                got = s.head_digest(image.TAG)
                if got != self.want:
                    raise RuntimeError(f"{who}: pushed {self.want}, registry says {got}")
            for who in order:
                s = servers[who]
                dest = pulls / f"{who}-single"
                c.run(["sync"])
                f, client0, server0 = self.figures[who], children_cpu_s(), s.cpu_s()
                f.pull_s.append(timed(skopeo_argv(self.skopeo, f"docker://{s.host}/{REPO}:{image.TAG}",
                                                  f"oci:{dest}:{image.TAG}")))
                f.pull_client_cpu.append(children_cpu_s() - client0)
                f.pull_server_cpu.append(s.cpu_s() - server0)
                self._check(who, dest)
                c.rmtree(dest)
            for who in order:
                s = servers[who]
                dests = [pulls / f"{who}-{i}" for i in range(a.pullers)]
                c.run(["sync"])
                f, client0, server0 = self.figures[who], children_cpu_s(), s.cpu_s()
                f.pull8_s.append(timed_parallel(
                    [skopeo_argv(self.skopeo, f"docker://{s.host}/{REPO}:{image.TAG}", f"oci:{d}:{image.TAG}")
                     for d in dests]))
                f.pull8_client_cpu.append(children_cpu_s() - client0)
                f.pull8_server_cpu.append(s.cpu_s() - server0)
                for d in dests:
                    self._check(who, d)
                    c.rmtree(d)
            for who in order:
                s = servers[who]
                wrk(self.wrk, s.host, image.TAG, a.wrk_threads, a.wrk_connections, 1)  # warm-up
                r = wrk(self.wrk, s.host, image.TAG, a.wrk_threads, a.wrk_connections, a.wrk_seconds)
                f = self.figures[who]
                f.rps.append(r.rps)
                f.p50_ms.append(r.p50_ms)
                f.p99_ms.append(r.p99_ms)
                if r.errors:
                    f.notes.append(f"round {rnd + 1}: wrk: {r.errors} of {r.requests}")
            for who in order:
                self.figures[who].hwm_kib.append(servers[who].status_kib("VmHWM"))
            self.loads[-1] += f", {c.load()} after"
        finally:
            for s in servers.values():
                s.stop()
            c.rmtree(run)
            c.rmtree(pulls)

    def _check(self, who: str, dest: Path) -> None:
        got = pulled_digest(dest)
        if got != self.want:
            raise RuntimeError(f"{who}: pulled {got}, pushed {self.want}")

    def profile(self, out_dir: Path) -> list[Path]:
        """ocibox's server under cProfile: one push, one pull and a wrk burst of manifest GETs."""
        import pstats

        out_dir.mkdir(parents=True, exist_ok=True)
        suffix = "quick" if self.args.quick else "full"
        prof = out_dir / f"registry-{suffix}.prof"
        run = Path(tempfile.mkdtemp(prefix="registry-profile-", dir=c.WORK))
        server = ocibox_server(self.ocibox, self.env, run, profile=prof)
        written = []
        try:
            server.start()
            ref = f"docker://{server.host}/{REPO}:{image.TAG}"
            timed(skopeo_argv(self.skopeo, f"oci:{self.layout}:{image.TAG}", ref))
            t_push = time.perf_counter()
            timed(skopeo_argv(self.skopeo, ref, f"oci:{run / 'pulled'}:{image.TAG}"))
            t_pull = time.perf_counter() - t_push
            r = wrk(self.wrk, server.host, image.TAG, self.args.wrk_threads, self.args.wrk_connections,
                    self.args.wrk_seconds)
            print(f"profile: pull {t_pull:.2f} s, wrk {r.rps:.0f} req/s p99 {r.p99_ms:.1f} ms under cProfile",
                  file=sys.stderr)
        finally:
            server.stop()
            c.rmtree(run)
        if prof.exists():
            for sort in ("cumulative", "tottime"):
                txt = out_dir / f"registry-{suffix}-{sort}.txt"
                with open(txt, "w") as f:
                    pstats.Stats(str(prof), stream=f).sort_stats(sort).print_stats(45)
                written.append(txt)
        return written


# --------------------------------------------------------------------------- report

def med(xs: list[float]) -> float:
    return statistics.median(xs)


def rows(figs: dict[str, Figures], size: int, pullers: int) -> list[list[str]]:
    o, d = figs["ocibox"], figs["distribution"]
    mb = size / 1e6

    def paired(ox: list[float], dx: list[float], invert: bool = False) -> str:
        # the ratio within each round (both servers measured minutes apart, under the same load)
        ratios = [(b / a if invert else a / b) for a, b in zip(ox, dx, strict=True) if a and b]
        return f"{med(ratios):.2f}" if ratios else "-"

    def row(what: str, better: str, ov: float, dv: float, fmt: str, pair: str) -> list[str]:
        return [what, fmt.format(dv), fmt.format(ov), f"{ov / dv:.2f}" if dv else "-", pair, better]

    return [
        row(f"push {mb:.0f} MB, s", "lower", med(o.push_s), med(d.push_s), "{:.2f}", paired(o.push_s, d.push_s)),
        row("push throughput, MB/s", "higher", mb / med(o.push_s), mb / med(d.push_s), "{:.0f}",
            paired(o.push_s, d.push_s, invert=True)),
        row(f"pull {mb:.0f} MB, s", "lower", med(o.pull_s), med(d.pull_s), "{:.2f}", paired(o.pull_s, d.pull_s)),
        row("pull throughput, MB/s", "higher", mb / med(o.pull_s), mb / med(d.pull_s), "{:.0f}",
            paired(o.pull_s, d.pull_s, invert=True)),
        row("pull: skopeo CPU, s", "lower", med(o.pull_client_cpu), med(d.pull_client_cpu), "{:.2f}",
            paired(o.pull_client_cpu, d.pull_client_cpu)),
        row("pull: server CPU, s", "lower", med(o.pull_server_cpu), med(d.pull_server_cpu), "{:.2f}",
            paired(o.pull_server_cpu, d.pull_server_cpu)),
        row(f"{pullers} concurrent pulls, s (all done)", "lower", med(o.pull8_s), med(d.pull8_s), "{:.2f}",
            paired(o.pull8_s, d.pull8_s)),
        row(f"{pullers} concurrent pulls, MB/s in all", "higher", pullers * mb / med(o.pull8_s),
            pullers * mb / med(d.pull8_s), "{:.0f}", paired(o.pull8_s, d.pull8_s, invert=True)),
        row(f"{pullers} concurrent pulls: skopeo CPU, s", "lower", med(o.pull8_client_cpu),
            med(d.pull8_client_cpu), "{:.2f}", paired(o.pull8_client_cpu, d.pull8_client_cpu)),
        row(f"{pullers} concurrent pulls: server CPU, s", "lower", med(o.pull8_server_cpu),
            med(d.pull8_server_cpu), "{:.2f}", paired(o.pull8_server_cpu, d.pull8_server_cpu)),
        row("manifest GET, requests/s", "higher", med(o.rps), med(d.rps), "{:.0f}", paired(o.rps, d.rps)),
        row("manifest GET p50 latency, ms", "lower", med(o.p50_ms), med(d.p50_ms), "{:.2f}",
            paired(o.p50_ms, d.p50_ms)),
        row("manifest GET p99 latency, ms", "lower", med(o.p99_ms), med(d.p99_ms), "{:.2f}",
            paired(o.p99_ms, d.p99_ms)),
        row("server RSS after start, MiB", "lower", max(o.idle_kib) / 1024, max(d.idle_kib) / 1024, "{:.0f}",
            paired(o.idle_kib, d.idle_kib)),
        row("server peak RSS (VmHWM), MiB", "lower", max(o.hwm_kib) / 1024, max(d.hwm_kib) / 1024, "{:.0f}",
            paired(o.hwm_kib, d.hwm_kib)),
    ]


HEADERS = ["figure", "distribution", "ocibox", "ratio ocibox/distribution", "median of per-round ratios", "better"]


def samples(figs: dict[str, Figures]) -> list[list[str]]:
    out = []
    for who in WHO:
        f = figs[who]
        for name, xs, fmt in (("push s", f.push_s, "{:.2f}"), ("pull s", f.pull_s, "{:.2f}"),
                              ("pull skopeo CPU s", f.pull_client_cpu, "{:.2f}"),
                              ("pull server CPU s", f.pull_server_cpu, "{:.2f}"),
                              ("concurrent pulls s", f.pull8_s, "{:.2f}"),
                              ("concurrent pulls skopeo CPU s", f.pull8_client_cpu, "{:.2f}"),
                              ("concurrent pulls server CPU s", f.pull8_server_cpu, "{:.2f}"),
                              ("requests/s", f.rps, "{:.0f}"),
                              ("p99 ms", f.p99_ms, "{:.2f}"), ("VmHWM MiB", [k / 1024 for k in f.hwm_kib], "{:.0f}")):
            out.append([who, name, " ".join(fmt.format(x) for x in xs)])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, help="rounds, each with fresh servers (default 3; --quick: 1)")
    ap.add_argument("--quick", action="store_true", help="a ~30 MB image and 3-second wrk bursts")
    ap.add_argument("--pullers", type=int, default=8, help="concurrent pulls (default 8)")
    ap.add_argument("--wrk-threads", type=int, default=2, help="wrk threads (default 2: the machine has 2 cores)")
    ap.add_argument("--wrk-connections", type=int, default=32, help="wrk connections (default 32)")
    ap.add_argument("--wrk-seconds", type=float, help="each wrk burst (default 10; --quick: 3)")
    ap.add_argument("--ocibox-rev", metavar="REV",
                    help="serve ocibox as committed at REV (exported under bench/work), not the working tree")
    ap.add_argument("--profile", action="store_true",
                    help="also run ocibox's server once under cProfile (push, pull, wrk burst); "
                    "the top functions go to bench/work/profiles/registry-*.txt")
    ap.add_argument("--max-load", type=float, default=0.0,
                    help="first wait (up to 10 min) for the 1-minute load average to fall below this")
    ap.add_argument("--results", type=Path,
                    help="write the report as the '## registry' section of this file (e.g. bench/RESULTS.md); "
                    "default: the whole report to bench/work/RESULTS-registry[-quick].md")
    args = ap.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.wrk_seconds = args.wrk_seconds or (3.0 if args.quick else 10.0)
    if args.rounds < 1:
        sys.exit("bench/registry.py: --rounds must be at least 1")
    c.WORK.mkdir(parents=True, exist_ok=True)
    scale = "quick" if args.quick else "full"
    layout = image.ensure(scale, c.WORK)
    size = image.total_bytes(layout)
    bench = Bench(args, layout)

    if args.max_load:
        c.wait_for_low_load(args.max_load, 600)
    uptime_before = c.run(["uptime"]).strip()
    started = datetime.datetime.now(datetime.UTC)
    print(f"measuring: {args.rounds} rounds, {image.describe(layout)}, ocibox {bench.ocibox_from}; "
          f"{uptime_before}", flush=True)
    for rnd in range(args.rounds):
        t0 = time.perf_counter()
        bench.round(rnd)
        print(f"  round {rnd + 1} done in {time.perf_counter() - t0:.0f} s; load {c.load()}", flush=True)
    uptime_after = c.run(["uptime"]).strip()
    profiles = bench.profile(c.WORK / "profiles") if args.profile else []

    figs = bench.figures
    tbl = c.table(HEADERS, rows(figs, size, args.pullers))
    print()
    print(tbl)
    notes = [f"{who}: {n}" for who in WHO for n in figs[who].notes]
    for n in notes:
        print("NOTE:", n)

    m = c.machine()
    versions = [
        f"ocibox: {c.tool_version([*bench.ocibox, '--version'], bench.env)}, {bench.ocibox_from}; "
        f"Python {m['python']}, aiohttp {c.tool_version([str(c.VENV_BIN / 'python'), '-c', 'import aiohttp; print(aiohttp.__version__)'])}",
        f"distribution: {c.tool_version([bench.distribution, '--version'])} (Debian's docker-registry)",
        f"skopeo: {c.tool_version([bench.skopeo, '--version'])}; wrk: {c.tool_version([bench.wrk, '-v'])}",
    ]
    section = [
        "## registry",
        "",
        "Written by `bench/registry.py " + " ".join(sys.argv[1:]) + "` (see bench/README.md). "
        "Ratio = ocibox / distribution; the last column says whether higher or lower is better. "
        "Medians over the rounds; peak RSS is the highest VmHWM of a round. The per-round ratio column "
        "pairs the two servers within each round (measured moments apart, under the same load) and is the "
        "steadier figure on a busy machine.",
        "",
        f"- date: {started:%Y-%m-%d %H:%M} UTC, {args.rounds} rounds, fresh servers and storage each round, "
        "the first server swapping every round",
        f"- machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']}, kernel {m['kernel']}; "
        f"registry storage on {c.filesystem(c.WORK)}, pulls into {bench.shm} "
        f"({c.filesystem(bench.shm).split(' ')[0]})",
        f"- load: `{uptime_before}` before, `{uptime_after}` after; per round: {'; '.join(bench.loads)}",
        *(f"- {v}" for v in versions),
        f"- image: {image.describe(layout)}, made with the ocibox library (bench/_registry_image.py)",
        f"- both servers: plain HTTP on 127.0.0.1, access logs off, otherwise their defaults "
        f"(both fsync what they store; distribution with the inmemory blob descriptor cache Debian ships); "
        f"wrk -t{args.wrk_threads} -c{args.wrk_connections} -d{args.wrk_seconds:g}s --latency on "
        f"GET /v2/{REPO}/manifests/{image.TAG} (after a 1 s warm-up)",
        "",
        tbl,
        "",
        *(f"- NOTE: {n}" for n in notes),
        "### registry: every sample",
        "",
        c.table(["server", "figure", "per round"], samples(figs)),
        "",
    ]
    if profiles:
        section += ["Profile of ocibox's server (cProfile): "
                    + ", ".join(str(p.relative_to(c.REPO)) for p in profiles), ""]
    if args.results:
        c.write_section(args.results, "registry", "\n".join(section))
        print(f"\nwrote the '## registry' section of {args.results}")
    else:
        out = c.WORK / ("RESULTS-registry-quick.md" if args.quick else "RESULTS-registry.md")
        out.write_text("\n".join(section) + "\n")
        print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

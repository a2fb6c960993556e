"""Unpack and repack: ocibox against umoci, side by side in one run.

    .venv/bin/python bench/unpack.py            # ~300 MB image, 3 rounds, writes bench/RESULTS.md
    .venv/bin/python bench/unpack.py --quick    # ~30 MB image, a check that everything runs
    .venv/bin/python bench/unpack.py --profile  # also cProfile ocibox's unpack and repack

The input images are made once with umoci (so neither tool reads its own output) and
cached under bench/work/images. Each measured command runs in a fresh process with a
fresh bundle directory; the two tools alternate within every round, and the report
gives the median wall time and the peak RSS of each. Run as root (both tools then
chown and keep ownership, as a real unpack does).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

# Bump when the generated content changes: cached images made by another version are rebuilt.
GENERATOR = "unpack-images-v2"
MTIME = 1_700_000_000  # every generated file and directory gets this mtime
MiB = 1 << 20
SMALL_ROOT = "usr/share/bench-data"


# --------------------------------------------------------------------------- sizes

@dataclass(frozen=True)
class Scale:
    name: str
    sys_files: int         # regular files of the layer-1 system tree
    small_files: int       # layer 2: files of 0.1-8 KiB text
    big_mib: int           # layer 3: incompressible data
    mem_mib: tuple[int, int]  # the large layer of the two memory-check images
    changed: int           # repack: small files rewritten
    deleted: int           # repack: small files removed
    added_mib: int         # repack: new incompressible data


FULL = Scale("full", 3000, 20_000, 200, (100, 300), 1000, 500, 50)
QUICK = Scale("quick", 300, 2_000, 20, (10, 30), 100, 50, 5)


# --------------------------------------------------------------------------- content

class Content:
    """Deterministic file content: a word corpus (compressible) and random bytes."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        letters = "etaoinshrdlcumwfgypbvkjxqz"
        weights = [12, 9, 8, 7, 7, 6, 6, 6, 4, 4, 3, 3, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1]
        vocab = ["".join(rng.choices(letters, weights, k=rng.randint(2, 10))) for _ in range(3000)]
        words = rng.choices(vocab, k=400_000)
        lines, line = [], []
        for w in words:
            line.append(w)
            if len(line) >= rng.randint(6, 14):
                lines.append(" ".join(line))
                line = []
        self.text = ("\n".join(lines) + "\n").encode()
        self.noise = rng.randbytes(2 * MiB)

    def text_bytes(self, rng: random.Random, n: int) -> bytes:
        off = rng.randrange(0, len(self.text) - n - 1)
        return self.text[off:off + n]

    def binary_bytes(self, rng: random.Random, n: int) -> bytes:
        """Something like an ELF file: code-ish noise, zero runs and string tables."""
        out, left = [], n
        while left > 0:
            k = min(left, rng.choice((512, 1024, 4096)))
            kind = rng.random()
            if kind < 0.45:
                off = rng.randrange(0, len(self.noise) - k)
                out.append(self.noise[off:off + k])
            elif kind < 0.65:
                out.append(bytes(k))
            else:
                out.append(self.text_bytes(rng, k))
            left -= k
        return b"".join(out)


def write_random_file(path: str, rng: random.Random, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left > 0:
            k = min(left, 8 * MiB)
            f.write(rng.randbytes(k))
            left -= k


def _touch_tree(root: str) -> None:
    """Give everything below root (not root itself) the same mtime."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), (MTIME, MTIME), follow_symlinks=False)


def gen_system_tree(root: str, n_files: int, seed: int = 1) -> None:
    """Layer 1: a Debian-like tree: merged /usr, binaries and libraries with soname
    symlinks, docs, man pages, python modules, dpkg metadata; a few hardlinks, setuid
    files, files owned by other users, empty directories."""
    rng = random.Random(seed)
    content = Content(seed)
    os.makedirs(root, exist_ok=True)
    for d in ("usr/bin", "usr/sbin", "usr/lib/x86_64-linux-gnu", "usr/share/doc", "usr/share/man/man1",
              "usr/share/man/man5", "usr/share/locale", "usr/lib/python3/dist-packages", "usr/include",
              "etc/default", "etc/init.d", "var/lib/dpkg/info", "var/log", "var/cache/apt",
              "var/mail", "home/user", "root", "tmp", "run", "proc", "sys", "dev", "srv", "mnt", "opt"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    os.chmod(os.path.join(root, "tmp"), 0o1777)
    os.chmod(os.path.join(root, "root"), 0o700)
    for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"),
                         ("lib64", "usr/lib/x86_64-linux-gnu")):
        os.symlink(target, os.path.join(root, link))

    n_pkgs = max(10, n_files // 25)
    pkgs = [f"pkg{i:03d}-{''.join(rng.choices('abcdefghijklmnopqrstuvwxyz', k=5))}" for i in range(n_pkgs)]
    kinds = ["bin"] * 10 + ["lib"] * 12 + ["doc"] * 18 + ["man"] * 12 + ["py"] * 25 + ["locale"] * 8 \
        + ["include"] * 10 + ["etc"] * 5
    bins: list[str] = []
    for i in range(n_files):
        pkg = pkgs[i % n_pkgs]
        kind = rng.choice(kinds)
        # sizes: mostly small, a long tail of large binaries and libraries
        size = int(min(4 * MiB, max(16, rng.lognormvariate(math.log(2500), 1.4))))
        mode = 0o644
        if kind == "bin":
            rel = f"usr/bin/{pkg[7:]}-{i}"
            size = int(min(4 * MiB, size * 3))
            mode = 0o755
            data = content.binary_bytes(rng, size)
            bins.append(rel)
        elif kind == "lib":
            rel = f"usr/lib/x86_64-linux-gnu/lib{pkg[7:]}{i}.so.{i % 7}.{i % 3}.0"
            size = int(min(4 * MiB, size * 3))
            data = content.binary_bytes(rng, size)
            soname = os.path.join(root, f"usr/lib/x86_64-linux-gnu/lib{pkg[7:]}{i}.so.{i % 7}")
            os.symlink(os.path.basename(rel), soname)
        elif kind == "doc":
            name = rng.choice(("copyright", "changelog.Debian.gz", "README", "NEWS.gz", "TODO"))
            rel = f"usr/share/doc/{pkg}/{name}.{i}"
            data = content.binary_bytes(rng, size) if name.endswith(".gz") else content.text_bytes(rng, size)
        elif kind == "man":
            sect = rng.choice(("1", "5"))
            rel = f"usr/share/man/man{sect}/{pkg[7:]}-{i}.{sect}.gz"
            data = content.binary_bytes(rng, min(size, 64 * 1024))
        elif kind == "py":
            depth = "/".join(f"m{rng.randrange(4)}" for _ in range(rng.randint(0, 3)))
            rel = f"usr/lib/python3/dist-packages/{pkg[7:]}/{depth}/mod{i}.py".replace("//", "/")
            data = content.text_bytes(rng, min(size, 200 * 1024))
        elif kind == "locale":
            lang = rng.choice(("de", "fr", "es", "ja", "pt_BR", "zh_CN", "ru", "it"))
            rel = f"usr/share/locale/{lang}/LC_MESSAGES/{pkg[7:]}-{i}.mo"
            data = content.binary_bytes(rng, min(size, 256 * 1024))
        elif kind == "include":
            rel = f"usr/include/{pkg[7:]}/sub{i % 5}/h{i}.h"
            data = content.text_bytes(rng, min(size, 100 * 1024))
        else:
            rel = f"etc/{pkg[7:]}/conf{i}.conf"
            data = content.text_bytes(rng, min(size, 16 * 1024))
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, mode)
    # a few big shared libraries (libLLVM, libicudata...): one per 750 files, 4-8 MiB each
    for j in range(max(1, n_files // 750)):
        path = os.path.join(root, f"usr/lib/x86_64-linux-gnu/libbig{j}.so.1")
        with open(path, "wb") as f:
            f.write(content.binary_bytes(rng, rng.randint(4 * MiB, 8 * MiB)))
    # dpkg metadata: one .list and .md5sums per package (text)
    for pkg in pkgs:
        for ext in ("list", "md5sums"):
            path = os.path.join(root, f"var/lib/dpkg/info/{pkg}.{ext}")
            with open(path, "wb") as f:
                f.write(content.text_bytes(rng, rng.randint(200, 6000)))
    # hardlinks (like perl and perl5.36.0), setuid/setgid programs, other owners
    for j, rel in enumerate(bins[:12]):
        os.link(os.path.join(root, rel), os.path.join(root, f"usr/bin/hardlink-{j}"))
    for rel in bins[12:16]:
        os.chmod(os.path.join(root, rel), 0o4755)
    for rel in bins[16:18]:
        os.chown(os.path.join(root, rel), 0, 42)
        os.chmod(os.path.join(root, rel), 0o2755)
    for j in range(20):
        path = os.path.join(root, f"home/user/.config/app{j % 4}/file{j}")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(content.text_bytes(rng, rng.randint(10, 3000)))
    for dirpath, dirnames, filenames in os.walk(os.path.join(root, "home/user")):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), 1000, 1000)
    os.chown(os.path.join(root, "home/user"), 1000, 1000)
    os.chown(os.path.join(root, "var/mail"), 0, 8)
    os.chmod(os.path.join(root, "var/mail"), 0o2775)
    with open(os.path.join(root, "etc/passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n")
    with open(os.path.join(root, "etc/group"), "w") as f:
        f.write("root:x:0:\nmail:x:8:\nshadow:x:42:\nuser:x:1000:\n")
    for j in range(30):  # dangling and absolute symlinks, as a real system has
        os.symlink(f"/etc/alternatives/alt{j}", os.path.join(root, f"usr/bin/alt-{j}"))
    for j in range(10):
        os.makedirs(os.path.join(root, f"var/cache/apt/empty{j}"))
    _touch_tree(root)


def small_path(i: int) -> str:
    return f"{SMALL_ROOT}/{i // 2500:02d}/{(i // 50) % 50:02d}/item-{i:05d}.txt"


def gen_small_files(root: str, n: int, seed: int = 2) -> None:
    """Layer 2: n text files of 0.1-8 KiB (log-uniform sizes), 50 to a directory."""
    rng = random.Random(seed)
    content = Content(seed)
    lo, hi = math.log(100), math.log(8192)
    for i in range(n):
        path = os.path.join(root, small_path(i))
        if i % 50 == 0:
            os.makedirs(os.path.dirname(path), exist_ok=True)
        size = int(math.exp(rng.uniform(lo, hi)))
        header = f"item {i}\n".encode()
        with open(path, "wb") as f:
            f.write(header + content.text_bytes(rng, max(0, size - len(header))))
    _touch_tree(os.path.join(root, SMALL_ROOT))
    os.utime(os.path.join(root, "usr/share"), (MTIME, MTIME))


def big_sizes(total_mib: int) -> list[int]:
    """A few large files whose biggest grows with the total (so whole-file buffering shows)."""
    return [int(total_mib * MiB * share) for share in (0.5, 0.25, 0.15, 0.1)]


def gen_big_files(root: str, total_mib: int, seed: int = 3, sub: str = "opt/blobs") -> None:
    """Layer 3: a few large files of incompressible bytes."""
    rng = random.Random(seed * 1000 + total_mib)
    d = os.path.join(root, sub)
    os.makedirs(d, exist_ok=True)
    for j, size in enumerate(big_sizes(total_mib)):
        write_random_file(os.path.join(d, f"big-{j}.bin"), rng, size)
    _touch_tree(os.path.join(root, sub.split("/")[0]))


def modify(rootfs: str, scale: Scale, seed: int = 4) -> None:
    """The change that repack stores: rewrite `changed` small files, delete `deleted`
    others, add `added_mib` MiB of new incompressible files. Deterministic."""
    rng = random.Random(seed)
    content = Content(seed)
    picked = rng.sample(range(scale.small_files), scale.changed + scale.deleted)
    for i in picked[:scale.changed]:
        with open(os.path.join(rootfs, small_path(i)), "wb") as f:
            f.write(f"changed {i}\n".encode() + content.text_bytes(rng, rng.randint(100, 8192)))
    for i in picked[scale.changed:]:
        os.unlink(os.path.join(rootfs, small_path(i)))
    d = os.path.join(rootfs, "opt/new")
    os.makedirs(d, exist_ok=True)
    per = scale.added_mib * MiB // 5
    for j in range(5):
        write_random_file(os.path.join(d, f"new-{j}.bin"), rng, per)


# --------------------------------------------------------------------------- images

class Images:
    """One OCI layout (made with umoci) holding every input image as a tag; built lazily."""

    def __init__(self, scale: Scale) -> None:
        self.dir = c.WORK / "images"
        self.layout = self.dir / "layout"
        self.scale = scale
        self.umoci = c.tool("umoci")
        stamp = self.dir / "GENERATOR"
        if self.dir.exists() and (not stamp.exists() or stamp.read_text() != GENERATOR):
            print(f"images: made by another generator, rebuilding {self.dir}")
            c.rmtree(self.dir)
        if not self.layout.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            c.run([self.umoci, "init", "--layout", str(self.layout)])
            c.run([self.umoci, "new", "--image", f"{self.layout}:base"])
            stamp.write_text(GENERATOR)

    def recipes(self) -> dict[str, tuple[str, str, object]]:
        s = self.scale
        q, f = QUICK, FULL
        r: dict[str, tuple[str, str, object]] = {
            # tag: (parent tag, what, generator(rootfs))
            "sys-quick": ("base", f"system tree, {q.sys_files} files",
                          lambda root: gen_system_tree(root, q.sys_files)),
            "small-quick": ("sys-quick", f"{q.small_files} small text files",
                            lambda root: gen_small_files(root, q.small_files)),
            "quick": ("small-quick", f"{q.big_mib} MiB incompressible",
                      lambda root: gen_big_files(root, q.big_mib)),
            "sys-full": ("base", f"system tree, {f.sys_files} files",
                         lambda root: gen_system_tree(root, f.sys_files)),
            "small-full": ("sys-full", f"{f.small_files} small text files",
                           lambda root: gen_small_files(root, f.small_files)),
            "full": ("small-full", f"{f.big_mib} MiB incompressible",
                     lambda root: gen_big_files(root, f.big_mib)),
        }
        for mib in s.mem_mib:
            r[f"mem{mib}"] = ("sys-quick", f"{mib} MiB incompressible",
                              lambda root, mib=mib: gen_big_files(root, mib, sub="opt/mem"))
        return r

    def tags(self) -> set[str]:
        index = json.loads((self.layout / "index.json").read_text())
        return {m.get("annotations", {}).get("org.opencontainers.image.ref.name") for m in index["manifests"]}

    def ensure(self, tag: str) -> None:
        if tag == "base" or tag in self.tags():
            return
        parent, what, gen = self.recipes()[tag]
        self.ensure(parent)
        print(f"images: building {tag} ({what}) on {parent} with umoci", flush=True)
        t0 = time.perf_counter()
        bundle = self.dir / f"build-{tag}"
        c.rmtree(bundle)
        c.run([self.umoci, "unpack", "--image", f"{self.layout}:{parent}", str(bundle)])
        gen(str(bundle / "rootfs"))  # type: ignore[operator]
        c.run([self.umoci, "repack", "--history.created_by", f"bench/unpack.py: {what}",
               "--image", f"{self.layout}:{tag}", str(bundle)])
        c.rmtree(bundle)
        print(f"images: {tag} built in {time.perf_counter() - t0:.1f} s", flush=True)

    def layers(self, tag: str) -> list[dict]:
        return manifest_of(self.layout, tag)["layers"]


def manifest_of(layout: Path, tag: str) -> dict:
    index = json.loads((layout / "index.json").read_text())
    for m in index["manifests"]:
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            algo, hexd = m["digest"].split(":", 1)
            return json.loads((layout / "blobs" / algo / hexd).read_bytes())
    raise KeyError(tag)


def copy_layout(src: Path, dst: Path, *, hardlink: bool = True, tags: list[str] | None = None) -> None:
    """A private copy of a layout to repack into: blobs hardlinked (both tools write new
    blobs to a temporary name and rename; none is changed in place), index.json copied.
    Without ``hardlink`` the blobs are copied; with ``tags``, only the blobs they reach."""
    c.rmtree(dst)
    dst.mkdir(parents=True)
    for name in ("index.json", "oci-layout"):
        shutil.copy2(src / name, dst / name)
    if tags is None:
        subprocess.run(["cp", "-al" if hardlink else "-a", str(src / "blobs"), str(dst / "blobs")], check=True)
        return
    index = json.loads((src / "index.json").read_text())
    index["manifests"] = [m for m in index["manifests"]
                          if m.get("annotations", {}).get("org.opencontainers.image.ref.name") in tags]
    (dst / "index.json").write_text(json.dumps(index))
    for m in index["manifests"]:
        manifest = json.loads(_blob(src, m["digest"]).read_bytes())
        for d in [m, manifest["config"], *manifest["layers"]]:
            out = _blob(dst, d["digest"])
            if not out.exists():
                out.parent.mkdir(parents=True, exist_ok=True)
                if hardlink:
                    os.link(_blob(src, d["digest"]), out)
                else:
                    shutil.copyfile(_blob(src, d["digest"]), out)


def _blob(layout: Path, digest: str) -> Path:
    algo, hexd = digest.split(":", 1)
    return layout / "blobs" / algo / hexd


# --------------------------------------------------------------------------- tree check

def tree_summary(rootfs: str) -> dict[str, tuple]:
    """Path -> (type, mode, uid, gid, size, link target): what both unpacks must agree on."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(rootfs):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            kind = st.st_mode >> 12
            target = os.readlink(p) if os.path.islink(p) else ""
            size = st.st_size if kind == 0o10 else 0
            out[os.path.relpath(p, rootfs)] = (kind, st.st_mode & 0o7777, st.st_uid, st.st_gid, size,
                                               target, int(st.st_mtime))
    return out


def compare_trees(a: str, b: str) -> list[str]:
    ta, tb = tree_summary(a), tree_summary(b)
    problems = []
    for p in sorted(set(ta) | set(tb)):
        if ta.get(p) != tb.get(p):
            problems.append(f"{p}: umoci {ta.get(p)} ocibox {tb.get(p)}")
    return problems


# --------------------------------------------------------------------------- measuring

TMPFS = Path("/dev/shm")


class Bench:
    """The measurements in one place: "disk" (bench/work/run, on the repository's
    filesystem) or "tmpfs" (/dev/shm: no disk, so only the tools' own work shows)."""

    def __init__(self, args: argparse.Namespace, scale: Scale, images: Images, where: str,
                 tags: list[str]) -> None:
        self.args = args
        self.scale = scale
        self.where = where
        if where == "disk":
            self.run_dir = c.WORK / "run"
        else:
            self.run_dir = TMPFS / f"ocibox-bench-{os.getpid()}"
        c.rmtree(self.run_dir)
        self.run_dir.mkdir(parents=True)
        if where == "disk":
            self.layout = images.layout
        else:
            # a copy holding just the measured images, so that their blobs live in tmpfs too
            self.layout = self.run_dir / "input"
            copy_layout(images.layout, self.layout, hardlink=False, tags=tags)
        self.umoci = c.tool("umoci")
        self.ocibox, self.env, self.ocibox_from = c.ocibox_at(args.ocibox_rev)
        self.notes: list[str] = []

    def unpack_cmd(self, who: str, image: str, bundle: Path) -> list[str]:
        if who == "umoci":
            return [self.umoci, "unpack", "--image", image, str(bundle)]
        return [*self.ocibox, "layout", "unpack", "--image", image, str(bundle)]

    def repack_cmd(self, who: str, image: str, bundle: Path) -> list[str]:
        # umoci's repack leaves the bundle's state alone unless --refresh-bundle; ask
        # ocibox for the same work.
        if who == "umoci":
            return [self.umoci, "repack", "--image", image, str(bundle)]
        return [*self.ocibox, "layout", "repack", "--no-refresh-bundle", "--image", image, str(bundle)]

    @staticmethod
    def order(rnd: int) -> tuple[str, str]:
        return ("umoci", "ocibox") if rnd % 2 == 0 else ("ocibox", "umoci")

    def measure_unpack(self, tag: str, *, check: bool) -> dict[str, c.Series]:
        image = f"{self.layout}:{tag}"
        series = {"umoci": c.Series(), "ocibox": c.Series()}
        for rnd in range(self.args.rounds):
            for who in self.order(rnd):
                bundle = self.run_dir / f"unpack-{who}"
                c.rmtree(bundle)
                os.sync()  # no earlier run's writeback lands in this one
                s = c.run_measured(self.unpack_cmd(who, image, bundle), env=self.env)
                series[who].add(s)
                print(f"  {self.where:>5} unpack {tag:>6} round {rnd + 1} {who:>6}: {s.seconds:7.3f} s "
                      f"{s.rss_kib / 1024:7.1f} MiB", flush=True)
            if check and rnd == 0:
                problems = compare_trees(str(self.run_dir / "unpack-umoci/rootfs"),
                                         str(self.run_dir / "unpack-ocibox/rootfs"))
                if problems:
                    msg = (f"{self.where}: unpack {tag}: the rootfs trees differ in {len(problems)} paths, e.g. "
                           + "; ".join(problems[:3]))
                    print("  WARNING " + msg)
                    self.notes.append(msg)
                else:
                    print(f"  {self.where}: unpack {tag}: both rootfs trees agree (type, mode, owner, size, link, mtime)")
            for who in series:
                c.rmtree(self.run_dir / f"unpack-{who}")
        return series

    def measure_repack(self, tag: str) -> tuple[dict[str, c.Series], dict[str, int]]:
        series = {"umoci": c.Series(), "ocibox": c.Series()}
        layer_size: dict[str, int] = {}
        for rnd in range(self.args.rounds):
            for who in self.order(rnd):
                layout = self.run_dir / f"layout-{who}"
                bundle = self.run_dir / f"repack-{who}"
                copy_layout(self.layout, layout)
                c.rmtree(bundle)
                c.run(self.unpack_cmd(who, f"{layout}:{tag}", bundle), env=self.env)
                modify(str(bundle / "rootfs"), self.scale)
                os.sync()
                s = c.run_measured(self.repack_cmd(who, f"{layout}:{tag}-repacked", bundle), env=self.env)
                series[who].add(s)
                layer_size[who] = manifest_of(layout, f"{tag}-repacked")["layers"][-1]["size"]
                print(f"  {self.where:>5} repack {tag:>6} round {rnd + 1} {who:>6}: {s.seconds:7.3f} s "
                      f"{s.rss_kib / 1024:7.1f} MiB  (new layer {layer_size[who] / MiB:.1f} MiB)", flush=True)
                c.rmtree(bundle)
                c.rmtree(layout)
        return series, layer_size

    def profile(self, tag: str, out_dir: Path) -> list[Path]:
        """cProfile ocibox's unpack and repack once each; write the top functions."""
        import pstats

        out_dir.mkdir(parents=True, exist_ok=True)
        py = str(c.VENV_BIN / "python")
        layout = self.run_dir / "layout-profile"
        bundle = self.run_dir / "profile-bundle"
        copy_layout(self.layout, layout)
        c.rmtree(bundle)
        written = []
        steps = [
            ("unpack", ["layout", "unpack", "--image", f"{layout}:{tag}", str(bundle)], None),
            ("repack", ["layout", "repack", "--no-refresh-bundle", "--image",
                        f"{layout}:{tag}-profiled", str(bundle)], lambda: modify(str(bundle / "rootfs"), self.scale)),
        ]
        for name, argv, before in steps:
            if before:
                before()
            os.sync()
            prof = out_dir / f"ocibox-{name}-{tag}-{self.where}.prof"
            t0 = time.perf_counter()
            c.run([py, "-m", "cProfile", "-o", str(prof), "-m", "ocibox.cli", *argv], env=self.env)
            wall = time.perf_counter() - t0
            txt = out_dir / f"ocibox-{name}-{tag}-{self.where}.txt"
            with open(txt, "w") as f:
                f.write(f"# ocibox {name} of {tag} on {self.where} under cProfile: {wall:.2f} s wall\n\n")
                for key in ("cumulative", "tottime"):
                    st = pstats.Stats(str(prof), stream=f)
                    st.strip_dirs().sort_stats(key).print_stats(35)
            written.append(txt)
            print(f"  profile: {txt} ({wall:.2f} s under cProfile)")
        c.rmtree(bundle)
        c.rmtree(layout)
        return written


# --------------------------------------------------------------------------- report

def fmt_row(op: str, s: dict[str, c.Series]) -> list[str]:
    u, o = s["umoci"], s["ocibox"]
    return [op, f"{u.median_s:.3f}", f"{o.median_s:.3f}", f"{o.median_s / u.median_s:.2f}",
            f"{u.peak_rss_mib:.0f}", f"{o.peak_rss_mib:.0f}"]


HEADERS = ["operation", "umoci median s", "ocibox median s", "ratio ocibox/umoci",
           "umoci peak RSS MiB", "ocibox peak RSS MiB"]


def describe_image(images: Images, tag: str) -> str:
    layers = images.layers(tag)
    sizes = ", ".join(f"{x['size'] / MiB:.1f}" for x in layers)
    return f"{len(layers)} gzip layers of {sizes} MiB compressed"


@dataclass
class Outcome:
    where: str
    unpack: dict[str, c.Series]
    repack: dict[str, c.Series]
    layer_size: dict[str, int]
    mem: dict[str, dict[str, c.Series]]
    notes: list[str]
    load_before: str
    load_after: str


def measure_at(args: argparse.Namespace, scale: Scale, images: Images, where: str,
               profiles: list[Path], *, wait: bool) -> tuple[Outcome, Bench]:
    tag = scale.name
    mem_tags = [f"mem{m}" for m in scale.mem_mib]
    bench = Bench(args, scale, images, where, [tag, *mem_tags])
    try:
        if wait and args.max_load:
            c.wait_for_low_load(args.max_load, 600)
        load_before = c.load()
        print(f"measuring on {where} ({bench.run_dir}): {args.rounds} rounds, load {load_before}", flush=True)
        unpack = bench.measure_unpack(tag, check=True)
        repack, layer_size = bench.measure_repack(tag)
        mem = {t: bench.measure_unpack(t, check=False) for t in mem_tags}
        load_after = c.load()
        if args.profile:
            profiles += bench.profile(tag, c.WORK / "profiles")
    finally:
        if not args.keep or where == "tmpfs":
            c.rmtree(bench.run_dir)
    return Outcome(where, unpack, repack, layer_size, mem, bench.notes, load_before, load_after), bench


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="rounds per operation (default 3)")
    ap.add_argument("--quick", action="store_true", help="a ~30 MB image instead of ~300 MB")
    ap.add_argument("--keep", action="store_true",
                    help="keep bench/work/run after a disk run (the cached images always stay)")
    ap.add_argument("--where", choices=("disk", "tmpfs", "both"), default="both",
                    help="run the bundles on the repository's filesystem, on /dev/shm, or both (default)")
    ap.add_argument("--profile", action="store_true", help="also run ocibox unpack/repack under cProfile")
    ap.add_argument("--results", type=Path, help="where to write the Markdown report "
                    "(default bench/RESULTS.md; with --quick bench/work/RESULTS-quick.md)")
    ap.add_argument("--ocibox-rev", metavar="REV",
                    help="measure ocibox as committed at REV (e.g. HEAD), exported under bench/work, "
                    "instead of the working tree")
    ap.add_argument("--max-load", type=float, default=0.0,
                    help="first wait (once, up to 10 min) for the 1-minute load average to fall below this")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/unpack.py: run as root (both tools then keep ownership, as a real unpack does)")
    if args.rounds < 1:
        sys.exit("bench/unpack.py: --rounds must be at least 1")
    scale = QUICK if args.quick else FULL
    results = args.results or (c.WORK / "RESULTS-quick.md" if args.quick else c.BENCH / "RESULTS.md")
    c.WORK.mkdir(parents=True, exist_ok=True)

    images = Images(scale)
    tag = scale.name
    mem_tags = [f"mem{m}" for m in scale.mem_mib]
    for t in [tag, *mem_tags]:
        images.ensure(t)

    started = datetime.datetime.now(datetime.UTC)
    places = ["disk", "tmpfs"] if args.where == "both" else [args.where]
    profiles: list[Path] = []
    outcomes = []
    bench = None
    for where in places:
        outcome, bench = measure_at(args, scale, images, where, profiles, wait=where == places[0])
        outcomes.append(outcome)
    assert bench is not None

    big = scale.big_mib
    rows, mem_lines, detail_rows = [], [], []
    for o in outcomes:
        rows += [
            fmt_row(f"unpack {tag} (3 layers, {big} MiB large layer) [{o.where}]", o.unpack),
            fmt_row(f"repack {tag} (+{scale.changed} changed, -{scale.deleted}, +{scale.added_mib} MiB)"
                    f" [{o.where}]", o.repack),
            *(fmt_row(f"unpack {t} (1 small + {t[3:]} MiB layer) [{o.where}]", o.mem[t]) for t in mem_tags),
        ]
        lo, hi = (o.mem[t]["ocibox"].peak_rss_mib for t in mem_tags)
        ulo, uhi = (o.mem[t]["umoci"].peak_rss_mib for t in mem_tags)
        flat = hi <= lo * 1.2 + 10
        mem_lines.append(
            f"{o.where}: ocibox unpack peak RSS {lo:.0f} MiB with a {scale.mem_mib[0]} MiB layer, {hi:.0f} MiB with "
            f"{scale.mem_mib[1]} MiB ({'flat' if flat else 'GROWS with layer size'}); umoci {ulo:.0f} / {uhi:.0f} MiB")
        mem_lines.append(f"{o.where}: repacked layer size: umoci {o.layer_size['umoci'] / MiB:.1f} MiB, "
                         f"ocibox {o.layer_size['ocibox'] / MiB:.1f} MiB")
        mem_lines += [f"NOTE: {n}" for n in o.notes]
        for op, s in [("unpack " + tag, o.unpack), ("repack " + tag, o.repack),
                      *((f"unpack {t}", o.mem[t]) for t in mem_tags)]:
            for who in ("umoci", "ocibox"):
                detail_rows.append([f"{op} [{o.where}]", who, " ".join(f"{x.seconds:.3f}" for x in s[who].samples),
                                    f"{s[who].min_s:.3f}", f"{s[who].max_s:.3f}",
                                    " ".join(f"{x.rss_kib / 1024:.0f}" for x in s[who].samples)])
    tbl = c.table(HEADERS, rows)
    print()
    print(tbl)
    print()
    for line in mem_lines:
        print(line)

    m = c.machine()
    loads = "; ".join(f"{o.where}: {o.load_before} before, {o.load_after} after" for o in outcomes)
    lines = [
        "## unpack: ocibox layout unpack/repack against umoci",
        "",
        "Written by `bench/unpack.py " + " ".join(sys.argv[1:]) + "`; see bench/README.md for how "
        "it measures. Ratio = ocibox median / umoci median: at or below 1.00 ocibox is faster. "
        "[disk] runs the bundles on the repository's filesystem, [tmpfs] on /dev/shm.",
        "",
        f"- date: {started:%Y-%m-%d %H:%M} UTC, {args.rounds} rounds, tools alternating",
        f"- machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']}, kernel {m['kernel']}",
        f"- filesystem of bench/work: {c.filesystem(c.WORK)}",
        f"- load average (1/5/15 min): {loads} (the machine is shared; other work can inflate single samples)",
        f"- umoci: {c.tool_version([bench.umoci, '--version'])}",
        f"- ocibox: {c.tool_version([*bench.ocibox, '--version'], bench.env)}, {bench.ocibox_from}; "
        f"Python {m['python']}",
        f"- peak RSS: {'GNU time %M' if os.path.exists(c.GNU_TIME) else 'getrusage(RUSAGE_CHILDREN)'}",
        "",
        "### Input (made with umoci, cached under bench/work/images)",
        "",
        f"- `{tag}`: {describe_image(images, tag)}: a Debian-like system tree ({scale.sys_files} files, "
        f"symlinks, hardlinks, setuid, other owners), {scale.small_files} text files of 0.1-8 KiB, "
        f"{big} MiB of random bytes in 4 files",
        *(f"- `{t}`: {describe_image(images, t)}: a {QUICK.sys_files}-file system tree and "
          f"{t[3:]} MiB of random bytes in 4 files" for t in mem_tags),
        f"- repack change: {scale.changed} small files rewritten, {scale.deleted} deleted, "
        f"{scale.added_mib} MiB of random bytes added in 5 files; each tool repacks a bundle it "
        "unpacked itself, into its own copy of the layout; only the repack is timed",
        "",
        "### Results",
        "",
        tbl,
        "",
        *(f"- {line}" for line in mem_lines),
        "",
        "### Reading these figures",
        "",
        "- [disk] unpack times are dominated by the kernel's cost of creating ~25,000 files (open with "
        "O_CREAT, mkdir): under cProfile more than 80 % of ocibox's disk unpack is spent inside open(). On a "
        "shared VM disk (ext4 mounted with online discard) that cost swings by up to 10x between runs, for "
        "both tools, so the [disk] unpack median says more about the disk than about either tool.",
        "- [tmpfs] rows take the disk out: they measure the tools' own work (decompression, tar parsing, "
        "hashing, metadata calls). Compare ratios, not seconds, across runs and machines.",
        "- umoci's unpack also writes an mtree manifest with a sha256 of every file and its repack re-hashes "
        "every file to find changes; ocibox records metadata only (size, mtime, ctime, inode) after unpack "
        "and compares that on repack. Both unpacks agree on every path's type, mode, owner, size, link target and "
        "mtime (checked after the first round).",
        "",
        "### unpack: every sample",
        "",
        c.table(["operation", "tool", "seconds", "min", "max", "peak RSS MiB"], detail_rows),
        "",
    ]
    if profiles:
        lines += ["Profiles of ocibox (cProfile): " + ", ".join(str(p.relative_to(c.REPO)) for p in profiles), ""]
    c.write_section(results, "unpack", "\n".join(lines))
    print(f"\nwrote {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Synchronise repositories between registries and directories, as ``skopeo sync`` does.

Sources: a registry repository (every tag, or one ``:tag``), a directory of
``dir:`` images, or a YAML file naming registries and their images. Destinations:
a registry prefix (``HOST[/PATH]``) or a directory. An image whose manifest is
already at the destination with the same digest is skipped; other images are
copied, and blobs the destination has are skipped as in any copy. One registry
client per host is shared by all copies, so connections and tokens are reused.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from .. import digest as _digest
from ..distribution.auth import Credentials
from ..distribution.client import Options, Registry
from ..distribution.reference import Reference
from ..errors import OciboxError, UsageError
from .copy import CopyOptions, copy_async
from .locations import DirLocation, DockerLocation, Location


@dataclass
class SyncItem:
    source: str
    destination: str
    status: str  # "copied", "skipped" or "failed: ..."


@dataclass
class SyncOptions:
    copy: CopyOptions = field(default_factory=CopyOptions)
    scoped: bool = False
    images: int = 2  # images copied at once (each moves up to copy.jobs blobs)
    keep_going: bool = False
    report: Callable[[str], None] | None = None


@dataclass
class _Job:
    src: Location
    dst: Location
    src_ref: Reference | None


def sync(src_kind: str, source: str, dst_kind: str, destination: str,
         options: SyncOptions | None = None) -> list[SyncItem]:
    return asyncio.run(sync_async(src_kind, source, dst_kind, destination, options or SyncOptions()))


class _Clients:
    def __init__(self) -> None:
        self.by_host: dict[tuple[str, int], Registry] = {}

    def get(self, host: str, options: Options) -> Registry:
        key = (host, id(options))
        if key not in self.by_host:
            self.by_host[key] = Registry(host, options)
        return self.by_host[key]

    async def close(self) -> None:
        for r in self.by_host.values():
            await r.close()


async def sync_async(src_kind: str, source: str, dst_kind: str, destination: str,
                     o: SyncOptions) -> list[SyncItem]:
    if src_kind not in ("docker", "dir", "yaml") or dst_kind not in ("docker", "dir"):
        raise UsageError("sync copies --src docker|dir|yaml to --dest docker|dir")
    clients = _Clients()
    try:
        sources = await _sources(src_kind, source, o, clients)
        jobs = [_Job(src, _destination(dst_kind, destination, name, o, clients), ref)
                for name, src, ref in sources]
        sem = asyncio.Semaphore(max(1, o.images))
        items = await asyncio.gather(*(_one(job, o, sem) for job in jobs))
    finally:
        await clients.close()
    return list(items)


async def _one(job: _Job, o: SyncOptions, sem: asyncio.Semaphore) -> SyncItem:
    async with sem:
        if await _same(job):
            if o.report:
                o.report(f"Skipping {job.src.name}: {job.dst.name} is up to date")
            return SyncItem(job.src.name, job.dst.name, "skipped")
        if o.report:
            o.report(f"Copying {job.src.name} to {job.dst.name}")
        try:
            await copy_async(job.src, job.dst, replace(o.copy))
        except OciboxError as e:
            if not o.keep_going:
                raise
            if o.report:
                o.report(f"Failed {job.src.name}: {e}")
            return SyncItem(job.src.name, job.dst.name, f"failed: {e}")
        return SyncItem(job.src.name, job.dst.name, "copied")


async def _same(job: _Job) -> bool:
    """True when the destination already holds the source's top manifest."""
    try:
        if isinstance(job.src, DockerLocation):
            head = await job.src.registry.head_manifest(job.src.ref.repository, job.src.ref.reference)
            want = head[0] if head else None
        else:
            await job.src.open(writing=False)
            want = (await job.src.top()).digest
        if not want:
            return False
        if isinstance(job.dst, DockerLocation):
            have = await job.dst.registry.head_manifest(job.dst.ref.repository, job.dst.ref.reference)
            return bool(have) and have[0] == want
        path = os.path.join(job.dst.path, "manifest.json")
        if os.path.exists(path):
            with open(path, "rb") as f:
                return _digest.of_bytes(f.read()) == want
    except OciboxError:
        return False
    return False


async def _sources(kind: str, source: str, o: SyncOptions,
                   clients: _Clients) -> list[tuple[str, Location, Reference | None]]:
    """(destination name, source location, source reference) of every image to copy."""
    if kind == "dir":
        if not os.path.isdir(source):
            raise UsageError(f"{source}: no such directory")
        if os.path.exists(os.path.join(source, "manifest.json")):
            return [(os.path.basename(os.path.normpath(source)), DirLocation(source), None)]
        return [(name, DirLocation(os.path.join(source, name)), None)
                for name in sorted(os.listdir(source))
                if os.path.exists(os.path.join(source, name, "manifest.json"))]
    if kind == "docker":
        return await _repo_images(Reference.parse(source), o.copy.src_options, None, o, clients)
    return await _yaml_images(source, o, clients)


async def _repo_images(ref: Reference, options: Options, tags: list[str] | None | str,
                       o: SyncOptions, clients: _Clients) -> list[tuple[str, Location, Reference | None]]:
    reg = clients.get(ref.api_host, options)
    if isinstance(tags, str):  # a regular expression
        pattern = re.compile(tags)
        tags = [t for t in await reg.list_tags(ref.repository) if pattern.search(t)]
    elif ref.tag or ref.digest:
        tags = [ref.tag or ""] if not ref.digest else [ref.digest]
    elif not tags:
        tags = await reg.list_tags(ref.repository)
    name = ref.repository if o.scoped else ref.repository.rsplit("/", 1)[-1]
    out = []
    for t in tags:
        r = ref.with_digest(t) if _digest.is_valid(t) else ref.with_tag(t)
        out.append((f"{name}:{t}" if not _digest.is_valid(t) else f"{name}@{t}",
                    DockerLocation(r, options, shared=reg), r))
    return out


async def _yaml_images(path: str, o: SyncOptions, clients: _Clients):
    try:
        import yaml
    except ImportError:
        raise UsageError("--src yaml needs PyYAML (pip install pyyaml)") from None
    try:
        with open(path) as f:
            doc = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise UsageError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise UsageError(f"{path}: expected a mapping of registries")
    out = []
    for host, spec in doc.items():
        spec = spec or {}
        options = replace(o.copy.src_options)
        if "tls-verify" in spec:
            options.tls_verify = bool(spec["tls-verify"])
        if spec.get("cert-dir"):
            options.cert_dir = spec["cert-dir"]
        creds = spec.get("credentials") or {}
        if creds.get("username"):
            options.creds = Credentials(creds["username"], creds.get("password", ""))
        for repo, tags in (spec.get("images") or {}).items():
            out += await _repo_images(Reference.parse(f"{host}/{repo}"), options, list(tags or []), o, clients)
        for repo, regex in (spec.get("images-by-tag-regex") or {}).items():
            out += await _repo_images(Reference.parse(f"{host}/{repo}"), options, str(regex), o, clients)
    return out


def _destination(kind: str, destination: str, name: str, o: SyncOptions, clients: _Clients) -> Location:
    if kind == "dir":
        return DirLocation(os.path.join(destination, name.replace("@", ":")))
    ref = Reference.parse(f"{destination.rstrip('/')}/{name}")
    options = o.copy.dst_options
    return DockerLocation(ref, options, shared=clients.get(ref.api_host, options))

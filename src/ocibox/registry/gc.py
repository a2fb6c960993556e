"""Garbage collection: mark what manifests reach, sweep the rest after a grace period.

Safe while the registry serves pushes: nothing younger than ``grace`` seconds
is removed (a blob's age is the newest of its data file and its links, and a
manifest push touches the links of the blobs it names before it is stored),
and open uploads are removed only once no byte has arrived for ``upload_ttl``
seconds.

Safe too beside other processes serving the same root: each deletion of a
blob or link is re-checked and done under the root's gc lock held
exclusively, while anything that names a blob holds it shared (see
``ocibox.registry.store``); an upload is removed only if no request holds its
data file's lock.

Marked: every manifest revision of every repository, and every blob that one
of them names (config, layers, child manifests). Swept: global blobs nobody
marks, repository links to blobs that are gone or unmarked, stale uploads,
and leftover temporary files.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field

from .. import digest as _digest
from .storage.base import StorageDriver
from .store import RegistryStore, blob_path
from .uploads import try_flock


@dataclass
class GcReport:
    marked: int = 0
    blobs_removed: list[str] = field(default_factory=list)
    links_removed: int = 0
    uploads_removed: int = 0
    bytes_freed: int = 0


def _references(data: bytes) -> list[str]:
    try:
        doc = json.loads(data)
    except ValueError:
        return []
    if not isinstance(doc, dict):
        return []
    descs = [doc.get("config")] + list(doc.get("layers") or []) + list(doc.get("manifests") or [])
    return [d["digest"] for d in descs
            if isinstance(d, dict) and isinstance(d.get("digest"), str) and _digest.is_valid(d["digest"])]


def _mark(store: RegistryStore, repos: list[str]) -> set[str]:
    marked: set[str] = set()
    for name in repos:
        for digest in store.revisions(name):
            marked.add(digest)
            try:
                marked.update(_references(store.driver.get_content(blob_path(digest))))
            except FileNotFoundError:
                continue
    return marked


def _link_ages(store: RegistryStore, repos: list[str]) -> dict[str, float]:
    newest: dict[str, float] = {}
    for name in repos:
        for digest in store.layers(name):
            info = store.driver.stat(store.layer_link(name, digest))
            if info is not None:
                newest[digest] = max(newest.get(digest, 0.0), info.mtime)
    return newest


def _global_blobs(driver: StorageDriver):
    for algorithm in driver.list("blobs"):
        for prefix in driver.list(f"blobs/{algorithm}"):
            for name in driver.list(f"blobs/{algorithm}/{prefix}"):
                yield algorithm, prefix, name


def collect_garbage(driver: StorageDriver, *, grace: float = 3600.0, upload_ttl: float = 86400.0,
                    dry_run: bool = False, now: float | None = None) -> GcReport:
    store = RegistryStore(driver)
    now = time.time() if now is None else now
    report = GcReport()
    repos = store.repositories()
    marked = _mark(store, repos)
    report.marked = len(marked)
    links = _link_ages(store, repos)

    for algorithm, prefix, name in list(_global_blobs(driver)):
        path = f"blobs/{algorithm}/{prefix}/{name}"
        digest = f"{algorithm}:{name}"
        if digest in marked:
            continue
        if not _digest.is_valid(digest) and not name.startswith(".tmp-"):
            continue  # not ours: leave it alone
        info = _sweepable(store, repos, path, digest, now - grace, links)
        if info is None:
            continue
        if dry_run:
            _count(report, digest, info.size)
            continue
        with store.gc_lock(shared=False):
            # re-checked under the lock: a push may have named it since the scan
            info = _sweepable(store, repos, path, digest, now - grace, links)
            if info is not None and driver.delete(path):
                _count(report, digest, info.size)

    for name in repos:
        for digest in store.layers(name):
            if store.blob_size(digest) is not None:
                continue
            report.links_removed += 1
            if not dry_run:
                with store.gc_lock(shared=False):
                    if store.blob_size(digest) is None:  # an upload may have published it since
                        store.unlink_blob(name, digest)
        for uuid in store.uploads(name):
            if _remove_upload(store, name, uuid, now - upload_ttl, dry_run):
                report.uploads_removed += 1
    return report


def _count(report: GcReport, digest: str, size: int) -> None:
    if _digest.is_valid(digest):
        report.blobs_removed.append(digest)
    report.bytes_freed += size


def _sweepable(store: RegistryStore, repos: list[str], path: str, digest: str, cutoff: float,
               links: dict[str, float]):
    """The blob's FileInfo if it may go: older than the cutoff, and so is every link to it."""
    info = store.driver.stat(path)
    if info is None or max(info.mtime, links.get(digest, 0.0)) > cutoff:
        return None
    if _digest.is_valid(digest):
        # a link made or touched since the scan (a mount, a manifest push) saves the blob
        if any((s := store.driver.stat(store.layer_link(r, digest))) is not None and s.mtime > cutoff
               for r in repos):
            return None
    return info


def _remove_upload(store: RegistryStore, name: str, uuid: str, cutoff: float, dry_run: bool) -> bool:
    """Remove an upload idle since before the cutoff, unless a request is writing it now."""
    directory = f"{store.uploads_dir(name)}/{uuid}"
    data = f"{directory}/data"
    info = store.driver.stat(data)
    # without its data file yet, an upload is as old as its directory (being created right now)
    age = info or store.driver.stat(directory)
    if age is None or age.mtime >= cutoff:
        return False
    if dry_run:
        return True
    full = store.driver.local_path(data)
    fd = None
    if full is not None and info is not None:
        try:
            fd = try_flock(full)
        except FileNotFoundError:
            return False  # finished or cancelled meanwhile
        if fd is None:
            return False  # a request holds it: not stale
    try:
        age = store.driver.stat(data) or store.driver.stat(directory)
        if age is None or age.mtime >= cutoff:
            return False
        return store.driver.delete(directory)
    finally:
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

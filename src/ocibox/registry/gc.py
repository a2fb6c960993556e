"""Garbage collection: mark what manifests reach, sweep the rest after a grace period.

Safe while the registry serves pushes: nothing younger than ``grace`` seconds
is removed (a blob's age is the newest of its data file and its links, and a
manifest push touches the links of the blobs it names before it is stored),
and open uploads are removed only once no byte has arrived for ``upload_ttl``
seconds.

Marked: every manifest revision of every repository, and every blob that one
of them names (config, layers, child manifests). Swept: global blobs nobody
marks, repository links to blobs that are gone or unmarked, stale uploads,
and leftover temporary files.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from .. import digest as _digest
from .storage.base import StorageDriver
from .store import RegistryStore, blob_path


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
        info = driver.stat(path)
        if info is None or max(info.mtime, links.get(digest, 0.0)) > now - grace:
            continue
        if not _digest.is_valid(digest) and not name.startswith(".tmp-"):
            continue  # not ours: leave it alone
        if _digest.is_valid(digest):
            # a link made since the scan (a mount, a manifest push) saves the blob
            fresh = any((s := driver.stat(store.layer_link(r, digest))) is not None
                        and s.mtime > now - grace for r in repos)
            if fresh:
                continue
            report.blobs_removed.append(digest)
        report.bytes_freed += info.size
        if not dry_run:
            driver.delete(path)

    for name in repos:
        for digest in store.layers(name):
            if digest in report.blobs_removed or store.blob_size(digest) is None:
                report.links_removed += 1
                if not dry_run:
                    store.unlink_blob(name, digest)
        for uuid in store.uploads(name):
            info = driver.stat(f"{store.uploads_dir(name)}/{uuid}/data")
            mtime = info.mtime if info is not None else 0.0
            if mtime < now - upload_ttl:
                report.uploads_removed += 1
                if not dry_run:
                    driver.delete(f"{store.uploads_dir(name)}/{uuid}")
    return report

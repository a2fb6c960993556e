"""The registry's content, laid out on a storage driver.

    blobs/<alg>/<hex[:2]>/<hex>                       every blob (and manifest) once
    repositories/<name>/_layers/<alg>/<hex>           blob linked into a repository
    repositories/<name>/_manifests/revisions/<alg>/<hex>   manifest of a repository
                                                      (the file holds its media type)
    repositories/<name>/_manifests/tags/<tag>         tag -> digest
    repositories/<name>/_referrers/<alg>/<subject-hex>/<alg>-<hex>
                                                      referrer descriptor (JSON)
    repositories/<name>/_uploads/<uuid>/data          an upload in progress
    _locks/gc.lock                                    gc sweeps vs. naming blobs
    _locks/repositories/<name>/_manifests.lock        a repository's manifests and tags

Names, tags and digests are checked by ``ocibox.registry.names`` before they
reach this module. Content is written before the names that point at it
(blob, then link; manifest bytes, then revision, then tag), each step atomic,
so a crash leaves at worst unreferenced content that gc removes.

Several processes may serve one root at once (replicas). Every file is
replaced by rename, and nothing mutable is cached in memory; where a step
reads and then writes, it holds a lock that all processes share (flock on a
file under ``_locks``):

- ``gc.lock``: naming a blob (a manifest push checking and touching what it
  references, a mount, publishing an upload) holds it shared; gc holds it
  exclusively while it re-checks and deletes one blob or link, so a blob is
  never deleted between being found and being named.
- ``<name>/_manifests.lock``: writing a manifest with its revision, referrer
  entry and tag, and deleting a manifest (which finds and removes the tags
  pointing at it), so a delete never removes a tag just moved elsewhere.

Drivers without local files (memory) cannot be shared by processes; for them
the locks are process-local.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import weakref
from collections.abc import Iterator
from typing import Any, BinaryIO

from .. import digest as _digest
from .._fs import file_lock
from ..errors import LockTimeout
from . import errors as E
from .manifests import PushedManifest, referrer_descriptor
from .names import is_tag
from .storage.base import PathNotFound, StorageDriver

REPOS = "repositories"
LOCKS = "_locks"
# Locks of drivers without local files, per driver: every store over one driver (the server's,
# gc's) must see the same ones.
_THREAD_LOCKS: weakref.WeakKeyDictionary[StorageDriver, dict[str, threading.Lock]] = weakref.WeakKeyDictionary()
_THREAD_LOCKS_GUARD = threading.Lock()


def blob_path(digest: str) -> str:
    algorithm, encoded = _digest.parse(digest)
    return f"blobs/{algorithm}/{encoded[:2]}/{encoded}"


def _digest_path(digest: str) -> str:
    algorithm, encoded = _digest.parse(digest)
    return f"{algorithm}/{encoded}"


class RegistryStore:
    def __init__(self, driver: StorageDriver, *, lock_timeout: float = 60.0) -> None:
        self.driver = driver
        self.lock_timeout = lock_timeout

    # --- locks shared by every process on the root ---------------------------

    @contextlib.contextmanager
    def lock(self, path: str, *, shared: bool = False, timeout: float | None = None) -> Iterator[None]:
        """Hold the lock named by ``path`` (blocking: call it off the event loop).

        Waits ``timeout`` seconds (default: the store's lock_timeout), then raises LockTimeout.
        """
        timeout = self.lock_timeout if timeout is None else timeout
        full = self.driver.local_path(path)
        if full is None:
            with _THREAD_LOCKS_GUARD:
                lock = _THREAD_LOCKS.setdefault(self.driver, {}).setdefault(path, threading.Lock())
            if not lock.acquire(timeout=timeout):
                raise LockTimeout(f"timed out after {timeout:.0f}s waiting for lock {path}")
            try:
                yield
            finally:
                lock.release()
            return
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with file_lock(full, shared=shared, timeout=timeout):
            yield

    def gc_lock(self, *, shared: bool) -> contextlib.AbstractContextManager[None]:
        return self.lock(f"{LOCKS}/gc.lock", shared=shared)

    def manifest_lock(self, name: str) -> contextlib.AbstractContextManager[None]:
        # "_manifests.lock" can be no repository's name component, so no repository's lock dir
        return self.lock(f"{LOCKS}/{REPOS}/{name}/_manifests.lock")

    # --- paths -------------------------------------------------------------

    @staticmethod
    def repo_path(name: str) -> str:
        return f"{REPOS}/{name}"

    def layer_link(self, name: str, digest: str) -> str:
        return f"{REPOS}/{name}/_layers/{_digest_path(digest)}"

    def revision_link(self, name: str, digest: str) -> str:
        return f"{REPOS}/{name}/_manifests/revisions/{_digest_path(digest)}"

    def tag_path(self, name: str, tag: str) -> str:
        return f"{REPOS}/{name}/_manifests/tags/{tag}"

    def referrers_dir(self, name: str, subject: str) -> str:
        return f"{REPOS}/{name}/_referrers/{_digest_path(subject)}"

    def uploads_dir(self, name: str) -> str:
        return f"{REPOS}/{name}/_uploads"

    # --- repositories ------------------------------------------------------

    def repo_exists(self, name: str) -> bool:
        base = self.repo_path(name)
        return any(self.driver.stat(f"{base}/{part}") is not None for part in ("_manifests", "_layers"))

    def repositories(self) -> list[str]:
        found: list[str] = []

        def walk(path: str, prefix: str) -> None:
            children = self.driver.list(path)
            if "_manifests" in children or "_layers" in children:
                found.append(prefix)
            for child in children:
                info = self.driver.stat(f"{path}/{child}")
                if not child.startswith("_") and info is not None and info.is_dir:
                    walk(f"{path}/{child}", f"{prefix}/{child}" if prefix else child)

        walk(REPOS, "")
        return sorted(found)

    # --- blobs -------------------------------------------------------------

    def blob_size(self, digest: str) -> int | None:
        info = self.driver.stat(blob_path(digest))
        return None if info is None or info.is_dir else info.size

    def has_blob(self, name: str, digest: str) -> bool:
        return (self.driver.stat(self.layer_link(name, digest)) is not None
                and self.blob_size(digest) is not None)

    def linked_blob_size(self, name: str, digest: str) -> int:
        """Size of a blob of the repository; BLOB_UNKNOWN if it is not one."""
        if self.driver.stat(self.layer_link(name, digest)) is None:
            raise E.blob_unknown(digest)
        size = self.blob_size(digest)
        if size is None:
            raise E.blob_unknown(digest)
        return size

    def link_blob(self, name: str, digest: str) -> None:
        self.driver.put_content(self.layer_link(name, digest), digest.encode())

    def mount(self, name: str, digest: str, source: str | None, anywhere: bool) -> bool:
        """Link a blob of ``source`` (or, with ``anywhere``, any blob) into ``name``."""
        with self.gc_lock(shared=True):
            if source is not None:
                ok = self.has_blob(source, digest)
            else:
                ok = anywhere and self.blob_size(digest) is not None
            if ok:
                self.refresh_blob(digest)  # a gc that scanned before this keeps it
                self.link_blob(name, digest)
            return ok

    def unlink_blob(self, name: str, digest: str) -> bool:
        return self.driver.delete(self.layer_link(name, digest))

    def open_blob(self, digest: str, offset: int = 0) -> BinaryIO:
        return self.driver.reader(blob_path(digest), offset)

    def local_blob_path(self, digest: str) -> str | None:
        return self.driver.local_path(blob_path(digest))

    def put_blob_bytes(self, digest: str, data: bytes) -> None:
        if self.blob_size(digest) is None:
            self.driver.put_content(blob_path(digest), data)
        else:
            self.refresh_blob(digest)

    def refresh_blob(self, digest: str) -> None:
        """Restart gc's grace period for a blob that is about to be named again."""
        try:
            self.driver.touch(blob_path(digest))
        except PathNotFound:
            pass

    # --- manifests ---------------------------------------------------------

    def resolve(self, name: str, tag: str | None, digest: str | None) -> str:
        """The digest a reference names in the repository; MANIFEST_UNKNOWN if none."""
        if digest is None:
            try:
                digest = self.driver.get_content(self.tag_path(name, tag), 256).decode()
            except PathNotFound:
                raise E.manifest_unknown(tag) from None
            if not _digest.is_valid(digest):
                raise E.manifest_unknown(tag)
        if self.driver.stat(self.revision_link(name, digest)) is None:
            raise E.manifest_unknown(tag or digest)
        return digest

    def manifest_media_type(self, name: str, digest: str) -> str:
        try:
            return self.driver.get_content(self.revision_link(name, digest), 1024).decode()
        except PathNotFound:
            raise E.manifest_unknown(digest) from None

    def get_manifest(self, name: str, tag: str | None, digest: str | None) -> tuple[str, str, bytes]:
        """(digest, media type, exact bytes) of a manifest."""
        digest = self.resolve(name, tag, digest)
        media_type = self.manifest_media_type(name, digest)
        try:
            data = self.driver.get_content(blob_path(digest))
        except PathNotFound:
            raise E.manifest_unknown(tag or digest) from None
        return digest, media_type, data

    def missing_references(self, name: str, pushed: PushedManifest) -> list[str]:
        """Blobs and child manifests the manifest names that the repository lacks.

        Those that exist have their link touched, so that a gc running now
        keeps them (its grace period counts from the link's time).
        """
        missing = []
        for digest in pushed.blobs + pushed.children:
            for link in (self.layer_link(name, digest), self.revision_link(name, digest)):
                if self.driver.stat(link) is not None and self.blob_size(digest) is not None:
                    try:
                        self.driver.touch(link)
                    except PathNotFound:
                        continue
                    break
            else:
                missing.append(digest)
        return missing

    def publish_manifest(self, name: str, digest: str, data: bytes, pushed: PushedManifest,
                         tag: str | None) -> list[str]:
        """Store a pushed manifest if all it references is there; else what is missing.

        Blocking (locks, fsync): run it off the event loop.
        """
        with self.gc_lock(shared=True), self.manifest_lock(name):
            missing = self.missing_references(name, pushed)
            if not missing:
                self.put_manifest(name, digest, data, pushed, tag)
            return missing

    def put_manifest(self, name: str, digest: str, data: bytes, pushed: PushedManifest,
                     tag: str | None) -> None:
        """The writes of a manifest push; the caller holds the locks (see publish_manifest)."""
        self.put_blob_bytes(digest, data)
        self.driver.put_content(self.revision_link(name, digest), pushed.media_type.encode())
        if pushed.subject is not None:
            entry = referrer_descriptor(pushed, digest, len(data))
            path = f"{self.referrers_dir(name, pushed.subject.digest)}/{digest.replace(':', '-')}"
            self.driver.put_content(path, json.dumps(entry, separators=(",", ":")).encode())
        if tag is not None:
            self.driver.put_content(self.tag_path(name, tag), digest.encode())

    def delete_tag(self, name: str, tag: str) -> None:
        with self.manifest_lock(name):
            if not self.driver.delete(self.tag_path(name, tag)):
                raise E.manifest_unknown(tag)

    def delete_manifest(self, name: str, digest: str) -> None:
        with self.manifest_lock(name):
            self._delete_manifest(name, digest)

    def _delete_manifest(self, name: str, digest: str) -> None:
        _, _, data = self.get_manifest(name, None, digest)
        for tag in self.tags(name):
            try:
                if self.driver.get_content(self.tag_path(name, tag), 256).decode() == digest:
                    self.driver.delete(self.tag_path(name, tag))
            except PathNotFound:
                pass
        subject = _subject_of(data)
        if subject is not None and _digest.is_valid(subject):
            self.driver.delete(f"{self.referrers_dir(name, subject)}/{digest.replace(':', '-')}")
        self.driver.delete(self.revision_link(name, digest))

    def tags(self, name: str) -> list[str]:
        # temporary files of atomic writes start with "." and never match the tag grammar
        return [t for t in self.driver.list(f"{REPOS}/{name}/_manifests/tags") if is_tag(t)]

    def revisions(self, name: str) -> list[str]:
        base = f"{REPOS}/{name}/_manifests/revisions"
        return [f"{alg}:{enc}" for alg in self.driver.list(base)
                for enc in self.driver.list(f"{base}/{alg}") if _digest.is_valid(f"{alg}:{enc}")]

    def layers(self, name: str) -> list[str]:
        base = f"{REPOS}/{name}/_layers"
        return [f"{alg}:{enc}" for alg in self.driver.list(base)
                for enc in self.driver.list(f"{base}/{alg}") if _digest.is_valid(f"{alg}:{enc}")]

    # --- referrers ---------------------------------------------------------

    def referrers(self, name: str, subject: str) -> list[dict[str, Any]]:
        """Descriptors of the repository's manifests whose subject is ``subject``."""
        found: dict[str, dict[str, Any]] = {}
        base = self.referrers_dir(name, subject)
        for entry in self.driver.list(base):
            if entry.startswith("."):
                continue  # a write in progress
            try:
                desc = json.loads(self.driver.get_content(f"{base}/{entry}", 1 << 20))
            except (PathNotFound, ValueError):
                continue
            if isinstance(desc, dict) and self._is_manifest(name, desc.get("digest")):
                found[desc["digest"]] = desc
        for desc in self._tag_schema_referrers(name, subject):
            found.setdefault(desc["digest"], desc)
        return sorted(found.values(), key=lambda d: d["digest"])

    def _is_manifest(self, name: str, digest: Any) -> bool:
        return (isinstance(digest, str) and _digest.is_valid(digest)
                and self.driver.stat(self.revision_link(name, digest)) is not None)

    def _tag_schema_referrers(self, name: str, subject: str) -> list[dict[str, Any]]:
        """Entries of an index that a client pushed to the ``<alg>-<ref>`` fallback tag."""
        algorithm, encoded = _digest.parse(subject)
        try:
            _, _, data = self.get_manifest(name, f"{algorithm}-{encoded[:64]}", None)
            doc = json.loads(data)
        except (E.ApiError, ValueError):
            return []
        out = []
        for desc in doc.get("manifests") or [] if isinstance(doc, dict) else []:
            if isinstance(desc, dict) and self._is_manifest(name, desc.get("digest")):
                try:
                    child = self.driver.get_content(blob_path(desc["digest"]), 4 << 20)
                except PathNotFound:
                    continue
                if _subject_of(child) == subject:
                    out.append(desc)
        return out

    # --- uploads -----------------------------------------------------------

    def upload_data(self, name: str, uuid: str) -> str:
        return f"{self.uploads_dir(name)}/{uuid}/data"

    def upload_exists(self, name: str, uuid: str) -> bool:
        return self.driver.stat(self.upload_data(name, uuid)) is not None

    def uploads(self, name: str) -> list[str]:
        return self.driver.list(self.uploads_dir(name))


def _subject_of(data: bytes) -> str | None:
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    subject = doc.get("subject") if isinstance(doc, dict) else None
    if isinstance(subject, dict) and isinstance(subject.get("digest"), str):
        return subject["digest"]
    return None

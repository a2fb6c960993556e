"""What a layer compressed to before, so that copying it again costs no compression.

Like containers/image's blob info cache: after a copy compresses (or decompresses)
blob X into blob Y, the pair is remembered; the next copy of X that wants the same
compression first asks the destination for Y and, if it is there, skips X entirely.
Any gzip (zstd, plain) form of X is a valid layer for X's diff_id, so the pair stays
true whichever compressor made Y. The cache is an sqlite file under
``$XDG_CACHE_HOME/ocibox`` (``~/.cache/ocibox``); it is only a hint, and every
failure to read or write it is ignored.
"""

from __future__ import annotations

import contextlib
import os

from .. import digest as _digest


def _path() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ocibox", "blob-info.sqlite")


class BlobInfoCache:
    def __init__(self, path: str | None = None) -> None:
        self.path = path or _path()
        self._db = None

    def _conn(self):
        if self._db is None:
            import sqlite3

            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            db = sqlite3.connect(self.path, timeout=5, isolation_level=None, check_same_thread=False)
            db.execute("CREATE TABLE IF NOT EXISTS transformed (src TEXT NOT NULL, want TEXT NOT NULL, "
                       "digest TEXT NOT NULL, size INTEGER NOT NULL, PRIMARY KEY (src, want))")
            self._db = db
        return self._db

    def get(self, src: str, want: str) -> tuple[str, int] | None:
        """(digest, size) of ``src`` compressed as ``want`` (or "none"), if known."""
        with contextlib.suppress(Exception):
            row = self._conn().execute("SELECT digest, size FROM transformed WHERE src = ? AND want = ?",
                                       (src, want)).fetchone()
            if row and _digest.is_valid(row[0]) and isinstance(row[1], int) and row[1] >= 0:
                return row[0], row[1]
        return None

    def put(self, src: str, want: str, dig: str, size: int) -> None:
        with contextlib.suppress(Exception):
            self._conn().execute("INSERT OR REPLACE INTO transformed VALUES (?, ?, ?, ?)", (src, want, dig, size))

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(Exception):
                self._db.close()
            self._db = None

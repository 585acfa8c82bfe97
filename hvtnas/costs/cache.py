"""A persistent cache of measured costs, so a search never measures the same architecture twice.

Keys are SHA-256 hashes of canonical JSON: the architecture config (fields that cannot change a
cost, such as its name or drop-path rate, left out), what was measured, and the measurement
settings (for latency also the device name, torch version and thread count). Values are JSON.
SQLite in WAL mode lets several worker processes on one machine share the file. Each thread keeps
one connection, and commits do not wait for the disk (``synchronous=NORMAL``: a crash can lose the
last entries, never corrupt the file; a lost entry is measured again).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from hvtnas.config import ArchConfig, canonical_config

log = logging.getLogger(__name__)
SCHEMA_VERSION = 2  # bump when a cost's definition changes, so stale entries are not reused
# 2: einsum counted exactly, linear interpolation counted (pooling_attention's FLOPs changed)


def default_cache_path() -> Path:
    root = os.environ.get("HVTNAS_CACHE_DIR") or Path.home() / ".cache" / "hvtnas"
    return Path(root) / "costs.sqlite"


def cost_key(kind: str, cfg: ArchConfig, settings: dict[str, Any]) -> str:
    payload = {"schema": SCHEMA_VERSION, "kind": kind, "config": canonical_config(cfg), "settings": settings}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class CostCache:
    """A cache is a speed-up, never a reason to fail: a corrupt cache file is moved aside
    (``costs.sqlite.corrupt-<time>``) and rebuilt, and a cache that cannot be used at all (no
    permission, a full disk) is bypassed; each with one warning naming the file and the cause."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_cache_path()
        self.disabled = False
        try:
            self._create()
        except (sqlite3.OperationalError, OSError) as err:  # no permission, locked, a full disk
            self._disable(err)
        except sqlite3.DatabaseError as err:  # not a database, a malformed file: rebuild it
            self._rebuild(err)
        except sqlite3.Error as err:
            self._disable(err)

    def _create(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS costs (key TEXT PRIMARY KEY, kind TEXT, value TEXT, created REAL)"
            )
            db.execute("SELECT COUNT(*) FROM costs").fetchone()

    def _rebuild(self, err: Exception) -> None:
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            for suffix in ("-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            os.replace(self.path, aside)
            self._create()
        except (sqlite3.Error, OSError) as again:
            self._disable(again)
            return
        log.warning(
            "warning: cost cache %s was unreadable (%s): moved to %s, starting afresh", self.path, err, aside
        )
        return True

    def _disable(self, err: Exception) -> None:
        if not self.disabled:
            log.warning("warning: cost cache %s cannot be used (%s): measuring without it", self.path, err)
        self.disabled = True

    def _connect(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=60)
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db  # ``with db:`` commits (or rolls back) without closing it

    def get(self, key: str) -> Any | None:
        if self.disabled:
            return None
        try:
            row = self._connect().execute("SELECT value FROM costs WHERE key = ?", (key,)).fetchone()
            return None if row is None else json.loads(row[0])
        except (sqlite3.Error, OSError, ValueError) as err:  # a corrupt entry or file: measure again
            self._disable(err)
            return None

    def put(self, key: str, kind: str, value: Any) -> None:
        if self.disabled:
            return
        try:
            with self._connect() as db:
                db.execute(
                    "INSERT OR REPLACE INTO costs (key, kind, value, created) VALUES (?, ?, ?, ?)",
                    (key, kind, json.dumps(value), time.time()),
                )
        except (sqlite3.Error, OSError) as err:  # a full disk: the result is kept, just not cached
            self._disable(err)

    def __len__(self) -> int:
        if self.disabled:
            return 0
        return self._connect().execute("SELECT COUNT(*) FROM costs").fetchone()[0]

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
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from hvtnas.config import ArchConfig

SCHEMA_VERSION = 2  # bump when a cost's definition changes, so stale entries are not reused
# 2: einsum counted exactly, linear interpolation counted (pooling_attention's FLOPs changed)


def default_cache_path() -> Path:
    root = os.environ.get("HVTNAS_CACHE_DIR") or Path.home() / ".cache" / "hvtnas"
    return Path(root) / "costs.sqlite"


def canonical_config(cfg: ArchConfig) -> dict[str, Any]:
    data = cfg.to_dict()
    data.pop("name", None)
    data.pop("metadata", None)
    data.pop("drop_path_rate", None)  # regularisation only: no effect on any cost
    data["head"].pop("dropout", None)
    return data


def cost_key(kind: str, cfg: ArchConfig, settings: dict[str, Any]) -> str:
    payload = {"schema": SCHEMA_VERSION, "kind": kind, "config": canonical_config(cfg), "settings": settings}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class CostCache:
    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS costs (key TEXT PRIMARY KEY, kind TEXT, value TEXT, created REAL)"
            )

    def _connect(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=60)
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db  # ``with db:`` commits (or rolls back) without closing it

    def get(self, key: str) -> Any | None:
        with self._connect() as db:
            row = db.execute("SELECT value FROM costs WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, kind: str, value: Any) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO costs (key, kind, value, created) VALUES (?, ?, ?, ?)",
                (key, kind, json.dumps(value), time.time()),
            )

    def __len__(self) -> int:
        with self._connect() as db:
            return db.execute("SELECT COUNT(*) FROM costs").fetchone()[0]

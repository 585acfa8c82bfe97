"""Keeping a run's storage readable after crashes: checks and repairs done when a study is opened.

- A **journal file** (``journal.log``) is a list of JSON records, one a line, appended under a
  lock. A process killed (or a machine losing power) during an append leaves a torn last record;
  Optuna would append after it and then fail to read the whole file. ``repair_journal`` cuts the
  torn bytes off (keeping them in ``journal.log.torn-<time>`` beside it, with a warning): every
  complete record, so every completed trial, is kept.
- An **SQLite file** that is empty (0 bytes: a crash while it was being created) or is not an
  SQLite database is refused with the file and the cause instead of silently starting a new study.
- ``failure_summary``: the one line a run ends with when every trial it ran failed.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.trial import FrozenTrial, TrialState

from hvtnas.errors import HvtnasError

if TYPE_CHECKING:
    from hvtnas.search.study import SearchSpec

log = logging.getLogger(__name__)
SQLITE_HEADER = b"SQLite format 3\x00"
_RECORD_START = b'{"op_code"'  # how every record of Optuna's journal begins


class StorageError(HvtnasError):
    """A study's storage cannot be used as it is (empty, not a database, unreadable)."""


def check_sqlite_file(path: Path) -> None:
    """Refuse an existing ``study.db`` that cannot hold a study, naming the file and the cause."""
    if not path.exists():
        return
    try:
        with open(path, "rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except OSError as err:
        raise StorageError(f"cannot open storage {path}: cannot read: {err.strerror or err}") from None
    if not header:
        raise StorageError(
            f"cannot open storage {path}: empty (0 bytes; a crash while the study was being created?): "
            "it holds no study. Delete it to start the study afresh, or restore it from a copy"
        )
    if header != SQLITE_HEADER:
        raise StorageError(
            f"cannot open storage {path}: not an SQLite database (it starts with {header[:8]!r})"
        )


def repair_journal(path: Path) -> Path | None:
    """Cut a torn tail (and any torn record an older hvtnas appended after) off a journal file.

    Runs under the journal's own lock, so no worker appends meanwhile. Returns the file the
    removed bytes were saved to, or None when the journal was whole."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    from optuna.storages.journal import JournalFileSymlinkLock
    from optuna.storages.journal._file import get_lock_file

    with get_lock_file(JournalFileSymlinkLock(str(path))):
        data = path.read_bytes()
        kept: list[bytes] = []
        torn: list[bytes] = []
        for line in data.splitlines(keepends=True):
            if line.endswith(b"\n") and _is_record(line):
                kept.append(line)
                continue
            # a torn record, possibly with a whole record appended right after it
            start = line.rfind(_RECORD_START)
            while start > 0 and not (line.endswith(b"\n") and _is_record(line[start:])):
                start = line.rfind(_RECORD_START, 0, start)
            if start > 0:
                torn.append(line[:start])
                kept.append(line[start:])
            else:
                torn.append(line)
        if not torn:
            return None
        backup = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}")
        backup.write_bytes(b"".join(torn))
        tmp = path.with_name(f".{path.name}.repair")
        tmp.write_bytes(b"".join(kept))
        os.replace(tmp, path)
    log.warning(
        "warning: %s: removed %d torn bytes (a write cut short by a crash); every complete record is "
        "kept, the removed bytes are in %s",
        path,
        sum(map(len, torn)),
        backup,
    )
    return backup


def _is_record(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def failure_summary(study: optuna.Study, trials: list[FrozenTrial]) -> str | None:
    """When every one of ``trials`` (those a run finished) failed: one line with the count and
    the most frequent reason, else None."""
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]
    if not finished or any(t.state != TrialState.FAIL for t in finished):
        return None
    reasons = [str(t.user_attrs.get("reason") or "no reason recorded") for t in finished]
    # reasons that differ only in numbers (seconds, trial numbers) are one reason
    kinds = collections.Counter(re.sub(r"\d+(\.\d+)?", "#", r) for r in reasons)
    kind, count = kinds.most_common(1)[0]
    reason = next(r for r in reasons if re.sub(r"\d+(\.\d+)?", "#", r) == kind)
    return (
        f"all {len(finished)} trials of this run of study {study.study_name!r} failed; "
        f"{'the reason' if count == len(finished) else f'most often ({count}x)'}: {reason}"
    )


def check_data(spec: SearchSpec) -> None:
    """Refuse a search whose dataset file or folder does not exist, before anything is written
    (otherwise every trial would fail on it)."""
    data = spec.experiment.data
    if data.path is None or data.path.exists() or data.download:
        return
    from hvtnas.config import _line_for, load_yaml_with_lines

    _, lines = load_yaml_with_lines(spec.text, str(spec.path))
    line = _line_for(("experiment", "data", "path"), lines)
    where = f"{spec.path}:{line}" if line else str(spec.path)
    relative = "" if data.path.is_absolute() else f" (relative to the current folder {Path.cwd()})"
    raise StorageError(f"{where}: experiment.data.path: {data.path}: no such file or folder{relative}")

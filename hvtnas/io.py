"""Reading input files and writing results safely.

- ``read_text``: a config file as text, or one clear line (no such file, a folder, no permission,
  too large, binary, not UTF-8) instead of a traceback;
- ``atomic_write_text``: write to a temporary file next to the target, then rename it over the
  target, so a crash (kill -9, power loss) leaves the old file or the new one, never a torn one;
- ``check_name``: names that become file or folder names (a study, an architecture) may not
  climb out of their folder (``../``) or hide (``.x``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
from pathlib import Path

from hvtnas.errors import ConfigError, HvtnasError

MAX_CONFIG_BYTES = 4 * 2**20  # a hand-written config is a few KiB; this refuses data files passed by mistake
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+=@,-]*$")


def read_text(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of a config file, or a ``ConfigError`` with one line saying why not."""
    path = Path(path)
    try:
        if path.is_dir():
            raise ConfigError([f"{path}: is a folder, not a {what}"])
        if not path.exists():
            raise ConfigError([f"{path}: no such file"])
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(
                [f"{path}: {size:,} bytes is too large for a {what} (limit {MAX_CONFIG_BYTES:,} bytes)"]
            )
        data = path.read_bytes()
    except OSError as err:  # permission denied, I/O error, a dangling link
        raise ConfigError([f"{path}: cannot read: {err.strerror or err}"]) from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError([f"{path}: UTF-16 text; save the {what} as UTF-8"])
    if b"\x00" in data:
        raise ConfigError([f"{path}: binary data (NUL bytes), not a YAML {what}"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ConfigError(
            [f"{path}:{line}: not UTF-8 text (byte {data[err.start]:#04x}); save the {what} as UTF-8"]
        ) from None
    return text.removeprefix("\ufeff")  # a UTF-8 byte-order mark is harmless


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise write_error(path, err) from None
        raise
    return path


def write_error(path: str | Path, err: OSError) -> HvtnasError:
    """One line naming the file and the cause of a failed write (a full disk, no permission)."""
    cause = err.strerror or str(err)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        cause += " (free some space and run the command again: nothing completed is lost)"
    error = HvtnasError(f"cannot write {path}: {cause}")
    error.exit_code = 1
    return error


def check_name(name: str, what: str) -> str:
    """``name`` if it is safe as a file or folder name, else a one-line error saying why."""
    if not _SAFE_NAME.match(name) or name in (".", ".."):
        raise HvtnasError(
            f"{what} {name!r} cannot name a file or folder: use letters, digits and . _ - "
            "(not starting with '.', no '/')"
        )
    return name


def safe_file_name(name: str) -> str:
    """``name`` with every character that is not safe in a file name replaced by ``_``."""
    cleaned = re.sub(r"[^A-Za-z0-9._+=@,-]", "_", name).lstrip(".")
    return cleaned or "unnamed"

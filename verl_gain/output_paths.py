"""Where a command will write, checked before it does any work (before a model loads, before a file is touched).

A command that loads a model for a minute and then finds that ``--out`` is a folder, that its parent is a file, or
that the place is read-only has wasted the minute and may have left half a result behind. ``check_output_file`` and
``check_output_dir`` refuse those cases up front, in one line that names the path and the fix, and create nothing:
the writability probe is a temporary file in the nearest existing folder, removed at once.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

PROBE_PREFIX = ".verl-gain-write-probe-"


class OutputPathError(ValueError):
    """An output path that cannot be written (one line: which path, why, what to pass instead)."""


def _nearest_existing(path: Path) -> Path:
    """``path`` itself or its closest ancestor that exists (the folder a write would start from)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor or ".")


def _check_writable_folder(folder: Path, option: str, target: Path) -> None:
    """Refuse when ``folder`` (the nearest existing ancestor of ``target``) is a file or cannot take a new file."""
    if not folder.is_dir():
        raise OutputPathError(f"{option} {target}: {folder} is a file, not a folder; pass a path under a folder")
    try:
        handle, probe = tempfile.mkstemp(prefix=PROBE_PREFIX, dir=folder)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise OutputPathError(f"{option} {target}: cannot write in {folder} ({reason}); pass a writable path") from None
    os.close(handle)
    os.unlink(probe)


def check_output_file(path: str | os.PathLike, option: str = "--out") -> Path:
    """``path`` as a file a command can create or replace: not a folder, under a folder that takes new files."""
    target = Path(path).expanduser()
    if target.is_dir():
        raise OutputPathError(f"{option} {target} is a folder; give a file path, e.g. {target / 'scores.parquet'}")
    _check_writable_folder(_nearest_existing(target.parent), option, target)
    return target


def check_output_dir(path: str | os.PathLike, option: str = "--out-dir") -> Path:
    """``path`` as a folder a command can create (or fill): not a file, under a folder that takes new entries."""
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise OutputPathError(f"{option} {target} is a file, not a folder; pass a folder path")
    _check_writable_folder(_nearest_existing(target), option, target)
    return target

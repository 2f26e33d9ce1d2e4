"""``data.train_files`` read on the driver as verl reads it in ``RLHFDataset``: one path or a list, HDFS paths copied
to this machine first (verl's ``copy_to_local``, as ``RLHFDataset._download`` does), then ``.parquet``, ``.json`` or
``.jsonl`` files (``RLHFDataset._read_files_and_tokenize`` picks its reader by that ending, case-sensitive).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

VERL_DATA_SUFFIXES = (".parquet", ".json", ".jsonl")
"""The endings verl's ``RLHFDataset`` reads (anything else fails inside its workers)."""


class DataFilesError(ValueError):
    """A ``data.*_files`` entry the driver (and verl) cannot read (one line: what to give instead)."""


def as_list(files: Any) -> list[str]:
    """``data.train_files`` (one path, or a list / ListConfig of paths) as a list of strings."""
    return [str(files)] if isinstance(files, (str, Path)) else [str(f) for f in files]


def is_remote(path: str) -> bool:
    """Whether verl copies ``path`` before reading it (``verl.utils.fs.is_non_local``: HDFS)."""
    from verl_gain.trainer.compat import is_non_local

    return bool(is_non_local(path))


def check_data_file_types(files: Any, key: str = "data.train_files") -> None:
    """Refuse a file verl's ``RLHFDataset`` would not read (by its ending), wherever it is."""
    for path in as_list(files):
        if not path.endswith(VERL_DATA_SUFFIXES):
            raise DataFilesError(
                f"{key}: {path} is not a file verl reads; verl's RLHFDataset reads {', '.join(VERL_DATA_SUFFIXES)} "
                "files (by that ending): convert it, e.g. with pandas to parquet"
            )


def local_data_files(files: Any, key: str = "data.train_files") -> list[str]:
    """The local files behind ``files``, each one verl reads (HDFS paths copied here as verl copies them).

    Raises:
        DataFilesError: a file verl would not read (its ending), or one that is not there (after the copy).
    """
    from verl_gain.trainer.compat import copy_to_local

    check_data_file_types(files, key)
    local = []
    for path in as_list(files):
        copied = str(copy_to_local(path)) if is_remote(path) else str(Path(path).expanduser())
        if not Path(copied).is_file():
            where = f" (copied from {path}; is the hdfs command on PATH?)" if is_remote(path) else ""
            raise DataFilesError(f"{key}: {copied} does not exist{where}")
        local.append(copied)
    return local

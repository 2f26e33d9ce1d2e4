"""GAIN scores, in one place: reading the training data, the scores table, keys by dataset position, fingerprints.

The offline scorer (``verl-gain score``), the trainer's pre-pass and the trainer's start-up checks all go through
this module, so the three see the same rows: one reader of verl-format data files (``read_data_file``, the formats
verl's ``RLHFDataset`` accepts), one table builder (``scores_table``), one mapping from a scores file to training
rows (``keys_for_rows``).

A scores file is only meaningful next to the dataset it was computed from (positions must line up, docs/method.md,
"Failure modes": "dataset positions misaligned with the score file") and for the model that computed it ("rankings
that do not depend on the model"). The fingerprint records both, and every reader checks it.

Table columns (one row per scored prompt, sorted by ``position``):

    position    int64    row of the prompt in the dataset file (0-based)
    index       Int64    the row's ``extra_info.index`` when present (else null)
    intra       float64  C_intra, mean pairwise cosine between question tokens
    inter       float64  C_inter, mean cosine between question tokens and fixed-part tokens
    key         float64  intra + inter_weight * inter (the ranking key; higher = drawn earlier), an undefined term
                         (intra with < 2 question tokens, inter without fixed-part tokens) replaced by the file's mean
                         of that term (``verl_gain.core.angles.impute_undefined_terms``)
    n_fixed     int64    fixed-part tokens (system prompt, few-shot turns, template, generation prompt)
    n_question  int64    question tokens
    mean_cosine float64  mean cosine over all distinct pairs of prompt tokens (files written before it existed lack it)
    n_tokens    int64    all prompt tokens (n_fixed + n_question)

(``intra`` .. ``mean_cosine`` are ``verl_gain.core.angles.STAT_FIELDS``, in that order; ``intra`` and ``inter``
keep the raw value, 0, where undefined: the counts tell.)

Fingerprint (JSON in the parquet schema metadata under ``FINGERPRINT_KEY``)::

    {"format": 1,
     "dataset":  {"sha256", "rows", "prompt_key"},           # dataset_fingerprint()
     "model":    {"name", "config_sha256", "weights_sha256", "tokenizer_sha256"},  # model_identity(); name
                                                                                 # is descriptive, not compared
     "capture":  {"spec", "module", "hook_on"},               # CapturePoint.describe()
     "template": {"sha256", "apply_chat_template_kwargs", "tools_sha256"},
     "config":   {"inter_weight", "max_length", "skip_long", "dtype"}}

- Dataset hash: SHA-256 over the canonical JSON of every row's prompt messages, in row order (a re-saved file or a
  new unrelated column does not change it; any edit, reordering, added or dropped row does).
- Model identity: the SHA-256 of ``config.json`` (minus ``_name_or_path``/``transformers_version``) and, for every
  weights file, its name, size and the SHA-256 of its first and last MiB (``WEIGHTS_SAMPLE_BYTES``): that covers the
  safetensors header (tensor names, shapes, dtypes) and real weights at both ends, reads 2 MiB per file instead of
  gigabytes, and changes for any fine-tuned checkpoint in practice. The tokenizer files are hashed in full.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from verl_gain.core.angles import STAT_FIELDS, TermMeans, defined_terms, ranking_keys
from verl_gain.scoring.errors import ScoringInputError
from verl_gain.scoring.segments import to_plain

DATA_SUFFIXES = (".parquet", ".json", ".jsonl")
"""The data file types verl's ``RLHFDataset`` reads (parquet; JSON lines or a JSON list, as ``datasets``' json
loader reads both under either suffix)."""
FINGERPRINT_KEY = b"verl_gain.fingerprint"
INFO_KEY = b"verl_gain.info"
FORMAT_VERSION = 1
SCORE_COLUMNS = ("position", "index", *STAT_FIELDS, "n_tokens")
COUNT_COLUMNS = ("n_fixed", "n_question", "n_tokens")
OPTIONAL_COLUMNS = ("mean_cosine",)
"""Columns a scores file may lack (files written before they existed); everything reading them checks."""
"""Integer columns (token counts); the other statistics are float64."""
WEIGHTS_SAMPLE_BYTES = 1 << 20
WEIGHTS_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "tokenizer.model")
VOLATILE_CONFIG_KEYS = ("_name_or_path", "transformers_version")


class FingerprintMismatch(ScoringInputError):
    """A scores file (or chunk) does not belong to the dataset/model/config it is used with."""


# ----------------------------------------------------------------------------------------------------- the data
def read_data_file(path: str | os.PathLike) -> pd.DataFrame:
    """A verl-format dataset file as a DataFrame: parquet, JSON lines or a JSON list of rows (``DATA_SUFFIXES``)."""
    path = Path(path)
    if not path.is_file():
        raise ScoringInputError(f"data file {str(path)!r} does not exist; give a verl-format .parquet or .json file")
    suffix = path.suffix.lower()
    if suffix not in DATA_SUFFIXES:
        raise ScoringInputError(
            f"data file {path.name!r} has an unsupported type; use one of {', '.join(DATA_SUFFIXES)}"
        )
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        text = path.read_text(encoding="utf-8")
        if suffix == ".json" and text.lstrip().startswith("["):
            rows = json.loads(text)
        else:
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    except (ValueError, OSError, RecursionError, pa.ArrowException) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ScoringInputError(f"cannot read {path.name}: {reason}") from None
    _check_json_rows(rows, path)
    if not rows:
        raise ScoringInputError(f"data file {path.name} holds no rows; give a file with verl-format rows")
    return pd.DataFrame(rows)


def _check_json_rows(rows: list[Any], path: Path) -> None:
    """Every row of a JSON data file is an object whose text is valid Unicode (JSON can spell a lone surrogate,
    ``\\ud800``, that no UTF-8 encoder, tokenizer or parquet writer accepts later)."""
    for number, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ScoringInputError(
                f"{path.name} row {number} is a {type(row).__name__}, not an object with verl's fields (prompt, ...)"
            )
        try:
            json.dumps(row, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as err:
            raise ScoringInputError(
                f"{path.name} row {number} holds a lone surrogate ({err.object[err.start : err.end]!r}), which is not "
                "valid Unicode text: fix the escape (a \\ud800-\\udfff half of a pair) in the file"
            ) from None
        except (ValueError, RecursionError) as err:
            raise ScoringInputError(f"{path.name} row {number} cannot be read: {err}") from None


def read_data_files(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> pd.DataFrame:
    """Several data files concatenated in order, as verl concatenates ``data.train_files``."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not paths:
        raise ScoringInputError("no data file given")
    frames = [read_data_file(path) for path in paths]
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def count_rows(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> int:
    """Rows in data files (parquet from its metadata, without reading the table)."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    total = 0
    for path in paths:
        if str(path).lower().endswith(".parquet") and Path(path).is_file():
            try:
                total += pq.ParquetFile(path).metadata.num_rows
                continue
            except (OSError, ValueError, pa.ArrowException) as err:
                raise ScoringInputError(f"cannot read {path}: {str(err).splitlines()[0]}") from None
        total += len(read_data_file(path))
    return total


def prompt_column(frame: pd.DataFrame, prompt_key: str) -> list[Any]:
    """The prompt column, refused with the available columns when missing."""
    if prompt_key not in frame.columns:
        raise ScoringInputError(
            f"column {prompt_key!r} not found (columns: {', '.join(map(str, frame.columns))}); "
            "pass --prompt-key with the column that holds the chat messages"
        )
    if len(frame) == 0:
        raise ScoringInputError("the dataset has no rows")
    return frame[prompt_key].tolist()


def data_files_prompts(paths: str | os.PathLike | Sequence[str | os.PathLike], prompt_key: str) -> list[Any]:
    """The prompt column of data files concatenated (what ``verl-gain score --data`` sees of verl's training files)."""
    return prompt_column(read_data_files(paths), prompt_key)


def extra_info_index(frame: pd.DataFrame) -> list[int | None]:
    """``extra_info.index`` per row (verl's ``RLHFDataset`` reads it into ``index``), ``None`` where absent."""
    if "extra_info" not in frame.columns:
        return [None] * len(frame)
    out: list[int | None] = []
    for info in frame["extra_info"].tolist():
        value = info.get("index") if isinstance(info, dict) else None
        out.append(int(value) if isinstance(value, (int, np.integer)) else None)
    return out


# ---------------------------------------------------------------------------------------------- fingerprints


def _sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


def prompt_bytes(prompt: Any) -> bytes:
    """The canonical serialisation of one prompt (chat messages, numpy arrays from parquet included) that the
    fingerprints hash: key-sorted JSON of its plain-Python form."""
    return json.dumps(to_plain(prompt), sort_keys=True, ensure_ascii=False, default=str).encode()


def dataset_fingerprint(prompts: Iterable[Any], prompt_key: str = "prompt") -> dict[str, Any]:
    """Fingerprint of a dataset's prompts: ``{"sha256", "rows", "prompt_key"}``.

    Args:
        prompts: the prompt column, one chat-message list per row (numpy arrays from parquet are fine).
        prompt_key: the column name (recorded, not hashed).
    """
    digest = hashlib.sha256()
    rows = 0
    for prompt in prompts:
        digest.update(prompt_bytes(prompt))
        digest.update(b"\x1e")  # record separator: row boundaries are part of the content
        rows += 1
    return {"sha256": digest.hexdigest(), "rows": rows, "prompt_key": prompt_key}


def _file_sample_sha256(path: Path) -> str:
    size = path.stat().st_size
    digest = hashlib.sha256(f"{path.name}:{size}".encode())
    with path.open("rb") as f:
        digest.update(f.read(WEIGHTS_SAMPLE_BYTES))
        if size > WEIGHTS_SAMPLE_BYTES:
            f.seek(max(size - WEIGHTS_SAMPLE_BYTES, WEIGHTS_SAMPLE_BYTES))
            digest.update(f.read())
    return digest.hexdigest()


def model_identity(model_dir: str | os.PathLike, name: str | None = None) -> dict[str, Any]:
    """Identity of a Hugging Face model folder: config hash, sampled weights hash, tokenizer hash (see module doc)."""
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    for key in VOLATILE_CONFIG_KEYS:
        config.pop(key, None)
    weights = sorted(p for p in model_dir.iterdir() if p.is_file() and p.name.endswith(WEIGHTS_SUFFIXES))
    weights_digest = hashlib.sha256()
    for path in weights:
        weights_digest.update(_file_sample_sha256(path).encode())
    tokenizer_digest = hashlib.sha256()
    for file_name in TOKENIZER_FILES:
        path = model_dir / file_name
        if path.is_file():
            tokenizer_digest.update(file_name.encode() + b"\x00" + path.read_bytes())
    return {
        "name": name or model_dir.name,
        "config_sha256": _sha256_json(config),
        "weights_sha256": weights_digest.hexdigest() if weights else None,
        "tokenizer_sha256": tokenizer_digest.hexdigest(),
    }


def _differences(found: Any, expected: Any, path: str = "") -> list[str]:
    if isinstance(found, dict) and isinstance(expected, dict):
        out = []
        for key in expected:
            out += _differences(found.get(key), expected[key], f"{path}.{key}" if path else key)
        return out
    return [] if found == expected else [path]


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text[:12] + "..." if len(text) > 16 and all(c in "0123456789abcdef" for c in text) else text[:60]


DESCRIPTIVE_FIELDS = ("model.name",)
"""Fingerprint fields that describe but do not identify (the same weights under another folder name match)."""


def check_fingerprint(found: dict[str, Any], expected: dict[str, Any], what: str = "scores file") -> None:
    """Raise ``FingerprintMismatch`` if any field given in ``expected`` differs in ``found`` (one line)."""
    diffs = [d for d in _differences(found, expected) if d not in DESCRIPTIVE_FIELDS]
    if not diffs:
        return
    details = "; ".join(
        f"{d}: file has {_short(_lookup(found, d))}, expected {_short(_lookup(expected, d))}" for d in diffs[:3]
    )
    hint = (
        "it was computed from a different dataset (rows changed, reordered, filtered or edited)"
        if any(d.startswith("dataset") for d in diffs)
        else "it was computed with a different model, capture point, chat template or config"
    )
    raise FingerprintMismatch(f"{what} does not match: {hint} ({details}); re-run `verl-gain score`")


def _lookup(tree: dict[str, Any], dotted: str) -> Any:
    for key in dotted.split("."):
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree


# -------------------------------------------------------------------------------------------------- the file
def write_scores(
    path: str | os.PathLike, scores: pd.DataFrame, fingerprint: dict[str, Any], info: dict[str, Any] | None = None
) -> Path:
    """Write a scores table with its fingerprint (and optional run info) atomically (temp file + rename)."""
    path = Path(path)
    missing = [c for c in SCORE_COLUMNS if c not in scores.columns and c not in OPTIONAL_COLUMNS]
    if missing:
        raise ValueError(f"scores table lacks columns {missing}")
    table = pa.Table.from_pandas(scores.reset_index(drop=True), preserve_index=False)
    metadata = dict(table.schema.metadata or {})
    metadata[FINGERPRINT_KEY] = json.dumps({"format": FORMAT_VERSION, **fingerprint}, sort_keys=True).encode()
    if info is not None:
        metadata[INFO_KEY] = json.dumps(info, sort_keys=True, default=str).encode()
    table = table.replace_schema_metadata(metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, tmp)
        tmp.replace(path)
    except BaseException:  # Ctrl-C or a full disk mid-write: no half-written temp file is left behind
        tmp.unlink(missing_ok=True)
        raise
    return path


class UnreadableScoresFile(ScoringInputError):
    """A file that is not a readable scores parquet (empty, truncated, garbage, a folder, no permission)."""


def _unreadable(path: Path, reason: str) -> UnreadableScoresFile:
    return UnreadableScoresFile(
        f"{path} is not a readable scores file ({reason}); delete it (or pass another path) and re-run "
        "`verl-gain score`"
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def read_fingerprint(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """(fingerprint, info) from a scores file's metadata, without reading the table.

    Raises ``FileNotFoundError`` for a missing file, ``UnreadableScoresFile`` (one line naming the file and the fix)
    for anything that is not a readable parquet file, and ``FingerprintMismatch`` for a parquet file without a
    verl-gain fingerprint.
    """
    path = Path(path)
    if path.is_dir():
        raise _unreadable(path, "it is a folder")
    if not path.is_file():
        raise FileNotFoundError(f"scores file {str(path)!r} does not exist; create it with `verl-gain score`")
    if path.stat().st_size == 0:
        raise _unreadable(path, "0 bytes: an interrupted write?")
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, ValueError, pa.ArrowException) as error:
        raise _unreadable(path, f"truncated or not parquet: {_first_line(error)}") from None
    if FINGERPRINT_KEY not in metadata:
        raise FingerprintMismatch(f"{path} is not a verl-gain scores file (no fingerprint); re-run `verl-gain score`")
    try:
        fingerprint = json.loads(metadata[FINGERPRINT_KEY])
        info = json.loads(metadata[INFO_KEY]) if INFO_KEY in metadata else {}
    except (ValueError, UnicodeDecodeError) as error:
        raise _unreadable(path, f"its fingerprint is damaged: {_first_line(error)}") from None
    if not isinstance(fingerprint, dict) or not isinstance(info, dict):
        raise _unreadable(path, "its fingerprint is damaged: not a JSON object")
    return fingerprint, info


def read_scores(
    path: str | os.PathLike, expected: dict[str, Any] | None = None
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """Read a scores file: (table, fingerprint, info); checked against ``expected`` (any subset of fields).

    Example: ``read_scores(p, {"dataset": dataset_fingerprint(df["prompt"])})`` refuses scores of another dataset.
    Errors as ``read_fingerprint``; a table without the score columns is ``UnreadableScoresFile`` too.
    """
    fingerprint, info = read_fingerprint(path)
    if fingerprint.get("format") != FORMAT_VERSION:
        raise FingerprintMismatch(
            f"{path} has scores format {fingerprint.get('format')!r}, this version reads {FORMAT_VERSION}; re-score"
        )
    if expected:
        check_fingerprint(fingerprint, expected, what=f"scores file {path}")
    try:
        table = pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as error:
        raise _unreadable(Path(path), f"its table cannot be read: {_first_line(error)}") from None
    missing = [c for c in SCORE_COLUMNS if c not in table.columns and c not in OPTIONAL_COLUMNS]
    if missing:
        raise _unreadable(Path(path), f"columns {missing} are missing")
    return table, fingerprint, info


# ------------------------------------------------------------------------------------------------- the table
def stats_columns(stats: np.ndarray) -> dict[str, np.ndarray]:
    """``{name: [M]}`` for each of ``STAT_FIELDS`` from ``[M, len(STAT_FIELDS)]`` statistics (token counts as int64)."""
    stats = np.asarray(stats, dtype=np.float64).reshape(-1, len(STAT_FIELDS))
    return {
        name: stats[:, i].astype(np.int64) if name in COUNT_COLUMNS else stats[:, i]
        for i, name in enumerate(STAT_FIELDS)
    }


def scores_table(
    positions: Sequence[int] | np.ndarray,
    indices: Sequence[int | None],
    stats: Mapping[str, np.ndarray],
    n_tokens: Sequence[int] | np.ndarray,
) -> pd.DataFrame:
    """A scores table (``SCORE_COLUMNS``) sorted by position.

    Args:
        positions: ``[M]`` dataset rows scored.
        indices: ``[M]`` their ``extra_info.index`` (``None`` where absent).
        stats: ``{name: [M]}`` for each of ``STAT_FIELDS`` (``stats_columns``, ``score_prompts``).
        n_tokens: ``[M]`` prompt tokens of each row.
    """
    columns: dict[str, Any] = {
        "position": np.asarray(positions, dtype=np.int64),
        "index": pd.array(list(indices), dtype="Int64"),
    }
    for name in STAT_FIELDS:
        columns[name] = np.asarray(stats[name], dtype=np.int64 if name in COUNT_COLUMNS else np.float64)
    columns["n_tokens"] = np.asarray(n_tokens, dtype=np.int64)
    return pd.DataFrame(columns).sort_values("position", kind="stable").reset_index(drop=True)


def column_by_position(scores: pd.DataFrame, column: str, positions: Sequence[int] | np.ndarray) -> np.ndarray:
    """``scores[column]`` (float64) at the given dataset positions.

    Raises ``FingerprintMismatch`` if a requested position has no score (e.g. it was left out by ``--skip-long``).
    """
    wanted = np.asarray(positions, dtype=np.int64)
    table = pd.Series(scores[column].to_numpy(np.float64), index=scores["position"].to_numpy(np.int64))
    missing = np.setdiff1d(wanted, table.index.to_numpy())
    if missing.size:
        raise FingerprintMismatch(
            f"{missing.size} dataset rows have no score (positions {missing[:10].tolist()}"
            f"{' ...' if missing.size > 10 else ''}); they were skipped when scoring: drop them from the dataset "
            "or re-score without --skip-long"
        )
    return table.loc[wanted].to_numpy()


def term_means(scores: pd.DataFrame) -> TermMeans:
    """The table's mean C_intra and C_inter over the prompts where each is defined."""
    return TermMeans.of(
        scores["intra"].to_numpy(np.float64),
        scores["inter"].to_numpy(np.float64),
        scores["n_fixed"].to_numpy(),
        scores["n_question"].to_numpy(),
    )


def table_keys(scores: pd.DataFrame, inter_weight: float) -> np.ndarray:
    """The ranking key of every row of a scores table ``[M]``, undefined terms imputed with the table's means."""
    return ranking_keys(
        scores["intra"].to_numpy(np.float64),
        scores["inter"].to_numpy(np.float64),
        scores["n_fixed"].to_numpy(),
        scores["n_question"].to_numpy(),
        inter_weight,
        term_means(scores),
    )


def degenerate_rows(scores: pd.DataFrame) -> pd.DataFrame:
    """The rows with an undefined term (a question of fewer than 2 tokens, or no fixed part), ranked by imputation."""
    has_intra, has_inter = defined_terms(scores["n_fixed"].to_numpy(), scores["n_question"].to_numpy())
    return scores.loc[~(has_intra & has_inter)]


def key_by_position(scores: pd.DataFrame, num_rows: int, positions: Sequence[int] | None = None) -> np.ndarray:
    """The ranking key per dataset position, ``[num_rows]`` (or for ``positions``), for ``GainController``."""
    return column_by_position(scores, "key", np.arange(num_rows) if positions is None else positions)


def scores_for_rows(
    path: str | os.PathLike,
    rows: Sequence[Any],
    file_prompts: Sequence[Any] | None,
    expected: dict[str, Any],
    inter_weight: float,
) -> pd.DataFrame:
    """The scores of every training row, from a scores file: one table row per training row, in training order.

    The file may describe the training rows themselves (the pre-pass file) or the data file(s) verl loaded them
    from (``verl-gain score --data``), of which verl keeps a subset (``data.filter_overlong_prompts``,
    ``data.train_max_samples``): rows are then matched by prompt content. The ``key`` column is recomputed from the
    file's ``intra`` and ``inter`` with this run's ``inter_weight`` (undefined terms imputed with the file's means).

    Args:
        path: the scores file.
        rows: the prompt of every training row, in dataset order.
        file_prompts: the prompts of the data files concatenated (``read_data_files``), or None.
        expected: fingerprint fields that must match (model, capture point, template); an empty dict checks none.
        inter_weight: w in ``intra + w inter``.

    Returns:
        ``[N]`` rows with the file's columns; ``position`` is the training row.
    """
    table, fingerprint, _ = read_scores(path)
    check_fingerprint(fingerprint, expected, what=f"scores file {path}")
    scored = fingerprint.get("dataset", {})
    if scored.get("sha256") == dataset_fingerprint(rows)["sha256"]:
        positions = np.arange(len(rows))
    elif file_prompts is not None and scored.get("sha256") == dataset_fingerprint(file_prompts)["sha256"]:
        row_of: dict[bytes, int] = {}
        for row, prompt in enumerate(file_prompts):
            row_of.setdefault(hashlib.sha256(prompt_bytes(prompt)).digest(), row)
        positions = np.array([row_of[hashlib.sha256(prompt_bytes(p)).digest()] for p in rows], dtype=np.int64)
    else:
        raise FingerprintMismatch(
            f"scores file {path} was computed from {scored.get('rows')} prompts that are neither the "
            f"{len(rows)} training rows nor data.train_files: score the training file with `verl-gain score`"
        )
    keyed = table.assign(key=table_keys(table, inter_weight))
    column_by_position(keyed, "key", positions)  # raises, naming them, if some positions have no score
    by_position = keyed.set_index("position")
    return by_position.loc[positions].reset_index(drop=True).assign(position=np.arange(len(rows), dtype=np.int64))


def keys_for_rows(
    path: str | os.PathLike,
    rows: Sequence[Any],
    file_prompts: Sequence[Any] | None,
    expected: dict[str, Any],
    inter_weight: float,
) -> np.ndarray:
    """``[N]`` fp64: the ``key`` column of ``scores_for_rows``."""
    return scores_for_rows(path, rows, file_prompts, expected, inter_weight)["key"].to_numpy(np.float64)

"""Scores files: a parquet table of per-prompt angle statistics whose metadata holds a fingerprint.

A scores file is only meaningful next to the dataset it was computed from (positions must line up, gain-rl-method.md
section 5: "dataset positions misaligned with the score file") and for the model that computed it ("rankings that do
not depend on the model"). The fingerprint records both, and every reader checks it.

Table columns (one row per scored prompt, sorted by ``position``):

    position    int64    row of the prompt in the dataset file (0-based)
    index       Int64    the row's ``extra_info.index`` when present (else null)
    intra       float64  C_intra, mean pairwise cosine between question tokens
    inter       float64  C_inter, mean cosine between question tokens and fixed-part tokens
    key         float64  intra + inter_weight * inter (the ranking key; higher = drawn earlier)
    n_fixed     int64    fixed-part tokens (system prompt, few-shot turns, template, generation prompt)
    n_question  int64    question tokens
    n_tokens    int64    all prompt tokens (n_fixed + n_question)

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

Public API: ``dataset_fingerprint``, ``model_identity``, ``write_scores``, ``read_scores`` (checks an expected
fingerprint and raises ``FingerprintMismatch``, one line naming what differs), ``check_fingerprint``,
``key_by_position`` (the ``[N]`` key array a ``GainController`` takes).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from verl_gain.scoring.errors import ScoringInputError

FINGERPRINT_KEY = b"verl_gain.fingerprint"
INFO_KEY = b"verl_gain.info"
FORMAT_VERSION = 1
SCORE_COLUMNS = ("position", "index", "intra", "inter", "key", "n_fixed", "n_question", "n_tokens")
WEIGHTS_SAMPLE_BYTES = 1 << 20
WEIGHTS_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "tokenizer.model")
VOLATILE_CONFIG_KEYS = ("_name_or_path", "transformers_version")


class FingerprintMismatch(ScoringInputError):
    """A scores file (or chunk) does not belong to the dataset/model/config it is used with."""


def _sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


def prompt_bytes(prompt: Any) -> bytes:
    """The canonical serialisation of one prompt (chat messages, numpy arrays from parquet included) that the
    fingerprints hash: key-sorted JSON of its plain-Python form."""
    from verl_gain.scoring.segments import to_plain

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


def write_scores(
    path: str | os.PathLike, scores: pd.DataFrame, fingerprint: dict[str, Any], info: dict[str, Any] | None = None
) -> Path:
    """Write a scores table with its fingerprint (and optional run info) atomically (temp file + rename)."""
    path = Path(path)
    missing = [c for c in SCORE_COLUMNS if c not in scores.columns]
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
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path


def read_fingerprint(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """(fingerprint, info) from a scores file's metadata, without reading the table."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"scores file {str(path)!r} does not exist; create it with `verl-gain score`")
    metadata = pq.read_schema(path).metadata or {}
    if FINGERPRINT_KEY not in metadata:
        raise FingerprintMismatch(f"{path} is not a verl-gain scores file (no fingerprint); re-run `verl-gain score`")
    fingerprint = json.loads(metadata[FINGERPRINT_KEY])
    info = json.loads(metadata[INFO_KEY]) if INFO_KEY in metadata else {}
    return fingerprint, info


def read_scores(
    path: str | os.PathLike, expected: dict[str, Any] | None = None
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """Read a scores file: (table, fingerprint, info); checked against ``expected`` (any subset of fields).

    Example: ``read_scores(p, {"dataset": dataset_fingerprint(df["prompt"])})`` refuses scores of another dataset.
    """
    fingerprint, info = read_fingerprint(path)
    if fingerprint.get("format") != FORMAT_VERSION:
        raise FingerprintMismatch(
            f"{path} has scores format {fingerprint.get('format')!r}, this version reads {FORMAT_VERSION}; re-score"
        )
    if expected:
        check_fingerprint(fingerprint, expected, what=f"scores file {path}")
    return pd.read_parquet(path), fingerprint, info


def key_by_position(scores: pd.DataFrame, num_rows: int, positions: Sequence[int] | None = None) -> np.ndarray:
    """The ranking key per dataset position, ``[num_rows]`` (or for ``positions``), for ``GainController``.

    Raises if a requested position has no score (e.g. it was left out by ``--skip-long``).
    """
    wanted = np.arange(num_rows) if positions is None else np.asarray(positions, dtype=np.int64)
    table = pd.Series(scores["key"].to_numpy(np.float64), index=scores["position"].to_numpy(np.int64))
    missing = np.setdiff1d(wanted, table.index.to_numpy())
    if missing.size:
        raise FingerprintMismatch(
            f"{missing.size} dataset rows have no score (positions {missing[:10].tolist()}"
            f"{' ...' if missing.size > 10 else ''}); they were skipped when scoring: drop them from the dataset "
            "or re-score without --skip-long"
        )
    return table.loc[wanted].to_numpy()

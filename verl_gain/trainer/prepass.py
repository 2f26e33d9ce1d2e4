"""The GAIN pre-pass on the driver: tokenise the training prompts as rollout does, send them through the actor
workers' ``gain_score_prompts`` and collect one row of angle statistics per prompt; and the scores file it leaves
next to the checkpoints (the same format as ``verl-gain score``), or the user's file mapped onto the training rows.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from tensordict import TensorDict
from tqdm import tqdm

from verl_gain.scoring.scores_file import (
    FingerprintMismatch,
    check_fingerprint,
    dataset_fingerprint,
    key_by_position,
    prompt_bytes,
    read_scores,
    write_scores,
)
from verl_gain.scoring.segments import SegmentedPrompt
from verl_gain.trainer.compat import assign_non_tensor
from verl_gain.trainer.engine_capture import SEGMENT_IDS_KEY, STATS_FIELDS, STATS_KEY

SCORES_FILE = "gain_scores.parquet"
"""The pre-pass result, written in ``trainer.default_local_dir`` and reused on resume."""


def prompt_batch(prompts: Sequence[SegmentedPrompt]) -> TensorDict:
    """A no-padding ``TensorDict`` of prompts as verl's ``infer_batch`` takes it (nested ``[b, (j)]`` tensors)."""

    def nested(rows: list[torch.Tensor]) -> torch.Tensor:
        return torch.nested.as_nested_tensor(rows, layout=torch.jagged)

    ids = [torch.tensor(p.input_ids, dtype=torch.long) for p in prompts]
    data = TensorDict(
        {
            "input_ids": nested(ids),
            "position_ids": nested([torch.arange(t.numel()) for t in ids]),
            "loss_mask": nested([torch.zeros_like(t) for t in ids]),
            SEGMENT_IDS_KEY: nested([torch.tensor(p.segment_ids, dtype=torch.long) for p in prompts]),
        },
        batch_size=[len(prompts)],
    )
    assign_non_tensor(data, temperature=1.0, compute_loss=False, calculate_entropy=False)
    return data


def run_prepass(
    worker_group: Any, prompts: Sequence[SegmentedPrompt], batch_size: int, micro_batch_size: int | None = None
) -> np.ndarray:
    """Angle statistics of every prompt through the actor workers.

    Prompts go out longest first in calls of ``batch_size`` (similar lengths per call), each padded by repeating its
    last prompt (the repeats' results are dropped) to a multiple of the data-parallel size, times the per-rank
    micro-batch size when verl splits fixed-size micro-batches (``micro_batch_size``; None with dynamic batch size).

    Returns:
        ``[N, len(STATS_FIELDS)]`` fp64, in the order of ``prompts``.
    """
    multiple = (max(worker_group._query_dispatch_info("actor")) + 1) * (micro_batch_size or 1)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    stats = np.full((len(prompts), len(STATS_FIELDS)), np.nan)
    tokens = sum(len(p) for p in prompts)
    with tqdm(total=tokens, desc="GAIN pre-pass (prompt tokens)", unit="tok", unit_scale=True) as progress:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            padded = chunk + [chunk[-1]] * (-len(chunk) % multiple)
            output = worker_group.gain_score_prompts(prompt_batch([prompts[i] for i in padded]))
            stats[chunk] = output[STATS_KEY][: len(chunk)].double().numpy()
            progress.update(sum(len(prompts[i]) for i in chunk))
    if np.isnan(stats).any():
        raise RuntimeError("the GAIN pre-pass returned NaN statistics; this is a bug, please report it")
    return stats


def stats_table(stats: np.ndarray, prompts: Sequence[SegmentedPrompt], index: Sequence[Any]) -> pd.DataFrame:
    """A scores table (``verl_gain.scoring.scores_file`` columns) from pre-pass statistics."""
    column = {name: stats[:, i] for i, name in enumerate(STATS_FIELDS)}
    return pd.DataFrame(
        {
            "position": np.arange(len(prompts), dtype=np.int64),
            "index": pd.array([None if i is None else int(i) for i in index], dtype="Int64"),
            "intra": column["intra"],
            "inter": column["inter"],
            "key": column["key"],
            "n_fixed": column["n_fixed"].astype(np.int64),
            "n_question": column["n_question"].astype(np.int64),
            "n_tokens": np.array([len(p) for p in prompts], dtype=np.int64),
        }
    )


def _prompt_digest(prompt: Any) -> str:
    return hashlib.sha256(prompt_bytes(prompt)).hexdigest()


def training_keys(
    path: str | os.PathLike,
    train_prompts: Sequence[Any],
    file_prompts: Sequence[Any] | None,
    expected: dict[str, Any],
    inter_weight: float,
) -> np.ndarray:
    """The ranking key of every training row from a scores file.

    The file may describe the training rows themselves (the pre-pass file) or the data file(s) verl loaded them
    from (``verl-gain score --data``), of which verl keeps a subset (``data.filter_overlong_prompts``,
    ``data.train_max_samples``): rows are then matched by prompt content. The key is recomputed from the file's
    ``intra`` and ``inter`` with this run's ``inter_weight``.

    Args:
        path: the scores file.
        train_prompts: the prompt of every training row, in dataset order.
        file_prompts: the prompts of ``data.train_files`` concatenated, or None.
        expected: fingerprint fields that must match (model, capture point, template); an empty dict checks none.
        inter_weight: w in ``intra + w inter``.

    Returns:
        ``[N]`` fp64 keys, one per training row.
    """
    table, fingerprint, _ = read_scores(path)
    check_fingerprint(fingerprint, expected, what=f"scores file {path}")
    scored = fingerprint.get("dataset", {})
    if scored.get("sha256") == dataset_fingerprint(train_prompts)["sha256"]:
        positions = np.arange(len(train_prompts))
    elif file_prompts is not None and scored.get("sha256") == dataset_fingerprint(file_prompts)["sha256"]:
        row_of: dict[str, int] = {}
        for row, prompt in enumerate(file_prompts):
            row_of.setdefault(_prompt_digest(prompt), row)
        positions = np.array([row_of[_prompt_digest(p)] for p in train_prompts], dtype=np.int64)
    else:
        raise FingerprintMismatch(
            f"scores file {path} was computed from {scored.get('rows')} prompts that are neither the "
            f"{len(train_prompts)} training rows nor data.train_files: score the training file with `verl-gain score`"
        )
    intra = _by_position(table, "intra", positions)
    inter = _by_position(table, "inter", positions)
    return intra + inter_weight * inter


def _by_position(table: pd.DataFrame, column: str, positions: np.ndarray) -> np.ndarray:
    """``table[column]`` at the given dataset positions (checked: every position must have a score)."""
    key_by_position(table, 0, positions)  # raises with the missing positions, if any
    series = pd.Series(table[column].to_numpy(np.float64), index=table["position"].to_numpy(np.int64))
    return series.loc[positions].to_numpy()


def write_prepass_scores(
    path: str | os.PathLike, table: pd.DataFrame, train_prompts: Sequence[Any], identity: dict[str, Any], info: dict
) -> None:
    """Write the pre-pass table with a fingerprint over the training rows plus the model/capture/template identity."""
    write_scores(path, table, {"dataset": dataset_fingerprint(train_prompts), **identity}, info)

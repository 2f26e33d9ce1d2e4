"""The ranking key of every training row, before the first step: from a scores file, or from the GAIN pre-pass.

On the driver: the training prompts are tokenised exactly as verl's rollout tokenises them and their question tokens
are marked (``PromptSegmenter``, left truncation to ``rollout.prompt_length``); the actor workers get the segment
table (for the per-step angle) and, unless a scores file already has the keys, score every prompt through verl's
own ``infer_batch`` (``GainActorRolloutRefWorker.gain_score_prompts``). The pre-pass result is written next to the
checkpoints in the ``verl-gain score`` format (``verl_gain/scoring/scores_file.py``) and reused on resume.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from tensordict import TensorDict
from tqdm import tqdm

from verl_gain.core.angles import STAT_FIELDS
from verl_gain.model_sources import is_hub_id, resolve_model
from verl_gain.scoring.capture import describe_capture_point
from verl_gain.scoring.scores_file import (
    data_files_prompts,
    dataset_fingerprint,
    model_identity,
    scores_for_rows,
    scores_table,
    stats_columns,
    table_keys,
    term_means,
    write_scores,
)
from verl_gain.scoring.segments import PromptSegmenter, SegmentedPrompt, segment_prompts
from verl_gain.trainer.capture import SEGMENT_IDS_KEY, STATS_KEY
from verl_gain.trainer.compat import assign_non_tensor, copy_to_local
from verl_gain.trainer.curriculum import SCORES_FILE, PrepassScores
from verl_gain.trainer.data_files import local_data_files
from verl_gain.trainer.settings import GainSettings
from verl_gain.trainer.worker import PREPASS_MICRO_BATCH_GROUP, PromptSegmentTable


def local_model_path(config: DictConfig, key: str = "path") -> str:
    """The actor model's folder on this machine: ``actor_rollout_ref.model.<key>`` (``path``, or ``hf_config_path``
    falling back to ``path`` as verl does) copied locally as verl copies it (HDFS), and a hub id resolved to its
    snapshot in the Hugging Face cache as transformers resolves it in the workers (the model's weights too: their
    sampled hash is part of the scores' fingerprint; ``hf_config_path`` needs its config only)."""
    model = config.actor_rollout_ref.model
    name = model.get(key) or model.path
    local = copy_to_local(name, use_shm=model.get("use_shm"))
    try:
        return str(resolve_model(local, config_only=key != "path"))
    except FileNotFoundError as error:
        raise FileNotFoundError(f"actor_rollout_ref.model.{key}: {error}") from None


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


def prepass_row_multiple(data_parallel_size: int, micro_batch_size: int | None, micro_batch_group: int = 1) -> int:
    """Rows of every pre-pass call are padded to a multiple of this.

    verl's nd dispatch splits a call's rows evenly over the ``data_parallel_size`` ranks; each rank's rows then need,
    with a fixed micro-batch size, to divide into ``micro_batch_size``-row micro-batches (verl's
    ``prepare_micro_batches``) whose count, on Megatron with virtual pipeline stages, divides by
    ``micro_batch_group`` (``MegatronEngine.forward_backward_batch``); with dynamic batch size verl rounds the
    micro-batch count up to that group itself but needs at least one row per micro-batch.

    Args:
        data_parallel_size: ranks the actor's data is split over.
        micro_batch_size: ``rollout.log_prob_micro_batch_size_per_gpu``, or None with dynamic batch size.
        micro_batch_group: the engine's micro-batch group (``capture.prepass_micro_batch_group``; 1 but for
            Megatron with virtual pipeline stages).
    """
    return data_parallel_size * (micro_batch_size or 1) * micro_batch_group


def padded_call(rows: list[int], multiple: int) -> list[int]:
    """``rows`` padded by repeating its last row to a multiple of ``multiple`` rows (the repeats' results are
    dropped)."""
    return rows + [rows[-1]] * (-len(rows) % multiple)


def run_prepass(
    worker_group: Any,
    prompts: Sequence[SegmentedPrompt],
    batch_size: int,
    micro_batch_size: int | None = None,
    micro_batch_group: int = 1,
) -> np.ndarray:
    """Angle statistics of every prompt through the actor workers.

    Prompts go out longest first in calls of ``batch_size`` (similar lengths per call), each padded
    (``padded_call``) to ``prepass_row_multiple`` rows. The actor's model stays on its device for the whole pre-pass
    (``gain_prepass_begin`` / ``gain_prepass_end``): with parameter offload, verl would otherwise load and offload
    it around every call.

    Returns:
        ``[N, len(STAT_FIELDS)]`` fp64, in the order of ``prompts``.
    """
    data_parallel_size = max(worker_group._query_dispatch_info("actor")) + 1
    multiple = prepass_row_multiple(data_parallel_size, micro_batch_size, micro_batch_group)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    stats = np.full((len(prompts), len(STAT_FIELDS)), np.nan)
    tokens = sum(len(p) for p in prompts)
    worker_group.gain_prepass_begin()
    try:
        with tqdm(total=tokens, desc="GAIN pre-pass (prompt tokens)", unit="tok", unit_scale=True) as progress:
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                output = worker_group.gain_score_prompts(
                    prompt_batch([prompts[i] for i in padded_call(chunk, multiple)])
                )
                stats[chunk] = output[STATS_KEY][: len(chunk)].double().numpy()
                progress.update(sum(len(prompts[i]) for i in chunk))
    finally:
        worker_group.gain_prepass_end()
    if np.isnan(stats).any():
        raise RuntimeError("the GAIN pre-pass returned NaN statistics; this is a bug, please report it")
    return stats


def own_scores_file(config: DictConfig) -> str | None:
    """The pre-pass file of an earlier run of this experiment: next to the checkpoints, or next to the checkpoint
    named by ``trainer.resume_from_path``."""
    folders = [config.trainer.default_local_dir]
    if config.trainer.resume_mode == "resume_path" and config.trainer.resume_from_path:
        folders.append(os.path.dirname(os.path.normpath(str(config.trainer.resume_from_path))))
    found = [os.path.join(f, SCORES_FILE) for f in folders if os.path.exists(os.path.join(f, SCORES_FILE))]
    return found[0] if found else None


def prepass_scores(table: pd.DataFrame) -> PrepassScores:
    """What the curriculum needs of the training rows' scores table (``scores_for_rows`` or the pre-pass table)."""
    cosine = table["mean_cosine"].to_numpy(np.float64) if "mean_cosine" in table.columns else None
    return PrepassScores(keys=table["key"].to_numpy(np.float64), term_means=term_means(table), mean_cosine=cosine)


def training_row_scores(
    config: DictConfig, settings: GainSettings, tokenizer: Any, train_dataset: Any, worker_group: Any
) -> PrepassScores:
    """Configure the actor workers for GAIN and return the scores of every training row (keys ``[N]``, ...).

    The keys come from ``gain.scores_path``, else from the pre-pass file of an earlier run of this experiment, else
    from the pre-pass through ``worker_group``. A file is used only if its fingerprint matches this run's model,
    capture point and chat template (unless ``gain.allow_foreign_scores``) and its prompts are the training rows or
    ``data.train_files``.

    Args:
        config: the run's verl config.
        settings: its ``gain`` group.
        tokenizer: the actor's tokenizer.
        train_dataset: verl's training dataset (a ``GainRLHFDataset``: ``prompt_messages()``, ``dataframe``).
        worker_group: the actor worker group (``GainActorRolloutRefWorker``).
    """
    model_name = str(config.actor_rollout_ref.model.path)
    model_path = local_model_path(config)
    config_path = local_model_path(config, "hf_config_path")
    trust_remote_code = bool(config.actor_rollout_ref.model.get("trust_remote_code", False))
    from transformers import AutoConfig

    segmenter = PromptSegmenter(
        tokenizer,
        config.data.get("apply_chat_template_kwargs") or {},
        model_type=AutoConfig.from_pretrained(config_path, trust_remote_code=trust_remote_code).model_type,
    )
    max_prompt = int(config.actor_rollout_ref.rollout.prompt_length)
    rows = train_dataset.prompt_messages()
    prompts = segment_prompts(segmenter, rows, max_prompt)  # forked processes for big datasets
    requirements = worker_group.gain_configure(
        {
            "capture_point": settings.capture_point,
            "inter_weight": settings.inter_weight,
            "step_angle": settings.step_angle,
        },
        PromptSegmentTable.from_segments([(p.input_ids, p.segment_ids) for p in prompts]),
    )
    micro_batch_group = max(r[PREPASS_MICRO_BATCH_GROUP] for r in requirements)
    identity = {
        "model": model_identity(model_path, name=model_name if is_hub_id(model_name) else None),
        "capture": describe_capture_point(config_path, settings.capture_point, trust_remote_code),
        "template": segmenter.template_identity(),
    }
    earlier = own_scores_file(config)
    if settings.scores_path:
        expected = {} if settings.allow_foreign_scores else identity
        file_prompts = data_files_prompts(local_data_files(config.data.train_files), config.data.prompt_key)
        table = scores_for_rows(settings.scores_path, rows, file_prompts, expected, settings.inter_weight)
        print(f"[verl-gain] GAIN scores from {settings.scores_path} ({len(table)} training prompts)", flush=True)
        return prepass_scores(table)
    if earlier is not None:
        table = scores_for_rows(earlier, rows, None, identity, settings.inter_weight)
        print(f"[verl-gain] GAIN scores reused from {earlier}", flush=True)
        return prepass_scores(table)
    print(f"[verl-gain] GAIN pre-pass: scoring {len(prompts)} training prompts with the actor", flush=True)
    rollout = config.actor_rollout_ref.rollout
    micro = None if rollout.log_prob_use_dynamic_bsz else int(rollout.log_prob_micro_batch_size_per_gpu)
    stats = stats_columns(run_prepass(worker_group, prompts, settings.prepass_batch_size, micro, micro_batch_group))
    dataframe = train_dataset.dataframe
    index = (
        [(info or {}).get("index") for info in dataframe["extra_info"]]
        if "extra_info" in dataframe.column_names
        else [None] * len(prompts)
    )
    table = scores_table(np.arange(len(prompts)), index, stats, [len(p) for p in prompts])
    table["key"] = table_keys(table, settings.inter_weight)
    path = os.path.join(config.trainer.default_local_dir, SCORES_FILE)
    info = {"source": "verl actor pre-pass", "model_path": model_path}
    write_scores(path, table, {"dataset": dataset_fingerprint(rows), **identity}, info)
    print(f"[verl-gain] GAIN scores written to {path}", flush=True)
    return prepass_scores(table)

"""Angle statistics captured inside a verl training engine's own forward pass (FSDP / FSDP2 and Megatron engines).

verl's ``TrainingWorker.infer_batch`` splits a batch into micro-batches (reordering them when dynamic batch size is
on), runs each through ``engine.forward_step`` and reassembles every per-sample tensor the engine's
``prepare_model_outputs`` returns (``postprocess_batch_func`` concatenates them and restores the original order).
``capture_angle_statistics`` uses exactly that path: a hook at the capture point keeps the micro-batch's hidden
states, and ``prepare_model_outputs`` (wrapped on the engine instance for the duration of the context) reduces them
at once to per-sample statistics (``STATS_FIELDS``) added to the model output as ``STATS_KEY``. Activations never
outlive their micro-batch.

Token segments travel with the batch as the nested tensor ``SEGMENT_IDS_KEY`` (one id per token, the same jagged
layout as ``input_ids``), so verl's micro-batching splits and reorders them together with the tokens.

What the hook sees, and how it is reduced (verl 0.9 FSDP engine, ``FSDPEngineWithLMHead.prepare_model_inputs``):

- remove-padding (packed): ``[1, T_local, H]``; the global packed sequence is ``input_ids.values()`` followed by
  ``output_args["pad_size"]`` padding tokens (bucket and Ulysses alignment), and with Ulysses sequence parallelism
  each rank holds the contiguous chunk ``rank * T_local : (rank + 1) * T_local``. Each rank reduces its chunk and the
  segment sums are all-reduced over the sequence-parallel group (they add up), so no activation is gathered.
- padded: ``[b, max_len, H]``, right-padded to the micro-batch's longest sequence.

``capture_angle_statistics`` dispatches on the backend: a verl ``MegatronEngine`` goes to
``verl_gain.trainer.megatron_capture`` (same keys, same statistics; pipeline, tensor/sequence and context
parallelism, Transformer Engine's fused pre-MLP norm), so callers never branch on the backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist

from verl_gain.core.angles import (
    IGNORE_SEGMENT,
    SegmentSums,
    angle_statistics,
    segment_sums_packed,
    segment_sums_padded,
)
from verl_gain.scoring.capture import HiddenStateCapture
from verl_gain.trainer.megatron_capture import capture_megatron_angle_statistics, is_megatron_engine

SEGMENT_IDS_KEY = "gain_segment_ids"
"""Nested ``[b, (j)]`` int64 batch key: the segment of every token (``IGNORE_SEGMENT`` for none)."""
STATS_KEY = "gain_stats"
"""Model-output key (nested, ``len(STATS_FIELDS)`` values per sample) added inside the engine."""
STATS_FIELDS = ("intra", "inter", "key", "n_fixed", "n_question")
"""Per-sample statistics, in this order (see ``verl_gain.core.angles.AngleStatistics``)."""


def micro_batch_segment_sums(
    hidden: torch.Tensor,
    input_ids: torch.Tensor,
    segment_ids: torch.Tensor,
    packed: bool,
    pad_size: int = 0,
    sp_group: dist.ProcessGroup | None = None,
) -> SegmentSums:
    """Segment sums of one micro-batch from the hidden states the capture hook saw.

    Args:
        hidden: ``[1, T_local, H]`` (packed) or ``[b, max_len, H]`` (padded).
        input_ids: nested ``[b, (j)]`` token ids of the micro-batch (its offsets give the sequence bounds).
        segment_ids: nested ``[b, (j)]`` segment id per token, same layout as ``input_ids``.
        packed: whether the engine ran remove-padding (packed) inputs.
        pad_size: padding appended to the global packed sequence (``output_args["pad_size"]``).
        sp_group: the Ulysses sequence-parallel group, or None.

    Returns:
        ``SegmentSums`` ``[b, K, H]`` over the whole sequences (reduced over the sequence-parallel group).
    """
    offsets = input_ids.offsets().to(hidden.device)  # [b + 1]
    segments = segment_ids.values().to(hidden.device)  # [total]
    if not packed:
        b, max_len, _ = hidden.shape
        lengths = offsets.diff()  # [b]
        mask = torch.arange(max_len, device=hidden.device).unsqueeze(0) < lengths.unsqueeze(1)  # [b, max_len]
        padded_segments = torch.nested.to_padded_tensor(
            segment_ids.to(hidden.device), IGNORE_SEGMENT, output_size=(b, max_len)
        )  # [b, max_len]
        return segment_sums_padded(hidden, mask, padded_segments.long())
    local = hidden.reshape(-1, hidden.shape[-1])  # [T_local, H]
    sp_size = dist.get_world_size(sp_group) if sp_group is not None else 1
    sp_rank = dist.get_rank(sp_group) if sp_group is not None else 0
    total = int(offsets[-1]) + int(pad_size)
    if total != local.shape[0] * sp_size:
        raise RuntimeError(
            f"captured {local.shape[0]} tokens per rank x {sp_size} sequence-parallel ranks, but the micro-batch "
            f"holds {int(offsets[-1])} tokens + {pad_size} padding: the capture point must see the packed sequence"
        )
    start = sp_rank * local.shape[0]
    padded_segments = torch.full((total,), IGNORE_SEGMENT, dtype=torch.long, device=hidden.device)  # [total]
    padded_segments[: segments.numel()] = segments
    local_offsets = (offsets - start).clamp(0, local.shape[0])  # [b + 1], each sequence's part in this chunk
    sums = segment_sums_packed(local, local_offsets, padded_segments[start : start + local.shape[0]])
    if sp_size > 1:
        for tensor in (sums.unit_sum, sums.count, sums.nonzero):
            dist.all_reduce(tensor, group=sp_group)
    return sums


def stats_tensor(sums: SegmentSums, inter_weight: float) -> torch.Tensor:
    """``[b, len(STATS_FIELDS)]`` fp64 per-sample statistics from segment sums."""
    stats = angle_statistics(sums, inter_weight=inter_weight)
    return torch.stack([getattr(stats, name) for name in STATS_FIELDS], dim=-1)  # [b, F]


def _sp_group(engine: Any) -> dist.ProcessGroup | None:
    if not getattr(engine, "use_ulysses_sp", False):
        return None
    from verl_gain.trainer.compat import get_ulysses_sequence_parallel_group

    return get_ulysses_sequence_parallel_group()


@contextmanager
def capture_angle_statistics(
    engine: Any, capture_point: str, inter_weight: float
) -> Iterator[HiddenStateCapture | None]:
    """While active, every forward of ``engine`` whose micro-batch carries ``SEGMENT_IDS_KEY`` adds ``STATS_KEY``.

    Args:
        engine: a verl FSDP/FSDP2 ``BaseEngine`` (``engine.module`` is the wrapped HF model) or a verl
            ``MegatronEngine`` (``engine.module`` is a list of model chunks; see ``megatron_capture``).
        capture_point: where to capture (``verl_gain.scoring.capture`` specs: ``mlp_input``, ``final_norm``, ...).
        inter_weight: w in the ranking key ``intra + w inter``.

    Yields:
        The rank's ``HiddenStateCapture`` (``None`` on Megatron pipeline stages that hold no capture point).
    """
    if is_megatron_engine(engine):
        with capture_megatron_angle_statistics(engine, capture_point, inter_weight) as capture:
            yield capture
        return
    capture = HiddenStateCapture(engine.module, capture_point)
    original = engine.prepare_model_outputs  # the bound method of the engine's class

    def prepare_model_outputs(output, output_args, micro_batch, logits_processor_func):
        model_output = original(output, output_args, micro_batch, logits_processor_func)
        hidden = capture.pop()
        if SEGMENT_IDS_KEY not in micro_batch.keys():
            return model_output
        from verl_gain.trainer.compat import get_non_tensor_data

        packed = bool(get_non_tensor_data(micro_batch, "use_remove_padding", True))
        sums = micro_batch_segment_sums(
            hidden,
            micro_batch["input_ids"],
            micro_batch[SEGMENT_IDS_KEY],
            packed=packed,
            pad_size=int(output_args.get("pad_size", 0)) if packed else 0,
            sp_group=_sp_group(engine),
        )
        per_sample = stats_tensor(sums, inter_weight)  # [b, F]
        model_output[STATS_KEY] = torch.nested.as_nested_tensor(list(per_sample), layout=torch.jagged)
        return model_output

    engine.prepare_model_outputs = prepare_model_outputs
    try:
        with capture:
            yield capture
    finally:
        del engine.prepare_model_outputs  # back to the class's method


def dense_stats(output: Any) -> torch.Tensor:
    """``[b, F]`` fp64 statistics from the nested ``STATS_KEY`` of an ``infer_batch`` output."""
    nested = output[STATS_KEY]
    return torch.stack(list(nested.unbind())).double()  # [b, F]

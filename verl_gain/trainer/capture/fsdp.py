"""Angle statistics inside verl's FSDP / FSDP2 engine (``FSDPEngineWithLMHead``, verl 0.9.1).

What the capture hook sees (``FSDPEngineWithLMHead.prepare_model_inputs``), and how it is reduced:

- remove-padding (packed): ``[1, T_local, H]``; the global packed sequence is ``input_ids.values()`` followed by
  ``output_args["pad_size"]`` padding tokens (bucket and Ulysses alignment), and with Ulysses sequence parallelism
  each rank holds the contiguous chunk ``rank * T_local : (rank + 1) * T_local``. Each rank reduces its chunk and the
  segment sums are all-reduced over the sequence-parallel group (they add up), so no activation is gathered.
- padded: ``[b, max_len, H]``, right-padded to the micro-batch's longest sequence.

The hook keeps the micro-batch's hidden states until ``prepare_model_outputs`` (``outputs.model_outputs_with_stats``)
reduces them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist

from verl_gain.core.angles import IGNORE_SEGMENT, SegmentSums, segment_sums_packed, segment_sums_padded
from verl_gain.scoring.capture import HiddenStateCapture
from verl_gain.trainer.capture.outputs import SEGMENT_IDS_KEY, model_outputs_with_stats, stats_tensor


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


def _sp_group(engine: Any) -> dist.ProcessGroup | None:
    if not getattr(engine, "use_ulysses_sp", False):
        return None
    from verl_gain.trainer.compat import get_ulysses_sequence_parallel_group

    return get_ulysses_sequence_parallel_group()


@contextmanager
def capture_fsdp_angle_statistics(engine: Any, capture_point: str, inter_weight: float) -> Iterator[HiddenStateCapture]:
    """While active, every forward of the FSDP ``engine`` whose micro-batch carries ``SEGMENT_IDS_KEY`` adds
    ``STATS_KEY`` to its model output. Yields the rank's ``HiddenStateCapture``."""
    from verl_gain.trainer.compat import get_non_tensor_data

    capture = HiddenStateCapture(engine.module, capture_point)

    def micro_batch_stats(output: Any, output_args: dict, micro_batch: Any, logits_processor_func: Any):
        hidden = capture.pop()
        if SEGMENT_IDS_KEY not in micro_batch.keys():
            return None
        packed = bool(get_non_tensor_data(micro_batch, "use_remove_padding", True))
        sums = micro_batch_segment_sums(
            hidden,
            micro_batch["input_ids"],
            micro_batch[SEGMENT_IDS_KEY],
            packed=packed,
            pad_size=int(output_args.get("pad_size", 0)) if packed else 0,
            sp_group=_sp_group(engine),
        )
        return stats_tensor(sums, inter_weight)  # [b, F]

    with model_outputs_with_stats(engine, micro_batch_stats), capture:
        yield capture

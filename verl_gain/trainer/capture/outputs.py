"""What the capture adds to a verl engine's model outputs, and the one seam it uses to add it.

verl's ``TrainingWorker.infer_batch`` splits a batch into micro-batches (reordering them when dynamic batch size is
on), runs each through the engine's forward and reassembles every per-sample nested tensor of the model output
(``postprocess_batch_func``: concatenated, original order restored). Both engines build that output in
``prepare_model_outputs``, once per micro-batch, right after its forward (FSDP:
``prepare_model_outputs(output, output_args, micro_batch, logits_processor_func)``; Megatron, from its
``loss_func``: ``prepare_model_outputs(output, data)``). ``model_outputs_with_stats`` wraps that method on the
engine instance for the duration of a context and adds ``STATS_KEY`` to each micro-batch's output, so the
statistics travel back through verl's own reassembly and activations never outlive their micro-batch.

Token segments travel with the batch as the nested tensor ``SEGMENT_IDS_KEY`` (one id per token, the jagged
layout of ``input_ids``), so verl's micro-batching splits and reorders them together with the tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from verl_gain.core.angles import STAT_FIELDS, SegmentSums, angle_statistics

SEGMENT_IDS_KEY = "gain_segment_ids"
"""Nested ``[b, (j)]`` int64 batch key: the segment of every token (``IGNORE_SEGMENT`` for none)."""
STATS_KEY = "gain_stats"
"""Model-output key (nested, ``len(STAT_FIELDS)`` values per sample) added inside the engine."""

MicroBatchStats = Callable[..., "torch.Tensor | None"]
"""Called with ``prepare_model_outputs``' own arguments after each micro-batch: ``[b, F]`` statistics or None."""


def stats_tensor(sums: SegmentSums, inter_weight: float) -> torch.Tensor:
    """``[b, len(STAT_FIELDS)]`` fp64 per-sample statistics from segment sums."""
    return angle_statistics(sums, inter_weight=inter_weight).stacked()  # [b, F]


def dense_stats(output: Any) -> torch.Tensor:
    """``[b, F]`` fp64 statistics from the nested ``STATS_KEY`` of an ``infer_batch`` output."""
    stats = torch.stack(list(output[STATS_KEY].unbind())).double()  # [b, F]
    if stats.shape[-1] != len(STAT_FIELDS):
        raise RuntimeError(f"GAIN statistics have {stats.shape[-1]} fields, expected {len(STAT_FIELDS)}")
    return stats


@contextmanager
def model_outputs_with_stats(engine: Any, micro_batch_stats: MicroBatchStats) -> Iterator[None]:
    """While active, ``engine.prepare_model_outputs`` also returns ``STATS_KEY`` for every micro-batch for which
    ``micro_batch_stats(*args)`` returns a tensor (``[b, F]``); the class's own method is back afterwards."""
    original = engine.prepare_model_outputs  # the bound method of the engine's class

    def prepare_model_outputs(*args: Any, **kwargs: Any) -> Any:
        model_output = original(*args, **kwargs)
        stats = micro_batch_stats(*args, **kwargs)  # [b, F] or None
        if stats is not None:
            model_output[STATS_KEY] = torch.nested.as_nested_tensor(list(stats), layout=torch.jagged)
        return model_output

    engine.prepare_model_outputs = prepare_model_outputs
    try:
        yield
    finally:
        del engine.prepare_model_outputs  # back to the class's method

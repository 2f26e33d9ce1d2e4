"""GAIN's angle statistics captured inside a verl training engine's own forward pass.

- ``outputs``: the batch and output keys (``SEGMENT_IDS_KEY``, ``STATS_KEY``) and the one seam used: the engine's
  ``prepare_model_outputs``, wrapped for the duration of a capture.
- ``fsdp``: verl's FSDP / FSDP2 engine (packed with Ulysses sequence parallelism, or padded).
- ``megatron_layout``: which token each row a Megatron rank captures is (THD/BSHD, TP/SP/CP), pure torch.
- ``megatron``: verl's Megatron engine (last pipeline stage, Transformer Engine's fused norm).

``capture_angle_statistics`` dispatches on the engine, so callers never branch on the backend;
``validate_capture_point`` checks the capture point on every rank of a worker group, together.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch.distributed as dist

from verl_gain.scoring.capture import CapturePointError, HiddenStateCapture
from verl_gain.trainer.capture.fsdp import capture_fsdp_angle_statistics
from verl_gain.trainer.capture.megatron import (
    capture_megatron_angle_statistics,
    is_megatron_engine,
    prepass_micro_batch_group,
)
from verl_gain.trainer.capture.megatron_layout import MegatronCaptureError
from verl_gain.trainer.capture.outputs import SEGMENT_IDS_KEY, STATS_KEY, dense_stats

__all__ = [
    "SEGMENT_IDS_KEY",
    "STATS_KEY",
    "CaptureRefused",
    "capture_angle_statistics",
    "dense_stats",
    "prepass_micro_batch_group",
    "validate_capture_point",
]


class CaptureRefused(ValueError):
    """A rank of the worker group refused the capture point (the same one line on every rank)."""


@contextmanager
def capture_angle_statistics(
    engine: Any, capture_point: str, inter_weight: float
) -> Iterator[HiddenStateCapture | None]:
    """While active, every forward of ``engine`` whose micro-batch carries ``SEGMENT_IDS_KEY`` adds ``STATS_KEY``.

    Args:
        engine: a verl FSDP/FSDP2 ``BaseEngine`` (``engine.module`` is the wrapped HF model) or a verl
            ``MegatronEngine`` (``engine.module`` is a list of model chunks).
        capture_point: where to capture (``verl_gain.scoring.capture`` specs: ``mlp_input``, ``final_norm``, ...).
        inter_weight: w in the ranking key ``intra + w inter``.

    Yields:
        The rank's ``HiddenStateCapture`` (``None`` on Megatron pipeline stages that hold no capture point).
    """
    capture = capture_megatron_angle_statistics if is_megatron_engine(engine) else capture_fsdp_angle_statistics
    with capture(engine, capture_point, inter_weight) as hook:
        yield hook


def validate_capture_point(engine: Any, capture_point: str) -> None:
    """Check ``capture_point`` on this rank as the capture will (resolve it, install and remove its hook), then agree
    with every rank of the worker group: if any rank refuses it, every rank raises that rank's message.

    On Megatron only the last pipeline stage holds the capture point and checks it; alone, it would stop while the
    other stages wait for it in a pipeline send/receive until the NCCL timeout. Called on all ranks at once (the
    worker's ``gain_configure``, ``Dispatch.ONE_TO_ALL``), so the collective is safe.

    Raises:
        CaptureRefused: one rank's refusal (``MegatronCaptureError`` / ``CapturePointError`` message).
    """
    refusal = None
    try:
        with capture_angle_statistics(engine, capture_point, inter_weight=1.0):
            pass
    except (CapturePointError, MegatronCaptureError) as error:
        refusal = f"gain.capture_point={capture_point}: {error}"
    refusals = [refusal]
    if dist.is_available() and dist.is_initialized():
        refusals = [None] * dist.get_world_size()
        dist.all_gather_object(refusals, refusal)
    first = next((r for r in refusals if r), None)
    if first is not None:
        raise CaptureRefused(first)

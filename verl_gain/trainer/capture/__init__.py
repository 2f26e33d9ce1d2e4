"""GAIN's angle statistics captured inside a verl training engine's own forward pass.

- ``outputs``: the batch and output keys (``SEGMENT_IDS_KEY``, ``STATS_KEY``) and the one seam used: the engine's
  ``prepare_model_outputs``, wrapped for the duration of a capture.
- ``fsdp``: verl's FSDP / FSDP2 engine (packed with Ulysses sequence parallelism, or padded).
- ``megatron_layout``: which token each row a Megatron rank captures is (THD/BSHD, TP/SP/CP), pure torch.
- ``megatron``: verl's Megatron engine (last pipeline stage, Transformer Engine's fused norm).

``capture_angle_statistics`` dispatches on the engine, so callers never branch on the backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from verl_gain.scoring.capture import HiddenStateCapture
from verl_gain.trainer.capture.fsdp import capture_fsdp_angle_statistics
from verl_gain.trainer.capture.megatron import capture_megatron_angle_statistics, is_megatron_engine
from verl_gain.trainer.capture.outputs import SEGMENT_IDS_KEY, STATS_KEY, dense_stats

__all__ = ["SEGMENT_IDS_KEY", "STATS_KEY", "capture_angle_statistics", "dense_stats"]


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

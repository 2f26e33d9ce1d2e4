"""GAIN core: angle statistics, the curriculum controller and its sampler (torch and numpy only, no verl)."""

from verl_gain.core.angles import (
    FIXED_SEGMENT,
    IGNORE_SEGMENT,
    QUESTION_SEGMENT,
    AngleStatistics,
    SegmentSums,
    angle_statistics,
    inter_concentration,
    intra_concentration,
    ranking_key,
    segment_sums_packed,
    segment_sums_padded,
)
from verl_gain.core.controller import GainConfig, GainController, window_update
from verl_gain.core.sampler import GainSampler

__all__ = [
    "FIXED_SEGMENT",
    "IGNORE_SEGMENT",
    "QUESTION_SEGMENT",
    "AngleStatistics",
    "GainConfig",
    "GainController",
    "GainSampler",
    "SegmentSums",
    "angle_statistics",
    "inter_concentration",
    "intra_concentration",
    "ranking_key",
    "segment_sums_packed",
    "segment_sums_padded",
    "window_update",
]

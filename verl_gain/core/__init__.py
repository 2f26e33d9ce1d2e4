"""GAIN core: angle statistics, the angle signal, the curriculum controller, its sampler and the planner (torch and
numpy only, no verl)."""

from verl_gain.core.angle_signal import ANGLE_SIGNALS, AngleSignals, KeyDistribution, angle_signals
from verl_gain.core.angles import (
    FIXED_SEGMENT,
    IGNORE_SEGMENT,
    QUESTION_SEGMENT,
    STAT_FIELDS,
    AngleStatistics,
    SegmentSums,
    TermMeans,
    angle_statistics,
    inter_concentration,
    intra_concentration,
    mean_concentration,
    ranking_key,
    ranking_keys,
    segment_sums_packed,
    segment_sums_padded,
)
from verl_gain.core.controller import GainConfig, GainController, WindowMove, window_move, window_update
from verl_gain.core.planner import Plan, simulate
from verl_gain.core.sampler import GainSampler

__all__ = [
    "ANGLE_SIGNALS",
    "FIXED_SEGMENT",
    "IGNORE_SEGMENT",
    "QUESTION_SEGMENT",
    "STAT_FIELDS",
    "AngleSignals",
    "AngleStatistics",
    "GainConfig",
    "GainController",
    "GainSampler",
    "KeyDistribution",
    "Plan",
    "SegmentSums",
    "TermMeans",
    "WindowMove",
    "angle_signals",
    "angle_statistics",
    "inter_concentration",
    "intra_concentration",
    "mean_concentration",
    "ranking_key",
    "ranking_keys",
    "segment_sums_packed",
    "segment_sums_padded",
    "simulate",
    "window_move",
    "window_update",
]

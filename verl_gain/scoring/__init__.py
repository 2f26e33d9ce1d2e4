"""GAIN scoring: hidden-state capture, template-aware prompt segments, scores files, the offline scorer.

Public API (imported lazily, so ``import verl_gain.scoring`` stays light):

- capture (``verl_gain.scoring.capture``): ``resolve_capture_point``, ``CapturePoint``, ``HiddenStateCapture``,
  ``CaptureStopped``, ``canonical_module_name``.
- segments (``verl_gain.scoring.segments``): ``PromptSegmenter``, ``SegmentedPrompt``.
- scores files (``verl_gain.scoring.scores_file``, also the one reader of training data): ``read_data_file``,
  ``dataset_fingerprint``, ``model_identity``, ``write_scores``, ``read_scores``, ``check_fingerprint``,
  ``key_by_position``, ``keys_for_rows``, ``FingerprintMismatch``.
- the scorer (``verl_gain.scoring.scorer``): ``ScoreConfig``, ``score_dataset``, ``score_prompts``,
  ``forward_segment_sums``.
- ``ScoringInputError``: every bad-input error derives from it (one line that says the fix).

See docs/scoring.md. The command-line front ends are ``verl_gain/cli/score.py`` and ``verl_gain/cli/inspect.py``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "resolve_capture_point": "capture",
    "CapturePoint": "capture",
    "HiddenStateCapture": "capture",
    "CaptureStopped": "capture",
    "canonical_module_name": "capture",
    "PromptSegmenter": "segments",
    "SegmentedPrompt": "segments",
    "dataset_fingerprint": "scores_file",
    "model_identity": "scores_file",
    "write_scores": "scores_file",
    "read_scores": "scores_file",
    "check_fingerprint": "scores_file",
    "key_by_position": "scores_file",
    "keys_for_rows": "scores_file",
    "read_data_file": "scores_file",
    "FingerprintMismatch": "scores_file",
    "ScoreConfig": "scorer",
    "score_dataset": "scorer",
    "score_prompts": "scorer",
    "forward_segment_sums": "scorer",
    "ScoringInputError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

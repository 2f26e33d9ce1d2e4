"""A reward function never raises into verl: any failure is a 0 score with its reason in the reward's extra info.

verl calls the reward function inside its reward loop; an exception there (a RecursionError from parsing a deeply
nested response, a MemoryError, a malformed ground truth, a bug) would crash the training step. ``never_raises``
wraps a reward of verl's contract so that it always returns a dict:

- on success, the function's own dict plus ``reward_failed = 0.0`` and ``reward_error = ""``;
- on any ``Exception``, ``score = acc = 0.0``, ``pred = ""``, ``reward_failed = 1.0`` and ``reward_error`` = the
  exception's type and first line (``FAILED_PRED`` marks the verdict).

Every reward of ``verl_gain.rewards`` returns these two keys, so verl's reward extra info lines up across a mixed batch:
verl's validation logs ``val-aux/<data source>/reward_failed/mean@N`` by itself, and the GAIN trainers add the count
of failed rewards of each training step to the step's metrics (``verl_gain.trainer.trainers``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

REWARD_FAILED_KEY = "reward_failed"
"""Extra-info key: 1.0 when the reward function failed (and scored 0), else 0.0."""
REWARD_ERROR_KEY = "reward_error"
"""Extra-info key: why it failed (exception type and message, one line), "" when it did not."""
FAILED_PRED = "reward_failed"
"""``pred`` of a failed reward."""
ERROR_CHARS = 300
"""The reason is cut to this many characters (it travels with every rollout's extra info)."""


def failure_reason(error: BaseException) -> str:
    """``Type: first line of the message`` (cut to ``ERROR_CHARS``)."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")[:ERROR_CHARS]


def failed_result(error: BaseException) -> dict[str, float | str]:
    """The result of a reward that raised ``error``: a 0 score with the reason."""
    return {
        "score": 0.0,
        "acc": 0.0,
        "pred": FAILED_PRED,
        REWARD_FAILED_KEY: 1.0,
        REWARD_ERROR_KEY: failure_reason(error),
    }


def never_raises(reward: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """``reward`` (verl's ``compute_score`` contract) made total: see the module docstring."""

    @functools.wraps(reward)
    def guarded(
        data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        try:
            result = reward(data_source, solution_str, ground_truth, extra_info, **kwargs)
        except Exception as error:  # RecursionError and MemoryError included: nothing reaches verl's reward loop
            return failed_result(error)
        # A nested guarded reward (auto -> code) has set the keys already: its failure is kept.
        return {REWARD_FAILED_KEY: 0.0, REWARD_ERROR_KEY: "", **result}

    return guarded

"""A verl reward that routes by ``data_source``: code sources to the sandboxed tests, everything else to math-verify.

Use it for training data that mixes math and code, and wherever one function must score several benchmarks
(``verl-gain eval`` uses it). Same contract and keys (``score``, ``acc``, ``pred``) as the two rewards it calls.
"""

from __future__ import annotations

from typing import Any

from verl_gain.rewards import CODE_DATA_SOURCES
from verl_gain.rewards.failsafe import never_raises


@never_raises
def compute_score(
    data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None, **kwargs: Any
) -> dict[str, float | str]:
    """verl reward: ``code_reward`` for the code data sources of ``verl_gain.rewards``, ``math_reward`` otherwise."""
    if data_source in CODE_DATA_SOURCES:
        from verl_gain.rewards import code_reward

        return code_reward.compute_score(data_source, solution_str, ground_truth, extra_info, **kwargs)
    from verl_gain.rewards import math_reward

    return math_reward.compute_score(data_source, solution_str, ground_truth, extra_info, **kwargs)

"""Reward functions never raise into verl: whatever the response or the ground truth, a dict comes back.

A failure is a 0 score with ``reward_failed = 1`` and the reason in ``reward_error`` (verl's extra info), and the GAIN
trainers count the failed rollouts of each step in the ``reward/failed_count`` metric.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from verl_gain.rewards import (
    GSM8K_DATA_SOURCE,
    LIVECODEBENCH_DATA_SOURCE,
    MATH500_DATA_SOURCE,
    auto,
    code_reward,
    math_reward,
)
from verl_gain.rewards.failsafe import REWARD_ERROR_KEY, REWARD_FAILED_KEY, never_raises
from verl_gain.tasks import arithmetic
from verl_gain.trainer.trainers import REWARD_FAILED_EXTRA_KEY, failed_reward_count

STDIO = json.dumps({"kind": "stdio", "cases": [{"input": "", "output": "1"}]})

# (reward, data source, response, ground truth, expected pred or None for "reward_failed")
CASES = {
    "code: unfenced deep expression (RecursionError, the issue's)": (
        code_reward.compute_score,
        LIVECODEBENCH_DATA_SOURCE,
        "x = 1" + " + 1" * 3000,
        STDIO,
        "no_code",
    ),
    "code: 200k unary minus (MemoryError, the issue's)": (
        code_reward.compute_score,
        LIVECODEBENCH_DATA_SOURCE,
        "-" * 200000 + "1",
        STDIO,
        "no_code",
    ),
    "code: fenced deep expression (the sandbox's compiler fails)": (
        code_reward.compute_score,
        LIVECODEBENCH_DATA_SOURCE,
        "```python\nprint(" + "(" * 5000 + "1" + ")" * 5000 + ")\n```",
        STDIO,
        "error",
    ),
    "code: ground truth that is not JSON": (
        code_reward.compute_score,
        LIVECODEBENCH_DATA_SOURCE,
        "```python\nprint(1)\n```",
        "{not json",
        None,
    ),
    "code: ground truth without kind": (
        code_reward.compute_score,
        LIVECODEBENCH_DATA_SOURCE,
        "```python\nprint(1)\n```",
        json.dumps({"cases": []}),
        None,
    ),
    "code: ground truth None": (code_reward.compute_score, LIVECODEBENCH_DATA_SOURCE, "print(1)", None, None),
    "code: functional cases without args": (
        code_reward.compute_score,
        LIVECODEBENCH_DATA_SOURCE,
        "```python\ndef f(x):\n    return x\n```",
        json.dumps({"kind": "functional", "fn_name": "f", "cases": [{"expected": 1}]}),
        None,
    ),
    "code: response None": (code_reward.compute_score, LIVECODEBENCH_DATA_SOURCE, None, STDIO, "no_code"),
    "code: lone surrogate in the response": (
        code_reward.compute_score,
        LIVECODEBENCH_DATA_SOURCE,
        "```python\nprint('\ud800')\n```",
        STDIO,
        "error",
    ),
    "math: response None": (math_reward.compute_score, MATH500_DATA_SOURCE, None, "1", ""),
    "math: deeply nested braces": (
        math_reward.compute_score,
        MATH500_DATA_SOURCE,
        "\\boxed{" + "{" * 100000 + "1" + "}" * 100000 + "}",
        "1",
        "",
    ),
    "math: ground truth None": (math_reward.compute_score, GSM8K_DATA_SOURCE, "#### 4", None, "4"),
    "math: lone surrogate": (math_reward.compute_score, MATH500_DATA_SOURCE, "\\boxed{\ud800}", "1", "\ud800"),
    "math: response that is not text": (math_reward.compute_score, MATH500_DATA_SOURCE, 12345, "1", None),
    "auto: unknown data source and a dict ground truth": (
        auto.compute_score,
        "nobody/knows",
        "\\boxed{2}",
        {"a": 1},
        "2",
    ),
    "arithmetic: ground truth that is not a number": (
        arithmetic.compute_score,
        arithmetic.DATA_SOURCE,
        "the answer is 4",
        "four",
        None,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_reward_returns_a_verdict_whatever_it_is_given(case):
    reward, data_source, response, ground_truth, pred = CASES[case]
    result = reward(data_source, response, ground_truth, {})
    assert result["score"] == 0.0 and result["acc"] == 0.0, result
    if pred is None:
        assert result[REWARD_FAILED_KEY] == 1.0 and result[REWARD_ERROR_KEY], result
        assert "\n" not in result[REWARD_ERROR_KEY]
    else:
        assert result[REWARD_FAILED_KEY] == 0.0 and result[REWARD_ERROR_KEY] == "", result
        assert result.get("pred", pred) == pred


def test_never_raises_turns_any_exception_into_a_counted_zero():
    @never_raises
    def broken(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
        raise RecursionError("maximum recursion depth exceeded\nwith a second line")

    result = broken("x", "y", "z")
    assert result == {
        "score": 0.0,
        "acc": 0.0,
        "pred": "reward_failed",
        REWARD_FAILED_KEY: 1.0,
        REWARD_ERROR_KEY: "RecursionError: maximum recursion depth exceeded",
    }


def test_a_nested_guarded_reward_keeps_the_inner_failure():
    """``auto`` calls the guarded code reward: its failure must not be overwritten as a success."""
    result = auto.compute_score(LIVECODEBENCH_DATA_SOURCE, "print(1)", "{broken json", {})
    assert result[REWARD_FAILED_KEY] == 1.0 and "JSONDecodeError" in result[REWARD_ERROR_KEY]


def test_the_trainer_counts_failed_rewards_under_the_rewards_key():
    assert REWARD_FAILED_EXTRA_KEY == REWARD_FAILED_KEY  # the trainer spells it (layering): the two must agree
    rollouts = [{REWARD_FAILED_KEY: 1.0}, {REWARD_FAILED_KEY: 0.0}, {}, {REWARD_FAILED_KEY: 1.0}]
    assert failed_reward_count(r.get(REWARD_FAILED_EXTRA_KEY) for r in rollouts) == 2.0
    assert failed_reward_count(np.array([1.0, 0.0, 1.0, 1.0])) == 3.0
    assert failed_reward_count(()) == 0.0

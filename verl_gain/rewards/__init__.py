"""Reward functions for verl (``reward.custom_reward_function.path`` / ``.name``) used by the recipes and by eval.

- ``verl_gain.rewards.math_reward.compute_score``: final answer vs ground truth with math-verify (GSM8K ``#### N``,
  ``\\boxed{}``).
- ``verl_gain.rewards.code_reward.compute_score``: the response's program against the problem's tests in the
  sandbox (``verl_gain.rewards.sandbox``).
- ``verl_gain.rewards.auto.compute_score``: either of the two, by ``data_source`` (for mixed data and evaluation).

verl loads a reward function from a file path or ``pkg://`` module path, e.g.
``reward.custom_reward_function.path=pkg://verl_gain.rewards.math_reward``
``reward.custom_reward_function.name=compute_score``;
``python -m verl_gain.rewards math`` prints the file path for setups that want one. The modules import nothing heavy
at module level (math-verify loads on first use), so they import quickly inside verl's reward-loop Ray actors.
"""

from __future__ import annotations

from pathlib import Path

# data_source values the recipes write, by reward. Anything not listed as code is scored as math.
GSM8K_DATA_SOURCE = "openai/gsm8k"
MATH_DATA_SOURCE = "DigitalLearningGmbH/MATH-lighteval"
MATH500_DATA_SOURCE = "HuggingFaceH4/MATH-500"
DEEPSCALER_DATA_SOURCE = "agentica-org/DeepScaleR-Preview-Dataset"
AMC_DATA_SOURCE = "AI-MO/aimo-validation-amc"
AIME2024_DATA_SOURCE = "HuggingFaceH4/aime_2024"
MINERVA_DATA_SOURCE = "math-ai/minervamath"
OLYMPIADBENCH_DATA_SOURCE = "Hothan/OlympiadBench"
HUMANEVAL_DATA_SOURCE = "openai/openai_humaneval"
HUMANEVAL_PLUS_DATA_SOURCE = "evalplus/humanevalplus"
LIVECODEBENCH_DATA_SOURCE = "livecodebench/code_generation_lite"
DEEPCODER_DATA_SOURCE = "agentica-org/DeepCoder-Preview-Dataset"

CODE_DATA_SOURCES = frozenset(
    {HUMANEVAL_DATA_SOURCE, HUMANEVAL_PLUS_DATA_SOURCE, LIVECODEBENCH_DATA_SOURCE, DEEPCODER_DATA_SOURCE}
)

# Short names accepted by reward_file() and `python -m verl_gain.rewards NAME`.
REWARD_MODULES = {"math": "math_reward.py", "code": "code_reward.py", "auto": "auto.py"}


def reward_file(name: str) -> Path:
    """The file of reward module ``name`` (math, code or auto), for ``reward.custom_reward_function.path``."""
    if name not in REWARD_MODULES:
        raise ValueError(f"unknown reward {name!r}: choose one of {sorted(REWARD_MODULES)}")
    return Path(__file__).with_name(REWARD_MODULES[name])

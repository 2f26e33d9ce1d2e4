"""The rewards as verl runs them: loaded from their file by verl's own loader, called by verl's naive reward
manager (from its executor threads), and light to import in a fresh reward-loop process."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.tiny import make_tokenizer
from verl_gain.rewards import LIVECODEBENCH_DATA_SOURCE, MATH500_DATA_SOURCE, math_reward, reward_file


@pytest.fixture
def one_math_worker(monkeypatch):
    monkeypatch.setenv(math_reward.WORKERS_ENV, "1")
    yield
    math_reward._restart_pool()


def rollout(tokenizer, response: str, data_source: str, ground_truth: str):
    """One finished rollout as verl's reward manager receives it."""
    from verl import DataProto

    prompt = tokenizer("Question: ", return_tensors="pt").input_ids[0]  # (P,)
    answer = tokenizer(response, return_tensors="pt").input_ids[0]  # (R,)
    return DataProto.from_dict(
        tensors={
            "prompts": prompt[None],  # (1, P)
            "responses": answer[None],  # (1, R)
            "attention_mask": torch.ones(1, len(prompt) + len(answer), dtype=torch.long),  # (1, P + R)
        },
        non_tensors={
            "data_source": np.array([data_source], dtype=object),
            "reward_model": np.array([{"ground_truth": ground_truth}], dtype=object),
            "extra_info": np.array([{}], dtype=object),
        },
    )


def test_verl_naive_reward_manager_with_the_auto_reward_file(one_math_worker):
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import load_reward_manager

    config = OmegaConf.create(
        {
            "reward": {
                "custom_reward_function": {"path": str(reward_file("auto")), "name": "compute_score"},
                "reward_manager": {"source": "register", "name": "naive"},
            }
        }
    )
    tokenizer = make_tokenizer("chatml")
    manager = load_reward_manager(config, tokenizer)
    stdio = json.dumps({"kind": "stdio", "cases": [{"input": "", "output": "3"}]})
    batches = [
        rollout(tokenizer, "so the answer is \\boxed{\\frac{1}{2}}", MATH500_DATA_SOURCE, "0.5"),
        rollout(tokenizer, "\\boxed{3}", MATH500_DATA_SOURCE, "0.5"),
        rollout(tokenizer, "```python\nprint(1 + 2)\n```", LIVECODEBENCH_DATA_SOURCE, stdio),
        rollout(tokenizer, "```python\nprint(1 - 2)\n```", LIVECODEBENCH_DATA_SOURCE, stdio),
    ]

    async def score_all():
        return await asyncio.gather(*(manager.run_single(batch) for batch in batches))

    results = manager.loop.run_until_complete(score_all())
    assert [r["reward_score"] for r in results] == [1.0, 0.0, 1.0, 0.0]
    assert [r["reward_extra_info"]["pred"] for r in results] == ["\\frac{1}{2}", "3", "passed", "error"]
    assert all(
        set(r["reward_extra_info"]) == {"score", "acc", "pred", "reward_failed", "reward_error"} for r in results
    )


@pytest.mark.parametrize("name", ["math", "code", "auto"])
def test_reward_modules_load_by_path_and_by_package(name):
    from verl.utils.import_utils import load_extern_object

    by_path = load_extern_object(str(reward_file(name)), "compute_score")
    by_package = load_extern_object(f"pkg://verl_gain.rewards.{reward_file(name).stem}", "compute_score")
    assert callable(by_path) and callable(by_package)


def test_importing_a_reward_is_light():
    """Inside verl's reward-loop actors: no sympy, math-verify or torch at import time."""
    probe = (
        "import sys\n"
        "import verl_gain.rewards.auto, verl_gain.rewards.math_reward, verl_gain.rewards.code_reward\n"
        "heavy = [m for m in ('sympy', 'math_verify', 'torch', 'transformers') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

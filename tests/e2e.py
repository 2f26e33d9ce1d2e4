"""End-to-end helper: run ``python -m verl_gain.main`` on a tiny CPU setup and read its metrics back.

Reusable by any end-to-end test of the project:

    fixture = make_fixture(tmp_path)                      # dataset parquet files, tiny model, reward function
    overrides = base_overrides(fixture, total_steps=3)    # a fast CPU run of verl's GRPO trainer
    result = run_main(overrides + ["trainer.save_freq=3"], metrics_path=tmp_path / "run1.jsonl")
    result.check()                                        # exit code 0, else the log tail in the failure message
    result.metric("actor/pg_loss")                        # {step: value}

Metrics come from verl's own ``file`` logger (``trainer.logger=[console,file]``): one JSON line per logged step,
``{"step": int, "data": {metric: value}}``, at the path in ``VERL_FILE_LOGGER_PATH``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from tests.tiny import make_tiny_model_dir
from verl_gain.demo.launcher import DEFAULT_TIMEOUT_S, RunResult, read_metrics, session_members
from verl_gain.demo.launcher import run_main as launch

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_SOURCE = "verl_gain/e2e_arithmetic"
REWARD_FUNCTION = "compute_score"
NOT_REPRODUCIBLE = ("timing_s/", "timing_per_token_ms/", "perf/")
"""Metrics of time, throughput and memory (``actor/perf/...`` included): they measure the machine, not the run."""
SERVER_LOG_PROB_METRICS = ("training/rollout_", "rollout_corr/")
"""Comparisons of the rollout server's log-probs with the actor's. The server computes a token's log-prob inside a
batch that timing composes, so it can move in its last bits (seen: 1e-8 under load; docs/cpu.md, "Reproducible
runs"); the sampled tokens, the rewards and the update do not depend on it (the actor recomputes the log-probs)."""
SERVER_LOG_PROB_TOLERANCE = 1e-6

# A deterministic reward with variance inside a GRPO group: the tiny random model writes random bytes, so rows of a
# group differ in how many distinct characters they use and in whether the answer's digits appear.
REWARD_SOURCE = '''"""Reward for the end-to-end tests: deterministic, and different across the samples of a group."""


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    distinct = len(set(solution_str)) / max(len(solution_str), 1)
    hit = 1.0 if str(ground_truth) in solution_str else 0.0
    return {"score": hit + distinct, "acc": hit}
'''


@dataclass(frozen=True)
class E2EFixture:
    """Files of a tiny end-to-end run."""

    root: Path
    model_dir: Path
    train_file: Path
    val_file: Path
    reward_file: Path
    checkpoint_dir: Path


def arithmetic_rows(count: int, split: str, offset: int = 0) -> list[dict]:
    """``count`` verl-format rows (chat prompt, rule reward with a ground truth) of small sums."""
    rows = []
    for index in range(count):
        a, b = (offset + index) % 10, (3 * (offset + index) + 1) % 10
        rows.append(
            {
                "data_source": DATA_SOURCE,
                "prompt": [{"role": "user", "content": f"{a}+{b}=?"}],
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": str(a + b)},
                "extra_info": {"split": split, "index": offset + index},
            }
        )
    return rows


def make_fixture(root: str | Path, train_rows: int = 64, val_rows: int = 4, template: str = "chatml") -> E2EFixture:
    """Write a dataset (train/val parquet), a tiny model folder and the reward function file under ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    train_file = root / "train.parquet"
    val_file = root / "val.parquet"
    pd.DataFrame(arithmetic_rows(train_rows, "train")).to_parquet(train_file)
    pd.DataFrame(arithmetic_rows(val_rows, "test", offset=train_rows)).to_parquet(val_file)
    reward_file = root / "reward.py"
    reward_file.write_text(REWARD_SOURCE)
    model_dir = make_tiny_model_dir(root / "model", template=template)
    return E2EFixture(root, model_dir, train_file, val_file, reward_file, root / "checkpoints")


def base_overrides(
    fixture: E2EFixture,
    total_steps: int = 3,
    workers: int = 2,
    prompts_per_step: int = 4,
    rollouts_per_prompt: int = 4,
    response_length: int = 16,
    prompt_length: int = 64,
    learning_rate: float = 1e-3,
    use_v1: bool = True,
    precision: str = "fp32",
) -> list[str]:
    """Overrides for a fast CPU GRPO run of verl's trainer: reference model with KL loss, ``workers`` FSDP ranks.

    ``precision`` is the CPU backend's ``cpu.precision``: fp32 by default, whose exactness the tests check (rollout and
    actor log-probs to ~1e-6), whatever ``auto`` would pick on the machine.

    Micro-batches divide the per-rank batch (``prompts_per_step * rollouts_per_prompt / workers`` rows). The large
    learning rate makes one update move the tiny model's log-probs visibly.
    """
    rows_per_rank = prompts_per_step * rollouts_per_prompt // workers
    micro_batch = max(1, rows_per_rank // 2)
    return [
        "trainer.device=cpu",
        f"cpu.precision={precision}",
        f"trainer.use_v1={str(use_v1).lower()}",
        f"trainer.n_gpus_per_node={workers}",
        f"trainer.total_training_steps={total_steps}",
        "trainer.total_epochs=100",
        "trainer.logger=[console,file]",
        "trainer.val_before_train=false",
        "trainer.test_freq=-1",
        "trainer.project_name=verl_gain_e2e",
        "trainer.experiment_name=tiny",
        f"trainer.default_local_dir={fixture.checkpoint_dir}",
        "trainer.resume_mode=auto",
        f"data.train_files={fixture.train_file}",
        f"data.val_files={fixture.val_file}",
        f"data.train_batch_size={prompts_per_step}",
        f"data.max_prompt_length={prompt_length}",
        f"data.max_response_length={response_length}",
        "data.shuffle=false",
        "algorithm.adv_estimator=grpo",
        "algorithm.use_kl_in_reward=false",
        f"actor_rollout_ref.model.path={fixture.model_dir}",
        f"actor_rollout_ref.actor.optim.lr={learning_rate}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={prompts_per_step}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={micro_batch}",
        "actor_rollout_ref.actor.use_kl_loss=true",
        "actor_rollout_ref.actor.kl_loss_coef=0.01",
        "actor_rollout_ref.actor.kl_loss_type=low_var_kl",
        f"actor_rollout_ref.rollout.n={rollouts_per_prompt}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={micro_batch}",
        f"actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu={micro_batch}",
        f"reward.custom_reward_function.path={fixture.reward_file}",
        f"reward.custom_reward_function.name={REWARD_FUNCTION}",
        "+ray_kwargs.ray_init.include_dashboard=false",  # two fewer processes to start
    ]


def run_main(
    overrides: list[str],
    metrics_path: str | Path,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    echo: bool = False,
) -> RunResult:
    """``verl_gain.demo.launcher.run_main`` with this checkout on ``PYTHONPATH`` (a run can import the test helpers)."""
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return launch(overrides, metrics_path, timeout_s, {"PYTHONPATH": pythonpath, **(env or {})}, cwd, echo)


def reproducible_metrics(result: RunResult) -> dict[int, dict]:
    """``{step: metrics}`` of a run without the ``NOT_REPRODUCIBLE`` ones."""
    return {
        entry["step"]: {k: v for k, v in entry["data"].items() if not any(p in k for p in NOT_REPRODUCIBLE)}
        for entry in result.steps
    }


def assert_same_metrics(expected: dict[int, dict], actual: dict[int, dict]) -> None:
    """Every metric of every step equal to the last bit, but the server's log-prob comparisons (to a tolerance)."""
    assert sorted(actual) == sorted(expected)
    for step, metrics in expected.items():
        near = {k for k in metrics if k.startswith(SERVER_LOG_PROB_METRICS)}
        exact = {k: v for k, v in metrics.items() if k not in near}
        assert {k: v for k, v in actual[step].items() if k not in near} == exact, step
        tolerance = {"rel": SERVER_LOG_PROB_TOLERANCE, "abs": SERVER_LOG_PROB_TOLERANCE}
        assert {k: actual[step][k] for k in near} == pytest.approx({k: metrics[k] for k in near}, **tolerance), step


def dumped_rollouts(dump_dir: Path, steps: list[int] | None = None) -> list[dict]:
    """Every rollout verl dumped (``trainer.rollout_data_dir``), one JSON record per response: prompt, response
    text, score, step (and V1's trajectory key, ``uid``), in step order; only ``steps`` when given."""
    paths = sorted(dump_dir.glob("*.jsonl"), key=lambda path: int(path.stem))
    records = []
    for path in paths:
        if steps is None or int(path.stem) in steps:
            records += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return records


__all__ = ["RunResult", "read_metrics", "run_main", "session_members"]

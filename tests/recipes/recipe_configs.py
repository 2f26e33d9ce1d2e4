"""The recipes (recipes/config) composed in-process as ``bash recipes/run.sh SETUP [overrides]`` composes them, and
the values each paper setup must have.

``PINNED`` and ``SHARED_VALUES`` hold every value the per-setup run scripts set before the recipes became configs
(checked key by key against the scripts when they were replaced): the paper's settings, the data files, the memory
and parallel layout, the naming of runs. ``expected_values(setup)`` spells them out as flat ``key: value`` pairs.
"""

from __future__ import annotations

import copy
import functools
import os
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / "recipes" / "config"
PRIMARY_CONFIG = "recipe"
LAUNCHER = REPO / "recipes" / "run.sh"
SETUPS = sorted(path.stem for path in (CONFIG_DIR / "setup").glob("*.yaml"))
NAME_KEYS = ("trainer.experiment_name", "trainer.default_local_dir", "actor_rollout_ref.rollout.trace.experiment_name")
FSDP_KEYS = ("actor_rollout_ref.actor.fsdp_config.", "actor_rollout_ref.ref.fsdp_config.")
MEGATRON_KEYS = ("model_engine", "actor_rollout_ref.actor.megatron.", "actor_rollout_ref.ref.megatron.")


@functools.cache
def _compose(setup: str, overrides: tuple[str, ...]) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return hydra_compose(PRIMARY_CONFIG, overrides=[f"setup={setup}", *overrides])


def compose(setup: str, overrides: tuple[str, ...] = ()) -> DictConfig:
    """The config ``bash recipes/run.sh <setup> <overrides>`` runs with (a copy: callers may change it)."""
    return copy.deepcopy(_compose(setup, tuple(overrides)))


def flat(value, key: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists are values)."""
    if not isinstance(value, dict):
        return {key: value}
    return {
        path: item for name, child in value.items() for path, item in flat(child, f"{key}.{name}".lstrip(".")).items()
    }


@functools.cache
def resolved(setup: str, overrides: tuple[str, ...] = ()) -> dict:
    """The composed config with every interpolation resolved, as flat ``key: value`` pairs (shared: do not change)."""
    return flat(OmegaConf.to_container(_compose(setup, overrides), resolve=True))


# Every setup (paper, section 6 of the method notes; docs/recipes.md).
SHARED_VALUES = {
    "algorithm.adv_estimator": "grpo",
    "algorithm.use_kl_in_reward": False,
    "data.dataloader_num_workers": 0,
    "data.filter_overlong_prompts": True,
    "data.truncation": "error",
    "actor_rollout_ref.model.enable_gradient_checkpointing": True,
    "actor_rollout_ref.model.use_remove_padding": True,
    "actor_rollout_ref.actor.entropy_coeff": 0,
    "actor_rollout_ref.actor.kl_loss_coef": 0.001,
    "actor_rollout_ref.actor.kl_loss_type": "low_var_kl",
    "actor_rollout_ref.actor.optim.lr": 1e-6,
    "actor_rollout_ref.actor.use_dynamic_bsz": True,
    "actor_rollout_ref.actor.use_kl_loss": True,
    "actor_rollout_ref.rollout.gpu_memory_utilization": 0.6,
    "actor_rollout_ref.rollout.n": 8,
    "actor_rollout_ref.rollout.name": "vllm",
    "reward.custom_reward_function.name": "compute_score",
    "trainer.critic_warmup": 0,
    "trainer.logger": ["console"],
    "trainer.n_gpus_per_node": 8,
    "trainer.nnodes": 1,
    "trainer.project_name": "verl-gain",
    "trainer.save_freq": 50,
    "trainer.test_freq": 10,
    "trainer.total_training_steps": 200,
    "trainer.val_before_train": True,
    "gain.enable": True,
}
DEEPSCALER_VALIDATION = ("math/test", "aime2024/test")


@dataclass(frozen=True)
class Pinned:
    """One paper setup. ``train``/``val``: data files under the data root, without ``.parquet``; ``prompts``: per
    step (the mini-batch is a quarter of them); ``tokens``: per GPU micro-batch; ``vllm_tp``: the rollout's tensor
    parallel size; ``offload``: the actor's parameters and optimizer; ``megatron_tp``: the Megatron engine's tensor
    parallel size (None: FSDP)."""

    model: str
    name: str
    train: tuple[str, ...]
    val: tuple[str, ...]
    prompts: int
    prompt_length: int
    response_length: int
    tokens: int
    reward: str = "math_reward"
    vllm_tp: int = 1
    offload: bool = False
    megatron_tp: int | None = None


QWEN_MATH_7B = dict(
    model="Qwen/Qwen2.5-Math-7B-Instruct",
    train=("deepscaler/train",),
    val=DEEPSCALER_VALIDATION,
    prompts=1024,
    prompt_length=1024,
    response_length=3000,
    tokens=12288,
    vllm_tp=2,
    offload=True,
)
PINNED = {
    "gsm8k_qwen2.5-0.5b-instruct": Pinned(
        "Qwen/Qwen2.5-0.5B-Instruct",
        "qwen2.5-0.5b-instruct-gsm8k",
        ("gsm8k/train",),
        ("gsm8k/test",),
        256,
        512,
        512,
        24576,
    ),
    "math_qwen2.5-0.5b-instruct": Pinned(
        "Qwen/Qwen2.5-0.5B-Instruct",
        "qwen2.5-0.5b-instruct-math",
        ("math/train",),
        ("math/test",),
        256,
        1024,
        512,
        24576,
    ),
    "deepscaler_qwen2.5-math-1.5b-instruct": Pinned(
        "Qwen/Qwen2.5-Math-1.5B-Instruct",
        "qwen2.5-math-1.5b-instruct-deepscaler",
        ("deepscaler/train",),
        DEEPSCALER_VALIDATION,
        1024,
        1024,
        3000,
        16384,
    ),
    "deepscaler_qwen2.5-math-7b-instruct": Pinned(name="qwen2.5-math-7b-instruct-deepscaler", **QWEN_MATH_7B),
    "deepscaler_qwen2.5-math-7b-instruct_megatron": Pinned(
        name="qwen2.5-math-7b-instruct-deepscaler-megatron", megatron_tp=2, **QWEN_MATH_7B
    ),
    "deepscaler_llama3.2-3b-instruct": Pinned(
        "meta-llama/Llama-3.2-3B-Instruct",
        "llama3.2-3b-instruct-deepscaler",
        ("deepscaler/train",),
        DEEPSCALER_VALIDATION,
        1024,
        1024,
        8192,
        18432,
    ),
    "deepcoder_qwen2.5-coder-3b-instruct": Pinned(
        "Qwen/Qwen2.5-Coder-3B-Instruct",
        "qwen2.5-coder-3b-instruct-deepcoder",
        ("deepcoder/train",),
        ("humaneval/test",),
        1024,
        2048,
        8192,
        20480,
        reward="code_reward",
    ),
}


def engine_values(pinned: Pinned) -> dict:
    """The FSDP or Megatron settings of a setup: the reference model offloaded, the actor as ``offload`` says."""
    if pinned.megatron_tp is None:
        return {
            "actor_rollout_ref.actor.fsdp_config.param_offload": pinned.offload,
            "actor_rollout_ref.actor.fsdp_config.optimizer_offload": pinned.offload,
            "actor_rollout_ref.ref.fsdp_config.param_offload": True,
        }
    parallel = {"tensor_model_parallel_size": pinned.megatron_tp, "pipeline_model_parallel_size": 1}
    parallel["context_parallel_size"] = 1
    return {
        "model_engine": "megatron",
        **{
            f"actor_rollout_ref.{role}.megatron.{key}": size
            for role in ("actor", "ref")
            for key, size in parallel.items()
        },
        "actor_rollout_ref.actor.megatron.sequence_parallel": True,
        "actor_rollout_ref.actor.megatron.param_offload": pinned.offload,
        "actor_rollout_ref.actor.megatron.optimizer_offload": pinned.offload,
        "actor_rollout_ref.ref.megatron.param_offload": True,
    }


def expected_values(setup: str) -> dict:
    """Every value the setup's old run script set, as the composed config holds it (GAIN on, default paths)."""
    pinned = PINNED[setup]
    home = os.environ["HOME"]
    data = f"{home}/data/verl-gain"
    experiment = f"{pinned.name}-gain"
    tokens = (
        "actor_rollout_ref.actor.ppo_max_token_len_per_gpu",
        "actor_rollout_ref.ref.log_prob_max_token_len_per_gpu",
        "actor_rollout_ref.rollout.max_num_batched_tokens",
        "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu",
    )
    return {
        **SHARED_VALUES,
        "data.train_files": [f"{data}/{file}.parquet" for file in pinned.train],
        "data.val_files": [f"{data}/{file}.parquet" for file in pinned.val],
        "data.train_batch_size": pinned.prompts,
        "actor_rollout_ref.actor.ppo_mini_batch_size": pinned.prompts // 4,
        "data.max_prompt_length": pinned.prompt_length,
        "data.max_response_length": pinned.response_length,
        "actor_rollout_ref.model.path": pinned.model,
        **dict.fromkeys(tokens, pinned.tokens),
        "actor_rollout_ref.rollout.tensor_model_parallel_size": pinned.vllm_tp,
        **engine_values(pinned),
        "reward.custom_reward_function.path": f"pkg://verl_gain.rewards.{pinned.reward}",
        "trainer.experiment_name": experiment,
        "trainer.default_local_dir": f"{home}/checkpoints/verl-gain/{experiment}",
    }

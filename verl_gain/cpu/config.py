"""CPU defaults for verl's trainer config, applied only when ``trainer.device=cpu``.

Two kinds of values (both skipped for keys the user set on the command line):

- ``CONFIG_ADAPTATIONS`` (``verl_gain.cpu.adaptations``): what the trainer needs on CPU (sdpa attention, the
  precision, no torch.compile, FSDP2, the hf rollout, logical GPUs and CPUs for Ray). A user value that cannot work on
  CPU (flash-attention, a GPU rollout, Megatron, an unknown precision) is refused with a one-line message.
- ``CPU_FRIENDLY_DEFAULTS``: sizes that suit a laptop or CI runner (two trainer workers, one agent-loop worker, one
  reward worker, no dataloader subprocesses, console logging).

The precision: ``cpu.precision`` (``auto``, ``bf16``, ``fp32``) is resolved first (``auto``: bf16 where the CPU has
bf16 instructions, else fp32) and written back, and verl's own keys follow it (actor and reference
``fsdp_config.mixed_precision``, ``rollout.dtype``) unless they are given on the command line.

The CPU environment (``VERL_PLATFORM``, ``VERL_USE_EXTERNAL_MODULES``, ``VERL_GAIN_CPU_WITHOUT_MEGATRON``;
``verl_gain/cpu/environment.py``) is added to the Ray job's runtime env so that every actor of the run, the caller's
own included, starts on the CPU platform.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf, open_dict

from verl_gain.cpu.adaptations import CONFIG_ADAPTATIONS, PRECISION_KEY
from verl_gain.cpu.environment import EXTERNAL_MODULES_ENV, HF_ROLLOUT_NAME, WITHOUT_MEGATRON_ENV, worker_env_vars
from verl_gain.inference import AUTO, InferenceSettingError, PrecisionChoice, resolve_cpu_precision

CPU_DEVICE = "cpu"
DEFAULT_CPU_WORKERS = 2
"""Trainer workers (FSDP data-parallel ranks) of a CPU run: two exercise data parallelism and fit a 2-core laptop."""
GPU_ROLLOUTS = ("vllm", "sglang", "trtllm")
FLASH_ATTENTION_PREFIX = "flash_attention"
SUPPORTED_STRATEGIES = ("fsdp2",)
RUNTIME_ENV_VARS_KEY = "ray_kwargs.ray_init.runtime_env.env_vars"


@dataclass(frozen=True)
class FriendlyDefault:
    """A config value that suits a small CPU run (not required; the user may set any other value)."""

    key: str
    value: object
    why: str


CPU_FRIENDLY_DEFAULTS: tuple[FriendlyDefault, ...] = (
    FriendlyDefault("trainer.n_gpus_per_node", DEFAULT_CPU_WORKERS, "trainer workers (data-parallel ranks)"),
    FriendlyDefault("trainer.logger", ["console"], "wandb needs network access"),
    FriendlyDefault(
        "actor_rollout_ref.rollout.tensor_model_parallel_size",
        1,
        "one hf rollout server per trainer worker: generation runs in parallel across workers",
    ),
    FriendlyDefault("actor_rollout_ref.rollout.agent.num_workers", 1, "each agent-loop worker is a process"),
    FriendlyDefault("reward.num_workers", 1, "each reward worker is a process"),
    FriendlyDefault(
        "transfer_queue.backend.SimpleStorage.num_data_storage_units", 1, "each storage unit is a Ray actor"
    ),
    FriendlyDefault("data.dataloader_num_workers", 0, "dataloader subprocesses cost memory and start-up time"),
)


class CPUConfigError(ValueError):
    """A config value that cannot work with ``trainer.device=cpu``."""


def is_cpu_run(config: DictConfig) -> bool:
    """Whether ``config`` asks for the CPU backend (``trainer.device=cpu``)."""
    return str(OmegaConf.select(config, "trainer.device", default="")).lower() == CPU_DEVICE


def override_keys(overrides: Iterable[str]) -> set[str]:
    """Config keys named by hydra command-line overrides (``key=value``, ``+key=value``, ``++key=value``, ``~key``)."""
    keys = set()
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~").strip()
        if key:
            keys.add(key)
    return keys


def _set(config: DictConfig, key: str, value: object) -> None:
    with open_dict(config):
        OmegaConf.update(config, key, value, merge=False, force_add=True)


def resolve_precision(config: DictConfig) -> PrecisionChoice:
    """Resolve ``cpu.precision`` (default ``auto``) on this machine and write the result (``bf16`` or ``fp32``) back.

    The driver decides for every worker: a CPU run's workers share the driver's node (a cluster of unlike CPUs should
    name the precision).

    Raises:
        CPUConfigError: an unknown precision name.
    """
    try:
        choice = resolve_cpu_precision(OmegaConf.select(config, PRECISION_KEY, default=AUTO), setting=PRECISION_KEY)
    except InferenceSettingError as err:
        raise CPUConfigError(str(err)) from None
    _set(config, PRECISION_KEY, choice.precision)
    return choice


CPU_GROUP = PRECISION_KEY.split(".")[0]
"""The ``cpu:`` config group (``verl_gain_trainer.yaml``): read by the CPU backend only."""


def drop_cpu_group(config: DictConfig) -> None:
    """Off the CPU backend: check the ``cpu.precision`` name (a typo is refused on any device), then remove the
    group, so that verl receives exactly the config of ``python -m verl.trainer.main_ppo``.

    Raises:
        CPUConfigError: an unknown precision name.
    """
    try:
        resolve_cpu_precision(OmegaConf.select(config, PRECISION_KEY, default=AUTO), setting=PRECISION_KEY)
    except InferenceSettingError as err:
        raise CPUConfigError(str(err)) from None
    with open_dict(config):
        config.pop(CPU_GROUP, None)


def validate_cpu_config(config: DictConfig) -> None:
    """Refuse, with a one-line fix, values that cannot run on the CPU backend."""
    rollout = OmegaConf.select(config, "actor_rollout_ref.rollout.name")
    if rollout in GPU_ROLLOUTS:
        raise CPUConfigError(
            f"actor_rollout_ref.rollout.name={rollout} needs a GPU: use actor_rollout_ref.rollout.name="
            f"{HF_ROLLOUT_NAME} with trainer.device=cpu"
        )
    strategy = OmegaConf.select(config, "actor_rollout_ref.actor.strategy")
    if strategy not in SUPPORTED_STRATEGIES:
        raise CPUConfigError(
            f"actor_rollout_ref.actor.strategy={strategy} is not supported on CPU: use "
            f"actor_rollout_ref.actor.strategy={SUPPORTED_STRATEGIES[0]}"
        )
    attention = OmegaConf.select(config, "actor_rollout_ref.model.override_config.attn_implementation", default=None)
    if attention is not None and str(attention).startswith(FLASH_ATTENTION_PREFIX):
        raise CPUConfigError(
            f"attn_implementation={attention} needs CUDA: use "
            "+actor_rollout_ref.model.override_config.attn_implementation=sdpa"
        )


def apply_cpu_defaults(config: DictConfig, user_overrides: Iterable[str] = ()) -> DictConfig:
    """Apply the CPU adaptations and defaults to ``config`` in place, only if ``trainer.device=cpu``.

    Args:
        config: verl's composed trainer config (``ppo_trainer`` plus overrides).
        user_overrides: the hydra command-line overrides; the keys they name keep the user's value.

    Returns:
        ``config`` (modified in place when it is a CPU run, untouched otherwise).

    Raises:
        CPUConfigError: a value the user set cannot work on CPU.
    """
    if not is_cpu_run(config):
        return config
    choice = resolve_precision(config)
    print(f"[verl-gain] CPU backend precision: {choice.precision} ({choice.reason})", flush=True)
    if choice.warning:
        print(f"[verl-gain] warning: {choice.warning}", flush=True)
    user_keys = override_keys(user_overrides)
    for default in CPU_FRIENDLY_DEFAULTS:
        if default.key not in user_keys:
            _set(config, default.key, default.value)
    for adaptation in CONFIG_ADAPTATIONS:
        if adaptation.key not in user_keys:
            value = adaptation.value(config) if callable(adaptation.value) else adaptation.value
            _set(config, adaptation.key, value)
    env_vars = dict(OmegaConf.select(config, RUNTIME_ENV_VARS_KEY, default=None) or {})
    cpu_env = {**worker_env_vars(env_vars.get(EXTERNAL_MODULES_ENV, "")), WITHOUT_MEGATRON_ENV: "1"}
    _set(config, RUNTIME_ENV_VARS_KEY, {**env_vars, **cpu_env})
    validate_cpu_config(config)
    return config

"""``python -m verl_gain.main``: verl's PPO/GRPO trainer with verl-gain's additions (GAIN sampling, CPU backend).

A thin hydra entry point over verl's ``ppo_trainer`` config (``verl_gain/trainer/config/verl_gain_trainer.yaml``
extends it through hydra's search path). With ``trainer.device=cpu``, or when no accelerator is present and the
device was not set, it runs on the CPU backend (``verl_gain.cpu``): the CPU platform is selected in every process
and the CPU defaults are applied to the config. Everything else is verl's: ``run`` hands the config to
``verl.trainer.main_ppo.run_ppo`` with verl's V1 task runner (``trainer.use_v1=true``, the default) or the legacy
one (``trainer.use_v1=false``), or with task runner classes passed by the caller. With ``gain.enable=true`` the
GAIN config is checked first and the GAIN task runners run instead (``verl_gain.trainer.entry``).

    python -m verl_gain.main trainer.device=cpu actor_rollout_ref.model.path=... data.train_files=... ...
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

import hydra
from omegaconf import DictConfig

from verl_gain.cpu.adaptations import AdaptationTargetMissing
from verl_gain.cpu.config import CPU_DEVICE, CPUConfigError, apply_cpu_defaults, is_cpu_run, override_keys
from verl_gain.trainer import compat
from verl_gain.trainer.entry import GainConfigError, check_gain_config, gain_enabled, gain_task_runners
from verl_gain.verl_version import UnsupportedVerlVersion

CONFIG_PATH = "trainer/config"
CONFIG_NAME = "verl_gain_trainer"
DEVICE_KEY = "trainer.device"


def select_device(config: DictConfig, user_overrides: Iterable[str] = ()) -> str:
    """Set ``trainer.device=cpu`` when no accelerator is present and the user did not choose a device.

    Returns the device the run will use.
    """
    if not is_cpu_run(config) and DEVICE_KEY not in override_keys(user_overrides):
        from verl_gain.cpu.backend import accelerator_available

        if not accelerator_available():
            print("[verl-gain] no accelerator found: running on the CPU backend (trainer.device=cpu)", flush=True)
            config.trainer.device = CPU_DEVICE
    return str(config.trainer.device)


def prepare_config(config: DictConfig, user_overrides: Iterable[str] = ()) -> DictConfig:
    """Everything ``run`` does before handing over to verl: device, CPU backend and defaults, GAIN's checks, verl's
    validation.

    On CPU this selects the CPU platform in this process and the processes it starts, and applies the CPU defaults
    (``verl_gain.cpu.config.apply_cpu_defaults``; keys named in ``user_overrides`` keep the user's value).
    """
    user_overrides = list(user_overrides)
    select_device(config, user_overrides)
    if is_cpu_run(config):
        from verl_gain.cpu.backend import activate

        activate(training_run=True)
        apply_cpu_defaults(config, user_overrides)
    if gain_enabled(config):
        check_gain_config(config)  # GAIN's own refusals first: they say what to set
    compat.auto_set_device(config)
    compat.validate_config(
        config=config, use_reference_policy=compat.need_reference_policy(config), use_critic=compat.need_critic(config)
    )
    return config


def run(
    config: DictConfig,
    task_runner_class: type | None = None,
    legacy_task_runner_class: type | None = None,
    user_overrides: Iterable[str] = (),
) -> None:
    """Prepare ``config`` and run verl's trainer on it.

    Args:
        config: verl's trainer config (e.g. composed from ``verl_gain_trainer``).
        task_runner_class: Ray actor class run when ``trainer.use_v1`` is true (default: verl's ``TaskRunnerV1``).
        legacy_task_runner_class: Ray actor class run when ``trainer.use_v1`` is false (default: verl's
            ``main_ppo_v0.TaskRunner``).
        user_overrides: hydra command-line overrides; their keys are left alone by the CPU defaults.
    """
    prepare_config(config, user_overrides)
    gain_runner, gain_legacy_runner = gain_task_runners(config)  # (None, None) with gain.enable=false
    if config.trainer.use_v1:
        runner = task_runner_class or gain_runner or compat.TaskRunnerV1
    else:
        runner = legacy_task_runner_class or gain_legacy_runner or compat.TaskRunner
    compat.run_ppo(config, task_runner_class=runner)


def hydra_overrides() -> list[str]:
    """The command-line overrides of the running hydra job."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task)


@hydra.main(config_path=CONFIG_PATH, config_name=CONFIG_NAME, version_base=None)
def main(config: DictConfig) -> None:
    try:
        run(config, user_overrides=hydra_overrides())
    except (CPUConfigError, GainConfigError, UnsupportedVerlVersion, AdaptationTargetMissing) as error:
        sys.exit(f"verl-gain: {error}")


if __name__ == "__main__":
    main()

"""``python -m verl_gain.main``: verl's PPO/GRPO trainer with verl-gain's additions (GAIN sampling, CPU backend).

A thin hydra entry point over verl's ``ppo_trainer`` config (``verl_gain/trainer/config/verl_gain_trainer.yaml``
extends it through hydra's search path). It runs on the CPU backend (``verl_gain.cpu``) when ``trainer.device=cpu``
is given, or when the device was not set and the Ray cluster the run will use has no GPUs (``choose_device``: the
cluster at ``ray_kwargs.ray_init.address`` / ``RAY_ADDRESS`` / the last ``ray start`` on this machine, else the local
cluster ``ray.init`` would start here): a job launched from a CPU login node onto a GPU cluster stays on the GPUs.
On CPU the CPU platform is selected in every process and the CPU defaults are applied to the config. Everything else
is verl's: ``run`` hands the config to ``verl.trainer.main_ppo.run_ppo`` with verl's V1 task runner
(``trainer.use_v1=true``, the default) or the legacy one (``trainer.use_v1=false``), or with task runner classes
passed by the caller. With ``gain.enable=true`` the GAIN config is checked first and the GAIN task runners run
instead (``verl_gain.trainer.entry``); with ``gain.enable=false`` the ``gain`` group is removed, so verl receives
exactly the config ``python -m verl.trainer.main_ppo`` would give it.

    python -m verl_gain.main trainer.device=cpu actor_rollout_ref.model.path=... data.train_files=... ...
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from verl_gain.cpu.adaptations import AdaptationTargetMissing
from verl_gain.cpu.config import (
    CPU_DEVICE,
    CPUConfigError,
    apply_cpu_defaults,
    drop_cpu_group,
    is_cpu_run,
    override_keys,
)
from verl_gain.trainer import compat
from verl_gain.trainer.entry import GainConfigError, check_gain_config, gain_enabled, gain_task_runners
from verl_gain.verl_version import UnsupportedVerlVersion

CONFIG_PATH = "trainer/config"
CONFIG_NAME = "verl_gain_trainer"
DEVICE_KEY = "trainer.device"
GAIN_GROUP = "gain"
RAY_CLIENT_PREFIX = "ray://"
CLUSTER_CONNECT_TIMEOUT_S = 10.0
"""How long the device probe waits for the Ray cluster's address to accept a connection."""
"""Ray client addresses are connected to as given (``ray.init`` does not canonicalise them)."""


class DeviceChoiceError(RuntimeError):
    """The Ray cluster the run names cannot be reached to ask whether it has GPUs (one line: what to check)."""


def ray_cluster_has_gpus(config: DictConfig) -> bool:
    """Whether the Ray cluster verl's ``run_ppo`` will use offers GPUs.

    ``run_ppo`` calls ``ray.init(**ray_kwargs.ray_init)``, which connects to an existing cluster when
    ``ray_kwargs.ray_init.address`` or ``RAY_ADDRESS`` names one, or when ``ray start`` ran on this machine (Ray's
    ``canonicalize_bootstrap_address``, the function ``ray.init`` itself resolves the address with), and otherwise
    starts a local cluster here. An existing cluster is asked for its ``GPU`` resources (a short driver connection);
    a local one has the GPUs ``ray_init.num_gpus`` declares, else the accelerators this machine has.
    """
    import ray
    from ray._private.services import canonicalize_bootstrap_address

    init = OmegaConf.select(config, "ray_kwargs.ray_init", default=None) or {}
    address = init.get("address")
    if not (isinstance(address, str) and address.startswith(RAY_CLIENT_PREFIX)):
        address = canonicalize_bootstrap_address(address, init.get("_temp_dir"))
    if address is None:  # ray.init will start a local cluster on this machine
        if init.get("num_gpus") is not None:
            return float(init.num_gpus) > 0
        from verl_gain.cpu.backend import accelerator_available

        return accelerator_available()
    if ray.is_initialized():
        return ray.cluster_resources().get("GPU", 0) > 0
    unreachable = (
        f"cannot reach the Ray cluster at {address} to see whether it has GPUs; check "
        "ray_kwargs.ray_init.address / RAY_ADDRESS, or set trainer.device=cuda (or cpu) to skip the check"
    )
    if not _accepts_connections(address.removeprefix(RAY_CLIENT_PREFIX)):
        raise DeviceChoiceError(unreachable)  # ray.init would retry for minutes
    try:
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        return ray.cluster_resources().get("GPU", 0) > 0
    except ConnectionError as error:
        raise DeviceChoiceError(f"{unreachable} ({error})") from None
    finally:
        ray.shutdown()  # run_ppo connects again with the job's runtime environment


def _accepts_connections(host_port: str, timeout_s: float = CLUSTER_CONNECT_TIMEOUT_S) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout_s``."""
    import socket

    host, _, port = host_port.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def select_device(config: DictConfig, user_overrides: Iterable[str] = ()) -> str:
    """Set ``trainer.device=cpu`` when the user did not choose a device and the run's Ray cluster has no GPUs.

    A device given on the command line is kept as it is (``trainer.device=cuda`` never probes anything).
    Returns the device the run will use.
    """
    if not is_cpu_run(config) and DEVICE_KEY not in override_keys(user_overrides):
        if not ray_cluster_has_gpus(config):
            print("[verl-gain] the Ray cluster has no GPUs: running on the CPU backend (trainer.device=cpu)")
            config.trainer.device = CPU_DEVICE
    return str(config.trainer.device)


def drop_gain_group(config: DictConfig) -> None:
    """Remove the ``gain`` group (GAIN off), first resolving the values that refer to it (a recipe's experiment name
    says ``gain`` or ``uniform`` by ``${gain.enable}``); every other interpolation is left for verl to resolve."""
    if GAIN_GROUP not in config:
        return

    def resolve_references(node: Any) -> None:
        keys = node.keys() if OmegaConf.is_dict(node) else range(len(node))
        for key in keys:
            child = node._get_node(key)
            if OmegaConf.is_config(child):
                resolve_references(child)
            elif OmegaConf.is_interpolation(node, key) and f"{GAIN_GROUP}." in str(child._value()):
                node[key] = node[key]  # the value it resolves to now, while the group still exists

    for key in list(config.keys()):
        if key != GAIN_GROUP and OmegaConf.is_config(config._get_node(key)):
            resolve_references(config[key])
    with open_dict(config):
        config.pop(GAIN_GROUP)


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
    else:
        drop_cpu_group(config)  # read on CPU only: verl on a GPU gets exactly main_ppo's config
    if gain_enabled(config):
        check_gain_config(config)  # GAIN's own refusals first: they say what to set
    else:
        drop_gain_group(config)  # verl gets exactly the config of `python -m verl.trainer.main_ppo`
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
    except (
        CPUConfigError,
        DeviceChoiceError,
        GainConfigError,
        UnsupportedVerlVersion,
        AdaptationTargetMissing,
    ) as error:
        sys.exit(f"verl-gain: {error}")


if __name__ == "__main__":
    main()

"""Turning the CPU backend on, in the driver and in every process verl starts.

``activate()`` sets the CPU environment (``verl_gain/cpu/environment.py``) in the driver's environment (inherited by
the local Ray cluster it starts) and ``verl_gain.cpu.config.apply_cpu_defaults`` adds it to
``ray_kwargs.ray_init.runtime_env.env_vars`` (the job's environment, inherited by every actor of the job).
``activate_in_worker()`` runs in every process through the plugin: it installs the adaptations there.
"""

from __future__ import annotations

import os

from verl_gain.cpu.adaptations import install
from verl_gain.cpu.environment import CPU_PLATFORM, WITHOUT_MEGATRON_ENV, is_selected, worker_env_vars
from verl_gain.verl_version import check_verl_version


def accelerator_available() -> bool:
    """Whether one of verl's own platforms (CUDA, NPU, ROCm, ...) detects an accelerator on this host."""
    from verl.plugin.platform import PlatformRegistry

    for name in PlatformRegistry.registered_names():
        if name == CPU_PLATFORM:
            continue
        platform_class = PlatformRegistry.get(name)
        try:
            if platform_class is not None and platform_class().is_platform_available(use_smi_check=True):
                return True
        except Exception:  # a vendor probe that cannot run here means: not this vendor
            continue
    return False


def activate(training_run: bool = False) -> None:
    """Select the CPU platform in this process and the processes it starts; install the adaptations (idempotent).

    Args:
        training_run: this process drives a CPU training run (``python -m verl_gain.main``): megatron-core is kept
            out of it and of every process it starts (the adaptation ``no_megatron_import``).

    Raises ``UnsupportedVerlVersion`` (one line, what to install) if verl is outside the tested range.
    """
    check_verl_version()
    os.environ.update(worker_env_vars())
    if training_run:
        os.environ[WITHOUT_MEGATRON_ENV] = "1"
    install()
    from verl.plugin.platform import get_platform, set_platform

    from verl_gain.cpu.platform import PlatformCPU

    if not isinstance(get_platform(), PlatformCPU):  # resolved before VERL_PLATFORM was set
        set_platform(PlatformCPU())


def activate_in_worker() -> None:
    """Called by the plugin on ``import verl``: install the adaptations if this process runs on the CPU platform."""
    if is_selected():
        install()

"""Turning the CPU backend on, in the driver and in every process verl starts.

Selection is by environment, because verl resolves its platform once per process and Ray starts many processes
(task runner, trainer workers, agent-loop and reward workers, rollout servers, TransferQueue):

    VERL_PLATFORM=cpu                                 verl picks the platform registered as "cpu"
    VERL_USE_EXTERNAL_MODULES=...,verl_gain.cpu.plugin  verl imports the plugin on `import verl` (besides the
                                                      `verl.plugins` entry point), so the CPU adaptations are
                                                      installed even where entry points are disabled
    TQ_NUM_THREADS=<physical cores, at most 8>        TransferQueue's threads (quiet: no warning per batch)

``activate()`` sets both in the driver's environment (inherited by the local Ray cluster it starts) and
``verl_gain.cpu.config.apply_cpu_defaults`` adds them to ``ray_kwargs.ray_init.runtime_env.env_vars`` (the job's
environment, inherited by every actor of the job). ``worker_env_vars()`` returns them for actors started with a
``runtime_env`` of their own.
"""

from __future__ import annotations

import logging
import os

import psutil

from verl_gain.cpu.adaptations import check_verl_version, install

logger = logging.getLogger(__name__)

PLATFORM_ENV = "VERL_PLATFORM"
EXTERNAL_MODULES_ENV = "VERL_USE_EXTERNAL_MODULES"
PLUGIN_MODULE = "verl_gain.cpu.plugin"
CPU_PLATFORM = "cpu"
TQ_THREADS_ENV = "TQ_NUM_THREADS"
TQ_DEFAULT_THREADS = 8
"""TransferQueue's default torch threads for (de)serialising batches (transfer_queue/client.py:42); it warns on every
put/get when that exceeds the physical cores, so CPU runs cap it at the core count."""


def is_selected(environ: dict[str, str] | None = None) -> bool:
    """Whether this process runs on the CPU platform (``VERL_PLATFORM=cpu``)."""
    environ = os.environ if environ is None else environ
    return environ.get(PLATFORM_ENV, "").strip().lower() == CPU_PLATFORM


def worker_env_vars(extra_modules: str = "") -> dict[str, str]:
    """Environment every process of a CPU run needs.

    Keeps the modules already listed in this process's VERL_USE_EXTERNAL_MODULES and in ``extra_modules`` (a
    comma-separated list, e.g. a value the user put in the Ray runtime env).
    """
    listed = f"{os.environ.get(EXTERNAL_MODULES_ENV, '')},{extra_modules}"
    modules: list[str] = []
    for name in (name.strip() for name in listed.split(",")):
        if name and name not in modules:
            modules.append(name)
    if PLUGIN_MODULE not in modules:
        modules.append(PLUGIN_MODULE)
    physical_cores = psutil.cpu_count(logical=False) or 1
    tq_threads = os.environ.get(TQ_THREADS_ENV) or str(min(TQ_DEFAULT_THREADS, physical_cores))
    return {PLATFORM_ENV: CPU_PLATFORM, EXTERNAL_MODULES_ENV: ",".join(modules), TQ_THREADS_ENV: tq_threads}


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


def activate() -> None:
    """Select the CPU platform in this process and the processes it starts; install the adaptations (idempotent).

    Raises ``UnsupportedVerlVersion`` (one line, what to install) if verl is outside the tested range.
    """
    check_verl_version()
    os.environ.update(worker_env_vars())
    install()
    from verl.plugin.platform import get_platform, set_platform

    from verl_gain.cpu.platform import PlatformCPU

    if not isinstance(get_platform(), PlatformCPU):  # resolved before VERL_PLATFORM was set
        set_platform(PlatformCPU())


def activate_in_worker() -> None:
    """Called by the plugin on ``import verl``: install the adaptations if this process runs on the CPU platform."""
    if is_selected():
        install()

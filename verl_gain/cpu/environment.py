"""The environment of a CPU run: the variables that select the backend in every process, and the names under which
the backend registers with verl.

Selection is by environment, because verl resolves its platform once per process and Ray starts many processes
(task runner, trainer workers, agent-loop and reward workers, rollout servers, TransferQueue):

    VERL_PLATFORM=cpu                                   verl picks the platform registered as "cpu"
    VERL_USE_EXTERNAL_MODULES=...,verl_gain.cpu.plugin  verl imports the plugin on `import verl` (besides the
                                                        `verl.plugins` entry point), so the CPU adaptations are
                                                        installed even where entry points are disabled
    TQ_NUM_THREADS=<physical cores, at most 8>          TransferQueue's threads (quiet: no warning per batch)
    VERL_GAIN_CPU_WITHOUT_MEGATRON=1                    set by the CPU trainer defaults: megatron-core is not
                                                        imported (the adaptation ``no_megatron_import``)

Kept free of verl and of the other CPU modules: the rollout server, the adaptations and the config defaults all
read it.
"""

from __future__ import annotations

import os

import psutil

PLATFORM_ENV = "VERL_PLATFORM"
EXTERNAL_MODULES_ENV = "VERL_USE_EXTERNAL_MODULES"
PLUGIN_MODULE = "verl_gain.cpu.plugin"
CPU_PLATFORM = "cpu"
"""``VERL_PLATFORM`` value and verl platform-registry key of the CPU platform (``verl_gain/cpu/platform.py``)."""
HF_ROLLOUT_NAME = "hf"
"""``actor_rollout_ref.rollout.name`` of the Hugging Face rollout backend (``verl_gain/cpu/rollout.py``)."""
WITHOUT_MEGATRON_ENV = "VERL_GAIN_CPU_WITHOUT_MEGATRON"
"""Set to "1" in every process of a CPU training run: the CPU backend refuses the Megatron engine, so megatron-core,
which verl imports in every process when it is installed, is kept out (``verl_gain/cpu/adaptations.py``)."""
TQ_THREADS_ENV = "TQ_NUM_THREADS"
TQ_DEFAULT_THREADS = 8
"""TransferQueue's default torch threads for (de)serialising batches (transfer_queue/client.py:42); it warns on every
put/get when that exceeds the physical cores, so CPU runs cap it at the core count."""


def is_selected(environ: dict[str, str] | None = None) -> bool:
    """Whether this process runs on the CPU platform (``VERL_PLATFORM=cpu``)."""
    environ = os.environ if environ is None else environ
    return environ.get(PLATFORM_ENV, "").strip().lower() == CPU_PLATFORM


def physical_cores() -> int:
    """CPU cores of this machine, hyper-threads not counted (at least 1): the most torch threads that help."""
    return psutil.cpu_count(logical=False) or 1


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
    tq_threads = os.environ.get(TQ_THREADS_ENV) or str(min(TQ_DEFAULT_THREADS, physical_cores()))
    return {PLATFORM_ENV: CPU_PLATFORM, EXTERNAL_MODULES_ENV: ",".join(modules), TQ_THREADS_ENV: tq_threads}

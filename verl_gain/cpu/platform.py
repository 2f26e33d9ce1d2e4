"""verl's platform interface for a machine without an accelerator: every tensor lives in host memory.

verl 0.9 asks its platform singleton (``verl.plugin.platform.get_platform()``) for the device name, the torch device
module, the process-group backend and the Ray resource name. ``PlatformCPU`` answers for host memory:

    device name        "cpu"   (tensors, device meshes, ``.to(get_device_id())``)
    device module      ``torch.cpu`` plus no-op cache/IPC calls, host-memory statistics and the CPU RNG
    collectives        gloo
    Ray resource name  "GPU"   (the CPU backend declares logical GPUs with ``ray.init(num_gpus=N)`` so that
                                verl's hard-coded ``use_gpu=True`` resource pools schedule one worker per slot)

It is never auto-detected (``is_platform_available`` is False): it is selected by name with ``VERL_PLATFORM=cpu``,
which ``verl_gain.cpu.backend.activate`` sets in the driver and in every Ray worker.
"""

from __future__ import annotations

import os
import resource
import types
from contextlib import contextmanager
from typing import Any

import torch
from verl.plugin.platform import PlatformBase

PLATFORM_NAME = "cpu"
"""Registry key and ``VERL_PLATFORM`` value of this platform."""
DEVICE_NAME = "cpu"
COLLECTIVE_BACKEND = "gloo"
RAY_RESOURCE_NAME = "GPU"
"""Logical GPUs (one per trainer worker) stand for worker slots; see the module docstring."""
VISIBLE_DEVICES_ENV = "VERL_GAIN_CPU_VISIBLE_DEVICES"
"""A variable nothing reads: the platform interface needs a name, and CUDA_VISIBLE_DEVICES must stay untouched."""
RUSAGE_MAXRSS_BYTES = 1024
"""``ru_maxrss`` is in KiB on Linux."""


def _host_memory_info() -> tuple[int, int]:
    """(available, total) host memory in bytes, as ``torch.cuda.mem_get_info`` reports device memory."""
    page = os.sysconf("SC_PAGE_SIZE")
    return os.sysconf("SC_AVPHYS_PAGES") * page, os.sysconf("SC_PHYS_PAGES") * page


def _resident_bytes() -> int:
    """Resident set size of this process in bytes (what the allocator statistics mean on the host)."""
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def _peak_resident_bytes() -> int:
    # The kernel updates the high-water mark lazily: it can trail the current resident size.
    return max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * RUSAGE_MAXRSS_BYTES, _resident_bytes())


def _no_op(*args: Any, **kwargs: Any) -> None:
    return None


def _build_device_module() -> types.ModuleType:
    """``torch.cpu`` with the ``torch.cuda`` calls verl makes that ``torch.cpu`` lacks.

    Cache, IPC and memory-fraction calls are no-ops (there is no device cache); memory statistics report the
    process's host memory; the RNG calls act on the CPU generator.
    """
    module = types.ModuleType("verl_gain.cpu.device_module", doc="torch.cpu extended with torch.cuda-style calls")
    for name in dir(torch.cpu):
        if not name.startswith("_"):
            setattr(module, name, getattr(torch.cpu, name))
    module.current_device = lambda: DEVICE_NAME
    module.empty_cache = _no_op
    module.ipc_collect = _no_op
    module.reset_peak_memory_stats = _no_op
    module.set_per_process_memory_fraction = _no_op
    module.mem_get_info = lambda device=None: _host_memory_info()
    module.memory_allocated = lambda device=None: _resident_bytes()
    module.memory_reserved = lambda device=None: _resident_bytes()
    module.max_memory_allocated = lambda device=None: _peak_resident_bytes()
    module.max_memory_reserved = lambda device=None: _peak_resident_bytes()
    module.get_device_name = lambda device=None: DEVICE_NAME
    module.get_rng_state = lambda device=None: torch.get_rng_state()
    module.set_rng_state = lambda state, device=None: torch.set_rng_state(state)
    module.manual_seed = torch.manual_seed
    module.manual_seed_all = torch.manual_seed
    return module


CPU_DEVICE_MODULE = _build_device_module()


class PlatformCPU(PlatformBase):
    """verl platform for host-only runs (implements ``verl.plugin.platform.PlatformBase``)."""

    @property
    def device_name(self) -> str:
        return DEVICE_NAME

    @property
    def vendor_name(self) -> str:
        return PLATFORM_NAME

    @property
    def device_module(self) -> types.ModuleType:
        return CPU_DEVICE_MODULE

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        # Never auto-detected: a machine without an accelerator gets this platform only through VERL_PLATFORM=cpu,
        # so installing verl-gain does not change what stock verl picks.
        return False

    def current_device(self) -> str:  # type: ignore[override]
        # A string, not an index: verl moves tensors with `.to(get_device_id())`, and an int would mean cuda:N.
        return DEVICE_NAME

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: int | None = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return None, None

    def communication_backend_name(self) -> str:
        return COLLECTIVE_BACKEND

    def visible_devices_envvar(self) -> str:
        return VISIBLE_DEVICES_ENV

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return RAY_RESOURCE_NAME

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None

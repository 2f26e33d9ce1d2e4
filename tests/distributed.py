"""Run a function on N CPU processes joined by a gloo process group (sharded-capture tests: Megatron, Ulysses).

Each process initialises ``torch.distributed`` with the gloo backend, runs ``fn(rank, world_size)`` and saves what
it returns to ``out_dir/rank<r>.pt``; the parent loads the results and asserts on them, so a wrong number fails the
test that owns it while an exception in any process fails the whole run with that process's traceback.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

SPAWN_TIMEOUT_S = 300
"""A hung collective must fail the test run instead of stalling CI (normal runs take well under a minute)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _entry(rank: int, world_size: int, port: int, fn: Callable[[int, int], Any], out_dir: str) -> None:
    warnings.filterwarnings("ignore")  # megatron-core warns at import that Transformer Engine / Apex are missing
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), HF_HUB_OFFLINE="1")
    torch.set_num_threads(1)
    from verl_gain.cpu.backend import activate

    activate()  # verl's CPU platform: verl helpers that place tensors on "the device" use the CPU
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        result = fn(rank, world_size)
    finally:
        if "megatron.core" in sys.modules:  # a Megatron test set up megatron-core's parallel state
            from megatron.core import parallel_state as mpu

            mpu.destroy_model_parallel()
        dist.destroy_process_group()
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")


def run_on_gloo(fn: Callable[[int, int], Any], world_size: int, out_dir: Path) -> list[Any]:
    """``fn(rank, world_size)`` on ``world_size`` spawned processes; the list of their results, by rank."""
    out_dir.mkdir(parents=True, exist_ok=True)
    context = mp.start_processes(
        _entry, args=(world_size, _free_port(), fn, str(out_dir)), nprocs=world_size, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + SPAWN_TIMEOUT_S
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            raise TimeoutError(f"gloo processes did not finish within {SPAWN_TIMEOUT_S} s (a hung collective?)")
    return [torch.load(out_dir / f"rank{rank}.pt", weights_only=False) for rank in range(world_size)]

"""Every verl-version-specific import of the GAIN integration, in one place (tested against verl 0.9.1).

A verl upgrade is checked here first: each name below is something the integration subclasses, calls or reads.
``check_verl_version`` refuses a release outside the tested range with a message instead of half-working.
"""

from __future__ import annotations

from packaging.version import Version

SUPPORTED_VERL = (Version("0.9.0"), Version("0.10.0"))
"""Tested: verl 0.9.1. The seams used (trainer hooks, worker registry, dataset class option) changed in 0.8."""


def check_verl_version() -> str:
    """The installed verl version, or a ValueError saying which range verl-gain supports."""
    import verl

    version = Version(verl.__version__)
    low, high = SUPPORTED_VERL
    if not low <= version < high:
        raise ValueError(
            f"verl-gain supports verl >={low},<{high} (tested with 0.9.1) but verl {version} is installed: "
            f"pip install 'verl>={low},<{high}' torch==<your torch>"
        )
    return str(version)


check_verl_version()

import transfer_queue as tq  # noqa: E402 - the V1 trainer's data plane
from verl import DataProto  # noqa: E402
from verl.single_controller.base.decorator import (  # noqa: E402
    Dispatch,
    make_nd_compute_dataproto_dispatch_fn,
    register,
)
from verl.trainer.main_ppo import TaskRunnerV1, run_ppo  # noqa: E402
from verl.trainer.main_ppo_v0 import BaseTaskRunner, TaskRunner  # noqa: E402
from verl.trainer.ppo.ray_trainer import RayPPOTrainer, Role  # noqa: E402
from verl.trainer.ppo.utils import create_rl_dataset, need_critic, need_reference_policy  # noqa: E402
from verl.trainer.ppo.v1 import PPOTrainerSync, get_trainer_cls  # noqa: E402
from verl.utils.checkpoint.checkpoint_manager import find_latest_ckpt_path  # noqa: E402
from verl.utils.config import validate_config  # noqa: E402
from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn  # noqa: E402
from verl.utils.tensordict_utils import assign_non_tensor, get_non_tensor_data  # noqa: E402
from verl.utils.ulysses import get_ulysses_sequence_parallel_group  # noqa: E402
from verl.workers.engine_workers import ActorRolloutRefWorker  # noqa: E402

__all__ = [
    "ActorRolloutRefWorker",
    "BaseTaskRunner",
    "DataProto",
    "Dispatch",
    "PPOTrainerSync",
    "RLHFDataset",
    "RayPPOTrainer",
    "Role",
    "TaskRunner",
    "TaskRunnerV1",
    "assign_non_tensor",
    "check_verl_version",
    "collate_fn",
    "create_rl_dataset",
    "find_latest_ckpt_path",
    "get_non_tensor_data",
    "get_trainer_cls",
    "get_ulysses_sequence_parallel_group",
    "make_nd_compute_dataproto_dispatch_fn",
    "need_critic",
    "need_reference_policy",
    "register",
    "run_ppo",
    "tq",
    "validate_config",
]

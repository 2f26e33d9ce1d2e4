"""Every verl name the GAIN integration uses, in one place (tested against verl 0.9.1).

A verl upgrade is checked here first: each name below is something the integration subclasses, calls or reads, with
the verl module it comes from. Names are resolved on first use (PEP 562 module ``__getattr__``), so importing this
module costs nothing: the entry point can name ``validate_config`` without loading verl's worker stack, while the
trainer classes load what they subclass when they are defined. The first resolution checks the installed verl
against the supported range (``verl_gain/verl_version.py``) and raises ``UnsupportedVerlVersion`` (one line, what to
install) outside it.

    from verl_gain.trainer.compat import RayPPOTrainer          # resolved here, once
    from verl_gain.trainer import compat; compat.validate_config(...)
"""

from __future__ import annotations

import importlib
from typing import Any

from verl_gain.verl_version import check_verl_version

VERL_NAMES: dict[str, str] = {
    # entry point and task runners
    "auto_set_device": "verl.utils.device",
    "get_device_name": "verl.utils.device",
    "validate_config": "verl.utils.config",
    "omega_conf_to_dataclass": "verl.utils.config",
    "need_critic": "verl.trainer.ppo.utils",
    "need_reference_policy": "verl.trainer.ppo.utils",
    "create_rl_dataset": "verl.trainer.ppo.utils",
    "run_ppo": "verl.trainer.main_ppo",
    "TaskRunnerV1": "verl.trainer.main_ppo",
    "TaskRunner": "verl.trainer.main_ppo_v0",
    "BaseTaskRunner": "verl.trainer.main_ppo_v0",
    "AgentLoopManagerTQ": "verl.trainer.ppo.v1",
    "load_class_from_fqn": "verl.utils.import_utils",
    "load_extern_object": "verl.utils.import_utils",
    "configure_verl_logging": "verl.utils.logging_utils",
    "RayWorkerGroup": "verl.single_controller.ray",
    "copy_to_local": "verl.utils.fs",
    "is_non_local": "verl.utils.fs",
    # the reward function verl's reward workers call (GAIN checks its result's shape at start-up)
    "get_custom_reward_fn": "verl.trainer.ppo.reward",
    "get_default_compute_score": "verl.utils.reward_score",
    # trainers
    "PPOTrainerSync": "verl.trainer.ppo.v1",
    "RayPPOTrainer": "verl.trainer.ppo.ray_trainer",
    "Role": "verl.trainer.ppo.ray_trainer",
    # data
    "RLHFDataset": "verl.utils.dataset.rl_dataset",
    "collate_fn": "verl.utils.dataset.rl_dataset",
    "assign_non_tensor": "verl.utils.tensordict_utils",
    # the actor worker and its engines
    "ActorRolloutRefWorker": "verl.workers.engine_workers",
    "Dispatch": "verl.single_controller.base.decorator",
    "register": "verl.single_controller.base.decorator",
    "make_nd_compute_dataproto_dispatch_fn": "verl.single_controller.base.decorator",
    "MAGIC_ATTR": "verl.single_controller.base.decorator",
    "get_non_tensor_data": "verl.utils.tensordict_utils",
    "get_ulysses_sequence_parallel_group": "verl.utils.ulysses",
    "unwrap_model": "verl.utils.megatron_utils",
}
"""name -> the verl module it is imported from."""

OTHER_NAMES: dict[str, tuple[str, str | None]] = {
    "tq": ("transfer_queue", None),  # the V1 trainer's data plane (the module itself)
}
"""Names from verl's own dependencies: name -> (module, attribute or None for the module)."""

MEGATRON_ENGINE_MODULE = "verl.workers.engine.megatron.transformer_impl"
"""Where verl 0.9.1 defines ``MegatronEngine``; looked up in ``sys.modules`` only (never imported by verl-gain:
it is loaded by verl when a Megatron engine is built)."""

__all__ = sorted([*VERL_NAMES, *OTHER_NAMES])


def __getattr__(name: str) -> Any:
    if name in VERL_NAMES:
        check_verl_version()
        value = getattr(importlib.import_module(VERL_NAMES[name]), name)
    elif name in OTHER_NAMES:
        module_name, attribute = OTHER_NAMES[name]
        module = importlib.import_module(module_name)
        value = module if attribute is None else getattr(module, attribute)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # resolved once
    return value

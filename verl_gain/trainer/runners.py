"""Task runners (the Ray actor that builds and runs the trainer) for GAIN on verl 0.9's two trainer paths.

verl chooses its trainer class inside the runner, and offers no seam for it: ``TaskRunnerV1`` is a Ray actor class
(Ray forbids subclassing those) and ``TaskRunner.run`` builds ``RayPPOTrainer`` in its body. These runners are
therefore minimal re-implementations; each names the verl method it mirrors so that an upgrade can be checked
line by line. With ``gain.enable=false`` ``verl_gain.main`` uses verl's own runners instead.
"""

from __future__ import annotations

import os
import socket
from pprint import pprint

import ray
from omegaconf import DictConfig, OmegaConf

from verl_gain.trainer import compat
from verl_gain.trainer.compat import BaseTaskRunner
from verl_gain.trainer.curriculum import build_curriculum
from verl_gain.trainer.worker import GainActorRolloutRefWorker, use_gain_worker


@ray.remote
class GainTaskRunnerV1:
    """Mirrors verl 0.9.1 ``verl.trainer.main_ppo.TaskRunnerV1.run`` / ``init_agent_loop_manager`` with the trainer
    class ``GainPPOTrainerSync`` (only ``trainer.v1.trainer_mode=sync`` is supported; ``verl_gain.main`` checks)."""

    def run(self, config: DictConfig) -> None:
        from verl_gain.trainer.trainers import GainPPOTrainerSync

        compat.configure_verl_logging()
        config.transfer_queue.enable = True
        pprint(OmegaConf.to_container(config, resolve=True))
        OmegaConf.resolve(config)
        compat.tq.init(config.transfer_queue)
        trainer = None
        succeeded = False
        try:
            trainer = GainPPOTrainerSync(config=config)
            trainer.init()
            manager_fqn = config.actor_rollout_ref.rollout.get("agent", {}).get("agent_loop_manager_class")
            manager_cls = (
                compat.load_class_from_fqn(manager_fqn, "AgentLoopManager")
                if manager_fqn
                else compat.AgentLoopManagerTQ
            )
            manager = manager_cls.create(
                config=config,
                llm_client=trainer.get_llm_client(),
                teacher_client=trainer.get_teacher_client(),
                reward_loop_worker_handles=trainer.get_reward_handles(),
            )
            trainer.fit(manager)
            succeeded = True
        finally:
            try:
                tracking = getattr(trainer, "logger", None)
                if tracking is not None:
                    tracking.finish(exit_code=0 if succeeded else 1)
            finally:
                compat.tq.close()


class GainTaskRunner(BaseTaskRunner):
    """verl 0.9.1's legacy ``main_ppo_v0.TaskRunner`` for ``GainRayPPOTrainer``.

    Hook overridden: ``add_actor_rollout_worker`` (the actor role runs ``GainActorRolloutRefWorker``). ``run``
    mirrors ``TaskRunner.run`` (no seam for the trainer class) and adds the GAIN curriculum, whose sampler becomes
    the trainer's ``train_sampler``.
    """

    def add_actor_rollout_worker(self, config: DictConfig) -> tuple[type, type]:
        _, worker_group_cls = super().add_actor_rollout_worker(config)
        use_gain_worker(self.role_worker_mapping)
        return GainActorRolloutRefWorker, worker_group_cls

    def run(self, config: DictConfig) -> None:
        from verl_gain.trainer.trainers import GainRayPPOTrainer

        print(f"GainTaskRunner hostname: {socket.gethostname()}, PID: {os.getpid()}")
        pprint(OmegaConf.to_container(config, resolve=True))
        OmegaConf.resolve(config)
        self.add_actor_rollout_worker(config)
        self.add_critic_worker(config)
        self.add_reward_model_resource_pool(config)
        self.add_teacher_model_resource_pool(config)
        compat.validate_config(
            config=config,
            use_reference_policy=compat.need_reference_policy(config),
            use_critic=compat.need_critic(config),
        )
        model_config = compat.omega_conf_to_dataclass(config.actor_rollout_ref.model)
        tokenizer, processor = model_config.tokenizer, model_config.processor
        resource_pool_manager = self.init_resource_pool_mgr(config)
        train_dataset = compat.create_rl_dataset(
            config.data.train_files,
            config.data,
            tokenizer,
            processor,
            is_train=True,
            max_samples=config.data.get("train_max_samples", -1),
        )
        val_dataset = compat.create_rl_dataset(
            config.data.val_files,
            config.data,
            tokenizer,
            processor,
            is_train=False,
            max_samples=config.data.get("val_max_samples", -1),
        )
        curriculum = build_curriculum(config, len(train_dataset))
        trainer = GainRayPPOTrainer(
            config=config,
            tokenizer=tokenizer,
            processor=processor,
            role_worker_mapping=self.role_worker_mapping,
            resource_pool_manager=resource_pool_manager,
            ray_worker_group_cls=compat.RayWorkerGroup,
            train_dataset=train_dataset,
            val_dataset=val_dataset,
            collate_fn=compat.collate_fn,
            curriculum=curriculum,
        )
        trainer.init_workers()
        trainer.fit()


GainTaskRunnerRemote = ray.remote(num_cpus=1)(GainTaskRunner)
"""The Ray actor verl's ``run_ppo`` starts for the legacy path (``@ray.remote`` applied here, as verl's docs advise)."""

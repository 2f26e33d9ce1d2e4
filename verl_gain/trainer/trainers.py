"""verl 0.9's two PPO trainers with GAIN sampling: ``GainPPOTrainerSync`` (V1, ``trainer_mode=sync``) and
``GainRayPPOTrainer`` (legacy hybrid engine, ``trainer.use_v1=false``).

Each overrides named hooks only and calls verl's method inside; the GAIN work itself lives elsewhere:

1. before verl restores a checkpoint: the ranking key of every training row (``prepass.training_row_scores``: a
   scores file, or the pre-pass through the actor) becomes the curriculum's order; a projection of the window is
   printed before and after;
2. after verl restores a checkpoint: the curriculum is restored from the same step folder;
3. after each actor update: the step's rollouts move the window (``TrainerCurriculum.finish_step``); ``gain/``
   metrics go to verl's logger;
4. when verl saves a checkpoint: the curriculum state goes into the step folder first.

With each step's ``gain/`` metrics goes ``REWARD_FAILED_METRIC``: the rollouts whose reward function failed (and
scored 0) in that step, from the ``reward_failed`` extra info that every reward of ``verl_gain.rewards`` returns.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchdata.stateful_dataloader import StatefulDataLoader

from verl_gain.trainer.compat import PPOTrainerSync, RayPPOTrainer, collate_fn, tq
from verl_gain.trainer.curriculum import TrainerCurriculum, build_curriculum
from verl_gain.trainer.prepass import training_row_scores
from verl_gain.trainer.reward_shape import ACC_KEY, REWARD_EXTRA_INFO, rollout_acc
from verl_gain.trainer.worker import STEP_STATS_KEY, use_gain_worker

REWARD_FAILED_EXTRA_KEY = "reward_failed"
"""The extra-info key ``verl_gain.rewards.failsafe.REWARD_FAILED_KEY`` (spelled here: the trainer layer does not import
the rewards; ``tests/reliability/test_rewards_never_raise.py`` checks that the two agree)."""
REWARD_FAILED_METRIC = "reward/failed_count"
"""Step metric: rollouts of the step whose reward function failed (0 score, reason in ``reward_error``)."""


def failed_reward_count(flags: Any) -> float:
    """How many rollouts' rewards failed, from their ``reward_failed`` values (missing or None: not failed)."""
    return float(sum(float(flag) for flag in flags if flag is not None))


class GainScoresMixin:
    """The one step both trainers take before verl restores a checkpoint (host: a verl trainer with ``self.gain``,
    ``self.config``, ``self.tokenizer``, ``self.train_dataset``, ``self.actor_rollout_wg``,
    ``self.total_training_steps``)."""

    gain: TrainerCurriculum

    def _gain_attach_scores(self) -> None:
        """Project the window (only N known), attach the training rows' scores, project again with them."""
        self.gain.print_projection(self.total_training_steps)
        scores = training_row_scores(
            self.config, self.gain.settings, self.tokenizer, self.train_dataset, self.actor_rollout_wg
        )
        self.gain.attach_scores(scores)
        self.gain.print_projection(self.total_training_steps)


def _rows(tensor: torch.Tensor) -> np.ndarray:
    """``[R, F]`` fp64 from a per-trajectory field (TransferQueue hands a per-row vector back as a nested tensor)."""
    if tensor.is_nested:
        tensor = torch.stack(list(tensor.unbind()))
    return tensor.double().numpy()


def _build_train_dataloader(trainer: Any, sampler: Any) -> StatefulDataLoader:
    """The train loader verl builds (``PPOTrainer._init_dataloader``, ``RayPPOTrainer._create_dataloader``) with
    the GAIN sampler in place of ``create_rl_sampler``'s."""
    data = trainer.config.data
    return StatefulDataLoader(
        dataset=trainer.train_dataset,
        batch_size=data.get("gen_batch_size", None) or data.train_batch_size,
        num_workers=data["dataloader_num_workers"],
        drop_last=True,
        collate_fn=collate_fn,
        sampler=sampler,
    )


class GainPPOTrainerSync(GainScoresMixin, PPOTrainerSync):
    """verl 0.9's V1 synchronous trainer (``trainer/ppo/v1/trainer_sync.py``) with GAIN sampling.

    Hooks overridden (each calls verl's method):
    - ``_init_dataloader``: the train loader draws from the GAIN sampler.
    - ``_init_resource_pool_mgr``: the actor role runs ``GainActorRolloutRefWorker``.
    - ``_load_checkpoint``: scores (pre-pass) before verl's restore, the curriculum state after it.
    - ``step``: after verl's step, the finished trajectories (from TransferQueue) move the window (it holds still
      in critic warm-up steps, which update no actor, as on the legacy trainer, where ``_update_actor`` is not
      called then).
    - ``_save_checkpoint``: the curriculum state is saved with every checkpoint.
    """

    def _init_dataloader(self) -> None:
        super()._init_dataloader()
        self.gain = build_curriculum(self.config, len(self.train_dataset))
        self.train_dataloader = _build_train_dataloader(self, self.gain.sampler)

    def _init_resource_pool_mgr(self) -> None:
        super()._init_resource_pool_mgr()
        use_gain_worker(self.role_worker_mapping)

    def _load_checkpoint(self) -> None:
        self._gain_attach_scores()
        super()._load_checkpoint()
        self.gain.restore_with_checkpoint(self.config, self.global_steps)

    def step(self, metrics: dict, timing_raw: dict) -> Any:
        batch = super().step(metrics, timing_raw)
        if self.config.trainer.critic_warmup > self.global_steps:  # verl's test for "no actor update this step"
            metrics.update(self.gain.hold_step(self.global_steps))
            return batch
        # A colocated reward model writes the reward's extra keys as top-level fields (``acc`` among them); TQ
        # leaves out a selected field that no sample has.
        fields = ["uid", "extra_info", "extra_fields", "rm_scores", "data_source", ACC_KEY]
        if self.gain.settings.step_angle != "none":
            fields.append(STEP_STATS_KEY)
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
        reward_info = [(f or {}).get(REWARD_EXTRA_INFO) or {} for f in data["extra_fields"]]
        acc = rollout_acc(reward_info, list(data[ACC_KEY]) if ACC_KEY in data.keys() else None)
        sources = list(data["data_source"]) if "data_source" in data.keys() else None
        scores = np.array([float(t.sum()) for t in data["rm_scores"].unbind()])
        stats = _rows(data[STEP_STATS_KEY]) if STEP_STATS_KEY in fields else None  # [R, F]
        is_padding = np.array([bool(tag.get("is_padding", False)) for tag in batch.tags])
        metrics.update(
            self.gain.finish_step(
                self.global_steps, list(data["uid"]), list(data["extra_info"]), acc, scores, stats, is_padding, sources
            )
        )
        metrics[REWARD_FAILED_METRIC] = failed_reward_count(r.get(REWARD_FAILED_EXTRA_KEY) for r in reward_info)
        return batch

    def _save_checkpoint(self) -> None:
        self.gain.save_with_checkpoint(self.config, self.global_steps)
        super()._save_checkpoint()


class GainRayPPOTrainer(GainScoresMixin, RayPPOTrainer):
    """verl 0.9's legacy hybrid-engine ``RayPPOTrainer`` (``trainer/ppo/ray_trainer.py``) with GAIN sampling.

    The task runner passes the GAIN sampler as ``train_sampler`` and the GAIN worker class in the role mapping.
    Hooks overridden (each calls verl's method):
    - ``init_workers``: afterwards, keeps the output of the actor group's ``compute_log_prob`` (the legacy trainer
      keeps only the log-prob keys it knows, dropping the step angle).
    - ``_load_checkpoint``: scores (pre-pass) before verl's restore, the curriculum state after it.
    - ``_compute_old_log_prob``: adds the step angle to the returned batch.
    - ``_update_actor``: after the update, the step moves the window; ``gain/`` metrics ride on the actor metrics
      (the legacy logger is a local of ``fit``).
    - ``_save_checkpoint``: the curriculum state is saved with every checkpoint.
    """

    def __init__(self, *args: Any, curriculum: TrainerCurriculum, **kwargs: Any):
        self.gain = curriculum
        super().__init__(*args, train_sampler=curriculum.sampler, **kwargs)

    def init_workers(self) -> None:
        super().init_workers()
        compute_log_prob = self.actor_rollout_wg.compute_log_prob
        self._gain_last_log_prob_output = None

        def compute_log_prob_keeping_output(*args: Any, **kwargs: Any) -> Any:
            output = compute_log_prob(*args, **kwargs)
            self._gain_last_log_prob_output = output
            return output

        self.actor_rollout_wg.compute_log_prob = compute_log_prob_keeping_output

    def _load_checkpoint(self) -> Any:
        self._gain_attach_scores()
        result = super()._load_checkpoint()
        self.gain.restore_with_checkpoint(self.config, self.global_steps)
        return result

    def _compute_old_log_prob(self, batch: Any) -> Any:
        old_log_prob, mfu = super()._compute_old_log_prob(batch)
        output = self._gain_last_log_prob_output
        if output is not None and STEP_STATS_KEY in output.keys():
            old_log_prob.batch[STEP_STATS_KEY] = output[STEP_STATS_KEY].double()
        return old_log_prob, mfu

    def _update_actor(self, batch: Any) -> Any:
        stats = batch.batch.pop(STEP_STATS_KEY).numpy() if STEP_STATS_KEY in batch.batch.keys() else None  # [R, F]
        actor_output = super()._update_actor(batch)
        non_tensor = batch.non_tensor_batch
        acc = list(non_tensor[ACC_KEY]) if ACC_KEY in non_tensor else None
        sources = list(non_tensor["data_source"]) if "data_source" in non_tensor else None
        scores = batch.batch["token_level_scores"].sum(-1).double().numpy()
        is_padding = np.asarray(non_tensor["is_padding"], dtype=bool) if "is_padding" in non_tensor else None
        uids, extra_info = list(non_tensor["uid"]), list(non_tensor["extra_info"])
        gain_metrics = self.gain.finish_step(
            self.global_steps, uids, extra_info, acc, scores, stats, is_padding, sources
        )
        gain_metrics[REWARD_FAILED_METRIC] = failed_reward_count(non_tensor.get(REWARD_FAILED_EXTRA_KEY, ()))
        actor_output.meta_info.setdefault("metrics", {}).update(gain_metrics)
        return actor_output

    def _save_checkpoint(self) -> None:
        self.gain.save_with_checkpoint(self.config, self.global_steps)
        super()._save_checkpoint()

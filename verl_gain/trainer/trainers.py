"""verl 0.9's two PPO trainers with GAIN sampling: ``GainPPOTrainerSync`` (V1, ``trainer_mode=sync``) and
``GainRayPPOTrainer`` (legacy hybrid engine, ``trainer.use_v1=false``).

Each overrides named hooks only and calls verl's method inside; what both need lives in ``GainTrainerMixin``:

1. before verl restores a checkpoint: tokenise the training prompts as rollout does, configure the actor workers,
   load the scores (``gain.scores_path``, or the pre-pass file of an earlier run of this experiment) or run the
   pre-pass through the actor, and give the sampler its controller;
2. after verl restores a checkpoint: restore the curriculum from the step folder;
3. after each actor update: the step's accuracy and angle move the window; ``gain/`` metrics go to verl's logger;
4. when verl saves a checkpoint: the curriculum state goes into the step folder first.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torchdata.stateful_dataloader import StatefulDataLoader

from verl_gain.scoring.capture import resolve_capture_point
from verl_gain.scoring.scores_file import model_identity
from verl_gain.scoring.segments import PromptSegmenter, SegmentedPrompt
from verl_gain.trainer.compat import PPOTrainerSync, RayPPOTrainer, collate_fn, tq
from verl_gain.trainer.curriculum import TrainerCurriculum, build_curriculum, correctness_from_rewards, summarize_step
from verl_gain.trainer.dataset import POSITION_KEY
from verl_gain.trainer.prepass import SCORES_FILE, run_prepass, stats_table, training_keys, write_prepass_scores
from verl_gain.trainer.worker import ANGLE_KEY, PromptSegmentTable, use_gain_worker

ANGLE_COLUMN = ANGLE_KEY
"""Legacy trainer: batch column that carries the step angle from ``compute_log_prob`` to the actor update."""


def local_model_path(config: DictConfig) -> str:
    """The actor model folder on this machine (verl copies remote paths locally the same way)."""
    from verl.utils.fs import copy_to_local

    return copy_to_local(config.actor_rollout_ref.model.path, use_shm=config.actor_rollout_ref.model.get("use_shm"))


def capture_identity(model_path: str, spec: str) -> dict[str, Any]:
    """``CapturePoint.describe()`` of ``spec`` in the model, resolved on an empty (meta-device) copy of it."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_path)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    return resolve_capture_point(skeleton, spec).describe()


def data_file_prompts(config: DictConfig) -> list[Any] | None:
    """The prompt column of ``data.train_files`` concatenated (what ``verl-gain score --data`` saw), if readable."""
    import pandas as pd

    files = config.data.train_files
    files = [files] if isinstance(files, str) else list(files)
    frames = []
    for path in files:
        if str(path).endswith(".parquet"):
            frames.append(pd.read_parquet(path, columns=[config.data.prompt_key]))
        elif str(path).endswith((".json", ".jsonl")):
            frames.append(pd.read_json(path, lines=str(path).endswith(".jsonl")))
        else:
            return None
    return list(pd.concat(frames)[config.data.prompt_key])


class GainTrainerMixin:
    """What both GAIN trainers share. The host class is a verl trainer (``self.config``, ``self.tokenizer``,
    ``self.train_dataset``, ``self.actor_rollout_wg``, ``self.global_steps``)."""

    config: DictConfig
    gain: TrainerCurriculum

    # ---------------------------------------------------------------- set-up
    def _gain_init_curriculum(self) -> None:
        self.gain = build_curriculum(self.config, len(self.train_dataset))

    def _gain_prepare_scores(self) -> None:
        """Segment the prompts, configure the workers, then load or compute the scores and attach them."""
        settings = self.gain.settings
        model_path = local_model_path(self.config)
        from transformers import AutoConfig

        model_type = AutoConfig.from_pretrained(model_path).model_type
        segmenter = PromptSegmenter(
            self.tokenizer, self.config.data.get("apply_chat_template_kwargs") or {}, model_type=model_type
        )
        max_prompt = int(self.config.actor_rollout_ref.rollout.prompt_length)
        train_prompts = self.train_dataset.prompt_messages()
        prompts: list[SegmentedPrompt] = [
            segmenter(p, row=i).left_truncated(max_prompt) for i, p in enumerate(train_prompts)
        ]
        table = PromptSegmentTable.from_segments([(p.input_ids, p.segment_ids) for p in prompts])
        self.actor_rollout_wg.gain_configure(
            {
                "capture_point": settings.capture_point,
                "inter_weight": settings.inter_weight,
                "step_angle": settings.step_angle,
            },
            table,
        )
        identity = {
            "model": model_identity(model_path),
            "capture": capture_identity(model_path, settings.capture_point),
            "template": segmenter.template_identity(),
        }
        own_file = self._gain_own_scores_file()
        if settings.scores_path:
            expected = {} if settings.allow_foreign_scores else identity
            keys = training_keys(
                settings.scores_path, train_prompts, data_file_prompts(self.config), expected, settings.inter_weight
            )
            print(f"[verl-gain] GAIN scores from {settings.scores_path} ({len(keys)} training prompts)", flush=True)
        elif own_file is not None:
            keys = training_keys(own_file, train_prompts, None, identity, settings.inter_weight)
            print(f"[verl-gain] GAIN scores reused from {own_file}", flush=True)
        else:
            keys = self._gain_run_prepass(prompts, train_prompts, identity, model_path)
        self.gain.attach_scores(keys)

    def _gain_run_prepass(
        self, prompts: list[SegmentedPrompt], train_prompts: list[Any], identity: dict[str, Any], model_path: str
    ) -> np.ndarray:
        """Score the training prompts through the actor workers, write the pre-pass file next to the checkpoints and
        return the ranking keys ``[N]``."""
        settings = self.gain.settings
        own_file = os.path.join(self.config.trainer.default_local_dir, SCORES_FILE)
        print(f"[verl-gain] GAIN pre-pass: scoring {len(prompts)} training prompts with the actor", flush=True)
        rollout = self.config.actor_rollout_ref.rollout
        micro = None if rollout.log_prob_use_dynamic_bsz else int(rollout.log_prob_micro_batch_size_per_gpu)
        stats = run_prepass(self.actor_rollout_wg, prompts, settings.prepass_batch_size, micro)
        dataframe = self.train_dataset.dataframe
        index = (
            [(info or {}).get("index") for info in dataframe["extra_info"]]
            if "extra_info" in dataframe.column_names
            else [None] * len(prompts)
        )
        frame = stats_table(stats, prompts, index)
        write_prepass_scores(
            own_file, frame, train_prompts, identity, {"source": "verl actor pre-pass", "model_path": model_path}
        )
        print(f"[verl-gain] GAIN scores written to {own_file}", flush=True)
        return frame["intra"].to_numpy() + settings.inter_weight * frame["inter"].to_numpy()

    def _gain_own_scores_file(self) -> str | None:
        """The pre-pass file of an earlier run of this experiment: next to the checkpoints, or next to the checkpoint
        named by ``trainer.resume_from_path``."""
        folders = [self.config.trainer.default_local_dir]
        if self.config.trainer.resume_mode == "resume_path" and self.config.trainer.resume_from_path:
            folders.append(os.path.dirname(os.path.normpath(str(self.config.trainer.resume_from_path))))
        found = [os.path.join(f, SCORES_FILE) for f in folders if os.path.exists(os.path.join(f, SCORES_FILE))]
        return found[0] if found else None

    def _gain_step_folder(self) -> str:
        if self.config.trainer.resume_mode == "resume_path" and self.config.trainer.resume_from_path:
            return str(self.config.trainer.resume_from_path)
        return os.path.join(self.config.trainer.default_local_dir, f"global_step_{self.global_steps}")

    def _gain_restore(self) -> None:
        if self.global_steps > 0:
            restored = self.gain.load(self._gain_step_folder(), self.global_steps)
            state = "restored" if restored else "not found (data.pt state used)"
            print(f"[verl-gain] GAIN curriculum state at step {self.global_steps}: {state}", flush=True)

    def _gain_save(self) -> None:
        self.gain.save(os.path.join(self.config.trainer.default_local_dir, f"global_step_{self.global_steps}"))

    # ------------------------------------------------------------------ step
    def _gain_update(
        self,
        uids: list[Any],
        extra_info: list[Any],
        acc: list[Any] | None,
        scores: np.ndarray,
        angles: np.ndarray | None,
        is_padding: np.ndarray | None,
    ) -> dict[str, float]:
        correct = correctness_from_rewards(self.gain.settings, acc, scores)
        positions = [int((info or {}).get(POSITION_KEY, -1)) for info in extra_info]
        summary = summarize_step(uids, positions, correct, angles, is_padding)
        return self.gain.update(summary, step=self.global_steps)


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


class GainPPOTrainerSync(GainTrainerMixin, PPOTrainerSync):
    """verl 0.9's V1 synchronous trainer (``trainer/ppo/v1/trainer_sync.py``) with GAIN sampling.

    Hooks overridden (each calls verl's method):
    - ``_init_dataloader``: the train loader draws from the GAIN sampler.
    - ``_init_resource_pool_mgr``: the actor role runs ``GainActorRolloutRefWorker``.
    - ``_load_checkpoint``: scores (pre-pass) before verl's restore, the curriculum state after it.
    - ``step``: after verl's step, the finished trajectories (from TransferQueue) move the window.
    - ``_save_checkpoint``: the curriculum state is saved with every checkpoint.
    """

    def _init_dataloader(self) -> None:
        super()._init_dataloader()
        self._gain_init_curriculum()
        self.train_dataloader = _build_train_dataloader(self, self.gain.sampler)

    def _init_resource_pool_mgr(self) -> None:
        super()._init_resource_pool_mgr()
        use_gain_worker(self.role_worker_mapping)

    def _load_checkpoint(self) -> None:
        self._gain_prepare_scores()
        super()._load_checkpoint()
        self._gain_restore()

    def step(self, metrics: dict, timing_raw: dict) -> Any:
        batch = super().step(metrics, timing_raw)
        fields = ["uid", "extra_info", "extra_fields", "rm_scores"]
        if self.gain.settings.step_angle != "none":
            fields.append(ANGLE_KEY)
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
        extra_fields = list(data["extra_fields"])
        reward_info = [(f or {}).get("reward_extra_info") or {} for f in extra_fields]
        acc = [r["acc"] for r in reward_info] if all("acc" in r for r in reward_info) else None
        scores = np.array([float(t.sum()) for t in data["rm_scores"].unbind()])
        angles = data[ANGLE_KEY].double().numpy() if ANGLE_KEY in fields else None
        is_padding = np.array([bool(tag.get("is_padding", False)) for tag in batch.tags])
        metrics.update(self._gain_update(list(data["uid"]), list(data["extra_info"]), acc, scores, angles, is_padding))
        return batch

    def _save_checkpoint(self) -> None:
        self._gain_save()
        super()._save_checkpoint()


class GainRayPPOTrainer(GainTrainerMixin, RayPPOTrainer):
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
        self._gain_prepare_scores()
        result = super()._load_checkpoint()
        self._gain_restore()
        return result

    def _compute_old_log_prob(self, batch: Any) -> Any:
        old_log_prob, mfu = super()._compute_old_log_prob(batch)
        output = self._gain_last_log_prob_output
        if output is not None and ANGLE_KEY in output.keys():
            old_log_prob.batch[ANGLE_COLUMN] = output[ANGLE_KEY].double()
        return old_log_prob, mfu

    def _update_actor(self, batch: Any) -> Any:
        angles = batch.batch.pop(ANGLE_COLUMN).numpy() if ANGLE_COLUMN in batch.batch.keys() else None
        actor_output = super()._update_actor(batch)
        non_tensor = batch.non_tensor_batch
        acc = list(non_tensor["acc"]) if "acc" in non_tensor else None
        scores = batch.batch["token_level_scores"].sum(-1).double().numpy()
        is_padding = np.asarray(non_tensor["is_padding"], dtype=bool) if "is_padding" in non_tensor else None
        gain_metrics = self._gain_update(
            list(non_tensor["uid"]), list(non_tensor["extra_info"]), acc, scores, angles, is_padding
        )
        actor_output.meta_info.setdefault("metrics", {}).update(gain_metrics)
        return actor_output

    def _save_checkpoint(self) -> None:
        self._gain_save()
        super()._save_checkpoint()

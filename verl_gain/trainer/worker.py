"""``GainActorRolloutRefWorker``: verl's actor worker with the GAIN pre-pass and the per-step angle.

Both measurements run through verl's own actor (``self.actor.infer_batch``: its micro-batching, dynamic batch size,
remove-padding, Ulysses sequence parallelism, offload) with the capture of ``verl_gain.trainer.capture``, and only
per-sample statistics leave the worker.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict

from verl_gain.core.angles import FIXED_SEGMENT, IGNORE_SEGMENT, QUESTION_SEGMENT, STAT_FIELDS
from verl_gain.trainer.capture import (
    SEGMENT_IDS_KEY,
    STATS_KEY,
    capture_angle_statistics,
    dense_stats,
    prepass_micro_batch_group,
    validate_capture_point,
)
from verl_gain.trainer.compat import (
    MAGIC_ATTR,
    ActorRolloutRefWorker,
    Dispatch,
    Role,
    assign_non_tensor,
    get_device_name,
    get_non_tensor_data,
    register,
)
from verl_gain.trainer.curriculum import POSITION_KEY

STEP_STATS_KEY = "gain_step_stats"
"""Per-rollout angle statistics under the current model (``[b, len(STAT_FIELDS)]`` fp64, NaN rows where none was
measured: the rollout's prompt is not the one the pre-pass tokenised) that ``compute_log_prob`` adds to its output."""
COUNT_COLUMNS = [STAT_FIELDS.index("n_fixed"), STAT_FIELDS.index("n_question")]
PREPASS_MICRO_BATCH_GROUP = "micro_batch_group"
"""What ``gain_configure`` returns per rank: the engine's micro-batch group (``prepass_micro_batch_group``)."""
NO_LORA_ADAPTER = "no_lora_adapter"
"""Non-tensor flag verl sets on ``compute_log_prob`` for the reference log-probs when the reference model is the actor
without its LoRA adapter (``ref_in_actor``: ``lora_rank > 0`` or ``lora_adapter_path``)."""


def dispatch_attributes(method: Any) -> dict[str, Any]:
    """The ``register`` arguments (dispatch mode, execute mode, blocking) of a registered verl worker method, so an
    override is registered exactly as its base method is, never restated."""
    return dict(getattr(method, MAGIC_ATTR))


def is_reference_pass(data: TensorDict) -> bool:
    """Whether this ``compute_log_prob`` call computes the reference log-probs (the adapter disabled): the step angle
    is the actor's own, so it is measured only on the actor's call."""
    return bool(get_non_tensor_data(data, key=NO_LORA_ADAPTER, default=False))


def token_ids_digest(ids: torch.Tensor | list[int]) -> int:
    """A 63-bit digest of a token id sequence (to check a rollout's prompt is the one the pre-pass segmented)."""
    data = np.asarray(ids.tolist() if isinstance(ids, torch.Tensor) else ids, dtype="<i8").tobytes()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") >> 1


@dataclass
class PromptSegmentTable:
    """Where the question sits in each training prompt, as the pre-pass tokenised it.

    Attributes:
        prompt_len: ``[N]`` prompt tokens of each dataset position.
        q_start: ``[N]`` first question token (-1 when the question tokens are not one contiguous run).
        q_end: ``[N]`` one past the last question token.
        digest: ``[N]`` ``token_ids_digest`` of the prompt ids.
    """

    prompt_len: np.ndarray
    q_start: np.ndarray
    q_end: np.ndarray
    digest: np.ndarray

    @classmethod
    def from_segments(cls, prompts: list[tuple[list[int], list[int]]]) -> PromptSegmentTable:
        """Build from ``(input_ids, segment_ids)`` per dataset position."""
        n = len(prompts)
        table = cls(np.zeros(n, np.int64), np.full(n, -1, np.int64), np.full(n, -1, np.int64), np.zeros(n, np.int64))
        for i, (ids, segments) in enumerate(prompts):
            table.prompt_len[i] = len(ids)
            table.digest[i] = token_ids_digest(ids)
            question = np.flatnonzero(np.asarray(segments) == QUESTION_SEGMENT)
            if question.size and question[-1] - question[0] + 1 == question.size:
                table.q_start[i], table.q_end[i] = question[0], question[-1] + 1
        return table


def _prompt_lengths(data: TensorDict) -> torch.Tensor:
    """``[b]`` prompt tokens of each trajectory: V1 stores ``prompts`` nested, the legacy trainer left-padded."""
    prompts = data["prompts"]
    if prompts.is_nested:
        return prompts.offsets().diff()
    return data["attention_mask"][:, : prompts.shape[1]].sum(-1)


def _position(extra_info: Any) -> int | None:
    """The dataset position ``GainRLHFDataset`` put in ``extra_info`` (None for rows that have none)."""
    if isinstance(extra_info, dict) and extra_info.get(POSITION_KEY) is not None:
        return int(extra_info[POSITION_KEY])
    return None


def step_segment_ids(data: TensorDict, table: PromptSegmentTable, include_response: bool) -> torch.Tensor:
    """Nested ``[b, (j)]`` segment ids of a step's trajectories (prompt then response, as in ``input_ids``).

    A trajectory whose prompt is not the one the table describes (length or digest differ) gets no segments, so
    no angle is measured for it rather than a wrong one.
    """
    input_ids = data["input_ids"]  # nested [b, (j)]
    positions = [_position(info) for info in data["extra_info"]]
    prompt_lengths = _prompt_lengths(data).tolist()
    response_segment = QUESTION_SEGMENT if include_response else IGNORE_SEGMENT
    per_sample = []
    for ids, position, plen in zip(input_ids.unbind(), positions, prompt_lengths):
        segments = torch.full((ids.numel(),), IGNORE_SEGMENT, dtype=torch.long)  # [j]
        known = position is not None and 0 <= position < table.prompt_len.size
        start, end = (int(table.q_start[position]), int(table.q_end[position])) if known else (-1, -1)
        if (
            known
            and start >= 0
            and plen == table.prompt_len[position]
            and token_ids_digest(ids[:plen]) == table.digest[position]
        ):
            segments[:plen] = FIXED_SEGMENT
            segments[start:end] = QUESTION_SEGMENT
            segments[plen:] = response_segment
        per_sample.append(segments)
    return torch.nested.as_nested_tensor(per_sample, layout=torch.jagged)


class GainActorRolloutRefWorker(ActorRolloutRefWorker):
    """verl 0.9's ``ActorRolloutRefWorker`` (``workers/engine_workers.py``) with the GAIN measurements.

    Hooks:
    - ``gain_configure`` (new, ``Dispatch.ONE_TO_ALL``): capture point, ranking-key weight, step-angle source and
      the prompt segment table; checks the capture point on every rank together (``validate_capture_point``) and
      returns the engine's micro-batch group, which the pre-pass pads its calls to.
    - ``gain_prepass_begin`` / ``gain_prepass_end`` (new, ``Dispatch.ONE_TO_ALL``): with parameter offload, the
      model is loaded once for the whole pre-pass instead of around each call.
    - ``gain_score_prompts`` (new, registered as ``compute_log_prob`` is: nd dispatch over the ``actor`` mesh): the
      pre-pass; returns ``STATS_KEY`` ``[b, F]`` per prompt.
    - ``compute_log_prob`` (overridden and re-registered with the base method's own dispatch attributes, or it would
      drop out of the worker group's API): calls verl's method with the capture active and adds ``STEP_STATS_KEY``
      to its output; verl's reference pass through the same method (LoRA: the actor without its adapter) runs
      uncaptured, so it never replaces the actor's angle.
    """

    gain_settings: dict[str, Any] | None = None
    gain_table: PromptSegmentTable | None = None
    gain_model_resident: bool = False

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def gain_configure(self, settings: dict[str, Any], table: PromptSegmentTable | None = None) -> dict[str, int]:
        self.gain_settings = dict(settings)
        self.gain_table = table
        validate_capture_point(self.actor.engine, settings["capture_point"])  # every rank agrees, or all raise
        return {PREPASS_MICRO_BATCH_GROUP: prepass_micro_batch_group(self.actor.engine)}

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def gain_prepass_begin(self) -> None:
        """Load the actor's model onto the device once for the whole pre-pass (with parameter offload; without, the
        model is there already). Every pre-pass call then runs with ``disable_auto_offload``."""
        engine = self.actor.engine
        if engine.is_param_offload_enabled:
            engine.to(get_device_name(), model=True, optimizer=False, grad=False)
        self.gain_model_resident = True

    @register(dispatch_mode=Dispatch.ONE_TO_ALL)
    def gain_prepass_end(self) -> None:
        """Offload the actor's model again after the pre-pass (what verl's eval mode does after each call)."""
        engine = self.actor.engine
        if self.gain_model_resident and engine.is_param_offload_enabled:
            engine.to("cpu", model=True, optimizer=False, grad=False)
        self.gain_model_resident = False

    @register(**dispatch_attributes(ActorRolloutRefWorker.compute_log_prob))
    def gain_score_prompts(self, data: TensorDict) -> TensorDict | None:
        settings = self._require_settings()
        if self.gain_model_resident:
            assign_non_tensor(data, disable_auto_offload=True)  # loaded once by gain_prepass_begin
        with capture_angle_statistics(self.actor.engine, settings["capture_point"], settings["inter_weight"]):
            output = self.actor.infer_batch(data)
        if output is None:  # a rank that holds no outputs (tensor/pipeline parallel)
            return None
        return TensorDict({STATS_KEY: dense_stats(output)}, batch_size=[output.batch_size[0]])

    @register(**dispatch_attributes(ActorRolloutRefWorker.compute_log_prob))
    def compute_log_prob(self, data: TensorDict) -> TensorDict | None:
        settings = self.gain_settings
        if not settings or settings["step_angle"] == "none" or self.gain_table is None or is_reference_pass(data):
            return super().compute_log_prob(data)
        data[SEGMENT_IDS_KEY] = step_segment_ids(
            data, self.gain_table, include_response=settings["step_angle"] == "prompt_response"
        )
        with capture_angle_statistics(self.actor.engine, settings["capture_point"], settings["inter_weight"]):
            output = super().compute_log_prob(data)
        if output is None:
            return None
        stats = dense_stats(output)  # [b, F]
        del output[STATS_KEY]
        measured = stats[:, COUNT_COLUMNS].sum(-1) > 0  # [b]: a rollout without segments counted nothing
        output[STEP_STATS_KEY] = torch.where(measured.unsqueeze(-1), stats, float("nan"))  # [b, F]
        return output

    def _require_settings(self) -> dict[str, Any]:
        if not self.gain_settings:
            raise RuntimeError("gain_configure() must run before the GAIN pre-pass")
        return self.gain_settings


ACTOR_ROLES = ("Actor", "ActorRollout", "ActorRolloutRef")
"""verl ``Role`` members played by ``ActorRolloutRefWorker`` (the ones that get the GAIN worker)."""


def use_gain_worker(role_worker_mapping: dict[Any, Any]) -> None:
    """Replace verl's actor worker class by ``GainActorRolloutRefWorker`` in a trainer's role -> Ray class mapping."""
    import ray

    for name in ACTOR_ROLES:
        role = getattr(Role, name)
        if role in role_worker_mapping:
            role_worker_mapping[role] = ray.remote(GainActorRolloutRefWorker)

"""The ledger of verl code that verl-gain mirrors: where verl has no seam, the smallest piece of its logic is restated
here, and each entry names the verl (or megatron-core) function it follows with the SHA-256 of that function's
source in the release the tests pin (``verl_version.TESTED_VERL``).

``changed_mirrors`` re-hashes the installed sources; ``tests/trainer/test_mirrors.py`` fails, naming the function,
as soon as one of them differs, so an upgrade shows which mirrors to re-read (then update the mirror and its hash:
``python -m verl_gain.trainer.mirrors`` prints the current ones). The CPU backend keeps its own ledger of patches
(``verl_gain/cpu/adaptations.py``). Hooks that override a verl method and call it are not mirrors and are not listed
(docs/integration.md, "Hooks used").

A source is hashed as ``inspect.getsource`` returns it (decorators included), dedented; a Ray actor class is read
through its original class.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import sys
import textwrap
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Mirror:
    """One mirrored function.

    Attributes:
        ours: ``module:qualname`` of the verl-gain code that restates it.
        theirs: ``module:qualname`` of the verl (or megatron-core) function it follows.
        sha256: SHA-256 of ``theirs``' dedented source in the pinned release.
        what: what is mirrored, and why there is no seam to call instead.
    """

    ours: str
    theirs: str
    sha256: str
    what: str


MIRRORS: tuple[Mirror, ...] = (
    # entry point and task runners
    Mirror(
        "verl_gain.main:run",
        "verl.trainer.main_ppo:main",
        "eb706c4f6622ed04d498881b96ebb0fd4c82167060382fbfa54b496231891275",
        "auto_set_device, validate_config, then run_ppo with TaskRunnerV1 or main_ppo_v0.TaskRunner (hydra main: "
        "no seam between composition and run_ppo)",
    ),
    Mirror(
        "verl_gain.trainer.runners:GainTaskRunnerV1.run",
        "verl.trainer.main_ppo:TaskRunnerV1.run",
        "69dc336177c55680a735a7576f60c245d23282d08f8ebc21b4fc00577c7d4a40",
        "the V1 runner's body with GainPPOTrainerSync (a Ray actor class cannot be subclassed; the trainer class "
        "comes from get_trainer_cls inside run)",
    ),
    Mirror(
        "verl_gain.trainer.runners:GainTaskRunnerV1.run",
        "verl.trainer.main_ppo:TaskRunnerV1.init_agent_loop_manager",
        "8a7ec459c8da61e5cc8bd68f13eea3437e35b4c3febbf31bbf3bd7cc4e2c39fc",
        "the agent loop manager built as verl builds it (inlined in the mirrored run)",
    ),
    Mirror(
        "verl_gain.trainer.runners:GainTaskRunner.run",
        "verl.trainer.main_ppo_v0:TaskRunner.run",
        "d944634cb4290e823c900015348e963f65c0151821c0cbac73a142af373d0336",
        "the legacy runner's body with GainRayPPOTrainer and the GAIN sampler (RayPPOTrainer is built in run)",
    ),
    # data loading and sampling
    Mirror(
        "verl_gain.trainer.trainers:_build_train_dataloader",
        "verl.trainer.ppo.v1.trainer_base:PPOTrainer._init_dataloader",
        "f11797ad84a4ba8adf4ac20119ac927e8b7177b5ca047f3f62f3cfb452006877",
        "the V1 train loader with the GAIN sampler in place of create_rl_sampler's (hard-wired in the method)",
    ),
    Mirror(
        "verl_gain.trainer.trainers:_build_train_dataloader",
        "verl.trainer.ppo.ray_trainer:RayPPOTrainer._create_dataloader",
        "106b05aed395b325004734e9ecde3b9708d0e3aaec3cfcb622f451490b35d8a4",
        "the legacy train loader's arguments (batch size, workers, drop_last, collate_fn)",
    ),
    Mirror(
        "verl_gain.trainer.entry:check_gain_config",
        "verl.trainer.ppo.v1.trainer_base:PPOTrainer._build_replay_buffer",
        "e0a1b665f5d73bc1f12873fb2cedddbddb3e5e6a8bbd50c51303ff6b007caff2",
        "the refill rules: filter_groups and sync_refill_failed_groups make the replay buffer draw prompts one by "
        "one beyond a step (refused); gen_batch_size is the fetch size otherwise",
    ),
    Mirror(
        "verl_gain.trainer.entry:check_gain_config",
        "verl.trainer.ppo.v1.trainer_base:PPOTrainer._resolve_filter_groups_metric",
        "9bff3ec6647ca6ae68691edf9349421e32874cb98e67542fc6cce9686d2e29a8",
        "when group filtering is on (algorithm.filter_groups.enable)",
    ),
    Mirror(
        "verl_gain.trainer.trainers:GainPPOTrainerSync.step",
        "verl.trainer.ppo.v1.trainer_base:PPOTrainer._step_once",
        "b82ae0c246dd687f85081b40ad5f28219da8ad859f4a4fb52230fa799ffa122c",
        "which steps update the actor (trainer.critic_warmup <= global_steps): the window holds otherwise",
    ),
    # the worker
    Mirror(
        "verl_gain.trainer.worker:GainActorRolloutRefWorker.compute_log_prob",
        "verl.workers.engine_workers:ActorRolloutRefWorker.compute_log_prob",
        "fe5b9b04b0c571c49e590d8cf8a10c026967f2476ab5403803af7a0500546eeb",
        "re-registered with the base method's dispatch attributes (copied from it, not restated)",
    ),
    Mirror(
        "verl_gain.trainer.worker:is_reference_pass",
        "verl.workers.engine_workers:TrainingWorker.infer_batch",
        "3ebb58da0ac1150216f850d3bf7f7f61f8b3e90610759aabe77ab6362b107fc4",
        "no_lora_adapter marks the reference pass; disable_auto_offload keeps an offloaded model on the device",
    ),
    Mirror(
        "verl_gain.trainer.worker:is_reference_pass",
        "verl.trainer.ppo.v1.trainer_base:PPOTrainer._compute_ref_log_prob",
        "6144382217765824bf0dbd4ee2fadb725e7aafd995ead7d424eab566d9365e4f",
        "LoRA (ref_in_actor): the reference log-probs come from the actor's compute_log_prob with no_lora_adapter",
    ),
    # rewards
    Mirror(
        "verl_gain.trainer.reward_shape:check_reward_shapes",
        "verl.experimental.reward_loop.reward_manager.naive:NaiveRewardManager.run_single",
        "9b9727f5b96925a8c6170f884e4d29d75501220b110d6679bb26bab05ee7d567",
        "how a reward function's result becomes score and extra info (a float copied into acc)",
    ),
    Mirror(
        "verl_gain.trainer.reward_shape:check_reward_shapes",
        "verl.experimental.agent_loop.agent_loop:AgentLoopWorker._postprocess",
        "ea9a728fad7834a644fce4277b600affe51f081ecfe31c2e0cba8d4e8cbc77e1",
        "the legacy trainer stacks every rollout's extra info by the first rollout's keys",
    ),
    Mirror(
        "verl_gain.trainer.reward_shape:rollout_acc",
        "verl.trainer.ppo.v1.trainer_base:PPOTrainer._compute_reward_colocate",
        "019ebb3774ab03e61471e172ac121196d7278ab273509ed311f527d2d0c76db4",
        "a colocated reward model writes the reward's extra keys as top-level TransferQueue fields",
    ),
    # the driver's tokenisation
    Mirror(
        "verl_gain.scoring.segments:SegmentedPrompt.left_truncated",
        "verl.experimental.agent_loop.agent_loop:AgentLoopBase._cap_text_prompt_length",
        "2f511f1dda74e9d1ed9d07e1db17ae24f94d55c7e74cd8e4242466b8a9dcb114",
        "rollout's left truncation of a prompt to rollout.prompt_length",
    ),
    Mirror(
        "verl_gain.scoring.segments:PromptSegmenter",
        "verl.experimental.agent_loop.agent_loop:AgentLoopBase.ct_build_initial_tokens",
        "03e5d1170097a843a4b05dabf195020d8e407d37bce3231998bcd865b36d9dc8",
        "the prompt ids rollout builds (the segmenter calls the same builder)",
    ),
    # the pre-pass batches
    Mirror(
        "verl_gain.trainer.prepass:prepass_row_multiple",
        "verl.workers.engine.utils:prepare_micro_batches",
        "e3083217530fed22bb8a18b0ca7079b61a88f368a98fb85ebbb613cd1e135597",
        "fixed micro-batches need the per-rank rows divisible by the micro-batch size",
    ),
    Mirror(
        "verl_gain.trainer.prepass:prepass_row_multiple",
        "verl.workers.engine.megatron.transformer_impl:MegatronEngine.forward_backward_batch",
        "a41795f0f24e3f74f9b18fd4609aa275a5be6b1ca48db81cc17ffd8a7dcd7840",
        "with virtual pipeline stages the micro-batch count must divide by microbatch_group_size_per_vp_stage; "
        "outputs are collected on the last pipeline stage only",
    ),
    # the capture inside the engines
    Mirror(
        "verl_gain.trainer.capture.fsdp:micro_batch_segment_sums",
        "verl.workers.engine.fsdp.transformer_impl:FSDPEngineWithLMHead.prepare_model_inputs",
        "fd0acb0fe3097f58821c4bf1c157c4d30d5360a265c79e4ab288b368ece78cf6",
        "the packed layout the hook sees: pad_size, Ulysses chunks",
    ),
    Mirror(
        "verl_gain.trainer.capture.outputs:model_outputs_with_stats",
        "verl.workers.engine.fsdp.transformer_impl:FSDPEngineWithLMHead.prepare_model_outputs",
        "8c6d3c14a91f44dbfb40089fc1ad6aa1b5f862e12e2f8bda38159279f7dd249e",
        "the FSDP seam's signature (output, output_args, micro_batch, logits_processor_func)",
    ),
    Mirror(
        "verl_gain.trainer.capture.outputs:model_outputs_with_stats",
        "verl.workers.engine.megatron.transformer_impl:MegatronEngineWithLMHead.prepare_model_outputs",
        "8909435a8c0ea75d3a7d170cd6975930b57c5a8911cf5c3a2dd192d45291ca64",
        "the Megatron seam's signature (output, data)",
    ),
    Mirror(
        "verl_gain.trainer.capture.megatron_layout:MegatronLayout._thd_cp_rows",
        "verl.models.mcore.util:preprocess_thd_engine",
        "5e817ba602b524173fcf836bb28bfe573285e2effee237735fcdf97f1e0b88e8",
        "THD packing, padding and the context-parallel split",
    ),
    Mirror(
        "verl_gain.trainer.capture.megatron_layout:_alignment",
        "verl.models.mcore.util:_compute_fp8_thd_align_size",
        "9245788271348722be3a5d1773f6bc3bf34a33de4a41f67203c9559c40002b4a",
        "FP8 alignment of THD sequences",
    ),
    Mirror(
        "verl_gain.trainer.capture.megatron_layout:MegatronLayout._bshd_cp_positions",
        "verl.models.mcore.util:preprocess_bshd_engine",
        "0ad9ea98233ba64939f940c89753b03c95a64c6c0fc4b57c51eb74a8e06527bb",
        "BSHD padding, alignment and the context-parallel split",
    ),
    Mirror(
        "verl_gain.trainer.capture.megatron:capture_chunk_index",
        "verl.utils.megatron_utils:make_megatron_module",
        "25cc52095826dfbd62168c29f9739edf585b51263bae0daa64a031f553a25b83",
        "chunks in virtual-stage order, post_process on the last stage's last chunk",
    ),
    Mirror(
        "verl_gain.trainer.capture.megatron:capture_megatron_angle_statistics",
        "verl.workers.engine.megatron.transformer_impl:MegatronEngine._get_context_parallel_layout",
        "6f89cb4882bc7ebdc6e96c8ac717f2dadb755f3d72f8780a1029255db8d3f357",
        "zigzag or contiguous context-parallel layout",
    ),
    Mirror(
        "verl_gain.trainer.capture.megatron_layout:MegatronLayout.row_sources",
        "megatron.core.tensor_parallel.mappings:scatter_to_sequence_parallel_region",
        "1a0631dfffd94043bbdb07fc36f9182fa32aa767f23b12499b6bde7093d3fea5",
        "the sequence-parallel split of dim 0 into tp equal chunks",
    ),
)


class MirrorChanged(RuntimeError):
    """The installed source of a mirrored function is not the one its mirror was written against."""


def resolve(target: str) -> Any:
    """The object ``module:qualname`` names (a Ray actor class is read through its original class)."""
    module_name, _, qualname = target.partition(":")
    value: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        value = getattr(getattr(value, "__ray_actor_class__", value), part)
    return getattr(value, "__ray_actor_class__", value)


def source_sha256(target: str) -> str:
    """SHA-256 of the dedented source of ``target`` (``module:qualname``)."""
    function = resolve(target)
    function = inspect.unwrap(function) if not inspect.isclass(function) else function
    source = textwrap.dedent(inspect.getsource(function))
    return hashlib.sha256(source.encode()).hexdigest()


def changed_mirrors(ledger: tuple[Mirror, ...] = MIRRORS) -> list[str]:
    """One line per mirror whose verl function's installed source differs from the hashed one (empty: all same)."""
    changed = []
    for mirror in ledger:
        found = source_sha256(mirror.theirs)
        if found != mirror.sha256:
            changed.append(
                f"{mirror.theirs} changed (sha256 {found[:12]}, ledger {mirror.sha256[:12]}): re-read it against "
                f"{mirror.ours} ({mirror.what}), then update the mirror and its hash in verl_gain/trainer/mirrors.py"
            )
    return changed


def check_mirrors(ledger: tuple[Mirror, ...] = MIRRORS) -> None:
    """Raise ``MirrorChanged`` naming every mirrored function whose source changed."""
    changed = changed_mirrors(ledger)
    if changed:
        raise MirrorChanged("; ".join(changed))


if __name__ == "__main__":  # print the installed sources' hashes, to update the ledger after re-reading a mirror
    for entry in MIRRORS:
        print(f"{source_sha256(entry.theirs)}  {entry.theirs}", file=sys.stdout)

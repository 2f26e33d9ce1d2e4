"""The GAIN pre-pass and step angle on real verl CPU Ray workers (verl's actor, FSDP2 engine and nd dispatch).

Two data-parallel ranks host ``GainActorRolloutRefWorker`` (role ``actor``) on ``RayResourcePool(use_gpu=False)``;
the pre-pass must return the per-sample statistics ``verl-gain score`` computes for the same prompts and model, in
the original order, with packed (remove-padding) and padded inputs, dynamic batch size, and a batch that does not
divide by the data-parallel size.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

import verl_gain
from tests.e2e import REPO_ROOT, arithmetic_rows
from tests.tiny import make_tiny_model_dir
from verl_gain.core.angles import QUESTION_SEGMENT

pytestmark = pytest.mark.e2e

CONFIG_DIR = Path(verl_gain.__file__).parent / "trainer" / "config"
WORKERS = 2
MICRO_BATCH = 3
AGREEMENT = 1e-5
"""Issue 5: the actor's statistics equal the standalone scorer's to 1e-5 (fp32 on both sides)."""


def compose_actor_config(model_dir: Path, remove_padding: bool, dynamic_bsz: bool, param_offload: bool = False):
    from verl_gain.cpu.config import apply_cpu_defaults

    overrides = [
        f"actor_rollout_ref.actor.fsdp_config.param_offload={param_offload}",
        "trainer.device=cpu",
        f"trainer.n_gpus_per_node={WORKERS}",
        f"actor_rollout_ref.model.path={model_dir}",
        f"actor_rollout_ref.model.use_remove_padding={remove_padding}",
        f"actor_rollout_ref.actor.use_dynamic_bsz={dynamic_bsz}",
        f"actor_rollout_ref.rollout.log_prob_use_dynamic_bsz={dynamic_bsz}",
        "actor_rollout_ref.actor.ppo_mini_batch_size=2",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={MICRO_BATCH}",
        "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=300",
        "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=300",
        "actor_rollout_ref.actor.use_kl_loss=false",
        "algorithm.use_kl_in_reward=false",
        "cpu.precision=fp32",  # the standalone scorer's side is fp32 too (the default, auto, is bf16 where it can be)
    ]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        config = compose("verl_gain_trainer", overrides=overrides)
    apply_cpu_defaults(config, overrides)
    from omegaconf import OmegaConf

    OmegaConf.resolve(config)
    return config.actor_rollout_ref


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    from verl_gain.cpu.backend import activate, worker_env_vars

    activate()
    env = {**worker_env_vars(), "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    ray.init(num_cpus=16, num_gpus=WORKERS, runtime_env={"env_vars": env}, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp("worker") / "model", template="smollm2")


def start_workers(model_dir: Path, remove_padding: bool, dynamic_bsz: bool, param_offload: bool = False):
    import ray
    from verl.single_controller.ray import RayClassWithInitArgs, RayResourcePool, RayWorkerGroup

    from tests.trainer.offload_counting import ModelMoveCountingWorker

    pool = RayResourcePool([WORKERS], use_gpu=False, max_colocate_count=1)
    worker = RayClassWithInitArgs(
        cls=ray.remote(ModelMoveCountingWorker),
        config=compose_actor_config(model_dir, remove_padding, dynamic_bsz, param_offload),
        role="actor",
    )
    group = RayWorkerGroup(resource_pool=pool, ray_cls_with_init=worker, device_name="cpu")
    group.init_model()
    return group


def segmented_prompts(model_dir: Path, count: int):
    from transformers import AutoTokenizer

    from verl_gain.scoring.segments import PromptSegmenter

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    segmenter = PromptSegmenter(tokenizer, {}, model_type="llama")
    rows = arithmetic_rows(count, "train")
    # Different question lengths, so padding and packing matter.
    for i, row in enumerate(rows):
        row["prompt"][0]["content"] += " please" * (i % 4)
    return [segmenter(row["prompt"], row=i) for i, row in enumerate(rows)]


@pytest.mark.parametrize(
    ("remove_padding", "dynamic_bsz"), [(True, True), (False, False)], ids=["packed-dynamic", "padded-fixed"]
)
def test_prepass_on_verl_workers_equals_the_scorer(ray_cluster, model_dir, remove_padding, dynamic_bsz):
    from transformers import AutoModelForCausalLM

    from verl_gain.core.angles import STAT_FIELDS as STATS_FIELDS
    from verl_gain.scoring.scorer import score_prompts
    from verl_gain.trainer.prepass import run_prepass

    prompts = segmented_prompts(model_dir, 7)  # 7 prompts: not divisible by the 2 data-parallel ranks
    group = start_workers(model_dir, remove_padding, dynamic_bsz)
    group.gain_configure({"capture_point": "mlp_input", "inter_weight": 2.0, "step_angle": "prompt"})
    # 5 per call, padded to a multiple of 2 ranks (x 3 per micro-batch when its size is fixed), then a call of 2.
    stats = run_prepass(group, prompts, batch_size=5, micro_batch_size=None if dynamic_bsz else MICRO_BATCH)

    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa", dtype=torch.float32)
    expected = score_prompts(model, prompts, capture="mlp_input", inter_weight=2.0)
    for column, name in enumerate(STATS_FIELDS):
        np.testing.assert_allclose(stats[:, column], expected[name], rtol=AGREEMENT, atol=AGREEMENT, err_msg=name)
    assert (stats[:, STATS_FIELDS.index("n_question")] == [p.n_question for p in prompts]).all()
    assert (stats[:, STATS_FIELDS.index("n_question")] > 0).all()
    assert any(p.segment_ids.count(QUESTION_SEGMENT) != prompts[0].n_question for p in prompts)


def test_worker_refuses_a_prepass_before_configuration(ray_cluster, model_dir):
    from verl_gain.trainer.prepass import run_prepass

    group = start_workers(model_dir, remove_padding=True, dynamic_bsz=True)
    with pytest.raises(Exception, match="gain_configure"):
        run_prepass(group, segmented_prompts(model_dir, 2), batch_size=2)
    assert os.environ.get("VERL_PLATFORM") == "cpu"


def test_with_parameter_offload_the_model_moves_once_per_prepass_not_per_call(ray_cluster, model_dir):
    """verl's eval mode loads an offloaded model before each ``infer_batch`` and offloads it after; the pre-pass keeps
    it on the device for all of its calls: one load and one offload per rank (before: two moves per call, here 8)."""
    from verl_gain.trainer.prepass import run_prepass

    group = start_workers(model_dir, remove_padding=True, dynamic_bsz=True, param_offload=True)
    assert all(group.is_param_offload_enabled())
    group.gain_configure({"capture_point": "mlp_input", "inter_weight": 1.0, "step_angle": "prompt"})
    group.start_counting_model_moves()
    run_prepass(group, segmented_prompts(model_dir, 7), batch_size=2)  # 4 calls
    assert group.model_moves() == [2] * WORKERS

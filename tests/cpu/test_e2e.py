"""``python -m verl_gain.main trainer.device=cpu`` runs verl's real GRPO trainer end to end, V1 and legacy.

Each run: 2 data-parallel FSDP2 workers, a reference model with KL loss, the hf rollout backend, validation, 3 GRPO
steps and a checkpoint; then a second process resumes from it for 2 more steps. About a minute per process on 2
cores. The V1 run has one rollout server per worker (two replicas, each worker syncs its own server); the legacy
run has one server for both workers (one replica; the second worker gathers weights but does not send them).
"""

import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from tests.e2e import base_overrides, make_fixture, run_main
from verl_gain.cpu.adaptations import LOG_PROB_DIFF_METRIC

FP32_LOG_PROB_AGREEMENT = 1e-4
"""Largest |rollout - actor| log-prob allowed in fp32 (observed ~1e-6)."""
MIN_LOG_PROB_MOVE = 1e-3
"""How far 3 updates must move the model's log-probs for the agreement check to prove the weight sync (10x the
tolerance above: a rollout that kept stale weights would disagree by at least this much)."""
FIRST_RUN_STEPS = 3
RESUMED_RUN_STEPS = 5
FINITE_METRICS = ("actor/pg_loss", "actor/kl_loss", "actor/grad_norm", "critic/score/mean", "critic/rewards/mean")
SAVE_WITH_HF_WEIGHTS = "actor_rollout_ref.actor.checkpoint.save_contents=[model,optimizer,extra,hf_model]"


def assert_healthy_steps(result, steps: list[int]) -> None:
    logged = [entry["step"] for entry in result.steps if "actor/pg_loss" in entry["data"]]
    assert logged == steps
    for name in FINITE_METRICS:
        values = result.metric(name)
        assert sorted(values) == steps and all(math.isfinite(v) for v in values.values()), (name, values)
    # GRPO advantages are non-zero only if rewards vary inside a group.
    assert all(v > 0 for v in result.metric("critic/advantages/max").values())
    # Rollout log-probs (hf server) vs the actor's recomputed old_log_probs, on every step: steps after the first
    # are generated after a weight update.
    agreement = result.metric(LOG_PROB_DIFF_METRIC)
    assert sorted(agreement) == steps
    assert all(0 <= v <= FP32_LOG_PROB_AGREEMENT for v in agreement.values()), agreement


def max_log_prob_move(initial_dir, trained_dir, prompt_ids: list[int]) -> float:
    """max |log pi_trained - log pi_initial| over the vocabulary at every position of ``prompt_ids``."""
    initial = AutoModelForCausalLM.from_pretrained(initial_dir, dtype=torch.float32).eval()
    trained = AutoModelForCausalLM.from_pretrained(trained_dir, dtype=torch.float32).eval()
    ids = torch.tensor([prompt_ids])  # [1, L]
    with torch.no_grad():
        before = torch.log_softmax(initial(ids).logits.float(), dim=-1)  # [1, L, V]
        after = torch.log_softmax(trained(ids).logits.float(), dim=-1)  # [1, L, V]
    return (after - before).abs().max().item()


@pytest.mark.e2e
@pytest.mark.parametrize("use_v1, workers_per_server", [(True, 1), (False, 2)], ids=["v1", "legacy"])
def test_grpo_runs_checkpoints_and_resumes_on_cpu(tmp_path, use_v1, workers_per_server):
    fixture = make_fixture(tmp_path)
    topology = f"actor_rollout_ref.rollout.tensor_model_parallel_size={workers_per_server}"
    first = run_main(
        [
            *base_overrides(fixture, total_steps=FIRST_RUN_STEPS, use_v1=use_v1),
            topology,
            f"trainer.save_freq={FIRST_RUN_STEPS}",
            "trainer.val_before_train=true",
            SAVE_WITH_HF_WEIGHTS,
        ],
        metrics_path=tmp_path / "first.jsonl",
    ).check()
    assert_healthy_steps(first, [1, 2, 3])
    assert any(name.startswith("val-core/") for entry in first.steps if entry["step"] == 0 for name in entry["data"])

    # The trained weights (saved in Hugging Face format with the checkpoint) differ from the initial ones, enough
    # that a rollout server left with stale weights would have failed the agreement check above.
    trained_dir = fixture.checkpoint_dir / f"global_step_{FIRST_RUN_STEPS}" / "actor" / "huggingface"
    initial, trained = load_file(fixture.model_dir / "model.safetensors"), load_file(trained_dir / "model.safetensors")
    assert initial.keys() == trained.keys()
    assert any(not torch.equal(initial[name], trained[name]) for name in initial)
    tokenizer_ids = list(range(32, 96))  # byte tokens of printable ASCII
    assert max_log_prob_move(fixture.model_dir, trained_dir, tokenizer_ids) > MIN_LOG_PROB_MOVE

    resumed = run_main(
        [*base_overrides(fixture, total_steps=RESUMED_RUN_STEPS, use_v1=use_v1), topology],
        metrics_path=tmp_path / "resumed.jsonl",
    ).check()
    assert_healthy_steps(resumed, [4, 5])
    assert resumed.metric("training/global_step") == {4: 4, 5: 5}

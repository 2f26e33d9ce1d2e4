"""GAIN with a LoRA actor, end to end on the CPU backend (verl's V1 trainer, FSDP2, merged-weight sync).

With a LoRA adapter verl keeps the reference model inside the actor (``ref_in_actor``) and computes the reference
log-probs through the actor's own ``compute_log_prob`` with ``no_lora_adapter=True``, right after the actor's
log-prob pass. The step angle must be the actor's: the adapter here is a trained-looking one (non-zero B, loaded
through ``lora_adapter_path``), so actor and base model rank the prompts differently, and the step-1 angle must be
the key of the actor's weights (base + adapter), i.e. the pre-pass key of the step's prompts, never the base
model's (what the reference pass measured before).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tests.e2e import arithmetic_rows, base_overrides, make_fixture, run_main
from verl_gain.scoring.scorer import ScoreConfig, score_dataset
from verl_gain.scoring.scores_file import read_scores
from verl_gain.trainer.curriculum import SCORES_FILE, TRACE_FILE, read_trace

pytestmark = pytest.mark.e2e(launches=1)

TRAIN_ROWS = 8
LORA_RANK = 4
LORA_ALPHA = 8
ADAPTER_SCALE = 0.5
"""Standard deviation of the adapter's B matrices: large enough to move the tiny model's hidden states visibly."""
AGREEMENT = 1e-5
DIFFERENT = 1e-3
"""The base model's keys differ from the actor's by more than this (otherwise the test could not tell them apart)."""


def write_adapter(model_dir, adapter_dir, merged_dir) -> None:
    """A LoRA adapter with non-zero B on every linear layer, and the model with it merged (the actor's weights)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    peft_model = get_peft_model(
        model, LoraConfig(r=LORA_RANK, lora_alpha=LORA_ALPHA, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * ADAPTER_SCALE)
    peft_model.save_pretrained(adapter_dir)
    peft_model.merge_and_unload().save_pretrained(merged_dir)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(merged_dir)


def test_step_one_angle_is_the_lora_actors_key_not_the_base_models(tmp_path):
    fixture = make_fixture(tmp_path / "run", train_rows=TRAIN_ROWS, template="smollm2")
    rows = arithmetic_rows(TRAIN_ROWS, "train")
    pd.DataFrame(rows).to_parquet(fixture.train_file)
    write_adapter(fixture.model_dir, tmp_path / "adapter", tmp_path / "merged")
    overrides = [
        *base_overrides(fixture, total_steps=1, prompts_per_step=4, prompt_length=192),
        "gain.enable=True",
        "gain.sigma_fraction=null",
        "gain.sigma=2",
        f"actor_rollout_ref.model.lora_rank={LORA_RANK}",
        f"actor_rollout_ref.model.lora_alpha={LORA_ALPHA}",
        f"actor_rollout_ref.model.lora_adapter_path={tmp_path / 'adapter'}",
        "actor_rollout_ref.model.lora.merge=True",  # the hf rollout takes merged weights
    ]
    result = run_main(overrides, metrics_path=tmp_path / "metrics.jsonl").check()

    prepass, _, _ = read_scores(fixture.checkpoint_dir / SCORES_FILE)
    config = ScoreConfig(capture="mlp_input", inter_weight=1.0, dtype="float32")  # the runs' cpu.precision
    merged = score_dataset(fixture.train_file, tmp_path / "merged", tmp_path / "merged.parquet", config, progress=False)
    base = score_dataset(fixture.train_file, fixture.model_dir, tmp_path / "base.parquet", config, progress=False)
    # The pre-pass ran on the actor's weights (base + adapter), which rank the prompts otherwise than the base.
    np.testing.assert_allclose(prepass["key"], merged.scores["key"], rtol=AGREEMENT, atol=AGREEMENT)
    assert np.abs(merged.scores["key"].to_numpy() - base.scores["key"].to_numpy()).max() > DIFFERENT

    positions = read_trace(fixture.checkpoint_dir / TRACE_FILE)[0]["positions"]
    actor_key = float(merged.scores.set_index("position").loc[positions, "key"].mean())
    base_key = float(base.scores.set_index("position").loc[positions, "key"].mean())
    step_angle = result.metric("gain/step_angle")[1]
    assert step_angle == pytest.approx(actor_key, abs=AGREEMENT), f"actor {actor_key}, base {base_key}"
    assert abs(step_angle - base_key) > DIFFERENT
    assert result.metric("gain/angle_measured")[1] == 1.0

"""End to end through the CPU backend: ``python -m verl_gain.main gain.enable=True`` on verl's V1 and legacy trainers.

Per trainer, one uninterrupted run and one run resumed in a fresh process from one of its checkpoints (V1: mid-epoch;
legacy: at an epoch boundary, where verl skips restoring the dataloader). Each run: 2 data-parallel FSDP2 workers, a
reference model with KL loss, the hf rollout backend (V1: one server per worker, two replicas that each worker syncs;
legacy: one server for both workers, the second gathers weights but does not send them), validation before training,
a checkpoint every step with the weights in Hugging Face format.

verl's trainer is healthy on CPU:

- every step logs finite losses, gradient norm and rewards, and GRPO advantages that are not all zero;
- on every step the rollout server's log-probs equal the actor's to fp32 precision, and the trained weights moved the
  log-probs far more than that, so the server follows every weight update;
- validation runs before training; the resumed run continues at the checkpoint's global step.

GAIN's curriculum is what it claims, checked against independent evidence:

- the pre-pass (through the real actor workers) equals ``verl-gain score`` on the same prompts and model;
- every step's batch is exactly what a ``GainController`` replaying the logged updates draws (so batches come from
  the window, and the window moved by the logged accuracy and angle);
- each logged ``delta`` is the update rule applied to the logged accuracy and angle signal, term by term;
- the step accuracy is the per-prompt mean of the rewards verl dumped for that step (``trainer.rollout_data_dir``);
- the first step's angle is the mean pre-pass key of its prompts (same weights, same prompts), so its key change is 0;
- the resumed run draws exactly the batches the uninterrupted run drew, from the step after its checkpoint;
- and it is the uninterrupted run again, bit for bit: the same responses, rewards and metrics after the checkpoint
  (rollouts are seeded per request, the model, optimizer and curriculum states restored exactly).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from tests.e2e import (
    REPO_ROOT,
    arithmetic_rows,
    assert_same_metrics,
    base_overrides,
    dumped_rollouts,
    make_fixture,
    reproducible_metrics,
    run_main,
)
from verl_gain.core.controller import GainController, window_move
from verl_gain.cpu.adaptations import LOG_PROB_DIFF_METRIC
from verl_gain.scoring.scores_file import read_scores
from verl_gain.trainer.curriculum import SCORES_FILE, TRACE_FILE, read_trace
from verl_gain.trainer.settings import GainSettings

pytestmark = pytest.mark.e2e(launches=4)  # per trainer: a run and its resume

TRAIN_ROWS = 24
PROMPTS_PER_STEP = 4
ROLLOUTS_PER_PROMPT = 4
STEPS_PER_EPOCH = TRAIN_ROWS // PROMPTS_PER_STEP
TOTAL_STEPS = 10
RESUME_AT = {"v1": 4, "legacy": STEPS_PER_EPOCH}  # mid-epoch / exactly at an epoch boundary
GAIN_OPTIONS = {
    "sigma": 1.5,
    "n": 3.0,
    "adj_max": 6.0,
    "inter_weight": 1.0,
    "seed": 11,
    # absolute ranks: the fraction defaults off
    "sigma_fraction": None,
    "n_fraction": None,
    "adj_max_fraction": None,
}
TOPOLOGY = {"v1": 1, "legacy": 2}
"""Workers per rollout server (``rollout.tensor_model_parallel_size``): V1 one per worker, legacy one for both."""
AGREEMENT = 1e-5
FP32_LOG_PROB_AGREEMENT = 1e-4
"""Largest |rollout - actor| log-prob allowed in fp32 (observed ~1e-6)."""
MIN_LOG_PROB_MOVE = 1e-3
"""How far the updates must move the model's log-probs for the agreement check to prove the weight sync (10x the
tolerance above: a rollout that kept stale weights would disagree by at least this much)."""
FINITE_METRICS = ("actor/pg_loss", "actor/kl_loss", "actor/grad_norm", "critic/score/mean", "critic/rewards/mean")
SAVE_WITH_HF_WEIGHTS = "actor_rollout_ref.actor.checkpoint.save_contents=[model,optimizer,extra,hf_model]"
PROMPT_LENGTH = 192
"""Longer than every prompt with the SmolLM2 template (~110 byte tokens): rollout truncates nothing, so the
pre-pass and the standalone scorer see the same tokens."""

# Reward: 1 if the answer appears in the reply, plus half the share of distinct characters (variance inside a
# group). `acc` is the hit alone, so it can be read back from the score verl dumps: acc = score >= 1.
REWARD_SOURCE = """
def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    hit = 1.0 if str(ground_truth) in solution_str else 0.0
    distinct = len(set(solution_str)) / max(len(solution_str), 1)
    return {"score": hit + 0.5 * distinct, "acc": hit}
"""


def gain_overrides(
    fixture, kind: str, total_steps: int, rollout_dir: str = "rollouts", validate_first: bool = True
) -> list[str]:
    reward = fixture.root / "gain_reward.py"
    reward.write_text(REWARD_SOURCE)
    return [
        *base_overrides(
            fixture,
            total_steps=total_steps,
            prompts_per_step=PROMPTS_PER_STEP,
            rollouts_per_prompt=ROLLOUTS_PER_PROMPT,
            prompt_length=PROMPT_LENGTH,
            use_v1=kind == "v1",
        ),
        "gain.enable=True",
        *[f"gain.{key}={'null' if value is None else value}" for key, value in GAIN_OPTIONS.items()],
        f"actor_rollout_ref.rollout.tensor_model_parallel_size={TOPOLOGY[kind]}",
        f"trainer.val_before_train={str(validate_first).lower()}",
        "trainer.save_freq=1",
        SAVE_WITH_HF_WEIGHTS,
        f"trainer.rollout_data_dir={fixture.root / rollout_dir}",
        f"reward.custom_reward_function.path={reward}",
    ]


@pytest.fixture(scope="module", params=["v1", "legacy"])
def runs(request, tmp_path_factory):
    """(kind, fixture, uninterrupted result, resumed result, resumed checkpoint dir)."""
    kind = request.param
    root = tmp_path_factory.mktemp(f"gain_{kind}")
    fixture = make_fixture(root / "first", train_rows=TRAIN_ROWS, template="smollm2")
    rows = arithmetic_rows(TRAIN_ROWS, "train")
    for row in rows:  # distinct prompt texts: the legacy trainer's rollout dump identifies a prompt by its text
        row["prompt"][0]["content"] += f" (#{row['extra_info']['index']})"
    pd.DataFrame(rows).to_parquet(fixture.train_file)
    first = run_main(gain_overrides(fixture, kind, TOTAL_STEPS), metrics_path=root / "first.jsonl").check()

    # A crash after step k: keep the checkpoint of step k, drop the later ones, point the tracker at k.
    resumed_dir = root / "resumed_checkpoints"
    shutil.copytree(fixture.checkpoint_dir, resumed_dir)
    k = RESUME_AT[kind]
    for folder in resumed_dir.glob("global_step_*"):
        if int(folder.name.rsplit("_", 1)[1]) > k:
            shutil.rmtree(folder)
    (resumed_dir / "latest_checkpointed_iteration.txt").write_text(str(k))
    overrides = [
        *gain_overrides(fixture, kind, TOTAL_STEPS, rollout_dir="resumed_rollouts", validate_first=False),
        f"trainer.default_local_dir={resumed_dir}",
    ]
    second = run_main(overrides, metrics_path=root / "resumed.jsonl").check()
    return kind, fixture, first, second, resumed_dir


def assert_healthy_steps(result, steps: list[int]) -> None:
    """Finite losses and rewards, varied rewards in a group, and rollout log-probs equal to the actor's, every step."""
    logged = [entry["step"] for entry in result.steps if "actor/pg_loss" in entry["data"]]
    assert logged == steps
    for name in FINITE_METRICS:
        values = result.metric(name)
        assert sorted(values) == steps and all(math.isfinite(v) for v in values.values()), (name, values)
    # GRPO advantages are non-zero only if rewards vary inside a group.
    assert all(v > 0 for v in result.metric("critic/advantages/max").values())
    # Rollout log-probs (hf server) vs the actor's recomputed old_log_probs: steps after the first are generated
    # after a weight update, so agreement means the server got every update.
    agreement = result.metric(LOG_PROB_DIFF_METRIC)
    assert sorted(agreement) == steps
    assert all(0 <= v <= FP32_LOG_PROB_AGREEMENT for v in agreement.values()), agreement


def max_log_prob_move(initial_dir: Path, trained_dir: Path, prompt_ids: list[int]) -> float:
    """max |log pi_trained - log pi_initial| over the vocabulary at every position of ``prompt_ids``."""
    initial = AutoModelForCausalLM.from_pretrained(initial_dir, dtype=torch.float32).eval()
    trained = AutoModelForCausalLM.from_pretrained(trained_dir, dtype=torch.float32).eval()
    ids = torch.tensor([prompt_ids])  # [1, L]
    with torch.no_grad():
        before = torch.log_softmax(initial(ids).logits.float(), dim=-1)  # [1, L, V]
        after = torch.log_softmax(trained(ids).logits.float(), dim=-1)  # [1, L, V]
    return (after - before).abs().max().item()


def test_every_step_is_healthy_and_validation_runs_first(runs):
    kind, _, first, second, _ = runs
    k = RESUME_AT[kind]
    assert_healthy_steps(first, list(range(1, TOTAL_STEPS + 1)))
    assert_healthy_steps(second, list(range(k + 1, TOTAL_STEPS + 1)))
    assert any(name.startswith("val-core/") for entry in first.steps if entry["step"] == 0 for name in entry["data"])
    assert second.metric("training/global_step") == {step: step for step in range(k + 1, TOTAL_STEPS + 1)}


def test_trained_weights_moved_far_more_than_the_log_prob_tolerance(runs):
    """The trained weights (saved in Hugging Face format with the checkpoint) differ from the initial ones, enough
    that a rollout server left with stale weights would have failed the agreement check."""
    _, fixture, _, _, _ = runs
    trained_dir = fixture.checkpoint_dir / f"global_step_{TOTAL_STEPS}" / "actor" / "huggingface"
    initial, trained = load_file(fixture.model_dir / "model.safetensors"), load_file(trained_dir / "model.safetensors")
    assert initial.keys() == trained.keys()
    assert any(not torch.equal(initial[name], trained[name]) for name in initial)
    printable_ascii = list(range(32, 96))  # byte tokens of the tiny tokenizer
    assert max_log_prob_move(fixture.model_dir, trained_dir, printable_ascii) > MIN_LOG_PROB_MOVE


def logged_signal(metrics: dict) -> float | None:
    """The angle signal a step's update used (NaN in the log: none)."""
    value = metrics["gain/angle_signal"]
    return None if value is None or math.isnan(value) else value


def scores_and_trace(checkpoint_dir: Path) -> tuple[pd.DataFrame, list[dict]]:
    table, _, _ = read_scores(checkpoint_dir / SCORES_FILE)
    return table, read_trace(checkpoint_dir / TRACE_FILE)


def test_prepass_equals_the_standalone_scorer(runs, tmp_path):
    from verl_gain.scoring.scorer import ScoreConfig, score_dataset

    _, fixture, _, _, _ = runs
    prepass, _ = scores_and_trace(fixture.checkpoint_dir)
    result = score_dataset(
        fixture.train_file,
        fixture.model_dir,
        tmp_path / "scores.parquet",
        ScoreConfig(capture="mlp_input", inter_weight=GAIN_OPTIONS["inter_weight"], dtype="float32"),  # as the runs
        progress=False,
    )
    standalone = result.scores.set_index("position").loc[prepass["position"]]
    for column in ("intra", "inter", "key"):
        np.testing.assert_allclose(prepass[column], standalone[column], rtol=AGREEMENT, atol=AGREEMENT)
    np.testing.assert_array_equal(prepass["n_question"], standalone["n_question"])


def test_batches_are_the_windows_draws_and_mu_follows_the_rule(runs):
    _, fixture, first, _, _ = runs
    prepass, trace = scores_and_trace(fixture.checkpoint_dir)
    assert [r["step"] for r in trace] == list(range(1, TOTAL_STEPS + 1))
    settings = GainSettings(**GAIN_OPTIONS)
    replay = GainController(prepass["key"].to_numpy(), settings.window())
    logged = {entry["step"]: entry["data"] for entry in first.steps}
    for record in trace:
        metrics = logged[record["step"]]
        drawn = replay.sample(PROMPTS_PER_STEP).tolist()
        assert sorted(drawn) == sorted(record["positions"]), f"step {record['step']}"
        signal = logged_signal(metrics)
        scale = settings.window().scale(TRAIN_ROWS)
        expected = window_move(metrics["gain/step_acc"], signal, scale, settings.alpha, settings.beta)
        assert metrics["gain/delta_acc"] == pytest.approx(expected.acc_term, abs=1e-9)
        assert metrics["gain/delta_angle"] == pytest.approx(expected.angle_term, abs=1e-9)
        assert metrics["gain/delta"] == pytest.approx(expected.delta, abs=1e-9)
        assert replay.update(metrics["gain/step_acc"], signal).delta == pytest.approx(expected.delta)
        assert metrics["gain/mu"] == pytest.approx(replay.mu)
    assert logged[TOTAL_STEPS]["gain/mu"] > logged[1]["gain/mu"]  # the window moved on
    assert logged[TOTAL_STEPS]["gain/coverage"] > logged[1]["gain/coverage"]


def test_step_accuracy_is_the_dumped_rewards_per_prompt_mean(runs):
    _, fixture, first, _, _ = runs
    logged = {entry["step"]: entry["data"] for entry in first.steps}
    for step in (1, 2, TOTAL_STEPS):
        rows = [json.loads(line) for line in (fixture.root / "rollouts" / f"{step}.jsonl").read_text().splitlines()]
        per_prompt: dict[str, list[float]] = {}
        for row in rows:
            # V1 dumps the trajectory key ({uid}_{session}_{index}); the legacy trainer only the prompt text.
            prompt = str(row["uid"]).rsplit("_", 2)[0] if "uid" in row else row["input"]
            if prompt.startswith("pad"):  # V1's synthetic padding rows
                continue
            per_prompt.setdefault(prompt, []).append(float(row["score"] >= 1.0))
        assert len(per_prompt) == PROMPTS_PER_STEP
        expected = np.mean([np.mean(v) for v in per_prompt.values()])
        assert logged[step]["gain/step_acc"] == pytest.approx(expected), f"step {step}"


def test_first_step_angle_is_the_prepass_key_of_its_prompts(runs):
    _, fixture, first, _, _ = runs
    prepass, trace = scores_and_trace(fixture.checkpoint_dir)
    key = prepass.set_index("position")["key"]
    expected = float(np.mean([key[p] for p in trace[0]["positions"]]))
    assert first.metric("gain/step_angle")[1] == pytest.approx(expected, abs=AGREEMENT)
    # the default signal: how far the model moved these prompts' keys since the pre-pass, none yet at step 1
    spread = float(key.std(ddof=0))
    assert abs(first.metric("gain/signal/key_change")[1]) <= AGREEMENT / spread
    assert first.metric("gain/angle_measured")[1] == 1.0 and first.metric("gain/angle_fallback")[1] == 0.0


def test_resumed_run_continues_the_curriculum_exactly(runs):
    """The resumed run restores mu, the generator and the coverage from the checkpoint: its first batch is the one
    the uninterrupted run drew, and every later batch is what the restored controller draws given the logged rewards
    and angles (the mechanism-level round trip with fixed updates is tests/trainer/test_checkpoint_round_trip.py)."""
    from verl_gain.trainer.curriculum import STATE_FILE

    kind, fixture, _, second, resumed_dir = runs
    k = RESUME_AT[kind]
    assert min(entry["step"] for entry in second.steps) == k + 1  # continued from the checkpoint's step
    assert "GAIN scores reused" in second.output and "GAIN pre-pass: scoring" not in second.output
    prepass, uninterrupted = scores_and_trace(fixture.checkpoint_dir)
    _, resumed = scores_and_trace(resumed_dir)
    assert [r["step"] for r in resumed] == list(range(1, TOTAL_STEPS + 1))  # trace cut back to k, then extended
    # Positions are listed in the order the step's trajectories finished: compare them as sets.
    assert [sorted(r["positions"]) for r in resumed] == [sorted(r["positions"]) for r in uninterrupted]

    settings = GainSettings(**GAIN_OPTIONS)
    replay = GainController(prepass["key"].to_numpy(), settings.window())
    replay.load_state_dict(torch.load(fixture.checkpoint_dir / f"global_step_{k}" / STATE_FILE, weights_only=True))
    logged = {entry["step"]: entry["data"] for entry in second.steps}
    for record in resumed[k:]:
        assert sorted(replay.sample(PROMPTS_PER_STEP).tolist()) == sorted(record["positions"]), record["step"]
        metrics = logged[record["step"]]
        replay.update(metrics["gain/step_acc"], logged_signal(metrics))
        assert metrics["gain/mu"] == pytest.approx(replay.mu)


def test_resumed_run_is_the_uninterrupted_run_bit_for_bit(runs):
    """After the checkpoint the resumed run repeats the uninterrupted run exactly: every response and score verl
    dumped, every metric to the last bit (but time, and the server's log-prob comparisons: tests/e2e.py)."""
    kind, fixture, first, second, _ = runs
    after = list(range(RESUME_AT[kind] + 1, TOTAL_STEPS + 1))

    def responses(dump: str) -> list[dict]:
        # V1's trajectory key counts prompt groups from 0 in each process: the rest of the record must agree.
        return [{k: v for k, v in r.items() if k != "uid"} for r in dumped_rollouts(fixture.root / dump, after)]

    assert len(responses("resumed_rollouts")) == len(after) * PROMPTS_PER_STEP * ROLLOUTS_PER_PROMPT
    assert responses("resumed_rollouts") == responses("rollouts")
    uninterrupted = {step: m for step, m in reproducible_metrics(first).items() if step in after}
    assert_same_metrics(uninterrupted, reproducible_metrics(second))


def test_gpu_smoke_checker_accepts_these_runs(runs):
    """recipes/smoke/check_smoke.py (what the GPU smoke script runs) on the CPU runs; the script itself parses."""
    import subprocess

    from recipes.smoke.check_smoke import check_runs

    kind, fixture, first, second, resumed_dir = runs
    check_runs(
        fixture.checkpoint_dir, resumed_dir, first.metrics_path, second.metrics_path, TOTAL_STEPS, RESUME_AT[kind]
    )
    subprocess.run(["bash", "-n", str(REPO_ROOT / "recipes" / "smoke" / "gpu_smoke.sh")], check=True)

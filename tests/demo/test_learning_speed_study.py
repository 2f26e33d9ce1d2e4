"""The learning-speed study's harness (bench/bench_learning_speed.py): what each arm runs, the statistics on curves
whose answer is known, reuse of finished runs, and (slow) one real run through verl's trainer with a tiny model."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.tiny import make_tiny_model_dir
from verl_gain.demo import run
from verl_gain.trainer.curriculum import read_trace

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_learning_speed.py"
_spec = importlib.util.spec_from_file_location("bench_learning_speed", BENCH)
study = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = study  # dataclasses look their module up in sys.modules
_spec.loader.exec_module(study)

DESIGN = study.StudyDesign()


def _result(arm: str, seed: int, acc: list[float], steps: list[int] | None = None, design=DESIGN) -> dict:
    steps = steps or [0, 4, 8, 12, 16, 20]
    return {"design": asdict(design), "arm": arm, "seed": seed, "steps": steps, "acc": acc, "wall_s": 60.0}


def test_every_arm_is_the_shipped_window_with_only_the_order_changed(tmp_path) -> None:
    paths = (tmp_path / "model", tmp_path / "train.parquet", tmp_path / "test.parquet")
    order_file = tmp_path / "easy.parquet"
    commands = {}
    for arm in study.ARMS:
        sampling, gain = study.arm_overrides(arm, order_file)
        commands[arm] = set(
            run.trainer_overrides(run.DemoSettings(out_dir=tmp_path, sampling=sampling, gain=gain), *paths)
        )
    assert "gain.enable=False" in commands["uniform"] and not any(
        a.startswith("gain.order") for a in commands["uniform"]
    )
    assert "gain.enable=True" in commands["gain"] and not any(a.startswith("gain.order") for a in commands["gain"])
    expected = {"gain-reversed": "reversed", "gain-shuffled": "random", "easy-first": str(order_file)}
    for arm, order in expected.items():
        assert commands[arm] - commands["gain"] == {f"gain.order={order}"}, arm
    with pytest.raises(ValueError, match="unknown arm"):
        study.arm_overrides("best", None)
    with pytest.raises(ValueError, match="easy-first"):
        study.arm_overrides("easy-first", None)


def test_the_study_keeps_the_actor_update_its_first_runs_had_while_the_demo_runs_one_worker(tmp_path) -> None:
    paths = (tmp_path / "model", tmp_path / "train.parquet", tmp_path / "test.parquet")
    settings = study.run_settings(DESIGN, "gain", {}, 3, tmp_path)
    demo = run.DemoSettings(out_dir=tmp_path)
    study_command = set(run.trainer_overrides(settings, *paths))
    demo_command = set(run.trainer_overrides(demo, *paths))
    keys = (
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu",
    )

    def micro_batches(command: set[str]) -> set[str]:
        return {arg for arg in command if arg.split("=")[0] in keys}

    # 8 prompts x 4 rollouts: the study's 2 workers take 16 rows each, in two micro-batches; the demo's one worker
    # takes all 32 in one.
    assert "trainer.n_gpus_per_node=2" in study_command and "trainer.n_gpus_per_node=1" in demo_command
    assert micro_batches(study_command) == {f"{key}=8" for key in keys}
    assert micro_batches(demo_command) == {f"{key}=32" for key in keys}
    assert set(run.GATHER_ONCE_OVERRIDES) <= demo_command and not set(run.GATHER_ONCE_OVERRIDES) & study_command
    # verl's own attention, gradient checkpointing and optimizer loop in the study; the small-model ones in the demo.
    small = set(run.SMALL_MODEL_UPDATE_OVERRIDES)
    assert small <= demo_command and not small & study_command
    # One thread per worker, what Ray gave the study's first runs, whatever this machine's core count.
    assert run.run_env(settings) == {"OMP_NUM_THREADS": "1"}
    with pytest.raises(ValueError, match="max_micro_batch"):
        run.DemoSettings(out_dir=tmp_path, max_micro_batch=0)


def test_the_demo_gives_its_worker_every_core_unless_told(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(run, "physical_cores", lambda: 8)
    assert run.run_env(run.DemoSettings(out_dir=tmp_path)) == {"OMP_NUM_THREADS": "8"}
    assert run.run_env(run.DemoSettings(out_dir=tmp_path, workers=2)) == {"OMP_NUM_THREADS": "4"}
    assert run.run_env(run.DemoSettings(out_dir=tmp_path, workers=16)) == {"OMP_NUM_THREADS": "1"}
    assert run.run_env(run.DemoSettings(out_dir=tmp_path, threads_per_worker=3)) == {"OMP_NUM_THREADS": "3"}
    with pytest.raises(ValueError, match="threads_per_worker must be >= 1"):
        run.DemoSettings(out_dir=tmp_path, threads_per_worker=0)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        run.DemoSettings(out_dir=tmp_path, workers=0)


def test_steps_to_target_area_and_censoring_on_a_known_curve() -> None:
    curve = study.curve_of(_result("gain", 0, [0.5, 0.55, 0.6, 0.6, 0.7, 0.7]))
    assert curve.steps_to(0.6) == 8.0 and curve.steps_to(0.71) is None
    # Trapezoids of width 4 over 20 steps: mean of the segment midpoints.
    assert curve.auc() == pytest.approx(np.mean([0.525, 0.575, 0.6, 0.65, 0.7]))
    assert study.censored_steps(curve, 0.71, test_freq=4) == 24.0
    assert study.censored_steps(curve, 0.6, test_freq=4) == 8.0


def test_bootstrap_keeps_pairs_together_and_covers_the_mean() -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(0.4, 0.6, size=8)
    paired = np.stack([base, base + 0.1], axis=1)  # a constant paired difference: no uncertainty in it
    low, high = study.bootstrap_interval(paired, lambda p: (p[:, 1] - p[:, 0]).mean())
    assert low == pytest.approx(0.1) and high == pytest.approx(0.1)
    low, high = study.bootstrap_interval(paired[:, [0]], lambda v: v.mean())
    assert low < base.mean() < high and high - low > 0.01


def test_summary_against_uniform_by_seed() -> None:
    results = []
    for seed, end in enumerate([0.57, 0.59, 0.63, 0.65, 0.66]):
        # uniform's mean end is 0.62: three seeds reach it at their last evaluation, two never; gain gets there at
        # step 8 in every seed; reversed never does.
        results.append(_result("uniform", seed, [0.5, 0.52, 0.55, 0.57, 0.59, end]))
        results.append(_result("gain", seed, [0.5, 0.56, 0.63, 0.64, 0.65, 0.66]))
        results.append(_result("gain-reversed", seed, [0.5, 0.5, 0.5, 0.51, 0.51, 0.52]))
    summary = study.summarise(results)
    assert summary["target"] == pytest.approx(0.62)
    uniform, gain, reversed_ = (summary["arms"][a] for a in ("uniform", "gain", "gain-reversed"))
    assert uniform["reached"] == 3 and uniform["steps_to_target"] == [24.0, 24.0, 20.0, 20.0, 20.0]
    assert uniform["step_ratio"] == pytest.approx(1.0) and uniform["auc_diff"] == pytest.approx(0.0)
    assert gain["steps_to_target"] == [8.0] * 5
    assert gain["step_ratio"] == pytest.approx(21.6 / 8.0)
    assert gain["step_ratio_ci"][0] <= gain["step_ratio"] <= gain["step_ratio_ci"][1]
    assert gain["final_diff"] == pytest.approx(0.66 - 0.62)  # every seed's end minus its uniform twin's, averaged
    assert reversed_["reached"] == 0 and reversed_["auc_diff"] < 0 and reversed_["auc_diff_ci"][1] < 0
    text = study.table(summary)
    assert text.count("\n| ") == 4 and "| gain | 5 |" in text


def test_summary_needs_the_baseline() -> None:
    with pytest.raises(ValueError, match="no uniform run"):
        study.summarise([_result("gain", 0, [0.5] * 6)])


def test_finished_runs_are_reused_and_other_designs_ignored(tmp_path) -> None:
    other = study.StudyDesign(steps=8)
    (tmp_path / "uniform-seed0.json").write_text(json.dumps(_result("uniform", 0, [0.5] * 6)))
    (tmp_path / "gain-seed0.json").write_text(json.dumps(_result("gain", 0, [0.5, 0.6, 0.7], [0, 4, 8], other)))
    assert [r["arm"] for r in study.load_results(tmp_path, DESIGN)] == ["uniform"]
    # A finished run of this design is returned as it is: nothing is trained (the runs folder stays empty).
    reused = study.run_one(DESIGN, "uniform", 0, tmp_path, tmp_path / "runs")
    assert reused["acc"] == [0.5] * 6 and not (tmp_path / "runs").exists()


def test_easy_first_keeps_the_accuracy_order_and_breaks_ties_at_random() -> None:
    accuracy = [0.25, 1.0, 0.5, 1.0, 0.0, 0.5, 0.5]
    keys = study.easy_first_keys(accuracy, samples=8)
    assert np.array_equal(keys, study.easy_first_keys(accuracy, samples=8))
    order = np.argsort(-keys)
    assert [accuracy[i] for i in order] == sorted(accuracy, reverse=True)
    assert len(set(keys.tolist())) == len(keys)


@pytest.mark.slow
def test_one_real_run_of_an_arm_writes_its_result_file(tmp_path) -> None:
    model = make_tiny_model_dir(tmp_path / "model", template="smollm2")
    design = study.StudyDesign(model=str(model), train_size=40, test_size=10, steps=2, test_freq=1, prompts_per_step=4)
    result = study.run_one(design, "gain-reversed", 0, tmp_path / "results", tmp_path / "runs")
    assert result["steps"] == [0, 1, 2] and len(result["acc"]) == 3 and set(result["mu"]) == {"1", "2"}
    assert json.loads((tmp_path / "results" / "gain-reversed-seed0.json").read_text()) == result
    trace = read_trace(tmp_path / "runs" / "gain-reversed-seed0" / "checkpoints" / "gain_trace.jsonl")
    scores = pd.read_parquet(tmp_path / "runs" / "gain-reversed-seed0" / "checkpoints" / "gain_scores.parquet")
    # The reversed order starts at the lowest key: step 1 draws from the bottom of the angle order.
    lowest = set(scores.sort_values("key").head(len(scores) // 2)["position"])
    assert set(trace[0]["positions"]) <= lowest

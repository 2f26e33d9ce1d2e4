"""Trainer-side curriculum: step summaries from rollouts, the update, metrics, trace and state files."""

import numpy as np
import pytest

from verl_gain.core.controller import window_update
from verl_gain.trainer.curriculum import (
    STATE_FILE,
    TrainerCurriculum,
    correctness_from_rewards,
    read_trace,
    summarize_step,
)
from verl_gain.trainer.settings import GainSettings


def test_summary_groups_rollouts_by_prompt_and_ignores_padding():
    # Two prompts (uid a at position 7 with 4 rollouts, uid b at position 3 with 2), shuffled as sequence balancing
    # leaves them, plus two padding rows that must not count.
    uids = ["a", "b", "a", "pad0", "a", "b", "a", "pad1"]
    positions = [7, 3, 7, 0, 7, 3, 7, 0]
    correct = np.array([1, 0, 1, 1, 0, 1, 0, 1], dtype=float)
    angles = np.array([0.5, 0.9, 0.5, 5.0, 0.5, 0.9, np.nan, 5.0])
    padding = np.array([False, False, False, True, False, False, False, True])
    s = summarize_step(uids, positions, correct, angles, padding)
    # prompt a: 2 of 4 correct = 0.5; prompt b: 1 of 2 = 0.5 -> 0.5; padding rows (acc 1) ignored.
    assert s.acc == 0.5
    assert s.positions == [7, 3]
    assert s.prompt_acc == [0.5, 0.5]
    # angles per prompt: a -> 0.5 (NaN dropped), b -> 0.9; mean over prompts 0.7
    assert s.angle == pytest.approx(0.7)
    assert s.num_rollouts == 6


def test_summary_weights_prompts_equally():
    # Prompt x: 1 rollout correct of 1; prompt y: 0 of 3 (e.g. some rollouts filtered) -> (1 + 0) / 2
    s = summarize_step(["x", "y", "y", "y"], [1, 2, 2, 2], np.array([1.0, 0.0, 0.0, 0.0]))
    assert s.acc == 0.5
    assert s.angle is None


def test_only_padding_is_refused():
    with pytest.raises(ValueError, match="only padding"):
        summarize_step(["p"], [0], np.array([1.0]), is_padding=np.array([True]))


def test_correctness_sources():
    settings = GainSettings(acc_source="acc")
    np.testing.assert_array_equal(correctness_from_rewards(settings, [1.0, 0.0, True], np.zeros(3)), [1, 0, 1])
    with pytest.raises(ValueError, match="acc_source=threshold"):
        correctness_from_rewards(settings, [2.0], np.zeros(1))  # a reward on another scale copied into acc
    with pytest.raises(ValueError, match="does not return"):
        correctness_from_rewards(settings, None, np.zeros(1))
    threshold = GainSettings(acc_source="threshold", acc_threshold=0.5)
    np.testing.assert_array_equal(correctness_from_rewards(threshold, None, np.array([1.0, 0.2, 0.6])), [1, 0, 1])


def test_update_moves_mu_by_the_formula_and_reports_metrics(tmp_path):
    settings = GainSettings(mu0=5.0, sigma=10.0, n=50.0, alpha=2.0, beta=0.5, adj_max=100.0)
    cur = TrainerCurriculum(settings, num_samples=200, batch_size=8, trace_path=str(tmp_path / "trace.jsonl"))
    cur.attach_scores(np.linspace(1, 0, 200))
    summary = summarize_step(["a", "a", "b", "b"], [4, 4, 9, 9], np.array([1, 1, 1, 0.0]), np.full(4, 0.3))
    metrics = cur.update(summary, step=1)
    expected = window_update(0.75, 0.3, settings.window())
    assert metrics["gain/delta"] == pytest.approx(expected)
    assert metrics["gain/mu"] == pytest.approx(5.0 + expected)
    assert metrics["gain/step_acc"] == 0.75 and metrics["gain/step_angle"] == pytest.approx(0.3)
    assert {"gain/window_lo", "gain/window_hi", "gain/coverage"} <= set(metrics)
    trace = read_trace(tmp_path / "trace.jsonl")
    assert trace[0]["step"] == 1 and trace[0]["positions"] == [4, 9]


def test_step_angle_none_leaves_the_angle_term_out():
    settings = GainSettings(step_angle="none", sigma=10.0)
    cur = TrainerCurriculum(settings, num_samples=50, batch_size=4)
    cur.attach_scores(np.zeros(50))
    metrics = cur.update(summarize_step(["a"], [0], np.array([1.0]), np.array([0.9])), step=1)
    assert metrics["gain/delta"] == pytest.approx(window_update(1.0, 0.0, settings.window()))


def test_state_round_trip_and_trace_truncation(tmp_path):
    settings = GainSettings(sigma=10.0, n=20.0)
    trace = str(tmp_path / "trace.jsonl")
    cur = TrainerCurriculum(settings, num_samples=100, batch_size=4, trace_path=trace)
    cur.attach_scores(np.arange(100.0))
    for step in (1, 2, 3):
        cur.sampler.controller.sample(4)
        cur.update(summarize_step(["a"], [step], np.array([1.0]), np.array([0.2])), step=step)
        if step == 2:
            cur.save(tmp_path / "global_step_2")
    assert (tmp_path / "global_step_2" / STATE_FILE).is_file()
    resumed = TrainerCurriculum(settings, num_samples=100, batch_size=4, trace_path=trace)
    resumed.attach_scores(np.arange(100.0))
    assert resumed.load(tmp_path / "global_step_2", step=2)
    assert resumed.controller.step == 2
    assert [r["step"] for r in read_trace(trace)] == [1, 2]  # step 3 ran after the checkpoint: dropped
    assert not resumed.load(tmp_path / "global_step_9", step=9)


def test_settings_validation():
    with pytest.raises(ValueError, match="acc_source"):
        GainSettings(acc_source="reward")
    with pytest.raises(ValueError, match="step_angle"):
        GainSettings(step_angle="both")
    with pytest.raises(ValueError, match="gain.sigma must be > 0"):
        GainSettings(sigma=0.0)
    with pytest.raises(ValueError, match=r"unknown gain option\(s\) \['bogus'\]"):
        GainSettings.from_config({"bogus": 1})


def test_capture_point_must_be_a_known_kind():
    assert GainSettings(capture_point="mlp_input:12").capture_point == "mlp_input:12"
    with pytest.raises(ValueError, match="capture_point"):
        GainSettings(capture_point="layer23")


def test_yaml_defaults_are_the_settings_defaults():
    """The documented YAML and the dataclass must not drift apart."""
    from pathlib import Path

    from omegaconf import OmegaConf

    import verl_gain.trainer

    yaml = Path(verl_gain.trainer.__file__).parent / "config" / "gain" / "default.yaml"
    assert GainSettings.from_config(OmegaConf.load(yaml)) == GainSettings()

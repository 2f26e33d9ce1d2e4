"""Trainer-side curriculum: step summaries from rollouts, the angle signal and its fallback, the update, metrics,
the projection, trace and state files."""

import math
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

import verl_gain.trainer
from verl_gain.core.angle_signal import KeyDistribution
from verl_gain.core.angles import STAT_FIELDS, TermMeans
from verl_gain.core.controller import WindowScale, window_move
from verl_gain.trainer.curriculum import (
    STATE_FILE,
    AngleSignalLost,
    PrepassScores,
    TrainerCurriculum,
    read_trace,
    summarize_step,
)
from verl_gain.trainer.reward_shape import correctness_from_rewards
from verl_gain.trainer.settings import GainSettings

CONFIG_DIR = Path(verl_gain.trainer.__file__).parent / "config"


def stats_row(intra: float, inter: float, n_fixed: int = 20, n_question: int = 10, cosine: float = 0.5, w=1.0):
    """One rollout's measured statistics, in ``STAT_FIELDS`` order."""
    values = {
        "intra": intra,
        "inter": inter,
        "key": intra + w * inter,
        "n_fixed": n_fixed,
        "n_question": n_question,
        "mean_cosine": cosine,
    }
    return np.array([values[name] for name in STAT_FIELDS], dtype=np.float64)


def unmeasured() -> np.ndarray:
    return np.full(len(STAT_FIELDS), np.nan)


def prepass(keys: np.ndarray, cosine: np.ndarray | None = None) -> PrepassScores:
    return PrepassScores(keys=np.asarray(keys, dtype=np.float64), term_means=TermMeans(0.7, 0.6), mean_cosine=cosine)


def curriculum(settings: GainSettings, keys: np.ndarray, tmp_path=None, **kwargs) -> TrainerCurriculum:
    trace = str(tmp_path / "trace.jsonl") if tmp_path is not None else None
    cur = TrainerCurriculum(settings, num_samples=len(keys), batch_size=4, trace_path=trace)
    cur.attach_scores(prepass(keys, **kwargs))
    return cur


def test_summary_groups_rollouts_by_prompt_and_ignores_padding():
    # Two prompts (uid a at position 7 with 4 rollouts, uid b at position 3 with 2), shuffled as sequence balancing
    # leaves them, plus two padding rows that must not count.
    uids = ["a", "b", "a", "pad0", "a", "b", "a", "pad1"]
    positions = [7, 3, 7, 0, 7, 3, 7, 0]
    correct = np.array([1, 0, 1, 1, 0, 1, 0, 1], dtype=float)
    a, b, pad = stats_row(0.5, 0.4), stats_row(0.9, 0.2), stats_row(5.0, 5.0)
    stats = np.stack([a, b, a, pad, a, b, unmeasured(), pad])
    padding = np.array([False, False, False, True, False, False, False, True])
    s = summarize_step(uids, positions, correct, stats, padding)
    # prompt a: 2 of 4 correct = 0.5; prompt b: 1 of 2 = 0.5 -> 0.5; padding rows (acc 1) ignored.
    assert s.acc == 0.5
    assert s.positions == [7, 3]
    assert s.prompt_acc == [0.5, 0.5]
    # statistics per prompt: a's three measured rollouts (the NaN row dropped), b's two
    np.testing.assert_allclose(s.prompt_stats, np.stack([a, b]))
    assert s.measured.tolist() == [True, True]
    assert s.num_rollouts == 6


def test_summary_weights_prompts_equally():
    # Prompt x: 1 rollout correct of 1; prompt y: 0 of 3 (e.g. some rollouts filtered) -> (1 + 0) / 2
    s = summarize_step(["x", "y", "y", "y"], [1, 2, 2, 2], np.array([1.0, 0.0, 0.0, 0.0]))
    assert s.acc == 0.5
    assert s.prompt_stats is None and s.measured.tolist() == [False, False]


def test_only_padding_is_refused():
    with pytest.raises(ValueError, match="only padding"):
        summarize_step(["p"], [0], np.array([1.0]), is_padding=np.array([True]))


def test_correctness_sources():
    settings = GainSettings(acc_source="acc")
    np.testing.assert_array_equal(correctness_from_rewards(settings, [1.0, 0.0, True], np.zeros(3)), [1, 0, 1])
    with pytest.raises(ValueError, match="acc_source=threshold"):
        correctness_from_rewards(settings, [2.0], np.zeros(1))  # a reward on another scale copied into acc
    with pytest.raises(ValueError, match="1 of 1 rollouts lack"):
        correctness_from_rewards(settings, None, np.zeros(1))
    threshold = GainSettings(acc_source="threshold", acc_threshold=0.5)
    np.testing.assert_array_equal(correctness_from_rewards(threshold, None, np.array([1.0, 0.2, 0.6])), [1, 0, 1])


def absolute(**kwargs) -> GainSettings:
    """Settings in absolute ranks (the fraction defaults off)."""
    return GainSettings(sigma_fraction=None, n_fraction=None, adj_max_fraction=None, **kwargs)


def test_update_moves_mu_by_the_rule_with_the_standardized_key_and_logs_each_term(tmp_path):
    settings = absolute(
        mu0=5.0, sigma=10.0, n=50.0, alpha=2.0, beta=0.5, adj_max=100.0, angle_signal="standardized_key"
    )
    keys = np.linspace(1.4, 1.2, 200)
    cur = curriculum(settings, keys, tmp_path)
    rows = np.stack([stats_row(0.80, 0.60)] * 2 + [stats_row(0.70, 0.55)] * 2)  # keys now 1.40, 1.25
    summary = summarize_step(["a", "a", "b", "b"], [4, 4, 9, 9], np.array([1, 1, 1, 0.0]), rows)
    metrics = cur.update(summary, step=1)

    dist = KeyDistribution.of(keys)
    standardized = ((1.40 + 1.25) / 2 - dist.mean) / dist.sd
    key_change = np.mean([(1.40 - keys[4]) / dist.sd, (1.25 - keys[9]) / dist.sd])
    expected = window_move(0.75, standardized, WindowScale(10.0, 50.0, 0.0, 100.0), 2.0, 0.5)
    assert metrics["gain/angle_signal"] == pytest.approx(standardized)
    assert metrics["gain/signal/standardized_key"] == pytest.approx(standardized)
    assert metrics["gain/signal/key_change"] == pytest.approx(key_change)
    assert metrics["gain/signal/mean_cosine"] == pytest.approx(0.5)
    assert metrics["gain/delta_acc"] == pytest.approx(50 * math.tanh(2 * 0.25))
    assert metrics["gain/delta_angle"] == pytest.approx(50 * math.tanh(2 * standardized))
    assert metrics["gain/delta"] == pytest.approx(expected.delta)
    assert metrics["gain/mu"] == pytest.approx(5.0 + expected.delta)
    assert metrics["gain/step_acc"] == 0.75 and metrics["gain/step_angle"] == pytest.approx((1.40 + 1.25) / 2)
    assert metrics["gain/angle_fallback"] == 0.0 and metrics["gain/angle_measured"] == 1.0
    assert {"gain/window_lo", "gain/window_hi", "gain/coverage", "gain/at_end", "gain/sigma"} <= set(metrics)
    trace = read_trace(tmp_path / "trace.jsonl")
    assert (
        trace[0]["step"] == 1
        and trace[0]["positions"] == [4, 9]
        and trace[0]["delta_angle"] == pytest.approx(metrics["gain/delta_angle"])
    )


@pytest.mark.parametrize("signal", ["key_change", "mean_cosine", "standardized_key"])
def test_the_chosen_signal_drives_the_update(signal):
    settings = absolute(sigma=10.0, n=50.0, adj_max=100.0, angle_signal=signal)
    cur = curriculum(settings, np.linspace(1.4, 1.2, 200))
    rows = np.stack([stats_row(0.8, 0.6, cosine=0.3), stats_row(0.7, 0.5, cosine=0.5)])
    metrics = cur.update(summarize_step(["a", "b"], [0, 1], np.array([1.0, 0.0]), rows), step=1)
    assert metrics["gain/angle_signal"] == pytest.approx(metrics[f"gain/signal/{signal}"])
    assert metrics["gain/delta_angle"] == pytest.approx(50 * math.tanh(2 * metrics[f"gain/signal/{signal}"]))


def test_the_paper_preset_reproduces_the_paper_rule_on_hand_computed_steps():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        config = compose("verl_gain_trainer", overrides=["gain=paper", "gain.enable=True"])
    settings = GainSettings.from_config(config.gain)
    assert (settings.sigma, settings.n, settings.adj_max, settings.inter_weight) == (1000.0, 500.0, 1000.0, 8.0)
    assert (settings.angle_signal, settings.step_angle, settings.at_end) == ("mean_cosine", "prompt_response", "hold")
    cur = curriculum(settings, np.linspace(2.0, 1.0, 2000))

    def step(acc_rows, cosines, number):
        rows = np.stack([stats_row(0.7, 0.6, cosine=c, w=8.0) for c in cosines])
        uids = [str(i) for i in range(len(cosines))]
        return cur.update(summarize_step(uids, list(range(len(cosines))), np.array(acc_rows), rows), step=number)

    # acc 0.75 (not the authors' acc / 2), one mean cosine 0.7 over the batch:
    #   500 tanh(2 (0.75 - 0.5)) + 500 tanh(2 x 0.7) = 231.0585786 + 442.6758241 = 673.7344027
    first = step([1, 1, 1, 0], [0.6, 0.8, 0.7, 0.7], 1)
    assert first["gain/delta"] == pytest.approx(673.7344027, abs=1e-6)
    # acc 1, cosine 0.9: 500 tanh(1) + 500 tanh(1.8) = 380.7970780 + 473.4030064 = 854.2000844 -> mu 1527.934487
    second = step([1, 1], [0.9, 0.9], 2)
    assert second["gain/delta"] == pytest.approx(854.2000844, abs=1e-6)
    assert second["gain/mu"] == pytest.approx(1527.934487, abs=1e-5)
    # the same again would take mu to 2382: the window stays on the order and holds at its end (sigma unchanged)
    third = step([1, 1], [0.9, 0.9], 3)
    assert third["gain/mu"] == 1999 and third["gain/at_end"] == 1.0 and third["gain/sigma"] == 1000.0


def test_a_step_without_an_angle_falls_back_to_the_prepass_keys_and_too_many_stop_the_run(capsys):
    settings = absolute(sigma=10.0, n=50.0, adj_max=100.0, max_steps_without_angle=2, angle_signal="standardized_key")
    keys = np.linspace(1.4, 1.2, 100)
    cur = curriculum(settings, keys)
    lost = summarize_step(["a", "b"], [0, 50], np.array([1.0, 1.0]), np.stack([unmeasured(), unmeasured()]))
    metrics = cur.update(lost, step=1)
    dist = KeyDistribution.of(keys)
    assert metrics["gain/angle_fallback"] == 1.0 and metrics["gain/angle_measured"] == 0.0
    assert metrics["gain/angle_signal"] == pytest.approx((np.mean(keys[[0, 50]]) - dist.mean) / dist.sd)
    assert metrics["gain/signal/key_change"] == 0.0
    assert "without an angle measurement (1 in a row" in capsys.readouterr().out
    cur.update(lost, step=2)
    measured = summarize_step(["a"], [0], np.array([1.0]), stats_row(0.8, 0.6)[None])
    assert cur.update(measured, step=3)["gain/angle_fallback"] == 0.0  # a measured step resets the count
    cur.update(lost, step=4)
    cur.update(lost, step=5)
    with pytest.raises(AngleSignalLost, match=r"last 3 steps .* gain.step_angle=none .* \(now 2\)"):
        cur.update(lost, step=6)


def test_a_cosine_fallback_uses_the_prepass_cosines_when_the_scores_have_them():
    settings = absolute(sigma=10.0, angle_signal="mean_cosine")
    cur = curriculum(settings, np.linspace(1.4, 1.2, 100), cosine=np.linspace(0.1, 0.9, 100))
    lost = summarize_step(["a"], [50], np.array([1.0]), unmeasured()[None])
    assert cur.update(lost, step=1)["gain/angle_signal"] == pytest.approx(np.linspace(0.1, 0.9, 100)[50])


def test_a_degenerate_prompt_of_a_step_gets_the_datasets_mean_term_not_a_zero():
    settings = absolute(sigma=10.0, n=50.0, adj_max=100.0)
    keys = np.linspace(1.4, 1.2, 100)
    cur = curriculum(settings, keys)  # term means 0.7 (intra) and 0.6 (inter)
    one_token_question = stats_row(0.0, 0.5, n_question=1)  # no question pairs: intra is a placeholder 0
    metrics = cur.update(summarize_step(["a"], [10], np.array([1.0]), one_token_question[None]), step=1)
    dist = KeyDistribution.of(keys)
    assert metrics["gain/signal/standardized_key"] == pytest.approx((0.7 + 0.5 - dist.mean) / dist.sd)


def test_the_end_of_the_order_is_announced_once(capsys):
    settings = absolute(sigma=5.0, n=60.0, adj_max=100.0, mu0=80.0)
    cur = curriculum(settings, np.linspace(1, 0, 100))
    rows = stats_row(0.8, 0.6)[None]
    first = cur.update(summarize_step(["a"], [0], np.array([1.0]), rows), step=1)
    second = cur.update(summarize_step(["a"], [0], np.array([1.0]), rows), step=2)
    assert first["gain/at_end"] == second["gain/at_end"] == 1.0 and first["gain/mu"] == 99
    assert second["gain/sigma"] > first["gain/sigma"] > 5.0  # at_end=widen
    assert capsys.readouterr().out.count("reached the end of the order") == 1


def test_step_angle_none_leaves_the_angle_term_out():
    settings = absolute(step_angle="none", sigma=10.0)
    cur = curriculum(settings, np.zeros(50))
    metrics = cur.update(summarize_step(["a"], [0], np.array([1.0]), stats_row(0.9, 0.9)[None]), step=1)
    assert metrics["gain/delta_angle"] == 0.0 and math.isnan(metrics["gain/angle_signal"])
    assert metrics["gain/delta"] == pytest.approx(500 * math.tanh(1.0))


def test_the_projection_warns_when_the_window_is_sized_wrongly_for_the_run(capsys):
    fast = TrainerCurriculum(GainSettings(n_fraction=0.2, adj_max_fraction=0.4), num_samples=1000, batch_size=8)
    projection = fast.print_projection(total_steps=100)
    out = capsys.readouterr().out
    assert "window reaches the end of the order" in out and "lower gain.n_fraction" in out
    assert projection.end_steps[0.5] is None  # at the target accuracy the centred signal (0) does not move it
    assert projection.end_steps[1.0] < 10
    slow = TrainerCurriculum(GainSettings(n_fraction=0.0001), num_samples=1000, batch_size=8)
    slow.print_projection(total_steps=100)
    assert "raise gain.n_fraction" in capsys.readouterr().out
    sized = TrainerCurriculum(GainSettings(), num_samples=7473, batch_size=256)
    sized.attach_scores(prepass(np.linspace(1.4, 1.2, 7473)))
    assert sized.projection(total_steps=200).warnings == ()  # the defaults fit a 200-step run


def test_a_step_that_updated_no_actor_holds_the_window(tmp_path):
    """Critic warm-up (``trainer.critic_warmup``): verl updates no actor, so nothing moves the window that step."""
    cur = curriculum(
        GainSettings(sigma=2, n=3, adj_max=6, sigma_fraction=None, n_fraction=None), np.arange(12.0), tmp_path
    )
    before = cur.controller.mu
    metrics = cur.hold_step(1)
    assert cur.controller.mu == before and metrics["gain/mu"] == before and metrics["gain/delta"] == 0.0
    assert metrics["gain/held"] == 1.0 and read_trace(tmp_path / "trace.jsonl")[0]["held"] == 1.0
    moved = cur.finish_step(2, ["a"] * 4, [{"gain_position": 0}] * 4, [1.0] * 4, np.ones(4), None, None)
    assert moved["gain/mu"] > before  # the first real step moves it as usual


def test_state_round_trip_and_trace_truncation(tmp_path):
    settings = absolute(sigma=10.0, n=20.0)
    trace = str(tmp_path / "trace.jsonl")
    cur = TrainerCurriculum(settings, num_samples=100, batch_size=4, trace_path=trace)
    cur.attach_scores(prepass(np.arange(100.0)))
    for step in (1, 2, 3):
        cur.sampler.controller.sample(4)
        cur.update(summarize_step(["a"], [step], np.array([1.0]), stats_row(0.2, 0.1)[None]), step=step)
        if step == 2:
            cur.save(tmp_path / "global_step_2")
    assert (tmp_path / "global_step_2" / STATE_FILE).is_file()
    resumed = TrainerCurriculum(settings, num_samples=100, batch_size=4, trace_path=trace)
    resumed.attach_scores(prepass(np.arange(100.0)))
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
        absolute(sigma=0.0)
    with pytest.raises(ValueError, match="gain.angle_signal must be one of"):
        GainSettings(angle_signal="key")
    with pytest.raises(ValueError, match="max_steps_without_angle must be an integer >= 0"):
        GainSettings(max_steps_without_angle=-1)
    with pytest.raises(ValueError, match=r"gain.n_fraction must be in \(0, 1\]"):
        GainSettings(n_fraction=2.0)
    with pytest.raises(ValueError, match=r"unknown gain option\(s\) \['bogus'\]"):
        GainSettings.from_config({"bogus": 1})


def test_capture_point_must_be_a_known_kind():
    assert GainSettings(capture_point="mlp_input:12").capture_point == "mlp_input:12"
    with pytest.raises(ValueError, match="capture_point"):
        GainSettings(capture_point="layer23")


def test_yaml_defaults_are_the_settings_defaults():
    """The documented YAML and the dataclass must not drift apart."""
    from omegaconf import OmegaConf

    yaml = CONFIG_DIR / "gain" / "default.yaml"
    assert GainSettings.from_config(OmegaConf.load(yaml)) == GainSettings()


@pytest.mark.parametrize("order", ["key", "reversed", "random", "file"])
def test_the_window_can_move_over_another_order_while_the_signal_keeps_the_keys(order, tmp_path):
    import pandas as pd

    keys = np.linspace(1.4, 1.2, 50)
    if order == "file":
        accuracy = np.linspace(0.0, 1.0, 50)  # e.g. the initial model's accuracy: easy (high) first
        path = tmp_path / "order.parquet"
        pd.DataFrame({"position": np.arange(50)[::-1], "order_key": accuracy[::-1]}).to_parquet(path)
        order = str(path)
    settings = absolute(sigma=5.0, order=order, seed=4)
    cur = curriculum(settings, keys)
    expected = {
        "key": np.arange(50),
        "reversed": np.arange(50)[::-1],
        "random": np.argsort(-np.random.default_rng(4).permutation(50), kind="stable"),
    }.get(order, np.arange(50)[::-1])
    np.testing.assert_array_equal(cur.controller.order, expected)
    metrics = cur.update(summarize_step(["a"], [7], np.array([1.0]), stats_row(0.8, 0.6)[None]), step=1)
    dist = KeyDistribution.of(keys)
    assert metrics["gain/signal/key_change"] == pytest.approx((1.4 - keys[7]) / dist.sd)  # the ranking keys, always


def test_a_bad_order_is_refused(tmp_path):
    with pytest.raises(ValueError, match="gain.order must be one of"):
        GainSettings(order="easy-first")
    import pandas as pd

    short = tmp_path / "short.parquet"
    pd.DataFrame({"position": [0, 1], "order_key": [1.0, 0.0]}).to_parquet(short)
    with pytest.raises(ValueError, match="2 rows for 50 training rows"):
        curriculum(absolute(sigma=5.0, order=str(short)), np.zeros(50))

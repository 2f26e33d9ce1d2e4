"""GainConfig validation, GainController draws, update rule, state."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from verl_gain.core import controller as controller_module
from verl_gain.core.controller import GainConfig, GainController, window_update


def test_update_rule_matches_hand_computation():
    cfg = GainConfig()  # n = 500, alpha = 2, beta = 0.5, adj_min = 0, adj_max = 1000
    # acc = 0.75, angle = 0.1:
    #   500 * tanh(2 * (0.75 - 0.5)) = 500 * tanh(0.5) = 500 * 0.4621171573 = 231.0585786
    #   500 * tanh(2 * 0.1)          = 500 * tanh(0.2) = 500 * 0.1973753202 =  98.6876601
    #   delta = 329.7462387, inside [0, 1000]
    assert window_update(0.75, 0.1, cfg) == pytest.approx(329.7462387, abs=1e-6)
    # acc = 0, angle = 0: 500 * tanh(-1) = -380.7970780 -> clamped to adj_min = 0
    assert window_update(0.0, 0.0, cfg) == 0.0
    # acc = 1, angle = 1: 500 * tanh(1) + 500 * tanh(2) = 380.7970780 + 482.0137900 = 862.8108680
    assert window_update(1.0, 1.0, cfg) == pytest.approx(862.8108680, abs=1e-6)
    # the same with adj_max = 300 -> clamped to 300
    assert window_update(1.0, 1.0, GainConfig(adj_max=300.0)) == 300.0
    # adj_min < 0 lets the window move back: acc = 0, angle = 0, adj_min = -1000 -> -380.7970780
    assert window_update(0.0, 0.0, GainConfig(adj_min=-1000.0)) == pytest.approx(-380.7970780, abs=1e-6)
    # alpha = 1, beta = 0.8, n = 100, acc = 0.8, angle = 0.5: 100 * tanh(0) + 100 * tanh(0.5) = 46.2117157
    assert window_update(0.8, 0.5, GainConfig(alpha=1.0, beta=0.8, n=100.0)) == pytest.approx(46.2117157, abs=1e-6)


def test_controller_update_moves_mu_and_keeps_history():
    c = GainController(np.arange(10_000.0), GainConfig(mu0=10.0))
    move = c.update(0.75, 0.1)
    assert c.mu == pytest.approx(10.0 + 329.7462387, abs=1e-6)
    assert move.delta == pytest.approx(329.7462387, abs=1e-6)
    assert move.acc_term == pytest.approx(231.0585786, abs=1e-6)  # the terms, as the hand computation above
    assert move.angle_term == pytest.approx(98.6876601, abs=1e-6)
    assert c.step == 1
    assert c.history[-1]["acc"] == 0.75 and c.history[-1]["acc_term"] == move.acc_term
    c.update(1.0)  # no angle term: 500 * tanh(1) = 380.7970780
    assert c.mu == pytest.approx(10.0 + 329.7462387 + 380.7970780, abs=1e-6)
    assert math.isnan(c.history[-1]["angle"]) and c.history[-1]["angle_term"] == 0.0


def test_order_is_descending_with_stable_tie_break():
    scores = np.array([0.5, 0.9, 0.5, 0.1, 0.9])
    c = GainController(scores)
    assert c.order.tolist() == [1, 4, 0, 2, 3]
    assert c.rank_of[c.order].tolist() == list(range(5))


def test_draws_are_distinct_in_range_and_reproducible():
    scores = np.random.default_rng(0).normal(size=5000)
    a = GainController(scores, GainConfig(sigma=300.0, mu0=1000.0, seed=7))
    b = GainController(scores, GainConfig(sigma=300.0, mu0=1000.0, seed=7))
    other = GainController(scores, GainConfig(sigma=300.0, mu0=1000.0, seed=8))
    torch.manual_seed(123)  # the global RNG must not matter
    for _ in range(20):
        pa = a.sample(256)
        torch.manual_seed(999)
        pb = b.sample(256)
        assert len(set(pa.tolist())) == 256
        assert pa.min() >= 0 and pa.max() < 5000
        np.testing.assert_array_equal(pa, pb)
    assert not np.array_equal(a.sample(256), other.sample(256))


@pytest.mark.parametrize("path", ["iid_with_repeats_dropped", "gumbel_top_k"])
def test_draws_follow_the_gaussian_window(monkeypatch, path):
    if path == "gumbel_top_k":
        monkeypatch.setattr(controller_module, "REPLACEMENT_MIN_WIDTH", 10**9)
    c = GainController(np.zeros(20000), GainConfig(sigma=200.0, mu0=5000.0, seed=1))
    ranks = np.concatenate([c.sample_ranks(64) for _ in range(200)])
    # Drawing 64 of ~1000 well-weighted ranks without replacement barely distorts the marginals.
    assert abs(ranks.mean() - 5000) < 10
    assert abs(ranks.std() - 200) < 15


def test_both_draw_paths_give_the_same_inclusion_probabilities(monkeypatch):
    """Successive sampling done two ways must agree: compare how often each rank lands in a batch of 3 of 12."""
    trials = 6000

    def inclusion(min_width: int) -> np.ndarray:
        monkeypatch.setattr(controller_module, "REPLACEMENT_MIN_WIDTH", min_width)
        c = GainController(np.zeros(12), GainConfig(sigma=2.5, mu0=3.0, seed=4))
        counts = np.zeros(12)
        for _ in range(trials):
            counts[c.sample_ranks(3)] += 1
        return counts / trials

    iid, gumbel = inclusion(1), inclusion(10**9)
    # Binomial standard error at p = 0.5 over 6000 trials is 0.0065: 0.03 is over 4 standard errors.
    np.testing.assert_allclose(iid, gumbel, atol=0.03)
    assert iid[3] > iid[0] > iid[11]


def test_mu_beyond_either_end_still_samples():
    n = 1000
    c = GainController(np.linspace(1, 0, n), GainConfig(sigma=50.0))
    c.mu = n + 10_000.0  # far past the end: the last positions stay reachable
    last = c.sample_ranks(64)
    assert len(set(last.tolist())) == 64
    assert last.min() >= n - 64 - 1
    c.mu = n + 20.0  # just past the end: a spread of the last ranks
    near = c.sample_ranks(64)
    assert len(set(near.tolist())) == 64
    assert near.min() >= n - 8 * 50 and near.max() <= n - 1
    c.mu = -500.0  # before the start (negative adj_min can take it there)
    first = c.sample_ranks(10)
    assert first.max() < 100


def test_small_sigma_still_gives_distinct_batches():
    c = GainController(np.zeros(100), GainConfig(sigma=0.01, mu0=50.0))
    ranks = c.sample_ranks(30)
    assert len(set(ranks.tolist())) == 30
    assert 50 in ranks.tolist()


def test_sigma_fraction():
    c = GainController(np.zeros(10_000), GainConfig(sigma_fraction=0.05))
    assert c.sigma == 500.0


def test_step_scale_and_clamps_as_fractions_of_the_dataset():
    config = GainConfig(n_fraction=0.01, adj_min_fraction=-0.005, adj_max_fraction=0.02)
    scale = config.scale(8000)
    assert (scale.n, scale.adj_min, scale.adj_max) == (80.0, -40.0, 160.0)
    c = GainController(np.arange(8000.0), GainConfig(mu0=1000.0, n_fraction=0.01, adj_max_fraction=0.02))
    # acc = 1, no angle: 80 tanh(1) = 60.9275325 ranks (n = 1% of 8000)
    assert c.update(1.0).delta == pytest.approx(80 * math.tanh(1.0), abs=1e-9)
    # acc = 1, angle = 2: 80 (tanh(1) + tanh(4)) = 140.8 > adj_max = 160? no: 60.93 + 79.95 = 140.88
    assert c.update(1.0, 2.0).delta == pytest.approx(80 * (math.tanh(1.0) + math.tanh(4.0)), abs=1e-9)
    tight = GainController(np.arange(8000.0), GainConfig(n_fraction=0.01, adj_max_fraction=0.005))
    assert tight.update(1.0, 2.0).delta == 40.0  # clamped to adj_max = 0.5% of 8000


def test_state_round_trip_continues_draws(tmp_path):
    scores = np.random.default_rng(1).normal(size=3000)
    a = GainController(scores, GainConfig(sigma=100.0, seed=3))
    for _ in range(3):
        a.sample(32)
        a.update(0.6, 0.2)
    path = tmp_path / "gain.pt"
    torch.save(a.state_dict(), path)
    b = GainController(scores, GainConfig(sigma=100.0, seed=999))
    b.load_state_dict(torch.load(path, weights_only=True))
    assert b.mu == a.mu and b.step == a.step and list(b.history) == list(a.history)
    assert b.coverage() == a.coverage()
    for _ in range(5):
        np.testing.assert_array_equal(a.sample(32), b.sample(32))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sigma": 0.0}, "gain.sigma must be > 0"),
        ({"sigma": -3.0}, "gain.sigma must be > 0"),
        ({"sigma_fraction": 1.5}, "sigma_fraction must be in"),
        ({"beta": 1.5}, "target accuracy"),
        ({"alpha": 0.0}, "alpha must be > 0"),
        ({"adj_min": 10.0, "adj_max": 5.0}, "adj_min"),
        ({"mu0": -1.0}, "mu0 must be >= 0"),
        ({"n": float("nan")}, "finite"),
        ({"seed": 1.5}, "seed must be an integer"),
    ],
)
def test_config_rejects_bad_values_with_a_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GainConfig(**kwargs)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="NaN or infinite.*positions \\[1, 3\\]"):
        GainController([0.1, float("nan"), 0.2, float("inf")])
    with pytest.raises(ValueError, match="non-empty 1-D"):
        GainController(np.zeros((2, 2)))
    c = GainController(np.zeros(10))
    with pytest.raises(ValueError, match="lower data.train_batch_size"):
        c.sample(11)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        c.update(2.0)
    with pytest.raises(ValueError, match="finite"):
        c.update(0.5, float("nan"))
    with pytest.raises(ValueError, match="dataset of 10 prompts"):
        GainController(np.zeros(11)).load_state_dict(c.state_dict())
    with pytest.raises(ValueError, match="different prompt order"):
        GainController(np.arange(10.0)).load_state_dict(c.state_dict())


# ------------------------------------------------------------------------------------------ the bounded window


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 400),
    mu0_share=st.floats(0, 1),
    adj_min=st.floats(-300, 0),
    span=st.floats(0, 600),
    scale_n=st.floats(0, 500),
    at_end=st.sampled_from(["widen", "hold"]),
    steps=st.lists(st.tuples(st.floats(0, 1), st.one_of(st.none(), st.floats(-5, 5))), max_size=40),
)
def test_mu_stays_on_the_order_under_any_updates(n, mu0_share, adj_min, span, scale_n, at_end, steps):
    config = GainConfig(mu0=mu0_share * (n - 1), n=scale_n, adj_min=adj_min, adj_max=adj_min + span, at_end=at_end)
    c = GainController(np.arange(float(n)), config)
    for acc, angle in steps:
        c.update(acc, angle)
        assert 0.0 <= c.mu <= n - 1
        assert c.progress >= 0.0 and c.sigma >= config.sigma
        assert c.at_end == (c.mu == n - 1)
        if at_end == "hold":
            assert c.sigma == config.sigma


def distances_from_the_end(c: GainController, batch: int, draws: int) -> np.ndarray:
    return np.concatenate([c.last_rank - c.sample_ranks(batch) for _ in range(draws)])


def test_held_at_the_end_the_draws_are_a_half_gaussian_on_the_last_ranks():
    sigma = 200.0
    c = GainController(np.arange(20_000.0), GainConfig(sigma=sigma, n=5000.0, adj_max=5000.0, at_end="hold"))
    for _ in range(10):
        c.update(1.0, 1.0)
    assert c.at_end and c.mu == c.last_rank and c.sigma == sigma
    distance = distances_from_the_end(c, 16, 400)
    # |N(0, sigma)|: mean sigma sqrt(2 / pi) = 0.798 sigma, sd sigma sqrt(1 - 2 / pi) = 0.603 sigma; 16 of ~400
    # well-weighted ranks per batch without replacement barely widens it.
    assert distance.min() >= 0
    assert distance.mean() == pytest.approx(sigma * math.sqrt(2 / math.pi), rel=0.06)
    assert distance.std() == pytest.approx(sigma * math.sqrt(1 - 2 / math.pi), rel=0.08)
    assert (distance > 3 * sigma).mean() < 0.01  # a spread of the last ranks, nothing collapsed, nothing far


def test_widened_at_the_end_the_window_grows_by_what_would_have_moved_it():
    sigma = 200.0
    c = GainController(np.arange(20_000.0), GainConfig(sigma=sigma, mu0=19_000.0, n=1000.0, adj_max=1000.0))
    move = c.update(1.0, 1.0)  # 1000 tanh(1) + 1000 tanh(2) = 1244 > adj_max: delta = 1000
    assert move.delta == 1000.0 and c.mu == c.last_rank
    assert c.sigma == pytest.approx(sigma + 1000.0 - 999.0)  # 19000 + 1000 - 19999 ranks past the end
    for _ in range(3):
        c.update(1.0, 1.0)
    assert c.sigma == pytest.approx(sigma + 3001.0)
    distance = distances_from_the_end(c, 16, 300)
    assert distance.mean() == pytest.approx(c.sigma * math.sqrt(2 / math.pi), rel=0.06)
    c.update(0.0, -1.0)  # a negative move with adj_min < 0 would first narrow it again: here adj_min = 0
    assert c.sigma == pytest.approx(sigma + 3001.0)


def test_a_negative_move_at_the_end_first_narrows_a_widened_window():
    c = GainController(np.arange(1000.0), GainConfig(sigma=10.0, mu0=900.0, n=100.0, adj_min=-100.0, adj_max=200.0))
    c.update(1.0, 5.0)  # 100 (tanh(1) + tanh(10)) = 176.2 -> progress 1076.2, 77.2 past the last rank
    assert c.mu == 999 and c.sigma == pytest.approx(10.0 + 77.16, abs=0.01)
    c.update(0.0, -5.0)  # -100 (tanh(1) + tanh(10)) clamped to -100: 22.84 ranks back from the last
    assert c.sigma == 10.0 and c.mu == pytest.approx(976.159, abs=0.001)


def test_the_unbounded_gsm8k_recipe_no_longer_collapses():
    """Issue 13: N = 7,473, sigma = 1000, n = 500, 256 prompts, 200 steps, a model that solves its window, the old
    constant angle push (key ~1.3): unbounded, steps 100-199 drew ~300 distinct prompts. Bounded, either end rule
    keeps drawing from a spread of the order."""
    for at_end, at_least in (("hold", 1500), ("widen", 6000)):
        c = GainController(np.arange(7473.0)[::-1], GainConfig(sigma=1000.0, at_end=at_end, seed=1))
        late: set[int] = set()
        for step in range(200):
            drawn = c.sample(256)
            if step >= 100:
                late.update(drawn.tolist())
            c.update(1.0, 1.3)
        assert c.mu == 7472 and len(late) >= at_least, (at_end, len(late))


def test_mu0_past_the_end_and_bad_fractions_are_refused():
    with pytest.raises(ValueError, match="past the last rank"):
        GainController(np.zeros(10), GainConfig(mu0=10.0))
    for name in ("sigma_fraction", "n_fraction", "adj_max_fraction"):
        for bad in (0.0, 1.5, -0.1, True):
            with pytest.raises(ValueError, match=rf"gain.{name} must be in \(0, 1\]"):
                GainConfig(**{name: bad})
    with pytest.raises(ValueError, match=r"gain.adj_min_fraction must be in \[-1, 1\]"):
        GainConfig(adj_min_fraction=-2.0)
    with pytest.raises(ValueError, match="adj_min_fraction .* must be <= gain.adj_max_fraction"):
        GainConfig(adj_min_fraction=0.5, adj_max_fraction=0.1)
    with pytest.raises(ValueError, match="gain.at_end must be one of widen, hold"):
        GainConfig(at_end="wrap")


def test_a_state_saved_before_the_window_was_bounded_resumes_on_the_order():
    c = GainController(np.arange(100.0), GainConfig())
    state = c.state_dict()
    state.update(version=1, mu=5000.0)  # an unbounded mu from version 1
    del state["progress"]
    c.load_state_dict(state)
    assert c.mu == 99 and c.sigma == 1000.0 + 5000.0 - 99

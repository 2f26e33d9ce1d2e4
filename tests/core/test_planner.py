"""The planner runs the real controller: its steps are the controller's, its summaries what the steps add up to."""

import math

import numpy as np
import pytest

from verl_gain.core.angle_signal import KeyDistribution
from verl_gain.core.controller import GainConfig, GainController
from verl_gain.core.planner import (
    constant_angle,
    flat_accuracy,
    linear_accuracy,
    logged_accuracy,
    prepass_angle,
    project,
    simulate,
)

KEYS = np.linspace(1.4, 1.2, 3000)


def test_a_plan_is_the_controller_replayed_step_by_step():
    config = GainConfig(sigma_fraction=0.05, n_fraction=0.02, adj_max_fraction=0.04, seed=3)
    accuracy = linear_accuracy(0.2, 0.9, 40)
    plan = simulate(KEYS, config, 64, 40, accuracy, prepass_angle("standardized_key", KEYS))
    replay = GainController(KEYS, config)
    dist = KeyDistribution.of(KEYS)
    for step in plan.steps:
        assert step.mu == replay.mu and step.sigma == replay.sigma
        drawn = replay.sample(64)
        assert step.angle == pytest.approx(float(dist.standardized(KEYS[drawn].mean())))
        move = replay.update(accuracy(step.step), step.angle)
        assert (step.acc_term, step.angle_term, step.delta) == (move.acc_term, move.angle_term, move.delta)
        assert step.distinct == int(replay.drawn.sum()) and step.at_end == replay.at_end
    assert plan.steps[0].acc == pytest.approx(0.2) and plan.steps[-1].acc == pytest.approx(0.9)
    assert sum(plan.block_distinct[:1]) <= 640 and len(plan.block_distinct) == 4


def test_the_end_step_coverage_and_distinct_prompts_per_block():
    # acc = 1, no angle: delta = 30 tanh(1) = 22.85 ranks per step over 3000 ranks -> mu reaches 2999 at step 132
    config = GainConfig(sigma=50.0, n=30.0, adj_max=60.0)
    plan = simulate(KEYS, config, 16, 200, flat_accuracy(1.0), constant_angle(None))
    assert plan.end_step == math.ceil(2999 / (30 * math.tanh(1.0)))
    assert plan.final_mu == 2999
    assert 0 < plan.coverage < 1 and plan.coverage == plan.steps[-1].distinct / 3000
    assert len(plan.block_distinct) == 20 and all(0 < d <= 160 for d in plan.block_distinct)
    assert plan.block_distinct[-1] > 100  # widened at the end: still many distinct prompts, no collapse


def test_logged_accuracy_holds_the_last_value_and_bad_inputs_are_refused():
    curve = logged_accuracy([0.1, 0.5])
    assert [curve(s) for s in (1, 2, 3)] == [0.1, 0.5, 0.5]
    with pytest.raises(ValueError, match="holds no step"):
        logged_accuracy([])
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        simulate(KEYS, GainConfig(), 8, 0, flat_accuracy(0.5), constant_angle(None))
    with pytest.raises(ValueError, match=r"accuracies lie in \[0, 1\]"):
        simulate(KEYS, GainConfig(), 8, 3, flat_accuracy(1.5), constant_angle(None))


def test_the_projection_names_the_end_step_at_three_accuracies():
    config = GainConfig(sigma_fraction=0.1, n_fraction=0.01, adj_max_fraction=0.02)
    projection = project(KEYS, config, 64, 200, constant_angle(0.0), "angle signal taken as 0")
    assert set(projection.end_steps) == {0.5, 0.75, 1.0}
    assert projection.end_steps[0.5] is None  # at the target accuracy with a centred signal the window holds
    # acc 1: 30 tanh(1) = 22.85 ranks per step -> 2999 / 22.85 = 131.3 steps
    assert projection.end_steps[1.0] == math.ceil(2999 / (30 * math.tanh(1.0)))
    assert projection.warnings == ()
    assert "at accuracy 1.00: step 132 of 200" in projection.lines()[0]

"""Where the window will be: the curriculum of a run simulated with the real ``GainController``.

A plan runs the controller itself (its draws, its update, its bounds) for ``steps`` steps of ``batch_size`` prompts,
with the step accuracy taken from an assumed curve (flat, a linear rise, or the per-step accuracies a real run
logged) and the angle signal from an ``AngleModel`` (constant, or what the pre-pass keys of the prompts drawn give).
It answers what a user cannot see in advance: at which step the window reaches the end of the order, how much of the
order a run covers, how many distinct prompts it trains on. ``verl-gain plan`` prints and plots it; the trainer
prints a short projection at start-up.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from verl_gain.core.angle_signal import MEAN_COSINE, STANDARDIZED_KEY, KeyDistribution
from verl_gain.core.controller import GainConfig, GainController

AccuracyCurve = Callable[[int], float]
"""step (1-based) -> the step's mean rollout accuracy in [0, 1]."""
AngleModel = Callable[[np.ndarray], "float | None"]
"""positions drawn at a step ``[B]`` -> the step's angle signal a (None: no angle term)."""
BLOCK_STEPS = 10
"""Distinct prompts are counted per block of this many steps (the issue's 'distinct prompts per 10 steps')."""
MIN_END_SHARE = 0.5
"""The projection warns when, at an accuracy halfway from the target to 1, the window reaches the end before this
share of the run: the rest of the run then samples the end of the order (or, widened, the whole order again)."""
COSINE_BOUND = 1.0
"""Before the pre-pass no cosine is known: the projection assumes the largest one (the fastest window)."""


def crossing_n_fraction(steps: int, accuracy: float, beta: float, alpha: float) -> float:
    """The step scale (a fraction of N) with which the window crosses the whole order in ``steps`` steps at a flat
    ``accuracy`` above ``beta``, the angle term at 0: ``1 / (steps tanh(alpha (accuracy - beta)))``, at most 1."""
    if steps <= 0 or accuracy <= beta:
        raise ValueError(f"need steps > 0 and accuracy > beta (got {steps}, {accuracy}, beta {beta})")
    return min(1.0, 1.0 / (steps * math.tanh(alpha * (accuracy - beta))))


def flat_accuracy(value: float) -> AccuracyCurve:
    return lambda step: value


def linear_accuracy(start: float, end: float, steps: int) -> AccuracyCurve:
    """From ``start`` at step 1 to ``end`` at step ``steps``."""
    span = max(steps - 1, 1)
    return lambda step: start + (end - start) * min(max(step - 1, 0), span) / span


def logged_accuracy(values: Sequence[float]) -> AccuracyCurve:
    """The accuracies a run logged, step by step (the last one held past the end of the log)."""
    if not values:
        raise ValueError("the accuracy log holds no step")
    return lambda step: float(values[min(step, len(values)) - 1])


def constant_angle(value: float | None) -> AngleModel:
    return lambda positions: value


def prepass_angle(signal: str, keys: np.ndarray, cosines: np.ndarray | None = None) -> AngleModel:
    """The angle signal the pre-pass gives the prompts drawn (the current model assumed to see them as at the
    pre-pass): the standardized key of their mean key; 0 for ``key_change``; their mean cosine."""
    distribution = KeyDistribution.of(keys)
    if signal == STANDARDIZED_KEY:
        return lambda positions: float(distribution.standardized(keys[positions].mean()))
    if signal == MEAN_COSINE:
        if cosines is None:
            return constant_angle(COSINE_BOUND)
        return lambda positions: float(np.mean(cosines[positions]))
    return constant_angle(0.0)


@dataclass
class PlanStep:
    """One simulated step (ranks; ``mu``/``sigma``/``lo``/``hi`` as the step's batch was drawn).

    Attributes:
        step: 1-based.
        mu, sigma: the window when the batch was drawn.
        lo, hi: its one-sigma band, clipped to the order.
        acc, angle: the inputs of the update.
        acc_term, angle_term, delta: the update, term by term.
        at_end: whether mu reached the last rank after the update.
        distinct: distinct prompts drawn so far.
    """

    step: int
    mu: float
    sigma: float
    lo: float
    hi: float
    acc: float
    angle: float | None
    acc_term: float
    angle_term: float
    delta: float
    at_end: bool
    distinct: int


@dataclass
class Plan:
    """A simulated run: every step, and what it adds up to."""

    num_samples: int
    batch_size: int
    steps: list[PlanStep] = field(default_factory=list)
    block_distinct: list[int] = field(default_factory=list)
    final_mu: float = 0.0
    """mu after the last step's update."""

    @property
    def end_step(self) -> int | None:
        """The first step after which mu is at the last rank, or None if the run never gets there."""
        return next((s.step for s in self.steps if s.at_end), None)

    @property
    def coverage(self) -> float:
        """Fraction of the training set drawn at least once."""
        return self.steps[-1].distinct / self.num_samples if self.steps else 0.0


def simulate(
    scores: np.ndarray,
    config: GainConfig,
    batch_size: int,
    steps: int,
    accuracy: AccuracyCurve,
    angle: AngleModel,
    progress: Callable[[int], None] | None = None,
) -> Plan:
    """Run the controller over ``steps`` steps with assumed accuracies and angle signals.

    Args:
        scores: ``[N]`` ranking keys (the order; without a scores file, any strictly decreasing array of N).
        config: the window and update parameters.
        batch_size: prompts per step.
        steps: steps to simulate (> 0).
        accuracy: the step accuracy curve.
        angle: the angle signal per step, from the positions drawn.
        progress: called with each finished step (a progress bar).
    """
    if not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    controller = GainController(scores, config)
    plan = Plan(num_samples=controller.num_samples, batch_size=batch_size)
    block: set[int] = set()
    for step in range(1, steps + 1):
        mu, sigma = controller.mu, controller.sigma
        lo, hi = controller.window_range()
        positions = controller.sample(batch_size)
        block.update(positions.tolist())
        acc = float(accuracy(step))
        if not (math.isfinite(acc) and 0.0 <= acc <= 1.0):
            raise ValueError(f"the accuracy curve gave {acc!r} at step {step}: accuracies lie in [0, 1]")
        signal = angle(positions)
        move = controller.update(acc, signal)
        plan.steps.append(
            PlanStep(
                step=step,
                mu=mu,
                sigma=sigma,
                lo=lo,
                hi=hi,
                acc=acc,
                angle=signal,
                acc_term=move.acc_term,
                angle_term=move.angle_term,
                delta=move.delta,
                at_end=controller.at_end,
                distinct=int(controller.drawn.sum()),
            )
        )
        if step % BLOCK_STEPS == 0 or step == steps:
            plan.block_distinct.append(len(block))
            block = set()
        if progress is not None:
            progress(step)
    plan.final_mu = controller.mu
    return plan


@dataclass(frozen=True)
class Projection:
    """Where the window ends at a few flat accuracies: ``{accuracy: end step or None}``, and the warnings."""

    total_steps: int
    end_steps: dict[float, int | None]
    warnings: tuple[str, ...]
    assumption: str

    def lines(self) -> list[str]:
        parts = []
        for acc, end in self.end_steps.items():
            where = f"step {end} of {self.total_steps}" if end is not None else f"not within {self.total_steps} steps"
            parts.append(f"at accuracy {acc:.2f}: {where}")
        return [f"window reaches the end of the order ({self.assumption}): " + "; ".join(parts), *self.warnings]


def projection_accuracies(beta: float) -> tuple[float, ...]:
    """The target accuracy, halfway from it to 1, and 1."""
    return tuple(sorted({round(beta, 4), round((1.0 + beta) / 2, 4), 1.0}))


def project(
    scores: np.ndarray,
    config: GainConfig,
    batch_size: int,
    total_steps: int,
    angle: AngleModel,
    assumption: str,
) -> Projection:
    """The window's end step at flat accuracies ``beta``, ``(1 + beta) / 2`` and 1, with warnings that say what to
    change: the end reached before ``MIN_END_SHARE`` of the run at ``(1 + beta) / 2`` (too fast), or not reached at
    all at accuracy 1 (part of the order never the window's centre)."""
    ends = {
        acc: simulate(scores, config, batch_size, total_steps, flat_accuracy(acc), angle).end_step
        for acc in projection_accuracies(config.beta)
    }
    n = len(scores)
    warnings = []
    halfway = round((1.0 + config.beta) / 2, 4)
    early = ends[halfway]
    if early is not None and early < MIN_END_SHARE * total_steps:
        warnings.append(
            f"at accuracy {halfway:g} the window reaches the end at step {early} of {total_steps}: the rest of the "
            f"run samples the end of the order (gain.at_end={config.at_end}); lower gain.n_fraction (or gain.n) to "
            "spread the order over the run"
        )
    if ends[1.0] is None:
        plan = simulate(scores, config, batch_size, total_steps, flat_accuracy(1.0), angle)
        warnings.append(
            f"even at accuracy 1 the window covers ranks 0-{plan.final_mu:.0f} of {n} in {total_steps} steps: the "
            "rest of the order is never the window's centre; raise gain.n_fraction (or gain.n) or gain.adj_max"
        )
    return Projection(total_steps, ends, tuple(warnings), assumption)

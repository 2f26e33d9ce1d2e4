"""What the smoke test (recipes/smoke/smoke.py, run by gpu_smoke.sh) checks on the runs it made.

Each check raises ``CheckFailed`` with one line saying what is wrong, or returns a one-line detail for the table.
``check_runs`` is kept for tests/trainer/test_gain_e2e.py, which applies it to the CPU end-to-end runs.

    python recipes/smoke/check_smoke.py SMOKE_DIR   # the resume checks on an earlier smoke run's folder
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from verl_gain.scoring.scores_file import read_scores
from verl_gain.trainer.curriculum import SCORES_FILE, STATE_FILE, TRACE_FILE, read_trace

SMOKE_STEPS, SMOKE_RESUMED_FROM = 2, 1
REQUIRED_METRICS = {"gain/mu", "gain/delta", "gain/step_acc", "gain/step_angle"}
MIN_RANK_CORRELATION = 0.999
"""Pre-pass keys vs ``verl-gain score``'s: the same model and prompts, bf16 on GPUs (fp32 on the CPU backend)."""


class CheckFailed(AssertionError):
    """A smoke check that did not hold (one line)."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def logged(path: Path) -> dict[int, dict]:
    """``{step: metrics}`` of verl's file logger."""
    _require(path.is_file(), f"no metrics file {path}: the run logged nothing")
    return {entry["step"]: entry["data"] for entry in map(json.loads, path.read_text().splitlines()) if entry}


def finite_step_angles(metrics_path: Path, steps: range) -> str:
    """Every step logged the ``gain/`` metrics, with a finite ``gain/step_angle`` (the angle was measured)."""
    metrics = logged(metrics_path)
    for step in steps:
        _require(step in metrics, f"step {step} not logged")
        missing = REQUIRED_METRICS - set(metrics[step])
        _require(not missing, f"step {step} lacks {sorted(missing)}")
        angle = metrics[step]["gain/step_angle"]
        _require(angle is not None and math.isfinite(angle), f"gain/step_angle at step {step} is {angle}")
    angles = ", ".join(f"{metrics[s]['gain/step_angle']:.4f}" for s in steps)
    return f"steps {steps.start}-{steps.stop - 1}: gain/step_angle {angles}"


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (ties get their mean rank)."""
    import pandas as pd

    return float(pd.Series(x).rank().corr(pd.Series(y).rank()))


def prepass_agrees_with_scorer(run_dir: Path, scorer_file: Path) -> str:
    """The pre-pass keys (through the actor) rank the prompts as ``verl-gain score`` does."""
    prepass, _, _ = read_scores(run_dir / SCORES_FILE)
    scorer, _, _ = read_scores(scorer_file)
    _require(np.isfinite(prepass[["intra", "inter", "key"]].to_numpy()).all(), "NaN/inf in the pre-pass scores")
    merged = prepass.merge(scorer, on="position", suffixes=("_prepass", "_scorer"))
    _require(len(merged) == len(prepass) == len(scorer), f"{len(prepass)} pre-pass rows vs {len(scorer)} scored")
    rho = spearman(merged["key_prepass"].to_numpy(), merged["key_scorer"].to_numpy())
    largest = float(np.abs(merged["key_prepass"] - merged["key_scorer"]).max())
    detail = f"Spearman {rho:.5f} over {len(merged)} prompts (largest key difference {largest:.2e})"
    _require(rho >= MIN_RANK_CORRELATION, f"{detail} < {MIN_RANK_CORRELATION}")
    return detail


def check_runs(
    first: Path, resumed: Path, first_metrics: Path, resumed_metrics: Path, total_steps: int, resumed_from: int
) -> str:
    """A GAIN run and its twin resumed from step ``resumed_from`` in a fresh process: finite pre-pass scores,
    complete traces, curriculum state in every step folder, the resumed run continuing from its checkpoint with the
    batch the uninterrupted run drew, the ``gain/`` metrics on every step."""
    scores, _, _ = read_scores(first / SCORES_FILE)
    _require(np.isfinite(scores[["intra", "inter", "key"]].to_numpy()).all(), "NaN/inf in the pre-pass scores")
    trace, resumed_trace = read_trace(first / TRACE_FILE), read_trace(resumed / TRACE_FILE)
    _require([r["step"] for r in trace] == list(range(1, total_steps + 1)), "uninterrupted trace incomplete")
    _require([r["step"] for r in resumed_trace] == list(range(1, total_steps + 1)), "resumed trace incomplete")
    for step in range(1, total_steps + 1):
        _require((first / f"global_step_{step}" / STATE_FILE).is_file(), f"no curriculum state at step {step}")
    same = sorted(trace[resumed_from]["positions"]) == sorted(resumed_trace[resumed_from]["positions"])
    _require(same, "the resumed run drew other prompts at the step after its checkpoint")
    metrics, again = logged(first_metrics), logged(resumed_metrics)
    _require(bool(again) and min(again) == resumed_from + 1, "the resumed run did not continue from its checkpoint")
    for step in range(1, total_steps + 1):  # training steps: a validation before training logs step 0 without them
        _require(REQUIRED_METRICS <= set(metrics.get(step, {})), f"gain/ metrics missing at step {step}")
    mu = again[resumed_from + 1]["gain/mu_before"]
    return f"resumed at step {resumed_from + 1} with mu {mu:.3f}, drew the uninterrupted run's batch"


if __name__ == "__main__":
    smoke_dir = Path(sys.argv[1])
    print(
        check_runs(
            smoke_dir / "v1" / "checkpoints",
            smoke_dir / "resumed" / "checkpoints",
            smoke_dir / "v1" / "metrics.jsonl",
            smoke_dir / "resumed" / "metrics.jsonl",
            SMOKE_STEPS,
            SMOKE_RESUMED_FROM,
        )
    )

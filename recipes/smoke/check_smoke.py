"""Checks of recipes/smoke/gpu_smoke.sh's two runs (uninterrupted 3 steps; resumed from step 2).

Usage: python recipes/smoke/check_smoke.py SMOKE_DIR   (exit code 0 = all checks passed)

``check_runs`` takes the folders and metric files explicitly; tests/trainer/test_gain_e2e.py applies it to the CPU
end-to-end runs, so the checker itself is exercised without a GPU.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from verl_gain.scoring.scores_file import read_scores
from verl_gain.trainer.curriculum import SCORES_FILE, STATE_FILE, TRACE_FILE, read_trace

SMOKE_STEPS, SMOKE_RESUMED_FROM = 3, 2


def logged(path: Path) -> dict[int, dict]:
    return {entry["step"]: entry["data"] for entry in map(json.loads, path.read_text().splitlines()) if entry}


def check_runs(
    first: Path, resumed: Path, first_metrics: Path, resumed_metrics: Path, total_steps: int, resumed_from: int
) -> None:
    """Assert what a GAIN run and its resumed twin must show (raises AssertionError naming the failed check)."""
    scores, _, _ = read_scores(first / SCORES_FILE)
    assert np.isfinite(scores[["intra", "inter", "key"]].to_numpy()).all(), "NaN/inf in the pre-pass scores"
    print(f"pre-pass: {len(scores)} prompts, key mean {scores['key'].mean():.4f} sd {scores['key'].std():.4f}")

    trace, resumed_trace = read_trace(first / TRACE_FILE), read_trace(resumed / TRACE_FILE)
    assert [r["step"] for r in trace] == list(range(1, total_steps + 1)), "uninterrupted trace incomplete"
    assert [r["step"] for r in resumed_trace] == list(range(1, total_steps + 1)), "resumed trace incomplete"
    for step in range(1, total_steps + 1):
        assert (first / f"global_step_{step}" / STATE_FILE).is_file(), f"no curriculum state at step {step}"
    same = sorted(trace[resumed_from]["positions"]) == sorted(resumed_trace[resumed_from]["positions"])
    assert same, "the resumed run drew other prompts at the step after its checkpoint"

    metrics, resumed_metrics = logged(first_metrics), logged(resumed_metrics)
    assert min(resumed_metrics) == resumed_from + 1, "the resumed run did not continue from its checkpoint"
    for step, data in sorted(metrics.items()):
        gain = {k: v for k, v in data.items() if k.startswith("gain/")}
        assert {"gain/mu", "gain/delta", "gain/step_acc", "gain/step_angle"} <= set(gain), f"gain/ metrics at {step}"
        print(f"step {step}: " + ", ".join(f"{k[5:]}={v:.4g}" for k, v in sorted(gain.items())))
    print("GAIN run checks passed")


if __name__ == "__main__":
    smoke_dir = Path(sys.argv[1])
    check_runs(
        smoke_dir / "first",
        smoke_dir / "resumed",
        smoke_dir / "first.jsonl",
        smoke_dir / "resumed.jsonl",
        SMOKE_STEPS,
        SMOKE_RESUMED_FROM,
    )

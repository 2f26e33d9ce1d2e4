"""Learning speed of GAIN vs uniform sampling on the demo's task (a benchmark script, not a test).

Runs the demo's training (``verl_gain.demo``: verl's V1 GRPO trainer on the CPU backend, SmolLM2-135M-Instruct, the
embedded arithmetic task) twice per seed, with GAIN sampling and with verl's uniform shuffled sampler
(``gain.enable=False``), on the same task, model, step budget and seed, and evaluates the held-out split every
``--test-freq`` steps (verl's validation, greedy). Reports per arm:

- steps to target: the first evaluated step whose held-out accuracy reaches the target (default: halfway from the
  mean starting accuracy to the best accuracy any run reached; ``--target`` sets it), and
- area under the held-out accuracy curve (trapezoid over steps 0..S, divided by S: the mean accuracy over training),

and the paired per-seed ratios (uniform steps / GAIN steps; GAIN AUC / uniform AUC) with their mean and spread.
Writes ``summary.md``, ``summary.json`` and ``learning_speed.png`` into ``--out``; finished runs are reused, so an
interrupted benchmark continues where it stopped.

    python bench/bench_learning_speed.py [--seeds 0 1 2] [--steps 10] [--test-freq 2] [--out runs/learning_speed]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from verl_gain.demo.launcher import read_metrics
from verl_gain.demo.report import overall_accuracy, validation_accuracy
from verl_gain.demo.run import DemoSettings, run_training
from verl_gain.demo.run_folder import METRICS_FILE

ARMS = ("gain", "uniform")


@dataclass
class Curve:
    """One run's held-out accuracy over training: ``steps[i]`` -> ``acc[i]`` (step 0 = before training)."""

    arm: str
    seed: int
    steps: np.ndarray
    acc: np.ndarray
    wall_s: float

    def steps_to(self, target: float) -> float:
        """The first evaluated step with accuracy >= target, or inf when no evaluation reached it."""
        reached = np.nonzero(self.acc >= target)[0]
        return float(self.steps[reached[0]]) if reached.size else float("inf")

    def auc(self) -> float:
        """Mean held-out accuracy over the run: trapezoid area over steps 0..S divided by S."""
        return float(np.trapezoid(self.acc, self.steps) / (self.steps[-1] - self.steps[0]))


def read_curve(run_dir: Path, arm: str, seed: int, wall_s: float) -> Curve:
    """The held-out accuracy curve of a finished run folder (verl's validation metrics, all levels pooled)."""
    sizes = pd.read_parquet(run_dir / "data" / "test.parquet")["data_source"].value_counts().to_dict()
    val = validation_accuracy(read_metrics(run_dir / METRICS_FILE))
    steps = np.array(sorted(val))
    return Curve(arm, seed, steps, np.array([overall_accuracy(val[s], sizes) for s in steps]), wall_s)


def run_arm(out: Path, arm: str, seed: int, steps: int, test_freq: int) -> Curve:
    """Train one arm for one seed (or reuse a finished run) and return its held-out accuracy curve."""
    run_dir = out / f"{arm}-seed{seed}"
    done = run_dir / "finished.json"
    if done.is_file():
        return read_curve(run_dir, arm, seed, json.loads(done.read_text())["wall_s"])
    settings = DemoSettings(out_dir=run_dir, sampling=arm, steps=steps, test_freq=test_freq, seed=seed)
    print(f"[bench] {arm} seed {seed}: {steps} steps -> {run_dir}", flush=True)
    started = time.perf_counter()
    result = run_training(settings)
    if result.returncode != 0:
        raise RuntimeError(f"{arm} seed {seed} failed (exit {result.returncode}); see {run_dir / 'train.log'}")
    wall_s = time.perf_counter() - started
    done.write_text(json.dumps({"wall_s": wall_s}))
    curve = read_curve(run_dir, arm, seed, wall_s)
    if curve.steps[-1] != steps:
        raise RuntimeError(f"{run_dir}: the last evaluation is at step {curve.steps[-1]}, expected {steps}")
    return curve


def _mean_sd(values: list[float]) -> str:
    finite = [v for v in values if np.isfinite(v)]
    if len(finite) < len(values):
        return f"{len(values) - len(finite)}/{len(values)} never reached"
    sd = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return f"{statistics.mean(finite):.2f} ± {sd:.2f}"


def summarise(curves: list[Curve], target: float | None) -> dict:
    """Per-arm and paired (per seed) figures; ``target`` None = halfway from the start to the best reached."""
    start = float(np.mean([c.acc[0] for c in curves]))
    best = float(max(c.acc.max() for c in curves))
    target = target if target is not None else start + 0.5 * (best - start)
    by = {(c.arm, c.seed): c for c in curves}
    seeds = sorted({c.seed for c in curves if all((arm, c.seed) in by for arm in ARMS)})
    arms = {
        arm: {
            "steps_to_target": [by[arm, s].steps_to(target) for s in seeds],
            "auc": [by[arm, s].auc() for s in seeds],
            "final": [float(by[arm, s].acc[-1]) for s in seeds],
            "start": [float(by[arm, s].acc[0]) for s in seeds],
            "wall_min": [by[arm, s].wall_s / 60 for s in seeds],
        }
        for arm in ARMS
    }
    step_ratio = [u / g for u, g in zip(arms["uniform"]["steps_to_target"], arms["gain"]["steps_to_target"])]
    auc_ratio = [g / u for g, u in zip(arms["gain"]["auc"], arms["uniform"]["auc"])]
    return {"target": target, "start": start, "best": best, "seeds": seeds, "arms": arms,
            "step_ratio_uniform_over_gain": step_ratio, "auc_ratio_gain_over_uniform": auc_ratio}  # fmt: skip


def table(summary: dict) -> str:
    arms = summary["arms"]

    def row(label: str, key: str, ratio: str = "") -> str:
        return f"| {label} | {_mean_sd(arms['gain'][key])} | {_mean_sd(arms['uniform'][key])} | {ratio} |"

    rows = [
        f"Target held-out accuracy {summary['target']:.3f} (mean start {summary['start']:.3f}, best reached "
        f"{summary['best']:.3f}); seeds {summary['seeds']}; mean ± sd over seeds.",
        "",
        "| | GAIN | uniform | ratio (paired per seed) |",
        "|---|---|---|---|",
        row(
            "steps to target", "steps_to_target", f"uniform / GAIN: {_mean_sd(summary['step_ratio_uniform_over_gain'])}"
        ),
        row(
            "area under the accuracy curve",
            "auc",
            f"GAIN / uniform: {_mean_sd(summary['auc_ratio_gain_over_uniform'])}",
        ),
        row("held-out accuracy, start", "start"),
        row("held-out accuracy, end", "final"),
        row("wall time per run (min)", "wall_min"),
    ]
    return "\n".join(rows) + "\n"


def plot(curves: list[Curve], target: float, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for arm, color in zip(ARMS, ("tab:red", "tab:blue")):
        arm_curves = [c for c in curves if c.arm == arm]
        for c in arm_curves:
            ax.plot(c.steps, c.acc, color=color, alpha=0.3, linewidth=1)
        ax.plot(
            arm_curves[0].steps,
            np.mean([c.acc for c in arm_curves], axis=0),
            color=color,
            linewidth=2.5,
            marker="o",
            label=f"{arm} (mean of {len(arm_curves)} seeds)",
        )
    ax.axhline(target, color="0.4", linestyle=":", label="target")
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("held-out accuracy (greedy)")
    ax.set_title("GAIN vs uniform sampling: SmolLM2-135M-Instruct, arithmetic task")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--test-freq", type=int, default=2)
    parser.add_argument("--target", type=float, default=None, help="held-out accuracy to reach (default: halfway)")
    parser.add_argument("--out", type=Path, default=Path("runs/learning_speed"))
    args = parser.parse_args()
    if args.steps % args.test_freq:
        parser.error("--steps must be a multiple of --test-freq (every run is evaluated at its last step)")
    args.out.mkdir(parents=True, exist_ok=True)
    curves = [run_arm(args.out, arm, seed, args.steps, args.test_freq) for seed in args.seeds for arm in ARMS]
    summary = summarise(curves, args.target)
    summary["curves"] = [
        {"arm": c.arm, "seed": c.seed, "steps": c.steps.tolist(), "acc": c.acc.tolist()} for c in curves
    ]
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    (args.out / "summary.md").write_text(table(summary))
    plot(curves, summary["target"], args.out / "learning_speed.png")
    print(table(summary))
    print(f"[bench] wrote {args.out / 'summary.md'} and {args.out / 'learning_speed.png'}")


if __name__ == "__main__":
    main()

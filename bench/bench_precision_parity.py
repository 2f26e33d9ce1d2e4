"""Does training in bf16 learn as well as in fp32? The demo run in both precisions (a study script, not a test).

Each run is ``python -m verl_gain.demo`` with ``--precision fp32`` or ``--precision bf16`` (``cpu.precision``:
verl's FSDP2 mixed precision with fp32 master weights and reductions, the hf rollout in bf16) and a seed; everything
else is the demo's (SmolLM2-135M-Instruct, the arithmetic task, 10 GRPO steps with GAIN sampling, held-out accuracy
on 80 problems, greedy, before training and every 5 steps). verl's validation runs in the run's precision.

Per run, a small JSON in ``bench/results/precision_parity/<precision>-seed<k>.json`` (commit it): held-out accuracy
at each evaluation, each step's time and its largest rollout-vs-actor log-prob difference. A run whose file exists is
never rerun, so the study can be finished over several sessions; ``--summary-only`` rebuilds the table from the files.

The verdict compares bf16's held-out accuracy after the last step with the fp32 runs': their mean, range and
standard deviation across seeds, and the binomial standard error of one run's accuracy on the held-out set; and
what each run learned (final minus step 0), since the step-0 evaluation itself runs in the run's precision. While the
run folders are there, also the order agreement of the trainer's pre-pass (``gain_scores.parquet``) with fp32's.

    python bench/bench_precision_parity.py [--runs fp32:0 bf16:0 fp32:1 fp32:2] [--summary-only]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from verl_gain.cpu.adaptations import LOG_PROB_DIFF_METRIC
from verl_gain.demo.launcher import read_metrics
from verl_gain.demo.report import overall_accuracy, validation_accuracy
from verl_gain.demo.run import DemoSettings, run_training
from verl_gain.demo.run_folder import CHECKPOINTS_DIR, DATA_DIR, LOG_FILE, METRICS_FILE
from verl_gain.inference import BF16, FP32
from verl_gain.scoring.report import spearman
from verl_gain.trainer.curriculum import SCORES_FILE

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results" / "precision_parity"
RUNS_DIR = REPO / "runs" / "precision_parity"
DEFAULT_RUNS = ("fp32:0", "bf16:0", "fp32:1", "fp32:2", "bf16:1", "bf16:2")
"""One bf16 run early (so a cut-off study still has one), the three fp32 runs, then more bf16 runs."""
PRECISION_LINE = re.compile(r"CPU backend precision: (?P<precision>\w+)")
STEP_TIME = "timing_s/step"
TRAIN_REWARD = "critic/score/mean"


def result_path(results_dir: Path, precision: str, seed: int) -> Path:
    return results_dir / f"{precision}-seed{seed}.json"


def summarize_run(run_dir: Path, settings: DemoSettings, wall_s: float) -> dict:
    """The small record of a finished run, from what it left in its folder."""
    steps = read_metrics(run_dir / METRICS_FILE)
    sizes = pd.read_parquet(run_dir / DATA_DIR / "test.parquet")["data_source"].value_counts().to_dict()
    held_out = {step: overall_accuracy(per_source, sizes) for step, per_source in validation_accuracy(steps).items()}

    def metric(name: str) -> dict[int, float]:
        return {int(e["step"]): float(e["data"][name]) for e in steps if name in e["data"]}

    found = PRECISION_LINE.search((run_dir / LOG_FILE).read_text())
    return {
        "precision_requested": settings.precision,
        "precision_run": found["precision"] if found else None,
        "seed": settings.seed,
        "settings": {k: v for k, v in asdict(settings).items() if k not in ("out_dir", "timeout_s")},
        "held_out_problems": int(sum(sizes.values())),
        "held_out_accuracy": {str(step): acc for step, acc in sorted(held_out.items())},
        "step_seconds": {str(k): v for k, v in sorted(metric(STEP_TIME).items())},
        "rollout_actor_log_prob_abs_diff_max": {str(k): v for k, v in sorted(metric(LOG_PROB_DIFF_METRIC).items())},
        "train_reward": {str(k): v for k, v in sorted(metric(TRAIN_REWARD).items())},
        "wall_s": round(wall_s, 1),
    }


def run_one(precision: str, seed: int, results_dir: Path, runs_dir: Path) -> dict:
    path = result_path(results_dir, precision, seed)
    if path.is_file():
        print(f"[parity] {path.name} exists: not rerun", flush=True)
        return json.loads(path.read_text())
    settings = DemoSettings(out_dir=runs_dir / f"{precision}-seed{seed}", precision=precision, seed=seed)
    print(f"[parity] running {precision} seed {seed} -> {settings.out_dir}", flush=True)
    started = time.perf_counter()
    result = run_training(settings)
    if result.returncode != 0:
        raise SystemExit(f"[parity] {precision} seed {seed} failed (exit {result.returncode}): {result.output[-2000:]}")
    record = summarize_run(settings.out_dir, settings, time.perf_counter() - started)
    if record["precision_run"] != precision:
        raise SystemExit(f"[parity] asked for {precision}, the run says {record['precision_run']}")
    results_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"[parity] -> {path}", flush=True)
    return record


def final_accuracy(record: dict) -> float:
    accuracy = record["held_out_accuracy"]
    return accuracy[max(accuracy, key=int)]


def learned(record: dict) -> float:
    """Held-out accuracy after the last step minus before the first: what training added, whatever the evaluation's
    own precision shifts at step 0 (verl's validation runs in the run's precision)."""
    return final_accuracy(record) - record["held_out_accuracy"]["0"]


def prepass_order(runs_dir: Path) -> dict | None:
    """The trainer's GAIN pre-pass (run through verl's actor in the run's precision) against fp32's: Spearman rho of
    each run's keys with those of the first fp32 run, and the largest key difference. From the run folders (not
    committed): ``None`` where they are gone."""
    found = {p.parent.parent.name: p for p in sorted(runs_dir.glob(f"*-seed*/{CHECKPOINTS_DIR}/{SCORES_FILE}"))}
    reference = next((name for name in found if name.startswith(FP32)), None)
    if reference is None:
        return None
    base = pd.read_parquet(found[reference]).sort_values("index")
    out: dict = {"against": reference, "prompts": len(base), "runs": {}}
    for name, path in found.items():
        scores = pd.read_parquet(path).sort_values("index")
        if not np.array_equal(scores["index"].to_numpy(), base["index"].to_numpy()):
            continue  # another task: not comparable
        out["runs"][name] = {
            "spearman_key": spearman(base["key"], scores["key"]),
            "key_abs_diff_max": float(np.abs(base["key"].to_numpy() - scores["key"].to_numpy()).max()),
        }
    return out


def summary(results_dir: Path, runs_dir: Path = RUNS_DIR) -> dict:
    """The comparison of bf16's final held-out accuracy with the fp32 runs', from the result files (and the pre-pass
    order agreement from the run folders, when they are still there)."""
    records = [json.loads(p.read_text()) for p in sorted(results_dir.glob("*-seed*.json"))]
    by_precision = {p: [r for r in records if r["precision_run"] == p] for p in (FP32, BF16)}
    fp32 = np.array([final_accuracy(r) for r in by_precision[FP32]])
    out: dict = {"runs": {}}
    for precision, runs in by_precision.items():
        for r in runs:
            diffs = list(r["rollout_actor_log_prob_abs_diff_max"].values())
            times = [v for k, v in r["step_seconds"].items() if int(k) > 1]  # step 1 pays warm-up
            out["runs"][f"{precision}-seed{r['seed']}"] = {
                "held_out_accuracy": r["held_out_accuracy"],
                "learned": learned(r),
                "log_prob_diff_max": max(diffs) if diffs else None,
                "log_prob_diff_median": float(np.median(diffs)) if diffs else None,
                "median_step_s_after_first": float(np.median(times)) if times else None,
            }
    if len(fp32):
        problems = by_precision[FP32][0]["held_out_problems"]
        mean = float(fp32.mean())
        out["fp32_final"] = {
            "mean": mean,
            "min": float(fp32.min()),
            "max": float(fp32.max()),
            "sd_across_seeds": float(fp32.std(ddof=1)) if len(fp32) > 1 else None,
            "binomial_se": math.sqrt(mean * (1 - mean) / problems),
            "runs": len(fp32),
            "learned_mean": float(np.mean([learned(r) for r in by_precision[FP32]])),
            "step0_mean": float(np.mean([r["held_out_accuracy"]["0"] for r in by_precision[FP32]])),
        }
        noise = max(out["fp32_final"]["sd_across_seeds"] or 0.0, out["fp32_final"]["binomial_se"])
        out["bf16_final"] = {
            f"seed{r['seed']}": {
                "accuracy": final_accuracy(r),
                "minus_fp32_mean": final_accuracy(r) - mean,
                "learned": learned(r),
                "within_2_noise": abs(final_accuracy(r) - mean) <= 2 * noise,
                "within_fp32_range": float(fp32.min()) <= final_accuracy(r) <= float(fp32.max()),
            }
            for r in by_precision[BF16]
        }
        out["noise"] = {"value": noise, "is": "max(sd across fp32 seeds, binomial standard error)"}
        bf16 = np.array([final_accuracy(r) for r in by_precision[BF16]])
        if len(bf16):
            out["bf16_final_mean"] = {
                "mean": float(bf16.mean()),
                "runs": len(bf16),
                "minus_fp32_mean": float(bf16.mean()) - mean,
                "learned_mean": float(np.mean([learned(r) for r in by_precision[BF16]])),
                "step0_mean": float(np.mean([r["held_out_accuracy"]["0"] for r in by_precision[BF16]])),
            }
    order = prepass_order(runs_dir)
    if order is not None:
        out["prepass_order"] = order
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=list(DEFAULT_RUNS), help="precision:seed, in order")
    parser.add_argument("--summary-only", action="store_true", help="rebuild the summary from the result files")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--runs-dir", type=Path, default=RUNS_DIR, help="run folders (not committed)")
    args = parser.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    if not args.summary_only:
        for spec in args.runs:
            precision, _, seed = spec.partition(":")
            if precision not in (FP32, BF16) or not seed.isdigit():
                raise SystemExit(f"--runs takes precision:seed with precision fp32 or bf16, got {spec!r}")
            run_one(precision, int(seed), args.results, args.runs_dir)
            (args.results / "summary.json").write_text(
                json.dumps(summary(args.results, args.runs_dir), indent=1) + "\n"
            )
    result = summary(args.results, args.runs_dir)
    (args.results / "summary.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

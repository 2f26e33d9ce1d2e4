"""Does GAIN learn faster? Five sampling arms on the demo's task, paired by seed (a study script, not a test).

Every arm runs verl's V1 GRPO trainer through ``python -m verl_gain.main`` on the CPU backend (``verl_gain.demo.run``:
SmolLM2-135M-Instruct, the embedded arithmetic task), with the same model, task, budget and seed; only the sampler
differs:

==============  =====================================================================================================
uniform         verl's shuffled sampler (``gain.enable=False``): the baseline
gain            the GAIN window over the angle-concentration order, the shipped defaults
gain-reversed   the same window over the reversed order (an anti-curriculum)
gain-shuffled   the same window over a random order (the window's mechanics without the angle signal)
easy-first      the same window over the initial model's measured accuracy on each training prompt, highest first
                (an oracle difficulty curriculum: what AdaRFT-style methods approximate)
==============  =====================================================================================================

verl's validation measures held-out accuracy (greedy) before training and every ``test_freq`` steps. Per run: steps
to the target accuracy (the uniform arm's mean final accuracy) and the area under the held-out curve; per arm, the
differences and ratios against uniform, paired by seed, with bootstrap 95% intervals over seeds.

Each finished run leaves a small JSON in ``bench/results/learning_speed/<arm>-seed<k>.json`` (commit it): a run whose
file exists for the same study design is never rerun, so the study can be finished over several sessions and
machines, and the table rebuilt from the files alone (``--summary-only``). The easy-first arm's accuracy measurement
is kept the same way (``easy_first_accuracy.json``).

    python bench/bench_learning_speed.py [--arms uniform gain ...] [--seeds 0 1 2 3 4] [--summary-only]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from verl_gain.demo.launcher import read_metrics
from verl_gain.demo.report import overall_accuracy, validation_accuracy
from verl_gain.demo.run import DemoSettings, run_training
from verl_gain.demo.run_folder import DATA_DIR, METRICS_FILE
from verl_gain.inference import BF16
from verl_gain.model_sources import SMOLLM2_NAME
from verl_gain.tasks import arithmetic

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results" / "learning_speed"
PLOT_PATH = REPO / "docs" / "results" / "learning_speed.png"
RUNS_DIR = REPO / "runs" / "learning_speed"

ARMS = ("uniform", "gain", "gain-reversed", "gain-shuffled", "easy-first")
BASELINE = "uniform"
EASY_FIRST_FILE = "easy_first_accuracy.json"
EASY_FIRST_SAMPLES = 8
"""Sampled replies per training prompt for the easy-first order: accuracy in steps of 1/8, the GRPO group size x 2."""
STUDY_WORKERS = 2
STUDY_THREADS_PER_WORKER = 1
STUDY_MAX_MICRO_BATCH = 8
STUDY_GATHER_ONCE = False
STUDY_SMALL_MODEL_UPDATE = False
"""The actor update as the study's first runs had it (2 workers of 1 thread, micro-batches of 8, gradients reduced per
micro-batch, verl's sdpa attention, gradient checkpointing and per-tensor AdamW), before the demo moved to one worker
with every core, one micro-batch and ``SMALL_MODEL_UPDATE_OVERRIDES``: every run of the study sums its gradients the
same way, so runs of one seed stay paired whichever session ran them. Not part of ``StudyDesign``, whose fields name
the committed results."""
BOOTSTRAP_RESAMPLES = 10_000
CONFIDENCE = 0.95
BOOTSTRAP_SEED = 17


@dataclass(frozen=True)
class StudyDesign:
    """What every run of the study shares; a result file is reused only for the same design.

    Sized so that a 135M model on 2 CPU cores finishes a run in minutes, and so that the uniform arm is still
    improving at the last step (the demo's 10 steps were not enough to tell arms apart: docs/results.md):

    - ``test_size`` 400 held-out problems: one problem = 0.0025 of accuracy (the demo's 80: 0.0125).
    - ``train_size`` 320 prompts, 8 per step: 20 steps draw 160, half the set, so the order decides which half.
    - ``precision`` bf16: the CPU backend's precision on this project's machine (``cpu.precision=auto`` picks it where
      the CPU has bf16 instructions); a run at another precision is another design, never paired with these. bf16
      learned as much as fp32 on the demo task (docs/cpu.md, learning parity), in less step time.
    """

    model: str = SMOLLM2_NAME
    train_size: int = 320
    test_size: int = 400
    steps: int = 20
    test_freq: int = 4
    prompts_per_step: int = 8
    rollouts: int = 4
    response_length: int = 32
    task_seed: int = arithmetic.DEFAULT_SEED
    precision: str = BF16

    def __post_init__(self) -> None:
        if self.steps % self.test_freq:
            raise ValueError(f"steps ({self.steps}) must be a multiple of test_freq ({self.test_freq})")


@dataclass
class Curve:
    """One run's held-out accuracy: ``acc[i]`` after ``steps[i]`` GRPO steps (step 0 = before training)."""

    arm: str
    seed: int
    steps: np.ndarray
    acc: np.ndarray
    wall_s: float

    def steps_to(self, target: float) -> float | None:
        """The first evaluated step with accuracy >= target; None when no evaluation reached it (censored)."""
        reached = np.nonzero(self.acc >= target)[0]
        return float(self.steps[reached[0]]) if reached.size else None

    def auc(self) -> float:
        """Mean held-out accuracy over the run: the trapezoid area over steps 0..S divided by S."""
        return float(np.trapezoid(self.acc, self.steps) / (self.steps[-1] - self.steps[0]))


# -- running ----------------------------------------------------------------------------------------------------------


def result_path(results_dir: Path, arm: str, seed: int) -> Path:
    return results_dir / f"{arm}-seed{seed}.json"


def arm_overrides(arm: str, easy_first_order: Path | None) -> tuple[str, dict[str, Any]]:
    """(sampling, ``gain.*`` overrides) of an arm: every GAIN arm keeps the shipped window, only the order differs."""
    if arm == "uniform":
        return "uniform", {}
    if arm == "gain":
        return "gain", {}
    if arm == "gain-reversed":
        return "gain", {"order": "reversed"}
    if arm == "gain-shuffled":
        return "gain", {"order": "random"}
    if arm == "easy-first":
        if easy_first_order is None:
            raise ValueError("the easy-first arm needs the initial model's accuracy order (easy_first_order)")
        return "gain", {"order": str(easy_first_order)}
    raise ValueError(f"unknown arm {arm!r}; arms are {ARMS}")


def read_run_curve(run_dir: Path) -> tuple[np.ndarray, np.ndarray, dict[int, dict[str, float]]]:
    """(steps, pooled accuracy, per-level accuracy) of a finished run folder, from verl's validation metrics."""
    sizes = pd.read_parquet(run_dir / DATA_DIR / "test.parquet")["data_source"].value_counts().to_dict()
    val = validation_accuracy(read_metrics(run_dir / METRICS_FILE))
    steps = np.array(sorted(val))
    return steps, np.array([overall_accuracy(val[s], sizes) for s in steps]), val


def run_settings(design: StudyDesign, sampling: str, gain: dict[str, Any], seed: int, run_dir: Path) -> DemoSettings:
    """The demo run of one arm and seed: the design's sizes, the arm's sampling, the study's pinned actor update."""
    return DemoSettings(
        out_dir=run_dir,
        model=design.model,
        sampling=sampling,
        steps=design.steps,
        train_size=design.train_size,
        test_size=design.test_size,
        prompts_per_step=design.prompts_per_step,
        rollouts=design.rollouts,
        response_length=design.response_length,
        test_freq=design.test_freq,
        seed=seed,
        task_seed=design.task_seed,
        gain=gain,
        precision=design.precision,
        workers=STUDY_WORKERS,
        threads_per_worker=STUDY_THREADS_PER_WORKER,
        max_micro_batch=STUDY_MAX_MICRO_BATCH,
        gather_once=STUDY_GATHER_ONCE,
        small_model_update=STUDY_SMALL_MODEL_UPDATE,
        timeout_s=4 * 3600.0,
    )


def run_one(design: StudyDesign, arm: str, seed: int, results_dir: Path, runs_dir: Path) -> dict[str, Any]:
    """Train one arm for one seed and write its result file (or return the one already there for this design)."""
    path = result_path(results_dir, arm, seed)
    if path.is_file():
        result = json.loads(path.read_text())
        if result["design"] == asdict(design):
            return result
        print(f"[study] {path.name} is from another design; rerunning it", flush=True)
    easy_first = easy_first_order_file(design, results_dir, runs_dir) if arm == "easy-first" else None
    sampling, gain = arm_overrides(arm, easy_first)
    run_dir = runs_dir / f"{arm}-seed{seed}"
    settings = run_settings(design, sampling, gain, seed, run_dir)
    print(f"[study] {arm} seed {seed}: {design.steps} steps -> {run_dir}", flush=True)
    started = time.perf_counter()
    outcome = run_training(settings)
    if outcome.returncode != 0:
        raise RuntimeError(f"{arm} seed {seed} failed (exit {outcome.returncode}); see {run_dir / 'train.log'}")
    steps, acc, per_source = read_run_curve(run_dir)
    if steps[-1] != design.steps:
        raise RuntimeError(f"{run_dir}: the last evaluation is at step {steps[-1]}, expected {design.steps}")
    metrics = read_metrics(run_dir / METRICS_FILE)
    result = {
        "design": asdict(design),
        "arm": arm,
        "seed": seed,
        "steps": steps.tolist(),
        "acc": acc.tolist(),
        "acc_by_source": {str(s): per_source[s] for s in sorted(per_source)},
        "train_reward": {
            str(m["step"]): m["data"]["critic/score/mean"] for m in metrics if "critic/score/mean" in m["data"]
        },
        "mu": {str(m["step"]): m["data"]["gain/mu"] for m in metrics if "gain/mu" in m["data"]},
        "wall_s": round(time.perf_counter() - started, 1),
        "commit": _commit(),
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"[study] {arm} seed {seed}: held-out {acc[0]:.3f} -> {acc[-1]:.3f} ({result['wall_s'] / 60:.1f} min)")
    return result


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def measure_initial_accuracy(
    design: StudyDesign, train_path: Path, samples: int, batch_prompts: int = 16
) -> list[float]:
    """The initial model's sampled accuracy on each training row (in dataset order), as the rollouts see it.

    Same prompt tokenisation (the chat template with a generation prompt), temperature and response length as the
    trainer's rollouts, ``samples`` replies per prompt.
    """
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from verl_gain.model_sources import resolve_model

    torch.manual_seed(design.task_seed)
    path = resolve_model(design.model)
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    rows = pd.read_parquet(train_path)
    accuracy: list[float] = []
    for start in tqdm(range(0, len(rows), batch_prompts), desc="easy-first: initial accuracy", unit="batch"):
        batch_rows = rows.iloc[start : start + batch_prompts]
        texts = [
            tokenizer.apply_chat_template(list(p), add_generation_prompt=True, tokenize=False)
            for p in batch_rows["prompt"]
        ]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(
                **batch,
                max_new_tokens=design.response_length,
                do_sample=True,
                temperature=arithmetic.ROLLOUT_TEMPERATURE,
                top_p=1.0,
                top_k=0,
                num_return_sequences=samples,
                pad_token_id=tokenizer.pad_token_id,
            )
        replies = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        truths = [r["ground_truth"] for r in batch_rows["reward_model"]]
        for i, truth in enumerate(truths):
            mine = replies[i * samples : (i + 1) * samples]
            accuracy.append(float(np.mean([arithmetic.compute_score("", r, truth)["acc"] for r in mine])))
    return accuracy


def easy_first_keys(accuracy: list[float], samples: int, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """Order keys from measured accuracy: highest first, ties broken at random (a jitter below one sample's step)."""
    jitter = np.random.default_rng(seed).uniform(0.0, 0.5 / samples, size=len(accuracy))
    return np.asarray(accuracy, dtype=np.float64) + jitter


def easy_first_order_file(design: StudyDesign, results_dir: Path, runs_dir: Path) -> Path:
    """A ``gain.order`` parquet (position, order_key) from the initial model's accuracy, measured once and kept."""
    cache = results_dir / EASY_FIRST_FILE
    cached = json.loads(cache.read_text()) if cache.is_file() else None
    if cached is None or cached["design"] != asdict(design):
        train, _ = arithmetic.write_task(
            runs_dir / "easy-first-task", design.train_size, design.test_size, design.task_seed
        )
        started = time.perf_counter()
        accuracy = measure_initial_accuracy(design, train, EASY_FIRST_SAMPLES)
        cached = {
            "design": asdict(design),
            "samples": EASY_FIRST_SAMPLES,
            "temperature": arithmetic.ROLLOUT_TEMPERATURE,
            "accuracy": accuracy,
            "wall_s": round(time.perf_counter() - started, 1),
        }
        results_dir.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(cached) + "\n")
    keys = easy_first_keys(cached["accuracy"], cached["samples"])
    order = runs_dir / "easy_first_order.parquet"
    order.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"position": np.arange(len(keys)), "order_key": keys}).to_parquet(order)
    return order


# -- statistics -------------------------------------------------------------------------------------------------------


def curve_of(result: dict[str, Any]) -> Curve:
    return Curve(result["arm"], result["seed"], np.array(result["steps"]), np.array(result["acc"]), result["wall_s"])


def censored_steps(curve: Curve, target: float, test_freq: int) -> float:
    """Steps to target; a run that never reached it counts as reaching it at the next evaluation after its last
    (a bound in its favour: the study cannot see further)."""
    reached = curve.steps_to(target)
    return reached if reached is not None else float(curve.steps[-1] + test_freq)


def bootstrap_interval(
    values: np.ndarray, statistic, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """Percentile bootstrap interval (``CONFIDENCE``) of ``statistic`` over the rows of ``values`` (seeds).

    values: [seeds, ...]; rows are resampled together, so paired columns stay paired.
    """
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(values), size=(resamples, len(values)))
    stats = np.array([statistic(values[p]) for p in picks])
    tail = (1.0 - CONFIDENCE) / 2.0
    return float(np.quantile(stats, tail)), float(np.quantile(stats, 1.0 - tail))


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-arm figures and paired comparisons with the uniform arm, over the seeds both have."""
    curves = {(r["arm"], r["seed"]): curve_of(r) for r in results}
    test_freq = results[0]["design"]["test_freq"]
    base_seeds = sorted(s for a, s in curves if a == BASELINE)
    if not base_seeds:
        raise ValueError(f"no {BASELINE} run yet: the target and every comparison are relative to it")
    target = float(np.mean([curves[BASELINE, s].acc[-1] for s in base_seeds]))
    arms: dict[str, Any] = {}
    for arm in ARMS:
        seeds = sorted(s for a, s in curves if a == arm and s in base_seeds)
        if not seeds:
            continue
        mine = [curves[arm, s] for s in seeds]
        base = [curves[BASELINE, s] for s in seeds]
        steps = np.array([censored_steps(c, target, test_freq) for c in mine])
        base_steps = np.array([censored_steps(c, target, test_freq) for c in base])
        auc = np.array([c.auc() for c in mine])
        base_auc = np.array([c.auc() for c in base])
        final = np.array([c.acc[-1] for c in mine])
        base_final = np.array([c.acc[-1] for c in base])
        pairs = np.stack([base_steps, steps, auc - base_auc, final - base_final], axis=1)
        arms[arm] = {
            "seeds": seeds,
            "start": float(np.mean([c.acc[0] for c in mine])),
            "final": float(final.mean()),
            "auc": float(auc.mean()),
            "steps_to_target": steps.tolist(),
            "reached": int(sum(c.steps_to(target) is not None for c in mine)),
            "wall_min": float(np.mean([c.wall_s for c in mine]) / 60),
            "step_ratio": float(base_steps.mean() / steps.mean()),
            "step_ratio_ci": bootstrap_interval(pairs, lambda p: p[:, 0].mean() / p[:, 1].mean()),
            "auc_diff": float((auc - base_auc).mean()),
            "auc_diff_ci": bootstrap_interval(pairs, lambda p: p[:, 2].mean()),
            "final_diff": float((final - base_final).mean()),
            "final_diff_ci": bootstrap_interval(pairs, lambda p: p[:, 3].mean()),
        }
    return {"target": target, "test_freq": test_freq, "design": results[0]["design"], "arms": arms}


def table(summary: dict[str, Any]) -> str:
    """The study's table in Markdown."""
    design = summary["design"]
    lines = [
        f"Target: held-out accuracy {summary['target']:.3f} (the uniform arm's mean final accuracy). "
        f"{design['steps']} steps of {design['prompts_per_step']} prompts x {design['rollouts']} rollouts, "
        f"{design['test_size']} held-out problems evaluated every {design['test_freq']} steps. Ratios and differences "
        f"are against uniform, paired by seed, with bootstrap {CONFIDENCE:.0%} intervals over seeds. A run that never "
        "reached the target counts as reaching it at the next evaluation after its last.",
        "",
        "| arm | seeds | held-out start | held-out end | end - uniform | AUC | AUC - uniform | reached target "
        "| steps-to-target ratio (uniform / arm) | min per run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def interval(ci: list[float] | tuple[float, float], fmt: str) -> str:
        return f"[{ci[0]:{fmt}}, {ci[1]:{fmt}}]"

    for arm, a in summary["arms"].items():
        lines.append(
            f"| {arm} | {len(a['seeds'])} | {a['start']:.3f} | {a['final']:.3f} | "
            f"{a['final_diff']:+.3f} {interval(a['final_diff_ci'], '+.3f')} | {a['auc']:.3f} | "
            f"{a['auc_diff']:+.3f} {interval(a['auc_diff_ci'], '+.3f')} | {a['reached']}/{len(a['seeds'])} | "
            f"{a['step_ratio']:.2f} {interval(a['step_ratio_ci'], '.2f')} | {a['wall_min']:.1f} |"
        )
    return "\n".join(lines) + "\n"


ARM_COLORS = {
    "uniform": "tab:blue",
    "gain": "tab:red",
    "gain-reversed": "tab:purple",
    "gain-shuffled": "tab:gray",
    "easy-first": "tab:green",
}


def plot(results: list[dict[str, Any]], target: float, path: Path) -> None:
    """Every arm's mean held-out curve with its bootstrap band over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for arm in ARMS:
        mine = [curve_of(r) for r in results if r["arm"] == arm]
        if not mine:
            continue
        acc = np.stack([c.acc for c in mine])  # [seeds, evaluations]
        band = np.array([bootstrap_interval(acc[:, [i]], lambda v: v.mean()) for i in range(acc.shape[1])])
        ax.plot(
            mine[0].steps,
            acc.mean(axis=0),
            color=ARM_COLORS[arm],
            marker="o",
            label=f"{arm} ({len(mine)} seed{'s' if len(mine) > 1 else ''})",
        )
        ax.fill_between(mine[0].steps, band[:, 0], band[:, 1], color=ARM_COLORS[arm], alpha=0.15)
    ax.axhline(target, color="0.4", linestyle=":", linewidth=1, label="target (uniform's mean end)")
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("held-out accuracy (greedy)")
    ax.set_title(
        f"Sampling arms: SmolLM2-135M-Instruct, arithmetic task\n(bands: {CONFIDENCE:.0%} bootstrap over seeds)",
        fontsize=10,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def load_results(results_dir: Path, design: StudyDesign) -> list[dict[str, Any]]:
    """Every result file of this design under ``results_dir``."""
    results = []
    for path in sorted(results_dir.glob("*-seed*.json")):
        result = json.loads(path.read_text())
        if result.get("design") == asdict(design):
            results.append(result)
    return results


def write_summary(results: list[dict[str, Any]], results_dir: Path, plot_path: Path) -> str:
    summary = summarise(results)
    text = table(summary)
    (results_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (results_dir / "summary.md").write_text(text)
    plot(results, summary["target"], plot_path)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--summary-only", action="store_true", help="rebuild the table and plot from the result files")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--runs", type=Path, default=RUNS_DIR, help="run folders (checkpoints, logs; not committed)")
    parser.add_argument("--plot", type=Path, default=PLOT_PATH)
    args = parser.parse_args()
    design = StudyDesign()
    if not args.summary_only:
        started = time.perf_counter()
        # Seed-major: every finished seed adds a complete pairing to the table.
        for seed in args.seeds:
            for arm in args.arms:
                run_one(design, arm, seed, args.results, args.runs)
        print(f"[study] runs done in {(time.perf_counter() - started) / 60:.1f} min")
    results = load_results(args.results, design)
    if not results:
        raise SystemExit(f"no result files for this design under {args.results}; run without --summary-only first")
    print(write_summary(results, args.results, args.plot))
    print(f"[study] wrote {args.results / 'summary.md'} and {args.plot}")


if __name__ == "__main__":
    main()

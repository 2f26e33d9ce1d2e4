"""The demo's GRPO step with the old rollout and the new, in one command (a benchmark, not a test).

Runs the demo's training (``verl_gain.demo.run``: SmolLM2-135M-Instruct, the arithmetic task, 8 prompts x 4 rollouts
of at most 32 tokens, GAIN on) once per arm, arms alternating when repeated, and compares verl's
per-step timings (the first step, which pays the workers' warm-up, is left out). The machine is shared: only the
ratios between arms of one command mean something.

Arms (each adds trainer overrides to the demo's own; every arm but the last three runs 2 trainer workers of one
thread each, as the demo did when they were measured; every arm but the last two runs verl's own update settings):

| arm | rollout, actor update, workers |
|---|---|
| generate | the hf server decoding with HF ``generate`` (the rollout before the static decoder) |
| static | the server's own decode loop (``verl_gain/cpu/decoding.py``), the default |
| static-one-server | the same, one server for both workers with both cores (``tensor_model_parallel_size=2``) |
| static-bf16 | the same with bf16 rollout weights (fp32 actor; weight check off: a preview of the bf16 setting) |
| update-8-sync-each | actor update in micro-batches of 8 rows; gradients reduced, parameters re-gathered for each |
| update-16-sync-once | one micro-batch of 16 rows; parameters kept gathered through backward, gradients reduced once |
| one-worker | the same on one worker with every core as its threads: one micro-batch of 32 rows |
| small-model-update | the same with eager attention, no gradient checkpointing, fused AdamW (the demo's default) |
| fused-log-probs | the same with verl's fused log-prob/entropy head (``use_fused_kernels``, torch backend) |

Usage: python bench/bench_rollout.py [--arms generate static] [--steps 4] [--repeats 1] [--label NAME]

``--label NAME`` writes the numbers to ``bench/results/rollout/NAME.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from bench_cpu_step import write_result

from verl_gain.demo.launcher import run_main
from verl_gain.demo.run import GATHER_ONCE_OVERRIDES, DemoSettings, run_env, task_paths, trainer_overrides
from verl_gain.model_sources import resolve_model

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results" / "rollout"
HF = "+actor_rollout_ref.rollout.engine_kwargs.hf"
ACTOR = "actor_rollout_ref.actor"
ARMS: dict[str, list[str]] = {
    "generate": [f"{HF}.decoder=generate"],
    "static": [f"{HF}.decoder=static"],
    "static-one-server": [
        f"{HF}.decoder=static",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=2",
        f"{HF}.num_threads={os.cpu_count()}",
    ],
    "static-bf16": [f"{HF}.decoder=static", "actor_rollout_ref.rollout.dtype=bfloat16", f"{HF}.verify_weights=false"],
    "update-8-sync-each": [
        f"{HF}.decoder=static",
        f"{ACTOR}.ppo_micro_batch_size_per_gpu=8",
        f"{ACTOR}.fsdp_config.reshard_after_forward=true",
        f"{ACTOR}.fsdp_config.use_no_sync_for_gradient_accumulation=false",
    ],
    "update-16-sync-once": [f"{HF}.decoder=static", f"{ACTOR}.ppo_micro_batch_size_per_gpu=16", *GATHER_ONCE_OVERRIDES],
    "one-worker": [],
    "small-model-update": [],
    "fused-log-probs": [
        "actor_rollout_ref.model.use_fused_kernels=true",
        "actor_rollout_ref.model.fused_kernel_options.impl_backend=torch",
    ],
}
VERL_UPDATE = {"small_model_update": False}
"""verl's own actor-update settings (sdpa, gradient checkpointing, per-tensor AdamW): every arm but ``DEMO_ARMS``."""
TWO_WORKERS = {"workers": 2, "threads_per_worker": 1, "max_micro_batch": 16, **VERL_UPDATE}
"""The demo's trainer before it ran one worker with every core: what the arms above were measured with."""
DEMO_ARMS = ("small-model-update", "fused-log-probs")
"""Arms on the demo's own trainer settings (one worker, its actor update)."""
ARM_SETTINGS: dict[str, dict[str, int | bool]] = {
    **{arm: TWO_WORKERS for arm in ARMS if arm not in ("one-worker", *DEMO_ARMS)},
    "one-worker": VERL_UPDATE,
}
"""``DemoSettings`` fields of an arm (the demo's own for ``DEMO_ARMS``)."""
QUIET = ["trainer.val_before_train=false", "trainer.test_freq=-1"]
"""No held-out evaluation: the bench times training steps only."""
TIMINGS = ("gen", "old_log_prob", "update_actor", "update_weights", "step")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arms", nargs="+", default=["generate", "static"], choices=sorted(ARMS))
    parser.add_argument("--steps", type=int, default=4, help="GRPO steps per run (the first is left out)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per arm, arms alternating")
    parser.add_argument("--label", help="write the results to bench/results/rollout/LABEL.json")
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be >= 2: the first step is warm-up and is left out")
    return args


def with_overrides(base: list[str], extra: list[str]) -> list[str]:
    """``base`` with every key that ``extra`` sets replaced by ``extra``'s value (hydra refuses a key twice)."""

    def key(override: str) -> str:
        return override.split("=", 1)[0].lstrip("+")

    replaced = {key(o) for o in extra}
    return [o for o in base if key(o) not in replaced] + extra


def run_arm(arm: str, steps: int, root: Path) -> dict[str, float]:
    """Mean of verl's per-step timings over the steps after the first, for one run of ``arm``."""
    settings = DemoSettings(out_dir=root, steps=steps, test_freq=steps, **ARM_SETTINGS.get(arm, {}))
    root.mkdir(parents=True, exist_ok=True)
    train, test = task_paths(settings)
    overrides = with_overrides(
        trainer_overrides(settings, resolve_model(settings.model), train, test), [*QUIET, *ARMS[arm]]
    )
    load_before = os.getloadavg()[0]
    result = run_main(overrides, root / "metrics.jsonl", settings.timeout_s, env=run_env(settings), cwd=root)
    result.check()
    logged = [entry["data"] for entry in result.steps if "timing_s/step" in entry["data"]][1:]
    means = {name: sum(d[f"timing_s/{name}"] for d in logged) / len(logged) for name in TIMINGS}
    means["run_seconds"] = result.seconds
    # The machine is shared: the 1-minute load average before and after the run says how busy it was.
    means["load_before"], means["load_after"] = load_before, os.getloadavg()[0]
    return means


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs: dict[str, list[dict[str, float]]] = {arm: [] for arm in args.arms}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="verl-gain-rollout-bench-") as tmp:
        for repeat in range(args.repeats):
            for arm in args.arms:
                print(f"[bench] {arm}, run {repeat + 1} of {args.repeats}: {args.steps} demo steps", flush=True)
                timings = run_arm(arm, args.steps, Path(tmp) / f"{arm}-{repeat}")
                runs[arm].append(timings)
                print(f"[bench] {arm}: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()), flush=True)
    means = {arm: {k: sum(r[k] for r in rs) / len(rs) for k in rs[0]} for arm, rs in runs.items()}
    baseline = args.arms[0]
    lines = [f"{'arm':>18} " + " ".join(f"{name:>14}" for name in TIMINGS) + "   (mean s per step; ratio to first arm)"]
    for arm, mean in means.items():
        cells = " ".join(f"{mean[n]:6.1f} ({mean[n] / means[baseline][n]:4.2f})" for n in TIMINGS)
        lines.append(f"{arm:>18} {cells}")
    table = "\n".join(lines)
    loads = [load for rs in runs.values() for r in rs for load in (r["load_before"], r["load_after"])]
    table += f"\n1-minute load average before/after the runs: {min(loads):.1f} to {max(loads):.1f}"
    print(f"\n{table}\nwhole bench {time.perf_counter() - started:.0f} s")
    if args.label:
        record = {"steps": args.steps, "runs": runs, "means": means, "table": table}
        write_result(RESULTS_DIR, args.label, Path(__file__).name, argv, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())

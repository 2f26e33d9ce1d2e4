"""Benchmark of the CPU backend (not a test): wall time per GRPO step of verl's trainer with SmolLM2-135M-Instruct.

Runs ``python -m verl_gain.main trainer.device=cpu`` (V1 sync trainer, reference model with KL loss, the hf rollout
backend) on GSM8K prompts for a few steps and prints verl's own timing metrics per step: ``gen`` (rollout),
``old_log_prob``, ``ref``, ``update_actor``, ``update_weights`` (the weight sync to the rollout servers) and the
whole ``step``. The first step also pays the start-up of the agent-loop and reward workers; the summary averages
the steps after it.

Usage: python bench/bench_cpu_step.py [--steps 4] [--prompts 8] [--rollouts 4] [--response-length 128]
                                      [--workers 2] [--workers-per-server 1] [--micro-batch 2]
                                      [--data ../shared/data/gsm8k/train.parquet]

Memory: ~4 GB per trainer worker (fp32 weights, gradients, Adam, logits) and ~1.8 GB per rollout server.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pandas as pd

from verl_gain.demo.launcher import run_main  # the same subprocess runner and metrics reader as the demo and e2e tests
from verl_gain.model_sources import SMOLLM2_NAME, resolve_model

REPO_ROOT = Path(__file__).resolve().parents[1]

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "gsm8k" / "train.parquet"
MAX_PROMPT_LENGTH = 256
"""GSM8K prompts under SmolLM2's chat template are ~110 tokens on average, 161 at most over the first 64."""
TIMINGS = ("gen", "old_log_prob", "ref", "adv", "update_actor", "update_weights", "step")
TIMEOUT_S = 3600.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=8, help="prompts per step (data.train_batch_size)")
    parser.add_argument("--rollouts", type=int, default=4, help="responses per prompt (rollout.n)")
    parser.add_argument("--response-length", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2, help="trainer workers (FSDP ranks)")
    parser.add_argument(
        "--workers-per-server",
        type=int,
        default=1,
        help="trainer workers per hf rollout server (rollout tensor_model_parallel_size): 1 = one server per worker "
        "(parallel generation), --workers = one server (less memory)",
    )
    parser.add_argument("--micro-batch", type=int, default=2, help="micro-batch size per worker (memory)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a verl-format GSM8K parquet file")
    parser.add_argument("--model", default=SMOLLM2_NAME)
    return parser.parse_args(argv)


def overrides(args: argparse.Namespace, model: Path, data: Path, checkpoints: Path) -> list[str]:
    return [
        "trainer.device=cpu",
        f"trainer.n_gpus_per_node={args.workers}",
        f"trainer.total_training_steps={args.steps}",
        "trainer.total_epochs=100",
        "trainer.logger=[console,file]",
        "trainer.val_before_train=false",
        "trainer.test_freq=-1",
        "trainer.save_freq=-1",
        "trainer.resume_mode=disable",
        f"trainer.default_local_dir={checkpoints}",
        "trainer.project_name=verl_gain_bench",
        "trainer.experiment_name=cpu_step",
        f"data.train_files={data}",
        f"data.val_files={data}",
        f"data.train_batch_size={args.prompts}",
        f"data.max_prompt_length={MAX_PROMPT_LENGTH}",
        f"data.max_response_length={args.response_length}",
        "data.filter_overlong_prompts=true",
        "data.shuffle=false",
        "algorithm.adv_estimator=grpo",
        f"actor_rollout_ref.model.path={model}",
        "actor_rollout_ref.actor.optim.lr=1e-6",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={args.prompts}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={args.micro_batch}",
        "actor_rollout_ref.actor.use_kl_loss=true",
        "actor_rollout_ref.actor.kl_loss_coef=0.001",
        f"actor_rollout_ref.rollout.n={args.rollouts}",
        f"actor_rollout_ref.rollout.tensor_model_parallel_size={args.workers_per_server}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={args.micro_batch}",
        f"actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu={args.micro_batch}",
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model = resolve_model(args.model)
    with tempfile.TemporaryDirectory(prefix="verl-gain-bench-") as tmp:
        tmp = Path(tmp)
        data = tmp / "gsm8k.parquet"
        pd.read_parquet(args.data).head(args.prompts * args.steps).to_parquet(data)
        print(
            f"[bench] {args.steps} steps x {args.prompts} prompts x {args.rollouts} rollouts x "
            f"{args.response_length} tokens, {args.workers} workers, model {model}",
            flush=True,
        )
        result = run_main(
            overrides(args, model, data, tmp / "checkpoints"), tmp / "metrics.jsonl", TIMEOUT_S, echo=True
        )
        result.check()
        steps = [entry for entry in result.steps if "timing_s/step" in entry["data"]]
    print(f"\nwall time of the whole run (start-up included): {result.seconds:.1f} s")
    header = f"{'step':>4} " + " ".join(f"{name:>14}" for name in TIMINGS) + f" {'resp. tokens':>12}"
    print(header)
    for entry in steps:
        data = entry["data"]
        cells = " ".join(f"{data.get(f'timing_s/{name}', float('nan')):14.2f}" for name in TIMINGS)
        print(f"{entry['step']:>4} {cells} {data['response_length/mean'] * args.prompts * args.rollouts:12.0f}")
    warm = steps[1:] or steps
    means = {name: sum(e["data"].get(f"timing_s/{name}", 0.0) for e in warm) / len(warm) for name in TIMINGS}
    print(
        f"mean of steps {warm[0]['step']}-{warm[-1]['step']} (s): "
        + ", ".join(f"{k} {v:.2f}" for k, v in means.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

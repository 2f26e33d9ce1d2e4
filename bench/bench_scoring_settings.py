"""Cheap settings of the bf16 pre-pass on this CPU (not a test): token budget and batch layout, as time ratios.

The question: does ``verl-gain score`` in bf16 get faster with another ``--token-budget`` or ``--layout``? (It did:
the default went from 2048 to 1024 tokens on these figures, ``bench/results/scoring_settings*.json``, both measured
with 2048 as the baseline: ``--settings 2048:right 512:right 1024:right ...``.) One process, one SmolLM2-135M-Instruct
in ``--dtype`` (default bf16, what ``--dtype auto`` picks on a CPU with bf16 instructions; fp32 to check a new
default there too), the first ``--prompts`` GSM8K prompts dealt into ``--slices`` slices that each span all lengths.
Each slice is scored under every setting back to back, the order rotating from slice to slice, so on a shared, noisy
machine all settings see the same load; the figure is each setting's time over the first setting's, in wall and CPU
time (this process, all threads).

``--profile`` also reports where the scorer's CPU time goes (torch profiler, one batch at the baseline's budget, fp32
and bf16, the forward stopping at the capture point as in ``verl-gain score``): the share of matrix products
(``aten::mm``, ``addmm``, ``bmm``) and attention (sdpa's CPU kernel), by self time, against everything else (norms,
rotary embeddings, activations, residual adds, casts, the segment sums).

Usage: python bench/bench_scoring_settings.py [--prompts 400] [--slices 8] [--threads 1] [--dtype bfloat16] [--profile]
       [--settings BUDGET:LAYOUT ...] (default: the default budget first, then 512 to 8192, then packed)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from bench_results import report
from bench_scoring_precision import DEFAULT_DATA, segmented_prompts  # same prompts as the precision bench

from verl_gain.inference import DTYPES, cpu_bf16_instructions
from verl_gain.scoring.capture import HiddenStateCapture
from verl_gain.scoring.constants import DEFAULT_CAPTURE, DEFAULT_TOKEN_BUDGET, LAYOUTS
from verl_gain.scoring.scorer import forward_segment_sums, load_model, plan_batches, score_prompts

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "scoring_settings.json"
BUDGETS = (512, 1024, 2048, 4096, 8192)
DEFAULT_SETTINGS = (
    f"{DEFAULT_TOKEN_BUDGET}:right",
    *(f"{budget}:right" for budget in BUDGETS if budget != DEFAULT_TOKEN_BUDGET),
    f"{DEFAULT_TOKEN_BUDGET}:packed",
)
"""The default first (the baseline of the ratios); smaller and larger budgets; packed batches (no padding)."""
MATRIX_OPS = ("aten::mm", "aten::addmm", "aten::bmm")
ATTENTION_OPS = ("aten::_scaled_dot_product_flash_attention_for_cpu", "aten::_scaled_dot_product_attention_math")
"""The CPU kernels behind ``F.scaled_dot_product_attention`` in torch 2.13 (fused flash kernel, or the math path)."""


def parse_setting(spec: str) -> tuple[int, str]:
    budget, _, layout = spec.partition(":")
    if not budget.isdigit() or layout not in LAYOUTS:
        raise SystemExit(f"--settings takes budget:layout with layout one of {', '.join(LAYOUTS)}, got {spec!r}")
    return int(budget), layout


def profile_shares(model: torch.nn.Module, prompts: list, pad: int, budget: int) -> dict[str, float]:
    """Shares of one batch's CPU time in the scorer (forward to the capture point, segment sums; self time, all ops) in
    matrix products and in attention."""
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    batch = plan_batches([len(prompts[i]) for i in order], budget)[len(order) // 40]  # a typical one
    members = [prompts[order[j]] for j in batch]
    with torch.inference_mode(), HiddenStateCapture(model, DEFAULT_CAPTURE, stop_forward=True) as hook:
        forward_segment_sums(hook, members, "right", pad)  # warm-up
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            forward_segment_sums(hook, members, "right", pad)  # the scorer's work on one batch, early exit
    self_us = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    total = sum(self_us.values())
    matrix = sum(self_us.get(op, 0.0) for op in MATRIX_OPS)
    attention = sum(self_us.get(op, 0.0) for op in ATTENTION_OPS)
    return {
        "batch_shape": [len(members), max(len(p) for p in members)],
        "forward_ms": round(total / 1e3, 1),
        "matrix_products": round(matrix / total, 3),
        "attention": round(attention / total, 3),
        "rest": round(1 - (matrix + attention) / total, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="GSM8K train parquet (verl format)")
    parser.add_argument("--prompts", type=int, default=400, help="the first N prompts of the file")
    parser.add_argument("--slices", type=int, default=8, help="slices, each scored under every setting in turn")
    parser.add_argument("--settings", nargs="+", default=list(DEFAULT_SETTINGS), help="budget:layout, default first")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadier on a busy machine)")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16", help="the model's dtype")
    parser.add_argument("--profile", action="store_true", help="also: where a forward's CPU time goes")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON result file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = {spec: parse_setting(spec) for spec in args.settings}
    baseline = args.settings[0]
    budget = settings[baseline][0]  # the profile's batch size

    model_dir, prompts, pad = segmented_prompts(args.data, args.prompts, DEFAULT_TOKEN_BUDGET)
    model = load_model(model_dir, torch.device("cpu"), DTYPES[args.dtype])
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    slices = [[prompts[i] for i in order[k :: args.slices]] for k in range(args.slices)]
    tokens = sum(len(p) for p in prompts)
    print(
        f"{len(prompts)} prompts, {tokens:,} tokens, {args.slices} slices, {args.dtype}, torch threads "
        f"{torch.get_num_threads()}, CPU bf16 instructions: {', '.join(cpu_bf16_instructions()) or 'none'}",
        flush=True,
    )
    for budget, layout in settings.values():  # warm-up: one-time kernel and allocator set-up for every shape class
        score_prompts(model, slices[0][:8], token_budget=budget, layout=layout, pad_token_id=pad)

    seconds = {spec: {"wall": 0.0, "cpu": 0.0} for spec in settings}
    specs = list(settings)
    for number, piece in enumerate(slices):
        rotation = specs[number % len(specs) :] + specs[: number % len(specs)]
        for spec in rotation:
            budget, layout = settings[spec]
            wall, cpu = time.perf_counter(), time.process_time()
            score_prompts(model, piece, token_budget=budget, layout=layout, pad_token_id=pad)
            seconds[spec]["wall"] += time.perf_counter() - wall
            seconds[spec]["cpu"] += time.process_time() - cpu
        ratios = "  ".join(f"{s} {seconds[s]['cpu'] / seconds[baseline]['cpu']:.2f}" for s in specs[1:])
        print(f"slice {number + 1}/{args.slices}: CPU time over {baseline}: {ratios}", flush=True)

    result = {
        "model": "smollm2-135m-instruct",
        "dtype": args.dtype,
        "prompts": len(prompts),
        "tokens": tokens,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu_bf16_instructions": list(cpu_bf16_instructions()),
        "baseline": baseline,
        "seconds": {s: {c: round(v, 1) for c, v in t.items()} for s, t in seconds.items()},
        "time_over_baseline": {
            s: {c: round(t[c] / seconds[baseline][c], 3) for c in t} for s, t in seconds.items() if s != baseline
        },
        "tokens_per_cpu_s": {s: round(tokens / t["cpu"]) for s, t in seconds.items()},
    }
    if args.profile:
        result["forward_cpu_time_shares"] = {
            "bf16": profile_shares(load_model(model_dir, torch.device("cpu"), torch.bfloat16), prompts, pad, budget),
            "fp32": profile_shares(load_model(model_dir, torch.device("cpu"), torch.float32), prompts, pad, budget),
        }
    report(result, args.out)


if __name__ == "__main__":
    main()

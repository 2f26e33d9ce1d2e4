"""The GAIN pre-pass in bf16 against fp32 on the real SmolLM2-135M-Instruct (not a test): speed and order agreement.

Both precisions score the same GSM8K prompts in the same process, through the scorer's engine
(``verl_gain.scoring.scorer.score_prompts``: length-sorted batches of ``--token-budget`` tokens, early exit at the
capture point, statistics accumulated in fp32). The prompts are dealt into rounds as ``verl-gain score`` deals its
chunks (round r takes every n-th prompt of the length order, so every round spans all lengths). bf16 scores every
round; fp32 scores ``--fp32-rounds`` of them, spread over the run (all by default), in ``--slices`` slices, each
scored in both precisions back to back, alternating which goes first: on a shared, noisy machine both see the same
load, and the ratio of their times on the paired rounds is the figure to trust. Wall time and CPU time (this
process's, all threads) are both kept: with one thread on a busy machine, CPU time leaves out the waits for a core.
Model loading is excluded (it is the same in both).

Prints, and writes as JSON (``--out``):

- bf16's time over all prompts; both precisions' times on the paired rounds, and the bf16 speed-up (fp32 time /
  bf16 time on the same prompts), in wall and CPU time;
- agreement of the orders over the prompts scored in both: Spearman rho between the bf16 and fp32 keys (and intra,
  inter), also over the first ``--spearman-prompts`` of them in file order, the largest key difference, and the
  overlap of the first tenth of each order.

Usage: python bench/bench_scoring_precision.py --data gsm8k/train.parquet [--prompts N] [--rounds 15]
       [--fp32-rounds 15] [--spearman-prompts 500] [--token-budget 2048] [--threads N]
       [--out bench/results/scoring_precision.json]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from bench_results import report

from verl_gain.core.angles import STAT_FIELDS
from verl_gain.inference import cpu_bf16_instructions
from verl_gain.model_sources import resolve_model
from verl_gain.scoring.constants import DEFAULT_TOKEN_BUDGET
from verl_gain.scoring.report import spearman
from verl_gain.scoring.scorer import ScoreConfig, load_model, load_tokenizer, prepare_dataset, score_prompts
from verl_gain.scoring.scores_file import read_data_file, stats_columns, table_keys
from verl_gain.scoring.segments import PromptSegmenter

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "gsm8k" / "train.parquet"
DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "scoring_precision.json"
MODEL = "smollm2-135m-instruct"
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
TOP_FRACTION = 0.1
"""The share of each order compared for overlap: the prompts a GAIN run draws first."""


def top_overlap(a: np.ndarray, b: np.ndarray, fraction: float = TOP_FRACTION) -> float:
    """Share of the ``fraction`` highest-keyed prompts of ``a`` that are also among the highest of ``b``."""
    count = max(1, int(len(a) * fraction))
    return len(set(np.argsort(-a)[:count]) & set(np.argsort(-b)[:count])) / count


def segmented_prompts(data: Path, limit: int | None, token_budget: int) -> tuple[Path, list, int]:
    """SmolLM2's directory, the first ``limit`` prompts of ``data`` segmented as ``verl-gain score`` segments them,
    and the pad token id."""
    frame = read_data_file(data)
    if limit is not None:
        frame = frame.iloc[:limit].reset_index(drop=True)
    model_dir = resolve_model(MODEL)
    tokenizer = load_tokenizer(model_dir)
    model_type = json.loads((Path(model_dir) / "config.json").read_text()).get("model_type")
    prepared = prepare_dataset(
        frame, PromptSegmenter(tokenizer, {}, model_type), ScoreConfig(token_budget=token_budget), None
    )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return Path(model_dir), prepared.prompts, pad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="GSM8K train parquet (verl format)")
    parser.add_argument("--prompts", type=int, default=None, help="the first N prompts of the file (default: all)")
    parser.add_argument("--rounds", type=int, default=15, help="rounds of alternating fp32 / bf16 scoring")
    parser.add_argument("--fp32-rounds", type=int, default=None, help="rounds fp32 also scores (default: all)")
    parser.add_argument("--slices", type=int, default=10, help="alternations within a paired round")
    parser.add_argument("--spearman-prompts", type=int, default=500, help="Spearman also over the first N prompts")
    parser.add_argument("--token-budget", type=int, default=DEFAULT_TOKEN_BUDGET, help="tokens per forward pass")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON result file")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's). On a busy machine 1 is steadier: waiting threads spin.",
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    model_dir, prompts, pad = segmented_prompts(args.data, args.prompts, args.token_budget)
    models = {name: load_model(model_dir, torch.device("cpu"), dtype) for name, dtype in PRECISIONS.items()}

    def score(name: str, members: list[int]) -> np.ndarray:
        members_prompts = [prompts[i] for i in members]
        found = score_prompts(models[name], members_prompts, token_budget=args.token_budget, pad_token_id=pad)
        return np.stack([found[field] for field in STAT_FIELDS], axis=1)  # [M, F]

    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    rounds = [order[r :: args.rounds] for r in range(args.rounds)]
    for name in PRECISIONS:  # warm-up: first calls pay one-time kernel and allocator set-up
        score(name, rounds[0][:8])
    fp32_rounds = args.rounds if args.fp32_rounds is None else min(args.fp32_rounds, args.rounds)
    paired = {round(r * args.rounds / fp32_rounds) for r in range(fp32_rounds)}  # spread over the run
    clocks = ("wall", "cpu")
    bf16_seconds = dict.fromkeys(clocks, 0.0)
    paired_seconds = {name: dict.fromkeys(clocks, 0.0) for name in PRECISIONS}
    stats = {name: np.full((len(prompts), len(STAT_FIELDS)), np.nan) for name in PRECISIONS}
    tokens = sum(len(p) for p in prompts)
    print(
        f"{len(prompts)} prompts, {tokens:,} tokens, {args.rounds} rounds ({len(paired)} also in fp32), torch threads "
        f"{torch.get_num_threads()}, CPU bf16 instructions: {', '.join(cpu_bf16_instructions()) or 'none'}",
        flush=True,
    )

    def timed(name: str, members: list[int]) -> dict[str, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        stats[name][members] = score(name, members)
        return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}

    paired_tokens = switches = 0
    for number, members in enumerate(rounds):
        if number not in paired:
            spent = timed("bf16", members)
            bf16_seconds = {c: bf16_seconds[c] + spent[c] for c in clocks}
        else:
            # Slices of the round (every k-th prompt of its length order), each scored in both precisions back to
            # back, alternating which goes first: the pairs are seconds apart, so both see the same load.
            for piece in (members[k :: args.slices] for k in range(args.slices)):
                names = ["fp32", "bf16"] if switches % 2 == 0 else ["bf16", "fp32"]
                switches += 1
                for name in names:
                    spent = timed(name, piece)
                    paired_seconds[name] = {c: paired_seconds[name][c] + spent[c] for c in clocks}
                    if name == "bf16":
                        bf16_seconds = {c: bf16_seconds[c] + spent[c] for c in clocks}
            paired_tokens += sum(len(prompts[i]) for i in members)
        fp32_spent, bf16_spent = paired_seconds["fp32"], paired_seconds["bf16"]
        ratio = {c: fp32_spent[c] / bf16_spent[c] if paired_tokens else math.nan for c in clocks}
        print(
            f"round {number + 1}/{args.rounds}: bf16 {bf16_seconds['wall']:.0f} s so far; paired rounds fp32 / bf16 "
            f"{ratio['wall']:.2f} wall, {ratio['cpu']:.2f} CPU time",
            flush=True,
        )

    both = np.flatnonzero(~np.isnan(stats["fp32"]).any(axis=1))  # dataset rows scored in both, in file order
    tables = {name: pd.DataFrame(stats_columns(values[both])) for name, values in stats.items()}
    keys = {name: table_keys(table, 1.0) for name, table in tables.items()}
    head = min(args.spearman_prompts, len(both))
    result = {
        "model": MODEL,
        "data": args.data.name,
        "prompts": len(prompts),
        "tokens": tokens,
        "token_budget": args.token_budget,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu_bf16_instructions": list(cpu_bf16_instructions()),
        "machine": platform.machine(),
        "bf16_all_prompts": {
            "seconds": {c: round(v, 1) for c, v in bf16_seconds.items()},
            "tokens_per_s": {c: round(tokens / v) for c, v in bf16_seconds.items()},
        },
        "paired": {
            "prompts": len(both),
            "tokens": paired_tokens,
            "seconds": {name: {c: round(v, 1) for c, v in spent.items()} for name, spent in paired_seconds.items()},
        },
        "bf16_speedup": {c: round(paired_seconds["fp32"][c] / paired_seconds["bf16"][c], 3) for c in clocks},
        "spearman_key_first": {"prompts": head, "rho": spearman(keys["fp32"][:head], keys["bf16"][:head])},
        "spearman_paired": {
            "key": spearman(keys["fp32"], keys["bf16"]),
            "intra": spearman(tables["fp32"]["intra"], tables["bf16"]["intra"]),
            "inter": spearman(tables["fp32"]["inter"], tables["bf16"]["inter"]),
        },
        "key_abs_diff_max": float(np.max(np.abs(keys["fp32"] - keys["bf16"]))),
        "key_std_fp32": float(np.std(keys["fp32"])),
        "top_tenth_overlap": top_overlap(keys["fp32"], keys["bf16"]),
    }
    assert all(math.isfinite(v) for v in result["spearman_paired"].values()), result["spearman_paired"]
    report(result, args.out)


if __name__ == "__main__":
    main()

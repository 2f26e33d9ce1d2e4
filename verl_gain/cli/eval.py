"""``verl-gain eval``: pass@1 of checkpoints on the recipes' benchmark files, scored by the training rewards."""

from __future__ import annotations

import argparse
import sys

from verl_gain.cli.shared import INTERRUPTED_EXIT_CODE, finite_float, non_negative_int, positive_int


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``verl-gain eval``."""
    from verl_gain.evaluation.benchmarks import EvalConfig

    defaults = EvalConfig()
    parser = subparsers.add_parser(
        "eval",
        help="pass@1 of checkpoints on the recipes' benchmark files, scored by the training rewards",
        description=__doc__.splitlines()[0].strip("`"),
    )
    parser.add_argument(
        "--model", nargs="+", required=True, help="HF model folders, hub ids or verl checkpoint folders"
    )
    parser.add_argument(
        "--data", nargs="+", required=True, help="benchmark parquet files (PATH or NAME=PATH) from recipes/*/prepare.py"
    )
    parser.add_argument("--output-dir", required=True, help="where results.json, results.md and samples.jsonl go")
    parser.add_argument("--max-new-tokens", type=positive_int, default=defaults.max_new_tokens)
    parser.add_argument("--batch-size", type=positive_int, default=defaults.batch_size)
    parser.add_argument("--n-samples", type=positive_int, default=defaults.n_samples)
    parser.add_argument("--temperature", type=finite_float, default=defaults.temperature, help="0 = greedy")
    parser.add_argument("--top-p", type=finite_float, default=defaults.top_p)
    parser.add_argument("--limit", type=positive_int, default=None, help="first N problems of each benchmark")
    parser.add_argument("--device", default=defaults.device, choices=("auto", "cpu", "cuda"))
    parser.add_argument("--dtype", default=defaults.dtype, choices=("auto", "float32", "bfloat16", "float16"))
    parser.add_argument("--score-workers", type=positive_int, default=defaults.score_workers)
    parser.add_argument("--seed", type=non_negative_int, default=defaults.seed)
    parser.add_argument(
        "--cpu-threads", type=positive_int, default=None, help="torch CPU threads (1 helps on a busy machine)"
    )
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run the model folder's own code (auto_map), as verl's actor_rollout_ref.model.trust_remote_code",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from verl_gain.evaluation.benchmarks import EvalConfig, run_eval

    try:
        config = EvalConfig(
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            n_samples=args.n_samples,
            temperature=args.temperature,
            top_p=args.top_p,
            limit=args.limit,
            device=args.device,
            dtype=args.dtype,
            score_workers=args.score_workers,
            seed=args.seed,
            cpu_threads=args.cpu_threads,
            trust_remote_code=args.trust_remote_code,
        )
        run_eval(args.model, args.data, args.output_dir, config)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"verl-gain eval: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nverl-gain eval: interrupted; nothing was written to {args.output_dir}", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    return 0

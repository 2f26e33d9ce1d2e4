"""``verl-gain score``: the GAIN pre-pass over a verl-format dataset, written to a fingerprinted scores parquet."""

from __future__ import annotations

import argparse
import json
import sys

from verl_gain.cli.shared import INTERRUPTED_EXIT_CODE, finite_float, positive_int
from verl_gain.scoring.constants import (
    CAPTURE_ROLES,
    DEFAULT_CAPTURE,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_TOKEN_BUDGET,
    LAYOUTS,
)
from verl_gain.scoring.errors import ScoringInputError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "score",
        help="rank a dataset's prompts by angle concentration (one prefill, resumable)",
        description=(
            "Score every prompt of a verl-format dataset with the model's angle concentration (GAIN-RL). "
            "Prompts are tokenised as verl's rollout does; the scores parquet records a fingerprint of the "
            "dataset, model, capture point, chat template and options. An interrupted run resumes from its "
            "finished chunks (<out>.parts/)."
        ),
    )
    parser.add_argument("--data", required=True, help="verl-format .parquet / .json / .jsonl (prompt = chat messages)")
    parser.add_argument(
        "--model", required=True, help="Hugging Face model folder or hub id (org/name), or smollm2-135m-instruct"
    )
    parser.add_argument("--out", required=True, help="scores parquet to write")
    parser.add_argument("--prompt-key", default="prompt", help="column with the chat messages (default: prompt)")
    parser.add_argument(
        "--apply-chat-template-kwargs",
        default="{}",
        metavar="JSON",
        help="verl's data.apply_chat_template_kwargs as JSON, e.g. '{\"enable_thinking\": false}'",
    )
    parser.add_argument(
        "--capture",
        default=DEFAULT_CAPTURE,
        help=f"capture point: {' | '.join(CAPTURE_ROLES)} | mlp_input:<layer> | input:<module> | output:<module> "
        f"(default: {DEFAULT_CAPTURE})",
    )
    parser.add_argument(
        "--inter-weight", type=finite_float, default=1.0, help="w in key = intra + w * inter (default 1)"
    )
    parser.add_argument(
        "--max-length", type=positive_int, default=None, help="longest prompt in tokens (default: the model's context)"
    )
    parser.add_argument("--skip-long", action="store_true", help="leave prompts over --max-length out (counted)")
    parser.add_argument(
        "--token-budget",
        type=positive_int,
        default=DEFAULT_TOKEN_BUDGET,
        help=f"tokens per forward pass (default {DEFAULT_TOKEN_BUDGET}; raise it on a GPU)",
    )
    parser.add_argument("--layout", choices=LAYOUTS, default="right", help="batch layout (default: right padding)")
    parser.add_argument(
        "--chunk-size", type=positive_int, default=DEFAULT_CHUNK_SIZE, help="prompts per resumable chunk"
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument(
        "--dtype",
        default="auto",
        help="auto | float32 | bfloat16 | float16 (default: auto = bfloat16 on a GPU or on a CPU with bf16 "
        "instructions, else float32; the statistics are accumulated in fp32 either way)",
    )
    parser.add_argument(
        "--no-early-exit", action="store_true", help="run the full forward pass instead of stopping at the capture"
    )
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run the model folder's own code (auto_map), as verl's actor_rollout_ref.model.trust_remote_code",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an --out scored with another fingerprint")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from verl_gain.scoring.scorer import ScoreConfig, parts_dir_for, score_dataset  # heavy: only when run

    if args.quiet:  # no bar at all: transformers' weight-loading bar too
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()

    try:
        try:
            template_kwargs = json.loads(args.apply_chat_template_kwargs)
        except (json.JSONDecodeError, RecursionError):
            raise ScoringInputError(
                f"--apply-chat-template-kwargs is not valid JSON: {args.apply_chat_template_kwargs!r}"
            ) from None
        if not isinstance(template_kwargs, dict):
            raise ScoringInputError(
                "--apply-chat-template-kwargs must be a JSON object such as '{\"enable_thinking\": false}', got "
                f"{args.apply_chat_template_kwargs!r}"
            )
        config = ScoreConfig(
            prompt_key=args.prompt_key,
            apply_chat_template_kwargs=template_kwargs,
            capture=args.capture,
            inter_weight=args.inter_weight,
            max_length=args.max_length,
            skip_long=args.skip_long,
            token_budget=args.token_budget,
            layout=args.layout,
            chunk_size=args.chunk_size,
            device=args.device,
            dtype=args.dtype,
            early_exit=not args.no_early_exit,
            trust_remote_code=args.trust_remote_code,
        )
        result = score_dataset(
            args.data, args.model, args.out, config, overwrite=args.overwrite, progress=not args.quiet
        )
    except ScoringInputError as err:
        print(f"verl-gain score: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        parts = parts_dir_for(args.out)
        kept = len(list(parts.glob("chunk-*.parquet"))) if parts.is_dir() else 0
        print(
            f"\nverl-gain score: interrupted; {kept} finished chunk(s) kept in {parts}: run the same command again to "
            "resume from them",
            file=sys.stderr,
        )
        return INTERRUPTED_EXIT_CODE
    info = result.info
    skipped = len(info.get("skipped_long", []))
    if result.chunks_computed == 0 and result.chunks_reused == 0:
        print(f"{args.out} is up to date ({len(result.scores)} prompts, same fingerprint); nothing to do")
        return 0
    message = (
        f"scored {info['scored']} of {info['rows']} prompts ({info['tokens']:,} tokens) in {info['wall_s']:.1f} s "
        f"on {info['device']}"
    )
    if skipped:
        message += f"; skipped {skipped} prompts longer than {result.fingerprint['config']['max_length']} tokens"
    if result.chunks_reused:
        message += f"; reused {result.chunks_reused} finished chunk(s)"
    print(f"{message} -> {args.out}")
    return 0

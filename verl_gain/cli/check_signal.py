"""``verl-gain check-signal``: does the angle-concentration key predict the size of a GRPO update on this model?

    verl-gain check-signal --model smollm2-135m-instruct --data train.parquet --sample 200 --out-dir signal/

For a sample of prompts: the ranking key (the trainer's pre-pass) and the gradient norm of one GRPO update on the
model's own sampled responses (all parameters and the last layer), Spearman rho between them, the same with prompt
and response length partialled out, and a scatter plot (``verl_gain/evaluation/signal.py``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from verl_gain.cli.shared import finite_float, non_negative_int, positive_int


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from verl_gain.evaluation.signal import (
        DEFAULT_MAX_NEW_TOKENS,
        DEFAULT_RESPONSES,
        DEFAULT_SAMPLE,
        DEFAULT_TEMPERATURE,
    )

    parser = subparsers.add_parser(
        "check-signal",
        help="rank correlation of the GAIN key with the gradient norm of GRPO updates on sampled responses",
        description=__doc__.splitlines()[0].strip("`"),
    )
    parser.add_argument("--model", required=True, help="local Hugging Face model folder, or smollm2-135m-instruct")
    parser.add_argument("--data", required=True, help="verl-format .parquet / .json / .jsonl with reward ground truth")
    parser.add_argument(
        "--sample", type=positive_int, default=DEFAULT_SAMPLE, help=f"prompts (default {DEFAULT_SAMPLE})"
    )
    parser.add_argument(
        "--responses", type=positive_int, default=DEFAULT_RESPONSES, help="responses per prompt (GRPO group)"
    )
    parser.add_argument("--temperature", type=finite_float, default=DEFAULT_TEMPERATURE)
    parser.add_argument("--max-new-tokens", type=positive_int, default=DEFAULT_MAX_NEW_TOKENS)
    parser.add_argument("--capture", default="mlp_input", help="capture point of the key (default mlp_input)")
    parser.add_argument("--inter-weight", type=finite_float, default=1.0)
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32", help="float32 (default: gradient norms in full precision)")
    parser.add_argument("--out-dir", default=None, help="where signal.json and signal.png go (default: none)")
    parser.set_defaults(func=run)


def reward_for(data_source: str):
    """The training reward of a data source: the embedded task's own, else the math/code router."""
    from verl_gain.tasks import arithmetic

    if str(data_source).startswith(arithmetic.DATA_SOURCE):
        return arithmetic.compute_score
    from verl_gain.rewards.auto import compute_score

    return compute_score


def run(args: argparse.Namespace) -> int:
    from verl_gain.evaluation.signal import SignalCheckConfig, SignalCheckError, check_signal, write_report
    from verl_gain.inference import InferenceSettingError, resolve_device, resolve_dtype
    from verl_gain.model_sources import resolve_model
    from verl_gain.output_paths import OutputPathError, check_output_dir
    from verl_gain.scoring.errors import ScoringInputError
    from verl_gain.scoring.scorer import load_model, load_tokenizer, resolve_capture_on_meta
    from verl_gain.scoring.scores_file import read_data_file

    try:
        if args.out_dir:
            check_output_dir(args.out_dir)
        config = SignalCheckConfig(
            sample=args.sample,
            responses=args.responses,
            temperature=args.temperature,
            max_new_tokens=args.max_new_tokens,
            capture=args.capture,
            inter_weight=args.inter_weight,
            seed=args.seed,
            device=args.device,
            dtype=args.dtype,
        )
        frame = read_data_file(args.data)
        missing = {"prompt", "data_source", "reward_model"} - set(frame.columns)
        if missing:
            raise SignalCheckError(
                f"{args.data} lacks verl columns {sorted(missing)}: the check needs prompts and reward ground truth"
            )
        rows = frame.to_dict(orient="records")
        if not rows:
            raise SignalCheckError(f"{args.data} has no prompts")
        if config.sample > len(rows):
            raise SignalCheckError(f"--sample {config.sample} is larger than the data ({len(rows)} prompts): lower it")
        try:
            model_dir = resolve_model(args.model)
        except FileNotFoundError as error:
            raise SignalCheckError(str(error)) from None
        resolve_capture_on_meta(model_dir, config.capture)  # a bad --capture before any weights load
        tokenizer = load_tokenizer(model_dir)  # refuses a model without a chat template before loading weights
        device = resolve_device(config.device)
        model = load_model(model_dir, device, resolve_dtype(config.dtype, device))
        sources = {row["data_source"] for row in rows}
        rewards = {source: reward_for(source) for source in sources}

        def reward(data_source, solution, ground_truth, extra_info):
            return rewards[data_source](data_source, solution, ground_truth, extra_info)

        report = check_signal(
            model, tokenizer, rows, reward, config, model_type=getattr(model.config, "model_type", None)
        )
    except (SignalCheckError, ScoringInputError, InferenceSettingError, OutputPathError) as error:
        print(f"verl-gain check-signal: error: {error}", file=sys.stderr)
        return 2
    print("\n".join(report.lines()))
    if args.out_dir:
        written = write_report(report, Path(args.out_dir), f"{Path(args.data).name}, {args.model}")
        print("wrote " + ", ".join(str(p) for p in written))
    return 0

"""``verl-gain inspect``: summary and plots of a scores file (checked against its dataset when one is given)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from verl_gain.cli.shared import non_negative_int
from verl_gain.scoring.constants import TOP_PROMPTS
from verl_gain.scoring.errors import ScoringInputError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="summarise a scores file: histogram, key vs length, key by difficulty, top/bottom prompts",
        description="Print a short summary of a scores file and write PNG plots next to it.",
    )
    parser.add_argument("scores", help="scores parquet written by `verl-gain score`")
    parser.add_argument("--data", default=None, help="the dataset it was scored from (adds question text, difficulty)")
    parser.add_argument("--prompt-key", default=None, help="column with the chat messages (default: as scored)")
    parser.add_argument("--by", default=None, help="difficulty column (default: level or difficulty when present)")
    parser.add_argument(
        "--top",
        type=non_negative_int,
        default=TOP_PROMPTS,
        help=f"prompts listed at each end (default {TOP_PROMPTS}; 0: none)",
    )
    parser.add_argument("--out-dir", default=None, help="where the PNGs go (default: <scores>_inspect/)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported when run, so that building the CLI parser stays light.
    from verl_gain.output_paths import OutputPathError, check_output_dir
    from verl_gain.scoring.report import plot, summarize
    from verl_gain.scoring.scores_file import dataset_fingerprint, prompt_column, read_data_file, read_scores

    scores_path = Path(args.scores)
    out_dir = Path(args.out_dir) if args.out_dir else scores_path.with_name(scores_path.stem + "_inspect")
    try:
        scores, fingerprint, info = read_scores(args.scores)
        if len(scores) == 0:
            raise ScoringInputError(f"{args.scores} holds no scored prompt (0 rows): re-run `verl-gain score`")
        check_output_dir(out_dir, "--out-dir" if args.out_dir else "the plot folder (--out-dir)")
        prompt_key = args.prompt_key or fingerprint.get("dataset", {}).get("prompt_key", "prompt")
        data = None
        if args.data:
            data = read_data_file(args.data)
            expected = dataset_fingerprint(prompt_column(data, prompt_key), prompt_key)
            scores, fingerprint, info = read_scores(args.scores, expected={"dataset": expected})
        if args.by and (data is None or args.by not in data.columns):
            raise ScoringInputError(f"--by {args.by!r} needs --data with a column of that name")
        text, _ = summarize(scores, fingerprint, info, data, prompt_key, args.by, args.top)
        title = Path(args.data).stem if args.data else Path(args.scores).stem
        written = plot(scores, out_dir, data, args.by, title=title)
    except (ScoringInputError, FileNotFoundError, OutputPathError) as err:
        print(f"verl-gain inspect: error: {err}", file=sys.stderr)
        return 2
    print(text)
    print("plots: " + ", ".join(str(p) for p in written))
    return 0

"""MATH (Hendrycks et al. 2021, MIT) -> verl parquet: ``train.parquet`` (MATH train, 7,500) and ``test.parquet``
(MATH-500, the 500-problem test subset used for evaluation).

Inputs: ``--local-path`` with MATH-lighteval's train files (``problem``, ``solution``, ``level``, ``type``; the
answer is the last ``\\boxed{}`` of the solution) or files already in verl format; ``--math500-path`` with MATH-500
(``problem``, ``answer``, ``subject``/``difficulty``, ``unique_id``; JSON/JSONL/parquet). Without them:
``DigitalLearningGmbH/MATH-lighteval`` and ``HuggingFaceH4/MATH-500`` through ``datasets``.

    python recipes/math/prepare.py --local-path ../shared/data/math \
        --math500-path ../shared/data/eval/math_eval.json --output-dir ~/data/verl-gain/math
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from recipes.common import (
    answer_text,
    build_rows,
    field,
    load_split,
    prepare_parser,
    question_from_verl_row,
    user_prompt,
    verl_row,
    write_parquet,
)
from verl_gain.rewards import MATH500_DATA_SOURCE, MATH_DATA_SOURCE
from verl_gain.rewards.math_reward import last_boxed_content

# The prompt template of every boxed-answer math task (verl's MATH example, used by the paper).
INSTRUCTION = "Let's think step by step and output the final answer within \\boxed{}."
TRAIN_HUB = ("DigitalLearningGmbH/MATH-lighteval", "default", "train")
MATH500_HUB = ("HuggingFaceH4/MATH-500", None, "test")


def make_prompt(question: str) -> list[dict]:
    return user_prompt(f"{question} {INSTRUCTION}")


def math_row(record: dict, split: str, index: int, data_source: str) -> dict:
    """A verl row from a MATH-style record: raw (answer or solution with a boxed answer) or already verl format."""
    extra = {}
    for key in ("level", "type", "subject", "unique_id", "difficulty"):
        if record.get(key) is not None:
            extra[key] = str(record[key])
    question = question_from_verl_row(record, INSTRUCTION)
    if question is not None:
        ground_truth = str(record["reward_model"]["ground_truth"])
    else:
        question = str(field(record, "problem", "question"))
        answer = field(record, "answer", "final_answer", default=None)
        if answer is None:
            answer = last_boxed_content(str(field(record, "solution")))
            if answer is None:
                raise ValueError(f"{split} row {index}: no answer field and no \\boxed{{}} in the solution")
        ground_truth = answer_text(answer)
    return verl_row(data_source, make_prompt(question), "math", ground_truth, split, index, question, **extra)


def main(argv: list[str] | None = None) -> int:
    parser = prepare_parser(__doc__.splitlines()[0], "math")
    parser.add_argument("--math500-path", default=None, help="MATH-500 file (JSON/JSONL/parquet); else the hub")
    args = parser.parse_args(argv)
    output = Path(args.output_dir)
    train = load_split(args.local_path, "train", *TRAIN_HUB)
    rows = build_rows(train, "train", lambda r, s, i: math_row(r, s, i, MATH_DATA_SOURCE), args.max_rows)
    write_parquet(rows, output / "train.parquet")
    test = load_split(args.math500_path, "test", *MATH500_HUB)
    rows = build_rows(test, "test", lambda r, s, i: math_row(r, s, i, MATH500_DATA_SOURCE), args.max_rows)
    write_parquet(rows, output / "test.parquet")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""GSM8K (Cobbe et al. 2021, MIT) -> verl parquet: ``train.parquet`` (7,473) and ``test.parquet`` (1,319).

Inputs: ``--local-path`` with the release's ``train.jsonl``/``test.jsonl`` (``question``, ``answer`` ending in
``#### N``; github.com/openai/grade-school-math) or the hub's ``main/{train,test}-*.parquet``, or files already in
verl format; otherwise ``openai/gsm8k`` (config ``main``) through ``datasets``.

    python recipes/gsm8k/prepare.py --local-path ../shared/data/gsm8k --output-dir ~/data/verl-gain/gsm8k
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from recipes.common import (
    build_rows,
    field,
    load_split,
    prepare_parser,
    question_from_verl_row,
    user_prompt,
    verl_row,
    write_parquet,
)
from verl_gain.rewards import GSM8K_DATA_SOURCE
from verl_gain.rewards.math_reward import gsm8k_answer

# The prompt template (verl's GSM8K example, used by the paper): the question, then this instruction.
INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'
SPLITS = ("train", "test")
HUB_ID, HUB_CONFIG = "openai/gsm8k", "main"


def make_prompt(question: str) -> list[dict]:
    return user_prompt(f"{question} {INSTRUCTION}")


def make_row(record: dict, split: str, index: int) -> dict:
    question = question_from_verl_row(record, INSTRUCTION)
    if question is not None:  # already verl format: keep its answer
        ground_truth = str(record["reward_model"]["ground_truth"])
    else:
        question = str(field(record, "question"))
        ground_truth = gsm8k_answer(str(field(record, "answer")))
        if ground_truth is None:
            raise ValueError(f"{split} row {index}: the answer has no '#### N' line: is this GSM8K?")
    return verl_row(GSM8K_DATA_SOURCE, make_prompt(question), "math", ground_truth, split, index, question)


def main(argv: list[str] | None = None) -> int:
    args = prepare_parser(__doc__.splitlines()[0], "gsm8k").parse_args(argv)
    for split in SPLITS:
        records = load_split(args.local_path, split, HUB_ID, HUB_CONFIG)
        write_parquet(build_rows(records, split, make_row, args.max_rows), Path(args.output_dir) / f"{split}.parquet")
    return 0


if __name__ == "__main__":
    sys.exit(main())

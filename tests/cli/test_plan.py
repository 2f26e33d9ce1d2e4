"""``verl-gain plan``: the real controller simulated from the command line, and its one-line refusals."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from verl_gain.cli import main as cli_main
from verl_gain.core.controller import GainConfig
from verl_gain.core.planner import constant_angle, flat_accuracy, simulate
from verl_gain.scoring.scores_file import write_scores


def plan(capsys, *args: str) -> tuple[int, str, str]:
    code = cli_main(["plan", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_plan_prints_the_controllers_window_and_end_step(capsys, tmp_path):
    code, out, _ = plan(
        capsys,
        *("--rows", "1000", "--batch", "8", "--steps", "60", "--accuracy", "flat:1.0", "--out-dir", str(tmp_path)),
        *("gain.sigma_fraction=0.05", "gain.n_fraction=0.02", "gain.adj_max_fraction=0.04"),
    )
    assert code == 0
    config = GainConfig(sigma_fraction=0.05, n_fraction=0.02, adj_max_fraction=0.04)
    expected = simulate(np.arange(1000, 0, -1.0), config, 8, 60, flat_accuracy(1.0), constant_angle(0.0))
    # acc 1, angle 0: 20 tanh(1) = 15.23 ranks per step -> the end of 1000 ranks at step 66: not within 60
    assert expected.end_step is None and f"mu = {expected.final_mu:.0f} of 999" in out
    assert "distinct prompts per 10 steps: " + ", ".join(map(str, expected.block_distinct)) in out
    written = json.loads((tmp_path / "plan.json").read_text())
    assert [s["mu"] for s in written["steps"]] == [s.mu for s in expected.steps]
    assert (tmp_path / "plan.png").stat().st_size > 10_000


def test_plan_from_a_scores_file_and_a_runs_trace(capsys, tmp_path):
    keys = np.linspace(1.4, 1.2, 200)
    table = pd.DataFrame(
        {
            "position": np.arange(200),
            "index": pd.array([None] * 200, dtype="Int64"),
            "intra": keys - 0.6,
            "inter": np.full(200, 0.6),
            "key": keys,
            "n_fixed": np.full(200, 20),
            "n_question": np.full(200, 10),
            "mean_cosine": np.full(200, 0.5),
            "n_tokens": np.full(200, 30),
        }
    )
    scores = write_scores(tmp_path / "scores.parquet", table, {"dataset": {"rows": 200}})
    trace = tmp_path / "gain_trace.jsonl"
    trace.write_text("".join(json.dumps({"step": s, "step_acc": 1.0, "angle_signal": 0.5}) + "\n" for s in (1, 2)))
    code, out, _ = plan(
        capsys,
        *("--scores", str(scores), "--batch", "4", "--steps", "5", "--accuracy", str(trace)),
        *("gain.sigma_fraction=null", "gain.sigma=5", "gain.n_fraction=null", "gain.n=10"),
        *("gain.adj_max_fraction=null", "gain.adj_max=20"),
    )
    assert code == 0
    # every step: acc 1 (the trace's last value held), a = 0.5 logged: 10 (tanh(1) + tanh(1)) = 15.23 per step
    assert "GAIN window over 200 prompts, 4 per step, 5 steps" in out
    assert f"{10 * 2 * math.tanh(1.0):7.1f}" in out


def test_plan_takes_a_recipes_settings(capsys):
    code, out, _ = plan(capsys, "--recipe", "gsm8k_qwen2.5-0.5b-instruct", "--rows", "7473", "--accuracy", "flat:0.75")
    assert code == 0 and "GAIN window over 7473 prompts, 256 per step, 200 steps" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--rows", "100", "--batch", "4", "--steps", "5", "gain.n_fraction=1.5"],
            r"gain.n_fraction must be in \(0, 1\]",
        ),
        (["--rows", "100", "--batch", "4", "--steps", "5", "gain.sigma_fraction=0"], "gain.sigma_fraction must be in"),
        (["--rows", "100", "--batch", "4", "--steps", "0"], "--steps: must be a positive integer"),
        (["--rows", "100", "--batch", "4", "--steps", "-3"], "--steps: must be a positive integer"),
        (["--rows", "100", "--batch", "4"], "give --batch and --steps"),
        (["--batch", "4", "--steps", "5"], "give the training set size"),
        (["--rows", "3", "--batch", "4", "--steps", "5"], "smaller than the batch"),
        (["--rows", "0", "--batch", "4", "--steps", "5"], "--rows: must be a positive integer"),
        (["--rows", "100", "--batch", "4", "--steps", "5", "--angle", "nan"], "--angle: must be a finite number"),
        (["--rows", "100", "--batch", "4", "--steps", "5", "--accuracy", "flat:1.5"], r"numbers in \[0, 1\]"),
        (["--rows", "100", "--batch", "4", "--steps", "5", "--accuracy", "rising"], "neither flat:A, linear:A:B"),
        (["--rows", "100", "--batch", "4", "--steps", "5", "n_fraction=0.1"], "gain.<field>=<value>"),
        (["--rows", "100", "--recipe", "nope"], "no recipe 'nope'"),
    ],
)
def test_bad_input_is_one_line_that_names_the_fix(capsys, args, message):
    code, out, err = plan(capsys, *args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("verl-gain plan: error: ")
    assert pytest.importorskip("re").search(message, err), err


def test_an_accuracy_file_that_is_not_a_trace_and_a_file_that_is_not_a_scores_file(capsys, tmp_path):
    not_a_trace = tmp_path / "notes.jsonl"
    not_a_trace.write_text('{"loss": 1.0}\n')
    code, _, err = plan(capsys, "--rows", "100", "--batch", "4", "--steps", "5", "--accuracy", str(not_a_trace))
    assert code == 2 and "is not a GAIN trace" in err
    garbage = tmp_path / "binary.jsonl"
    garbage.write_bytes(b"\x00\xff\x10")
    code, _, err = plan(capsys, "--rows", "100", "--batch", "4", "--steps", "5", "--accuracy", str(garbage))
    assert code == 2 and "is not a GAIN trace" in err
    other = tmp_path / "other.parquet"
    pd.DataFrame({"a": [1, 2]}).to_parquet(other)
    code, _, err = plan(capsys, "--scores", str(other), "--batch", "4", "--steps", "5")
    assert code == 2 and "not a verl-gain scores file" in err and len(err.strip().splitlines()) == 1

"""``verl-gain check-signal`` on a tiny model (the shape of the report, not its values), its statistics, and its
one-line refusals."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from tests.tiny import make_tiny_model_dir
from verl_gain.cli import main as cli_main
from verl_gain.evaluation.signal import SignalReport, grpo_advantages, partial_spearman, spearman
from verl_gain.tasks import arithmetic


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("signal")
    train, _ = arithmetic.write_task(root / "data", 20, 5, seed=1)
    return make_tiny_model_dir(root / "model", template="smollm2"), train


def run(capsys, *args) -> tuple[int, str, str]:
    code = cli_main(["check-signal", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_report_has_every_figure_and_a_scatter_plot(tiny, tmp_path, capsys):
    model, train = tiny
    code, out, _ = run(
        capsys,
        "--model",
        model,
        "--data",
        train,
        "--sample",
        6,
        "--responses",
        2,
        "--max-new-tokens",
        4,
        "--out-dir",
        tmp_path,
    )
    assert code == 0
    assert "prompts: 6; with reward variance" in out and "Spearman rho(key, likelihood gradient norm)" in out
    report = json.loads((tmp_path / "signal.json").read_text())
    assert len(report["prompts"]) == 6
    for prompt in report["prompts"]:
        assert prompt["likelihood_norm"] > 0 and prompt["likelihood_last_layer_norm"] > 0
        assert prompt["likelihood_last_layer_norm"] <= prompt["likelihood_norm"]  # a part of all parameters
        assert len(prompt["rewards"]) == 2
        assert (prompt["grpo_norm"] is None) == (len(set(prompt["rewards"])) == 1)  # no update without variance
    assert math.isfinite(report["figures"]["rho_likelihood"])
    assert {"rho_grpo", "partial_rho_grpo", "partial_rho_likelihood_last", "grpo_prompts"} <= set(report["figures"])
    assert (tmp_path / "signal.png").stat().st_size > 10_000


def test_partial_spearman_removes_what_a_covariate_explains():
    rng = np.random.default_rng(0)
    length = rng.normal(size=400)
    x = length + 0.1 * rng.normal(size=400)  # both driven by length alone
    y = length + 0.1 * rng.normal(size=400)
    assert spearman(x, y) > 0.9
    assert abs(partial_spearman(x, y, [length])) < 0.15
    z = x + rng.normal(size=400)  # related to x beyond length
    assert partial_spearman(x, x + 0.5 * (z - length), [length]) > 0.3
    assert math.isnan(spearman([1, 2], [2, 1])) and math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_a_report_without_grpo_updates_says_why_instead_of_printing_nan():
    """What SmolLM2 gives on GSM8K at 64 new tokens: no prompt has responses with different rewards."""
    figures = dict.fromkeys(
        [
            "rho_grpo",
            "rho_grpo_last",
            "partial_rho_grpo",
            "partial_rho_grpo_last",
            "rho_key_response_tokens",
        ],
        math.nan,
    )
    figures.update(
        grpo_prompts=0,
        rho_likelihood=0.1,
        rho_likelihood_last=-0.2,
        partial_rho_likelihood=0.05,
        partial_rho_likelihood_last=math.nan,
        rho_key_prompt_tokens=0.3,
    )
    text = "\n".join(SignalReport(figures=figures).lines())
    assert "nan" not in text.lower()
    assert "GRPO gradient norm): undefined: 0 prompt(s) had responses with different rewards" in text
    assert "all parameters +0.100, last layer -0.200" in text and "+0.050, undefined" in text
    assert "response length) undefined" in text


def test_grpo_advantages_are_verls():
    # (r - mean) / (std + 1e-6), std unbiased: rewards [1, 0, 0, 1] -> mean 0.5, std 0.57735
    np.testing.assert_allclose(grpo_advantages([1, 0, 0, 1]), [0.866025, -0.866025, -0.866025, 0.866025], atol=1e-5)


def test_bad_input_is_one_line(tiny, tmp_path, capsys):
    model, train = tiny
    empty = tmp_path / "empty.parquet"
    pd.read_parquet(train).head(0).to_parquet(empty)
    code, _, err = run(capsys, "--model", model, "--data", empty)
    assert code == 2 and "has no prompts" in err and len(err.strip().splitlines()) == 1

    code, _, err = run(capsys, "--model", model, "--data", train, "--sample", 21)
    assert code == 2 and "larger than the data (20 prompts)" in err and len(err.strip().splitlines()) == 1

    bare = make_tiny_model_dir(tmp_path / "bare")
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    capsys.readouterr()  # the tiny model's own progress bars
    code, _, err = run(capsys, "--model", bare, "--data", train, "--sample", 3)
    assert code == 2 and "has no chat template" in err and len(err.strip().splitlines()) == 1

    code, _, err = run(capsys, "--model", model, "--data", train, "--sample", 2)
    assert code == 2 and "--sample must be an integer >= 3" in err

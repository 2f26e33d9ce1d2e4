"""``verl-gain inspect``: summary figures, plots, and the dataset check."""

import math
import re

import numpy as np
import pandas as pd
import pytest

from tests.tiny import make_tiny_model_dir
from verl_gain.cli import main as cli_main
from verl_gain.scoring.report import difficulty_values, spearman, summarize
from verl_gain.scoring.scorer import ScoreConfig, score_dataset
from verl_gain.tasks.word_problems import example_dataset


def test_spearman_is_a_rank_correlation_with_average_ties():
    x = np.arange(10.0)
    assert spearman(x, x**3) == pytest.approx(1.0)
    assert spearman(x, -np.exp(x)) == pytest.approx(-1.0)
    # ties get average ranks: ranks of y are [1.5, 1.5, 3, 4], Pearson of ranks with [1, 2, 3, 4]
    assert spearman([1, 2, 3, 4], [5, 5, 6, 7]) == pytest.approx(np.corrcoef([1, 2, 3, 4], [1.5, 1.5, 3, 4])[0, 1])
    assert spearman([1, 2, np.nan, 4, 5], [2, 4, 1, 8, 10]) == pytest.approx(1.0)  # NaN pairs dropped
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_difficulty_columns_become_numbers():
    assert difficulty_values(pd.Series(["Level 1", "Level 5", "Level ?"])).tolist()[:2] == [1.0, 5.0]
    assert math.isnan(difficulty_values(pd.Series(["Level ?"]))[0])
    assert difficulty_values(pd.Series([3, 1])).tolist() == [3.0, 1.0]


def test_summary_flags_a_length_driven_key():
    scores = pd.DataFrame(
        {
            "position": range(50),
            "index": range(50),
            "intra": np.linspace(0.5, 0.9, 50),
            "inter": np.zeros(50),
            "key": np.linspace(0.5, 0.9, 50),
            "n_fixed": 30,
            "n_question": range(10, 60),
            "n_tokens": range(40, 90),
        }
    )
    text, figures = summarize(scores, {}, {})
    assert figures["rho_key_question_tokens"] == pytest.approx(1.0) and figures["nan"] == 0
    assert "WARNING: the key is almost a function of question length" in text


def test_inspect_prints_a_summary_writes_plots_and_checks_the_dataset(tmp_path, capsys):
    model = make_tiny_model_dir(tmp_path / "model", template="smollm2")
    frame = example_dataset(24)
    data = tmp_path / "data.parquet"
    frame.to_parquet(data)
    scores = tmp_path / "scores.parquet"
    score_dataset(data, model, scores, ScoreConfig(), progress=False)
    capsys.readouterr()

    assert cli_main(["inspect", str(scores), "--data", str(data), "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "NaN or infinite scores: 0" in out
    assert "Spearman rho with question length: key" in out
    assert "Spearman rho of key with level:" in out
    # 3 top + 3 bottom prompts, each with its question text
    assert len(re.findall(r"row +\d+ key [\d.]+ q_tokens +\d+ \w+ has \d+ \w+\.", out)) == 6
    for name in ("key_histogram.png", "key_vs_length.png", "key_by_level.png"):
        path = tmp_path / "scores_inspect" / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    other = tmp_path / "other.parquet"
    frame.iloc[::-1].to_parquet(other)  # the same prompts in another order: positions would not line up
    assert cli_main(["inspect", str(scores), "--data", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "different dataset" in err and "re-run `verl-gain score`" in err


def test_a_one_token_question_gets_the_datasets_mean_term_and_inspect_lists_it(tmp_path, capsys):
    from verl_gain.core.angles import TermMeans

    model = make_tiny_model_dir(tmp_path / "model", template="smollm2")
    frame = example_dataset(12)
    frame.at[5, "prompt"] = [{"role": "user", "content": "7"}]  # one question token: no question pairs
    data = tmp_path / "data.parquet"
    frame.to_parquet(data)
    scores = tmp_path / "scores.parquet"
    table = score_dataset(data, model, scores, ScoreConfig(), progress=False).scores
    row = table.set_index("position").loc[5]
    assert row["n_question"] == 1 and row["intra"] == 0.0  # the raw placeholder is kept; the counts tell
    others = table[table["position"] != 5]
    means = TermMeans.of(table["intra"], table["inter"], table["n_fixed"], table["n_question"])
    assert means.intra == pytest.approx(others["intra"].mean())
    assert row["key"] == pytest.approx(means.intra + row["inter"])  # ranked as an average question on intra
    assert row["key"] > table["key"].min() or row["inter"] <= others["inter"].min()
    capsys.readouterr()
    assert cli_main(["inspect", str(scores), "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert "prompts ranked with an imputed term (1:" in out and "row      5" in out

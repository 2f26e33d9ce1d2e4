"""The start-up catalogue of ``python -m verl_gain.main``: bad ``gain.*`` values are refused before Ray starts.

Each case composes the entry config with the override (as the command line would) and runs the start-up checks
(``gain_enabled``, ``check_gain_config``) in this process: one ``GainConfigError`` line naming the option and the
fix. Among them the issue's wrong successes (``gain.enable=no`` turning GAIN on, ``allow_foreign_scores=maybe``
turning a check off, capture points and numbers that failed only in the workers) and every unreadable
``gain.scores_path``. ``test_cli_subprocess.py`` runs one of them as the real command.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.e2e import arithmetic_rows
from tests.tiny import make_tiny_model_dir
from tests.trainer.test_entry import composed, gain_run
from verl_gain.scoring.scores_file import data_files_prompts, dataset_fingerprint, write_scores
from verl_gain.trainer.entry import GainConfigError, check_gain_config, gain_enabled


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("startup")
    train = folder / "train.parquet"
    pd.DataFrame(arithmetic_rows(16, "train")).to_parquet(train)
    make_tiny_model_dir(folder / "model")
    prompts = data_files_prompts(str(train), "prompt")
    table = pd.DataFrame(
        {
            "position": range(16),
            "index": pd.array([None] * 16, dtype="Int64"),
            **{c: [0.5] * 16 for c in ("intra", "inter", "key")},
            **{c: [1] * 16 for c in ("n_fixed", "n_question", "n_tokens")},
        }
    )
    good = write_scores(folder / "scores.parquet", table, {"dataset": dataset_fingerprint(prompts)}).read_bytes()
    (folder / "scores_empty.parquet").write_bytes(b"")
    (folder / "scores_truncated.parquet").write_bytes(good[: len(good) // 2])
    (folder / "scores_garbage.parquet").write_bytes(b"\x00\x01garbage" * 50)
    (folder / "scores_folder.parquet").mkdir()
    shutil.copy(train, folder / "not_scores.parquet")
    (folder / "a_file").write_text("")
    return folder


# override (with {i} = the inputs folder) -> what the one line must say
GAIN_ENABLE_CASES = {value: "gain.enable must be true or false" for value in ("no", "off", "flase", "abc", "0", "1")}
CHECK_CASES = {
    "gain.allow_foreign_scores=maybe": "gain.allow_foreign_scores must be true or false",
    "gain.capture_point=mlp_input:99": "out of range",
    "gain.capture_point=mlp_input:abc": "gain.capture_point must be",
    "gain.capture_point=input:model.nope": "module 'model.nope' not found",
    "gain.acc_threshold=abc": "gain.acc_threshold must be a finite number",
    "gain.acc_threshold=nan": "gain.acc_threshold must be a finite number",
    "gain.n_fraction=abc": "gain.n_fraction must be in",
    "gain.sigma=abc": "gain.sigma must be a finite number",
    "gain.sigma=-1": "gain.sigma must be > 0",
    "gain.trace_path={i}": "is a directory",
    "gain.trace_path={i}/a_file/trace.jsonl": "is a file, not a folder",
    "gain.scores_path={i}/missing.parquet": "does not exist; create it with `verl-gain score`",
    "gain.scores_path={i}/scores_empty.parquet": r"not a readable scores file \(0 bytes",
    "gain.scores_path={i}/scores_truncated.parquet": "not a readable scores file",
    "gain.scores_path={i}/scores_garbage.parquet": "not a readable scores file",
    "gain.scores_path={i}/scores_folder.parquet": r"not a readable scores file \(it is a folder",
    "gain.scores_path={i}/not_scores.parquet": "not a verl-gain scores file",
}


@pytest.mark.parametrize("value", sorted(GAIN_ENABLE_CASES))
def test_gain_enable_that_is_not_a_boolean_never_turns_gain_on(value):
    with pytest.raises(GainConfigError, match=GAIN_ENABLE_CASES[value]) as refused:
        gain_enabled(composed([f"gain.enable={value}"]))
    assert len(str(refused.value).splitlines()) == 1


@pytest.mark.parametrize("override", sorted(CHECK_CASES))
def test_a_bad_gain_value_is_refused_before_ray_starts(inputs, override):
    config = gain_run(
        inputs / "train.parquet", f"actor_rollout_ref.model.path={inputs / 'model'}", override.format(i=inputs)
    )
    with pytest.raises(GainConfigError, match=CHECK_CASES[override]) as refused:
        check_gain_config(config)
    assert len(str(refused.value).splitlines()) == 1


def test_the_good_scores_file_passes(inputs):
    """The same inputs with a readable scores file of the training data pass (the cases above test something)."""
    check_gain_config(
        gain_run(
            inputs / "train.parquet",
            f"actor_rollout_ref.model.path={inputs / 'model'}",
            f"gain.scores_path={inputs / 'scores.parquet'}",
        )
    )

"""The gain group in hydra composition, and the start-up checks of a GAIN run (before any worker starts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

import verl_gain
from tests.e2e import REPO_ROOT, arithmetic_rows
from tests.tiny import make_tiny_model_dir
from verl_gain.main import CONFIG_NAME
from verl_gain.scoring.scorer import ScoreConfig, score_dataset
from verl_gain.scoring.scores_file import data_files_prompts, dataset_fingerprint, keys_for_rows, write_scores
from verl_gain.trainer.entry import (
    DATASET_CLASS,
    DATASET_MODULE,
    GainConfigError,
    check_gain_config,
    gain_enabled,
    gain_task_runners,
)
from verl_gain.trainer.settings import GainSettings

CONFIG_DIR = Path(verl_gain.__file__).parent / "trainer" / "config"


def composed(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(CONFIG_NAME, overrides=overrides)


@pytest.fixture
def train_file(tmp_path) -> Path:
    path = tmp_path / "train.parquet"
    pd.DataFrame(arithmetic_rows(16, "train")).to_parquet(path)
    return path


def gain_run(train_file: Path, *extra: str):
    return composed(
        [
            "gain.enable=True",
            f"data.train_files={train_file}",
            "data.train_batch_size=4",
            "data.dataloader_num_workers=0",
            *extra,
        ]
    )


def test_defaults_are_verls_plus_a_disabled_gain_group():
    config = composed([])
    assert config.gain.enable is False
    assert GainSettings.from_config(config.gain) == GainSettings()
    assert config.algorithm.adv_estimator == "gae"  # verl's own default, untouched
    assert gain_task_runners(config) == (None, None)  # gain off: verl's own task runners
    assert config.data.custom_cls.path is None


def test_overrides_reach_the_settings_and_any_verl_flag_still_works(train_file):
    config = gain_run(train_file, "gain.sigma_fraction=0.25", "gain.step_angle=none", "actor_rollout_ref.rollout.n=8")
    settings = check_gain_config(config)
    assert settings.sigma_fraction == 0.25 and settings.step_angle == "none"
    assert config.actor_rollout_ref.rollout.n == 8


def test_unknown_gain_option_is_rejected_by_hydra():
    with pytest.raises(ConfigCompositionException, match="bogus"):
        composed(["gain.bogus=1"])


def test_enabled_gain_selects_its_runners_and_dataset_class(train_file):
    from verl_gain.trainer.runners import GainTaskRunnerRemote, GainTaskRunnerV1

    config = gain_run(train_file)
    check_gain_config(config)
    assert gain_task_runners(config) == (GainTaskRunnerV1, GainTaskRunnerRemote)
    assert (config.data.custom_cls.path, config.data.custom_cls.name) == (DATASET_MODULE, DATASET_CLASS)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["data.dataloader_num_workers=8"], "data.dataloader_num_workers=0"),
        (["trainer.v1.trainer_mode=colocate_async"], "trainer.v1.trainer_mode=sync"),
        (["trainer.v1.trainer_mode=separate_async"], "trainer.v1.trainer_mode=sync"),
        (["data.train_batch_size=32"], "larger than the training set"),
        (["gain.sigma=-1"], "gain.sigma must be > 0"),
        (["gain.acc_source=reward"], "acc_source"),
        (["algorithm.filter_groups.enable=true"], "filter_groups.enable=false"),
        (["data.gen_batch_size=2"], "data.gen_batch_size=null"),
        (["data.custom_cls.path=pkg://verl.utils.dataset.rl_dataset", "data.custom_cls.name=RLHFDataset"], "derive"),
        (["gain.scores_path=/nonexistent/scores.parquet"], "verl-gain score"),
        (["actor_rollout_ref.actor.strategy=veomni"], "FSDP/FSDP2 and Megatron engines only.*model_engine=dp"),
        (["actor_rollout_ref.actor.strategy=fsdp_turbo"], "actor_rollout_ref.actor.strategy=fsdp_turbo"),
        (["algorithm.rollout_correction.bypass_mode=true"], "rollout_correction.bypass_mode=false.*step_angle=none"),
    ],
)
def test_invalid_combinations_fail_with_what_to_set(train_file, extra, message):
    with pytest.raises(GainConfigError, match=message):
        check_gain_config(gain_run(train_file, *extra))


def test_what_the_capture_supports_passes(train_file, capsys):
    """FSDP, FSDP2 and Megatron engines; bypass mode when no step angle is measured; critic warm-up, announced."""
    for strategy in ("fsdp", "fsdp2"):
        check_gain_config(gain_run(train_file, f"actor_rollout_ref.actor.strategy={strategy}"))
    check_gain_config(gain_run(train_file, "model_engine=megatron"))
    check_gain_config(gain_run(train_file, "algorithm.rollout_correction.bypass_mode=true", "gain.step_angle=none"))
    capsys.readouterr()
    check_gain_config(gain_run(train_file, "trainer.critic_warmup=3"))
    notice = capsys.readouterr().out
    assert "trainer.critic_warmup=3" in notice and "window holds still" in notice


@pytest.mark.parametrize("value", ["no", "off", "flase", "abc", "0", "1", "null"])
def test_a_switch_that_is_not_a_boolean_is_refused_never_truthy(train_file, value):
    """hydra parses true/false as booleans and leaves ``no``/``off``/typos as strings, which Python finds truthy:
    before, ``gain.enable=no`` turned GAIN on and ``gain.allow_foreign_scores=maybe`` turned the check off."""
    with pytest.raises(GainConfigError, match="gain.enable must be true or false, got "):
        gain_enabled(composed([f"gain.enable={value}"]))
    with pytest.raises(GainConfigError, match="gain.allow_foreign_scores must be true or false"):
        check_gain_config(gain_run(train_file, f"gain.allow_foreign_scores={value}"))


@pytest.mark.parametrize("value", ["true", "True", "TRUE", "false", "False"])
def test_what_hydra_calls_a_boolean_is_accepted(value):
    assert gain_enabled(composed([f"gain.enable={value}"])) is (value.lower() == "true")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("entry") / "model")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("mlp_input:99", "out of range"),
        ("mlp_input:abc", "gain.capture_point must be"),
        ("input:model.nope", "module 'model.nope' not found"),
        ("input:", "gain.capture_point must be"),
        ("final_norm:3", "gain.capture_point must be"),
    ],
)
def test_a_capture_point_the_model_does_not_have_is_refused_before_ray_starts(train_file, tiny_model, value, message):
    with pytest.raises(GainConfigError, match=message):
        check_gain_config(
            gain_run(train_file, f"actor_rollout_ref.model.path={tiny_model}", f"gain.capture_point={value}")
        )


def test_a_capture_point_the_model_has_passes(train_file, tiny_model):
    for value in ("mlp_input", "mlp_input:0", "mlp_input:-1", "final_norm"):
        check_gain_config(
            gain_run(train_file, f"actor_rollout_ref.model.path={tiny_model}", f"gain.capture_point={value}")
        )


def test_bad_numbers_and_unwritable_paths_are_refused_at_start_up(train_file, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    cases = [
        ("gain.acc_threshold=abc", "gain.acc_threshold must be a finite number"),
        (f"gain.trace_path={tmp_path}", "is a directory"),
        (f"gain.trace_path={a_file}/trace.jsonl", "is a file, not a folder"),
    ]
    if os.geteuid() != 0:  # root writes anywhere
        cases.append(("gain.trace_path=/proc/trace.jsonl", "not writable"))
    for override, message in cases:
        with pytest.raises(GainConfigError, match=message):
            check_gain_config(gain_run(train_file, override))
    check_gain_config(gain_run(train_file, f"gain.trace_path={tmp_path}/new/folder/trace.jsonl"))


def test_async_modes_are_fine_on_the_legacy_trainer(train_file):
    check_gain_config(gain_run(train_file, "trainer.use_v1=false", "trainer.v1.trainer_mode=colocate_async"))


def test_scores_of_another_dataset_are_refused(train_file, tmp_path):
    other = [row["prompt"] for row in arithmetic_rows(16, "train", offset=5)]  # other sums
    scores = pd.DataFrame(
        {
            "position": range(16),
            "index": pd.array([None] * 16, dtype="Int64"),
            **{c: [0.5] * 16 for c in ("intra", "inter", "key")},
            **{c: [1] * 16 for c in ("n_fixed", "n_question", "n_tokens")},
        }
    )
    path = write_scores(tmp_path / "other.parquet", scores, {"dataset": dataset_fingerprint(other)})
    with pytest.raises(GainConfigError, match="other data than data.train_files"):
        check_gain_config(gain_run(train_file, f"gain.scores_path={path}"))


def test_a_json_lines_file_named_json_reads_the_same_in_the_scorer_the_start_up_and_verl(tmp_path):
    import datasets

    path = tmp_path / "train.json"  # JSON lines under a .json name: verl (datasets' json loader) reads it
    path.write_text("".join(json.dumps(row) + "\n" for row in arithmetic_rows(16, "train")))
    scores = tmp_path / "scores.parquet"
    result = score_dataset(
        path, make_tiny_model_dir(tmp_path / "model"), scores, ScoreConfig(device="cpu"), progress=False
    )

    config = gain_run(path, f"gain.scores_path={scores}")
    check_gain_config(config)  # the start-up reads the file as the scorer did, and finds the same fingerprint
    verl_rows = datasets.load_dataset("json", data_files=str(path))["train"]["prompt"]  # what RLHFDataset holds
    file_prompts = data_files_prompts(config.data.train_files, config.data.prompt_key)
    keys = keys_for_rows(scores, verl_rows, file_prompts, {}, inter_weight=1.0)
    np.testing.assert_array_equal(keys, result.scores["key"].to_numpy())


def test_command_line_reports_a_bad_combination_in_one_line(train_file):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "verl_gain.main",
            "trainer.device=cpu",
            "gain.enable=True",
            f"data.train_files={train_file}",
            "data.dataloader_num_workers=4",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("verl-gain: ") and "data.dataloader_num_workers=0" in last


FAKE_HDFS = """#!/bin/sh
# Stands in for the Hadoop CLI verl calls to copy data (`hdfs dfs -get SRC DST`): SRC hdfs://cluster/<path> is
# $FAKE_HDFS_ROOT/<path>.
[ "$1" = dfs ] && [ "$2" = -get ] || exit 2
cp "$FAKE_HDFS_ROOT/${3#hdfs://cluster/}" "$4"
"""


def test_train_files_on_hdfs_are_copied_as_verl_copies_them(train_file, tmp_path, monkeypatch):
    """An HDFS ``data.train_files`` with a scores file: read on the driver through verl's own ``copy_to_local``
    (before: "does not exist"); the Hadoop CLI is a stand-in that copies from a local folder."""
    import verl.utils.hdfs_io as hdfs_io

    root = tmp_path / "hdfs_root"
    (root / "data").mkdir(parents=True)
    (root / "data" / "train.parquet").write_bytes(train_file.read_bytes())
    cli = tmp_path / "hdfs"
    cli.write_text(FAKE_HDFS)
    cli.chmod(0o755)
    monkeypatch.setattr(hdfs_io, "_HDFS_BIN_PATH", str(cli))
    monkeypatch.setenv("FAKE_HDFS_ROOT", str(root))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "copies"))  # where verl's copy_to_local puts the copy
    (tmp_path / "copies").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR

    scores = tmp_path / "scores.parquet"
    score_dataset(
        train_file, make_tiny_model_dir(tmp_path / "model"), scores, ScoreConfig(device="cpu"), progress=False
    )
    remote = "hdfs://cluster/data/train.parquet"
    check_gain_config(gain_run(train_file, f"data.train_files={remote}", f"gain.scores_path={scores}"))
    with pytest.raises(GainConfigError, match="larger than the training set"):  # the copy's rows are counted
        check_gain_config(gain_run(train_file, f"data.train_files={remote}", "data.train_batch_size=32"))


def test_train_files_verl_cannot_read_are_refused_and_unreachable_ones_left_to_the_cluster(tmp_path, capsys):
    csv = tmp_path / "train.csv"
    csv.write_text("prompt\\nx\\n")
    with pytest.raises(GainConfigError, match=r"verl's RLHFDataset reads .parquet, .json, .jsonl files"):
        check_gain_config(gain_run(csv))
    check_gain_config(gain_run(tmp_path / "only_on_the_cluster.parquet"))
    assert "the pre-pass reads them on the cluster" in capsys.readouterr().out

"""The end-to-end helper itself: fixture files, the reward's variance, timeouts, metrics reading."""

import importlib.util
import os

import pandas as pd
import pytest

from tests.e2e import base_overrides, make_fixture, read_metrics, run_main, session_members


def test_fixture_is_a_verl_dataset_with_a_model_and_a_varying_reward(tmp_path):
    fixture = make_fixture(tmp_path, train_rows=8, val_rows=2)
    train = pd.read_parquet(fixture.train_file)
    assert len(train) == 8 and len(pd.read_parquet(fixture.val_file)) == 2
    assert set(train.columns) == {"data_source", "prompt", "ability", "reward_model", "extra_info"}
    assert (fixture.model_dir / "config.json").is_file()
    spec = importlib.util.spec_from_file_location("reward", fixture.reward_file)
    reward = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reward)
    row = train.iloc[0]
    truth = row["reward_model"]["ground_truth"]
    scores = {reward.compute_score(row["data_source"], text, truth)["score"] for text in ("aaaa", "abcd", f"={truth}")}
    assert len(scores) == 3


def test_overrides_divide_the_per_worker_batch(tmp_path):
    fixture = make_fixture(tmp_path, train_rows=8, val_rows=2)
    overrides = dict(o.lstrip("+").split("=", 1) for o in base_overrides(fixture, prompts_per_step=4, workers=2))
    rows_per_worker = 4 * int(overrides["actor_rollout_ref.rollout.n"]) // 2
    assert rows_per_worker % int(overrides["actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu"]) == 0
    assert overrides["trainer.device"] == "cpu"


def test_timeout_kills_the_whole_session(tmp_path):
    result = run_main(["--help"], metrics_path=tmp_path / "m.jsonl", timeout_s=0.01)
    assert result.returncode == -9 and "killed after" in result.output
    with pytest.raises(AssertionError, match="exited with -9"):
        result.check()
    assert read_metrics(tmp_path / "m.jsonl") == []


def test_session_members_lists_this_process():
    assert os.getpid() in session_members(os.getsid(0))


def test_entry_point_refuses_a_gpu_rollout_on_cpu_in_one_line(tmp_path):
    result = run_main(
        ["trainer.device=cpu", "actor_rollout_ref.rollout.name=vllm"], metrics_path=tmp_path / "m.jsonl", timeout_s=120
    )
    assert result.returncode == 1
    last_line = result.output.strip().splitlines()[-1]
    assert last_line.startswith("verl-gain: actor_rollout_ref.rollout.name=vllm needs a GPU")

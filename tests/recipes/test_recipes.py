"""The recipes (recipes/config) and their launcher (recipes/run.sh): one per paper setup, the paper's settings,
GAIN's and verl's start-up checks, the uniform baseline as ``gain.enable=False``, command-line overrides that win.

The configs are composed in-process (``tests/recipes/recipe_configs.py``) as ``python -m verl_gain.main
--config-dir recipes/config --config-name recipe setup=<setup>`` composes them; one test runs the launcher for real
with ``--cfg job``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.recipes.recipe_configs import (
    CONFIG_DIR,
    LAUNCHER,
    NAME_KEYS,
    PINNED,
    PRIMARY_CONFIG,
    REPO,
    SETUPS,
    compose,
    expected_values,
    resolved,
)

GSM8K = "gsm8k_qwen2.5-0.5b-instruct"
UNIFORM = ("gain.enable=False",)


def test_every_paper_setup_has_a_recipe():
    assert SETUPS == sorted(PINNED)


@pytest.mark.parametrize("setup", SETUPS)
def test_recipe_has_the_paper_settings(setup):
    values = resolved(setup)
    expected = expected_values(setup)
    assert {key: values.get(key, "<missing>") for key in expected} == expected
    # Enough tokens per GPU micro-batch for the longest prompt + response.
    tokens = values["actor_rollout_ref.actor.ppo_max_token_len_per_gpu"]
    assert tokens >= values["data.max_prompt_length"] + values["data.max_response_length"]
    # verl 0.9 reads the custom reward from reward.custom_reward_function (its legacy top-level key is ignored).
    assert values["custom_reward_function.path"] is None


@pytest.mark.parametrize("overrides", [(), UNIFORM], ids=["gain", "uniform"])
@pytest.mark.parametrize("setup", SETUPS)
def test_recipe_passes_the_entry_points_checks(setup, overrides):
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    from verl_gain.trainer.entry import check_gain_config

    config = compose(setup, overrides)
    assert config.gain.enable is (not overrides)
    if config.gain.enable:
        check_gain_config(config)  # GAIN's start-up refusals (the entry point runs them before verl's validation)
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))


@pytest.mark.parametrize("setup", SETUPS)
def test_uniform_baseline_differs_only_in_gain_and_the_run_name(setup):
    gain, uniform = resolved(setup), resolved(setup, UNIFORM)
    assert {key for key in gain if gain[key] != uniform.get(key)} == {"gain.enable", *NAME_KEYS}
    assert uniform["trainer.experiment_name"] == f"{PINNED[setup].name}-uniform"
    assert uniform["trainer.default_local_dir"].endswith(f"/{PINNED[setup].name}-uniform")


def test_extra_arguments_override_the_recipes_values():
    overrides = (
        "actor_rollout_ref.model.path=/models/mine",
        "recipe.data_dir=/data",
        "recipe.output_dir=/checkpoints",
        "recipe.max_tokens_per_gpu=4096",
        "trainer.n_gpus_per_node=2",
        "trainer.nnodes=3",
        "reward.custom_reward_function.path=/my/reward.py",
        "reward.custom_reward_function.name=my_score",
        "data.max_response_length=256",
        "trainer.experiment_name=mine",
        "trainer.save_freq=5",
        "gain.enable=False",
    )
    values = resolved(GSM8K, overrides)
    assert values["actor_rollout_ref.model.path"] == "/models/mine"
    assert values["data.train_files"] == ["/data/gsm8k/train.parquet"]
    assert values["data.val_files"] == ["/data/gsm8k/test.parquet"]
    assert values["trainer.default_local_dir"] == "/checkpoints/mine"
    assert values["actor_rollout_ref.rollout.max_num_batched_tokens"] == 4096
    assert values["actor_rollout_ref.ref.log_prob_max_token_len_per_gpu"] == 4096
    assert values["trainer.n_gpus_per_node"] == 2 and values["trainer.nnodes"] == 3
    assert values["reward.custom_reward_function.path"] == "/my/reward.py"
    assert values["reward.custom_reward_function.name"] == "my_score"
    assert values["data.max_response_length"] == 256
    assert values["trainer.save_freq"] == 5 and values["gain.enable"] is False


def test_recipes_compose_on_top_of_the_entry_config():
    """recipe.yaml keeps the entry config's defaults (in order) and search path, and finds the entry config's own
    groups through pkg:// (so the recipes run as ``python -m verl_gain.main`` runs without them)."""
    import verl_gain.main as entry

    entry_config = yaml.safe_load(
        (Path(entry.__file__).parent / entry.CONFIG_PATH / f"{entry.CONFIG_NAME}.yaml").read_text()
    )
    recipe = yaml.safe_load((CONFIG_DIR / f"{PRIMARY_CONFIG}.yaml").read_text())
    assert recipe["defaults"][: len(entry_config["defaults"])] == entry_config["defaults"]
    searchpath = recipe["hydra"]["searchpath"]
    assert "pkg://verl_gain.trainer.config" in searchpath
    assert set(entry_config["hydra"]["searchpath"]) <= set(searchpath)
    assert not any(path.startswith("file://") for path in searchpath)


def test_prepare_scripts_write_where_the_recipes_read():
    from recipes import common, prepare_code, prepare_math

    datasets = {**prepare_math.DATASETS, **prepare_code.DATASETS}
    for setup in SETUPS:
        values = resolved(setup)
        assert Path(values["recipe.data_dir"]) == common.DEFAULT_DATA_ROOT
        for file in values["data.train_files"] + values["data.val_files"]:
            dataset, split = Path(file).relative_to(common.DEFAULT_DATA_ROOT).parts
            assert split.removesuffix(".parquet") in {s.name for s in datasets[dataset].splits}, file


def test_launcher_names_the_setups_when_given_none():
    assert subprocess.run(["bash", "-n", str(LAUNCHER)]).returncode == 0
    done = subprocess.run(["bash", str(LAUNCHER)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and all(setup in done.stderr for setup in SETUPS)
    unknown = subprocess.run(["bash", str(LAUNCHER), "nope"], capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and "usage" in unknown.stderr


@pytest.mark.slow
def test_launcher_runs_the_entry_point_with_cfg_job(tmp_path):
    """``bash recipes/run.sh SETUP ... --cfg job``: python -m verl_gain.main prints the config, runs nothing."""
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": pythonpath}
    command = ["bash", str(LAUNCHER), GSM8K, "trainer.save_freq=7", "--cfg", "job", "--resolve"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    printed = yaml.safe_load(done.stdout)
    assert printed["algorithm"]["adv_estimator"] == "grpo" and printed["gain"]["enable"] is True
    assert printed["trainer"]["save_freq"] == 7  # extra arguments win
    assert printed["trainer"]["experiment_name"] == f"{PINNED[GSM8K].name}-gain"
    assert not list(tmp_path.iterdir())  # ran nothing: no outputs folder, no checkpoint

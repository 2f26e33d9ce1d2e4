"""The run scripts: valid bash, the paper's settings as verl overrides, environment overrides, a uniform twin each."""

from __future__ import annotations

import subprocess

import pytest

from tests.recipes.run_scripts import as_dict, is_uniform_twin, overrides, run_scripts

SCRIPTS = run_scripts()
MAIN_SCRIPTS = [s for s in SCRIPTS if not is_uniform_twin(s)]
# The paper's setups (gain-rl-method.md section 6): model -> (task folder, prompts per step, max response tokens).
PAPER_SETUPS = {
    "Qwen/Qwen2.5-0.5B-Instruct": ({"gsm8k", "math"}, 256, 512),
    "Qwen/Qwen2.5-Math-1.5B-Instruct": ({"deepscaler"}, 1024, 3000),
    "Qwen/Qwen2.5-Math-7B-Instruct": ({"deepscaler"}, 1024, 3000),
    "meta-llama/Llama-3.2-3B-Instruct": ({"deepscaler"}, 1024, 8192),
    "Qwen/Qwen2.5-Coder-3B-Instruct": ({"deepcoder"}, 1024, 8192),
}


def test_every_paper_setup_has_a_script_and_a_uniform_twin(tmp_path):
    found = {}
    for script in MAIN_SCRIPTS:
        model = as_dict(overrides(script, tmp_path))["actor_rollout_ref.model.path"]
        found.setdefault(model, set()).add(script.parent.name)
        assert script.with_name(f"{script.stem}_uniform.sh").is_file(), script
    assert found == {model: tasks for model, (tasks, _, _) in PAPER_SETUPS.items()}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: f"{s.parent.name}/{s.name}")
def test_bash_syntax(script):
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: f"{s.parent.name}/{s.name}")
def test_paper_settings(script, tmp_path):
    values = as_dict(overrides(script, tmp_path))
    _, batch, response = PAPER_SETUPS[values["actor_rollout_ref.model.path"]]
    assert values["gain.enable"] == ("False" if is_uniform_twin(script) else "True")
    assert values["algorithm.adv_estimator"] == "grpo"
    assert int(values["data.train_batch_size"]) == batch
    assert int(values["data.max_response_length"]) == response
    assert values["actor_rollout_ref.rollout.n"] == "8"
    assert values["actor_rollout_ref.rollout.name"] == "vllm"
    assert float(values["actor_rollout_ref.actor.optim.lr"]) == 1e-6
    assert values["actor_rollout_ref.actor.use_kl_loss"] == "True"
    assert float(values["actor_rollout_ref.actor.kl_loss_coef"]) == 0.001
    assert values["actor_rollout_ref.actor.kl_loss_type"] == "low_var_kl"
    assert values["trainer.total_training_steps"] == "200"
    # verl 0.9 reads the custom reward from reward.custom_reward_function (the top-level key is ignored).
    assert values["reward.custom_reward_function.path"] == "/rewards/reward.py"
    assert not any(key.startswith("custom_reward_function.") for key in values)
    # Enough tokens per GPU micro-batch for the longest prompt + response.
    tokens = int(values["actor_rollout_ref.actor.ppo_max_token_len_per_gpu"])
    assert tokens >= int(values["data.max_prompt_length"]) + response


def test_twin_differs_only_in_gain_and_experiment_name(tmp_path):
    for script in MAIN_SCRIPTS:
        gain = as_dict(overrides(script, tmp_path))
        uniform = as_dict(overrides(script.with_name(f"{script.stem}_uniform.sh"), tmp_path))
        differing = {key for key in gain if gain[key] != uniform.get(key)}
        assert differing == {"gain.enable", "trainer.experiment_name", "trainer.default_local_dir"}, script


def test_environment_overrides_and_extra_arguments(tmp_path):
    script = next(s for s in MAIN_SCRIPTS if s.parent.name == "gsm8k")
    env = {
        "MODEL_PATH": "/models/mine",
        "DATA_DIR": "/data",
        "N_GPUS": "2",
        "NNODES": "3",
        "REWARD_PATH": "/my/reward.py",
        "REWARD_NAME": "my_score",
        "MAX_RESPONSE_LENGTH": "256",
    }
    result = overrides(script, tmp_path, env, extra=["trainer.save_freq=5"])
    values = as_dict(result)
    assert values["actor_rollout_ref.model.path"] == "/models/mine"
    assert values["data.train_files"] == "['/data/gsm8k/train.parquet']"
    assert values["trainer.n_gpus_per_node"] == "2" and values["trainer.nnodes"] == "3"
    assert values["reward.custom_reward_function.path"] == "/my/reward.py"
    assert values["reward.custom_reward_function.name"] == "my_score"
    assert values["data.max_response_length"] == "256"
    assert result[-1] == "trainer.save_freq=5"  # extra arguments come last, so they win

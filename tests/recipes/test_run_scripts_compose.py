"""Each run script's command line composes under ``python -m verl_gain.main`` (hydra) and passes verl's checks.

The overrides are read from the script with a stand-in Python (``tests/recipes/run_scripts.py``) and composed
in-process against the entry point's own config (``verl_gain.main.CONFIG_PATH`` / ``CONFIG_NAME``), which is what
``python -m verl_gain.main ... --cfg job`` composes; one script is also run for real with ``--cfg job``.
Needs from the entry point: those two module constants, a ``gain`` group with ``enable`` in its config, and
``verl_gain.trainer.entry.check_gain_config`` (GAIN's start-up checks).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.recipes.run_scripts import REPO, is_uniform_twin, overrides, run_scripts

SCRIPTS = run_scripts()


@pytest.fixture(scope="module")
def compose():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    import verl_gain.main as entry

    config_dir = Path(entry.__file__).parent / entry.CONFIG_PATH

    def run(override_list: list[str]):
        with initialize_config_dir(config_dir=str(config_dir), version_base=None):
            return hydra_compose(entry.CONFIG_NAME, overrides=override_list)

    if "gain" not in run([]):
        pytest.skip(f"the gain group is not in {entry.CONFIG_NAME} yet: the scripts' gain.enable cannot compose")
    return run


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: f"{s.parent.name}/{s.name}")
def test_script_composes_and_validates(script, tmp_path, compose):
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    from verl_gain.trainer.entry import check_gain_config

    config = compose(overrides(script, tmp_path))
    assert config.gain.enable is (not is_uniform_twin(script))
    assert config.actor_rollout_ref.rollout.n == 8
    assert config.reward.custom_reward_function.path == "/rewards/reward.py"
    if config.gain.enable:
        check_gain_config(config)  # GAIN's start-up refusals (the entry point runs them before verl's validation)
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))


def test_extra_arguments_override_the_scripts_values(tmp_path, compose):
    script = next(s for s in SCRIPTS if s.parent.name == "gsm8k" and not is_uniform_twin(s))
    config = compose(overrides(script, tmp_path, extra=["trainer.save_freq=5", "gain.enable=False"]))
    assert config.trainer.save_freq == 5 and config.gain.enable is False


@pytest.mark.slow
def test_script_runs_the_entry_point_with_cfg_job():
    script = next(s for s in SCRIPTS if s.parent.name == "gsm8k" and not is_uniform_twin(s))
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(script), "--cfg", "job"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "adv_estimator: grpo" in done.stdout and "enable: true" in done.stdout

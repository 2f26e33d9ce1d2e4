"""Each recipe (recipes/config, setup=<name>) composes to the config its old run script composed: the same resolved
value at every key of verl's and GAIN's config, for GAIN and for the uniform twin (gain.enable=False). The only
differences: the recipe's own ``recipe`` block, and the reward given as a ``pkg://`` module path instead of the
module's file."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.recipes.run_scripts import REPO, is_uniform_twin, overrides, run_scripts

SCRIPTS = run_scripts()


def compose(config_dir: Path, name: str, override_list: list[str]) -> dict:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        return OmegaConf.to_container(hydra_compose(name, overrides=override_list), resolve=True)


def flat(value, key: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists are values)."""
    if not isinstance(value, dict):
        return {key: value}
    return {
        path: item for name, child in value.items() for path, item in flat(child, f"{key}.{name}".lstrip(".")).items()
    }


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: f"{s.parent.name}/{s.name}")
def test_recipe_composes_to_the_old_scripts_config(script, tmp_path):
    import verl_gain.main as entry
    from verl_gain.rewards import reward_file

    reward = "code" if script.parent.name == "deepcoder" else "math"
    old_overrides = overrides(script, tmp_path, env={"REWARD_PATH": str(reward_file(reward))})
    old = flat(compose(Path(entry.__file__).parent / entry.CONFIG_PATH, entry.CONFIG_NAME, old_overrides))
    setup = f"{script.parent.name}_{script.stem.removeprefix('run_').removesuffix('_uniform')}"
    uniform = ["gain.enable=False"] if is_uniform_twin(script) else []
    new = compose(REPO / "recipes" / "config", "recipe", [f"setup={setup}", *uniform])
    assert set(new.pop("recipe")) >= {"name", "data_dir", "output_dir", "max_tokens_per_gpu"}
    new = flat(new)
    path_key = "reward.custom_reward_function.path"
    assert new.pop(path_key) == f"pkg://verl_gain.rewards.{reward_file(reward).stem}"
    assert old.pop(path_key) == str(reward_file(reward))
    assert sorted(new) == sorted(old)
    assert {key: new[key] for key in old if new[key] != old[key]} == {}

"""The Megatron variant of the 7B DeepScaleR recipe: verl's Megatron engine for actor and reference, same paper
settings as the FSDP script, composing under ``python -m verl_gain.main`` with GAIN's start-up checks."""

from __future__ import annotations

from pathlib import Path

from tests.recipes.run_scripts import RECIPES, as_dict, overrides

MEGATRON_SCRIPT = RECIPES / "deepscaler" / "run_qwen2.5-math-7b-instruct_megatron.sh"
FSDP_SCRIPT = RECIPES / "deepscaler" / "run_qwen2.5-math-7b-instruct.sh"
ENGINE_KEYS = ("model_engine", "actor_rollout_ref.actor.megatron.", "actor_rollout_ref.ref.megatron.")
FSDP_KEYS = ("actor_rollout_ref.actor.fsdp_config.", "actor_rollout_ref.ref.fsdp_config.")


def _compose(override_list: list[str]):
    from hydra import compose, initialize_config_dir

    import verl_gain.main as entry

    config_dir = Path(entry.__file__).parent / entry.CONFIG_PATH
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        return compose(entry.CONFIG_NAME, overrides=override_list)


def test_megatron_script_differs_from_the_fsdp_script_only_in_the_engine(tmp_path):
    megatron = as_dict(overrides(MEGATRON_SCRIPT, tmp_path))
    fsdp = as_dict(overrides(FSDP_SCRIPT, tmp_path))
    assert megatron["model_engine"] == "megatron"
    assert not any(key.startswith(FSDP_KEYS) for key in megatron)
    engine_only = {"trainer.experiment_name", "trainer.default_local_dir"}
    shared = {key for key in megatron if not key.startswith(ENGINE_KEYS)} - engine_only
    assert shared == {key for key in fsdp if not key.startswith(FSDP_KEYS)} - engine_only
    assert all(megatron[key] == fsdp[key] for key in shared)


def test_megatron_script_composes_to_the_megatron_engine(tmp_path):
    from verl_gain.trainer.entry import check_gain_config

    config = _compose(overrides(MEGATRON_SCRIPT, tmp_path, env={"ACTOR_TP": "4", "ACTOR_CP": "2"}))
    actor, ref = config.actor_rollout_ref.actor, config.actor_rollout_ref.ref
    assert actor.strategy == "megatron" and ref.strategy == "megatron"
    assert actor.megatron.tensor_model_parallel_size == 4 and ref.megatron.tensor_model_parallel_size == 4
    assert actor.megatron.context_parallel_size == 2 and actor.megatron.sequence_parallel is True
    # The GAIN capture refuses dynamic context parallel; the recipe keeps verl's default (off).
    assert actor.megatron.dynamic_context_parallel is False
    assert config.gain.enable is True
    check_gain_config(config)

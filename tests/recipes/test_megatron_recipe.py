"""The Megatron variant of the 7B DeepScaleR recipe (setup=deepscaler_qwen2.5-math-7b-instruct_megatron): verl's
Megatron engine for actor and reference, the same paper settings as the FSDP recipe, composing under
``python -m verl_gain.main`` with GAIN's start-up checks."""

from __future__ import annotations

from tests.recipes.recipe_configs import (
    FSDP_KEYS,
    MEGATRON_KEYS,
    NAME_KEYS,
    compose,
    expected_values,
    resolved,
)

MEGATRON_SETUP = "deepscaler_qwen2.5-math-7b-instruct_megatron"
FSDP_SETUP = "deepscaler_qwen2.5-math-7b-instruct"


def test_megatron_recipe_differs_from_the_fsdp_recipe_only_in_the_engine():
    megatron, fsdp = resolved(MEGATRON_SETUP), resolved(FSDP_SETUP)
    assert megatron["model_engine"] == "megatron" and fsdp["model_engine"] == "dp"
    assert not any(key.startswith(FSDP_KEYS) for key in megatron)
    # The values the recipes set, engine settings and run names aside, are the same keys with the same values.
    shared = {key for key in expected_values(MEGATRON_SETUP) if not key.startswith(MEGATRON_KEYS)} - set(NAME_KEYS)
    assert shared == {key for key in expected_values(FSDP_SETUP) if not key.startswith(FSDP_KEYS)} - set(NAME_KEYS)
    assert {key: megatron[key] for key in shared} == {key: fsdp[key] for key in shared}
    assert megatron["trainer.experiment_name"] == "qwen2.5-math-7b-instruct-deepscaler-megatron-gain"


def test_megatron_recipe_composes_to_the_megatron_engine():
    from verl_gain.trainer.entry import check_gain_config

    layout = ("actor_rollout_ref.actor.megatron.tensor_model_parallel_size=4",)
    layout += ("actor_rollout_ref.actor.megatron.context_parallel_size=2",)
    config = compose(MEGATRON_SETUP, layout)
    actor, ref = config.actor_rollout_ref.actor, config.actor_rollout_ref.ref
    assert actor.strategy == "megatron" and ref.strategy == "megatron"
    # The reference model takes the actor's layout.
    assert actor.megatron.tensor_model_parallel_size == 4 and ref.megatron.tensor_model_parallel_size == 4
    assert actor.megatron.context_parallel_size == 2 and ref.megatron.context_parallel_size == 2
    assert actor.megatron.sequence_parallel is True
    # The GAIN capture refuses dynamic context parallel; the recipe keeps verl's default (off).
    assert actor.megatron.dynamic_context_parallel is False
    assert config.gain.enable is True
    check_gain_config(config)


def test_model_engine_megatron_on_an_fsdp_recipe_takes_the_megatron_settings():
    values = resolved(FSDP_SETUP, ("model_engine=megatron",))
    assert not any(key.startswith(FSDP_KEYS) for key in values)
    assert values["actor_rollout_ref.actor.megatron.param_offload"] is True  # the 7B recipe offloads the actor
    assert values["actor_rollout_ref.ref.megatron.param_offload"] is True

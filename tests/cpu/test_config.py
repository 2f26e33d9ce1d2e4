"""The CPU defaults applied to verl's composed trainer config, and the device choice of the entry point."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import verl_gain
from verl_gain.cpu.adaptations import (
    BF16_MIXED_PRECISION,
    CONFIG_ADAPTATIONS,
    FP32_MIXED_PRECISION,
    LOGICAL_CPUS,
    MIXED_PRECISION,
    PRECISION_KEY,
)
from verl_gain.cpu.backend import accelerator_available
from verl_gain.cpu.config import CPU_FRIENDLY_DEFAULTS, CPUConfigError, apply_cpu_defaults, is_cpu_run, override_keys
from verl_gain.cpu.environment import HF_ROLLOUT_NAME, TQ_DEFAULT_THREADS
from verl_gain.inference import cpu_bf16_instructions
from verl_gain.main import CONFIG_NAME, select_device

CONFIG_DIR = Path(verl_gain.__file__).parent / "trainer" / "config"


def composed(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(CONFIG_NAME, overrides=overrides)


def test_entry_config_is_verls_ppo_trainer_unchanged():
    config = composed([])
    assert config.trainer.device == "cuda" and config.algorithm.adv_estimator == "gae"
    assert OmegaConf.select(config, "actor_rollout_ref.rollout.name", throw_on_missing=False) is None


def test_cpu_defaults_apply_only_to_cpu_runs():
    config = composed([])
    before = OmegaConf.to_container(config)
    apply_cpu_defaults(config)
    assert OmegaConf.to_container(config) == before


def test_cpu_defaults_set_every_ledger_value():
    overrides = ["trainer.device=cpu", "trainer.n_gpus_per_node=3"]
    config = apply_cpu_defaults(composed(overrides), overrides)
    assert is_cpu_run(config)
    for adaptation in CONFIG_ADAPTATIONS:
        value = OmegaConf.select(config, adaptation.key)
        expected = adaptation.value(config) if callable(adaptation.value) else adaptation.value
        assert (OmegaConf.to_container(value) if OmegaConf.is_config(value) else value) == expected, adaptation.key
    assert config.actor_rollout_ref.rollout.name == HF_ROLLOUT_NAME
    assert config.actor_rollout_ref.ref.strategy == "fsdp2"  # follows the actor through verl's interpolation
    assert config.actor_rollout_ref.ref.fsdp_config.mixed_precision == MIXED_PRECISION[config.cpu.precision]
    assert config.ray_kwargs.ray_init.num_gpus == 3  # one logical GPU per trainer worker the user asked for
    assert config.ray_kwargs.ray_init.num_cpus == LOGICAL_CPUS
    env = config.ray_kwargs.ray_init.runtime_env.env_vars
    assert env.VERL_PLATFORM == "cpu" and "verl_gain.cpu.plugin" in env.VERL_USE_EXTERNAL_MODULES.split(",")
    assert 1 <= int(env.TQ_NUM_THREADS) <= TQ_DEFAULT_THREADS


def test_user_overrides_keep_their_values():
    overrides = [
        "trainer.device=cpu",
        "actor_rollout_ref.rollout.agent.num_workers=3",
        "+actor_rollout_ref.model.override_config.attn_implementation=eager",
        "+ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES=my_plugin",
    ]
    config = apply_cpu_defaults(composed(overrides), overrides)
    assert config.actor_rollout_ref.rollout.agent.num_workers == 3
    assert config.actor_rollout_ref.model.override_config.attn_implementation == "eager"
    friendly = {d.key: d.value for d in CPU_FRIENDLY_DEFAULTS}
    assert config.reward.num_workers == friendly["reward.num_workers"]
    modules = config.ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES.split(",")
    assert "my_plugin" in modules and "verl_gain.cpu.plugin" in modules


@pytest.mark.parametrize(
    "override, message",
    [
        ("actor_rollout_ref.rollout.name=vllm", "needs a GPU"),
        ("+actor_rollout_ref.model.override_config.attn_implementation=flash_attention_2", "needs CUDA"),
        ("actor_rollout_ref.actor.strategy=megatron", "not supported on CPU"),
    ],
)
def test_values_that_cannot_run_on_cpu_are_refused(override, message):
    overrides = ["trainer.device=cpu", override]
    with pytest.raises(CPUConfigError, match=message):
        apply_cpu_defaults(composed(overrides), overrides)


def test_override_keys():
    assert override_keys(["a.b=1", "+c.d=[1,2]", "++e=x", "~f", "g.h=a=b"]) == {"a.b", "c.d", "e", "f", "g.h"}


@pytest.mark.skipif(accelerator_available(), reason="needs a machine without an accelerator")
def test_no_accelerator_selects_the_cpu_backend_unless_the_device_was_set():
    config = composed([])
    assert select_device(config) == "cpu"
    config = composed(["trainer.device=cuda"])
    assert select_device(config, ["trainer.device=cuda"]) == "cuda"


def test_auto_precision_follows_this_cpu_and_sets_verls_own_keys():
    overrides = ["trainer.device=cpu"]
    config = apply_cpu_defaults(composed(overrides), overrides)
    expected = "bf16" if cpu_bf16_instructions() else "fp32"
    assert OmegaConf.select(config, PRECISION_KEY) == expected  # resolved, so the run's config records it
    assert config.actor_rollout_ref.actor.fsdp_config.mixed_precision == MIXED_PRECISION[expected]
    assert config.actor_rollout_ref.rollout.dtype == {"bf16": "bfloat16", "fp32": "float32"}[expected]
    # fp32 master weights either way (verl's model_dtype default, untouched): only the compute precision changes.
    assert config.actor_rollout_ref.actor.fsdp_config.model_dtype == "fp32"


@pytest.mark.parametrize(
    "precision, mixed, rollout",
    [("fp32", FP32_MIXED_PRECISION, "float32"), ("bf16", BF16_MIXED_PRECISION, "bfloat16")],
)
def test_a_named_precision_sets_actor_reference_and_rollout(precision, mixed, rollout):
    overrides = ["trainer.device=cpu", f"{PRECISION_KEY}={precision}"]
    config = apply_cpu_defaults(composed(overrides), overrides)
    assert config.actor_rollout_ref.actor.fsdp_config.mixed_precision == mixed
    assert config.actor_rollout_ref.ref.fsdp_config.mixed_precision == mixed
    assert config.actor_rollout_ref.rollout.dtype == rollout
    assert BF16_MIXED_PRECISION["reduce_dtype"] == "fp32"  # gradients are reduced in fp32 in both


def test_a_verl_precision_key_on_the_command_line_wins_over_the_cpu_precision():
    overrides = ["trainer.device=cpu", f"{PRECISION_KEY}=bf16", "actor_rollout_ref.rollout.dtype=float32"]
    config = apply_cpu_defaults(composed(overrides), overrides)
    assert config.actor_rollout_ref.rollout.dtype == "float32"
    assert config.actor_rollout_ref.actor.fsdp_config.mixed_precision == BF16_MIXED_PRECISION


def test_an_unknown_precision_is_refused_in_one_line():
    overrides = ["trainer.device=cpu", f"{PRECISION_KEY}=fp8"]
    with pytest.raises(CPUConfigError, match=r"cpu.precision must be one of auto, bf16, fp32, got 'fp8'") as error:
        apply_cpu_defaults(composed(overrides), overrides)
    assert "\n" not in str(error.value)


def test_the_precision_key_is_ignored_off_cpu():
    config = composed([f"{PRECISION_KEY}=fp8"])
    apply_cpu_defaults(config, [f"{PRECISION_KEY}=fp8"])
    assert config.cpu.precision == "fp8" and config.actor_rollout_ref.rollout.dtype == "bfloat16"


def test_bf16_on_a_cpu_without_it_runs_with_a_one_line_warning_and_auto_stays_fp32(monkeypatch, capsys):
    monkeypatch.setattr("verl_gain.inference.cpu_bf16_instructions", lambda *args: ())  # a CPU without bf16
    overrides = ["trainer.device=cpu", f"{PRECISION_KEY}=bf16"]
    config = apply_cpu_defaults(composed(overrides), overrides)
    assert config.actor_rollout_ref.actor.fsdp_config.mixed_precision == BF16_MIXED_PRECISION  # honoured
    warnings = [line for line in capsys.readouterr().out.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "slower than fp32" in warnings[0] and f"{PRECISION_KEY}=fp32" in warnings[0]

    overrides = ["trainer.device=cpu"]
    config = apply_cpu_defaults(composed(overrides), overrides)
    assert config.cpu.precision == "fp32" and config.actor_rollout_ref.rollout.dtype == "float32"
    assert "warning" not in capsys.readouterr().out

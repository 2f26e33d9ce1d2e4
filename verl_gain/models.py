"""The former name of ``verl_gain.model_sources``, kept so that commands written for verl-gain 0.1 still work."""

from verl_gain.model_sources import SMOLLM2_NAME, resolve_model, smollm2_gguf_path, smollm2_path

__all__ = ["SMOLLM2_NAME", "resolve_model", "smollm2_gguf_path", "smollm2_path"]

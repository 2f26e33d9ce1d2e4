"""``GainSettings``: the ``gain:`` config group of ``python -m verl_gain.main``, validated.

The YAML (``verl_gain/trainer/config/verl_gain_trainer.yaml``) documents every field; this dataclass is the single place
that checks them and says how to fix a bad value. Window and update parameters become a core ``GainConfig``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from verl_gain.core.controller import (
    PAPER_ADJ_MAX,
    PAPER_ADJ_MIN,
    PAPER_ALPHA,
    PAPER_BETA,
    PAPER_N,
    PAPER_SIGMA_POSITIONS,
    GainConfig,
)

ACC_SOURCES = ("acc", "threshold")
"""``acc``: the reward's ``acc`` extra info (verl sets it to the score when a reward returns a float);
``threshold``: a rollout counts as correct when its summed reward exceeds ``gain.acc_threshold``."""
STEP_ANGLE_SOURCES = ("none", "prompt", "prompt_response")
"""``none``: leave the angle term out of the update; ``prompt``: the ranking key of the step's prompts measured by the
current model; ``prompt_response``: the same with the response tokens counted as part of the question segment."""


CAPTURE_KINDS = ("mlp_input", "final_norm", "input", "output")
"""Capture point kinds of ``verl_gain.scoring.capture.resolve_capture_point`` (resolved in the workers)."""


@dataclass
class GainSettings:
    """The ``gain:`` config group (see the YAML for each field's meaning)."""

    enable: bool = False
    scores_path: str | None = None
    allow_foreign_scores: bool = False
    capture_point: str = "mlp_input"
    inter_weight: float = 1.0
    mu0: float = 0.0
    sigma: float = PAPER_SIGMA_POSITIONS
    sigma_fraction: float | None = None
    n: float = PAPER_N
    alpha: float = PAPER_ALPHA
    beta: float = PAPER_BETA
    adj_min: float = PAPER_ADJ_MIN
    adj_max: float = PAPER_ADJ_MAX
    acc_source: str = "acc"
    acc_threshold: float = 0.5
    step_angle: str = "prompt"
    seed: int = 0
    prepass_batch_size: int = 256
    trace_path: str | None = None

    def __post_init__(self) -> None:
        if self.acc_source not in ACC_SOURCES:
            raise ValueError(f"gain.acc_source must be one of {ACC_SOURCES}, got {self.acc_source!r}")
        if self.step_angle not in STEP_ANGLE_SOURCES:
            raise ValueError(f"gain.step_angle must be one of {STEP_ANGLE_SOURCES}, got {self.step_angle!r}")
        if not isinstance(self.prepass_batch_size, int) or self.prepass_batch_size < 1:
            raise ValueError(
                f"gain.prepass_batch_size must be a positive integer (prompts per pre-pass call), "
                f"got {self.prepass_batch_size!r}"
            )
        kind = self.capture_point.partition(":")[0] if isinstance(self.capture_point, str) else None
        if kind not in CAPTURE_KINDS:
            raise ValueError(
                "gain.capture_point must be mlp_input, final_norm, mlp_input:<layer>, input:<module path> or "
                f"output:<module path>, got {self.capture_point!r}"
            )
        self.window()  # validates the window and update parameters with GainConfig's messages

    @classmethod
    def from_config(cls, gain_config: Any) -> GainSettings:
        """Build from the ``gain`` node of a (resolved) OmegaConf config or a plain dict."""
        from omegaconf import DictConfig, OmegaConf

        values = (
            OmegaConf.to_container(gain_config, resolve=True) if isinstance(gain_config, DictConfig) else gain_config
        )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown gain option(s) {unknown}; valid options: {sorted(known)}")
        return cls(**values)

    def window(self) -> GainConfig:
        """The core window and update parameters."""
        return GainConfig(
            mu0=self.mu0,
            sigma=self.sigma,
            sigma_fraction=self.sigma_fraction,
            n=self.n,
            alpha=self.alpha,
            beta=self.beta,
            adj_min=self.adj_min,
            adj_max=self.adj_max,
            inter_weight=self.inter_weight,
            seed=self.seed,
        )

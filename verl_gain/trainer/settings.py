"""``GainSettings``: the ``gain:`` config group of ``python -m verl_gain.main``, validated.

The group's YAML (``verl_gain/trainer/config/gain/default.yaml``) documents every field. ``GainSettings`` extends the
core's ``GainConfig`` (the window and update parameters, validated there) with the trainer's own fields, and is the
single place that checks them and says how to fix a bad value.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from verl_gain.core.angle_signal import ANGLE_SIGNALS, KEY_CHANGE
from verl_gain.core.controller import GainConfig, check_finite_number

ACC_SOURCES = ("acc", "threshold")
"""``acc``: the reward's ``acc`` extra info (verl sets it to the score when a reward returns a float);
``threshold``: a rollout counts as correct when its summed reward exceeds ``gain.acc_threshold``."""
STEP_ANGLE_SOURCES = ("none", "prompt", "prompt_response")
"""``none``: leave the angle term out of the update; ``prompt``: the ranking key of the step's prompts measured by the
current model; ``prompt_response``: the same with the response tokens counted as part of the question segment."""
DEFAULT_SIGMA_FRACTION = 0.1
"""The paper's 1000 ranks were 13% of GSM8K's 7,473 prompts (2.5% of DeepScaleR's 40k): a tenth of the order keeps
a step's batch on one region of it whatever the dataset size."""
DEFAULT_N_FRACTION = 0.01
"""Sized for the paper's 200-step runs: at accuracy 0.75, n tanh(2 x 0.25) = 0.46 n per step crosses the order in
1 / (0.46 x 0.01) = 216 steps. The start-up projection (and ``verl-gain plan``) says where a run really ends up."""
DEFAULT_ADJ_MAX_FRACTION = 2 * DEFAULT_N_FRACTION
"""The paper's ratio adj_max / n (1000 / 500)."""
DEFAULT_MAX_STEPS_WITHOUT_ANGLE = 3
"""Steps in a row the update may fall back to the pre-pass values before the run stops: one or two unmatched steps
can be a transient (a prompt truncated differently); three in a row means the prompts no longer tokenise as the
pre-pass saw them."""
ORDER_KEY = "key"
ORDER_REVERSED = "reversed"
ORDER_RANDOM = "random"
ORDER_NAMES = (ORDER_KEY, ORDER_REVERSED, ORDER_RANDOM)
"""``gain.order``: the ranking key's order (the method), its reverse (an anti-curriculum), a random permutation (the
window's mechanics without the angle order); or the path of a parquet file with an ``order_key`` per training row."""
ORDER_COLUMN = "order_key"
"""The column of a ``gain.order`` file: one value per training row (``position``), highest drawn first."""
BOOLEAN_FIELDS = ("enable", "allow_foreign_scores")
"""Switches: only what YAML and hydra parse as booleans (true/false, any case) is accepted, so that a typo or
``gain.enable=no`` (a string to hydra, truthy to Python) is refused instead of silently turning GAIN on."""
CAPTURE_KINDS = ("mlp_input", "final_norm", "input", "output")
"""Capture point kinds of ``verl_gain.scoring.capture.resolve_capture_point`` (resolved in the workers)."""


@dataclass
class GainSettings(GainConfig):
    """The ``gain:`` config group: the core's window and update parameters (``GainConfig``, whose defaults are the
    paper's absolute ranks) with defaults sized to the dataset, plus the trainer's own fields."""

    sigma_fraction: float | None = DEFAULT_SIGMA_FRACTION
    n_fraction: float | None = DEFAULT_N_FRACTION
    adj_max_fraction: float | None = DEFAULT_ADJ_MAX_FRACTION
    enable: bool = False
    scores_path: str | None = None
    allow_foreign_scores: bool = False
    capture_point: str = "mlp_input"
    acc_source: str = "acc"
    acc_threshold: float = 0.5
    step_angle: str = "prompt"
    prepass_batch_size: int = 256
    trace_path: str | None = None
    angle_signal: str = KEY_CHANGE
    max_steps_without_angle: int = DEFAULT_MAX_STEPS_WITHOUT_ANGLE
    order: str = ORDER_KEY

    def __post_init__(self) -> None:
        super().__post_init__()  # the window and update parameters, with GainConfig's messages
        for name in BOOLEAN_FIELDS:
            check_boolean(name, getattr(self, name))
        self.acc_threshold = check_finite_number(
            "acc_threshold", self.acc_threshold, "a rollout's summed reward above it counts as correct"
        )
        if self.acc_source not in ACC_SOURCES:
            raise ValueError(f"gain.acc_source must be one of {ACC_SOURCES}, got {self.acc_source!r}")
        if self.step_angle not in STEP_ANGLE_SOURCES:
            raise ValueError(f"gain.step_angle must be one of {STEP_ANGLE_SOURCES}, got {self.step_angle!r}")
        if not isinstance(self.prepass_batch_size, int) or self.prepass_batch_size < 1:
            raise ValueError(
                f"gain.prepass_batch_size must be a positive integer (prompts per pre-pass call), "
                f"got {self.prepass_batch_size!r}"
            )
        if self.angle_signal not in ANGLE_SIGNALS:
            raise ValueError(f"gain.angle_signal must be one of {ANGLE_SIGNALS}, got {self.angle_signal!r}")
        steps = self.max_steps_without_angle
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(
                f"gain.max_steps_without_angle must be an integer >= 0 (steps in a row without an angle measurement "
                f"before the run stops; default {DEFAULT_MAX_STEPS_WITHOUT_ANGLE}), got {steps!r}"
            )
        if self.order not in ORDER_NAMES and not (str(self.order).endswith(".parquet") and Path(self.order).is_file()):
            raise ValueError(
                f"gain.order must be one of {ORDER_NAMES} or an existing .parquet file with position and "
                f"{ORDER_COLUMN} columns, got {self.order!r}"
            )
        kind, _, arg = self.capture_point.partition(":") if isinstance(self.capture_point, str) else (None, "", "")
        layer_ok = kind != "mlp_input" or not arg or arg.lstrip("-").isdigit()
        path_ok = kind not in ("input", "output") or bool(arg)
        if kind not in CAPTURE_KINDS or not layer_ok or not path_ok or (kind == "final_norm" and arg):
            raise ValueError(
                "gain.capture_point must be mlp_input, final_norm, mlp_input:<layer index>, input:<module path> or "
                f"output:<module path>, got {self.capture_point!r}"
            )
        if self.trace_path is not None:
            check_writable_file("gain.trace_path", self.trace_path)

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
        """The core window and update parameters alone (what the controller takes and saves)."""
        return GainConfig(**{f.name: getattr(self, f.name) for f in fields(GainConfig)})


def check_boolean(name: str, value: Any) -> bool:
    """``value`` of the switch ``gain.<name>`` if it is a boolean; else a ``ValueError`` that says what to write."""
    if not isinstance(value, bool):
        raise ValueError(f"gain.{name} must be true or false, got {value!r}: write gain.{name}=true or false")
    return value


def check_writable_file(name: str, path: str) -> None:
    """Refuse, before any worker starts, a file path the run could only fail to write at step 1: a directory, or a
    parent that is a file or that this user cannot create or write."""
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{name}={path} is a directory: give a file path (e.g. {target / 'gain_trace.jsonl'})")
    parent = target.parent
    while not parent.exists():  # the run creates missing folders: check the nearest one that exists
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{name}={path}: {parent} is a file, not a folder; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{name}={path}: {parent} is not writable by this user; choose a writable path")

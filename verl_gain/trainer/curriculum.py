"""The trainer side of the GAIN curriculum, shared by verl's V1 and legacy trainers (no verl import).

A finished GRPO step holds n rollouts per prompt, possibly reordered (sequence balancing) and padded (V1 adds
padding rows to reach a multiple of the data-parallel size). ``summarize_step`` reduces it to what the window update
needs: the step accuracy (mean over prompts of the fraction of correct rollouts) and the step angle (mean over prompts
of their angle statistic). ``TrainerCurriculum`` owns the controller and the sampler, applies the update, produces the
``gain/`` metrics, writes a per-step trace (for reports and plots) and saves / restores its state next to verl's
checkpoints (``global_step_k`` folders under ``trainer.default_local_dir``, or ``trainer.resume_from_path``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from verl_gain.core.controller import GainController
from verl_gain.core.sampler import GainSampler
from verl_gain.trainer.settings import GainSettings

STATE_FILE = "gain_state.pt"
"""Curriculum state saved in each ``global_step_k`` folder (verl skips restoring ``data.pt`` at epoch boundaries)."""
TRACE_FILE = "gain_trace.jsonl"
"""One JSON line per training step, next to the checkpoints unless ``gain.trace_path`` says otherwise."""
METRIC_PREFIX = "gain/"
POSITION_KEY = "gain_position"
"""``extra_info`` key holding a row's position in the training set (after verl's length filter): verl drops the
top-level ``index`` on the way to the reward and the trainer, so ``GainRLHFDataset`` puts it here."""


@dataclass
class StepSummary:
    """What one finished step tells the window update.

    Attributes:
        acc: mean over prompts of each prompt's fraction of correct rollouts, in [0, 1].
        angle: mean over prompts of their angle statistic, or None when no angle was measured.
        positions: dataset positions of the step's prompts, in first-seen order.
        prompt_acc: per prompt (same order), the fraction of correct rollouts.
        num_rollouts: rollouts counted (padding rows excluded).
    """

    acc: float
    angle: float | None
    positions: list[int] = field(default_factory=list)
    prompt_acc: list[float] = field(default_factory=list)
    num_rollouts: int = 0


def correctness_from_rewards(
    settings: GainSettings, acc: Sequence[float] | np.ndarray | None, scores: np.ndarray
) -> np.ndarray:
    """Per-rollout correctness in [0, 1] from the reward.

    Args:
        settings: ``gain.acc_source`` and ``gain.acc_threshold``.
        acc: ``[R]`` the reward's ``acc`` extra info, or None when the reward gives none.
        scores: ``[R]`` the summed reward of each rollout.

    Returns:
        ``[R]`` float64 correctness.
    """
    if settings.acc_source == "threshold":
        return (np.asarray(scores, dtype=np.float64) > settings.acc_threshold).astype(np.float64)
    if acc is None:
        raise ValueError(
            "gain.acc_source=acc needs the reward's `acc` extra info, which this reward does not return: "
            "return {'score': ..., 'acc': ...} from the reward function, or set gain.acc_source=threshold"
        )
    values = np.asarray([float(a) for a in acc], dtype=np.float64)
    bad = values[~np.isfinite(values) | (values < 0) | (values > 1)]
    if bad.size:
        raise ValueError(
            f"the reward's `acc` must lie in [0, 1] (got e.g. {bad[0]!r}): verl copies a float reward into `acc`, "
            "so a reward on another scale needs gain.acc_source=threshold with gain.acc_threshold set, or a reward "
            "that returns {'score': ..., 'acc': 0 or 1}"
        )
    return values


def summarize_step(
    uids: Sequence[str],
    positions: Sequence[int],
    correct: np.ndarray,
    angles: np.ndarray | None = None,
    is_padding: np.ndarray | None = None,
) -> StepSummary:
    """Group a step's rollouts by prompt and average.

    Args:
        uids: ``[R]`` prompt group id of each rollout (verl's ``uid``; the n rollouts of a prompt share it).
        positions: ``[R]`` dataset position of each rollout's prompt.
        correct: ``[R]`` correctness in [0, 1].
        angles: ``[R]`` angle statistic of each rollout (NaN where none was measured), or None.
        is_padding: ``[R]`` True for padding rows, which are ignored.

    Returns:
        The step's summary; accuracy and angle weight every prompt equally.
    """
    count = len(uids)
    keep = np.ones(count, dtype=bool) if is_padding is None else ~np.asarray(is_padding, dtype=bool)
    groups: dict[str, list[int]] = {}
    for row in np.flatnonzero(keep):
        groups.setdefault(str(uids[row]), []).append(int(row))
    if not groups:
        raise ValueError("the step holds no rollouts (only padding rows): nothing to update the window from")
    correct = np.asarray(correct, dtype=np.float64)
    prompt_acc, prompt_angle, prompt_pos = [], [], []
    for rows in groups.values():
        prompt_acc.append(float(correct[rows].mean()))
        prompt_pos.append(int(positions[rows[0]]))
        if angles is not None:
            measured = np.asarray(angles, dtype=np.float64)[rows]
            measured = measured[np.isfinite(measured)]
            if measured.size:
                prompt_angle.append(float(measured.mean()))
    angle = float(np.mean(prompt_angle)) if prompt_angle else None
    return StepSummary(
        acc=float(np.mean(prompt_acc)),
        angle=angle,
        positions=prompt_pos,
        prompt_acc=prompt_acc,
        num_rollouts=int(keep.sum()),
    )


class TrainerCurriculum:
    """The GAIN curriculum as a verl trainer uses it.

    Built before the scores exist (the sampler must exist when verl builds its dataloader); ``attach_scores`` creates
    the controller once the pre-pass or the scores file has produced one score per training row.

    Args:
        settings: the ``gain`` config group.
        num_samples: training rows (after verl's length filter).
        batch_size: prompts per step (``data.train_batch_size``).
        trace_path: where the per-step trace goes (None: no trace).
    """

    def __init__(self, settings: GainSettings, num_samples: int, batch_size: int, trace_path: str | None = None):
        self.settings = settings
        self.sampler = GainSampler(None, batch_size, num_samples=num_samples)
        self.controller: GainController | None = None
        self.trace_path = trace_path

    def attach_scores(self, scores: np.ndarray) -> GainController:
        """Create the controller over ``scores`` (one per training row, higher = drawn earlier)."""
        self.controller = GainController(scores, self.settings.window())
        self.sampler.attach(self.controller)
        return self.controller

    def update(self, summary: StepSummary, step: int) -> dict[str, float]:
        """Move the window after step ``step`` and return the ``gain/`` metrics to log for it."""
        controller = self._require_controller()
        angle = summary.angle if self.settings.step_angle != "none" else None
        mu_before = controller.mu
        delta = controller.update(summary.acc, angle)
        lo, hi = controller.window_range()
        metrics = {
            f"{METRIC_PREFIX}mu": controller.mu,
            f"{METRIC_PREFIX}mu_before": mu_before,
            f"{METRIC_PREFIX}delta": delta,
            f"{METRIC_PREFIX}step_acc": summary.acc,
            f"{METRIC_PREFIX}step_angle": float("nan") if angle is None else angle,
            f"{METRIC_PREFIX}sigma": controller.sigma,
            f"{METRIC_PREFIX}window_lo": lo,
            f"{METRIC_PREFIX}window_hi": hi,
            f"{METRIC_PREFIX}coverage": controller.coverage(),
            f"{METRIC_PREFIX}num_prompts": float(len(summary.positions)),
        }
        self._append_trace(summary, step, metrics)
        return metrics

    def finish_step(
        self,
        step: int,
        uids: Sequence[Any],
        extra_info: Sequence[Any],
        acc: Sequence[float] | None,
        scores: np.ndarray,
        angles: np.ndarray | None,
        is_padding: np.ndarray | None,
    ) -> dict[str, float]:
        """Move the window after verl's step ``step`` from its rollouts; returns the ``gain/`` metrics.

        Args:
            step: verl's ``global_steps`` of the step.
            uids: ``[R]`` verl's ``uid`` of each rollout (the n rollouts of a prompt share it).
            extra_info: ``[R]`` each rollout's ``extra_info`` (``GainRLHFDataset`` put the dataset position in it).
            acc: ``[R]`` the reward's ``acc`` extra info, or None when the reward gives none.
            scores: ``[R]`` the summed reward of each rollout.
            angles: ``[R]`` the step angle of each rollout (NaN where none was measured), or None.
            is_padding: ``[R]`` True for V1's padding rows, or None.
        """
        correct = correctness_from_rewards(self.settings, acc, scores)
        positions = [int((info or {}).get(POSITION_KEY, -1)) for info in extra_info]
        return self.update(summarize_step(uids, positions, correct, angles, is_padding), step)

    # ----------------------------------------------------------------- state
    def save(self, step_folder: str | os.PathLike) -> Path:
        """Write the curriculum state into a checkpoint's ``global_step_k`` folder."""
        path = Path(step_folder) / STATE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self._require_controller().state_dict(), path)
        return path

    def load(self, step_folder: str | os.PathLike, step: int) -> bool:
        """Restore the state saved in ``step_folder`` (if any) and cut the trace back to ``step``."""
        path = Path(step_folder) / STATE_FILE
        if not path.is_file():
            return False
        self._require_controller().load_state_dict(torch.load(path, weights_only=True))
        self._truncate_trace(step)
        return True

    def save_with_checkpoint(self, config: Any, step: int) -> Path:
        """Save into the ``global_step_<step>`` folder verl is about to write."""
        return self.save(os.path.join(config.trainer.default_local_dir, f"global_step_{step}"))

    def restore_with_checkpoint(self, config: Any, step: int) -> None:
        """After verl restored step ``step`` (0: nothing restored), restore the curriculum from the same folder."""
        if step <= 0:
            return
        if config.trainer.resume_mode == "resume_path" and config.trainer.resume_from_path:
            folder = str(config.trainer.resume_from_path)
        else:
            folder = os.path.join(config.trainer.default_local_dir, f"global_step_{step}")
        state = "restored" if self.load(folder, step) else "not found (data.pt state used)"
        print(f"[verl-gain] GAIN curriculum state at step {step}: {state}", flush=True)

    # ----------------------------------------------------------------- trace
    def _append_trace(self, summary: StepSummary, step: int, metrics: dict[str, float]) -> None:
        if not self.trace_path:
            return
        record = {
            "step": step,
            **{k.removeprefix(METRIC_PREFIX): _json_float(v) for k, v in metrics.items()},
            "positions": summary.positions,
            "prompt_acc": summary.prompt_acc,
        }
        Path(self.trace_path).parent.mkdir(parents=True, exist_ok=True)
        with open(self.trace_path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def _truncate_trace(self, step: int) -> None:
        """Drop trace lines of steps after ``step`` (written by a run that stopped before its next checkpoint)."""
        if not self.trace_path or not os.path.exists(self.trace_path):
            return
        with open(self.trace_path) as f:
            kept = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
        with open(self.trace_path, "w") as f:
            f.writelines(kept)

    def _require_controller(self) -> GainController:
        if self.controller is None:
            raise RuntimeError("the GAIN curriculum has no scores yet: attach_scores() runs before training starts")
        return self.controller


def build_curriculum(config: Any, num_samples: int) -> TrainerCurriculum:
    """The curriculum of a verl run: ``config.gain`` settings, ``data.train_batch_size``, the trace file next to the
    checkpoints (``trainer.default_local_dir``) unless ``gain.trace_path`` is set."""
    settings = GainSettings.from_config(config.gain)
    trace = settings.trace_path or os.path.join(config.trainer.default_local_dir, TRACE_FILE)
    return TrainerCurriculum(settings, num_samples, int(config.data.train_batch_size), trace_path=trace)


def read_trace(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The per-step records a run wrote (see ``TRACE_FILE``)."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _json_float(value: float) -> float | None:
    return None if isinstance(value, float) and not math.isfinite(value) else value

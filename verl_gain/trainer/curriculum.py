"""The trainer side of the GAIN curriculum, shared by verl's V1 and legacy trainers (no verl import).

A finished GRPO step holds n rollouts per prompt, possibly reordered (sequence balancing) and padded (V1 adds
padding rows to reach a multiple of the data-parallel size). ``summarize_step`` reduces it to what the window update
needs: the step accuracy (mean over prompts of the fraction of correct rollouts) and, per prompt, the angle
statistics the current model measured on it (``STAT_FIELDS``, averaged over the prompt's rollouts).
``TrainerCurriculum`` turns those into the angle signal (``verl_gain.core.angle_signal``; a step without a measurement
falls back to the pre-pass values of its prompts, and too many such steps in a row stop the run), applies the update,
produces the ``gain/`` metrics, writes a per-step trace (for reports and plots) and saves / restores its state next
to verl's checkpoints (``global_step_k`` folders under ``trainer.default_local_dir``, or ``trainer.resume_from_path``).
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

from verl_gain.core.angle_signal import MEAN_COSINE, AngleSignals, KeyDistribution, angle_signals
from verl_gain.core.angles import STAT_FIELDS, TermMeans, ranking_keys
from verl_gain.core.controller import GainController
from verl_gain.core.planner import Projection, constant_angle, prepass_angle, project
from verl_gain.core.sampler import GainSampler
from verl_gain.trainer.reward_shape import correctness_from_rewards
from verl_gain.trainer.settings import ORDER_COLUMN, ORDER_KEY, ORDER_RANDOM, ORDER_REVERSED, GainSettings

STATE_FILE = "gain_state.pt"
"""Curriculum state saved in each ``global_step_k`` folder (verl skips restoring ``data.pt`` at epoch boundaries)."""
SCORES_FILE = "gain_scores.parquet"
"""The pre-pass result, written in ``trainer.default_local_dir`` (``trainer/prepass.py``) and reused on resume."""
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
        positions: dataset positions of the step's prompts, in first-seen order.
        prompt_acc: per prompt (same order), the fraction of correct rollouts.
        prompt_stats: ``[P, len(STAT_FIELDS)]`` per prompt, its rollouts' mean angle statistics under the current
            model (NaN rows where none was measured), or None when the step measured none.
        num_rollouts: rollouts counted (padding rows excluded).
    """

    acc: float
    positions: list[int] = field(default_factory=list)
    prompt_acc: list[float] = field(default_factory=list)
    prompt_stats: np.ndarray | None = None
    num_rollouts: int = 0

    @property
    def measured(self) -> np.ndarray:
        """``[P]`` bool: the prompts with an angle measurement."""
        if self.prompt_stats is None:
            return np.zeros(len(self.positions), dtype=bool)
        return np.isfinite(self.prompt_stats).all(axis=1)


@dataclass(frozen=True)
class PrepassScores:
    """What the pre-pass (or a scores file) says about every training row, for the order and the angle signal.

    Attributes:
        keys: ``[N]`` ranking keys (undefined terms imputed).
        term_means: the training set's mean C_intra and C_inter (what an undefined term of a step's prompt becomes).
        mean_cosine: ``[N]`` each prompt's mean cosine, or None (scores files written before the column existed).
    """

    keys: np.ndarray
    term_means: TermMeans
    mean_cosine: np.ndarray | None = None


def order_keys(order: str, keys: np.ndarray, seed: int) -> np.ndarray:
    """``[N]`` values the window's order sorts by (highest first): the ranking keys themselves (``key``), their
    negation (``reversed``: the lowest concentration first), a permutation from ``seed`` (``random``: the window's
    mechanics without the angle order), or a parquet file's ``order_key`` by ``position`` (e.g. an accuracy-based
    order). The angle signal always uses the ranking keys."""
    if order == ORDER_KEY:
        return keys
    if order == ORDER_REVERSED:
        return -keys
    if order == ORDER_RANDOM:
        return np.random.default_rng(seed).permutation(len(keys)).astype(np.float64)
    import pandas as pd

    table = pd.read_parquet(order)
    if not {"position", ORDER_COLUMN} <= set(table.columns):
        raise ValueError(f"gain.order file {order} needs columns position and {ORDER_COLUMN}")
    values = pd.Series(table[ORDER_COLUMN].to_numpy(np.float64), index=table["position"].to_numpy(np.int64))
    missing = np.setdiff1d(np.arange(len(keys)), values.index.to_numpy())
    if missing.size or len(values) != len(keys):
        raise ValueError(
            f"gain.order file {order} has {len(values)} rows for {len(keys)} training rows (missing positions "
            f"{missing[:5].tolist()}): write one order_key per training row"
        )
    return values.loc[np.arange(len(keys))].to_numpy()


class AngleSignalLost(RuntimeError):
    """Too many steps in a row without an angle measurement: the signal the update relies on is gone."""


def summarize_step(
    uids: Sequence[str],
    positions: Sequence[int],
    correct: np.ndarray,
    stats: np.ndarray | None = None,
    is_padding: np.ndarray | None = None,
) -> StepSummary:
    """Group a step's rollouts by prompt and average.

    Args:
        uids: ``[R]`` prompt group id of each rollout (verl's ``uid``; the n rollouts of a prompt share it).
        positions: ``[R]`` dataset position of each rollout's prompt.
        correct: ``[R]`` correctness in [0, 1].
        stats: ``[R, len(STAT_FIELDS)]`` angle statistics of each rollout (NaN rows where none was measured), or None.
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
    rows_stats = None if stats is None else np.asarray(stats, dtype=np.float64).reshape(count, len(STAT_FIELDS))
    prompt_acc, prompt_pos, prompt_stats = [], [], []
    for rows in groups.values():
        prompt_acc.append(float(correct[rows].mean()))
        prompt_pos.append(int(positions[rows[0]]))
        if rows_stats is not None:
            measured = rows_stats[rows][np.isfinite(rows_stats[rows]).all(axis=1)]  # [r, F]
            prompt_stats.append(measured.mean(0) if len(measured) else np.full(len(STAT_FIELDS), np.nan))
    return StepSummary(
        acc=float(np.mean(prompt_acc)),
        positions=prompt_pos,
        prompt_acc=prompt_acc,
        prompt_stats=np.stack(prompt_stats) if prompt_stats else None,
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
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.sampler = GainSampler(None, batch_size, num_samples=num_samples)
        self.controller: GainController | None = None
        self.prepass: PrepassScores | None = None
        self.key_distribution: KeyDistribution | None = None
        self.trace_path = trace_path
        self.steps_without_angle = 0  # consecutive
        self.last_signal: float | None = None
        self.reported_end = False

    def attach_scores(self, prepass: PrepassScores) -> GainController:
        """Create the controller over the pre-pass keys (one per training row, higher = drawn earlier)."""
        self.prepass = prepass
        self.key_distribution = KeyDistribution.of(prepass.keys)
        order = order_keys(self.settings.order, prepass.keys, self.settings.seed)
        self.controller = GainController(order, self.settings.window())
        self.sampler.attach(self.controller)
        return self.controller

    # ------------------------------------------------------------ projection
    def projection(self, total_steps: int) -> Projection:
        """Where the window will be at flat accuracies (``verl_gain.core.planner.project``): before the scores exist
        with the angle signal taken as 0 (its centre; the authors' cosine as its largest, 1), after with what the
        pre-pass keys give the prompts drawn."""
        window = self.settings.window()
        if self.prepass is None:
            order = np.arange(self.num_samples, 0, -1, dtype=np.float64)  # any order: only N matters
            assumed = 1.0 if self.settings.angle_signal == MEAN_COSINE else 0.0
            angle = constant_angle(None if self.settings.step_angle == "none" else assumed)
            return project(order, window, self.batch_size, total_steps, angle, f"angle signal taken as {assumed:g}")
        angle = (
            constant_angle(None)
            if self.settings.step_angle == "none"
            else prepass_angle(self.settings.angle_signal, self.prepass.keys, self.prepass.mean_cosine)
        )
        order = order_keys(self.settings.order, self.prepass.keys, self.settings.seed)
        return project(order, window, self.batch_size, total_steps, angle, "angle signal as the pre-pass keys give it")

    def print_projection(self, total_steps: int) -> Projection:
        """Print the projection (one line, then one per warning)."""
        projection = self.projection(total_steps)
        for i, line in enumerate(projection.lines()):
            prefix = "[verl-gain] GAIN" if i == 0 else "[verl-gain] WARNING: GAIN"
            print(f"{prefix} {line}", flush=True)
        return projection

    # ------------------------------------------------------------------ step
    def angle_signal(self, summary: StepSummary) -> tuple[AngleSignals | None, bool]:
        """The step's angle signals and whether they fell back to the pre-pass values of its prompts.

        Prompts the current model measured (their rollouts matched the pre-pass tokenisation) count; when none did,
        the pre-pass values of the step's prompts stand in (``key_change`` is then 0), with a warning, and after
        ``gain.max_steps_without_angle`` such steps in a row the run stops: the signal is gone.
        """
        if self.settings.step_angle == "none":
            return None, False
        prepass = self._require_prepass()
        positions = np.asarray(summary.positions, dtype=np.int64)
        measured = summary.measured
        if measured.any():
            self.steps_without_angle = 0
            stats = summary.prompt_stats[measured]  # [P', F]
            field = {name: stats[:, i] for i, name in enumerate(STAT_FIELDS)}
            key_now = ranking_keys(
                field["intra"],
                field["inter"],
                field["n_fixed"],
                field["n_question"],
                self.settings.inter_weight,
                prepass.term_means,
            )
            signals = angle_signals(
                key_now, prepass.keys[positions[measured]], field["mean_cosine"], self.key_distribution
            )
            return signals, False
        self.steps_without_angle += 1
        limit = self.settings.max_steps_without_angle
        if self.steps_without_angle > limit:
            raise AngleSignalLost(
                f"GAIN: no rollout of the last {self.steps_without_angle} steps matched the prompt the pre-pass "
                "tokenised (likely the chat template renders differently at run time, e.g. a date in the system "
                "prompt, or a custom agent loop rewrites the prompt), so the angle signal is lost; fix the "
                "tokenisation, set gain.step_angle=none to run on accuracy alone, or raise "
                f"gain.max_steps_without_angle (now {limit})"
            )
        print(
            f"[verl-gain] WARNING: GAIN step without an angle measurement ({self.steps_without_angle} in a row, "
            f"the run stops after {limit}): the pre-pass values of its prompts stand in",
            flush=True,
        )
        keys = prepass.keys[positions]
        cosines = prepass.mean_cosine[positions] if prepass.mean_cosine is not None else None
        if cosines is None:  # files written before the column existed: the last measured cosine, if any
            cosines = np.full(len(positions), np.nan if self.last_signal is None else self.last_signal)
        return angle_signals(keys, keys, cosines, self.key_distribution), True

    def update(self, summary: StepSummary, step: int) -> dict[str, float]:
        """Move the window after step ``step`` and return the ``gain/`` metrics to log for it."""
        controller = self._require_controller()
        signals, fallback = self.angle_signal(summary)
        signal = None if signals is None else signals.get(self.settings.angle_signal)
        if signal is not None and not math.isfinite(signal):
            signal = None  # a cosine fallback with nothing measured yet: no angle term this step
        if signal is not None and self.settings.angle_signal == MEAN_COSINE:
            self.last_signal = signal
        mu_before = controller.mu
        move = controller.update(summary.acc, signal)
        lo, hi = controller.window_range()
        measured = summary.measured
        key_now = float("nan")
        if measured.any():
            key_now = float(np.nanmean(summary.prompt_stats[measured, STAT_FIELDS.index("key")]))
        metrics = {
            f"{METRIC_PREFIX}mu": controller.mu,
            f"{METRIC_PREFIX}mu_before": mu_before,
            f"{METRIC_PREFIX}delta": move.delta,
            f"{METRIC_PREFIX}delta_acc": move.acc_term,
            f"{METRIC_PREFIX}delta_angle": move.angle_term,
            f"{METRIC_PREFIX}step_acc": summary.acc,
            f"{METRIC_PREFIX}step_angle": key_now,
            f"{METRIC_PREFIX}angle_signal": float("nan") if signal is None else signal,
            f"{METRIC_PREFIX}angle_measured": float(measured.mean()) if len(measured) else 0.0,
            f"{METRIC_PREFIX}angle_fallback": float(fallback),
            f"{METRIC_PREFIX}sigma": controller.sigma,
            f"{METRIC_PREFIX}window_lo": lo,
            f"{METRIC_PREFIX}window_hi": hi,
            f"{METRIC_PREFIX}at_end": float(controller.at_end),
            f"{METRIC_PREFIX}coverage": controller.coverage(),
            f"{METRIC_PREFIX}num_prompts": float(len(summary.positions)),
        }
        if signals is not None:  # every scale, whichever drives the window: the comparison docs/method.md reports
            for name in ("standardized_key", "key_change", "mean_cosine"):
                metrics[f"{METRIC_PREFIX}signal/{name}"] = signals.get(name)
        if controller.at_end and not self.reported_end:
            self.reported_end = True
            after = "widens towards the whole order" if self.settings.at_end == "widen" else "holds on the last ranks"
            print(
                f"[verl-gain] GAIN window reached the end of the order at step {step} (mu = {controller.mu:.0f} of "
                f"{controller.last_rank}); from now on it {after} (gain.at_end={self.settings.at_end})",
                flush=True,
            )
        self._append_trace(summary, step, metrics)
        return metrics

    def finish_step(
        self,
        step: int,
        uids: Sequence[Any],
        extra_info: Sequence[Any],
        acc: Sequence[Any] | None,
        scores: np.ndarray,
        stats: np.ndarray | None,
        is_padding: np.ndarray | None,
        data_sources: Sequence[Any] | None = None,
    ) -> dict[str, float]:
        """Move the window after verl's step ``step`` from its rollouts; returns the ``gain/`` metrics.

        Args:
            step: verl's ``global_steps`` of the step.
            uids: ``[R]`` verl's ``uid`` of each rollout (the n rollouts of a prompt share it).
            extra_info: ``[R]`` each rollout's ``extra_info`` (``GainRLHFDataset`` put the dataset position in it).
            acc: ``[R]`` the reward's ``acc`` of each rollout (``reward_shape.rollout_acc``; None entries where it
                gave none), or None.
            scores: ``[R]`` the summed reward of each rollout.
            stats: ``[R, len(STAT_FIELDS)]`` the angle statistics measured on each rollout (NaN rows where none
                was), or None.
            is_padding: ``[R]`` True for V1's padding rows, or None.
            data_sources: ``[R]`` each rollout's ``data_source`` (named when the reward's shape is refused).
        """
        keep = slice(None) if is_padding is None else ~np.asarray(is_padding, dtype=bool)  # padding has no reward
        correct = np.zeros(len(scores))
        correct[keep] = correctness_from_rewards(
            self.settings,
            None if acc is None else np.asarray(list(acc), dtype=object)[keep],
            np.asarray(scores)[keep],
            None if data_sources is None else np.asarray(list(data_sources), dtype=object)[keep],
        )
        positions = [int((info or {}).get(POSITION_KEY, -1)) for info in extra_info]
        return self.update(summarize_step(uids, positions, correct, stats, is_padding), step)

    def hold_step(self, step: int) -> dict[str, float]:
        """Step ``step`` updated no actor (verl's critic warm-up, ``trainer.critic_warmup``): the window holds still
        (no accuracy or angle moves it: the policy did not learn); returns the ``gain/`` metrics to log for it."""
        controller = self._require_controller()
        lo, hi = controller.window_range()
        metrics = {
            f"{METRIC_PREFIX}mu": controller.mu,
            f"{METRIC_PREFIX}mu_before": controller.mu,
            f"{METRIC_PREFIX}delta": 0.0,
            f"{METRIC_PREFIX}held": 1.0,
            f"{METRIC_PREFIX}sigma": controller.sigma,
            f"{METRIC_PREFIX}window_lo": lo,
            f"{METRIC_PREFIX}window_hi": hi,
            f"{METRIC_PREFIX}coverage": controller.coverage(),
        }
        self._append_trace(StepSummary(acc=float("nan")), step, metrics)
        return metrics

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
        controller = self._require_controller()
        controller.load_state_dict(torch.load(path, weights_only=True))
        self.reported_end = controller.at_end  # a resumed run does not announce the end twice
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

    def _require_prepass(self) -> PrepassScores:
        if self.prepass is None:
            raise RuntimeError("the GAIN curriculum has no scores yet: attach_scores() runs before training starts")
        return self.prepass


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

"""The step accuracy GAIN reads from verl's rewards, whatever shape the reward returns, and the shape check that
refuses, before the pre-pass, a reward the accuracy cannot be read from.

verl's reward manager (``naive``, the default) turns what the reward function returns into a score and "extra info":

| reward returns | score | extra info (``acc`` is what GAIN reads) |
|---|---|---|
| a float ``s`` | ``s`` | ``{"acc": s}`` (the float copied) |
| ``{"score": s, "acc": a, ...}`` | ``s`` | every key: ``acc = a`` |
| ``{"score": s, ...}`` without ``acc`` | ``s`` | every key, no ``acc`` |

The V1 trainer keeps a rollout's extra info in ``extra_fields["reward_extra_info"]``; with a colocated reward model
(no reward-loop workers) it writes the extra keys as top-level TransferQueue fields instead; the legacy trainer
keeps them as ``non_tensor_batch`` columns. ``rollout_acc`` reads ``acc`` from wherever it is.

``acc`` is a rollout's correctness in [0, 1]. A partial credit (say 0.5 for half the unit tests passed) counts as
that fraction of a correct rollout: a prompt's accuracy is the mean ``acc`` of its n rollouts, the step accuracy the
mean over the step's prompts, and the window moves by ``tanh(alpha (acc - beta))``, so a step of half-credit
rollouts moves it like a step where half the rollouts are right. ``gain.acc_source=threshold`` instead counts a
rollout correct when its score exceeds ``gain.acc_threshold`` (rewards on another scale, or without ``acc``).
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from verl_gain.trainer.settings import GainSettings

ACC_KEY = "acc"
"""The extra-info key GAIN reads the accuracy from (verl's naive reward manager writes it for float rewards)."""
REWARD_EXTRA_INFO = "reward_extra_info"
"""Where the V1 agent loop keeps a rollout's extra info inside ``extra_fields``."""
SHAPE_CHECKED_MANAGERS = ("naive",)
"""Reward managers whose translation of a reward function's result is the table above (checked at start-up)."""
THRESHOLD_FIX = "or set gain.acc_source=threshold with gain.acc_threshold=<the score above which a rollout is correct>"


class RewardShapeError(ValueError):
    """A reward GAIN cannot read an accuracy from (one line: what to set)."""


def rollout_acc(reward_extra_infos: Sequence[Any], top_level_acc: Sequence[Any] | None = None) -> list[Any]:
    """``[R]`` each rollout's ``acc`` (None where the reward gave none): from its extra info, else from the top-level
    ``acc`` field a colocated reward model writes."""
    values = []
    for i, info in enumerate(reward_extra_infos):
        info = info if isinstance(info, dict) else {}
        if ACC_KEY in info:
            values.append(info[ACC_KEY])
        elif top_level_acc is not None:
            values.append(top_level_acc[i])
        else:
            values.append(None)
    return values


def _sources_where(data_sources: Sequence[Any] | None, rows: np.ndarray) -> str:
    if data_sources is None or not rows.size:
        return ""
    names = sorted({str(data_sources[i]) for i in rows})
    return f" (data_source {', '.join(names[:5])}{', ...' if len(names) > 5 else ''})"


def correctness_from_rewards(
    settings: GainSettings,
    acc: Sequence[Any] | None,
    scores: np.ndarray,
    data_sources: Sequence[Any] | None = None,
) -> np.ndarray:
    """Per-rollout correctness in [0, 1] from the reward.

    Args:
        settings: ``gain.acc_source`` and ``gain.acc_threshold``.
        acc: ``[R]`` each rollout's ``acc`` (``rollout_acc``; None entries where the reward gave none), or None.
        scores: ``[R]`` the summed reward of each rollout.
        data_sources: ``[R]`` each rollout's ``data_source``, to name the sources at fault.

    Returns:
        ``[R]`` float64 correctness.

    Raises:
        RewardShapeError: ``acc`` missing for some rollouts, not a number, or outside [0, 1].
    """
    if settings.acc_source == "threshold":
        return (np.asarray(scores, dtype=np.float64) > settings.acc_threshold).astype(np.float64)
    acc = [None] * len(scores) if acc is None else list(acc)
    missing = np.flatnonzero([a is None for a in acc])
    if missing.size:
        share = f"{missing.size} of {len(acc)} rollouts"
        raise RewardShapeError(
            f"gain.acc_source=acc needs the reward's `acc`, which {share} lack{_sources_where(data_sources, missing)}: "
            "return {'score': ..., 'acc': 0 or 1} (or a float in [0, 1]) from the reward for them, " + THRESHOLD_FIX
        )
    values = np.full(len(acc), np.nan)
    for i, value in enumerate(acc):
        try:
            values[i] = float(value)
        except (TypeError, ValueError):
            pass
    bad = np.flatnonzero(~np.isfinite(values) | (values < 0) | (values > 1))
    if bad.size:
        raise RewardShapeError(
            f"the reward's `acc` must be a number in [0, 1] (got e.g. {acc[bad[0]]!r}"
            f"{_sources_where(data_sources, bad)}): verl copies a float reward into `acc`, so a reward on another "
            "scale needs a dict {'score': ..., 'acc': 0 or 1}, " + THRESHOLD_FIX
        )
    return values


# ------------------------------------------------------------------------------------------- start-up shape check
def reward_function(config: Any) -> Callable[..., Any] | None:
    """The function verl's reward workers will call, or None when the start-up check cannot stand in for them (a
    reward model, a reward manager other than ``naive``)."""
    from verl_gain.trainer.compat import get_custom_reward_fn, get_default_compute_score

    reward = config.reward
    if (reward.get("reward_model") or {}).get("enable", False):
        return None
    manager = reward.get("reward_manager") or {}
    if manager.get("source", "register") != "register" or manager.get("name", "naive") not in SHAPE_CHECKED_MANAGERS:
        return None
    return get_custom_reward_fn(config) or get_default_compute_score(manager.get("name", "naive"))


def _call(function: Callable[..., Any], **kwargs: Any) -> Any:
    result = function(**kwargs)
    return asyncio.run(result) if inspect.isawaitable(result) else result


def probe_results(function: Callable[..., Any], rows: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """``{data_source: results}``: the reward of the first row of each data source, for its ground truth as the
    response and for an empty response (a right and a wrong answer, so a reward on another scale shows)."""
    results: dict[str, list[Any]] = {}
    for row in rows:
        source = str(row.get("data_source"))
        if source in results:
            continue
        truth = (row.get("reward_model") or {}).get("ground_truth")
        extra = row.get("extra_info")
        results[source] = [
            _call(function, data_source=source, solution_str=response, ground_truth=truth, extra_info=extra)
            for response in (str(truth), "")
        ]
    return results


def check_reward_shapes(results: dict[str, list[Any]], legacy: bool) -> None:
    """Refuse reward shapes the step accuracy cannot be read from (``probe_results`` of verl's naive manager).

    Raises:
        RewardShapeError: a dict without ``acc``; an accuracy outside [0, 1] (a float reward copied into ``acc``);
            on the legacy trainer, data sources whose rewards return different keys (verl's agent loop stacks every
            rollout's extra info by the first rollout's keys and fails on the others).
    """
    keys_by_source = {}
    for source, outcomes in results.items():
        for result in outcomes:
            extra = dict(result) if isinstance(result, dict) else {ACC_KEY: result}
            keys_by_source.setdefault(source, set()).update(extra)
            if ACC_KEY not in extra:
                raise RewardShapeError(
                    f"the reward for data_source {source} returns a dict without `acc` (keys {sorted(extra)}), so "
                    "the step accuracy GAIN moves the window by is undefined: add 'acc' (1 for a correct response, "
                    "0 otherwise; a partial credit in [0, 1] counts as that fraction of a correct rollout), "
                    + THRESHOLD_FIX
                )
            value = extra[ACC_KEY]
            number = float(value) if isinstance(value, (bool, int, float, np.number)) else math.nan
            if not (0.0 <= number <= 1.0):
                kind = "returns the float" if not isinstance(result, dict) else "returns `acc` ="
                raise RewardShapeError(
                    f"the reward for data_source {source} {kind} {value!r}, outside [0, 1] (verl copies a float "
                    "reward into `acc`): return {'score': ..., 'acc': 0 or 1}, " + THRESHOLD_FIX
                )
    if legacy and len({frozenset(keys) for keys in keys_by_source.values()}) > 1:
        shapes = "; ".join(f"{source}: {sorted(keys)}" for source, keys in sorted(keys_by_source.items()))
        raise RewardShapeError(
            f"the rewards of the data sources return different extra keys ({shapes}); verl's legacy trainer stacks "
            "every rollout's keys by the first rollout's and fails on the others: return the same dict keys from "
            "every data source (a float reward s as {'score': s, 'acc': s}), or use the V1 trainer"
        )

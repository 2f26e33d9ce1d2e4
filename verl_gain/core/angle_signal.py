"""The angle term's input: the step's angle concentration on a scale where ``tanh(alpha a)`` responds to the model.

The update's angle term is ``n tanh(alpha a)``. Fed with the ranking key itself (``intra + w inter``, about 1.3 on
SmolLM2 with a spread of 0.003 across steps), ``tanh(2 x 1.3) = 0.99`` on every step: a constant push that no
measurement moves. The authors' own signal, one mean cosine in [-1, 1], is still ~0.8 for an anisotropic model.
Three scales, all computed from what the step measured on the prompts it trained on (the current model, inside the
forward pass verl runs for the old log-probs) and from the pre-pass:

    standardized_key  a = (mean_p key_now(p) - mean_i key_pre(i)) / sd_i key_pre(i)
                      where the step's prompts sit in the pre-pass distribution of keys, as the current model sees
                      them: high at the high-concentration end of the order, 0 at an average prompt, negative at the
                      low end
    key_change        a = mean_p (key_now(p) - key_pre(p)) / sd_i key_pre(i)
                      how far training has moved the concentration of these very prompts since the pre-pass, in
                      units of the spread between prompts (0 at the first step)
    mean_cosine       a = mean_p cos_now(p), the mean cosine over all the prompt's counted tokens (the authors' scale;
                      with ``gain.step_angle=prompt_response`` the response tokens count too)

(p: the step's prompts, i: every training prompt; keys with undefined terms imputed, ``verl_gain.core.angles``).
docs/method.md, "The angle signal", has what each measured on the demo task and why the default is the default.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STANDARDIZED_KEY = "standardized_key"
KEY_CHANGE = "key_change"
MEAN_COSINE = "mean_cosine"
ANGLE_SIGNALS = (STANDARDIZED_KEY, KEY_CHANGE, MEAN_COSINE)


@dataclass(frozen=True)
class KeyDistribution:
    """Mean and standard deviation of the pre-pass ranking keys over the training set.

    Attributes:
        mean: mean key.
        sd: standard deviation of the keys (population); 0 when every prompt has the same key.
    """

    mean: float
    sd: float

    @classmethod
    def of(cls, keys: np.ndarray) -> KeyDistribution:
        keys = np.asarray(keys, dtype=np.float64)
        return cls(mean=float(keys.mean()), sd=float(keys.std()))

    def standardized(self, values: np.ndarray) -> np.ndarray:
        """``(values - mean) / sd``; 0 when the keys have no spread (the key then carries no order to place by)."""
        if self.sd <= 0:
            return np.zeros_like(np.asarray(values, dtype=np.float64))
        return (np.asarray(values, dtype=np.float64) - self.mean) / self.sd


@dataclass(frozen=True)
class AngleSignals:
    """Every scale of one step's angle measurement (the update uses one; all are logged, for comparison).

    Attributes:
        standardized_key, key_change, mean_cosine: see the module docstring.
    """

    standardized_key: float
    key_change: float
    mean_cosine: float

    def get(self, name: str) -> float:
        if name not in ANGLE_SIGNALS:
            raise ValueError(f"gain.angle_signal must be one of {', '.join(ANGLE_SIGNALS)}, got {name!r}")
        return float(getattr(self, name))


def angle_signals(
    key_now: np.ndarray, key_pre: np.ndarray, cosine_now: np.ndarray, keys: KeyDistribution
) -> AngleSignals:
    """The step's angle signals from per-prompt measurements.

    Args:
        key_now: ``[P]`` each step prompt's ranking key under the current model (mean over its rollouts).
        key_pre: ``[P]`` the same prompts' pre-pass keys.
        cosine_now: ``[P]`` each step prompt's mean cosine under the current model.
        keys: the pre-pass key distribution of the whole training set.
    """
    key_now = np.asarray(key_now, dtype=np.float64)
    if key_now.size == 0:
        raise ValueError("no prompt of the step has an angle measurement")
    return AngleSignals(
        standardized_key=float(keys.standardized(key_now.mean())),
        key_change=float(np.mean(keys.standardized(key_now) - keys.standardized(key_pre))),
        mean_cosine=float(np.mean(cosine_now)),
    )

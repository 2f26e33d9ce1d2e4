"""The GAIN curriculum: a Gaussian sampling window over the angle-concentration order, moved by rollout accuracy.

Method (arXiv 2506.02281, section 3.2; docs/method.md, "The window" and "The update"):

    order:   positions sorted by the ranking key, highest first (rank 0 = highest angle concentration)
    weights: p_r ∝ exp(-(r - mu)^2 / (2 sigma^2)) over ranks r = 0..N-1
    draw:    ``batch_size`` distinct ranks from p (successive sampling without replacement)
    update:  delta = n tanh(alpha (acc - beta)) + n tanh(alpha a);  delta = clamp(delta, adj_min, adj_max)
             mu <- clamp(mu + delta, 0, N - 1)

``a`` is the step's angle signal on a scale where the tanh responds (``verl_gain.core.angle_signal``). The window
stays on the order: once mu reaches the last rank, what would have moved it further goes into its width
(``at_end="widen"``, the default: the window keeps its shape against the boundary and spreads towards the whole order,
so batches never collapse onto a few prompts) or nowhere (``"hold"``: a half-Gaussian of width sigma on the
lowest-concentration ranks). docs/method.md, "The window at the end of the order", gives the evidence for the default.

Sampling without replacement is successive sampling (each draw from p renormalised over the ranks not yet drawn),
done exactly in one of two ways: for a wide window, iid draws from p with repeats dropped (the first occurrences of
iid draws are successive samples); otherwise, or to finish a batch, the Gumbel-top-k identity (Vieira 2014; Kool et
al. 2019): the k largest of ``log p_r + G_r`` with G_r iid Gumbel(0, 1) are k successive draws. Only ranks
within ``TAIL_SIGMAS`` standard deviations of mu (and at least ``batch_size`` ranks, a contiguous interval since the
weights fall off monotonically with |r - mu|) are candidates: the ranks left out carry a relative weight below
exp(-TAIL_SIGMAS^2 / 2) = 1.3e-14 each, so a draw costs O(min(N, sigma)) instead of O(N).

The controller owns its random generator (never the global RNG), so draws are reproducible from ``GainConfig.seed``
and resumable from ``state_dict()``.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

# Paper defaults (arXiv 2506.02281, released code; docs/method.md, "The update").
PAPER_SIGMA_POSITIONS = 1000.0
PAPER_N = 500.0
PAPER_ALPHA = 2.0
PAPER_BETA = 0.5
PAPER_ADJ_MIN = 0.0
PAPER_ADJ_MAX = 1000.0

TAIL_SIGMAS = 8.0
"""Candidate half-width in standard deviations; weights beyond it are < exp(-32) ~ 1.3e-14 of the peak."""
REPLACEMENT_MIN_WIDTH = 8
"""Use iid draws with repeats dropped when the candidates outnumber the batch this many times (few repeats)."""
REPLACEMENT_MAX_ROUNDS = 16
"""Rounds of iid draws before the rest of a batch is completed by Gumbel-top-k."""
FP32_SAFE_LOG_SPREAD = 80.0
"""iid draws use fp32 weights exp(log p_r - max): exp(-80) = 1.8e-35 is still above fp32's smallest normal."""
HISTORY_LENGTH = 64
"""Number of recent window updates kept in the state (for logging and post-mortems, not for the rule)."""
STATE_VERSION = 2
"""2: mu bounded to the order, plus ``progress`` (the distance travelled; past the end it widens the window)."""
AT_END_WIDEN = "widen"
AT_END_HOLD = "hold"
AT_END_OPTIONS = (AT_END_WIDEN, AT_END_HOLD)


@dataclass
class GainConfig:
    """Parameters of the GAIN sampling window and its update rule.

    Attributes:
        mu0: initial window centre, in ranks (0 = the highest-concentration prompt).
        sigma: window width in ranks (the paper's code fixed 1000 whatever the dataset size).
        sigma_fraction: if set, the width is ``sigma_fraction * N`` and ``sigma`` is ignored.
        n: step scale of the update rule, in ranks.
        alpha: steepness of the tanh terms.
        beta: target accuracy; above it the window moves on faster.
        adj_min: lower clamp of the per-step move, in ranks (0: mu never moves back).
        adj_max: upper clamp of the per-step move, in ranks.
        inter_weight: weight w of C_inter in the ranking key ``C_intra + w C_inter`` (the paper's code used 8).
        seed: seed of the controller's own random generator.
        n_fraction: if set, the step scale is ``n_fraction * N`` and ``n`` is ignored.
        adj_min_fraction: if set, the lower clamp is ``adj_min_fraction * N`` (in [-1, 1]: it may be negative).
        adj_max_fraction: if set, the upper clamp is ``adj_max_fraction * N``.
        at_end: what the window does once mu has reached the last rank: ``widen`` (the rest of each move widens the
            window towards the whole order) or ``hold`` (it stays a half-Gaussian of width sigma on the last ranks).
    """

    mu0: float = 0.0
    sigma: float = PAPER_SIGMA_POSITIONS
    sigma_fraction: float | None = None
    n: float = PAPER_N
    alpha: float = PAPER_ALPHA
    beta: float = PAPER_BETA
    adj_min: float = PAPER_ADJ_MIN
    adj_max: float = PAPER_ADJ_MAX
    inter_weight: float = 1.0
    seed: int = 0
    n_fraction: float | None = None
    adj_min_fraction: float | None = None
    adj_max_fraction: float | None = None
    at_end: str = AT_END_WIDEN

    def __post_init__(self) -> None:
        for name in ("mu0", "sigma", "n", "alpha", "beta", "adj_min", "adj_max", "inter_weight"):
            setattr(self, name, check_finite_number(name, getattr(self, name)))
        if self.sigma <= 0:
            raise ValueError(
                f"gain.sigma must be > 0 (a window width in ranks), got {self.sigma}; "
                "the paper used 1000, or set gain.sigma_fraction (e.g. 0.1) for a width relative to the dataset"
            )
        for name in ("sigma_fraction", "n_fraction", "adj_max_fraction"):
            self._check_fraction(name, low=0.0, low_open=True)
        self._check_fraction("adj_min_fraction", low=-1.0, low_open=False)
        if self.mu0 < 0:
            raise ValueError(f"gain.mu0 must be >= 0 (a rank; 0 = the highest-concentration end), got {self.mu0}")
        if self.n < 0:
            raise ValueError(f"gain.n must be >= 0 (the step scale in ranks, paper: 500), got {self.n}")
        if self.alpha <= 0:
            raise ValueError(f"gain.alpha must be > 0 (paper: 2), got {self.alpha}")
        if not 0 <= self.beta <= 1:
            raise ValueError(f"gain.beta is a target accuracy and must be in [0, 1] (paper: 0.5), got {self.beta}")
        if self.adj_min > self.adj_max and self.adj_min_fraction is None and self.adj_max_fraction is None:
            raise ValueError(
                f"gain.adj_min ({self.adj_min}) must be <= gain.adj_max ({self.adj_max}); paper: 0 and 1000"
            )
        if (
            self.adj_min_fraction is not None
            and self.adj_max_fraction is not None
            and self.adj_min_fraction > self.adj_max_fraction
        ):
            raise ValueError(
                f"gain.adj_min_fraction ({self.adj_min_fraction}) must be <= gain.adj_max_fraction "
                f"({self.adj_max_fraction})"
            )
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"gain.seed must be an integer, got {self.seed!r}")
        if self.at_end not in AT_END_OPTIONS:
            raise ValueError(f"gain.at_end must be one of {', '.join(AT_END_OPTIONS)}, got {self.at_end!r}")

    def _check_fraction(self, name: str, low: float, low_open: bool) -> None:
        value = getattr(self, name)
        if value is None:
            return
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not is_number or not ((low < value if low_open else low <= value) and value <= 1):
            interval = f"({low:g}, 1]" if low_open else f"[{low:g}, 1]"
            raise ValueError(
                f"gain.{name} must be in {interval} (a fraction of the training set), got {value!r}; set it to null "
                f"to use gain.{name.removesuffix('_fraction')} in ranks instead"
            )
        setattr(self, name, float(value))

    def scale(self, num_samples: int) -> WindowScale:
        """The window width, step scale and clamps in ranks for a dataset of ``num_samples`` prompts."""

        def ranks(absolute: float, fraction: float | None) -> float:
            return absolute if fraction is None else fraction * num_samples

        scale = WindowScale(
            sigma=max(ranks(self.sigma, self.sigma_fraction), MIN_SIGMA),
            n=ranks(self.n, self.n_fraction),
            adj_min=ranks(self.adj_min, self.adj_min_fraction),
            adj_max=ranks(self.adj_max, self.adj_max_fraction),
        )
        if scale.adj_min > scale.adj_max:
            raise ValueError(
                f"the window's lower clamp ({scale.adj_min:g} ranks) exceeds its upper clamp ({scale.adj_max:g}) for "
                f"{num_samples} prompts: check gain.adj_min(_fraction) and gain.adj_max(_fraction)"
            )
        return scale

    def window_sigma(self, num_samples: int) -> float:
        """The window width in ranks for a dataset of ``num_samples`` prompts."""
        return self.scale(num_samples).sigma


MIN_SIGMA = 1e-6
"""A zero-width window is refused by validation; a tiny fraction of a tiny dataset is floored here (draws stay
defined: Gumbel-top-k over log-weights)."""


@dataclass(frozen=True)
class WindowScale:
    """The window's parameters in ranks for one dataset: ``sigma``, ``n``, ``adj_min``, ``adj_max``."""

    sigma: float
    n: float
    adj_min: float
    adj_max: float


@dataclass(frozen=True)
class WindowMove:
    """One update of the window, term by term (all in ranks).

    Attributes:
        acc_term: ``n tanh(alpha (acc - beta))``.
        angle_term: ``n tanh(alpha a)`` (0 without an angle signal).
        delta: ``clamp(acc_term + angle_term, adj_min, adj_max)``.
    """

    acc_term: float
    angle_term: float
    delta: float


def check_finite_number(name: str, value: object, meaning: str = "") -> float:
    """``value`` of ``gain.<name>`` as a float if it is a finite number (not a bool); else a ``ValueError`` naming the
    option, with ``meaning`` (what the number is) in parentheses when given."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        what = f" ({meaning})" if meaning else ""
        raise ValueError(f"gain.{name} must be a finite number{what}, got {value!r}")
    return float(value)


def window_move(acc: float, angle: float | None, scale: WindowScale, alpha: float, beta: float) -> WindowMove:
    """The paper's update, term by term.

    delta = clamp(n tanh(alpha (acc - beta)) + n tanh(alpha a), adj_min, adj_max)

    Args:
        acc: the step's mean rollout accuracy in [0, 1].
        angle: the step's angle signal a, or None to leave the angle term out.
        scale: n, adj_min, adj_max in ranks (``GainConfig.scale``).
        alpha: steepness of the tanh terms.
        beta: target accuracy.
    """
    acc_term = scale.n * math.tanh(alpha * (acc - beta))
    angle_term = 0.0 if angle is None else scale.n * math.tanh(alpha * angle)
    return WindowMove(acc_term, angle_term, min(max(acc_term + angle_term, scale.adj_min), scale.adj_max))


def window_update(acc: float, angle: float, config: GainConfig) -> float:
    """delta of ``window_move`` for a config in absolute ranks (``angle = 0`` leaves the angle term out)."""
    scale = WindowScale(sigma=config.sigma, n=config.n, adj_min=config.adj_min, adj_max=config.adj_max)
    return window_move(acc, angle, scale, config.alpha, config.beta).delta


def order_by_score(scores: np.ndarray) -> np.ndarray:
    """Dataset positions sorted by score, highest first; equal scores keep dataset order (deterministic)."""
    return np.argsort(-scores, kind="stable")


class GainController:
    """The GAIN curriculum state: the order, the window centre mu, the random generator and a short history.

    Args:
        scores: ``[N]`` ranking key per dataset position (higher = drawn earlier).
        config: window and update parameters.
    """

    def __init__(self, scores: Sequence[float] | np.ndarray | torch.Tensor, config: GainConfig | None = None):
        self.config = config or GainConfig()
        if isinstance(scores, torch.Tensor):
            scores = scores.detach().cpu().double().numpy()
        scores = np.asarray(scores, dtype=np.float64)
        if scores.ndim != 1 or scores.size == 0:
            raise ValueError(f"scores must be a non-empty 1-D array (one per dataset row), got shape {scores.shape}")
        bad = np.flatnonzero(~np.isfinite(scores))
        if bad.size:
            raise ValueError(
                f"{bad.size} score(s) are NaN or infinite (dataset positions {bad[:10].tolist()}"
                f"{' ...' if bad.size > 10 else ''}); re-score the dataset (`verl-gain score`) and check the model"
            )
        self.scores = scores
        self.num_samples = int(scores.size)
        self.order = order_by_score(scores)  # [N] rank -> dataset position
        self.rank_of = np.empty_like(self.order)  # [N] dataset position -> rank
        self.rank_of[self.order] = np.arange(self.num_samples)
        self.scale = self.config.scale(self.num_samples)
        if self.config.mu0 > self.last_rank:
            raise ValueError(
                f"gain.mu0={self.config.mu0:g} is past the last rank ({self.last_rank}) of {self.num_samples} prompts: "
                "the window starts on the order (0 = the highest-concentration prompt)"
            )
        self.mu = float(self.config.mu0)  # the window centre, always in [0, N - 1]
        self.progress = self.mu  # distance travelled; past N - 1 it widens the window (at_end="widen")
        self.step = 0
        self.drawn = torch.zeros(self.num_samples, dtype=torch.bool)  # [N] by rank: drawn at least once
        self.history: deque[dict[str, float]] = deque(maxlen=HISTORY_LENGTH)
        self.generator = torch.Generator().manual_seed(self.config.seed)

    @property
    def last_rank(self) -> int:
        return self.num_samples - 1

    @property
    def overflow(self) -> float:
        """How far the window has travelled past the last rank (0 before the end; always 0 with ``hold``)."""
        return max(self.progress - self.last_rank, 0.0)

    @property
    def sigma(self) -> float:
        """The window width in ranks now: the configured width, plus the overflow with ``at_end="widen"``."""
        return self.scale.sigma + self.overflow

    @property
    def at_end(self) -> bool:
        """Whether the window centre has reached the last rank of the order."""
        return self.mu >= self.last_rank

    # ---------------------------------------------------------------- sampling
    def candidate_ranks(self, batch_size: int) -> tuple[int, int]:
        """The interval ``[lo, hi)`` of ranks a draw considers: mu +- TAIL_SIGMAS sigma, at least ``batch_size``."""
        n = self.num_samples
        half = math.ceil(TAIL_SIGMAS * self.sigma)
        width = min(n, max(batch_size, 2 * half + 1))
        centre = min(max(round(self.mu), 0), n - 1)  # the highest-weight rank, also when mu is past an end
        lo = min(max(centre - width // 2, 0), n - width)
        return lo, lo + width

    def sample_ranks(self, batch_size: int) -> np.ndarray:
        """Draw ``batch_size`` distinct ranks from the Gaussian window (advances the generator).

        Returns:
            ``[batch_size]`` int64 ranks, in draw order.
        """
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if batch_size > self.num_samples:
            raise ValueError(
                f"cannot draw {batch_size} distinct prompts from a dataset of {self.num_samples}: "
                "lower data.train_batch_size or use a larger training set"
            )
        lo, hi = self.candidate_ranks(batch_size)
        # log p(peak) - log p(farthest candidate): the weights fall off monotonically from clamp(mu).
        peak = min(max(self.mu, lo), hi - 1)
        farthest = max(abs(lo - self.mu), abs(hi - 1 - self.mu))
        log_spread = (farthest**2 - (peak - self.mu) ** 2) / (2.0 * self.sigma**2)
        wide = hi - lo >= REPLACEMENT_MIN_WIDTH * batch_size and log_spread <= FP32_SAFE_LOG_SPREAD
        chosen = self._draw_by_replacement(lo, hi, batch_size) if wide else []
        if len(chosen) < batch_size:
            chosen = self._draw_by_gumbel_top_k(lo, hi, batch_size, chosen)
        ranks = torch.tensor(chosen, dtype=torch.long)  # [batch_size]
        self.drawn[ranks] = True
        return ranks.numpy()

    def _log_weights(self, lo: int, hi: int, dtype: torch.dtype) -> torch.Tensor:
        """``[hi - lo]`` log p_r of the candidate ranks, up to a constant."""
        z = (torch.arange(lo, hi, dtype=dtype) - self.mu) / self.sigma  # [W]
        return z.square_().mul_(-0.5)  # [W]

    def _draw_by_replacement(self, lo: int, hi: int, batch_size: int) -> list[int]:
        """Successive sampling as iid draws from p with repeats dropped (exact; cheap when the window is wide).

        Gives up after ``REPLACEMENT_MAX_ROUNDS`` rounds and returns what it has, for the Gumbel path to finish.
        """
        log_weight = self._log_weights(lo, hi, torch.float32)  # [W]; fp32 is ample at |z| <= TAIL_SIGMAS
        weight = torch.exp(log_weight - log_weight.max())  # [W]
        chosen: list[int] = []
        seen: set[int] = set()
        for _ in range(REPLACEMENT_MAX_ROUNDS):
            missing = batch_size - len(chosen)
            draws = torch.multinomial(weight, 2 * missing, replacement=True, generator=self.generator)  # [2 missing]
            for rank in (draws + lo).tolist():
                if rank not in seen:
                    seen.add(rank)
                    chosen.append(rank)
                    if len(chosen) == batch_size:
                        return chosen
        return chosen

    def _draw_by_gumbel_top_k(self, lo: int, hi: int, batch_size: int, chosen: list[int]) -> list[int]:
        """Complete ``chosen`` to ``batch_size`` ranks by Gumbel-top-k over the other candidates (log space, exact
        even where the weights underflow, e.g. when mu is far past an end)."""
        log_weight = self._log_weights(lo, hi, torch.float64)  # [W]
        if chosen:
            log_weight[torch.tensor(chosen) - lo] = -math.inf  # successive sampling: drawn ranks are out
        # log p_r - log E_r with E_r ~ Exp(1) is log p_r + Gumbel(0, 1) noise.
        exponential = torch.empty(hi - lo, dtype=torch.float64).exponential_(generator=self.generator)  # [W]
        perturbed = log_weight - torch.log(exponential)  # [W]
        top = torch.topk(perturbed, batch_size - len(chosen), sorted=True).indices  # successive-draw order
        return chosen + (top + lo).tolist()

    def sample(self, batch_size: int) -> np.ndarray:
        """Draw ``batch_size`` distinct dataset positions from the window. Returns ``[batch_size]`` int64."""
        return self.order[self.sample_ranks(batch_size)]

    # ------------------------------------------------------------------ update
    def update(self, acc: float, angle: float | None = None) -> WindowMove:
        """Move the window after a training step.

        mu moves by delta and stays on the order: ``progress`` (the distance travelled, never below 0) carries what
        goes past the last rank, which widens the window with ``at_end="widen"`` and is dropped with ``"hold"``.

        Args:
            acc: the step's mean rollout accuracy in [0, 1].
            angle: the step's angle signal a (``verl_gain.core.angle_signal``), or None to leave the term out.

        Returns:
            The move, term by term (``delta`` is what mu and the progress moved by before the bounds).
        """
        if not (isinstance(acc, (int, float)) and math.isfinite(acc) and 0.0 <= acc <= 1.0):
            raise ValueError(
                f"step accuracy must be in [0, 1], got {acc!r}; map the reward to correctness first "
                "(gain.acc_source=acc reads the reward's `acc`; gain.acc_source=threshold with gain.acc_threshold)"
            )
        if angle is not None and not math.isfinite(angle):
            raise ValueError(f"step angle must be finite, got {angle!r}")
        move = window_move(float(acc), angle, self.scale, self.config.alpha, self.config.beta)
        self.progress = max(self.progress + move.delta, 0.0)
        if self.config.at_end == AT_END_HOLD:
            self.progress = min(self.progress, float(self.last_rank))
        self.mu = min(self.progress, float(self.last_rank))
        self.step += 1
        self.history.append(
            {
                "step": float(self.step),
                "mu": self.mu,
                "sigma": self.sigma,
                "delta": move.delta,
                "acc_term": move.acc_term,
                "angle_term": move.angle_term,
                "acc": float(acc),
                "angle": _nan_if_none(angle),
            }
        )
        return move

    # ----------------------------------------------------------------- metrics
    def window_range(self) -> tuple[float, float]:
        """Ranks mu +- sigma, clipped to the dataset (the window's one-sigma band)."""
        top = self.num_samples - 1
        return min(max(self.mu - self.sigma, 0.0), top), min(max(self.mu + self.sigma, 0.0), top)

    def coverage(self) -> float:
        """Fraction of the dataset drawn at least once so far."""
        return float(self.drawn.float().mean())

    # ------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the curriculum exactly (torch.save-able, weights_only-loadable)."""
        return {
            "version": STATE_VERSION,
            "num_samples": self.num_samples,
            "order_checksum": order_checksum(self.order),
            "mu": self.mu,
            "progress": self.progress,
            "step": self.step,
            "generator_state": self.generator.get_state(),
            "drawn": self.drawn.clone(),
            "history": list(self.history),
            "config": asdict(self.config),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state saved by ``state_dict`` for the same dataset and scores (version 1, written before the
        window was bounded, resumes with its mu brought onto the order)."""
        if state.get("version") not in (1, STATE_VERSION):
            raise ValueError(f"unsupported GAIN state version {state.get('version')!r} (expected {STATE_VERSION})")
        if state["num_samples"] != self.num_samples:
            raise ValueError(
                f"this GAIN state was saved for a dataset of {state['num_samples']} prompts, but the scores describe "
                f"{self.num_samples}: resume with the same training data (or start a fresh run)"
            )
        if state["order_checksum"] != order_checksum(self.order):
            raise ValueError(
                "this GAIN state was saved with a different prompt order (other scores or data): "
                "resume with the scores file of the original run, or start a fresh run"
            )
        self.progress = max(float(state.get("progress", state["mu"])), 0.0)
        if self.config.at_end == AT_END_HOLD:
            self.progress = min(self.progress, float(self.last_rank))
        self.mu = min(self.progress, float(self.last_rank))
        self.step = int(state["step"])
        self.generator.set_state(state["generator_state"])
        self.drawn = state["drawn"].clone().bool()
        self.history = deque(state["history"], maxlen=HISTORY_LENGTH)


def order_checksum(order: np.ndarray) -> str:
    """A fingerprint of an order, to refuse resuming a curriculum over a different ranking."""
    return hashlib.blake2b(np.ascontiguousarray(order, dtype="<i8").tobytes(), digest_size=8).hexdigest()


def _nan_if_none(value: float | None) -> float:
    return float("nan") if value is None else float(value)

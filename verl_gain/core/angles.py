"""Angle concentration of token hidden states (GAIN-RL, arXiv 2506.02281, section 3).

For the hidden states x_t of the tokens of one prompt, split into segments k (the fixed part: system prompt,
few-shot turns and template tokens; the question: the last user message), with unit vectors u_t = x_t / |x_t|:

    S_k = sum_{t in k} u_t                                   (sum of unit vectors, [H])
    n_k = |{t in k}|                                         (token count)
    m_k = sum_{t in k} |u_t|^2                               (tokens with a non-zero hidden state)
    intra(k)   = (|S_k|^2 - m_k) / (n_k (n_k - 1))           mean cosine over distinct pairs i != j in k
    inter(a,b) = <S_a, S_b> / (n_a n_b)                      mean cosine over pairs (i in a, j in b)
    key        = intra(question) + w * inter(question, fixed)
    mean_cos   = (|sum_k S_k|^2 - sum_k m_k) / (n (n - 1))   mean cosine over all distinct token pairs (n = sum_k n_k)

This is exact (it is the mean of the pairwise cosine matrix restricted to the pairs named) in O(L H) time and
memory: the L x L cosine matrix is never built. S_k, n_k and m_k add up across shards of a sequence, so
sequence-parallel ranks can all-reduce them instead of gathering activations (see ``SegmentSums.__add__``).

Conventions, so that every result is defined and NaN-free:
- A zero hidden state has no direction: its cosine with any vector is 0 (as ``torch.nn.functional.
  cosine_similarity`` returns). It counts in n_k and adds 0 to S_k and m_k.
- A segment with fewer than 2 tokens has no pairs: intra = 0. An empty segment has inter = 0 with anything.
  These zeros are placeholders, not measurements: a ranking key built from them would put a prompt with a one-token
  question or an empty fixed part last by accident. ``impute_undefined_terms`` replaces each undefined term by the
  dataset's mean of that term (over the prompts where it is defined), which is what the ranking uses
  (docs/method.md, "Segments and the ranking key"); the token counts, which the scores keep, tell the cases apart.
- Tokens with ``segment_id == IGNORE_SEGMENT`` (and padding) are not counted anywhere.

All sums are accumulated in fp32 whatever the input dtype (bf16 inputs are upcast per chunk); the final dot products
are taken in fp64, because intra subtracts two nearly equal numbers when cosines are small.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

FIXED_SEGMENT = 0
"""Segment id of the fixed part of a prompt (system prompt, few-shot turns, template tokens)."""
QUESTION_SEGMENT = 1
"""Segment id of the question (the content of the last user message)."""
IGNORE_SEGMENT = -1
"""Segment id of tokens that belong to no segment (e.g. generated response tokens when only the prompt is scored)."""
NUM_PROMPT_SEGMENTS = 2

# Tokens processed per chunk when hidden states are upcast and normalised: bounds the fp32 working copy to
# CHUNK_TOKENS x H floats (32 MiB at H = 1024) whatever the batch size.
CHUNK_TOKENS = 8192


@dataclass
class SegmentSums:
    """Per-sample, per-segment sums from which every angle statistic follows.

    Attributes:
        unit_sum: ``[B, K, H]`` fp32, S_k, the sum of the unit vectors of segment k's tokens.
        count: ``[B, K]`` fp32, n_k, the number of tokens of segment k.
        nonzero: ``[B, K]`` fp32, m_k, the number of those tokens whose hidden state is not the zero vector.
    """

    unit_sum: torch.Tensor
    count: torch.Tensor
    nonzero: torch.Tensor

    def __add__(self, other: SegmentSums) -> SegmentSums:
        """Combine the sums of two disjoint token sets of the same samples (e.g. two sequence-parallel shards)."""
        if self.unit_sum.shape != other.unit_sum.shape:
            raise ValueError(
                f"cannot add SegmentSums of shapes {tuple(self.unit_sum.shape)} and {tuple(other.unit_sum.shape)}: "
                "they must describe the same samples and segments"
            )
        return SegmentSums(
            unit_sum=self.unit_sum + other.unit_sum,  # [B, K, H]
            count=self.count + other.count,  # [B, K]
            nonzero=self.nonzero + other.nonzero,  # [B, K]
        )

    @property
    def batch_size(self) -> int:
        return self.unit_sum.shape[0]

    @property
    def num_segments(self) -> int:
        return self.unit_sum.shape[1]


@dataclass
class AngleStatistics:
    """Per-sample angle concentration of a prompt, all ``[B]`` fp64 tensors.

    Attributes:
        intra: C_intra, mean pairwise cosine between question tokens.
        inter: C_inter, mean cosine between question tokens and fixed-part tokens.
        key: the ranking key, ``intra + inter_weight * inter`` (higher = drawn earlier).
        n_fixed: fixed-part token count.
        n_question: question token count.
        mean_cosine: mean cosine over all distinct pairs of the sample's counted tokens, whatever their segment (the
            authors' per-step signal when response tokens are counted too).
    """

    intra: torch.Tensor
    inter: torch.Tensor
    key: torch.Tensor
    n_fixed: torch.Tensor
    n_question: torch.Tensor
    mean_cosine: torch.Tensor

    def stacked(self) -> torch.Tensor:
        """``[B, len(STAT_FIELDS)]`` fp64, the fields side by side in ``STAT_FIELDS`` order."""
        return torch.stack([getattr(self, name).double() for name in STAT_FIELDS], dim=-1)


STAT_FIELDS = tuple(f.name for f in fields(AngleStatistics))
"""Per-sample statistic names, in order: the columns of a scores file and of the tensors the capture returns."""


def _accumulate(
    hidden: torch.Tensor, slot: torch.Tensor, num_slots: int, unit_sum: torch.Tensor, counts: torch.Tensor
) -> None:
    """Add the unit vectors of ``hidden`` rows into ``unit_sum[slot]`` (in place), chunk by chunk.

    Args:
        hidden: ``[T, H]`` token hidden states, any float dtype.
        slot: ``[T]`` int64 destination row of each token in ``unit_sum``; ``num_slots`` is a discard row.
        num_slots: number of real destination rows.
        unit_sum: ``[num_slots + 1, H]`` fp32 accumulator (the last row collects discarded tokens).
        counts: ``[num_slots + 1, 2]`` fp32 accumulator of (token count, non-zero token count).
    """
    ones = torch.ones((), device=hidden.device, dtype=torch.float32)
    for start in range(0, hidden.shape[0], CHUNK_TOKENS):
        x = hidden[start : start + CHUNK_TOKENS].float()  # [C, H] fp32 working copy
        s = slot[start : start + CHUNK_TOKENS]  # [C]
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)  # [C, 1]
        is_nonzero = norm > 0  # [C, 1]
        inv_norm = torch.where(is_nonzero, 1.0 / torch.where(is_nonzero, norm, ones), 0.0)  # [C, 1], 0 for zero rows
        unit_sum.index_add_(0, s, x * inv_norm)  # [num_slots + 1, H] += [C, H]
        per_token = torch.cat([torch.ones_like(norm), is_nonzero.float()], dim=-1)  # [C, 2]
        counts.index_add_(0, s, per_token)  # [num_slots + 1, 2] += [C, 2]


def _sums_from_slots(hidden: torch.Tensor, slot: torch.Tensor, batch_size: int, num_segments: int) -> SegmentSums:
    """Shared tail of the padded and packed entry points: accumulate into ``batch_size * num_segments`` slots."""
    num_slots = batch_size * num_segments
    h = hidden.shape[-1]
    unit_sum = torch.zeros(num_slots + 1, h, device=hidden.device, dtype=torch.float32)  # [B*K + 1, H]
    counts = torch.zeros(num_slots + 1, 2, device=hidden.device, dtype=torch.float32)  # [B*K + 1, 2]
    _accumulate(hidden, slot, num_slots, unit_sum, counts)
    return SegmentSums(
        unit_sum=unit_sum[:num_slots].view(batch_size, num_segments, h),  # [B, K, H]
        # contiguous copies: a strided view would be corrupted by an in-place all-reduce (seen with gloo)
        count=counts[:num_slots, 0].reshape(batch_size, num_segments).contiguous(),  # [B, K]
        nonzero=counts[:num_slots, 1].reshape(batch_size, num_segments).contiguous(),  # [B, K]
    )


def _check_segment_ids(segment_ids: torch.Tensor, num_segments: int) -> None:
    if segment_ids.dtype.is_floating_point or segment_ids.dtype == torch.bool:
        raise TypeError(f"segment_ids must be an integer tensor, got {segment_ids.dtype}")
    if num_segments < 1:
        raise ValueError(f"num_segments must be >= 1, got {num_segments}")
    if segment_ids.numel() and int(segment_ids.max()) >= num_segments:
        raise ValueError(
            f"segment id {int(segment_ids.max())} is out of range for num_segments={num_segments}; "
            f"use ids 0..{num_segments - 1}, or {IGNORE_SEGMENT} for tokens that belong to no segment"
        )


def segment_sums_padded(
    hidden: torch.Tensor,
    attention_mask: torch.Tensor,
    segment_ids: torch.Tensor,
    num_segments: int = NUM_PROMPT_SEGMENTS,
) -> SegmentSums:
    """Segment sums of a padded batch (left or right padding).

    Args:
        hidden: ``[B, L, H]`` hidden states, any float dtype.
        attention_mask: ``[B, L]``, non-zero for real tokens.
        segment_ids: ``[B, L]`` int, the segment of each token (``IGNORE_SEGMENT`` for none).
        num_segments: K.

    Returns:
        ``SegmentSums`` with ``[B, K, H]`` / ``[B, K]`` fields.
    """
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be [B, L, H], got shape {tuple(hidden.shape)}")
    b, length, _ = hidden.shape
    if attention_mask.shape != (b, length) or segment_ids.shape != (b, length):
        raise ValueError(
            f"attention_mask {tuple(attention_mask.shape)} and segment_ids {tuple(segment_ids.shape)} "
            f"must both be [B, L] = {(b, length)}"
        )
    _check_segment_ids(segment_ids, num_segments)
    row = torch.arange(b, device=hidden.device).unsqueeze(1)  # [B, 1]
    valid = (attention_mask != 0) & (segment_ids >= 0)  # [B, L]
    slot = torch.where(valid, row * num_segments + segment_ids.long(), b * num_segments)  # [B, L]
    return _sums_from_slots(hidden.reshape(b * length, -1), slot.reshape(-1), b, num_segments)


def segment_sums_packed(
    hidden: torch.Tensor,
    offsets: torch.Tensor,
    segment_ids: torch.Tensor,
    num_segments: int = NUM_PROMPT_SEGMENTS,
) -> SegmentSums:
    """Segment sums of a packed batch: several sequences concatenated along the token axis.

    Args:
        hidden: ``[T, H]`` hidden states of the packed tokens, any float dtype (tokens past ``offsets[-1]``,
            e.g. alignment padding, are ignored).
        offsets: ``[B + 1]`` int, sequence b spans tokens ``offsets[b]:offsets[b + 1]`` (``cu_seqlens``).
        segment_ids: ``[T]`` int, the segment of each token (``IGNORE_SEGMENT`` for none).
        num_segments: K.

    Returns:
        ``SegmentSums`` with ``[B, K, H]`` / ``[B, K]`` fields.
    """
    if hidden.dim() != 2:
        raise ValueError(f"packed hidden must be [T, H], got shape {tuple(hidden.shape)}")
    t = hidden.shape[0]
    if segment_ids.shape != (t,):
        raise ValueError(f"segment_ids must be [T] = [{t}], got {tuple(segment_ids.shape)}")
    offsets = offsets.to(device=hidden.device, dtype=torch.long)
    if offsets.dim() != 1 or offsets.numel() < 1 or int(offsets[0]) != 0 or bool((offsets.diff() < 0).any()):
        raise ValueError("offsets must be a non-decreasing [B + 1] tensor starting at 0 (cu_seqlens)")
    if int(offsets[-1]) > t:
        raise ValueError(f"offsets end at {int(offsets[-1])} but only {t} packed tokens were given")
    _check_segment_ids(segment_ids, num_segments)
    b = offsets.numel() - 1
    lengths = offsets.diff()  # [B]
    seq = torch.repeat_interleave(torch.arange(b, device=hidden.device), lengths)  # [offsets[-1]]
    row = torch.full((t,), b, device=hidden.device, dtype=torch.long)  # [T], b = "no sequence"
    row[: seq.numel()] = seq
    valid = (row < b) & (segment_ids >= 0)  # [T]
    slot = torch.where(valid, row * num_segments + segment_ids.long(), b * num_segments)  # [T]
    return _sums_from_slots(hidden, slot, b, num_segments)


def intra_concentration(sums: SegmentSums) -> torch.Tensor:
    """C_intra of every segment: mean cosine over distinct token pairs, ``[B, K]`` fp64 (0 when n_k < 2)."""
    s = sums.unit_sum.double()  # [B, K, H]
    n = sums.count.double()  # [B, K]
    pair_sum = (s * s).sum(-1) - sums.nonzero.double()  # [B, K], sum_{i != j} cos(i, j)
    pairs = n * (n - 1)  # [B, K]
    return torch.where(pairs > 0, pair_sum / pairs.clamp(min=1), 0.0)  # [B, K]


def inter_concentration(sums: SegmentSums, a: int, b: int) -> torch.Tensor:
    """C_inter between segments a and b: mean cosine over pairs (i in a, j in b), ``[B]`` fp64 (0 if one is empty)."""
    dot = (sums.unit_sum[:, a].double() * sums.unit_sum[:, b].double()).sum(-1)  # [B]
    pairs = sums.count[:, a].double() * sums.count[:, b].double()  # [B]
    return torch.where(pairs > 0, dot / pairs.clamp(min=1), 0.0)  # [B]


def mean_concentration(sums: SegmentSums) -> torch.Tensor:
    """Mean cosine over all distinct token pairs of each sample, every segment merged: ``[B]`` fp64 (0 when < 2)."""
    s = sums.unit_sum.double().sum(1)  # [B, H]
    n = sums.count.double().sum(1)  # [B]
    pair_sum = (s * s).sum(-1) - sums.nonzero.double().sum(1)  # [B]
    pairs = n * (n - 1)  # [B]
    return torch.where(pairs > 0, pair_sum / pairs.clamp(min=1), 0.0)  # [B]


def ranking_key(intra: torch.Tensor, inter: torch.Tensor, inter_weight: float = 1.0) -> torch.Tensor:
    """GAIN ranking key ``C_intra + w * C_inter`` (``[B]``, torch or numpy); the paper's code used w = 8."""
    return intra + inter_weight * inter


@dataclass(frozen=True)
class TermMeans:
    """The dataset's mean C_intra and C_inter over the prompts where each is defined: what an undefined term becomes.

    Attributes:
        intra: mean C_intra over prompts with at least 2 question tokens (0 if there are none).
        inter: mean C_inter over prompts with question and fixed-part tokens (0 if there are none).
    """

    intra: float
    inter: float

    @classmethod
    def of(cls, intra: np.ndarray, inter: np.ndarray, n_fixed: np.ndarray, n_question: np.ndarray) -> TermMeans:
        has_intra, has_inter = defined_terms(n_fixed, n_question)
        return cls(
            intra=float(np.mean(intra[has_intra])) if has_intra.any() else 0.0,
            inter=float(np.mean(inter[has_inter])) if has_inter.any() else 0.0,
        )


def defined_terms(n_fixed: np.ndarray, n_question: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(intra defined, inter defined)``, both ``[N]`` bool: C_intra needs 2 question tokens, C_inter a question
    token and a fixed-part token."""
    n_fixed, n_question = np.asarray(n_fixed), np.asarray(n_question)
    return n_question >= 2, (n_question >= 1) & (n_fixed >= 1)


def impute_undefined_terms(
    intra: np.ndarray, inter: np.ndarray, n_fixed: np.ndarray, n_question: np.ndarray, means: TermMeans
) -> tuple[np.ndarray, np.ndarray]:
    """``(intra, inter)`` ``[N]`` fp64 with each undefined term replaced by the dataset's mean of that term.

    A prompt with a one-token question (no question pairs) or an empty fixed part (no cross pairs) is then ranked by
    the term it has, as an average prompt on the other, instead of last by a placeholder 0.
    """
    has_intra, has_inter = defined_terms(n_fixed, n_question)
    intra = np.where(has_intra, np.asarray(intra, dtype=np.float64), means.intra)
    inter = np.where(has_inter, np.asarray(inter, dtype=np.float64), means.inter)
    return intra, inter


def ranking_keys(
    intra: np.ndarray,
    inter: np.ndarray,
    n_fixed: np.ndarray,
    n_question: np.ndarray,
    inter_weight: float,
    means: TermMeans | None = None,
) -> np.ndarray:
    """The ranking key ``[N]`` of prompts, undefined terms imputed (``means``: the dataset's, by default these
    prompts' own)."""
    means = means or TermMeans.of(np.asarray(intra), np.asarray(inter), n_fixed, n_question)
    intra, inter = impute_undefined_terms(intra, inter, n_fixed, n_question, means)
    return ranking_key(intra, inter, inter_weight)


def angle_statistics(
    sums: SegmentSums,
    inter_weight: float = 1.0,
    fixed_segment: int = FIXED_SEGMENT,
    question_segment: int = QUESTION_SEGMENT,
) -> AngleStatistics:
    """The per-sample statistics GAIN ranks prompts by, from their segment sums."""
    intra = intra_concentration(sums)[:, question_segment]  # [B]
    inter = inter_concentration(sums, question_segment, fixed_segment)  # [B]
    return AngleStatistics(
        intra=intra,
        inter=inter,
        key=ranking_key(intra, inter, inter_weight),  # [B]
        n_fixed=sums.count[:, fixed_segment].double(),  # [B]
        n_question=sums.count[:, question_segment].double(),  # [B]
        mean_cosine=mean_concentration(sums),  # [B]
    )

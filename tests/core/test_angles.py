"""Angle statistics against a brute-force O(L^2) cosine matrix, and their conventions."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from verl_gain.core.angles import (
    FIXED_SEGMENT,
    IGNORE_SEGMENT,
    QUESTION_SEGMENT,
    SegmentSums,
    angle_statistics,
    inter_concentration,
    intra_concentration,
    segment_sums_packed,
    segment_sums_padded,
)

RTOL = 1e-5
ATOL = 1e-7


def brute_force(hidden: torch.Tensor, segments: torch.Tensor) -> tuple[float, float]:
    """(intra(question), inter(question, fixed)) of one sequence from its full L x L cosine matrix, in fp64.

    hidden: [L, H]; segments: [L]. A zero vector has cosine 0 with everything.
    """
    x = hidden.double()  # [L, H]
    norm = x.norm(dim=-1, keepdim=True)  # [L, 1]
    u = torch.where(norm > 0, x / norm.clamp(min=1e-300), 0.0)  # [L, H]
    cos = u @ u.T  # [L, L], the matrix the efficient path never builds
    q = segments == QUESTION_SEGMENT
    f = segments == FIXED_SEGMENT
    nq, nf = int(q.sum()), int(f.sum())
    block = cos[q][:, q]
    intra = (block.sum() - block.diagonal().sum()) / (nq * (nq - 1)) if nq > 1 else 0.0
    inter = cos[q][:, f].mean() if nq and nf else 0.0
    return float(intra), float(inter)


def anisotropic(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Hidden states with a shared direction plus noise, like a real model's (all cosines clearly positive)."""
    h = shape[-1]
    common = torch.randn(h, generator=generator)
    return common + 0.8 * torch.randn(*shape, generator=generator)


def random_segments(length: int, generator: torch.Generator) -> torch.Tensor:
    """A fixed prefix, a question, then a fixed suffix (template tokens after the question), like a chat prompt."""
    a = int(torch.randint(0, length + 1, (1,), generator=generator))
    b = int(torch.randint(a, length + 1, (1,), generator=generator))
    seg = torch.full((length,), FIXED_SEGMENT, dtype=torch.long)
    seg[a:b] = QUESTION_SEGMENT
    return seg


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 4),
    max_len=st.integers(1, 40),
    hidden=st.integers(1, 48),
    left_pad=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_padded_matches_brute_force(batch, max_len, hidden, left_pad, seed):
    g = torch.Generator().manual_seed(seed)
    x = anisotropic((batch, max_len, hidden), g)  # [B, L, H]
    lengths = torch.randint(1, max_len + 1, (batch,), generator=g)
    mask = torch.zeros(batch, max_len, dtype=torch.long)
    segs = torch.full((batch, max_len), IGNORE_SEGMENT, dtype=torch.long)
    expected = []
    for i, n in enumerate(lengths.tolist()):
        sl = slice(max_len - n, max_len) if left_pad else slice(0, n)
        mask[i, sl] = 1
        segs[i, sl] = random_segments(n, g)
        expected.append(brute_force(x[i, sl], segs[i, sl]))
    # Garbage in padded positions must not leak into the result.
    x = torch.where(mask.bool().unsqueeze(-1), x, torch.full_like(x, 1e3))
    stats = angle_statistics(segment_sums_padded(x, mask, segs))
    exp_intra = torch.tensor([e[0] for e in expected], dtype=torch.float64)
    exp_inter = torch.tensor([e[1] for e in expected], dtype=torch.float64)
    torch.testing.assert_close(stats.intra, exp_intra, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(stats.inter, exp_inter, rtol=RTOL, atol=ATOL)


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 5), max_len=st.integers(1, 40), hidden=st.integers(1, 48), seed=st.integers(0, 2**31 - 1))
def test_packed_matches_brute_force(batch, max_len, hidden, seed):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, max_len + 1, (batch,), generator=g)  # empty sequences allowed
    total = int(lengths.sum())
    trailing_pad = 3  # alignment padding after the last sequence, as remove-padding engines add
    x = anisotropic((total + trailing_pad, hidden), g)  # [T, H]
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    segs = torch.full((total + trailing_pad,), IGNORE_SEGMENT, dtype=torch.long)
    expected = []
    for i in range(batch):
        sl = slice(int(offsets[i]), int(offsets[i + 1]))
        segs[sl] = random_segments(sl.stop - sl.start, g)
        expected.append(brute_force(x[sl], segs[sl]))
    segs[total:] = QUESTION_SEGMENT  # padding tokens with a real segment id are still outside every sequence
    stats = angle_statistics(segment_sums_packed(x, offsets, segs))
    torch.testing.assert_close(
        stats.intra, torch.tensor([e[0] for e in expected], dtype=torch.float64), rtol=RTOL, atol=ATOL
    )
    torch.testing.assert_close(
        stats.inter, torch.tensor([e[1] for e in expected], dtype=torch.float64), rtol=RTOL, atol=ATOL
    )


def test_packed_equals_padded():
    g = torch.Generator().manual_seed(0)
    lengths = [5, 17, 1, 9]
    seqs = [anisotropic((n, 32), g) for n in lengths]
    segs = [random_segments(n, g) for n in lengths]
    packed = segment_sums_packed(
        torch.cat(seqs), torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()]), torch.cat(segs)
    )
    max_len = max(lengths)
    x = torch.zeros(len(lengths), max_len, 32)
    mask = torch.zeros(len(lengths), max_len, dtype=torch.long)
    seg = torch.full((len(lengths), max_len), IGNORE_SEGMENT)
    for i, n in enumerate(lengths):
        x[i, :n], mask[i, :n], seg[i, :n] = seqs[i], 1, segs[i]
    padded = segment_sums_padded(x, mask, seg)
    torch.testing.assert_close(packed.unit_sum, padded.unit_sum, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(packed.count, padded.count)


def test_bf16_input_accumulates_in_fp32():
    g = torch.Generator().manual_seed(1)
    x = anisotropic((2, 300, 64), g).bfloat16()  # [B, L, H]
    mask = torch.ones(2, 300, dtype=torch.long)
    seg = torch.stack([random_segments(300, g), random_segments(300, g)])
    sums = segment_sums_padded(x, mask, seg)
    assert sums.unit_sum.dtype == torch.float32
    stats = angle_statistics(sums)
    for i in range(2):
        intra, inter = brute_force(x[i].float(), seg[i])  # the same bf16 values, compared exactly
        assert math.isclose(float(stats.intra[i]), intra, rel_tol=RTOL, abs_tol=ATOL)
        assert math.isclose(float(stats.inter[i]), inter, rel_tol=RTOL, abs_tol=ATOL)


def constant_cosine_vectors(length: int, hidden: int, c: float, generator: torch.Generator) -> torch.Tensor:
    """``length`` unit vectors whose pairwise cosines are all exactly c: sqrt(c) e + sqrt(1 - c) o_t, with
    e a unit vector and the o_t orthonormal and orthogonal to e (so hidden must exceed length)."""
    q, _ = torch.linalg.qr(torch.randn(hidden, length + 1, generator=generator, dtype=torch.float64))  # [H, L+1]
    e, o = q[:, 0], q[:, 1:].T  # [H], [L, H]
    scale = torch.rand(length, 1, generator=generator, dtype=torch.float64) * 10 + 0.1  # norms must not matter
    return (math.sqrt(c) * e + math.sqrt(1 - c) * o) * scale  # [L, H]


@pytest.mark.parametrize("c", [0.0, 0.3, 0.73, 0.99])
def test_intra_is_length_invariant(c):
    g = torch.Generator().manual_seed(2)
    for length in (2, 3, 10, 50, 200):
        x = constant_cosine_vectors(length, 256, c, g).float().unsqueeze(0)  # [1, L, H]
        seg = torch.full((1, length), QUESTION_SEGMENT)
        intra = intra_concentration(segment_sums_padded(x, torch.ones(1, length), seg))[0, QUESTION_SEGMENT]
        assert abs(float(intra) - c) < 1e-5, (length, float(intra))


def test_zero_vectors_one_token_and_empty_segments_are_defined():
    x = torch.zeros(3, 4, 8)
    x[1, 0] = 1.0  # sample 1: one non-zero fixed token, one zero question token
    seg = torch.tensor(
        [
            [QUESTION_SEGMENT] * 4,  # all-zero question: every cosine is 0 -> intra 0, no fixed part -> inter 0
            [FIXED_SEGMENT, QUESTION_SEGMENT, IGNORE_SEGMENT, IGNORE_SEGMENT],  # 1-token question
            [IGNORE_SEGMENT] * 4,  # empty everything
        ]
    )
    sums = segment_sums_padded(x, torch.ones(3, 4), seg)
    stats = angle_statistics(sums)
    for t in (stats.intra, stats.inter, stats.key):
        assert torch.isfinite(t).all()
        assert (t == 0).all()
    assert stats.n_question.tolist() == [4, 1, 0]
    assert stats.n_fixed.tolist() == [0, 1, 0]
    assert torch.isfinite(intra_concentration(sums)).all()
    assert torch.isfinite(inter_concentration(sums, 0, 1)).all()


def test_zero_vector_counts_as_cosine_zero():
    g = torch.Generator().manual_seed(3)
    x = anisotropic((6, 16), g)
    x[2] = 0.0
    seg = torch.tensor(
        [FIXED_SEGMENT, QUESTION_SEGMENT, QUESTION_SEGMENT, QUESTION_SEGMENT, FIXED_SEGMENT, QUESTION_SEGMENT]
    )
    stats = angle_statistics(segment_sums_padded(x.unsqueeze(0), torch.ones(1, 6), seg.unsqueeze(0)))
    intra, inter = brute_force(x, seg)
    assert math.isclose(float(stats.intra[0]), intra, rel_tol=RTOL)
    assert math.isclose(float(stats.inter[0]), inter, rel_tol=RTOL)


def test_shard_sums_add_up():
    """Sequence-parallel ranks can reduce their sums instead of gathering activations."""
    g = torch.Generator().manual_seed(4)
    x = anisotropic((2, 24, 16), g)
    seg = torch.stack([random_segments(24, g), random_segments(24, g)])
    mask = torch.ones(2, 24)
    whole = segment_sums_padded(x, mask, seg)
    halves = segment_sums_padded(x[:, :10], mask[:, :10], seg[:, :10]) + segment_sums_padded(
        x[:, 10:], mask[:, 10:], seg[:, 10:]
    )
    torch.testing.assert_close(angle_statistics(halves).key, angle_statistics(whole).key, rtol=1e-6, atol=1e-7)


def test_inter_weight_enters_key():
    g = torch.Generator().manual_seed(5)
    x = anisotropic((1, 12, 8), g)
    seg = random_segments(12, g).unsqueeze(0)
    sums = segment_sums_padded(x, torch.ones(1, 12), seg)
    s1, s8 = angle_statistics(sums, inter_weight=1.0), angle_statistics(sums, inter_weight=8.0)
    torch.testing.assert_close(s8.key, s1.intra + 8.0 * s1.inter)


def test_bad_inputs_raise_clear_errors():
    x = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match=r"\[B, L\]"):
        segment_sums_padded(x, torch.ones(2, 4), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="out of range"):
        segment_sums_padded(x, torch.ones(2, 3), torch.full((2, 3), 5))
    with pytest.raises(TypeError, match="integer"):
        segment_sums_padded(x, torch.ones(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="cu_seqlens"):
        segment_sums_packed(torch.zeros(5, 4), torch.tensor([1, 5]), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="only 5 packed tokens"):
        segment_sums_packed(torch.zeros(5, 4), torch.tensor([0, 6]), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="same samples"):
        SegmentSums(torch.zeros(1, 2, 3), torch.zeros(1, 2), torch.zeros(1, 2)) + SegmentSums(
            torch.zeros(2, 2, 3), torch.zeros(2, 2), torch.zeros(2, 2)
        )


def test_undefined_terms_are_imputed_with_the_datasets_means_not_ranked_last():
    from verl_gain.core.angles import TermMeans, ranking_keys

    intra = np.array([0.80, 0.70, 0.0, 0.75, 0.0])  # row 2: 1-token question; row 4: no question at all
    inter = np.array([0.60, 0.50, 0.55, 0.0, 0.0])  # row 3: empty fixed part
    n_fixed = np.array([20, 20, 20, 0, 20])
    n_question = np.array([10, 12, 1, 8, 0])
    means = TermMeans.of(intra, inter, n_fixed, n_question)
    assert means.intra == pytest.approx((0.80 + 0.70 + 0.75) / 3)  # over the rows with >= 2 question tokens
    assert means.inter == pytest.approx((0.60 + 0.50 + 0.55) / 3)  # over the rows with both segments
    keys = ranking_keys(intra, inter, n_fixed, n_question, inter_weight=2.0)
    np.testing.assert_allclose(
        keys,
        [0.80 + 1.2, 0.70 + 1.0, means.intra + 1.1, 0.75 + 2 * means.inter, means.intra + 2 * means.inter],
    )
    raw = intra + 2.0 * inter
    assert np.argmin(raw) in (3, 4) and np.argmin(keys) == 1  # the placeholders no longer rank them last
    no_question_anywhere = TermMeans.of(intra, inter, n_fixed, np.zeros(5))
    assert (no_question_anywhere.intra, no_question_anywhere.inter) == (0.0, 0.0)


def test_mean_cosine_is_the_mean_over_every_pair_of_counted_tokens():
    from verl_gain.core.angles import mean_concentration

    torch.manual_seed(0)
    hidden = torch.randn(1, 7, 16)
    segments = torch.tensor([[0, 0, 1, 1, 1, IGNORE_SEGMENT, 1]])
    sums = segment_sums_padded(hidden, torch.ones(1, 7), segments)
    counted = hidden[0, segments[0] >= 0]
    unit = counted / counted.norm(dim=-1, keepdim=True)
    cosines = unit @ unit.T
    n = len(counted)
    expected = (cosines.sum() - cosines.diagonal().sum()) / (n * (n - 1))
    assert float(mean_concentration(sums)[0]) == pytest.approx(float(expected), abs=1e-6)

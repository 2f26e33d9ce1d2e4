"""Benchmark of the GAIN core (not a test): prints numbers for this machine.

(a) Angle statistics (segment sums, O(L H)) vs the brute-force L x L cosine matrix, at L in {512, 2048, 8192},
    H = 1024: wall time and peak extra memory of each, and their ratios. Each case runs in a fresh process so that
    the peak resident memory it reports is its own.
(b) Time per controller draw at N = 1,000,000 prompts, batch 1024 (target: under 5 ms), for the paper's fixed
    sigma = 1000 and for a wide window (sigma = N / 10).

Usage: python bench/bench_core.py [--lengths 512 2048 8192] [--hidden 1024] [--repeats 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

import numpy as np
import torch

from verl_gain.core.angles import FIXED_SEGMENT, QUESTION_SEGMENT, angle_statistics, segment_sums_padded
from verl_gain.core.controller import GainConfig, GainController


def _rss_peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def _inputs(length: int, hidden: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, length, hidden, generator=g) + torch.randn(hidden, generator=g)  # [1, L, H]
    seg = torch.full((1, length), FIXED_SEGMENT)
    seg[:, length // 4 :] = QUESTION_SEGMENT  # a quarter fixed part, the rest question
    return x, torch.ones(1, length, dtype=torch.long), seg


def _segment_sums_way(x, mask, seg):
    stats = angle_statistics(segment_sums_padded(x, mask, seg))
    return float(stats.intra[0]), float(stats.inter[0])


def _brute_force_way(x, mask, seg):
    u = torch.nn.functional.normalize(x[0].float(), dim=-1)  # [L, H]
    cos = u @ u.T  # [L, L]
    q, f = seg[0] == QUESTION_SEGMENT, seg[0] == FIXED_SEGMENT
    block = cos[q][:, q]  # [Lq, Lq]
    nq = int(q.sum())
    intra = (block.sum() - block.diagonal().sum()) / (nq * (nq - 1))
    inter = cos[q][:, f].mean()
    return float(intra), float(inter)


def _measure(way: str, length: int, hidden: int, repeats: int, queue) -> None:
    torch.set_num_threads(torch.get_num_threads())
    x, mask, seg = _inputs(length, hidden)
    fn = _segment_sums_way if way == "segment_sums" else _brute_force_way
    base = _rss_peak_mib()
    result = fn(x, mask, seg)  # warm-up (and the peak-memory run)
    peak = _rss_peak_mib() - base
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x, mask, seg)
        times.append(time.perf_counter() - t0)
    queue.put((min(times), peak, result))


def run_case(way: str, length: int, hidden: int, repeats: int) -> tuple[float, float, tuple[float, float]]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(way, length, hidden, repeats, queue))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def bench_angles(lengths: list[int], hidden: int, repeats: int) -> None:
    print(f"(a) angle statistics, H = {hidden}, batch 1, fp32; best of {repeats}, peak = extra resident MiB")
    print(f"{'L':>6} | {'segment sums':>22} | {'L x L cosine matrix':>22} | {'time ratio':>10} | {'mem ratio':>9}")
    for length in lengths:
        t_s, m_s, r_s = run_case("segment_sums", length, hidden, repeats)
        t_b, m_b, r_b = run_case("brute_force", length, hidden, repeats)
        assert abs(r_s[0] - r_b[0]) < 1e-4 and abs(r_s[1] - r_b[1]) < 1e-4, (r_s, r_b)
        print(
            f"{length:>6} | {t_s * 1e3:9.1f} ms {m_s:7.1f} MiB | {t_b * 1e3:9.1f} ms {m_b:7.1f} MiB | "
            f"{t_b / t_s:9.1f}x | {m_b / max(m_s, 0.1):8.1f}x"
        )


def bench_draws(num_samples: int, batch: int, repeats: int) -> None:
    scores = np.random.default_rng(0).random(num_samples)
    print(f"(b) controller draw, N = {num_samples:,}, batch {batch}; mean over {repeats} draws")
    for label, cfg in (
        ("sigma = 1000 (paper)", GainConfig(sigma=1000.0, mu0=num_samples / 2)),
        (f"sigma = N/10 = {num_samples // 10:,}", GainConfig(sigma_fraction=0.1, mu0=num_samples / 2)),
    ):
        c = GainController(scores, cfg)
        c.sample(batch)  # warm-up
        t0 = time.perf_counter()
        for _ in range(repeats):
            c.sample(batch)
        per_draw = (time.perf_counter() - t0) / repeats
        print(f"    {label:<24}: {per_draw * 1e3:7.3f} ms per draw (target < 5 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 2048, 8192])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-samples", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1024)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_angles(args.lengths, args.hidden, args.repeats)
    bench_draws(args.num_samples, args.batch, repeats=50)


if __name__ == "__main__":
    main()

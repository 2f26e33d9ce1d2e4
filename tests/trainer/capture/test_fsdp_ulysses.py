"""The FSDP engine's Ulysses sequence-parallel layout: each rank holds a contiguous chunk of the padded packed
sequence; the segment sums all-reduced over the group must equal the unsharded statistics (2 gloo processes)."""

from __future__ import annotations

import torch

from tests.distributed import run_on_gloo
from verl_gain.core.angles import FIXED_SEGMENT, QUESTION_SEGMENT, angle_statistics, segment_sums_packed

LENGTHS = [7, 12, 3, 9]  # 31 tokens + 1 padding token = 2 chunks of 16
HIDDEN = 24


def packed_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(hidden [T, H], nested input_ids, nested segment ids) of one micro-batch, the same on every rank."""
    g = torch.Generator().manual_seed(0)
    total = sum(LENGTHS)
    hidden = torch.randn(total, HIDDEN, generator=g) + torch.randn(HIDDEN, generator=g)
    ids = [torch.randint(0, 100, (n,), generator=g) for n in LENGTHS]
    segments = []
    for n in LENGTHS:
        seg = torch.full((n,), FIXED_SEGMENT)
        seg[1 : max(2, n - 2)] = QUESTION_SEGMENT
        segments.append(seg)
    nested = lambda rows: torch.nested.as_nested_tensor(rows, layout=torch.jagged)  # noqa: E731
    return hidden, nested(ids), nested(segments)


def reduce_chunk(rank: int, world_size: int) -> torch.Tensor:
    import torch.distributed as dist

    from verl_gain.trainer.capture.fsdp import micro_batch_segment_sums

    hidden, input_ids, segment_ids = packed_batch()
    pad = -hidden.shape[0] % world_size
    padded = torch.cat([hidden, torch.zeros(pad, HIDDEN)])  # verl pads the packed sequence to a multiple of sp
    chunk = padded.shape[0] // world_size
    local = padded[rank * chunk : (rank + 1) * chunk].unsqueeze(0)  # [1, T_local, H], what the hook sees
    sums = micro_batch_segment_sums(local, input_ids, segment_ids, packed=True, pad_size=pad, sp_group=dist.group.WORLD)
    return angle_statistics(sums).key


def test_ulysses_chunks_reduce_to_the_unsharded_statistics(tmp_path):
    hidden, input_ids, segment_ids = packed_batch()
    expected = angle_statistics(segment_sums_packed(hidden, input_ids.offsets(), segment_ids.values())).key  # [B]
    for key in run_on_gloo(reduce_chunk, world_size=2, out_dir=tmp_path):
        torch.testing.assert_close(key, expected, rtol=1e-6, atol=1e-7)

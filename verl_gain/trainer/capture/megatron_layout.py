"""Where each row of the hidden states a Megatron rank captures comes from, and the angle sums of those rows.

Pure torch (no verl, no megatron-core): the layout maths of verl 0.9.1's Megatron engine, testable on its own.
What a capture hook on the last decoder layer sees on one rank (verl 0.9.1, megatron-core 0.16) is described by
``MegatronLayout``:

- THD (``use_remove_padding=True``): ``verl/models/mcore/util.py::preprocess_thd_engine`` pads every sequence to a
  multiple of ``tp * cp * (2 if zigzag and cp > 1 else 1)`` (``lcm(16, .)`` with FP8 padding; FP8, ``min_local_rows``
  and ``pad_to_length_bucket`` add further padding to the *last* sequence only) and packs them into ``[1, T / cp]``
  per context-parallel rank. Zigzag: CP rank r holds, for each sequence of padded length P at local offset
  ``cu_seqlens_padded[i] / cp``, the rows ``[h r, h (r + 1))`` then ``[P - h (r + 1), P - h r)`` with
  ``h = (P / cp) // 2`` (``postprocess_thd_engine`` undoes exactly this). Contiguous (DeepSeek-V4 attention): rank r
  holds rows ``[r T / cp, (r + 1) T / cp)`` of the padded buffer.
- BSHD (``use_remove_padding=False``): ``preprocess_bshd_engine`` right-pads every sequence to one length M (the
  micro-batch maximum, aligned to ``tp * cp * 2`` with CP, else ``tp``); with CP rank r holds chunks r and
  ``2 cp - r - 1`` of length ``M / (2 cp)`` (``postprocess_bshd_engine`` undoes it).
- ``GPTModel`` works sequence-first (``LanguageModelEmbedding`` transposes to ``[S, B, H]``); with sequence parallel
  the embedding scatters dim 0 into ``tp`` equal contiguous chunks
  (``megatron.core.tensor_parallel.scatter_to_sequence_parallel_region``) and every decoder layer and the final norm
  keep that split. Without sequence parallel, tensor-parallel ranks hold identical full sequences.

The padded lengths are recovered from the captured tensor itself (rows x shards), so every extra padding verl adds
is covered without re-deriving its options. Each rank reduces its rows with ``segment_sums_packed`` (one composite
segment per (sample, segment)), and the ``SegmentSums`` are all-reduced over the groups that split the sequence
(they add up): the tensor-parallel group when sequence parallel is on, the context-parallel group when cp > 1.
No activation is gathered.

With Transformer Engine (``TELayerNormColumnParallelLinear``) the pre-MLP norm is fused into the MLP's first linear,
so the MLP input is the un-normalised residual x. ``FusedPreNorm`` reproduces the norm's output from x and the fused
module's own ``layer_norm_weight`` (RMSNorm: x / rms(x) * gamma; its per-token scale cancels in cosines but gamma
does not; LayerNorm: the full affine norm), so Megatron and FSDP measure the same vectors. It is detected by the
fused module's attributes (``layer_norm_weight`` and ``normalization``), not by names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from verl_gain.core.angles import (
    CHUNK_TOKENS,
    IGNORE_SEGMENT,
    NUM_PROMPT_SEGMENTS,
    SegmentSums,
    segment_sums_packed,
)

THD = "thd"
"""Packed sequences (verl ``use_remove_padding=True``)."""
BSHD = "bshd"
"""Right-padded batch (verl ``use_remove_padding=False``)."""
ZIGZAG = "zigzag"
CONTIGUOUS = "contiguous"
CP_LAYOUTS = (ZIGZAG, CONTIGUOUS)
"""verl 0.9.1 ``ContextParallelLayout`` (``verl/models/mcore/util.py``): zigzag by default, contiguous for
DeepSeek-V4's hybrid attention (``MegatronEngine._get_context_parallel_layout``)."""
ZIGZAG_CHUNKS_PER_RANK = 2
"""Zigzag context parallelism gives every CP rank two chunks of each sequence (one from each end), so sequences are
padded to a multiple of 2 cp (``cp_layout_factor`` in ``preprocess_thd_engine``, ``align_size`` in
``preprocess_bshd_engine``)."""
FP8_THD_SEQUENCE_ALIGN = 16
"""FP8 block quantisation pads each THD sequence to a multiple of ``lcm(16, align)`` (verl
``_compute_fp8_thd_align_size``)."""
FP8_PADDING_MODES = ("e4m3", "hybrid")
"""``TransformerConfig.fp8`` values for which verl pads for FP8 (``use_fp8_padding`` in ``model_forward.py``)."""
NORMALIZATIONS = ("RMSNorm", "LayerNorm")
"""Transformer Engine's ``LayerNormLinear.normalization`` values."""


class MegatronCaptureError(ValueError):
    """A Megatron layout or option the GAIN capture does not support (one line that says what to change)."""


@dataclass(frozen=True)
class MegatronLayout:
    """Where each row of the hidden states captured on one rank comes from.

    Attributes:
        data_format: ``THD`` (captured ``[T_local, 1, H]``) or ``BSHD`` (captured ``[S_local, B, H]``).
        seq_lens: real tokens of each sample of the micro-batch (``input_ids.offsets().diff()``).
        padded_lens: each sample's length after verl's padding, before the context-parallel split (THD: per sample,
            the ``cu_seqlens_padded`` steps; BSHD: the common padded length M for every sample).
        cp_size, cp_rank, cp_layout: context parallelism (``cp_layout`` in ``CP_LAYOUTS``).
        tp_size, tp_rank: tensor parallelism.
        sequence_parallel: whether the sequence axis is also split over the tensor-parallel ranks.
    """

    data_format: str
    seq_lens: tuple[int, ...]
    padded_lens: tuple[int, ...]
    cp_size: int = 1
    cp_rank: int = 0
    cp_layout: str = ZIGZAG
    tp_size: int = 1
    tp_rank: int = 0
    sequence_parallel: bool = False

    def __post_init__(self) -> None:
        if self.data_format not in (THD, BSHD):
            raise ValueError(f"data_format must be {THD!r} or {BSHD!r}, got {self.data_format!r}")
        if self.cp_layout not in CP_LAYOUTS:
            raise ValueError(f"cp_layout must be one of {CP_LAYOUTS}, got {self.cp_layout!r}")
        if self.data_format == BSHD and self.cp_layout != ZIGZAG and self.cp_size > 1:
            raise ValueError("verl splits BSHD batches over context-parallel ranks in zigzag order only")
        if not (0 <= self.cp_rank < self.cp_size and 0 <= self.tp_rank < self.tp_size):
            raise ValueError(f"ranks out of range: cp {self.cp_rank}/{self.cp_size}, tp {self.tp_rank}/{self.tp_size}")
        if len(self.seq_lens) != len(self.padded_lens):
            raise ValueError(f"{len(self.seq_lens)} sequence lengths but {len(self.padded_lens)} padded lengths")
        if any(p < n for n, p in zip(self.seq_lens, self.padded_lens)):
            raise ValueError(f"a padded length is shorter than its sequence: {self.padded_lens} < {self.seq_lens}")
        if self.data_format == BSHD and len(set(self.padded_lens)) > 1:
            raise ValueError(f"a BSHD micro-batch has one padded length, got {sorted(set(self.padded_lens))}")
        if self.cp_rows % self.sequence_shards:
            raise ValueError(f"{self.cp_rows} rows per CP rank do not split over {self.sequence_shards} SP ranks")

    @property
    def batch_size(self) -> int:
        return len(self.seq_lens)

    @property
    def sequence_shards(self) -> int:
        """Tensor-parallel ranks that split the sequence axis (1 without sequence parallel)."""
        return self.tp_size if self.sequence_parallel else 1

    @property
    def cp_rows(self) -> int:
        """Rows of the sequence axis one context-parallel rank holds before the sequence-parallel split."""
        if self.data_format == THD:
            return sum(self.padded_lens) // self.cp_size
        return (self.padded_lens[0] if self.padded_lens else 0) // self.cp_size

    @property
    def local_rows(self) -> int:
        """Length of the sequence axis the capture hook sees on this rank."""
        return self.cp_rows // self.sequence_shards

    def captured_shape(self, hidden_size: int) -> tuple[int, int, int]:
        """The ``[S, B, H]`` shape a hook sees on this rank."""
        width = 1 if self.data_format == THD else self.batch_size
        return (self.local_rows, width, hidden_size)

    def row_sources(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample index and position in that sample of every captured row, flattened sequence-first.

        Returns:
            ``(sample, position)``, both ``[local_rows * width]`` int64 (row ``s * width + b`` of the captured
            ``[S, width, H]`` tensor); ``position`` is -1 for padding rows, which belong to no sample.
        """
        if self.data_format == THD:
            sample, position = self._thd_cp_rows()  # [cp_rows] each
        else:
            local_position = self._bshd_cp_positions()  # [cp_rows]
            width = self.batch_size
            sample = torch.arange(width).repeat(local_position.numel())  # [cp_rows * B]
            position = local_position.repeat_interleave(width)  # [cp_rows * B]
            lengths = torch.tensor(self.seq_lens, dtype=torch.long)  # [B]
            position = torch.where(position < lengths[sample], position, -1)  # [cp_rows * B]
        # Sequence parallelism: this tensor-parallel rank keeps one contiguous chunk of the sequence axis.
        rows_per_shard = sample.numel() // self.sequence_shards
        shard = self.tp_rank if self.sequence_parallel else 0
        keep = slice(shard * rows_per_shard, (shard + 1) * rows_per_shard)
        return sample[keep], position[keep]

    def _thd_cp_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Sources of the packed rows of this context-parallel rank (mirrors ``preprocess_thd_engine``)."""
        cp, rank = self.cp_size, self.cp_rank
        rows = self.cp_rows
        sample = torch.full((rows,), -1, dtype=torch.long)  # [cp_rows]
        position = torch.full((rows,), -1, dtype=torch.long)  # [cp_rows]
        start = 0  # cu_seqlens_padded[i]
        for i, (length, padded) in enumerate(zip(self.seq_lens, self.padded_lens)):
            if cp == 1:
                local_start, positions = start, torch.arange(length)
            elif self.cp_layout == CONTIGUOUS:
                first = max(start, rank * rows)
                last = min(start + length, (rank + 1) * rows)
                local_start = first - rank * rows
                positions = torch.arange(first - start, max(first, last) - start)
            else:
                half = (padded // cp) // ZIGZAG_CHUNKS_PER_RANK
                local_start = start // cp
                positions = torch.cat(
                    [
                        torch.arange(half * rank, half * (rank + 1)),
                        torch.arange(padded - half * (rank + 1), padded - half * rank),
                    ]
                )
            positions = torch.where(positions < length, positions, -1)
            sample[local_start : local_start + positions.numel()] = torch.where(positions >= 0, i, -1)
            position[local_start : local_start + positions.numel()] = positions
            start += padded
        return sample, position

    def _bshd_cp_positions(self) -> torch.Tensor:
        """Positions (in the padded sequence) of this context-parallel rank's rows (``preprocess_bshd_engine``)."""
        padded = self.padded_lens[0] if self.padded_lens else 0
        if self.cp_size == 1:
            return torch.arange(padded)
        chunk = padded // (ZIGZAG_CHUNKS_PER_RANK * self.cp_size)
        first = self.cp_rank * chunk
        second = (ZIGZAG_CHUNKS_PER_RANK * self.cp_size - self.cp_rank - 1) * chunk
        return torch.cat([torch.arange(first, first + chunk), torch.arange(second, second + chunk)])


def _alignment(data_format: str, tp_size: int, cp_size: int, cp_layout: str, fp8_padding: bool) -> int:
    """Per-sequence padding multiple verl uses (``preprocess_thd_engine`` / ``preprocess_bshd_engine``)."""
    if data_format == BSHD:
        return tp_size * cp_size * ZIGZAG_CHUNKS_PER_RANK if cp_size > 1 else tp_size
    factor = ZIGZAG_CHUNKS_PER_RANK if cp_layout == ZIGZAG and cp_size > 1 else 1
    align = tp_size * cp_size * factor
    return math.lcm(FP8_THD_SEQUENCE_ALIGN, align) if fp8_padding else align


def infer_layout(
    data_format: str,
    seq_lens: list[int] | tuple[int, ...],
    captured_rows: int,
    *,
    tp_size: int = 1,
    tp_rank: int = 0,
    sequence_parallel: bool = False,
    cp_size: int = 1,
    cp_rank: int = 0,
    cp_layout: str = ZIGZAG,
    fp8_padding: bool = False,
) -> MegatronLayout:
    """The layout of a captured micro-batch, with the padded lengths recovered from the captured row count.

    verl pads every sequence to the alignment (``_alignment``); any further padding (FP8 total alignment,
    ``min_local_rows``, ``pad_to_length_bucket``, ``forced_max_seqlen`` for BSHD) goes to the last THD sequence or
    lengthens every BSHD row, so the captured row count fixes it.

    Args:
        data_format: ``THD`` or ``BSHD``.
        seq_lens: real tokens per sample.
        captured_rows: length of the sequence axis (dim 0) of the captured ``[S, B, H]`` tensor.
    """
    seq_lens = tuple(int(n) for n in seq_lens)
    shards = tp_size if sequence_parallel else 1
    total = captured_rows * shards * cp_size  # rows of the whole padded micro-batch (THD) or of one row (BSHD)
    align = _alignment(data_format, tp_size, cp_size, cp_layout, fp8_padding)
    if data_format == THD:
        padded = [-(-n // align) * align for n in seq_lens]
        extra = total - sum(padded)
        if extra < 0 or not padded:
            raise RuntimeError(
                f"captured {captured_rows} rows x {shards} sequence-parallel x {cp_size} context-parallel ranks = "
                f"{total}, but {len(seq_lens)} sequences padded to {align} need {sum(padded)}: the capture point "
                "must see the packed micro-batch (sequence-first [T, 1, H])"
            )
        padded[-1] += extra
        return MegatronLayout(
            THD, seq_lens, tuple(padded), cp_size, cp_rank, cp_layout, tp_size, tp_rank, sequence_parallel
        )
    if seq_lens and (total < max(seq_lens) or total % align):
        raise RuntimeError(
            f"captured {captured_rows} rows x {shards} sequence-parallel x {cp_size} context-parallel ranks = "
            f"{total} positions, which is not a padded length (multiple of {align}, >= {max(seq_lens)}) of this "
            "micro-batch: the capture point must see the sequence-first [S, B, H] batch"
        )
    return MegatronLayout(
        BSHD, seq_lens, (total,) * len(seq_lens), cp_size, cp_rank, cp_layout, tp_size, tp_rank, sequence_parallel
    )


def layout_segment_ids(layout: MegatronLayout, segment_ids: torch.Tensor) -> torch.Tensor:
    """Segment id of every captured row (``IGNORE_SEGMENT`` for padding), flattened sequence-first.

    Args:
        layout: the captured micro-batch's layout.
        segment_ids: nested ``[b, (j)]`` segment ids in ``input_ids``' layout.

    Returns:
        ``[local_rows * width]`` int64.
    """
    offsets = segment_ids.offsets()  # [b + 1]
    if tuple(offsets.diff().tolist()) != layout.seq_lens:
        raise RuntimeError("segment ids and input ids of the micro-batch have different sequence lengths")
    values = segment_ids.values().long()  # [total]
    sample, position = layout.row_sources()  # [R] each
    sample, position = sample.to(values.device), position.to(values.device)
    valid = position >= 0  # [R]
    index = offsets.to(values.device)[sample.clamp(min=0)] + position.clamp(min=0)  # [R]
    if values.numel() == 0:
        return torch.full_like(sample, IGNORE_SEGMENT)
    return torch.where(valid, values[index.clamp(max=values.numel() - 1)], IGNORE_SEGMENT)  # [R]


@dataclass(frozen=True)
class FusedPreNorm:
    """The norm Transformer Engine applies inside a fused norm + linear module, reproduced from its input.

    Attributes:
        weight: ``[H]`` gamma (``layer_norm_weight``).
        bias: ``[H]`` beta (``layer_norm_bias``, LayerNorm only) or ``None``.
        eps: the norm's epsilon.
        normalization: ``"RMSNorm"`` or ``"LayerNorm"``.
        zero_centered_gamma: TE's option that scales by ``1 + gamma``.
    """

    weight: torch.Tensor
    bias: torch.Tensor | None
    eps: float
    normalization: str
    zero_centered_gamma: bool = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, H]`` -> ``[T, H]`` fp32: RMSNorm ``x / sqrt(mean(x^2) + eps) * gamma``, or LayerNorm."""
        x = x.float()  # [T, H]
        gamma = self.weight.detach().float().to(x.device)  # [H]
        if self.zero_centered_gamma:
            gamma = gamma + 1.0
        if gamma.shape != x.shape[-1:]:
            raise MegatronCaptureError(
                f"the fused norm weight has shape {tuple(gamma.shape)} but hidden states have {x.shape[-1]} "
                "features: the norm weight is sharded (Megatron FSDP?); capture with final_norm instead"
            )
        if self.normalization == "RMSNorm":
            inv_rms = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)  # [T, 1]
            return x * inv_rms * gamma  # [T, H]
        beta = None if self.bias is None else self.bias.detach().float().to(x.device)  # [H]
        return F.layer_norm(x, x.shape[-1:], gamma, beta, self.eps)  # [T, H]


def _fused_norm_of(module: nn.Module) -> FusedPreNorm | None:
    weight = getattr(module, "layer_norm_weight", None)
    normalization = getattr(module, "normalization", None)
    if not isinstance(weight, torch.Tensor) or normalization not in NORMALIZATIONS:
        return None
    return FusedPreNorm(
        weight=weight,
        bias=getattr(module, "layer_norm_bias", None),
        eps=float(module.eps),
        normalization=normalization,
        zero_centered_gamma=bool(getattr(module, "zero_centered_gamma", False)),
    )


def find_fused_pre_norm(module: nn.Module, hook_on: str) -> FusedPreNorm | None:
    """The norm fused into ``module`` (or into its first child), if the hook on ``module``'s input sees x un-normalised.

    Transformer Engine's ``LayerNormLinear`` (Megatron's ``TELayerNormColumnParallelLinear``, the MLP's first linear
    in the TE layer spec, whose ``pre_mlp_layernorm`` is then an ``IdentityOp``) exposes ``layer_norm_weight``,
    ``normalization``, ``eps`` and ``zero_centered_gamma``. MoE layers keep a separate norm: their first child (the
    router) has none, so nothing is reproduced.
    """
    if hook_on != "input":
        return None
    fused = _fused_norm_of(module)
    if fused is not None:
        return fused
    first_child = next(iter(module.children()), None)
    return None if first_child is None else _fused_norm_of(first_child)


def local_segment_sums(
    hidden: torch.Tensor,
    layout: MegatronLayout,
    segment_ids: torch.Tensor,
    num_segments: int = NUM_PROMPT_SEGMENTS,
    pre_norm: FusedPreNorm | None = None,
) -> SegmentSums:
    """Segment sums of the rows one rank captured (not yet reduced over the ranks that split the sequence).

    Args:
        hidden: ``[S_local, width, H]`` captured hidden states (sequence-first), any float dtype.
        layout: where its rows come from (``layout.captured_shape(H)`` must equal ``hidden.shape``).
        segment_ids: nested ``[b, (j)]`` segment ids in ``input_ids``' layout.
        num_segments: K.
        pre_norm: a fused norm to apply to the rows first (``find_fused_pre_norm``), or ``None``.

    Returns:
        ``SegmentSums`` ``[b, K, H]`` of this rank's rows.
    """
    if hidden.dim() != 3 or tuple(hidden.shape) != layout.captured_shape(hidden.shape[-1]):
        raise RuntimeError(
            f"captured hidden states of shape {tuple(hidden.shape)} do not match the micro-batch layout "
            f"{layout.captured_shape(hidden.shape[-1])}: the capture point must see the sequence-first batch"
        )
    b, h = layout.batch_size, hidden.shape[-1]
    rows = hidden.reshape(-1, h)  # [R, H], row s * width + w (a view: Megatron activations are contiguous)
    segments = layout_segment_ids(layout, segment_ids).to(hidden.device)  # [R]
    sample, _ = layout.row_sources()  # [R]
    sample = sample.to(hidden.device)
    # One composite segment per (sample, segment): a single packed reduction covers rows of any sample in any order.
    composite = torch.where(segments >= 0, sample.clamp(min=0) * num_segments + segments, IGNORE_SEGMENT)  # [R]
    total: SegmentSums | None = None
    for start in range(0, max(rows.shape[0], 1), CHUNK_TOKENS):
        chunk = rows[start : start + CHUNK_TOKENS]  # [C, H]
        if pre_norm is not None:
            chunk = pre_norm(chunk)  # [C, H] fp32
        ids = composite[start : start + CHUNK_TOKENS]  # [C]
        offsets = torch.tensor([0, chunk.shape[0]], device=hidden.device)
        part = segment_sums_packed(chunk, offsets, ids, num_segments=b * num_segments)  # [1, b*K, H]
        total = part if total is None else total + part
    return SegmentSums(
        unit_sum=total.unit_sum.reshape(b, num_segments, h),  # [b, K, H]
        count=total.count.reshape(b, num_segments),  # [b, K]
        nonzero=total.nonzero.reshape(b, num_segments),  # [b, K]
    )


def reduce_segment_sums(
    sums: SegmentSums,
    layout: MegatronLayout,
    tp_group: dist.ProcessGroup | None = None,
    cp_group: dist.ProcessGroup | None = None,
) -> SegmentSums:
    """All-reduce a rank's sums over the ranks that hold other rows of the same sequences (returns new sums).

    Sequence-parallel tensor-parallel ranks hold disjoint rows (reduce over ``tp_group``); without sequence
    parallelism they hold the same rows (not reduced: that would count them ``tp`` times). Context-parallel ranks
    always hold disjoint rows (reduce over ``cp_group``).
    """
    groups = []
    if layout.sequence_parallel and layout.tp_size > 1:
        groups.append(tp_group)
    if layout.cp_size > 1:
        groups.append(cp_group)
    if not groups:
        return sums
    # Contiguous copies: the fields can be strided views (``count`` is a column of a [slots, 2] buffer), and an
    # in-place all-reduce over gloo of a strided view reduces the wrong elements.
    fields = [t.contiguous() for t in (sums.unit_sum, sums.count, sums.nonzero)]
    for group in groups:
        for tensor in fields:
            dist.all_reduce(tensor, group=group)
    return SegmentSums(*fields)


def megatron_segment_sums(
    hidden: torch.Tensor,
    layout: MegatronLayout,
    segment_ids: torch.Tensor,
    tp_group: dist.ProcessGroup | None = None,
    cp_group: dist.ProcessGroup | None = None,
    pre_norm: FusedPreNorm | None = None,
    num_segments: int = NUM_PROMPT_SEGMENTS,
) -> SegmentSums:
    """Segment sums ``[b, K, H]`` of whole sequences from one rank's captured rows (collective over the groups)."""
    sums = local_segment_sums(hidden, layout, segment_ids, num_segments=num_segments, pre_norm=pre_norm)
    return reduce_segment_sums(sums, layout, tp_group=tp_group, cp_group=cp_group)

"""What every gloo process runs for the Megatron capture tests (see ``test_megatron.py``).

The full hidden states of a micro-batch are built on every rank from a seed, sharded exactly as verl 0.9.1 and
megatron-core shard them (``verl.models.mcore.util.preprocess_thd_engine`` / ``preprocess_bshd_engine`` for the
context-parallel split and the padding, ``megatron.core.tensor_parallel.scatter_to_sequence_parallel_region`` for
sequence parallelism, on a real ``megatron.core.parallel_state`` over gloo), reduced by
``verl_gain.trainer.capture.megatron_layout``, and compared with ``segment_sums_packed`` on the unsharded tensor.

Results are plain numbers per case name; the pytest side asserts on them.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from verl_gain.core.angles import FIXED_SEGMENT, IGNORE_SEGMENT, QUESTION_SEGMENT, SegmentSums, segment_sums_packed

HIDDEN = 16
SEQ_LENS = (7, 13, 1, 22, 9, 2)
"""Odd lengths (padding everywhere), a 1-token and a 2-token sample (no pairs / one pair)."""
MODEL_PARALLEL_LAYOUTS = ((2, 2), (4, 1), (1, 4), (2, 1))
"""(tensor parallel, context parallel) sizes run on 4 processes (the rest is data parallel)."""
PAD_TO_LENGTH_BUCKET = 24
"""verl's ``pad_to_length_bucket`` (extra padding on the last THD sequence)."""
FORCED_MAX_SEQLEN = 30
"""verl's ``forced_max_seqlen`` (BSHD rows padded to the mini-batch maximum)."""


# ---------------------------------------------------------------------------------------------------------------
# data and reference
# ---------------------------------------------------------------------------------------------------------------


def make_hidden(seed: int, seq_lens: tuple[int, ...] = SEQ_LENS, hidden: int = HIDDEN) -> list[torch.Tensor]:
    """Per-sample ``[L, H]`` hidden states, anisotropic like a real model's, with a zero row in one sample."""
    generator = torch.Generator().manual_seed(seed)
    common = torch.randn(hidden, generator=generator)  # [H], shared direction: cosines far from 0
    samples = [torch.randn(n, hidden, generator=generator) + 2 * common for n in seq_lens]
    samples[1][3] = 0.0  # a zero vector has no direction
    return samples


def make_segments(seed: int, seq_lens: tuple[int, ...] = SEQ_LENS) -> list[torch.Tensor]:
    """Per-sample ``[L]`` segment ids: fixed prefix, question, then ignored (response) tokens."""
    generator = torch.Generator().manual_seed(seed + 1)
    out = []
    for n in seq_lens:
        cut = sorted(torch.randint(0, n + 1, (2,), generator=generator).tolist())
        ids = torch.full((n,), FIXED_SEGMENT, dtype=torch.long)
        ids[cut[0] : cut[1]] = QUESTION_SEGMENT
        if n > 4:  # short samples keep a fixed tail, so some samples have no ignored tokens
            ids[cut[1] :] = IGNORE_SEGMENT
        out.append(ids)
    return out


def nested(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.nested.as_nested_tensor(tensors, layout=torch.jagged)


def reference_sums(hidden: list[torch.Tensor], segments: list[torch.Tensor]) -> SegmentSums:
    """The unsharded computation: ``segment_sums_packed`` over the concatenated sequences."""
    lengths = torch.tensor([h.shape[0] for h in hidden])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    return segment_sums_packed(torch.cat(hidden), offsets, torch.cat(segments))


def sums_difference(sums: SegmentSums, reference: SegmentSums, inter_weight: float = 1.0) -> float:
    """Largest absolute difference of the sums and of every per-sample statistic."""
    from verl_gain.trainer.capture.outputs import stats_tensor

    diffs = [
        (sums.unit_sum - reference.unit_sum).abs().max(),
        (sums.count - reference.count).abs().max(),
        (sums.nonzero - reference.nonzero).abs().max(),
        (stats_tensor(sums, inter_weight) - stats_tensor(reference, inter_weight)).abs().max(),
    ]
    return float(max(d.item() for d in diffs))


# ---------------------------------------------------------------------------------------------------------------
# sharding, as verl and megatron-core do it
# ---------------------------------------------------------------------------------------------------------------


def shard_like_megatron(
    samples: list[torch.Tensor], data_format: str, sequence_parallel: bool, **verl_options: Any
) -> torch.Tensor:
    """What the capture hook sees on this rank: verl's CP split + padding, sequence-first, then the SP scatter.

    Args:
        samples: per-sample ``[L, F]`` tensors (hidden states, or encoded row sources).
        data_format: ``thd`` (``preprocess_thd_engine``) or ``bshd`` (``preprocess_bshd_engine``).
        verl_options: keyword arguments of those verl functions (``cp_layout``, ``use_fp8_padding``, ...).

    Returns:
        ``[S_local, width, F]``.
    """
    from megatron.core.tensor_parallel import scatter_to_sequence_parallel_region
    from verl.models.mcore.util import preprocess_bshd_engine, preprocess_thd_engine

    if data_format == "thd":
        packed, _, _ = preprocess_thd_engine(nested(samples), pre_process=True, **verl_options)  # [1, T_cp, F]
        sequence_first = packed.transpose(0, 1).contiguous()  # [T_cp, 1, F], what GPTModel's embedding hands on
    else:
        padded, _, _ = preprocess_bshd_engine(nested(samples), pre_process=True, **verl_options)  # [b, S_cp, F]
        sequence_first = padded.transpose(0, 1).contiguous()  # [S_cp, b, F]
    if sequence_parallel:
        return scatter_to_sequence_parallel_region(sequence_first)  # [S_cp / tp, width, F]
    return sequence_first


def _variants(tp: int, cp: int) -> list[dict[str, Any]]:
    """Layouts to check under one (tp, cp): formats, verl padding options, sequence parallel on/off."""
    base = [
        {"data_format": "thd", "verl": {}},
        {"data_format": "thd", "verl": {"use_fp8_padding": True}, "fp8_padding": True},
        {"data_format": "thd", "verl": {"pad_to_length_bucket": PAD_TO_LENGTH_BUCKET}},
        {"data_format": "bshd", "verl": {}},
        {"data_format": "bshd", "verl": {"forced_max_seqlen": FORCED_MAX_SEQLEN}},
    ]
    out = []
    for variant in base:
        for sequence_parallel in (True, False) if tp > 1 else (False,):
            name = f"tp{tp}{'-sp' if sequence_parallel else ''}-cp{cp}-{variant['data_format']}" + "".join(
                f"-{key}" for key in variant["verl"]
            )
            out.append({**variant, "sequence_parallel": sequence_parallel, "name": name})
    return out


def check_layouts(tp: int, cp: int) -> dict[str, dict[str, float]]:
    """Per variant: exact agreement of the row sources with verl's split, and the reduction error."""
    from megatron.core import parallel_state as mpu

    from verl_gain.trainer.capture.megatron_layout import infer_layout, megatron_segment_sums

    results = {}
    for case, variant in enumerate(_variants(tp, cp)):
        fmt, sp = variant["data_format"], variant["sequence_parallel"]

        def layout_for(rows: int, variant=variant, fmt=fmt, sp=sp):
            return infer_layout(
                fmt,
                SEQ_LENS,
                rows,
                tp_size=tp,
                tp_rank=mpu.get_tensor_model_parallel_rank(),
                sequence_parallel=sp,
                cp_size=cp,
                cp_rank=mpu.get_context_parallel_rank(),
                fp8_padding=variant.get("fp8_padding", False),
            )

        # 1. Row sources: shard (sample + 1, position + 1) with verl's own functions (padding rows come out 0).
        encoded = [
            torch.stack([torch.full((n,), i + 1.0), torch.arange(1.0, n + 1)], dim=-1) for i, n in enumerate(SEQ_LENS)
        ]
        local = shard_like_megatron(encoded, fmt, sp, **variant["verl"])  # [S, width, 2]
        layout = layout_for(local.shape[0])
        sample, position = layout.row_sources()
        verl_sample = local[..., 0].reshape(-1).long() - 1
        verl_position = local[..., 1].reshape(-1).long() - 1
        real = position >= 0
        rows_agree = bool(torch.equal(position, verl_position)) and bool(torch.equal(sample[real], verl_sample[real]))

        # 2. Statistics: the sharded reduction against the unsharded computation.
        hidden = make_hidden(seed=100 + case)
        segments = make_segments(seed=100 + case)
        local_hidden = shard_like_megatron(hidden, fmt, sp, **variant["verl"])  # [S, width, H]
        sums = megatron_segment_sums(
            local_hidden,
            layout_for(local_hidden.shape[0]),
            nested(segments),
            tp_group=mpu.get_tensor_model_parallel_group(),
            cp_group=mpu.get_context_parallel_group(),
        )
        results[variant["name"]] = {
            "rows_agree": float(rows_agree),
            "local_rows": float(local.shape[0]),
            "max_diff": sums_difference(sums, reference_sums(hidden, segments)),
        }
    return results


def check_contiguous_with_verl_postprocess(cp: int) -> dict[str, float]:
    """The contiguous CP layout (DeepSeek-V4 attention) cannot be produced by verl with megatron-core 0.16 (its
    ``PackedSeqParams`` has no ``cp_partition_mode``), so check it the other way: rows placed by our layout and
    gathered by verl's own ``postprocess_thd_engine(cp_layout="contiguous")`` must give back every sequence."""
    from megatron.core import parallel_state as mpu
    from megatron.core.packed_seq_params import PackedSeqParams
    from verl.models.mcore.util import postprocess_thd_engine

    from verl_gain.trainer.capture.megatron_layout import CONTIGUOUS, MegatronLayout, _alignment

    align = _alignment("thd", 1, cp, CONTIGUOUS, False)
    padded = tuple(-(-n // align) * align for n in SEQ_LENS)
    layout = MegatronLayout("thd", SEQ_LENS, padded, cp, mpu.get_context_parallel_rank(), CONTIGUOUS)
    samples = make_hidden(seed=7)
    sample, position = layout.row_sources()
    rows = torch.zeros(sample.numel(), HIDDEN)
    real = position >= 0
    rows[real] = torch.stack([samples[s][p] for s, p in zip(sample[real].tolist(), position[real].tolist())])
    cu_padded = torch.tensor([0, *torch.tensor(padded).cumsum(0).tolist()], dtype=torch.int32)
    params = PackedSeqParams(qkv_format="thd", cu_seqlens_q_padded=cu_padded, cu_seqlens_kv_padded=cu_padded)
    restored = postprocess_thd_engine(rows.unsqueeze(0), params, nested(samples), len(SEQ_LENS), cp_layout=CONTIGUOUS)
    diff = max(float((a - b).abs().max()) for a, b in zip(restored.unbind(), samples))
    return {"max_diff": diff}


# ---------------------------------------------------------------------------------------------------------------
# Transformer Engine stand-ins (TE needs CUDA and cannot be installed here)
# ---------------------------------------------------------------------------------------------------------------


class FusedNormLinearStandIn(nn.Module):
    """Stand-in for TE's ``LayerNormLinear`` as Megatron builds it (``TELayerNormColumnParallelLinear``): the same
    constructor signature and the same norm attributes (``layer_norm_weight``, ``layer_norm_bias``,
    ``normalization``, ``eps``, ``zero_centered_gamma``); forward = RMSNorm then the rank's column shard."""

    def __init__(self, input_size: int, output_size: int, *, config: Any, bias: bool = False, **_: Any):
        super().__init__()
        self.normalization = config.normalization
        self.eps = config.layernorm_epsilon
        self.zero_centered_gamma = False
        self.layer_norm_weight = nn.Parameter(torch.ones(input_size))
        self.layer_norm_bias = None
        self.linear = nn.Linear(input_size, output_size // config.tensor_model_parallel_size, bias=bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        normed = nn.functional.rms_norm(x, x.shape[-1:], self.layer_norm_weight, self.eps)
        return self.linear(normed), None


class NormStandIn:
    """Stand-in for Megatron's ``TENorm`` (which returns a TE ``RMSNorm``): returns ``torch.nn.RMSNorm``."""

    def __new__(cls, config: Any, hidden_size: int, eps: float = 1e-5) -> nn.Module:
        return nn.RMSNorm(hidden_size, eps=eps)


class CoreAttentionStandIn(nn.Module):
    """Stand-in for ``TEDotProductAttention`` (Megatron's local attention refuses context parallelism); never run."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__()


def te_like_block_spec(num_layers: int):
    """Megatron's Transformer Engine layer layout (``get_gpt_layer_with_transformer_engine_spec``): input and pre-MLP
    norms fused into ``linear_qkv`` / ``linear_fc1`` (``IdentityOp`` in their place), TE final norm."""
    from megatron.core.fusions.fused_bias_dropout import get_bias_dropout_add
    from megatron.core.tensor_parallel import RowParallelLinear
    from megatron.core.transformer.attention import SelfAttention, SelfAttentionSubmodules
    from megatron.core.transformer.enums import AttnMaskType
    from megatron.core.transformer.identity_op import IdentityOp
    from megatron.core.transformer.mlp import MLP, MLPSubmodules
    from megatron.core.transformer.spec_utils import ModuleSpec
    from megatron.core.transformer.transformer_block import TransformerBlockSubmodules
    from megatron.core.transformer.transformer_layer import TransformerLayer, TransformerLayerSubmodules

    layer = ModuleSpec(
        module=TransformerLayer,
        submodules=TransformerLayerSubmodules(
            input_layernorm=IdentityOp,
            self_attention=ModuleSpec(
                module=SelfAttention,
                params={"attn_mask_type": AttnMaskType.causal},
                submodules=SelfAttentionSubmodules(
                    linear_qkv=FusedNormLinearStandIn,
                    core_attention=CoreAttentionStandIn,
                    linear_proj=RowParallelLinear,
                    q_layernorm=IdentityOp,
                    k_layernorm=IdentityOp,
                ),
            ),
            self_attn_bda=get_bias_dropout_add,
            pre_mlp_layernorm=IdentityOp,
            mlp=ModuleSpec(
                module=MLP, submodules=MLPSubmodules(linear_fc1=FusedNormLinearStandIn, linear_fc2=RowParallelLinear)
            ),
            mlp_bda=get_bias_dropout_add,
        ),
    )
    return TransformerBlockSubmodules(layer_specs=[layer] * num_layers, layer_norm=NormStandIn)


# ---------------------------------------------------------------------------------------------------------------
# engine glue
# ---------------------------------------------------------------------------------------------------------------


def bare_engine(chunks: list[nn.Module], use_remove_padding: bool):
    """verl's ``MegatronEngineWithLMHead`` without ``__init__`` (which needs CUDA, mbridge and a checkpoint): the
    real class and methods, holding only the attributes ``forward_backward_batch`` leaves for the micro-batch
    post-processing (engine config, model config, model chunks)."""
    from verl.workers.config import McoreEngineConfig
    from verl.workers.engine.megatron.transformer_impl import MegatronEngineWithLMHead

    engine = object.__new__(MegatronEngineWithLMHead)
    engine.engine_config = McoreEngineConfig(use_remove_padding=use_remove_padding)
    engine.model_config = SimpleNamespace(hf_config=SimpleNamespace(model_type="llama"))
    engine.module = chunks
    engine.tf_config = None
    return engine


def hook_count(modules: list[nn.Module]) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for chunk in modules for m in chunk.modules())


def check_pipeline_selection() -> dict[str, Any]:
    """PP=2 x VPP=2 chunks built the way verl builds them; where the capture lands and what it refuses."""
    from megatron.core import parallel_state as mpu
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.transformer import TransformerConfig

    from verl_gain.trainer.capture import (
        CaptureRefused,
        capture_angle_statistics,
        prepass_micro_batch_group,
        validate_capture_point,
    )
    from verl_gain.trainer.capture.megatron_layout import MegatronCaptureError
    from verl_gain.trainer.capture.outputs import stats_tensor

    num_layers = 8
    config = TransformerConfig(
        num_layers=num_layers,
        hidden_size=HIDDEN,
        num_attention_heads=4,
        use_cpu_initialization=True,
        pipeline_model_parallel_size=2,
        virtual_pipeline_model_parallel_size=2,
        pipeline_dtype=torch.float32,
        normalization="RMSNorm",
    )
    chunks = []
    for vp_stage in range(2):  # verl.utils.megatron_utils.make_megatron_module's loop
        chunks.append(
            GPTModel(
                config,
                get_gpt_layer_local_spec(normalization="RMSNorm"),
                vocab_size=32,
                max_sequence_length=64,
                pre_process=mpu.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vp_stage),
                post_process=mpu.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vp_stage),
                vp_stage=vp_stage,
            )
        )
    engine = bare_engine(chunks, use_remove_padding=True)
    result: dict[str, Any] = {"pp_rank": mpu.get_pipeline_model_parallel_rank()}
    for spec in ("mlp_input", "final_norm", "mlp_input:6", "mlp_input:-2"):
        with capture_angle_statistics(engine, spec, 1.0) as capture:
            if capture is None:
                result[spec] = None
            else:
                chunk_index = next(i for i, c in enumerate(chunks) if c is capture.model)
                owner = capture.module
                layer_name = capture.point.module_name.rsplit(".", 1)[0]
                layer_number = getattr(capture.model.get_submodule(layer_name), "layer_number", None)
                result[spec] = {
                    "chunk": chunk_index,
                    "module": capture.point.module_name,
                    "layer_number": layer_number if spec != "final_norm" else None,
                    "is_final_norm": owner is capture.model.decoder.final_layernorm,
                    "hooks_inside": hook_count(chunks),
                }
        result[f"{spec}_hooks_after"] = hook_count(chunks)
    # Statistics through the selected chunk (Megatron's local spec keeps a separate pre-MLP norm: nothing fused, the
    # MLP input is used as it comes), against the unsharded computation; stage 0 measures nothing.
    run = run_through_engine(engine, "mlp_input", use_remove_padding=True, sequence_parallel=False)
    if run["measured"] is None:
        result["stats_max_diff"] = None
    else:
        expected = stats_tensor(reference_sums(run["hidden"], run["segments"]), inter_weight=GLUE_INTER_WEIGHT)
        result["stats_max_diff"] = float((run["measured"] - expected).abs().max())
    try:
        with capture_angle_statistics(engine, "mlp_input:1", 1.0) as capture:
            result["mlp_input:1"] = "accepted" if capture is not None else None
    except MegatronCaptureError as error:
        result["mlp_input:1"] = str(error)
    # What the worker's gain_configure runs on every rank: the same verdict on all of them, not only on the stage
    # that holds the capture point (stage 0 would otherwise wait for stage 1 in a pipeline send).
    engine.tf_config = config
    result["micro_batch_group"] = prepass_micro_batch_group(engine)
    validate_capture_point(engine, "mlp_input")
    result["validated"] = {}
    for spec in ("mlp_input:1", "final_norm"):
        try:
            validate_capture_point(engine, spec)
            result["validated"][spec] = "accepted"
        except CaptureRefused as error:
            result["validated"][spec] = str(error)
    return result


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return nn.functional.rms_norm(x.float(), x.shape[-1:], weight.float(), eps)


GLUE_SEQ_LENS = (5, 17, 9, 1, 12, 20, 3, 11)
GLUE_INTER_WEIGHT = 2.0
GLUE_MAX_TOKENS_PER_MICRO_BATCH = 30
"""Small enough that verl's dynamic batch size makes several micro-batches and reorders the samples."""


def run_through_engine(
    engine: Any, capture_point: str, use_remove_padding: bool, sequence_parallel: bool
) -> dict[str, Any]:
    """A batch through verl's micro-batching, the capture module and verl's post-processing, as
    ``MegatronEngine.forward_backward_batch`` does with a forward-only schedule.

    For each micro-batch the hidden states are sharded as verl + megatron-core shard them and fed to the real
    Megatron module at the capture point (the forward up to there needs CUDA attention); verl's
    ``postprocess_micro_batch_func`` (which calls the wrapped ``prepare_model_outputs``) then runs on the ranks that
    hold the capture point (the last pipeline stage), and ``postprocess_batch_func`` restores the order.

    Returns:
        ``hidden``/``segments`` (per sample, original order), ``measured`` (``[b, F]`` statistics, or ``None`` on
        other pipeline stages), ``micro_batches`` and ``reordered`` (whether dynamic batching reordered samples).
    """
    from megatron.core import parallel_state as mpu
    from tensordict import TensorDict
    from verl.utils import tensordict_utils as tu
    from verl.workers.engine.utils import postprocess_batch_func, prepare_micro_batches

    from verl_gain.trainer.capture import SEGMENT_IDS_KEY, STATS_KEY, capture_angle_statistics

    generator = torch.Generator().manual_seed(2)
    hidden = make_hidden(seed=11, seq_lens=GLUE_SEQ_LENS)
    segments = make_segments(seed=11, seq_lens=GLUE_SEQ_LENS)
    data = TensorDict(
        {
            "input_ids": nested([torch.randint(0, 32, (n,), generator=generator) for n in GLUE_SEQ_LENS]),
            SEGMENT_IDS_KEY: nested(segments),
            "sample_index": torch.arange(len(GLUE_SEQ_LENS)),
        },
        batch_size=[len(GLUE_SEQ_LENS)],
    )
    tu.assign_non_tensor(data, use_dynamic_bsz=True, max_token_len_per_gpu=GLUE_MAX_TOKENS_PER_MICRO_BATCH)
    micro_batches, indices = prepare_micro_batches(data, dp_group=mpu.get_data_parallel_group())
    outputs = []
    with capture_angle_statistics(engine, capture_point, inter_weight=GLUE_INTER_WEIGHT) as capture:
        for micro_batch in micro_batches:
            if capture is None:  # a pipeline stage without the capture point: verl collects nothing here
                continue
            samples = [hidden[i] for i in micro_batch["sample_index"].tolist()]
            local = shard_like_megatron(samples, "thd" if use_remove_padding else "bshd", sequence_parallel)
            capture.module(local)  # the forward reaches the capture point with these activations
            forward_output = {"log_probs": nested([torch.zeros(len(s)) for s in samples])}
            _, output = engine.postprocess_micro_batch_func(
                forward_output, data=micro_batch, forward_only=True, loss_function=None
            )
            outputs.append(output)
    measured = None
    if outputs:
        collected = postprocess_batch_func(output_lst=outputs, indices=indices, data=data)["model_output"]
        measured = torch.stack(list(collected[STATS_KEY].unbind())).double()  # [b, F]
    order = [i for part in indices for i in part] if indices is not None else list(range(len(GLUE_SEQ_LENS)))
    return {
        "hidden": hidden,
        "segments": segments,
        "measured": measured,
        "micro_batches": float(len(micro_batches)),
        "reordered": float(order != list(range(len(GLUE_SEQ_LENS)))),
    }


def check_engine_glue(use_remove_padding: bool, sequence_parallel: bool, capture_point: str) -> dict[str, float]:
    """``run_through_engine`` on a Megatron GPTModel built with the Transformer Engine layer layout (fused pre-MLP
    norm): the statistics must equal those of the unsharded, explicitly normalised hidden states in the original
    order (what the FSDP path measures on an HF model's post-attention norm output).
    """
    from megatron.core import parallel_state as mpu
    from megatron.core.models.gpt import GPTModel
    from megatron.core.transformer import TransformerConfig

    from verl_gain.trainer.capture.outputs import stats_tensor

    tp, cp = mpu.get_tensor_model_parallel_world_size(), mpu.get_context_parallel_world_size()
    torch.manual_seed(0)  # same weights on every rank (CPU initialisation draws the full weight, then shards it)
    config = TransformerConfig(
        num_layers=2,
        hidden_size=HIDDEN,
        ffn_hidden_size=2 * HIDDEN,
        num_attention_heads=4,
        use_cpu_initialization=True,
        tensor_model_parallel_size=tp,
        context_parallel_size=cp,
        sequence_parallel=sequence_parallel,
        normalization="RMSNorm",
        add_bias_linear=False,
        gated_linear_unit=True,
    )
    model = GPTModel(config, te_like_block_spec(config.num_layers), vocab_size=32, max_sequence_length=64)
    generator = torch.Generator().manual_seed(1)
    fused_fc1 = model.decoder.layers[-1].mlp.linear_fc1
    with torch.no_grad():  # gamma far from 1, so the unnormalised residual would give other statistics
        fused_fc1.layer_norm_weight.copy_(torch.rand(HIDDEN, generator=generator) * 2 + 0.1)
        model.decoder.final_layernorm.weight.copy_(torch.rand(HIDDEN, generator=generator) * 2 + 0.1)

    engine = bare_engine([model], use_remove_padding=use_remove_padding)
    run = run_through_engine(engine, capture_point, use_remove_padding, sequence_parallel)
    hidden, segments, measured = run["hidden"], run["segments"], run["measured"]

    norm = fused_fc1 if capture_point == "mlp_input" else model.decoder.final_layernorm
    weight = norm.layer_norm_weight if capture_point == "mlp_input" else norm.weight
    normalised = [_rms_norm(h, weight.detach(), config.layernorm_epsilon) for h in hidden]
    expected = stats_tensor(reference_sums(normalised, segments), inter_weight=GLUE_INTER_WEIGHT)  # [b, F]
    unnormalised = stats_tensor(reference_sums(hidden, segments), inter_weight=GLUE_INTER_WEIGHT)
    return {
        "max_diff": float((measured - expected).abs().max()),
        "diff_to_unnormalised": float((measured - unnormalised).abs().max()),
        "micro_batches": run["micro_batches"],
        "reordered": run["reordered"],
        "wrapper_removed": float("prepare_model_outputs" not in vars(engine)),
        "hooks_after": float(hook_count([model])),
    }


# ---------------------------------------------------------------------------------------------------------------
# the one entry point every process runs
# ---------------------------------------------------------------------------------------------------------------


def run_all(rank: int, world_size: int) -> dict[str, Any]:
    """Every check, model-parallel layout by layout (parallel_state is rebuilt between layouts)."""
    from megatron.core import parallel_state as mpu

    results: dict[str, Any] = {"layouts": {}, "glue": {}}
    for tp, cp in MODEL_PARALLEL_LAYOUTS:
        mpu.initialize_model_parallel(tensor_model_parallel_size=tp, context_parallel_size=cp)
        results["layouts"].update(check_layouts(tp, cp))
        if cp > 1 and tp == 1:
            results["contiguous"] = check_contiguous_with_verl_postprocess(cp)
        if tp == 2 and cp == 2:
            results["glue"]["tp2-cp2-thd-mlp_input"] = check_engine_glue(True, False, "mlp_input")
            results["glue"]["tp2-sp-cp2-thd-final_norm"] = check_engine_glue(True, True, "final_norm")
        if tp == 2 and cp == 1:
            results["glue"]["tp2-bshd-mlp_input"] = check_engine_glue(False, False, "mlp_input")
            results["glue"]["tp2-sp-bshd-final_norm"] = check_engine_glue(False, True, "final_norm")
        mpu.destroy_model_parallel()
    mpu.initialize_model_parallel(pipeline_model_parallel_size=2, virtual_pipeline_model_parallel_size=2)
    results["pipeline"] = check_pipeline_selection()
    return results

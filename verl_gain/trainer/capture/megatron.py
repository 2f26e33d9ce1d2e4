"""Angle statistics inside verl 0.9's Megatron engine (``MegatronEngineWithLMHead``): the engine glue.

The FSDP capture reduces each micro-batch's hidden states inside the engine's ``prepare_model_outputs``; the
Megatron engine has the same seam with another signature: ``MegatronEngineWithLMHead.postprocess_micro_batch_func``
(Megatron's ``loss_func``, run right after the forward of a micro-batch on the last pipeline stage) calls
``self.prepare_model_outputs(output, data)``, and ``forward_backward_batch`` reassembles every per-sample nested
tensor of the model output with verl's ``postprocess_batch_func`` (dynamic-batch order restored), on the last
pipeline stage only. ``outputs.model_outputs_with_stats`` adds ``STATS_KEY`` there, so the trainer code is the
same for both backends. Where each captured row comes from, and its reduction, is ``megatron_layout``.

Only the last virtual chunk of the last pipeline stage holds the last decoder layer and the final norm, and only
there does verl collect outputs: the hook is installed there and nowhere else.

Refused when the capture context is entered (one line each, ``MegatronCaptureError``): dynamic context parallel,
vision-language models (their THD packing happens after the vision embedding), an explicit capture layer that is
not on the last pipeline stage's last chunk, and a fused norm whose weight is sharded (Megatron FSDP).

megatron-core is an optional dependency (``pip install 'verl-gain[megatron]'``), imported only by
``_parallel_state`` when a Megatron engine is captured.
"""

from __future__ import annotations

import dataclasses
import sys
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import torch
from torch import nn

from verl_gain.scoring.capture import CapturePoint, HiddenStateCapture, resolve_capture_point
from verl_gain.scoring.constants import MLP_INPUT
from verl_gain.trainer.capture.megatron_layout import (
    BSHD,
    FP8_PADDING_MODES,
    THD,
    ZIGZAG,
    MegatronCaptureError,
    find_fused_pre_norm,
    infer_layout,
    megatron_segment_sums,
)
from verl_gain.trainer.capture.outputs import SEGMENT_IDS_KEY, model_outputs_with_stats, stats_tensor


def _parallel_state() -> ModuleType:
    """megatron-core's ``parallel_state`` (imported only here, when a Megatron engine is captured)."""
    try:
        from megatron.core import parallel_state
    except ImportError as error:
        raise MegatronCaptureError(
            "the Megatron engine's GAIN capture needs megatron-core: pip install 'verl-gain[megatron]'"
        ) from error
    return parallel_state


def is_megatron_engine(engine: Any) -> bool:
    """Whether ``engine`` is verl's ``MegatronEngine`` (never imports megatron-core when it is not)."""
    from verl_gain.trainer.compat import MEGATRON_ENGINE_MODULE

    module = sys.modules.get(MEGATRON_ENGINE_MODULE)
    return module is not None and isinstance(engine, module.MegatronEngine)


def capture_chunk_index(num_chunks: int, is_last_stage: bool) -> int | None:
    """Which model chunk of this rank holds the capture point: the last virtual chunk of the last pipeline stage.

    verl keeps a rank's chunks in virtual-stage order (``engine.module``, built by ``make_megatron_module`` with
    ``post_process = is_pipeline_last_stage(ignore_virtual=False, vp_stage=i)``), so on the last stage it is the
    last one; other stages hold no capture point (and verl collects no outputs there).
    """
    if num_chunks < 1:
        raise ValueError("the Megatron engine holds no model chunk")
    return num_chunks - 1 if is_last_stage else None


def prepass_micro_batch_group(engine: Any) -> int:
    """How many micro-batches the engine runs as one group: with virtual pipeline stages, Megatron's interleaved
    schedule needs a micro-batch count divisible by ``microbatch_group_size_per_vp_stage`` (verl asserts it in
    ``MegatronEngine.forward_backward_batch``; megatron-core defaults it to the pipeline size); 1 otherwise and for
    FSDP engines."""
    if not is_megatron_engine(engine):
        return 1
    vpp = _parallel_state().get_virtual_pipeline_model_parallel_world_size()
    if vpp is None or vpp <= 1:
        return 1
    return int(engine.tf_config.microbatch_group_size_per_vp_stage)


def _resolve_megatron_point(model: nn.Module, spec: str) -> CapturePoint:
    """``resolve_capture_point`` on one chunk's ``GPTModel``, with ``mlp_input:<i>`` naming a *global* layer.

    Megatron numbers a chunk's ``decoder.layers`` locally; ``TransformerLayer.layer_number`` is the global 1-based
    number. The last layer (``mlp_input``, ``mlp_input:-1``) is always in the last chunk of the last stage.
    """
    kind, _, arg = spec.partition(":")
    if kind != MLP_INPUT or not arg:
        return resolve_capture_point(model, spec)
    try:
        layer = int(arg)
    except ValueError:
        raise MegatronCaptureError(f"capture point {spec!r}: the layer index must be an integer") from None
    layers = list(model.decoder.layers)
    total = int(model.config.num_layers)
    wanted = layer if layer >= 0 else total + layer
    numbers = [int(getattr(item, "layer_number", -1)) for item in layers]
    if wanted + 1 not in numbers:
        held = f"layers {min(numbers) - 1}..{max(numbers) - 1}" if numbers else "no decoder layers"
        raise MegatronCaptureError(
            f"capture point {spec!r}: layer {wanted} of {total} is not on the last pipeline stage's last chunk "
            f"(it holds {held}), where verl collects outputs; choose one of those layers or mlp_input"
        )
    local = numbers.index(wanted + 1)
    point = resolve_capture_point(model, f"{MLP_INPUT}:{local}")
    return dataclasses.replace(point, spec=spec, layer_index=wanted, num_layers=total)


def check_megatron_engine(engine: Any) -> None:
    """Refuse, with one line, the Megatron engine options the capture does not support."""
    config = engine.engine_config
    if getattr(config, "dynamic_context_parallel", False):
        raise MegatronCaptureError(
            "GAIN's angle capture does not support dynamic context parallel (its micro-batches are scheduled "
            "across DPxCP groups): set actor_rollout_ref.actor.megatron.dynamic_context_parallel=False"
        )
    hf_config = getattr(getattr(engine, "model_config", None), "hf_config", None)
    if hasattr(hf_config, "vision_config"):
        raise MegatronCaptureError(
            "GAIN's angle capture on the Megatron engine supports text-only models (a vision-language model packs "
            "its THD batch after the vision embedding); use the FSDP engine for this model"
        )


@contextmanager
def capture_megatron_angle_statistics(
    engine: Any, capture_point: str, inter_weight: float
) -> Iterator[HiddenStateCapture | None]:
    """While active, every forward of the Megatron ``engine`` whose micro-batch carries ``SEGMENT_IDS_KEY`` adds
    ``STATS_KEY`` (on the last pipeline stage; other stages are untouched, as verl collects nothing there).

    Yields the ``HiddenStateCapture`` of this rank (``None`` on other pipeline stages).
    """
    from verl_gain.trainer.compat import unwrap_model

    check_megatron_engine(engine)
    mpu = _parallel_state()
    chunks = list(engine.module)
    index = capture_chunk_index(len(chunks), mpu.is_pipeline_last_stage(ignore_virtual=True))
    if index is None:
        yield None
        return
    model = unwrap_model(chunks[index])
    if not getattr(model, "post_process", True):
        raise MegatronCaptureError(
            "the last model chunk of the last pipeline stage has post_process=False: this chunk layout is not "
            "verl 0.9's; the GAIN capture cannot tell where the last layer is"
        )
    point = _resolve_megatron_point(model, capture_point)
    pre_norm = find_fused_pre_norm(model.get_submodule(point.module_name), point.hook_on)
    if pre_norm is not None and tuple(pre_norm.weight.shape) != (model.config.hidden_size,):
        raise MegatronCaptureError(
            f"the norm fused into {point.module_name} has a weight of shape {tuple(pre_norm.weight.shape)}, not "
            f"[{model.config.hidden_size}] (sharded, e.g. Megatron FSDP): capture final_norm instead"
        )
    captured: deque[torch.Tensor] = deque()
    capture = HiddenStateCapture(model, point, callback=captured.append)
    config = model.config
    data_format = THD if engine.engine_config.use_remove_padding else BSHD
    layout_of_engine = getattr(type(engine), "_get_context_parallel_layout", None)
    cp_layout = layout_of_engine(model) if layout_of_engine is not None else ZIGZAG

    def micro_batch_stats(output: Any, data: Any) -> torch.Tensor | None:
        if not captured:
            raise RuntimeError("GAIN capture: a micro-batch finished without a forward through the capture point")
        hidden = captured.popleft()
        if SEGMENT_IDS_KEY not in data.keys():
            return None
        seq_lens = data["input_ids"].offsets().diff().tolist()
        layout = infer_layout(
            data_format,
            seq_lens,
            hidden.shape[0],
            tp_size=mpu.get_tensor_model_parallel_world_size(),
            tp_rank=mpu.get_tensor_model_parallel_rank(),
            sequence_parallel=bool(config.sequence_parallel),
            cp_size=mpu.get_context_parallel_world_size(),
            cp_rank=mpu.get_context_parallel_rank(),
            cp_layout=cp_layout,
            fp8_padding=getattr(config, "fp8", None) in FP8_PADDING_MODES,
        )
        sums = megatron_segment_sums(
            hidden,
            layout,
            data[SEGMENT_IDS_KEY],
            tp_group=mpu.get_tensor_model_parallel_group(),
            cp_group=mpu.get_context_parallel_group() if layout.cp_size > 1 else None,
            pre_norm=pre_norm,
        )
        return stats_tensor(sums, inter_weight)  # [b, F]

    try:
        with model_outputs_with_stats(engine, micro_batch_stats), capture:
            yield capture
    finally:
        captured.clear()

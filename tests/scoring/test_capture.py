"""Capture points found by role in real (tiny) Hugging Face models, through FSDP1/FSDP2/PEFT-style wrappers."""

import pytest
import torch
import torch.distributed as dist
from torch import nn
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)

from tests.tiny import make_tiny_model
from verl_gain.scoring.capture import (
    CapturePointError,
    HiddenStateCapture,
    canonical_module_name,
    resolve_capture_point,
)

VOCAB = 300
TINY = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    max_position_embeddings=256,
)


def _ids(length: int = 7, batch: int = 2) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_roles_resolve_to_the_last_layer_mlp_and_the_final_norm(arch):
    model = make_tiny_model(VOCAB, arch=arch, layers=3)
    point = resolve_capture_point(model)
    assert (point.module_name, point.hook_on, point.layer_index, point.num_layers) == (
        "model.layers.2.mlp",
        "input",
        2,
        3,
    )
    norm = resolve_capture_point(model, "final_norm")
    assert (norm.module_name, norm.hook_on) == ("model.norm", "output")
    assert resolve_capture_point(model, "mlp_input:0").module_name == "model.layers.0.mlp"
    assert resolve_capture_point(model, "mlp_input:-2").module_name == "model.layers.1.mlp"
    assert resolve_capture_point(model, "output:model.layers.1").module_name == "model.layers.1"


@pytest.mark.parametrize(
    "config_cls, model_cls, extra",
    [
        (MistralConfig, MistralForCausalLM, {}),
        (Qwen3Config, Qwen3ForCausalLM, {}),
        (Qwen3MoeConfig, Qwen3MoeForCausalLM, dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16)),
        (Gemma2Config, Gemma2ForCausalLM, {}),
    ],
)
def test_other_families_resolve_and_capture(config_cls, model_cls, extra):
    model = model_cls(config_cls(**TINY, **extra)).eval()
    point = resolve_capture_point(model)
    assert point.module_name == "model.layers.2.mlp"
    assert resolve_capture_point(model, "final_norm").module_name == "model.norm"
    with torch.no_grad(), HiddenStateCapture(model) as capture:
        model(input_ids=_ids())
        assert capture.pop().shape == (2, 7, 32)


def test_mlp_input_is_the_post_attention_norm_output_and_final_norm_is_the_last_hidden_state():
    model = make_tiny_model(VOCAB, layers=3)
    seen = {}
    handle = model.model.layers[2].post_attention_layernorm.register_forward_hook(
        lambda m, a, out: seen.__setitem__("norm_out", out.detach().clone())
    )
    ids = _ids()
    with torch.no_grad(), HiddenStateCapture(model, "mlp_input") as mlp, HiddenStateCapture(model, "final_norm") as fn:
        out = model(input_ids=ids, output_hidden_states=True)
        torch.testing.assert_close(mlp.pop(), seen["norm_out"], rtol=0, atol=0)
        torch.testing.assert_close(fn.pop(), out.hidden_states[-1], rtol=0, atol=0)
    handle.remove()


def test_stop_forward_skips_the_lm_head_and_a_callback_sees_every_forward():
    model = make_tiny_model(VOCAB, layers=2)
    head_calls = []
    model.lm_head.register_forward_hook(lambda *a: head_calls.append(1))
    received = []
    with torch.no_grad(), HiddenStateCapture(model, callback=received.append, stop_forward=True) as capture:
        assert capture.forward(input_ids=_ids(5, 1)) is None
        capture.forward(input_ids=_ids(9, 3))
    assert [tuple(t.shape) for t in received] == [(1, 5, 64), (3, 9, 64)]
    assert head_calls == []
    with torch.no_grad():
        model(input_ids=_ids())  # the hook is gone after the with block
    assert len(received) == 2 and head_calls == [1]


def test_pop_without_a_forward_and_bad_specs_are_explained():
    model = make_tiny_model(VOCAB, layers=2)
    with HiddenStateCapture(model) as capture, pytest.raises(RuntimeError, match="run a forward pass"):
        capture.pop()
    for spec, message in [
        ("middle", "unknown capture point"),
        ("mlp_input:9", "out of range for 2 decoder layers"),
        ("mlp_input:x", "must be an integer"),
        ("input:model.layers.7.mlp", "not found"),
        ("final_norm:3", "takes no argument"),
    ]:
        with pytest.raises(CapturePointError, match=message):
            resolve_capture_point(model, spec)
    with pytest.raises(CapturePointError, match="no decoder layers"):
        resolve_capture_point(nn.Sequential(nn.Linear(2, 2)))


def test_canonical_names_drop_every_wrapper():
    assert (
        canonical_module_name("base_model.model.model.layers.3._fsdp_wrapped_module._checkpoint_wrapped_module.mlp")
        == "model.layers.3.mlp"
    )
    assert canonical_module_name("module._orig_mod.model.norm") == "model.norm"
    assert canonical_module_name("model.layers.0.mlp") == "model.layers.0.mlp"


class PeftStyleWrapper(nn.Module):
    """The attribute layout PEFT's ``PeftModel`` gives a model (``base_model.model.<hf model>``); PEFT itself is not
    installed here, and only its naming matters for resolution."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.base_model = nn.Module()
        self.base_model.model = model

    def forward(self, **kwargs):
        return self.base_model.model(**kwargs)


def test_peft_style_names_resolve_and_capture():
    inner = make_tiny_model(VOCAB, layers=2)
    wrapped = PeftStyleWrapper(inner)
    point = resolve_capture_point(wrapped)
    assert point.module_name == "base_model.model.model.layers.1.mlp"
    assert point.canonical_name == "model.layers.1.mlp"
    assert resolve_capture_point(wrapped, "input:model.layers.1.mlp").module_name == point.module_name
    ids = _ids()
    with torch.no_grad():
        with HiddenStateCapture(inner) as plain:
            inner(input_ids=ids)
            expected = plain.pop()
        with HiddenStateCapture(wrapped) as capture:
            wrapped(input_ids=ids)
            torch.testing.assert_close(capture.pop(), expected, rtol=0, atol=0)


@pytest.fixture
def gloo_group(tmp_path):
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_fsdp1_and_fsdp2_wrapped_models_resolve_and_capture(gloo_group):
    from torch.distributed.fsdp import FullyShardedDataParallel, fully_shard
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    ids = _ids()
    reference = make_tiny_model(VOCAB, layers=2)
    with torch.no_grad(), HiddenStateCapture(reference) as capture:
        reference(input_ids=ids)
        expected = capture.pop()

    fsdp1 = FullyShardedDataParallel(
        make_tiny_model(VOCAB, layers=2), auto_wrap_policy=ModuleWrapPolicy({LlamaDecoderLayer}), device_id="cpu"
    )
    point = resolve_capture_point(fsdp1)
    assert point.module_name == "_fsdp_wrapped_module.model.layers.1._fsdp_wrapped_module.mlp"
    assert point.canonical_name == "model.layers.1.mlp"
    assert resolve_capture_point(fsdp1, "final_norm").module_name == "_fsdp_wrapped_module.model.norm"
    with torch.no_grad(), HiddenStateCapture(fsdp1) as capture:
        fsdp1(input_ids=ids)
        torch.testing.assert_close(capture.pop(), expected)

    fsdp2 = make_tiny_model(VOCAB, layers=2)
    for layer in fsdp2.model.layers:
        fully_shard(layer)
    fully_shard(fsdp2)
    assert resolve_capture_point(fsdp2).module_name == "model.layers.1.mlp"
    with torch.no_grad(), HiddenStateCapture(fsdp2) as capture:
        fsdp2(input_ids=ids)
        torch.testing.assert_close(capture.pop(), expected)

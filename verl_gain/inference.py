"""Plain Hugging Face inference pieces shared by the scorer, the evaluator and the CPU rollout server.

- ``resolve_device`` / ``resolve_dtype``: a device and dtype named on a command line or in a config.
- ``pad_rows`` / ``left_padded``: token sequences as one padded ``[B, W]`` batch (``generate`` wants left padding).
- ``cut_at_end``: a generated sequence up to and including its first end-of-sequence token (what vLLM returns).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
"""dtype names accepted wherever a dtype is named (verl's configs use both spellings)."""
AUTO = "auto"


class InferenceSettingError(ValueError):
    """A device or dtype that cannot be used here (one line that says what to pass instead)."""


def resolve_device(name: str) -> torch.device:
    """``auto`` (cuda when available, else cpu), ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not (name == "cpu" or name == "cuda" or name.startswith("cuda:")):
        raise InferenceSettingError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InferenceSettingError(f"device {name!r} requested but CUDA is not available here; use cpu")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` (bfloat16 on a GPU that supports it, else float32) or a name in ``DTYPES``."""
    if name == AUTO:
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if name not in DTYPES:
        raise InferenceSettingError(f"dtype must be auto or one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


def pad_rows(rows: Sequence[Sequence[int]], fill: int, left: bool, width: int | None = None) -> torch.Tensor:
    """``[B, W]`` int64: each row padded with ``fill`` to ``W`` (the longest row, or ``width``), left or right."""
    width = max((len(row) for row in rows), default=0) if width is None else width
    out = torch.full((len(rows), width), fill, dtype=torch.long)  # [B, W]
    for i, row in enumerate(rows):
        if len(row):
            span = slice(width - len(row), width) if left else slice(0, len(row))
            out[i, span] = torch.as_tensor(row, dtype=torch.long)
    return out


def left_padded(sequences: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, both ``[B, W]`` int64, left-padded (the layout ``generate`` continues)."""
    input_ids = pad_rows(sequences, pad_token_id, left=True)  # [B, W]
    attention_mask = pad_rows([[1] * len(s) for s in sequences], 0, left=True)  # [B, W]
    return input_ids, attention_mask


def cut_at_end(tokens: Sequence[int], end_token_ids: Collection[int]) -> tuple[list[int], bool]:
    """``(kept, truncated)``: ``tokens`` up to and including the first end token, and whether there was none."""
    for i, token in enumerate(tokens):
        if token in end_token_ids:
            return list(tokens[: i + 1]), False
    return list(tokens), True

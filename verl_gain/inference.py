"""Plain Hugging Face inference pieces shared by the scorer, the evaluator and the CPU rollout server.

- ``resolve_device`` / ``resolve_dtype``: a device and dtype named on a command line or in a config.
- ``pad_rows`` / ``left_padded``: token sequences as one padded ``[B, W]`` batch (``generate`` wants left padding).
- ``cut_at_end``: a generated sequence up to and including its first end-of-sequence token (what vLLM returns).
- ``check_model_weights`` / ``load_causal_lm``: a model folder whose weight files are complete, loaded with a one-line
  error instead of a loader traceback.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

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


SAFETENSORS_HEADER_LENGTH_BYTES = 8
"""A safetensors file starts with its JSON header's length, a little-endian u64 (the safetensors format)."""
WEIGHT_FILE_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
"""The weight files ``from_pretrained`` reads from a model folder."""


class InferenceSettingError(ValueError):
    """A device or dtype that cannot be used here (one line that says what to pass instead)."""


class ModelFilesError(ValueError):
    """A model folder whose weights are missing, truncated or unreadable (one line: which file, what to do)."""


def _safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file cannot be complete (its header promises more bytes than the file holds), or None."""
    size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            prefix = handle.read(SAFETENSORS_HEADER_LENGTH_BYTES)
            if len(prefix) < SAFETENSORS_HEADER_LENGTH_BYTES:
                return f"{size} bytes, too short for a safetensors header"
            (header_bytes,) = struct.unpack("<Q", prefix)
            if SAFETENSORS_HEADER_LENGTH_BYTES + header_bytes > size:
                return f"{size} bytes, its header alone needs {SAFETENSORS_HEADER_LENGTH_BYTES + header_bytes}"
            header = json.loads(handle.read(header_bytes))
    except (OSError, ValueError) as error:
        return f"unreadable header: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    needed = SAFETENSORS_HEADER_LENGTH_BYTES + header_bytes + max(ends, default=0)
    if needed > size:
        return f"{size} bytes of the {needed} its header describes"
    return None


def check_model_weights(model_dir: str | os.PathLike) -> None:
    """Refuse a model folder without weight files or with a truncated safetensors file, before anything loads."""
    folder = Path(model_dir)
    files = sorted({p for pattern in WEIGHT_FILE_PATTERNS for p in folder.glob(pattern) if p.is_file()})
    if not files:
        raise ModelFilesError(
            f"model {folder} has no weight files ({' or '.join(WEIGHT_FILE_PATTERNS)}): save or download it again"
        )
    for path in files:
        problem = _safetensors_problem(path) if path.suffix == ".safetensors" else None
        if problem:
            raise ModelFilesError(
                f"model weights {path} are truncated or damaged ({problem}): the download or save was interrupted; "
                "save or download the model again"
            )


def load_causal_lm(model_dir: str | os.PathLike, dtype: torch.dtype, **kwargs: Any) -> torch.nn.Module:
    """``AutoModelForCausalLM.from_pretrained`` after ``check_model_weights``; a loader failure is one line."""
    from transformers import AutoModelForCausalLM

    check_model_weights(model_dir)
    try:
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, **kwargs)
    except Exception as error:  # safetensors, torch.load and transformers raise many types for a bad file
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelFilesError(f"cannot load the model in {model_dir}: {first}") from None


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

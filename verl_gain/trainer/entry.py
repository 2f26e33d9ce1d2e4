"""Start-up of a GAIN run: check the config before any worker starts, and pick the task runners.

``python -m verl_gain.main`` calls ``check_gain_config`` on the composed config (after the CPU defaults, before
verl's own validation) and takes its task runners from ``gain_task_runners``. With ``gain.enable=false`` nothing
changes and verl's own runners run. With ``gain.enable=true`` every combination GAIN cannot honour is refused with a
message that says what to set, and the dataset class becomes ``GainRLHFDataset`` (through verl's own
``data.custom_cls`` option).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, open_dict

from verl_gain.scoring.errors import ScoringInputError
from verl_gain.scoring.scores_file import (
    count_rows,
    data_files_prompts,
    dataset_fingerprint,
    read_data_files,
    read_fingerprint,
)
from verl_gain.trainer.data_files import DataFilesError, check_data_file_types, local_data_files
from verl_gain.trainer.settings import GainSettings, check_boolean

DATASET_MODULE = "pkg://verl_gain.trainer.dataset"
DATASET_CLASS = "GainRLHFDataset"


CAPTURE_ENGINES = ("fsdp", "fsdp2", "megatron")
"""``actor_rollout_ref.actor.strategy`` values whose engines the GAIN capture supports (``verl_gain.trainer.capture``:
FSDP/FSDP2 and Megatron; veomni, torchtitan, automodel and fsdp_turbo build their model outputs elsewhere)."""


class GainConfigError(ValueError):
    """A config that GAIN sampling cannot run with (one line: what to set)."""


def _driver_data_files(config: DictConfig) -> list[str] | None:
    """``data.train_files`` as local files here (HDFS copied as verl copies it), or None when this machine cannot
    see them (a path only the cluster's nodes have, no hdfs command): the checks that read them are then left to the
    pre-pass, on the cluster. A file verl would not read at all is refused."""
    try:
        check_data_file_types(config.data.train_files)
    except DataFilesError as error:
        raise GainConfigError(str(error)) from None
    try:
        return local_data_files(config.data.train_files)
    except DataFilesError as error:
        print(f"[verl-gain] data.train_files cannot be read here, the pre-pass reads them on the cluster: {error}")
        return None


def _local_row_count(files: list[str] | None) -> int | None:
    """Rows of the training files (None when they cannot be read here)."""
    if files is None:
        return None
    try:
        return count_rows(files)
    except ScoringInputError as error:
        raise GainConfigError(f"data.train_files: {error}") from None


def _check_dataset_class(config: DictConfig) -> None:
    custom = config.data.get("custom_cls") or {}
    if not custom.get("path"):
        with open_dict(config):
            config.data.custom_cls.path = DATASET_MODULE
            config.data.custom_cls.name = DATASET_CLASS
        return
    from verl_gain.trainer.compat import load_extern_object
    from verl_gain.trainer.dataset import GainRLHFDataset

    cls = load_extern_object(custom.path, custom.name)
    if not (isinstance(cls, type) and issubclass(cls, GainRLHFDataset)):
        raise GainConfigError(
            f"data.custom_cls {custom.name!r} is not a GainRLHFDataset: GAIN needs each row's dataset position; "
            "derive your dataset from verl_gain.trainer.dataset.GainRLHFDataset (or unset data.custom_cls)"
        )


def check_gain_config(config: DictConfig) -> GainSettings:
    """Refuse, before any worker starts, what GAIN sampling cannot run with."""
    try:
        settings = GainSettings.from_config(config.gain)
    except ValueError as error:
        raise GainConfigError(str(error)) from None
    if int(config.data.get("dataloader_num_workers", 0)) != 0:
        raise GainConfigError(
            f"gain.enable=True needs data.dataloader_num_workers=0 (got {config.data.dataloader_num_workers}): "
            "loader workers prefetch batches drawn from a stale window"
        )
    if config.trainer.get("use_v1", True) and config.trainer.v1.trainer_mode != "sync":
        raise GainConfigError(
            f"gain.enable=True supports trainer.v1.trainer_mode=sync only (got {config.trainer.v1.trainer_mode!r}): "
            "async modes prefetch prompts before the window moves; set trainer.v1.trainer_mode=sync"
        )
    filter_groups = config.algorithm.get("filter_groups") or {}
    refill = (config.trainer.get("v1") or {}).get("sampler", {}).get("sync_refill_failed_groups", False)
    if filter_groups.get("enable", False) or refill:
        raise GainConfigError(
            "gain.enable=True draws exactly data.train_batch_size prompts per step and group filtering with refill "
            "draws more: set algorithm.filter_groups.enable=false and "
            "trainer.v1.sampler.sync_refill_failed_groups=false"
        )
    _check_engine_and_log_prob_pass(config, settings)
    gen_batch = config.data.get("gen_batch_size")
    if gen_batch not in (None, config.data.train_batch_size):
        raise GainConfigError(
            f"gain.enable=True draws whole steps: set data.gen_batch_size=null (got {gen_batch}; "
            f"data.train_batch_size={config.data.train_batch_size})"
        )
    files = _driver_data_files(config)
    rows = _local_row_count(files)  # None: the files can only be read on the cluster
    if rows is not None and int(config.data.train_batch_size) > rows:
        raise GainConfigError(
            f"data.train_batch_size={config.data.train_batch_size} is larger than the training set ({rows} rows): "
            "GAIN draws distinct prompts per step; lower data.train_batch_size"
        )
    if settings.scores_path and files is not None:
        _check_scores_file(config, settings, files)
    _check_reward_shape(config, settings, files)
    _check_capture_point(config, settings)
    _check_dataset_class(config)
    return settings


def _check_engine_and_log_prob_pass(config: DictConfig, settings: GainSettings) -> None:
    """The actor engine is one the capture supports, and verl runs the actor's ``compute_log_prob`` pass that the
    step angle is measured in; announce that the window holds still during critic warm-up steps."""
    strategy = str(config.actor_rollout_ref.actor.get("strategy"))
    if strategy not in CAPTURE_ENGINES:
        raise GainConfigError(
            f"gain.enable=True measures angles inside verl's FSDP/FSDP2 and Megatron engines only (got "
            f"actor_rollout_ref.actor.strategy={strategy}): use model_engine=dp (FSDP) or model_engine=megatron"
        )
    correction = config.algorithm.get("rollout_correction") or {}
    if correction.get("bypass_mode", False) and settings.step_angle != "none":
        raise GainConfigError(
            "algorithm.rollout_correction.bypass_mode=true skips the actor's compute_log_prob pass, where GAIN "
            "measures the step angle: set algorithm.rollout_correction.bypass_mode=false, or gain.step_angle=none "
            "to move the window on accuracy alone"
        )
    warmup = int(config.trainer.get("critic_warmup", 0) or 0)
    if warmup > 0:
        print(
            f"[verl-gain] trainer.critic_warmup={warmup}: verl updates no actor in the first {warmup} steps, and the "
            "GAIN window holds still during them (mu stays where it starts; batches are drawn around it)",
            flush=True,
        )


def _check_reward_shape(config: DictConfig, settings: GainSettings, files: list[str] | None) -> None:
    """Refuse, before the pre-pass, a reward whose result the step accuracy cannot be read from: the reward function
    verl's workers will call is called here on the first training row of each data source (its ground truth and an
    empty response), and its results checked (``reward_shape.check_reward_shapes``). Skipped for
    ``gain.acc_source=threshold``, training files this machine cannot read, a reward model or another reward
    manager (the step-1 check still applies)."""
    from verl_gain.trainer.reward_shape import RewardShapeError, check_reward_shapes, probe_results, reward_function

    if settings.acc_source != "acc" or files is None:
        return
    function = reward_function(config)
    if function is None:
        return
    try:
        rows = read_data_files(files).to_dict(orient="records")
    except ScoringInputError as error:
        raise GainConfigError(f"data.train_files: {error}") from None
    try:
        results = probe_results(function, rows)
    except Exception as error:  # the user's reward on a made-up response: whatever it raises, the run decides
        print(f"[verl-gain] the reward's shape is checked at step 1: the reward raised on a probe ({error!r})")
        return
    try:
        check_reward_shapes(results, legacy=not config.trainer.get("use_v1", True))
    except RewardShapeError as error:
        raise GainConfigError(str(error)) from None


def _check_scores_file(config: DictConfig, settings: GainSettings, files: list[str]) -> None:
    """The scores file exists, is a verl-gain scores file, and was computed from ``data.train_files``."""
    try:
        fingerprint, _ = read_fingerprint(settings.scores_path)
        prompts = data_files_prompts(files, config.data.prompt_key)
    except (FileNotFoundError, ScoringInputError) as error:
        raise GainConfigError(f"gain.scores_path: {error}") from None
    if fingerprint.get("dataset", {}).get("sha256") != dataset_fingerprint(prompts)["sha256"]:
        raise GainConfigError(
            f"gain.scores_path {settings.scores_path} was computed from other data than data.train_files "
            f"({fingerprint.get('dataset', {}).get('rows')} scored rows vs {len(prompts)}): run "
            "`verl-gain score --data <the training file>` or unset gain.scores_path to let the pre-pass score it"
        )


def _check_capture_point(config: DictConfig, settings: GainSettings) -> None:
    """Resolve ``gain.capture_point`` against the actor's model before Ray starts (the workers would fail only after
    start-up). The model (``hf_config_path`` or ``path``: a local folder or a hub id in the Hugging Face cache) is
    built on the meta device from its config: no weights are read. A model this machine cannot see (a remote path,
    a folder or cache that only the cluster's nodes have) is left to the workers, with a note."""
    from verl_gain.model_sources import is_hub_id, resolve_model

    model = config.actor_rollout_ref.model
    name = str(model.get("hf_config_path") or model.path)
    if not (is_hub_id(name) or (Path(name).expanduser() / "config.json").is_file()):
        return
    try:
        folder = resolve_model(name, config_only=True)
    except FileNotFoundError as error:
        print(f"[verl-gain] gain.capture_point is checked by the workers: {error}", flush=True)
        return
    from verl_gain.scoring.capture import CapturePointError, meta_model, resolve_capture_point

    trust = bool(model.get("trust_remote_code", False))
    try:
        skeleton = meta_model(folder, trust)
    except ValueError as error:  # transformers: custom code without trust_remote_code, or an unknown model type
        fix = " (set actor_rollout_ref.model.trust_remote_code=True)" if "custom code" in str(error) else ""
        raise GainConfigError(f"actor_rollout_ref.model.path={model.path}: {str(error).splitlines()[0]}{fix}") from None
    try:
        resolve_capture_point(skeleton, settings.capture_point)
    except CapturePointError as error:
        raise GainConfigError(f"gain.capture_point={settings.capture_point}: {error}") from None


def gain_enabled(config: DictConfig) -> bool:
    """Whether ``gain.enable`` is on; a value that is not a boolean (``gain.enable=no``) is refused, never truthy."""
    if "gain" not in config:
        return False
    try:
        return check_boolean("enable", config.gain.get("enable", False))
    except ValueError as error:
        raise GainConfigError(str(error)) from None


def gain_task_runners(config: DictConfig) -> tuple[type | None, type | None]:
    """``(V1 runner, legacy runner)`` of a GAIN run; ``(None, None)`` when GAIN is off (verl's own runners run)."""
    if not gain_enabled(config):
        return None, None
    from verl_gain.trainer.runners import GainTaskRunnerRemote, GainTaskRunnerV1

    return GainTaskRunnerV1, GainTaskRunnerRemote

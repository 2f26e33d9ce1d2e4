"""Everything verl 0.9 needs to run its trainer on a CPU, in one place, with a ledger.

verl 0.9 assumes an accelerator (verl issue #3266). Each entry below is one blocker found by running verl's own
trainer here (docs/cpu.md, "The ledger") and the smallest change that clears it. ``RUNTIME_PATCHES`` change
code at import time (through :func:`verl_gain.cpu.import_hooks.when_imported`, so each patch lands exactly when its
verl module is first loaded, in every process); ``CONFIG_ADAPTATIONS`` are config values the trainer needs on CPU,
applied by :func:`verl_gain.cpu.config.apply_cpu_defaults`.

Every patch asserts that the verl symbol it changes still exists and still looks as expected, so a verl upgrade
fails at the import that needs the patch, with the patch's name, instead of half-working. verl versions outside
the supported range are refused up front (``verl_gain/verl_version.py``).

Line numbers are for verl 0.9.1 (``tests/cpu/test_adaptations.py`` checks each against the installed verl).
"""

from __future__ import annotations

import functools
import inspect
import itertools
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from verl_gain.cpu.environment import HF_ROLLOUT_NAME, WITHOUT_MEGATRON_ENV
from verl_gain.cpu.import_hooks import block_package, when_imported
from verl_gain.inference import BF16, FP32
from verl_gain.verl_version import TESTED_VERL, check_verl_version, installed_verl_version

HF_ROLLOUT_MODE = "async"
HF_ROLLOUT_ADAPTER = "verl_gain.cpu.rollout.HFRolloutAdapter"
PRECISION_KEY = "cpu.precision"
"""The CPU backend's precision (``auto``, ``bf16``, ``fp32``): ``verl_gain.cpu.config.apply_cpu_defaults`` resolves it
(``verl_gain.inference.resolve_cpu_precision``) and writes the result back, and the precision entries below derive
the defaults of verl's own keys from it."""
FP32_MIXED_PRECISION = {"param_dtype": "fp32", "reduce_dtype": "fp32", "buffer_dtype": "fp32"}
"""FSDP mixed-precision setting that keeps parameters, gradient reduction and buffers in fp32 (and skips autocast)."""
BF16_MIXED_PRECISION = {"param_dtype": "bf16", "reduce_dtype": "fp32", "buffer_dtype": "fp32"}
"""verl's own default (``workers/engine/fsdp/transformer_impl.py:397``, what it runs on GPUs): FSDP2 casts the fp32
master weights (``fsdp_config.model_dtype=fp32``) to bf16 for each forward and backward under bf16 autocast, reduces
gradients in fp32 and keeps buffers and the optimizer state in fp32."""
MIXED_PRECISION = {FP32: FP32_MIXED_PRECISION, BF16: BF16_MIXED_PRECISION}
ROLLOUT_DTYPES = {FP32: "float32", BF16: "bfloat16"}
"""``rollout.dtype`` per precision: the hf server holds its weights in it (as vLLM does on a GPU)."""
LOGICAL_CPUS = 64
"""Ray CPUs declared for a CPU run: logical slots for actors, not threads (verl's own CPU tests declare 100)."""
LOG_PROB_DIFF_METRIC = "training/rollout_actor_log_prob_abs_diff_max"
"""Largest |rollout log-prob - actor log-prob| over the response tokens of a step (verl only logs the difference of
probabilities, which hides disagreement on unlikely tokens)."""


class AdaptationTargetMissing(RuntimeError):
    """A verl symbol an adaptation patches has moved or changed: the adaptation must be revisited."""


def _require(condition: bool, patch: str, detail: str) -> None:
    if not condition:
        raise AdaptationTargetMissing(
            f"CPU adaptation {patch!r} cannot be applied to verl {installed_verl_version()}: {detail}. "
            f"The adaptation was written for verl {TESTED_VERL}: see the ledger in docs/cpu.md and "
            "verl_gain/cpu/adaptations.py"
        )


def _require_attr(module: ModuleType, name: str, patch: str) -> object:
    _require(hasattr(module, name), patch, f"{module.__name__}.{name} is gone")
    return getattr(module, name)


@dataclass(frozen=True)
class RuntimePatch:
    """One code adaptation: what it changes, why, where in verl, and when it can go.

    Attributes:
        name: short identifier (used in error messages and docs/cpu.md).
        what: the change.
        why: the symptom on a CPU without it.
        verl_location: ``file:line`` in verl 0.9.1 (relative to the ``verl/`` package).
        location_text: text expected on that line (tests check the ledger against the installed verl).
        removal: the upstream change that makes this patch unnecessary.
        module: the verl module whose import triggers the patch.
        apply: ``apply(module)``; asserts its target exists, then patches; safe to call twice.
    """

    name: str
    what: str
    why: str
    verl_location: str
    location_text: str
    removal: str
    module: str
    apply: Callable[[ModuleType], None]


@dataclass(frozen=True)
class ConfigAdaptation:
    """One config value the trainer needs on CPU (applied by ``verl_gain.cpu.config.apply_cpu_defaults``).

    ``value`` is the value, or a function of the config that computes it.
    """

    key: str
    value: object
    why: str
    verl_location: str
    location_text: str
    removal: str


# --- 1. the platform ---------------------------------------------------------------------------------------------


def register_platform(platform_manager: ModuleType) -> None:
    """Register ``PlatformCPU`` as verl platform "cpu" (verl's public ``PlatformRegistry.register``)."""
    from verl_gain.cpu.platform import PLATFORM_NAME, PlatformCPU

    registry = _require_attr(platform_manager, "PlatformRegistry", "cpu_platform")
    _require(hasattr(registry, "register") and hasattr(registry, "get"), "cpu_platform", "PlatformRegistry API changed")
    if registry.get(PLATFORM_NAME) is not PlatformCPU:
        registry.register(platform=PLATFORM_NAME)(PlatformCPU)


# --- 2. process-group backend ------------------------------------------------------------------------------------


def deduplicate_backend(backend: str) -> str:
    """Drop repeated device entries from a ``torch.distributed`` backend string.

    verl asks for ``"cpu:gloo,{device}:{backend}"``; with device "cpu" and backend "gloo" that names the CPU twice,
    which ``init_process_group`` rejects ("Duplicate device type cpu"). ``"cpu:gloo,cpu:gloo"`` -> ``"cpu:gloo"``.
    """
    entries: list[str] = []
    devices: set[str] = set()
    for entry in backend.split(","):
        entry = entry.strip()
        device = entry.split(":", 1)[0] if ":" in entry else None
        if entry in entries or (device is not None and device in devices):
            continue
        entries.append(entry)
        if device is not None:
            devices.add(device)
    return ",".join(entries)


def patch_process_group_backend(distributed: ModuleType) -> None:
    """Wrap ``initialize_global_process_group_ray`` so that its backend string names each device once."""
    original = _require_attr(distributed, "initialize_global_process_group_ray", "gloo_backend")
    if getattr(original, "__verl_gain_patched__", False):
        return
    parameters = inspect.signature(original).parameters
    _require(
        "backend" in parameters and "timeout_second" in parameters,
        "gloo_backend",
        "initialize_global_process_group_ray(timeout_second, backend) changed its signature",
    )
    get_device_name = _require_attr(distributed, "get_device_name", "gloo_backend")
    get_nccl_backend = _require_attr(distributed, "get_nccl_backend", "gloo_backend")

    @functools.wraps(original)
    def initialize_global_process_group_ray(timeout_second=None, backend=None):
        # Same default as verl (utils/distributed.py:89), with the duplicate CPU entry removed.
        backend = backend or f"cpu:gloo,{get_device_name()}:{get_nccl_backend()}"
        return original(timeout_second=timeout_second, backend=deduplicate_backend(backend))

    initialize_global_process_group_ray.__verl_gain_patched__ = True
    distributed.initialize_global_process_group_ray = initialize_global_process_group_ray


def use_patched_process_group_backend(engine_workers: ModuleType) -> None:
    """``engine_workers`` imported the function by name: point that name at the wrapped one too."""
    import verl.utils.distributed as distributed

    _require_attr(engine_workers, "initialize_global_process_group_ray", "gloo_backend")
    patch_process_group_backend(distributed)
    engine_workers.initialize_global_process_group_ray = distributed.initialize_global_process_group_ray


# --- 3. FSDP engine lookup and 4. unpinned CPU offload -----------------------------------------------------------

FSDP_BACKENDS = ("fsdp", "fsdp2")
FSDP_ENGINE_CLASSES = {"language_model": "FSDPEngineWithLMHead", "value_model": "FSDPEngineWithValueHead"}


def register_fsdp_engines_for_cpu(transformer_impl: ModuleType) -> None:
    """Register verl's FSDP engines (registered for cuda/npu only) for device "cpu" as well."""
    from verl.workers.engine.base import EngineRegistry

    from verl_gain.cpu.platform import DEVICE_NAME

    engines = _require_attr(EngineRegistry, "_engines", "fsdp_engine_on_cpu")
    for model_type, class_name in FSDP_ENGINE_CLASSES.items():
        engine_class = _require_attr(transformer_impl, class_name, "fsdp_engine_on_cpu")
        for backend in FSDP_BACKENDS:
            registered = engines.get(model_type, {}).get(backend, {})
            _require(
                registered.get("cuda") is engine_class,
                "fsdp_engine_on_cpu",
                f"{class_name} is no longer the cuda engine for ({model_type}, {backend})",
            )
            if DEVICE_NAME not in registered:
                EngineRegistry.register(model_type=model_type, backend=backend, device=DEVICE_NAME)(engine_class)


def make_unpinned_offload_policy(policy_class: type) -> type:
    """A subclass of FSDP2's ``CPUOffloadPolicy`` that never pins memory (pinning needs an accelerator)."""

    class UnpinnedCPUOffloadPolicy(policy_class):
        __verl_gain_patched__ = True

        def __init__(self, pin_memory: bool = False, **kwargs):
            super().__init__(pin_memory=False, **kwargs)

    UnpinnedCPUOffloadPolicy.__qualname__ = UnpinnedCPUOffloadPolicy.__name__ = "UnpinnedCPUOffloadPolicy"
    return UnpinnedCPUOffloadPolicy


def patch_cpu_offload_policy(transformer_impl: ModuleType) -> None:
    """The FSDP engine forces ``CPUOffloadPolicy(pin_memory=True)`` on the reference model: make it unpinned."""
    policy_class = _require_attr(transformer_impl, "CPUOffloadPolicy", "unpinned_cpu_offload")
    if getattr(policy_class, "__verl_gain_patched__", False):
        return
    engine = _require_attr(transformer_impl, "FSDPEngine", "unpinned_cpu_offload")
    _require(
        "CPUOffloadPolicy(pin_memory=True)" in inspect.getsource(engine),
        "unpinned_cpu_offload",
        "FSDPEngine no longer builds CPUOffloadPolicy(pin_memory=True)",
    )
    transformer_impl.CPUOffloadPolicy = make_unpinned_offload_policy(policy_class)


def patch_fsdp_engine_module(transformer_impl: ModuleType) -> None:
    register_fsdp_engines_for_cpu(transformer_impl)
    patch_cpu_offload_policy(transformer_impl)


# --- 5. the Hugging Face rollout backend --------------------------------------------------------------------------


def register_rollout_adapter(rollout_base: ModuleType) -> None:
    """Name the worker-side adapter of the "hf" rollout in verl's rollout registry (a private dict, no API)."""
    registry = _require_attr(rollout_base, "_ROLLOUT_REGISTRY", "hf_rollout")
    _require(isinstance(registry, dict) and ("vllm", "async") in registry, "hf_rollout", "_ROLLOUT_REGISTRY changed")
    registry.setdefault((HF_ROLLOUT_NAME, HF_ROLLOUT_MODE), HF_ROLLOUT_ADAPTER)


def load_hf_replica() -> type:
    # Imported lazily: the rollout module imports verl's worker stack, which must not load during `import verl`.
    from verl_gain.cpu.rollout import HFRolloutReplica

    return HFRolloutReplica


def register_rollout_replica(replica: ModuleType) -> None:
    """Register the server-side replica of the "hf" rollout (verl's public ``RolloutReplicaRegistry.register``)."""
    registry = _require_attr(replica, "RolloutReplicaRegistry", "hf_rollout")
    _require(hasattr(registry, "register") and hasattr(registry, "_registry"), "hf_rollout", "registry API changed")
    if HF_ROLLOUT_NAME not in registry._registry:
        registry.register(HF_ROLLOUT_NAME, load_hf_replica)


# --- 6. log-prob agreement metric --------------------------------------------------------------------------------


def rollout_actor_log_prob_diff_max(data) -> float:
    """max |log pi_rollout(y_t) - log pi_actor(y_t)| over response tokens (``nan`` when there are none).

    ``data.batch`` holds ``rollout_log_probs`` and ``old_log_probs`` [B, T_resp] and ``response_mask`` [B, T_resp]
    (or an ``attention_mask`` whose last T_resp columns cover the response), as verl's ``calculate_debug_metrics``
    reads them.
    """
    import torch

    rollout = data.batch["rollout_log_probs"]  # [B, T_resp]
    actor = data.batch["old_log_probs"]  # [B, T_resp]
    if "response_mask" in data.batch.keys():
        mask = data.batch["response_mask"]  # [B, T_resp]
    else:
        mask = data.batch["attention_mask"][:, -rollout.shape[1] :]  # [B, T_resp]
    mask = mask.bool()
    if not mask.any():
        return float("nan")
    return torch.masked_select((rollout.float() - actor.float()).abs(), mask).max().item()


def wrap_debug_metrics(original: Callable) -> Callable:
    """``calculate_debug_metrics`` plus ``LOG_PROB_DIFF_METRIC`` (verl compares probabilities, not log-probs)."""
    if getattr(original, "__verl_gain_patched__", False):
        return original

    @functools.wraps(original)
    def calculate_debug_metrics(data):
        metrics = original(data)
        metrics[LOG_PROB_DIFF_METRIC] = rollout_actor_log_prob_diff_max(data)
        return metrics

    calculate_debug_metrics.__verl_gain_patched__ = True
    return calculate_debug_metrics


def patch_debug_metrics(debug_metrics: ModuleType) -> None:
    original = _require_attr(debug_metrics, "calculate_debug_metrics", "log_prob_agreement_metric")
    debug_metrics.calculate_debug_metrics = wrap_debug_metrics(original)


def use_patched_debug_metrics(trainer_base: ModuleType) -> None:
    """The V1 trainer imported ``calculate_debug_metrics`` by name: point that name at the wrapped one."""
    original = _require_attr(trainer_base, "calculate_debug_metrics", "log_prob_agreement_metric")
    trainer_base.calculate_debug_metrics = wrap_debug_metrics(original)


# --- 7. reproducible runs: seeded rollout requests, a V1 batch order independent of timing ----------------------------

TRAJECTORY_FIELDS = ("step", "sample_index", "rollout_n", "validate")
"""What verl's agent loop knows of each request (``get_trajectory_info``), the inputs of its seed."""
V1_SESSION_ARG = "session_id"
"""Which of a sample's ``rollout.n`` responses a V1 agent-loop call is (``AgentLoopWorkerTQ._run_prompt`` passes
``session_id=i``; the legacy trainer repeats the row instead and the trajectory's ``rollout_n`` counts the copies)."""


def wrap_run_agent_loop(original: Callable) -> Callable:
    """``AgentLoopWorker._run_agent_loop`` that puts the request's seed in its sampling parameters (unless set).

    The seed comes from ``rollout.seed``, the trajectory and the V1 session (``verl_gain.cpu.sampling.request_seed``):
    the same run seed, step, sample and response number give the same seed, whichever server the request reaches and
    whatever it is batched with.
    """
    if getattr(original, "__verl_gain_patched__", False):
        return original
    from verl_gain.cpu.sampling import SEED_PARAM, request_seed

    @functools.wraps(original)
    def _run_agent_loop(self, sampling_params, trajectory, *args, **kwargs):
        if SEED_PARAM not in sampling_params:
            seed = request_seed(
                self.rollout_config.seed,
                trajectory["step"],
                trajectory["validate"],
                trajectory["sample_index"],
                trajectory["rollout_n"],
                kwargs.get(V1_SESSION_ARG, 0),
            )
            sampling_params = {**sampling_params, SEED_PARAM: seed}
        return original(self, sampling_params, trajectory, *args, **kwargs)

    _run_agent_loop.__verl_gain_patched__ = True
    return _run_agent_loop


def patch_agent_loop_seeds(agent_loop: ModuleType) -> None:
    worker = _require_attr(agent_loop, "AgentLoopWorker", "seeded_rollout_requests")
    original = _require_attr(worker, "_run_agent_loop", "seeded_rollout_requests")
    parameters = list(inspect.signature(original).parameters)
    _require(
        parameters[:3] == ["self", "sampling_params", "trajectory"],
        "seeded_rollout_requests",
        "AgentLoopWorker._run_agent_loop(self, sampling_params, trajectory, ...) changed its signature",
    )
    trajectory_source = inspect.getsource(_require_attr(agent_loop, "get_trajectory_info", "seeded_rollout_requests"))
    _require(
        all(f'"{name}"' in trajectory_source for name in TRAJECTORY_FIELDS),
        "seeded_rollout_requests",
        f"get_trajectory_info no longer records {TRAJECTORY_FIELDS}",
    )
    worker._run_agent_loop = wrap_run_agent_loop(original)


class SequentialUUIDs:
    """Stands in for the ``uuid`` module in verl's V1 trainer: ``uuid4()`` counts up (0, 1, 2, ... in the low bits of
    a version-4 UUID), every other name is the real module's.

    The V1 trainer names each prompt group by a random ``uuid4``; with a counter, a rerun names the same prompt the
    same way, in data-loader order, so that sorting a batch by key (``deterministic_trajectory_order``) is the same
    order in every run. The names stay unique within the process, which is all the trainer needs of them.
    """

    def __init__(self, module: ModuleType):
        self._module = module
        self._counter = itertools.count()

    def uuid4(self) -> uuid.UUID:
        return uuid.UUID(int=next(self._counter), version=4)  # the counter stays below the version/variant bits

    def __getattr__(self, name: str) -> object:
        return getattr(self._module, name)


def use_sequential_prompt_uids(trainer_base: ModuleType) -> None:
    module = _require_attr(trainer_base, "uuid", "reproducible_v1_batches")
    if isinstance(module, SequentialUUIDs):
        return
    trainer = _require_attr(trainer_base, "PPOTrainer", "reproducible_v1_batches")
    _require(
        "uuid.uuid4()" in inspect.getsource(trainer),
        "reproducible_v1_batches",
        "PPOTrainer no longer names prompt groups with uuid.uuid4()",
    )
    trainer_base.uuid = SequentialUUIDs(module)


def trajectory_order(key: str) -> tuple[str, int, int]:
    """Sort key of a V1 trajectory key ``{uid}_{session_id}_{index}`` (verl sorts its rollout dumps the same way)."""
    parts = key.rsplit("_", 2)
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        return parts[0], int(parts[1]), int(parts[2])
    return key, 0, 0


def wrap_materialize_batch(original: Callable) -> Callable:
    """``ReplayBuffer._materialize_batch`` returning its keys (and their tags) sorted by ``trajectory_order``.

    verl lists a batch's trajectories in the order they finished, which changes from run to run; every float sum the
    trainer takes over the batch (losses, gradients, metrics) then changes in its last bits.
    """
    if getattr(original, "__verl_gain_patched__", False):
        return original

    @functools.wraps(original)
    def _materialize_batch(self, *args, **kwargs):
        batch = original(self, *args, **kwargs)
        order = sorted(range(len(batch.keys)), key=lambda i: trajectory_order(batch.keys[i]))
        batch.keys = [batch.keys[i] for i in order]
        batch.tags = [batch.tags[i] for i in order]
        return batch

    _materialize_batch.__verl_gain_patched__ = True
    return _materialize_batch


def patch_replay_buffer_order(replay_buffer: ModuleType) -> None:
    buffer = _require_attr(replay_buffer, "ReplayBuffer", "reproducible_v1_batches")
    original = _require_attr(buffer, "_materialize_batch", "reproducible_v1_batches")
    _require(
        "return KVBatchMeta(partition_id=partition_id, keys=keys, tags=tags)" in inspect.getsource(original),
        "reproducible_v1_batches",
        "ReplayBuffer._materialize_batch no longer returns KVBatchMeta(keys, tags)",
    )
    buffer._materialize_batch = wrap_materialize_batch(original)


REPLAY_BUFFER_POLL_S = 0.05
"""How often the V1 replay buffer checks whether a step's rollouts are done, on CPU. verl polls every 2 s
(``ReplayBuffer(poll_interval=2.0)``, a default the trainer does not expose), which is noise next to a GPU step of
minutes but most of a tiny CPU step (the end-to-end tests' generation takes ~0.3 s and was logged as 2.01 s every
step); each poll only compares key sets, so polling 40x as often costs nothing measurable."""


def wrap_replay_buffer_init(original: Callable) -> Callable:
    """``ReplayBuffer.__init__`` polling every ``REPLAY_BUFFER_POLL_S`` at most (verl's 2 s default otherwise)."""
    if getattr(original, "__verl_gain_patched__", False):
        return original

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.poll_interval = min(self.poll_interval, REPLAY_BUFFER_POLL_S)

    __init__.__verl_gain_patched__ = True
    return __init__


def patch_replay_buffer_poll(replay_buffer: ModuleType) -> None:
    buffer = _require_attr(replay_buffer, "ReplayBuffer", "fast_replay_buffer_poll")
    _require(
        "self.poll_interval = poll_interval" in inspect.getsource(buffer.__init__)
        and "time.sleep(self.poll_interval)" in inspect.getsource(buffer),
        "fast_replay_buffer_poll",
        "ReplayBuffer no longer sleeps poll_interval between checks",
    )
    buffer.__init__ = wrap_replay_buffer_init(buffer.__init__)


RUNTIME_PATCHES: tuple[RuntimePatch, ...] = (
    RuntimePatch(
        name="cpu_platform",
        what='register PlatformCPU as platform "cpu" (device "cpu", backend gloo, Ray resource "GPU")',
        why="verl has no CPU platform: without one it falls back to CUDA, or fails with \"Unknown platform 'cpu'\"",
        verl_location="plugin/platform/platform_manager.py:125",
        location_text="Unknown platform",
        removal="verl ships a CPU platform",
        module="verl.plugin.platform.platform_manager",
        apply=register_platform,
    ),
    RuntimePatch(
        name="gloo_backend",
        what="initialize_global_process_group_ray: drop the duplicate 'cpu:gloo' from the backend string",
        why='init_process_group("cpu:gloo,cpu:gloo") fails with "Duplicate device type cpu"',
        verl_location="utils/distributed.py:89",
        location_text='backend = backend or f"cpu:gloo,{get_device_name()}:{get_nccl_backend()}"',
        removal="verl de-duplicates the backend string when the device is cpu",
        module="verl.utils.distributed",
        apply=patch_process_group_backend,
    ),
    RuntimePatch(
        name="gloo_backend_worker_import",
        what="engine_workers' own reference to initialize_global_process_group_ray points at the wrapped function",
        why="engine_workers imports the function by name, so patching verl.utils.distributed alone could miss it",
        verl_location="workers/engine_workers.py:38",
        location_text="from verl.utils.distributed import initialize_global_process_group_ray",
        removal="with gloo_backend",
        module="verl.workers.engine_workers",
        apply=use_patched_process_group_backend,
    ),
    RuntimePatch(
        name="fsdp_engine_on_cpu",
        what='register FSDPEngineWithLMHead / FSDPEngineWithValueHead for device "cpu" (fsdp and fsdp2)',
        why="No engine registered for device='cpu' (the FSDP engines are registered for cuda and npu only)",
        verl_location="workers/engine/fsdp/transformer_impl.py:1143",
        location_text='@EngineRegistry.register(model_type="language_model", backend=["fsdp", "fsdp2"]',
        removal='verl registers its FSDP engines with device=["cuda", "npu", "cpu"]',
        module="verl.workers.engine.fsdp.transformer_impl",
        apply=patch_fsdp_engine_module,
    ),
    RuntimePatch(
        name="unpinned_cpu_offload",
        what="the FSDP engine module's CPUOffloadPolicy never pins memory",
        why="the reference model is forced onto CPUOffloadPolicy(pin_memory=True): 'Cannot access accelerator device'",
        verl_location="workers/engine/fsdp/transformer_impl.py:462",
        location_text="offload_policy = CPUOffloadPolicy(pin_memory=True)",
        removal="verl sets pin_memory only when the device is an accelerator",
        module="verl.workers.engine.fsdp.transformer_impl",
        apply=patch_fsdp_engine_module,
    ),
    RuntimePatch(
        name="hf_rollout",
        what=f'register rollout "{HF_ROLLOUT_NAME}": adapter in _ROLLOUT_REGISTRY, replica in RolloutReplicaRegistry',
        why="rollout needs vLLM/SGLang/TensorRT-LLM, none of which runs without a GPU ('vllm version None')",
        verl_location="workers/rollout/base.py:89",
        location_text="_ROLLOUT_REGISTRY = {",
        removal="verl exposes a public rollout-adapter registration (the replica side already has one)",
        module="verl.workers.rollout.base",
        apply=register_rollout_adapter,
    ),
    RuntimePatch(
        name="hf_rollout_replica",
        what=f'RolloutReplicaRegistry.register("{HF_ROLLOUT_NAME}", loader) (public API, lazy import)',
        why="verl resolves the server replica by rollout name",
        verl_location="workers/rollout/replica.py:312",
        location_text="class RolloutReplicaRegistry:",
        removal="never (this is the supported way to add a rollout backend)",
        module="verl.workers.rollout.replica",
        apply=register_rollout_replica,
    ),
    RuntimePatch(
        name="log_prob_agreement_metric",
        what=f"calculate_debug_metrics also reports {LOG_PROB_DIFF_METRIC}",
        why="verl only logs |p_rollout - p_actor| (probabilities); the CPU backend's invariant is in log-probs",
        verl_location="utils/debug/metrics.py:63",
        location_text="def calculate_debug_metrics(data: DataProto) -> dict:",
        removal="verl logs the max log-prob difference itself",
        module="verl.utils.debug.metrics",
        apply=patch_debug_metrics,
    ),
    RuntimePatch(
        name="log_prob_agreement_metric_v1_import",
        what="the V1 trainer's own reference to calculate_debug_metrics points at the wrapped function",
        why="trainer_base imports calculate_debug_metrics by name",
        verl_location="trainer/ppo/v1/trainer_base.py:81",
        location_text="from verl.utils.debug.metrics import calculate_debug_metrics",
        removal="with log_prob_agreement_metric",
        module="verl.trainer.ppo.v1.trainer_base",
        apply=use_patched_debug_metrics,
    ),
    RuntimePatch(
        name="seeded_rollout_requests",
        what="the agent loop adds a per-request seed from rollout.seed, the step, the sample and its rollout number "
        "to each request's sampling_params",
        why="the server sees only prompt ids and a random request id: without a seed per request, a rerun with the "
        "same rollout.seed samples other responses once requests are batched or routed differently",
        verl_location="experimental/agent_loop/agent_loop.py:661",
        location_text="async def _run_agent_loop(",
        removal="verl passes a per-request seed to every rollout server (today: vLLM under full_determinism only, "
        "one seed for all requests of a replica)",
        module="verl.experimental.agent_loop.agent_loop",
        apply=patch_agent_loop_seeds,
    ),
    RuntimePatch(
        name="reproducible_v1_batches",
        what="the V1 trainer names prompt groups by a counter instead of uuid4 (trainer_base's uuid module)",
        why="the V1 batch lists trajectories in the order they finished: a rerun with the same seed sums losses, "
        "gradients and metrics in another order and differs in the last bits (~1e-7), then drifts",
        verl_location="trainer/ppo/v1/trainer_base.py:1476",
        location_text='batch_dict["uid"] = np.array([str(uuid.uuid4())',
        removal="verl orders the V1 batch deterministically",
        module="verl.trainer.ppo.v1.trainer_base",
        apply=use_sequential_prompt_uids,
    ),
    RuntimePatch(
        name="reproducible_v1_batches_order",
        what="ReplayBuffer._materialize_batch sorts the batch's trajectory keys (prompt uid, session, output)",
        why="with reproducible_v1_batches: the sorted order is the same in every run",
        verl_location="trainer/ppo/v1/replay_buffer.py:394",
        location_text="def _materialize_batch(",
        removal="with reproducible_v1_batches",
        module="verl.trainer.ppo.v1.replay_buffer",
        apply=patch_replay_buffer_order,
    ),
    RuntimePatch(
        name="fast_replay_buffer_poll",
        what=f"the V1 replay buffer polls for finished rollouts every {REPLAY_BUFFER_POLL_S * 1000:.0f} ms, not 2 s",
        why="every V1 step waits for the next 2 s poll after its rollouts are done: on CPU, where a tiny model's step "
        "takes under a second, that wait was most of the step (timing_s/gen 2.01 s for ~0.3 s of generation)",
        verl_location="trainer/ppo/v1/replay_buffer.py:144",
        location_text="poll_interval: float = 2.0,",
        removal="verl exposes the poll interval in its config (then set it in CONFIG_ADAPTATIONS)",
        module="verl.trainer.ppo.v1.replay_buffer",
        apply=patch_replay_buffer_poll,
    ),
)


CONFIG_ADAPTATIONS: tuple[ConfigAdaptation, ...] = (
    ConfigAdaptation(
        key="actor_rollout_ref.model.override_config.attn_implementation",
        value="sdpa",
        why="verl asks transformers for flash_attention_2, which needs CUDA",
        verl_location="workers/config/model.py:185",
        location_text='attn_implementation = self.override_config.get("attn_implementation", "flash_attention_2")',
        removal="never on CPU (flash-attention is CUDA-only)",
    ),
    ConfigAdaptation(
        key="actor_rollout_ref.model.use_remove_padding",
        value=False,
        why="remove-padding packs sequences for flash-attention's varlen kernels",
        verl_location="workers/engine_workers.py:114",
        location_text='self.engine_config.use_remove_padding = self.model_config.get("use_remove_padding", False)',
        removal="never on CPU",
    ),
    ConfigAdaptation(
        key="actor_rollout_ref.actor.use_torch_compile",
        value=False,
        why="torch.compile of the entropy kernel needs a C++ toolchain and minutes of compile time on a CPU",
        verl_location="workers/engine/fsdp/transformer_impl.py:184",
        location_text="torch.compile(entropy_from_logits, dynamic=True)",
        removal="never (a choice for short CPU runs; set it to True to try inductor)",
    ),
    ConfigAdaptation(
        key="actor_rollout_ref.actor.fsdp_config.use_torch_compile",
        value=False,
        why="as actor.use_torch_compile (the engine reads this copy)",
        verl_location="workers/engine/fsdp/transformer_impl.py:185",
        location_text="if self.engine_config.use_torch_compile",
        removal="as above",
    ),
    ConfigAdaptation(
        key="actor_rollout_ref.ref.fsdp_config.use_torch_compile",
        value=False,
        why="as actor.use_torch_compile, for the reference model",
        verl_location="workers/engine/fsdp/transformer_impl.py:185",
        location_text="if self.engine_config.use_torch_compile",
        removal="as above",
    ),
    ConfigAdaptation(
        key="actor_rollout_ref.actor.fsdp_config.mixed_precision",
        value=lambda config: MIXED_PRECISION[config.cpu.precision],
        why=f"follows {PRECISION_KEY}: fp32 keeps actor and rollout log-probs within ~1e-6; bf16 is verl's GPU "
        "default (bf16 compute, fp32 master weights and reductions), ~2x faster on a CPU with bf16 instructions",
        verl_location="workers/engine/fsdp/transformer_impl.py:397",
        location_text="param_dtype = torch.bfloat16",
        removal="never (a precision choice: verl's default bf16 is slow on a CPU without bf16 instructions)",
    ),
    ConfigAdaptation(
        key="actor_rollout_ref.ref.fsdp_config.mixed_precision",
        value=lambda config: MIXED_PRECISION[config.cpu.precision],
        why="as actor.fsdp_config.mixed_precision, for the reference model (KL term)",
        verl_location="workers/engine/fsdp/transformer_impl.py:397",
        location_text="param_dtype = torch.bfloat16",
        removal="as above",
    ),
    ConfigAdaptation(
        key="actor_rollout_ref.rollout.dtype",
        value=lambda config: ROLLOUT_DTYPES[config.cpu.precision],
        why=f"follows {PRECISION_KEY}: the hf server's weights, in the actor's compute precision",
        verl_location="workers/config/rollout.py:184",
        location_text='dtype: str = "bfloat16"',
        removal="as above",
    ),
    ConfigAdaptation(
        key="actor_rollout_ref.actor.strategy",
        value="fsdp2",
        why="FSDP2 (fully_shard) runs on a CPU device mesh over gloo; the FSDP1 path (a device id, CPUOffload of "
        "the reference model) is untested on CPU and refused",
        verl_location="workers/engine/fsdp/transformer_impl.py:441",
        location_text="device_id=get_device_id(),",
        removal="when FSDP1 is tested on CPU",
    ),
    ConfigAdaptation(
        key="actor_rollout_ref.rollout.name",
        value=HF_ROLLOUT_NAME,
        why="vLLM, SGLang and TensorRT-LLM need a GPU",
        verl_location="workers/rollout/base.py:89",
        location_text="_ROLLOUT_REGISTRY = {",
        removal="never on CPU",
    ),
    ConfigAdaptation(
        key="ray_kwargs.ray_init.num_gpus",
        value=lambda config: config.trainer.nnodes * config.trainer.n_gpus_per_node,
        why="verl's resource pools hard-code use_gpu=True; logical GPUs give each trainer worker its slot",
        verl_location="single_controller/ray/base.py:210",
        location_text="use_gpu=True,",
        removal="verl lets resource pools run without accelerators",
    ),
    ConfigAdaptation(
        key="ray_kwargs.ray_init.num_cpus",
        value=LOGICAL_CPUS,
        why="each placement-group bundle asks for max_colocate_count CPUs; on a 2-core machine scheduling hangs",
        verl_location="single_controller/ray/base.py:146",
        location_text='bundle = {"CPU": self.max_colocate_count}',
        removal="never (Ray CPUs are logical: this does not oversubscribe threads)",
    ),
)


@dataclass(frozen=True)
class ImportBlock:
    """A package kept out of the processes of a CPU training run (``WITHOUT_MEGATRON_ENV`` set)."""

    name: str
    package: str
    why: str
    verl_location: str
    location_text: str
    removal: str


MEGATRON_IMPORT_BLOCK = ImportBlock(
    name="no_megatron_import",
    package="megatron",
    why="verl imports its Megatron engine in every process whenever megatron-core is installed (~2.5 s and a screen "
    "of Transformer Engine / Apex warnings per process), although the CPU backend refuses the Megatron engine "
    "(actor.strategy=fsdp2 only); verl then registers no Megatron engine, as on a machine without megatron-core",
    verl_location="workers/engine/__init__.py:65",
    location_text="from .megatron import MegatronEngine, MegatronEngineWithLMHead, MegatronEngineWithValueHead",
    removal="verl imports an engine only when its backend is configured",
)


_installed = False


def install() -> None:
    """Register every runtime patch to apply when its verl module is imported (idempotent, cheap); in a CPU training
    run (``WITHOUT_MEGATRON_ENV``), also keep megatron-core out of the process."""
    global _installed
    if _installed:
        return
    check_verl_version()
    if os.environ.get(WITHOUT_MEGATRON_ENV) == "1":
        block_package(MEGATRON_IMPORT_BLOCK.package, f"CPU adaptation {MEGATRON_IMPORT_BLOCK.name}")
    for patch in RUNTIME_PATCHES:
        when_imported(patch.module, patch.apply)
    _installed = True

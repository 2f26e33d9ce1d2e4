"""The CPU adaptations: each one's verl target, its effect in a CPU process, and its refusal when the target moves.

The effects are checked in a fresh process that starts like a Ray worker of a CPU run (``VERL_PLATFORM=cpu``, the
plugin loaded through verl's ``verl.plugins`` entry point on ``import verl``), so that this test session's verl
modules stay unpatched.
"""

import inspect
import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest
import torch
import verl
from tensordict import TensorDict
from torch.distributed.fsdp import CPUOffloadPolicy
from transfer_queue import KVBatchMeta
from verl import DataProto

from verl_gain.cpu.adaptations import (
    CONFIG_ADAPTATIONS,
    LOG_PROB_DIFF_METRIC,
    MEGATRON_IMPORT_BLOCK,
    REPLAY_BUFFER_POLL_S,
    RUNTIME_PATCHES,
    V1_SESSION_ARG,
    AdaptationTargetMissing,
    SequentialUUIDs,
    deduplicate_backend,
    make_unpinned_offload_policy,
    wrap_debug_metrics,
    wrap_materialize_batch,
    wrap_replay_buffer_init,
    wrap_run_agent_loop,
)
from verl_gain.cpu.environment import WITHOUT_MEGATRON_ENV
from verl_gain.cpu.platform import PlatformCPU
from verl_gain.cpu.sampling import SEED_PARAM, request_seed
from verl_gain.verl_version import UnsupportedVerlVersion, check_verl_version

VERL_ROOT = Path(verl.__file__).parent
WORKER_PROCESS_TIMEOUT_S = 300

# Runs in a process like a CPU run's Ray worker; prints one JSON object of observations.
WORKER_SCRIPT = textwrap.dedent(
    """
    import json, os
    import torch
    import verl
    from verl.plugin.platform import get_platform
    facts = {"platform": type(get_platform()).__name__}

    import verl.utils.distributed as distributed
    import verl.workers.engine_workers as engine_workers
    from verl.workers.engine.base import EngineRegistry
    import verl.workers.engine.fsdp.transformer_impl as transformer_impl
    from verl.workers.rollout.base import get_rollout_class
    from verl.workers.rollout.replica import get_rollout_replica_class
    import verl.utils.debug.metrics as debug_metrics
    import verl.trainer.ppo.v1.trainer_base as trainer_base
    import verl.experimental.agent_loop.agent_loop as agent_loop

    facts["pg_wrapped"] = getattr(distributed.initialize_global_process_group_ray, "__verl_gain_patched__", False)
    facts["pg_same_in_workers"] = (
        engine_workers.initialize_global_process_group_ray is distributed.initialize_global_process_group_ray
    )
    facts["lm_engine"] = EngineRegistry.get_engine_cls("language_model", "fsdp2").__name__
    facts["value_engine"] = EngineRegistry.get_engine_cls("value_model", "fsdp").__name__
    policy = transformer_impl.CPUOffloadPolicy(pin_memory=True)
    from torch.distributed.fsdp import CPUOffloadPolicy
    facts["offload_pin_memory"] = policy.pin_memory
    facts["offload_is_policy"] = isinstance(policy, CPUOffloadPolicy)
    facts["rollout_adapter"] = get_rollout_class("hf", "async").__name__
    facts["rollout_replica"] = get_rollout_replica_class("hf").__name__
    facts["metrics_wrapped"] = getattr(debug_metrics.calculate_debug_metrics, "__verl_gain_patched__", False)
    facts["v1_metrics_wrapped"] = trainer_base.calculate_debug_metrics is debug_metrics.calculate_debug_metrics
    import verl.trainer.ppo.v1.replay_buffer as replay_buffer
    facts["v1_uids_sequential"] = type(trainer_base.uuid).__name__ == "SequentialUUIDs"
    facts["v1_batch_sorted"] = getattr(
        replay_buffer.ReplayBuffer._materialize_batch, "__verl_gain_patched__", False
    )
    facts["agent_loop_seeded"] = getattr(
        agent_loop.AgentLoopWorker._run_agent_loop, "__verl_gain_patched__", False
    )
    facts["v1_poll_interval"] = replay_buffer.ReplayBuffer("sync", {}, None, "drop", {}).poll_interval
    import sys
    import verl.workers.engine as engines
    facts["megatron_imported"] = any(name.split(".")[0] == "megatron" for name in sys.modules)
    facts["megatron_engine"] = engines.MegatronEngine is not None

    # Idempotent: applying every patch again changes nothing and raises nothing.
    import importlib
    from verl_gain.cpu import adaptations
    before = distributed.initialize_global_process_group_ray
    adaptations.install()
    for patch in adaptations.RUNTIME_PATCHES:
        patch.apply(importlib.import_module(patch.module))
    facts["idempotent"] = distributed.initialize_global_process_group_ray is before

    os.environ.update({"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": os.environ["PORT"]})
    engine_workers.initialize_global_process_group_ray(timeout_second=60)
    tensor = torch.ones(3)
    torch.distributed.all_reduce(tensor)
    facts["pg_backend"] = str(torch.distributed.get_backend())
    facts["pg_all_reduce"] = tensor.tolist()
    torch.distributed.destroy_process_group()
    print("FACTS " + json.dumps(facts))
    """
)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def worker_facts():
    # The plugin must arrive through verl's entry point alone: VERL_USE_EXTERNAL_MODULES is left out.
    env = {key: value for key, value in os.environ.items() if key != "VERL_USE_EXTERNAL_MODULES"}
    env.update({"VERL_PLATFORM": "cpu", WITHOUT_MEGATRON_ENV: "1", "PORT": str(free_port()), "HF_HUB_OFFLINE": "1"})
    result = subprocess.run(
        [sys.executable, "-c", WORKER_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=WORKER_PROCESS_TIMEOUT_S,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("FACTS ")]
    assert result.returncode == 0 and lines, f"worker process failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return json.loads(lines[-1][len("FACTS ") :])


# --- the ledger points at the installed verl ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    (*RUNTIME_PATCHES, *CONFIG_ADAPTATIONS, MEGATRON_IMPORT_BLOCK),
    ids=lambda e: e.name if hasattr(e, "name") else e.key,
)
def test_ledger_location_matches_installed_verl(entry):
    relative, line = entry.verl_location.rsplit(":", 1)
    source = (VERL_ROOT / relative).read_text().splitlines()
    assert entry.location_text in source[int(line) - 1], (
        f"{entry.verl_location} no longer holds {entry.location_text!r}"
    )


@pytest.mark.parametrize("patch", RUNTIME_PATCHES, ids=lambda p: p.name)
def test_patch_refuses_a_module_without_its_target(patch):
    with pytest.raises(AdaptationTargetMissing, match="written for verl"):
        patch.apply(ModuleType(patch.module))


def test_version_guard_refuses_other_releases():
    assert check_verl_version() == verl.__version__
    assert check_verl_version("0.9.1.post1") == "0.9.1.post1"
    for version in ("0.8.5", "0.9.0", "0.9.2", "0.10.0", "1.0.0"):
        with pytest.raises(UnsupportedVerlVersion, match=r"pip install 'verl>=0.9.1,<0.9.2'"):
            check_verl_version(version)


# --- each adaptation's effect in a CPU worker process --------------------------------------------------------------


def test_cpu_platform_is_selected_in_a_worker_process(worker_facts):
    assert worker_facts["platform"] == "PlatformCPU"


def test_process_group_uses_gloo_once(worker_facts):
    assert worker_facts["pg_wrapped"] and worker_facts["pg_same_in_workers"]
    assert worker_facts["pg_backend"] == "cpu:gloo"
    assert worker_facts["pg_all_reduce"] == [1.0, 1.0, 1.0]


def test_fsdp_engines_resolve_on_cpu(worker_facts):
    assert worker_facts["lm_engine"] == "FSDPEngineWithLMHead"
    assert worker_facts["value_engine"] == "FSDPEngineWithValueHead"


def test_reference_offload_policy_is_unpinned(worker_facts):
    assert worker_facts["offload_pin_memory"] is False
    assert worker_facts["offload_is_policy"] is True


def test_hf_rollout_is_registered(worker_facts):
    assert worker_facts["rollout_adapter"] == "HFRolloutAdapter"
    assert worker_facts["rollout_replica"] == "HFRolloutReplica"


def test_log_prob_metric_is_installed_for_both_trainers(worker_facts):
    assert worker_facts["metrics_wrapped"] and worker_facts["v1_metrics_wrapped"]


def test_agent_loop_seeds_its_requests_and_v1_orders_its_batches(worker_facts):
    assert worker_facts["agent_loop_seeded"]
    assert worker_facts["v1_uids_sequential"] and worker_facts["v1_batch_sorted"]


def test_v1_replay_buffer_polls_often(worker_facts):
    assert worker_facts["v1_poll_interval"] == REPLAY_BUFFER_POLL_S < 2.0  # verl's own default: 2 s


def test_megatron_is_kept_out_of_a_cpu_training_process(worker_facts):
    assert worker_facts["megatron_imported"] is False
    assert worker_facts["megatron_engine"] is False  # verl registers no Megatron engine, as without megatron-core


def test_patches_are_idempotent(worker_facts):
    assert worker_facts["idempotent"]


# --- the pieces, in this process ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "backend, expected",
    [
        ("cpu:gloo,cpu:gloo", "cpu:gloo"),
        ("cpu:gloo,cuda:nccl", "cpu:gloo,cuda:nccl"),
        ("gloo", "gloo"),
        ("cpu:gloo,cpu:mpi", "cpu:gloo"),
    ],
)
def test_deduplicate_backend(backend, expected):
    assert deduplicate_backend(backend) == expected


def test_unpinned_policy_ignores_pin_requests():
    policy = make_unpinned_offload_policy(CPUOffloadPolicy)(pin_memory=True)
    assert isinstance(policy, CPUOffloadPolicy) and policy.pin_memory is False


def test_log_prob_metric_is_the_max_over_response_tokens():
    rollout = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -9.0]])  # [B=2, T=3]
    actor = torch.tensor([[-1.0, -2.5, -3.0], [-0.4, -0.5, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])  # the 9.0 gap is on padding
    data = DataProto(
        batch=TensorDict(
            {"rollout_log_probs": rollout, "old_log_probs": actor, "response_mask": mask, "responses": mask},
            batch_size=2,
        ),
        non_tensor_batch={"uid": np.array(["a", "b"], dtype=object)},
    )
    calls = []
    wrapped = wrap_debug_metrics(lambda d: calls.append(d) or {"verl": 1.0})
    metrics = wrapped(data)
    assert calls == [data] and metrics["verl"] == 1.0
    assert metrics[LOG_PROB_DIFF_METRIC] == pytest.approx(0.5)
    assert wrap_debug_metrics(wrapped) is wrapped


def test_agent_loop_requests_get_a_seed_from_the_run_seed_and_the_trajectory():
    class Worker:  # what the wrapper reads of verl's AgentLoopWorker
        def __init__(self, seed):
            self.rollout_config = SimpleNamespace(seed=seed)

    run = wrap_run_agent_loop(lambda self, sampling_params, trajectory, **kwargs: sampling_params)
    trajectory = {"step": 3, "sample_index": np.int64(17), "rollout_n": 2, "validate": False}
    params = {"temperature": 1.0}
    seeded = run(Worker(42), params, trajectory, agent_name="single_turn_agent")
    assert seeded[SEED_PARAM] == request_seed(42, 3, False, 17, 2, 0)
    assert params == {"temperature": 1.0}  # the caller's dict (shared by verl across a batch) is not changed
    # Every input of the seed matters; the same inputs give the same seed.
    assert run(Worker(42), params, dict(trajectory))[SEED_PARAM] == seeded[SEED_PARAM]
    others = [
        run(Worker(43), params, trajectory),
        *(
            run(Worker(42), params, {**trajectory, name: value})
            for name, value in [("step", 4), ("sample_index", 18), ("rollout_n", 3), ("validate", True)]
        ),
    ]
    # The V1 trainer's sessions (trajectory=... as a keyword, session_id=i) are told apart.
    sessions = [run(Worker(42), params, trajectory=trajectory, session_id=i)[SEED_PARAM] for i in range(4)]
    assert sessions[0] == seeded[SEED_PARAM]
    assert len({seeded[SEED_PARAM], *(o[SEED_PARAM] for o in others), *sessions}) == 6 + 3
    # A seed the caller set is kept.
    assert run(Worker(42), {SEED_PARAM: 5}, trajectory)[SEED_PARAM] == 5
    assert wrap_run_agent_loop(run) is run


def test_v1_prompt_uids_count_up_in_order_and_stay_uuids():
    names = SequentialUUIDs(uuid)
    uids = [str(names.uuid4()) for _ in range(300)]
    assert uids == sorted(uids) and len(set(uids)) == 300
    assert all(uuid.UUID(u).version == 4 and "_" not in u for u in uids)  # verl splits trajectory keys on "_"
    assert names.UUID is uuid.UUID  # every other name is the real module's
    assert str(SequentialUUIDs(uuid).uuid4()) == uids[0]  # a rerun names its prompts the same way


def test_v1_batch_is_sorted_by_prompt_session_and_output():
    keys = ["b_1_0", "a_10_0", "b_0_0", "a_2_0", "a_2_1"]
    built = KVBatchMeta(partition_id="train", keys=keys, tags=[{"key": k} for k in keys])
    materialize = wrap_materialize_batch(lambda self, *args: built)
    batch = materialize(None, "train", ["a", "b"], {})
    assert batch.keys == ["a_2_0", "a_2_1", "a_10_0", "b_0_0", "b_1_0"]
    assert [tag["key"] for tag in batch.tags] == batch.keys
    assert wrap_materialize_batch(materialize) is materialize


def test_replay_buffer_poll_is_capped_not_raised():
    class Buffer:
        def __init__(self, poll_interval: float = 2.0):
            self.poll_interval = poll_interval

    init = wrap_replay_buffer_init(Buffer.__init__)
    Buffer.__init__ = init
    assert Buffer().poll_interval == REPLAY_BUFFER_POLL_S
    assert Buffer(poll_interval=0.01).poll_interval == 0.01  # a faster poll someone asked for stays
    assert wrap_replay_buffer_init(init) is init


def test_v1_agent_loop_numbers_its_sessions_as_the_seed_expects():
    from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopWorkerTQ

    source = inspect.getsource(AgentLoopWorkerTQ._run_prompt)
    assert f"{V1_SESSION_ARG}=i" in source and "trajectory=trajectory" in source
    assert "_run_agent_loop" not in vars(AgentLoopWorkerTQ)  # the patched base method is the one it runs


def test_cpu_device_module_answers_verl_calls():
    module = PlatformCPU().device_module
    module.empty_cache()
    module.synchronize()
    available, total = module.mem_get_info()
    assert 0 < available <= total
    assert module.max_memory_allocated() >= module.memory_allocated() > 0
    assert torch.equal(module.get_rng_state(), torch.get_rng_state())
    assert PlatformCPU().current_device() == "cpu"
    assert torch.ones(1).to(PlatformCPU().current_device()).device.type == "cpu"


def test_cpu_platform_is_never_auto_detected():
    assert PlatformCPU().is_platform_available(use_smi_check=True) is False


def test_docs_ledger_lists_every_adaptation():
    ledger = (Path(__file__).resolve().parents[2] / "docs" / "cpu.md").read_text()
    for patch in RUNTIME_PATCHES:
        assert f"`{patch.name}`" in ledger and patch.verl_location in ledger, patch.name
    for adaptation in CONFIG_ADAPTATIONS:
        assert f"`{adaptation.key}`" in ledger and adaptation.verl_location in ledger, adaptation.key
    assert f"`{MEGATRON_IMPORT_BLOCK.name}`" in ledger and MEGATRON_IMPORT_BLOCK.verl_location in ledger

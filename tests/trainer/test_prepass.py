"""The pre-pass calls' padding: every call must split, rank by rank, into the micro-batches verl's engines accept.

Each call is padded on the driver (``prepass.padded_call``) to ``prepass_row_multiple`` rows, split over the
data-parallel ranks as verl's dispatch splits it (``chunk_tensordict``), and each rank's share goes through verl's own
``prepare_micro_batches`` (the function both engines micro-batch with) with what the Megatron engine passes it under
virtual pipeline stages (``num_batches_divided_by = microbatch_group_size_per_vp_stage``); the count must then pass
the check ``MegatronEngine.forward_backward_batch`` asserts (``len(micro_batches) % num_batches_divided_by == 0``).
"""

from __future__ import annotations

import itertools

import pytest
import torch
from tensordict import TensorDict

from verl_gain.trainer.prepass import padded_call, prepass_row_multiple

PROMPTS_PER_CALL = (1, 2, 5, 7, 13)
"""Call sizes that do not divide by the ranks, the micro-batch or the group (a run's last call is any size)."""


def verl_micro_batches(rows: int, data_parallel_size: int, micro_batch_size: int | None, group: int) -> list[int]:
    """Micro-batches per rank for a call of ``rows`` prompts, through verl's split and micro-batching."""
    from verl.utils import tensordict_utils as tu
    from verl.workers.engine.utils import prepare_micro_batches

    lengths = [3 + (7 * i) % 11 for i in range(rows)]
    ids = torch.nested.as_nested_tensor([torch.arange(n) for n in lengths], layout=torch.jagged)
    data = TensorDict({"input_ids": ids}, batch_size=[rows])
    counts = []
    for share in tu.chunk_tensordict(data, data_parallel_size):  # verl's nd dispatch: equal shares
        if micro_batch_size is None:
            tu.assign_non_tensor(share, use_dynamic_bsz=True, max_token_len_per_gpu=16)
        else:
            tu.assign_non_tensor(share, use_dynamic_bsz=False, micro_batch_size_per_gpu=micro_batch_size)
        micro_batches, _ = prepare_micro_batches(share, num_batches_divided_by=group if group > 1 else None)
        assert len(micro_batches) % group == 0, "MegatronEngine.forward_backward_batch's assertion"
        counts.append(len(micro_batches))
    return counts


def test_the_row_multiple_is_ranks_times_micro_batch_times_group():
    assert prepass_row_multiple(2, None) == 2  # dynamic batch size: the ranks
    assert prepass_row_multiple(2, 3) == 6  # fixed micro-batches of 3 per rank
    assert prepass_row_multiple(2, 3, micro_batch_group=4) == 24  # Megatron PP 4 with virtual stages
    assert prepass_row_multiple(4, None, micro_batch_group=2) == 8  # at least one row per micro-batch of a group
    assert padded_call([5, 1, 4], 4) == [5, 1, 4, 4] and padded_call([5, 1, 4, 2], 4) == [5, 1, 4, 2]


@pytest.mark.parametrize(
    ("data_parallel_size", "micro_batch_size", "group"),
    [(1, 2, 1), (2, 3, 1), (2, 3, 2), (4, 1, 4), (2, 2, 3), (2, None, 2), (4, None, 4)],
    ids=lambda v: str(v),
)
def test_every_padded_call_splits_into_micro_batches_verl_accepts(data_parallel_size, micro_batch_size, group):
    multiple = prepass_row_multiple(data_parallel_size, micro_batch_size, group)
    for prompts in PROMPTS_PER_CALL:
        rows = len(padded_call(list(range(prompts)), multiple))
        counts = verl_micro_batches(rows, data_parallel_size, micro_batch_size, group)
        assert len(counts) == data_parallel_size and all(c >= group for c in counts)


def test_without_the_group_a_virtual_pipeline_call_fails_verls_check():
    """What the padding to ranks x micro-batch alone (before) sent Megatron with 2 virtual-pipeline groups."""
    failures = []
    for prompts, (dp, micro) in itertools.product(PROMPTS_PER_CALL, [(2, 3), (1, 2)]):
        rows = len(padded_call(list(range(prompts)), prepass_row_multiple(dp, micro)))
        try:
            verl_micro_batches(rows, dp, micro, group=2)
        except AssertionError:
            failures.append(prompts)
    assert failures

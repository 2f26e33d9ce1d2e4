"""How the trainer's weights travel to the hf rollout server through Ray: torch tensors vs ``HostTensor`` (a benchmark).

The adapter sends the full state dict to the server (a Ray actor) at every step. Ray pickles a torch tensor's bytes
into the message; a NumPy array goes out of band through Ray's object store, where the receiver reads it in place.
This times one call that hands SmolLM2-135M-Instruct's state dict to an actor that copies it into its own model,
both ways, alternating, in one process; the machine is shared, so the ratio is the figure.

Usage: python bench/bench_weight_sync.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import ray
import torch
from transformers import AutoModelForCausalLM

from verl_gain.cpu.rollout import HostTensor
from verl_gain.model_sources import SMOLLM2_NAME, resolve_model


class Receiver:
    """Copies a received state dict into its own copy of the model, as ``HFRolloutServer.update_weights`` does."""

    def __init__(self, model_name: str):
        torch.set_num_threads(1)  # a rollout server's setting
        self.model = AutoModelForCausalLM.from_pretrained(resolve_model(model_name))

    def load(self, weights: dict) -> int:
        own = self.model.state_dict()
        with torch.no_grad():
            for name, weight in weights.items():
                own[name].copy_(weight.tensor() if isinstance(weight, HostTensor) else weight)
        return len(weights)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default=SMOLLM2_NAME)
    args = parser.parse_args(argv)
    state = AutoModelForCausalLM.from_pretrained(resolve_model(args.model)).state_dict()
    megabytes = sum(t.numel() * t.element_size() for t in state.values()) / 1e6
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        receiver = ray.remote(Receiver).remote(args.model)
        ray.get(receiver.load.remote({}))  # the actor is up and its model loaded
        forms = {
            "torch tensors": lambda: state,
            "HostTensor": lambda: {name: HostTensor.of(tensor) for name, tensor in state.items()},
        }
        seconds: dict[str, list[float]] = {form: [] for form in forms}
        for _ in range(args.repeats):
            for form, make in forms.items():
                started = time.perf_counter()
                ray.get(receiver.load.remote(make()))
                seconds[form].append(time.perf_counter() - started)
    finally:
        ray.shutdown()
    print(f"state dict of {args.model}: {len(state)} tensors, {megabytes:.0f} MB; one call, {args.repeats} repeats")
    for form, times in seconds.items():
        print(f"{form:>14}: median {statistics.median(times):.2f} s  (all: {', '.join(f'{t:.2f}' for t in times)})")
    ratio = statistics.median(seconds["torch tensors"]) / statistics.median(seconds["HostTensor"])
    print(f"torch tensors / HostTensor: {ratio:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The "hf" rollout backend: verl's rollout server interface on top of a Hugging Face model, for CPUs.

verl 0.9 generates through a rollout server per replica (vLLM/SGLang/TensorRT-LLM, all GPU-only) that the agent
loop calls one request at a time (``server.generate.remote(prompt_ids, sampling_params, ...)``), and that the
trainer workers feed with new weights after every update. This module provides the three pieces verl looks up by
rollout name (registered by ``verl_gain.cpu.adaptations``, patch ``hf_rollout``):

- ``HFRolloutServer`` (a Ray actor, one per replica) holds its own copy of the model. Concurrent ``generate`` calls
  are queued and served in batches: the server collects requests until none has arrived for ``batch_wait_ms`` (or
  the batch is full, or ``max_batch_wait_ms`` has passed), and requests that share sampling parameters are decoded
  together (``verl_gain.cpu.decoding``'s static-cache loop, or ``model.generate``), in a thread so that the actor
  keeps accepting requests meanwhile. Each request samples from its own seeded generator
  (``verl_gain.cpu.sampling``). It returns the sampled token ids with their log-probs, and replaces its weights on
  ``update_weights``, verifying that every parameter now equals (bit for bit) what the trainer sent.
- ``HFRolloutAdapter`` (verl's ``BaseRollout``) lives in each trainer worker: on a weight update every rank drains
  verl's weight generator (FSDP2's ``full_tensor()`` is a collective), and the first rank of each replica ships the
  state dict, with a CRC-32 per tensor, to its server.
- ``HFRolloutReplica`` (verl's ``RolloutReplica``) starts the server next to its trainer workers (hybrid mode).

Log-probs: log softmax(z / T) of the sampled token, z the model's logits and T the sampling temperature (1 for
greedy), which is what verl's actor computes for ``old_log_probs``; top-k/top-p truncation changes which tokens can
be sampled but not these log-probs. In fp32 they match the actor's to ~1e-6.

Only the hybrid mode is supported (trainer workers and rollout share the weights' source): verl's V1 ``sync`` trainer
and the legacy trainer. Text only; no LoRA adapter sync (merge LoRA with ``model.lora.merge=True``).
"""

from __future__ import annotations

import asyncio
import logging
import operator
import os
import random
import threading
import time
import warnings
import zlib
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import ray
import torch
from transformers import AutoModelForCausalLM, GenerationConfig, LogitsProcessor, LogitsProcessorList
from verl.utils.config import omega_conf_to_dataclass
from verl.workers.config import HFModelConfig, RolloutConfig
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutMode, RolloutReplica, TokenOutput

from verl_gain.cpu.decoding import (
    DECODE_ATTENTION,
    StaticCacheDecoder,
    register_decode_attention,
    static_decoding_unsupported,
)
from verl_gain.cpu.environment import HF_ROLLOUT_NAME, worker_env_vars
from verl_gain.cpu.sampling import SEED_BITS, SEED_PARAM, SamplingKey, request_generator, sample_next_tokens
from verl_gain.inference import DTYPES, cut_at_end, left_padded

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH_SIZE = 64
"""Requests per ``generate`` call; bounds the KV cache and the (batch, vocab) logits kept per decoding step."""
DEFAULT_BATCH_WAIT_MS = 50.0
"""Quiet period that closes a batch: the agent loop submits a step's requests one after the other, a few ms apart
on a loaded 2-core machine (tokenising, two Ray calls each); a batch closed on the first lull would leave the rest
of the step waiting for a whole second ``generate`` call."""
DEFAULT_MAX_BATCH_WAIT_MS = 2000.0
"""Longest time the first request of a batch waits for others (bounds latency when requests keep trickling in)."""
STATIC_DECODER = "static"
"""The server's own decode loop on a static KV cache (``verl_gain.cpu.decoding``)."""
GENERATE_DECODER = "generate"
"""HF ``generate`` (any model transformers can generate with; slower on a CPU)."""
DECODERS = (STATIC_DECODER, GENERATE_DECODER)
DUMMY_LOAD_FORMAT = "dummy"
"""verl's load format for "random weights now, real weights from the first sync" (its default)."""
STOP_COMPLETED = "completed"
STOP_ABORTED = "aborted"


class WeightSyncError(RuntimeError):
    """The rollout server's weights differ from what the trainer sent."""


@dataclass(frozen=True)
class HFRolloutOptions:
    """Options of the hf rollout backend, from ``actor_rollout_ref.rollout.engine_kwargs.hf``.

    Attributes:
        max_batch_size: most requests per ``generate`` call.
        batch_wait_ms: a batch closes once no request has arrived for this long.
        max_batch_wait_ms: ... or once its first request has waited this long.
        verify_weights: check every parameter against the trainer's CRC-32 after each weight update.
        num_threads: torch intra-op threads of the server (None: leave Ray's setting).
        decoder: ``static`` (the server's own decode loop, models in ``STATIC_DECODER_MODEL_TYPES``; others fall
            back to ``generate``) or ``generate`` (HF ``generate``).
    """

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS
    max_batch_wait_ms: float = DEFAULT_MAX_BATCH_WAIT_MS
    verify_weights: bool = True
    num_threads: int | None = None
    decoder: str = STATIC_DECODER

    def __post_init__(self):
        if self.max_batch_size < 1:
            raise ValueError(
                f"engine_kwargs.hf.max_batch_size must be >= 1, got {self.max_batch_size}: set it to the number of "
                "requests one generate call may batch"
            )
        if not 0 <= self.batch_wait_ms <= self.max_batch_wait_ms:
            raise ValueError(
                f"engine_kwargs.hf.batch_wait_ms must be in [0, max_batch_wait_ms={self.max_batch_wait_ms}], "
                f"got {self.batch_wait_ms}"
            )
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError(f"engine_kwargs.hf.num_threads must be >= 1 or null, got {self.num_threads}")
        if self.decoder not in DECODERS:
            raise ValueError(f"engine_kwargs.hf.decoder must be one of {DECODERS}, got {self.decoder!r}")

    @classmethod
    def from_rollout_config(cls, config: RolloutConfig) -> HFRolloutOptions:
        engine_kwargs = config.engine_kwargs or {}
        options = dict(engine_kwargs.get(HF_ROLLOUT_NAME) or {})
        unknown = sorted(set(options) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(
                f"unknown actor_rollout_ref.rollout.engine_kwargs.hf options {unknown}: the hf rollout takes "
                f"{sorted(f.name for f in fields(cls))}"
            )
        return cls(**options)


def tensor_digest(tensor: torch.Tensor) -> int:
    """CRC-32 of a tensor's bytes (shape and dtype are compared separately)."""
    flat = tensor.detach().contiguous().reshape(-1)
    return zlib.crc32(flat.view(torch.uint8).numpy())


@dataclass(frozen=True)
class HostTensor:
    """A host tensor as its raw bytes in a NumPy array, the form in which the adapter sends weights to the server.

    Ray pickles a torch tensor's bytes into the message, but passes NumPy arrays out of band (pickle protocol 5)
    through its object store, where the receiver reads them in place: SmolLM2-135M's state dict (651 MB) took 1.4-2.0 s
    per call as torch tensors and 0.12-0.42 s as NumPy arrays on the 2-core development machine. Bytes rather than
    values, so that every dtype travels (NumPy has no bfloat16).

    Attributes:
        data: uint8 [number of bytes], the tensor's bytes in C order.
        dtype, shape: of the tensor.
    """

    data: np.ndarray
    dtype: torch.dtype
    shape: tuple[int, ...]

    @classmethod
    def of(cls, tensor: torch.Tensor) -> HostTensor:
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        return cls(data=flat.view(torch.uint8).numpy(), dtype=tensor.dtype, shape=tuple(tensor.shape))

    def tensor(self) -> torch.Tensor:
        """The tensor, a view of ``data`` (read-only where Ray delivered it: copy from it, never into it)."""
        with warnings.catch_warnings():  # torch warns that a read-only array gives a tensor it must not write
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return torch.from_numpy(self.data).view(self.dtype).reshape(self.shape)


def server_name(replica_rank: int, name_suffix: str = "", role: str = "") -> str:
    """Ray actor name of a replica's server (the adapter finds its server by this name)."""
    role_part = f"{role}_" if role else ""
    return f"{HF_ROLLOUT_NAME}_server_{role_part}{replica_rank}{name_suffix}"


def rollout_dtype(config: RolloutConfig) -> torch.dtype:
    """The dtype the server holds its weights in (``rollout.dtype``; on CPU it follows ``cpu.precision``).

    The adapter casts the trainer's (fp32 master) weights to it before sending, so the server's bit-for-bit check
    compares what it holds with what the trainer meant it to hold.
    """
    name = str(config.dtype)
    if name not in DTYPES:
        raise ValueError(f"actor_rollout_ref.rollout.dtype={name!r} is not one of {sorted(DTYPES)}")
    return DTYPES[name]


def as_rollout_tensor(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A trainer tensor as the server holds it: on the host, floating-point values in ``dtype``."""
    tensor = tensor.detach()
    return tensor.to("cpu", dtype=dtype) if tensor.is_floating_point() else tensor.to("cpu")


def rollout_world_size(config: RolloutConfig) -> int:
    """Trainer workers per replica (verl's tensor x data x pipeline parallel sizes of the rollout)."""
    return config.tensor_model_parallel_size * config.data_parallel_size * config.pipeline_model_parallel_size


class SeededSampler(LogitsProcessor):
    """Chooses every row's next token itself (``sample_next_tokens``, one generator per request) and records its
    log-prob; ``generate`` runs greedy and takes the one token left at a finite score.

    With no sampling options in the generation config it is the only logits processor, and sees the model's logits.
    """

    def __init__(self, key: SamplingKey, generators: list[torch.Generator], pad_widths: list[int]):
        self.key = key
        self.generators = generators
        self.pad_widths = pad_widths  # left padding of each row: not tokens the repetition penalty may count
        self._log_probs: list[torch.Tensor] = []  # T x [B]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        seen = None
        if self.key.repetition_penalty != 1.0:
            seen = input_ids.clone()  # [B, P + t]
            for row, width in enumerate(self.pad_widths):
                seen[row, :width] = seen[row, width]  # pads become a copy of a real token (penalised once anyway)
        tokens, log_probs = sample_next_tokens(scores, self.key, self.generators, seen)  # [B], [B]
        self._log_probs.append(log_probs)
        forced = torch.full_like(scores, float("-inf"))  # [B, V]
        return forced.scatter_(1, tokens.unsqueeze(1), 0.0)

    def log_probs(self, new_tokens: torch.Tensor) -> torch.Tensor:
        """Log-probs [B, T] of ``new_tokens`` [B, T] (the generated part of the sequences)."""
        if not self._log_probs:
            return torch.zeros(new_tokens.shape, dtype=torch.float32)
        return torch.stack(self._log_probs, dim=1)[:, : new_tokens.shape[1]]  # [B, T]


@dataclass
class _Request:
    prompt_ids: list[int]
    max_tokens: int
    key: SamplingKey
    seed: int  # the request's seed (``sampling.SEED_PARAM``), or one drawn by the server
    future: asyncio.Future = field(repr=False)


class HFRolloutServer:
    """Rollout server (Ray actor) that serves verl's token-in/token-out ``generate`` with batched HF generation.

    Implements the server calls verl makes on a rollout replica (the vLLM server's interface): ``generate``,
    ``set_global_steps``, ``wake_up``/``sleep`` and the kv-cache calls (no-ops: host memory is not reclaimed),
    ``abort_all_requests``/``abort_request``/``resume_generation``, ``wait_for_requests_to_drain``, profiling
    (no-ops), plus ``update_weights`` for the adapter.
    """

    def __init__(self, config: RolloutConfig, model_config: HFModelConfig, replica_rank: int = 0, name: str = ""):
        self.name = name or server_name(replica_rank)
        self.config: RolloutConfig = omega_conf_to_dataclass(config, dataclass_type=RolloutConfig)
        self.model_config: HFModelConfig = omega_conf_to_dataclass(model_config, dataclass_type=HFModelConfig)
        self.options = HFRolloutOptions.from_rollout_config(self.config)
        self.replica_rank = replica_rank
        if self.options.num_threads is not None:
            torch.set_num_threads(self.options.num_threads)
        torch.manual_seed(self.config.seed + replica_rank)  # the random weights of load_format=dummy
        # Seeds of requests that come without one (verl's agent loop sends one, see ``sampling.request_seed``):
        # reproducible only as far as the order in which such requests arrive.
        self._unseeded = random.Random(self.config.seed + replica_rank)

        tokenizer = self.model_config.tokenizer
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_token_ids = self._eos_token_ids(tokenizer)
        self.model = self._load_model()
        self.decoder = self._choose_decoder()
        self.global_steps: int | None = None
        self.weight_updates = 0

        self._model_lock = threading.Lock()
        self._queue: list[_Request] = []
        self._serving: asyncio.Task | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._gate_open = asyncio.Event()
        self._gate_open.set()
        self.batches_served = 0
        self.requests_served = 0
        self.tokens_generated = 0
        self.generate_seconds = 0.0

    # ----------------------------------------------------------------------------------------------------------
    # set-up

    def _eos_token_ids(self, tokenizer) -> list[int]:
        ids: set[int] = set()
        generation_config = self.model_config.generation_config
        configured = getattr(generation_config, "eos_token_id", None) if generation_config is not None else None
        if isinstance(configured, int):
            ids.add(configured)
        elif configured is not None:
            ids.update(int(i) for i in configured)
        if tokenizer.eos_token_id is not None:
            ids.add(tokenizer.eos_token_id)
        return sorted(ids)

    def _load_model(self) -> torch.nn.Module:
        dtype = rollout_dtype(self.config)
        hf_config = self.model_config.hf_config
        if self.config.load_format == DUMMY_LOAD_FORMAT:
            # Random weights: the trainer's first weight sync (before any generation) replaces every parameter.
            model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype)
        else:
            model = AutoModelForCausalLM.from_pretrained(self.model_config.local_path, config=hf_config, dtype=dtype)
        # A clean generation config: sampling defaults shipped with the model must not leak into rollouts.
        model.generation_config = GenerationConfig(
            eos_token_id=self.eos_token_ids, pad_token_id=self.pad_token_id, bos_token_id=hf_config.bos_token_id
        )
        return model.eval()

    def _choose_decoder(self) -> StaticCacheDecoder | None:
        """The static decoder (None: ``generate``), with the model switched to its attention function."""
        if self.options.decoder == GENERATE_DECODER:
            return None
        unsupported = static_decoding_unsupported(self.model.config)
        if unsupported is None:
            register_decode_attention()
            self.model.set_attn_implementation(DECODE_ATTENTION)
            if self.model.config._attn_implementation != DECODE_ATTENTION:
                unsupported = f"{type(self.model).__name__} does not take an attention function"
        if unsupported is not None:
            logger.warning("hf rollout decodes with generate: the static decoder cannot run it (%s)", unsupported)
            return None
        return StaticCacheDecoder(self.model, self.pad_token_id)

    def get_server_address(self) -> str:
        """The server's name, which verl's load balancer uses as its address (there is no HTTP endpoint)."""
        return self.name

    # ----------------------------------------------------------------------------------------------------------
    # generation

    def _max_tokens(self, prompt_ids: list[int], sampling_params: dict[str, Any]) -> int:
        # As verl's vLLM server: an explicit limit, else the response budget left after the prompt.
        if "max_tokens" in sampling_params:
            max_tokens = sampling_params["max_tokens"]
        elif "max_new_tokens" in sampling_params:
            max_tokens = sampling_params["max_new_tokens"]
        else:
            max_tokens = min(
                self.config.response_length,
                self.config.prompt_length + self.config.response_length - len(prompt_ids),
            )
        return max(1, int(max_tokens))

    @staticmethod
    def _sampling_key(sampling_params: dict[str, Any]) -> SamplingKey:
        temperature = float(sampling_params.get("temperature", 1.0))
        top_k = int(sampling_params.get("top_k", -1))
        return SamplingKey(
            do_sample=temperature > 0,
            temperature=temperature,
            top_p=float(sampling_params.get("top_p", 1.0)),
            top_k=top_k if top_k > 0 else 0,
            repetition_penalty=float(sampling_params.get("repetition_penalty", 1.0)),
            ignore_eos=bool(sampling_params.get("ignore_eos", False)),
            want_log_probs=bool(sampling_params.get("logprobs", False)),
        )

    def _request_seed(self, sampling_params: dict[str, Any]) -> int:
        seed = sampling_params.get(SEED_PARAM)
        if seed is None:
            return self._unseeded.getrandbits(SEED_BITS)
        try:
            return operator.index(seed) % (1 << SEED_BITS)
        except TypeError:
            raise ValueError(f"sampling_params[{SEED_PARAM!r}] must be an integer, got {seed!r}") from None

    async def generate(
        self,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        request_id: str,
        image_data: list[Any] | None = None,
        video_data: list[Any] | None = None,
        audio_data: list[Any] | None = None,
        mm_processor_kwargs: dict[str, Any] | None = None,
        priority: int = 0,
        **kwargs: Any,
    ) -> TokenOutput:
        """Generate a response to ``prompt_ids``; batched with the other requests in flight."""
        if image_data is not None or video_data is not None or audio_data is not None:
            raise NotImplementedError("the hf rollout backend is text-only: multimodal prompts need vLLM or SGLang")
        prompt_ids = [int(token) for token in prompt_ids]
        await self._gate_open.wait()
        request = _Request(
            prompt_ids=prompt_ids,
            max_tokens=self._max_tokens(prompt_ids, sampling_params),
            key=self._sampling_key(sampling_params),
            seed=self._request_seed(sampling_params),
            future=asyncio.get_running_loop().create_future(),
        )
        self._queue.append(request)
        self._idle.clear()
        if self._serving is None or self._serving.done():
            self._serving = asyncio.create_task(self._serve())
        return await request.future

    async def _serve(self) -> None:
        """Serve the queue batch by batch until it is empty."""
        try:
            while self._queue:
                await self._collect()
                if not self._queue:  # aborted while collecting
                    break
                key = self._queue[0].key
                batch = [request for request in self._queue if request.key == key][: self.options.max_batch_size]
                taken = {id(request) for request in batch}
                self._queue = [request for request in self._queue if id(request) not in taken]
                started = time.perf_counter()
                try:
                    outputs = await asyncio.to_thread(self._generate_batch, batch)
                except Exception as error:  # every waiting caller gets the error, not a hang
                    for request in batch:
                        if not request.future.done():
                            request.future.set_exception(error)
                    continue
                for request, output in zip(batch, outputs, strict=True):
                    if not request.future.done():
                        request.future.set_result(output)
                seconds = time.perf_counter() - started
                tokens = sum(len(output.token_ids) for output in outputs)
                logger.info("generated %d responses, %d tokens in %.2f s", len(batch), tokens, seconds)
                self.batches_served += 1
                self.requests_served += len(batch)
                self.tokens_generated += tokens
                self.generate_seconds += seconds
        finally:
            if not self._queue:
                self._idle.set()

    async def _collect(self) -> None:
        """Wait while requests keep arriving: until a quiet ``batch_wait_ms``, a full batch, or the deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.max_batch_wait_ms / 1000.0
        seen = len(self._queue)
        while seen < self.options.max_batch_size and loop.time() < deadline:
            await asyncio.sleep(self.options.batch_wait_ms / 1000.0)
            if len(self._queue) == seen:
                return
            seen = len(self._queue)

    def _generate_batch(self, batch: list[_Request]) -> list[TokenOutput]:
        """Responses to requests that share sampling parameters, decoded together."""
        key = batch[0].key
        generators = [request_generator(request.seed, request.prompt_ids) for request in batch]
        end_tokens = [] if key.ignore_eos else self.eos_token_ids
        if self.decoder is not None:
            with self._model_lock:
                responses, log_probs = self.decoder.decode(
                    [request.prompt_ids for request in batch],
                    [request.max_tokens for request in batch],
                    key,
                    generators,
                    end_tokens,
                )
        else:
            responses, log_probs = self._generate_with_hf(batch, key, generators)
        return [
            TokenOutput(
                token_ids=tokens,
                log_probs=row_log_probs if key.want_log_probs else None,
                stop_reason=STOP_COMPLETED,
                extra_fields={"global_steps": self.global_steps},
            )
            for tokens, row_log_probs in zip(responses, log_probs, strict=True)
        ]

    @torch.no_grad()
    def _generate_with_hf(
        self, batch: list[_Request], key: SamplingKey, generators: list[torch.Generator]
    ) -> tuple[list[list[int]], list[list[float]]]:
        """One left-padded ``generate`` call: each row's tokens and their log-probs."""
        input_ids, attention_mask = left_padded([request.prompt_ids for request in batch], self.pad_token_id)  # [B, P]
        prompt_width = input_ids.shape[1]
        max_tokens = max(request.max_tokens for request in batch)
        sampler = SeededSampler(
            key, generators=generators, pad_widths=[prompt_width - len(request.prompt_ids) for request in batch]
        )
        # Greedy over the sampler's one finite score per row: the sampler does temperature, top-k/p, the penalty.
        generation_config = GenerationConfig(
            max_new_tokens=max_tokens,
            do_sample=False,
            eos_token_id=None if key.ignore_eos else self.eos_token_ids,
            pad_token_id=self.pad_token_id,
        )
        with self._model_lock:
            sequences = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                generation_config=generation_config,
                logits_processor=LogitsProcessorList([sampler]),
            )  # [B, P + T]
        new_tokens = sequences[:, prompt_width:]  # [B, T]
        log_probs = sampler.log_probs(new_tokens)  # [B, T]
        responses, response_log_probs = [], []
        for row, request in enumerate(batch):
            tokens = new_tokens[row, : request.max_tokens].tolist()
            if not key.ignore_eos:
                tokens, _ = cut_at_end(tokens, self.eos_token_ids)  # the end token is part of the response (vLLM)
            responses.append(tokens)
            response_log_probs.append(log_probs[row, : len(tokens)].tolist())
        return responses, response_log_probs

    # ----------------------------------------------------------------------------------------------------------
    # weights

    def _tied_aliases(self) -> dict[str, str]:
        """State-dict names that share storage with an earlier name (tied embeddings): name -> earlier name."""
        first_by_pointer: dict[int, str] = {}
        aliases: dict[str, str] = {}
        for name, tensor in self.model.state_dict(keep_vars=True).items():
            pointer = tensor.data_ptr()
            if pointer in first_by_pointer:
                aliases[name] = first_by_pointer[pointer]
            else:
                first_by_pointer[pointer] = name
        return aliases

    def update_weights(
        self,
        weights: dict[str, torch.Tensor | HostTensor],
        digests: dict[str, int] | None,
        global_steps: int | None = None,
    ) -> dict[str, Any]:
        """Load the trainer's full state dict (tensors, or ``HostTensor`` as the adapter sends them); with
        ``verify_weights``, check every parameter against ``digests``.

        Raises ``WeightSyncError`` if a received name is unknown, a parameter was not sent, a shape differs, or a
        parameter's bytes after loading differ from the trainer's.
        """
        started = time.perf_counter()
        weights = {name: w.tensor() if isinstance(w, HostTensor) else w for name, w in weights.items()}
        with self._model_lock, torch.no_grad():
            own = self.model.state_dict()
            unknown = sorted(set(weights) - set(own))
            aliases = self._tied_aliases()
            missing = sorted(
                name for name in set(own) - set(weights) if not (name in aliases and aliases[name] in weights)
            )
            if unknown or missing:
                raise WeightSyncError(
                    f"weight update does not match the rollout model: unknown {unknown[:5]}, missing {missing[:5]}"
                )
            for name, tensor in weights.items():
                if own[name].shape != tensor.shape:
                    raise WeightSyncError(f"{name}: rollout shape {tuple(own[name].shape)} != {tuple(tensor.shape)}")
                own[name].copy_(tensor)
            if self.options.verify_weights and digests is not None:
                wrong = [
                    name
                    for name, tensor in weights.items()
                    if tensor_digest(own[name].to(tensor.dtype)) != digests[name]
                ]
                if wrong:
                    raise WeightSyncError(f"{len(wrong)} rollout parameters differ from the trainer's: {wrong[:5]}")
        if global_steps is not None:
            self.global_steps = global_steps
        self.weight_updates += 1
        return {"num_tensors": len(weights), "seconds": time.perf_counter() - started}

    def stats(self) -> dict[str, Any]:
        """Counters for tests and logs."""
        return {
            "weight_updates": self.weight_updates,
            "global_steps": self.global_steps,
            "batches_served": self.batches_served,
            "requests_served": self.requests_served,
            "tokens_generated": self.tokens_generated,
            "generate_seconds": self.generate_seconds,
        }

    # ----------------------------------------------------------------------------------------------------------
    # the rest of verl's server interface

    async def set_global_steps(self, global_steps: int) -> None:
        self.global_steps = global_steps

    async def wake_up(self, tags: list[str] | None = None) -> None:
        return None

    async def sleep(self) -> None:
        return None

    async def clear_kv_cache(self) -> None:
        return None  # HF generate builds a fresh cache per call

    async def release_kv_cache(self) -> None:
        return None

    async def resume_kv_cache(self) -> None:
        return None

    async def start_profile(self, **kwargs: Any) -> None:
        return None

    async def stop_profile(self) -> None:
        return None

    async def wait_for_requests_to_drain(self) -> None:
        await self._idle.wait()

    def _abort_queued(self) -> int:
        """Answer every queued (not yet generating) request as aborted; returns how many."""
        aborted, self._queue = self._queue, []
        for request in aborted:
            if not request.future.done():
                request.future.set_result(
                    TokenOutput(
                        token_ids=[], stop_reason=STOP_ABORTED, extra_fields={"global_steps": self.global_steps}
                    )
                )
        if self._serving is None or self._serving.done():
            self._idle.set()
        return len(aborted)

    async def abort_all_requests(self, reset_prefix_cache: bool = True, reject_request: bool = False) -> dict:
        """Abort queued requests (a batch already in ``generate`` runs to completion) and hold new ones."""
        self._gate_open.clear()
        aborted = self._abort_queued()
        return {"aborted_count": aborted, "request_ids": []}

    async def abort_request(self, request_id: str, reset_prefix_cache: bool = True) -> dict:
        return {"aborted": False, "request_id": request_id, "error": "the hf backend aborts queued requests only"}

    async def resume_generation(self) -> None:
        self._gate_open.set()

    async def resume_engine_generation(self) -> None:
        self._gate_open.set()

    async def open_submission_gate(self) -> None:
        self._gate_open.set()


class HFRolloutAdapter(BaseRollout):
    """verl's worker-side rollout (``BaseRollout``) for the hf backend: ships the trainer's weights to the server.

    Every trainer rank must drain the weight generator (FSDP2 gathers each full tensor collectively); only the
    first rank of each replica keeps the tensors and sends them, with their CRC-32, to the replica's server.
    """

    def __init__(self, config: RolloutConfig, model_config: HFModelConfig, device_mesh, replica_rank: int = -1):
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ["RANK"])
        world = rollout_world_size(self.config)
        self.replica_rank = rank // world if replica_rank == -1 else replica_rank
        self.is_sender = rank % world == 0
        self.options = HFRolloutOptions.from_rollout_config(self.config)
        self._server: ray.actor.ActorHandle | None = None

    def _server_handle(self) -> ray.actor.ActorHandle:
        if self._server is None:
            self._server = ray.get_actor(server_name(self.replica_rank))
        return self._server

    async def resume(self, tags: list[str]) -> None:
        return None  # the server keeps its weights and builds its cache per call

    async def release(self) -> None:
        return None

    async def update_weights(
        self,
        weights,
        global_steps: int | None = None,
        wire_format: str = "named_tensors",
        peft_config=None,
        **kwargs,
    ) -> None:
        if wire_format != "named_tensors":
            raise NotImplementedError(
                f"the hf rollout backend takes full weights (wire_format='named_tensors'), got {wire_format!r}: "
                "use actor_rollout_ref.rollout.checkpoint_engine.backend=naive"
            )
        if peft_config is not None:
            raise NotImplementedError(
                "the hf rollout backend syncs merged weights only: set actor_rollout_ref.model.lora.merge=True"
            )
        state: dict[str, torch.Tensor] = {}
        dtype = rollout_dtype(self.config)
        if hasattr(weights, "__aiter__"):
            async for name, tensor in weights:
                if self.is_sender:
                    state[name] = as_rollout_tensor(tensor, dtype)
        else:
            for name, tensor in weights:
                if self.is_sender:
                    state[name] = as_rollout_tensor(tensor, dtype)
        if not self.is_sender:
            return
        digests = (
            {name: tensor_digest(tensor) for name, tensor in state.items()} if self.options.verify_weights else None
        )
        wire = {name: HostTensor.of(tensor) for name, tensor in state.items()}
        await self._server_handle().update_weights.remote(wire, digests, global_steps)


class HFRolloutReplica(RolloutReplica):
    """verl's ``RolloutReplica`` for the hf backend: one ``HFRolloutServer`` on the node of its trainer workers."""

    async def launch_servers(self) -> None:
        if self.rollout_mode != RolloutMode.HYBRID:
            raise NotImplementedError(
                f"the hf rollout backend runs in hybrid mode only (got {self.rollout_mode}): use "
                "trainer.v1.trainer_mode=sync or trainer.use_v1=false, and no rollout-based reward/teacher model"
            )
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        node_id = await self.workers[0].__ray_call__.remote(lambda worker: ray.get_runtime_context().get_node_id())
        role = "reward" if self.is_reward_model else "teacher" if self.is_teacher_model else ""
        name = server_name(self.replica_rank, self.name_suffix, role)
        server = (
            ray.remote(HFRolloutServer)
            .options(
                name=name,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
                max_concurrency=self.max_concurrency,
                runtime_env={"env_vars": worker_env_vars()},
            )
            .remote(config=self.config, model_config=self.model_config, replica_rank=self.replica_rank, name=name)
        )
        self._server_address = await server.get_server_address.remote()
        self._server_handle = server
        self.servers = [server]

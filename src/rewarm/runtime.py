"""Where and how a run computes: the device (`train.device`), the arithmetic (`train.precision`), the
process group under torchrun, and FSDP's sharding of a model and its gathering back. Shared by
training, evaluation and benchmarks."""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Callable, TypeVar

import torch
import torch.distributed as dist

from rewarm import config as cfg
from rewarm.checkpoints import unwrap

log = logging.getLogger(__name__)

def pick_device(choice: str) -> torch.device:
    """The device of `train.device`: auto (a GPU when there is one), cuda (refused without one), or cpu."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise cfg.ConfigError("device: 'cuda' requested but no CUDA device is available (use 'auto' or 'cpu')")
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", torch.cuda.current_device())  # indexed, so that logs name the GPU (cuda:0)
    return torch.device("cpu")


def resolve_precision(choice: str, device: torch.device) -> str:
    """The arithmetic a run uses: bf16 where the GPU has it, fp16 (with loss scaling) on older GPUs,
    fp32 on the CPU; an explicit choice is kept (fp16 on the CPU is emulated, and said so)."""
    if choice == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if choice == "fp16" and device.type != "cuda":
        log.warning("precision fp16 on the CPU is emulated (CPU float16 autocast and loss scaling): slow, for tests; "
                    "GPUs run it natively (Gupta et al. 2023 trained in fp16)")
    return choice


def autocast_for(precision: str, device: torch.device):
    """The autocast context of a precision (None for fp32)."""
    if precision == "fp32":
        return None
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def process_rank() -> int:
    """This process's rank under torchrun (0 when run alone): rank 0 writes the outputs."""
    return int(os.environ.get("RANK", "0"))


GROUP_TIMEOUT = timedelta(minutes=60)
"""How long a collective waits for the slowest process before the run fails. torch's default (10 minutes
for NCCL) is shorter than what one rank may do alone at paper scale: write a 6.9B model or its snapshot
while the others wait at a barrier, or compile the first step. (DeepSpeed, the papers' runs, waits 30.)"""


def setup_device(choice: str, group: bool = False) -> tuple[torch.device, int, int]:
    """(device, rank, world size). Under torchrun, one process per GPU (or CPU process with gloo).
    `group`: a process group even for one process (FSDP shards over one). Called first, before any
    process works alone, so that no process waits for another outside a collective's timeout."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = process_rank()
    use_cuda = pick_device(choice).type == "cuda"
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        # device_id binds the group to this process's GPU at once (NCCL's eager initialisation).
        device_id = torch.device("cuda", local) if use_cuda else None
        if world > 1:
            dist.init_process_group(backend=backend, timeout=GROUP_TIMEOUT, device_id=device_id)
        elif group:  # one process, no torchrun: a store of its own, no port to agree on
            dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1, timeout=GROUP_TIMEOUT,
                                    device_id=device_id)
    if use_cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return torch.device("cuda", local), rank, world
    return torch.device("cpu"), rank, world


def grad_scaler(precision: str, device: torch.device, window: int = 2000) -> torch.amp.GradScaler:
    """Dynamic loss scaling for fp16 (a step whose gradients overflow is skipped and the scale halved; the
    scale doubles after `window` steps without overflow); disabled, a pass-through, for the other precisions.
    Against DeepSpeed's scaler (the papers' runs): the same start (2^16), halving and doubling; torch has no
    hysteresis (DeepSpeed halves only at the 2nd overflow in a row) and no minimum scale."""
    return torch.amp.GradScaler(device.type, growth_interval=window, enabled=precision == "fp16")


def shard_model(model, precision: str) -> None:
    """FSDP (`fully_shard`): each transformer block a unit, then the root (embeddings, final LayerNorm,
    output layer). Parameters stay float32 shards (the optimizer's copy); with bf16 or fp16 each unit
    is gathered in that dtype for its forward and backward, and gradients are reduce-scattered in
    float32 (MixedPrecisionPolicy). Where it differs from DDP's autocast: the whole forward pass runs
    in half precision (embeddings, LayerNorms, the residual stream), as GPT-NeoX's fp16 under DeepSpeed
    did for the papers, where autocast runs the matrix products in half precision and keeps the
    residual stream in float32; so the two agree within float32 rounding only in fp32."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32 if dtype else None)
    for block in decoder_layers(model):
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)


def decoder_layers(model) -> list:
    """The model's transformer blocks, FSDP's units: the modules of the classes the family's transformers
    class names in `_no_split_modules` (GPT-NeoX's GPTNeoXLayer, Llama's LlamaDecoderLayer, ...), in order."""
    plain = unwrap(model)
    names = set(getattr(plain, "_no_split_modules", None) or ())
    blocks = [module for module in plain.modules() if type(module).__name__ in names]
    if not blocks:
        raise ValueError(f"{type(plain).__name__}: no transformer blocks to shard (its _no_split_modules: {sorted(names) or 'none'})")
    return blocks


def shard_with_weights(model, precision: str, device: torch.device):
    """FSDP's model on every process, built without each holding the whole: rank 0 passes the model
    with its weights (on the CPU), the others a `checkpoints.skeleton` on the meta device, which they
    shard and on which they allocate only their shards on `device`. Every process then receives its
    shards from rank 0's weights (`set_model_state_dict(..., broadcast_from_rank0=True)`), and the
    others the buffers the state dict does not hold (the rotary embedding's frequencies). Sharded in
    place; a collective: every process calls it. Host memory: the whole fp32 model once, on rank 0,
    instead of once per process (8 x 27.6 GB at 6.9B on a node)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    plain = unwrap(model)
    holds = not any(p.is_meta for p in plain.parameters())
    if holds != (dist.get_rank() == 0):
        raise RuntimeError("shard_with_weights: rank 0, and only rank 0, passes the model with its weights")
    full = plain.state_dict() if holds else {}  # CPU tensors, kept until they are sent
    # The buffers outside the state dict (non-persistent): small, sent whole.
    extra = from_rank0(lambda: {name: buffer.clone() for name, buffer in plain.named_buffers() if name not in full})
    if holds:
        model.to(device)
        shard_model(model, precision)
    else:
        shard_model(model, precision)
        model.to_empty(device=device)
        for name, value in extra.items():
            owner, _, leaf = name.rpartition(".")
            plain.get_submodule(owner).register_buffer(leaf, value.to(device), persistent=False)
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    return model


def gather_model(model):
    """The whole model on rank 0's CPU as a plain (unsharded) module, gathered from the FSDP shards;
    a collective: every process calls it, the others get None."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from rewarm.checkpoints import skeleton

    full = get_model_state_dict(unwrap(model), options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if dist.get_rank() != 0:
        return None
    plain = skeleton(unwrap(model).config)
    plain.load_state_dict(full, assign=True)
    return plain


T = TypeVar("T")


def _grouped() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def share(function: Callable[..., T], items: list) -> list[T]:
    """`function(item)` for every item, the items split across the process group's ranks (item i on
    rank i % world; all of them without a group); every rank gets every result, in order. An error
    on any rank is raised on every rank, so that they stop together instead of waiting for each other.
    A collective: every process calls it with the same items."""
    if not _grouped():
        return [function(item) for item in items]
    rank, world = dist.get_rank(), dist.get_world_size()
    mine, error = [], None
    try:
        mine = [function(item) for item in items[rank::world]]
    except Exception as caught:  # noqa: BLE001 - raised on every rank below
        error = caught
    gathered: list = [None] * world
    dist.all_gather_object(gathered, (mine, error))
    for _, failure in gathered:
        if failure is not None:
            raise failure
    results: list = [None] * len(items)
    for index, (done, _) in enumerate(gathered):
        results[index::world] = done
    return results


def from_rank0(function: Callable[[], T]) -> T:
    """`function()` computed by rank 0 alone and given to every rank (an error raised on every rank).
    A collective: every process calls it."""
    if not _grouped():
        return function()
    payload: list = [None]
    if dist.get_rank() == 0:
        try:
            payload = [(function(), None)]
        except Exception as caught:  # noqa: BLE001 - raised on every rank below
            payload = [(None, caught)]
    dist.broadcast_object_list(payload, src=0)
    value, failure = payload[0]
    if failure is not None:
        raise failure
    return value

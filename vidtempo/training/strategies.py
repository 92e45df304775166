"""Distributed strategies from a recipe string.

``fsdp`` (or ``fsdp2``) means FSDP2 through Lightning's ``ModelParallelStrategy`` as pure data parallelism,
on CPU (gloo) and CUDA (NCCL) alike: one code path, the one the CPU tests run. The objective's
``configure_model`` shards every transformer block (LLM and towers) with ``fully_shard``, then the model, then
each trained auxiliary module, then loads the pretrained LLM that ``vidtempo train`` left on the meta device,
each rank its own rows (``load_sharded``); ``bf16-mixed`` gets a ``MixedPrecisionPolicy`` (bf16 parameters for the
all-gather and compute, fp32 gradient reduction). ``ddp`` works everywhere (gloo on CPU).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn

log = logging.getLogger(__name__)


def resolve_strategy(strategy: Any, accelerator: str = "auto", devices: Any = 1, num_nodes: int = 1) -> Any:
    """``fsdp`` / ``fsdp2`` -> :class:`FSDP2Strategy` on every accelerator (one code path on CPU and CUDA);
    anything else is passed to Lightning as is."""
    if not isinstance(strategy, str) or strategy not in ("fsdp", "fsdp2"):
        return strategy
    return FSDP2Strategy()


class FSDP2Strategy(ModelParallelStrategy):
    """Lightning's ``ModelParallelStrategy`` as pure data parallelism: every process of every node is one
    FSDP2 replica (``data_parallel_size`` = world size, no tensor parallelism). Lightning's ``auto`` would make
    the data-parallel size the number of nodes and shard tensors across each node's devices instead."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(data_parallel_size="auto", tensor_parallel_size=1, **kwargs)

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()


def shard_for_strategy(module: Any) -> None:
    """Called from ``LightningModule.configure_model``: apply FSDP2 when the strategy is ModelParallel."""
    if not isinstance(module.trainer.strategy, ModelParallelStrategy) or getattr(module, "_sharded", False):
        return
    shard_objective(module, module.device_mesh["data_parallel"], mixed_precision_policy(module.trainer.precision))
    load_sharded(module.model)
    module._sharded = True


def load_sharded(model: nn.Module) -> None:
    """After ``fully_shard``: fill what ``build_video_llm(defer=True)`` left on the meta device, each rank reading
    only its own rows of each tensor into its local shard (``vidtempo.models.weights.load_pending``): no rank ever
    holds the whole LLM."""
    from vidtempo.models.weights import load_pending

    pending = getattr(model, "pending_weights", None)
    if pending:
        import torch.distributed as dist

        read = load_pending(pending)
        rank = dist.get_rank() if dist.is_initialized() else 0
        log.info("rank %d loaded its shards of the pretrained LLM (%.1f MB read; never the whole model)", rank,
                 read / 1e6)  # fmt: skip


def mixed_precision_policy(precision: Any) -> Any:
    """FSDP2's ``MixedPrecisionPolicy`` for a Lightning precision: ``bf16-mixed`` all-gathers and computes in
    bf16 with gradients reduced in fp32; None (the parameters' own dtype) otherwise."""
    if str(precision) != "bf16-mixed":
        return None
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def shard_objective(module: nn.Module, mesh: Any, mp_policy: Any = None) -> list[str]:
    """FSDP2 for a whole objective: the blocks and root of ``module.model``, then every other child with
    trainable parameters (e.g. the per-frame saliency / tag heads), each as its own FSDP root.

    ModelParallelStrategy does not wrap the module in DDP, so a trainable parameter left outside FSDP would
    get only its own rank's gradient and drift apart across ranks. Returns the names of the extra children.
    """
    from torch.distributed.fsdp import FSDPModule, fully_shard

    extra_kw = {"mp_policy": mp_policy} if mp_policy is not None else {}
    fully_shard_blocks(module.model, mesh, **extra_kw)
    extra = []
    for name, child in module.named_children():
        if name == "model" or not any(p.requires_grad for p in child.parameters()):
            continue
        # a container of losses (objective.aux) is never called itself: shard each member, which is
        for part_name, part in ([(f"{name}.{k}", m) for k, m in child.items()] if isinstance(child, nn.ModuleDict)
                                else [(name, child)]):  # fmt: skip
            if any(p.requires_grad for p in part.parameters()) and not isinstance(part, FSDPModule):
                fully_shard(part, mesh=mesh, **extra_kw)
                extra.append(part_name)
    return extra


def full_state_dict(model: nn.Module, every_rank: bool = False,
                    keep: Callable[[str], bool] | None = None) -> dict[str, Any]:
    """Unsharded state dict; plain for an unsharded model. Under FSDP2 a collective (every rank must call it)
    that gathers each tensor to rank 0's CPU memory one at a time: rank 0 gets the full state, the other ranks
    an empty dict, and no rank ever holds a full copy on its device. ``every_rank``: every rank gets the full
    state (for small modules every rank needs, e.g. auxiliary heads handed to the next stage). ``keep``: only
    the keys it accepts are gathered (an adapter-only save never gathers the frozen base LLM)."""
    state = model.state_dict()
    if keep is not None:
        state = {k: v for k, v in state.items() if keep(k)}
    if not any(hasattr(v, "full_tensor") for v in state.values()):
        return state
    if every_rank:
        return {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in state.items()}
    if keep is not None:
        return _gather_to_rank0(state)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    gathered = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if gathered:  # rank 0: keep every key the plain state dict has (tied weights share one tensor)
        for key, value in state.items():
            if key not in gathered and not hasattr(value, "full_tensor"):
                gathered[key] = value
    return gathered


def _gather_to_rank0(state: dict[str, Any]) -> dict[str, Any]:
    """Each DTensor all-gathered in turn (every rank calls, same key order), kept on rank 0's CPU only."""
    import torch.distributed as dist

    rank0 = dist.get_rank() == 0
    out: dict[str, Any] = {}
    for key, value in state.items():
        full = value.full_tensor() if hasattr(value, "full_tensor") else value
        if rank0:
            out[key] = full.detach().cpu()
        del full
    return out


BLOCK_NAMES = ("DecoderLayer", "EncoderLayer", "VisionBlock", "Dinov2Layer", "Block")  # class-name endings


def is_block(module: nn.Module) -> bool:
    """A transformer block of an LLM, a vision tower (SigLIP, CLIP, DINOv2, timm ViT, Qwen2.5-VL's ViT) or an
    audio tower (Whisper): the unit FSDP2 shards on its own."""
    return type(module).__name__.endswith(BLOCK_NAMES)


def fully_shard_blocks(model: nn.Module, mesh: Any, **kwargs: Any) -> None:
    """FSDP2: shard every block (LLM decoder blocks and the towers' blocks, frozen or not), then the root.
    Frozen blocks get no gradient buffers (FSDP2 allocates gradients only for parameters that require them). A
    model that an earlier stage already sharded is left as it is (``fully_shard`` applies once per module)."""
    from torch.distributed.fsdp import FSDPModule, fully_shard

    if isinstance(model, FSDPModule):
        return
    for module in list(model.modules()):
        if module is not model and is_block(module):
            fully_shard(module, mesh=mesh, **kwargs)
    fully_shard(model, mesh=mesh, **kwargs)

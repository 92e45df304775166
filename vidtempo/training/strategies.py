"""Distributed strategies from a recipe string.

``fsdp`` on CUDA -> Lightning's ``FSDPStrategy`` (transformer blocks wrapped, ``use_orig_params`` so frozen
and LoRA parameters can share units). On CPU, where Lightning's FSDP refuses to run, ``fsdp`` -> FSDP2
through ``ModelParallelStrategy``; the objective's ``configure_model`` then shards each block with
``fully_shard``. ``ddp`` works everywhere (gloo on CPU).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def resolve_strategy(strategy: Any, accelerator: str = "auto", devices: Any = 1, num_nodes: int = 1) -> Any:
    if not isinstance(strategy, str) or strategy not in ("fsdp", "fsdp2"):
        return strategy
    on_cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if strategy == "fsdp" and on_cuda:
        from lightning.pytorch.strategies import FSDPStrategy

        return FSDPStrategy(auto_wrap_policy=_block_policy, use_orig_params=True, sharding_strategy="FULL_SHARD")
    from lightning.pytorch.strategies import ModelParallelStrategy

    world = (int(devices) if str(devices).isdigit() else 1) * int(num_nodes)
    return ModelParallelStrategy(data_parallel_size=world, tensor_parallel_size=1)


def _block_policy(module: nn.Module, recurse: bool, nonwrapped_numel: int) -> bool:
    """FSDP1 auto-wrap: wrap every LLM decoder block (and recurse into everything else)."""
    if recurse:
        return True
    return type(module).__name__.endswith("DecoderLayer")


def shard_for_strategy(module: Any) -> None:
    """Called from ``LightningModule.configure_model``: apply FSDP2 when the strategy is ModelParallel."""
    from lightning.pytorch.strategies import ModelParallelStrategy

    if not isinstance(module.trainer.strategy, ModelParallelStrategy) or getattr(module, "_sharded", False):
        return
    shard_objective(module, module.device_mesh["data_parallel"])
    module._sharded = True


def shard_objective(module: nn.Module, mesh: Any) -> list[str]:
    """FSDP2 for a whole objective: the blocks and root of ``module.model``, then every other child with
    trainable parameters (e.g. the per-frame saliency / tag heads), each as its own FSDP root.

    ModelParallelStrategy does not wrap the module in DDP, so a trainable parameter left outside FSDP would
    get only its own rank's gradient and drift apart across ranks. Returns the names of the extra children.
    """
    from torch.distributed.fsdp import FSDPModule, fully_shard

    fully_shard_blocks(module.model, mesh)
    extra = [name for name, child in module.named_children()
             if name != "model" and any(p.requires_grad for p in child.parameters())]  # fmt: skip
    for name in extra:
        if not isinstance(getattr(module, name), FSDPModule):
            fully_shard(getattr(module, name), mesh=mesh)
    return extra


def full_state_dict(model: nn.Module) -> dict[str, Any]:
    """Unsharded state dict (a collective under FSDP2: every rank must call it); plain otherwise."""
    state = model.state_dict()
    if not any(hasattr(v, "full_tensor") for v in state.values()):
        return state
    return {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in state.items()}


def fully_shard_blocks(model: nn.Module, mesh: Any) -> None:
    """FSDP2: shard every decoder block, then the root (used on CPU and with ModelParallelStrategy). A model
    that an earlier stage already sharded is left as it is (``fully_shard`` applies once per module)."""
    from torch.distributed.fsdp import FSDPModule, fully_shard

    if isinstance(model, FSDPModule):
        return
    for module in list(model.modules()):
        if type(module).__name__.endswith("DecoderLayer"):
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)

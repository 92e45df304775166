"""FSDP2 lean build (#27 item 2, open part): the LLM is built on the meta device on every rank, sharded, and each
rank reads only its own rows of each checkpoint tensor into its local shard. Two gloo processes on a tiny saved
Qwen2 give the logits of ``from_pretrained`` and, after one SGD step, the weights of one process (atol 1e-5,
fp32); no rank reads more than its share of the checkpoint or holds more than its share of the weights."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

from vidtempo.models.llms.presets import tiny_llm

LR = 0.1


def _ids(rank: int) -> torch.Tensor:
    return torch.randint(0, 512, (2, 7), generator=torch.Generator().manual_seed(10 + rank))


def _loss(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=ids).logits  # (2, 7, V)
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())


def _worker(rank: int, store: str, ckpt: str, out: str) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from vidtempo.models.llms.hf import HFCausalLM
    from vidtempo.models.weights import defer_loads, empty_init, load_pending, meta_parameters
    from vidtempo.training.strategies import fully_shard_blocks

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        with empty_init():
            llm = HFCausalLM(ckpt)
        with defer_loads() as pending:
            llm.load_pretrained(dtype=torch.float32)
        all_meta = len(meta_parameters(llm)) == len(list(llm.parameters()))  # nothing allocated before sharding
        fully_shard_blocks(llm.model, init_device_mesh("cpu", (2,)))
        read = load_pending(pending)
        local = sum(p.to_local().numel() * p.element_size() for p in llm.model.parameters())
        ids = _ids(rank)
        with torch.no_grad():
            logits = llm.model(input_ids=_ids(0)).logits  # every rank the same input
        loss = _loss(llm.model, ids)
        loss.backward()  # FSDP2 averages the two ranks' gradients
        with torch.no_grad():
            for p in llm.model.parameters():
                p -= LR * p.grad
        state = {k: v.full_tensor() for k, v in llm.model.state_dict().items()}
        report = {"all_meta": all_meta, "read": read, "local": local, "logits": logits}
        gathered: list = [None, None]
        dist.all_gather_object(gathered, {k: v for k, v in report.items() if k != "logits"})
        if rank == 0:
            torch.save({"ranks": gathered, "logits": logits, "state": state}, out)
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_fsdp2_loads_each_rank_its_shard_and_trains_like_one_process(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    tiny_llm(vocab_size=512).model.save_pretrained(tmp_path / "llm")  # fp32 safetensors, untied embeddings
    file_bytes = (tmp_path / "llm" / "model.safetensors").stat().st_size
    torch.multiprocessing.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path / "llm"), str(tmp_path / "o")),
                                nprocs=2)  # fmt: skip
    got = torch.load(tmp_path / "o")
    ref = AutoModelForCausalLM.from_pretrained(tmp_path / "llm", dtype=torch.float32, local_files_only=True)
    weight_bytes = sum(p.numel() * p.element_size() for p in ref.parameters())
    for rank in got["ranks"]:
        assert rank["all_meta"]
        assert rank["read"] <= 0.55 * file_bytes, (rank["read"], file_bytes)  # its rows only (+ uneven chunks)
        assert rank["local"] <= 0.55 * weight_bytes, (rank["local"], weight_bytes)
    assert sum(r["read"] for r in got["ranks"]) >= weight_bytes  # together they read every tensor
    with torch.no_grad():
        torch.testing.assert_close(got["logits"], ref(input_ids=_ids(0)).logits, rtol=0, atol=1e-5)
    loss = 0.5 * (_loss(ref, _ids(0)) + _loss(ref, _ids(1)))  # one process, the same global batch
    loss.backward()
    with torch.no_grad():
        for p in ref.parameters():
            p -= LR * p.grad
    want = ref.state_dict()
    assert got["state"].keys() == want.keys()
    for key, value in want.items():
        torch.testing.assert_close(got["state"][key], value, rtol=0, atol=1e-5, msg=key)


def test_lora_on_a_deferred_llm_starts_from_the_adapters_of_a_loaded_one(tmp_path: Path) -> None:
    """peft would move new adapters onto their meta base layers (losing their initial values): they stay on the
    CPU, equal to those a loaded LLM gets from the same seed, and the deferred load then fills the base only."""
    from vidtempo.models.llms.hf import HFCausalLM
    from vidtempo.models.lora import LoraSettings, apply_lora
    from vidtempo.models.weights import defer_loads, empty_init, load_pending, meta_parameters

    tiny_llm().model.save_pretrained(tmp_path)
    llms = []
    for deferred in (False, True):
        with empty_init():
            llm = HFCausalLM(str(tmp_path))
        with defer_loads() if deferred else nullcontext() as pending:
            llm.load_pretrained(dtype=torch.bfloat16)
        torch.manual_seed(0)
        apply_lora(llm, LoraSettings(r=4, alpha=8))
        if deferred:
            adapters = [n for n, p in llm.named_parameters() if "lora_" in n and not p.is_meta]
            assert adapters and all(n not in meta_parameters(llm) for n in adapters)
            load_pending(pending)
        llms.append(dict(llm.named_parameters()))
    eager, lazy = llms
    assert eager.keys() == lazy.keys() and any("lora_A" in k for k in eager)
    for name, value in eager.items():
        assert lazy[name].dtype == value.dtype and torch.equal(lazy[name], value), name

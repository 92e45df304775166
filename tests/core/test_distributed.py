"""Two CPU processes over gloo (DDP, and FSDP2 through ModelParallelStrategy) train the tiny recipe to the
same weights as one process with the same global batch; DPO under FSDP2 to the same weights as under DDP;
FSDP2 averages the gradients of the heads beside the model. SGD keeps the comparisons exact (Adam's first
steps are sign-like and amplify reduction-order noise on near-zero gradients)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]


def run_train(recipe: Path, out: Path, *overrides: str, logs: list[str] | None = None) -> Path:
    cmd = [sys.executable, "-m", "vidtempo.cli.main", "train", str(recipe), f"output_dir={out}", *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    if logs is not None:
        logs.append(proc.stderr)
    return out / "1_more" / "final"


TWO_STAGES = "stages:\n  - {name: sft}\n  - {name: more, trainer: {max_steps: 1}}\n"
# stage 1 trains a LoRA adapter and merges it; stage 2 trains the rest with the merged LLM frozen
LORA_STAGES = ("stages:\n  - {name: sft, trainable: {llm: lora}, lora: {r: 4, alpha: 8, dropout: 0.0}, "
               "merge_lora_after: true}\n  - {name: more, trainable: {llm: false}, trainer: {max_steps: 1}}\n")


def write_recipe(video_dir: Path, tmp_path: Path, stages: str = TWO_STAGES) -> Path:
    rows = [json.loads(x) for x in (video_dir / "train.jsonl").read_text().splitlines()]
    for r in rows:  # same answer length for every sample: per-rank token means then average exactly
        r["conversations"][1]["value"] = "1.5 - 2.0 seconds"
        r["video"] = str(video_dir / r["video"])
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    recipe = tmp_path / "dist.yaml"
    recipe.write_text(
        f"_base_: {ROOT / 'recipes/tiny/sft_pool.yaml'}\n"
        f"data:\n  train: {{_target_: conversation, path: {tmp_path / 'train.jsonl'}}}\n  val: null\n"
        "  shuffle: false\n  batch_size: 2\n"
        "optim: {name: sgd, lr: 0.05, warmup_steps: 0, scheduler: constant}\n"
        "trainer: {max_steps: 2, val_check_interval: null, log_every_n_steps: 1}\n"
        # a second stage: under FSDP2 it must reuse the already sharded model and shard nothing twice
        + stages
    )
    return recipe


def losses(run: Path) -> list[float]:
    with open(run / "0_sft" / "logs" / "metrics.csv") as f:
        return [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]


def check_two_processes(strategy: str, video_dir: Path, tmp_path: Path, stages: str = TWO_STAGES,
                        *overrides: str) -> dict:
    recipe = write_recipe(video_dir, tmp_path, stages)
    one = load_file(str(run_train(recipe, tmp_path / "one", *overrides) / "model.safetensors"))
    curve = losses(tmp_path / "one")
    assert len(curve) == 2 and curve[1] < curve[0]  # the weights really moved
    final = run_train(recipe, tmp_path / strategy, "trainer.devices=2", f"trainer.strategy={strategy}",
                      "data.batch_size=1", *overrides)
    two = load_file(str(final / "model.safetensors"))
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=f"{strategy}: {key}")
    return one


@pytest.mark.distributed
def test_lora_merged_under_fsdp2_gives_the_weights_of_one_process(video_dir: Path, tmp_path: Path):
    one = check_two_processes("fsdp", video_dir, tmp_path, LORA_STAGES)
    assert not any("lora_" in k for k in one)  # merged: the second stage saved plain weights
    adapter = load_file(str(tmp_path / "one" / "0_sft" / "final" / "model.safetensors"))
    merged_some = False
    for a_key in (k for k in adapter if "lora_A" in k):
        prefix = a_key.split(".lora_A")[0]  # ...layers.0.self_attn.q_proj
        lora_a, lora_b = adapter[a_key], adapter[a_key.replace("lora_A", "lora_B")]  # (r, in), (out, r)
        base = adapter[prefix + ".base_layer.weight"]
        name = prefix.replace("base_model.model.", "") + ".weight"
        expected = base + (8 / 4) * lora_b @ lora_a  # W + (alpha / r) B A
        torch.testing.assert_close(one[name], expected, rtol=1e-5, atol=1e-6, msg=name)
        merged_some |= bool(lora_b.abs().max() > 0)
    assert merged_some  # the adapters moved, so the merge really changed the weights


@pytest.mark.distributed
def test_lora_under_fsdp2_saves_the_adapter_only_like_one_process(video_dir: Path, tmp_path: Path):
    """An unmerged LoRA stage on a pretrained LLM: ``final/`` holds the adapter and the non-LLM weights, never
    the frozen base LLM (which is not even gathered), plus peft's ``adapter/`` written from the gathered
    factors; the same files as one process, and the checkpoint reloads onto the base weights. Under FSDP2 the
    pretrained LLM (``weights: {llm: null}``) is built on the meta device and each rank loads only its shards
    after ``fully_shard`` (#27 item 2); one process loads it whole before training."""
    from vidtempo.models.checkpoint import load_pretrained
    from vidtempo.models.llms.presets import tiny_llm

    torch.manual_seed(0)
    base = tmp_path / "base_llm"
    tiny_llm().model.save_pretrained(base)
    stages = (f"model:\n  llm: {{_target_: hf_causal_lm, name_or_path: {base}}}\n  trainable: {{llm: lora}}\n"
              "  lora: {r: 4, alpha: 8, dropout: 0.0}\nweights: {llm: null}\nstages:\n  - {name: sft}\n")
    recipe = write_recipe(video_dir, tmp_path, stages)
    finals, logs = {}, {"one": [], "two": []}
    for name, args in (("one", ()), ("two", ("trainer.devices=2", "trainer.strategy=fsdp", "data.batch_size=1"))):
        finals[name] = run_train(recipe, tmp_path / name, *args, logs=logs[name]).parent.parent / "0_sft" / "final"
    assert "loaded its shards of the pretrained LLM" in logs["two"][0]  # deferred to after fully_shard
    assert "loaded its shards" not in logs["one"][0]
    one, two = (load_file(str(finals[n] / "model.safetensors")) for n in ("one", "two"))
    assert one.keys() == two.keys() and not [k for k in two if k.startswith("llm.") and "lora_" not in k]
    assert any(two[k].abs().max() > 0 for k in two if "lora_B" in k)  # the adapters moved
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=key)
    peft_one, peft_two = (load_file(str(finals[n] / "adapter" / "adapter_model.safetensors")) for n in ("one", "two"))
    assert peft_one.keys() == peft_two.keys() and peft_two
    for key in peft_one:
        torch.testing.assert_close(peft_two[key], peft_one[key], rtol=1e-4, atol=1e-5, msg=key)
    model, _, config = load_pretrained(finals["two"])
    assert config["adapter_only"] and model.has_lora


@pytest.mark.distributed
def test_fsdp2_on_two_cpu_processes_matches_one_process(video_dir: Path, tmp_path: Path):
    # with grouped batches: Lightning cannot re-wrap that batch sampler (it stopped with a TypeError), the
    # datamodule shards it. Every clip here is a different video, so the grouped batches are the plain ones.
    # The plain sampler under FSDP2 is covered by the LoRA test above and the DPO test below.
    check_two_processes("fsdp", video_dir, tmp_path, TWO_STAGES, "+data.group_by_video=2")


@pytest.mark.distributed
@pytest.mark.slow
def test_ddp_on_two_cpu_processes_matches_one_process(video_dir: Path, tmp_path: Path):
    check_two_processes("ddp", video_dir, tmp_path)


class _Objective(torch.nn.Module):
    """An objective's layout: the model, a trainable head beside it, and a frozen extra."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh())
        self.head = torch.nn.Linear(8, 3)
        self.frozen = torch.nn.Linear(3, 3).requires_grad_(False)

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        return self.frozen(self.head(self.model(x))).pow(2).mean()


def _inputs(rank: int) -> torch.Tensor:
    return torch.randn(4, 6, generator=torch.Generator().manual_seed(100 + rank))


def _shard_worker(rank: int, store: str, out: str) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from vidtempo.training.strategies import shard_objective

    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=2)
    try:
        objective = _Objective()
        extra = shard_objective(objective, init_device_mesh("cpu", (2,)))
        objective.loss(_inputs(rank)).backward()  # each rank its own data
        grads = {n: getattr(p.grad, "full_tensor", lambda g=p.grad: g)()
                 for n, p in objective.named_parameters() if p.requires_grad}  # fmt: skip
        if rank == 0:
            torch.save({"extra": extra, "grads": grads}, out)
        dist.barrier()  # neither rank tears gloo down while the other still uses it (a flaky SIGABRT in CI)
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_fsdp2_shards_the_heads_beside_the_model_so_their_gradients_are_averaged(tmp_path: Path):
    # without this the per-frame heads kept each rank's own gradient under ModelParallelStrategy (no DDP)
    import socket

    with socket.socket() as sock:  # a TCP store on a free port (the file:// store aborted a rank at exit in CI)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    torch.multiprocessing.spawn(_shard_worker, args=(f"tcp://127.0.0.1:{port}", str(tmp_path / "out.pt")), nprocs=2)
    got = torch.load(tmp_path / "out.pt")
    assert got["extra"] == ["head"]  # the frozen child is left alone
    reference = _Objective()
    (0.5 * (reference.loss(_inputs(0)) + reference.loss(_inputs(1)))).backward()
    expected = {n: p.grad for n, p in reference.named_parameters() if p.requires_grad}
    assert got["grads"].keys() == expected.keys() and "head.weight" in expected
    for name, grad in expected.items():
        torch.testing.assert_close(got["grads"][name], grad, msg=name)


def run_dpo(out: Path, data: Path, strategy: str) -> dict[str, torch.Tensor]:
    """One LoRA DPO stage of the tiny TEMPO recipe on two processes: 2 SGD steps, one pair per rank."""
    overrides = [
        f"output_dir={out}", "curriculum.with_sft=false", "curriculum.levels=[16]", "curriculum.per_level=2",
        f"dpo.data.train.root={data}", "~dpo.data.val", "dpo.data.batch_size=1", "+dpo.data.shuffle=false",
        "dpo.objective.rpo_alpha=null", "+dpo.optim.name=sgd", "dpo.optim.lr=0.05", "dpo.optim.warmup_ratio=0",
        "dpo.optim.scheduler=constant", "data.collator.num_frames=2", "trainer.devices=2",
        f"+trainer.strategy={strategy}",
    ]  # fmt: skip
    cmd = [sys.executable, "-m", "vidtempo.cli.main", "dpo", str(ROOT / "recipes/tiny/tempo_synth.yaml"), *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return load_file(str(out / "0_dpo" / "final" / "model.safetensors"))


@pytest.mark.distributed
def test_dpo_under_fsdp2_trains_like_ddp(tmp_path: Path):
    from vidtempo.synth.generate import generate

    generate(tmp_path / "data", num_videos=6, seed=0, size=32, min_duration=6, max_duration=6, progress=False)
    ddp = run_dpo(tmp_path / "ddp", tmp_path / "data", "ddp")
    fsdp = run_dpo(tmp_path / "fsdp", tmp_path / "data", "fsdp")
    assert ddp.keys() == fsdp.keys()
    adapters = [k for k in ddp if "lora_B" in k]
    assert adapters and any(ddp[k].abs().max() > 0 for k in adapters)  # the adapters really moved
    for key in ddp:
        torch.testing.assert_close(fsdp[key], ddp[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.distributed
def test_fsdp2_bf16_mixed_clips_resumes_from_a_sharded_checkpoint_and_exports_like_one_process(video_dir: Path,
                                                                                                tmp_path: Path):
    """The GPU recipe path on CPU: ``strategy: fsdp`` (FSDP2, the only FSDP path) with ``bf16-mixed`` (bf16
    all-gather and compute, fp32 reduction), gradient clipping that bites, a run cut after step 1 and resumed
    from its sharded checkpoint directory, then ``final/`` gathered to one file. Equal to one process within
    bf16 tolerance (atol 2e-2 on weights that moved by ~1e-2 per step)."""
    stage = "stages:\n  - {name: sft}\n"
    recipe = write_recipe(video_dir, tmp_path, stage)
    bf16 = ("trainer.precision=bf16-mixed", "+optim.grad_clip=0.01", "checkpoint.every_n_steps=1")
    one_dir = run_train(recipe, tmp_path / "one", *bf16).parent.parent / "0_sft" / "final"
    one = load_file(str(one_dir / "model.safetensors"))
    two_args = ("trainer.devices=2", "trainer.strategy=fsdp", "data.batch_size=1", *bf16)
    cut = run_train(recipe, tmp_path / "two", *two_args, "trainer.max_steps=1").parent.parent
    import shutil

    shutil.rmtree(cut / "0_sft" / "final")  # as if killed after the step-1 checkpoint
    assert (cut / "0_sft" / "checkpoints" / "last.ckpt").is_dir()  # sharded: a directory per checkpoint
    run_train(recipe, tmp_path / "two", *two_args, "--allow-changed-recipe")
    two = load_file(str(cut / "0_sft" / "final" / "model.safetensors"))
    steps = [int(r["step"]) for r in csv.DictReader(open(cut / "0_sft" / "logs" / "metrics.csv")) if r.get("train/loss")]
    assert steps == [0, 1]  # resumed at step 1
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key].float(), one[key].float(), rtol=0, atol=2e-2, msg=key)
    # the clipping bit: two SGD steps (momentum 0.9) at lr 0.05 with gradients clipped to norm 0.01 move the
    # weights by at most 0.05 x 0.01 x (1 + 1.9) = 1.45e-3 (measured: 1.4463e-3, both steps clipped to the
    # bound; with the recipe's clip of 1.0 the same steps move them by far more)
    start = load_file(str(run_train(recipe, tmp_path / "zero", "trainer.max_steps=0").parent.parent / "0_sft" / "final"
                          / "model.safetensors"))  # fmt: skip
    moved = torch.sqrt(sum(((two[k].float() - start[k].float()) ** 2).sum() for k in start))
    assert 1.3e-3 < moved <= 1.45e-3 * 1.001, moved

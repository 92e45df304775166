"""Real recipes built for real (#27 item 9): every real-size recipe is built at its real widths, with one block per
tower and LLM (random init, no download), and runs one bf16 training step and one generation on tiny inputs, so
dimension mismatches between real parts show up on CPU.

Kept at real size: every width (hidden sizes, MLP widths, heads, KV heads, head dims, LoRA ranks and targets,
Q-Former width and query count, compressor widths, projector dims). Reduced so a 2-core CPU runs it in about a
minute (bf16 matmuls on an AVX2 CPU run at ~3 GFLOPS): depth (1 block per tower and LLM; 2 Q-Former layers so one
has cross-attention; the native Qwen2.5-VL ViT keeps one window and one full-attention block), the LLM vocabulary
(4,096 rows: the 152k table alone is 1.1 B parameters; the Qwen2.5-VL vision token ids move to the tiny
tokenizer's 512-516), image sides (28 px: a 2x2 patch grid per tower, grids pooled to 2x2), Whisper's window
(1 s = 50 steps instead of 30 s) and the frames (4 per clip, from a real 32x32 test video). Tokenizers are the tiny
ones (the real ones would need a download).

The step is what Lightning's ``bf16-true`` runs: the model cast to bf16, the batch through
:class:`~vidtempo.training.precision.KeepFp32HalfPrecision` (uint8 frames, fp32 timestamps / audio), the loss under
its ``train_step_context``, backward, AdamW on the trainable parameters of the recipe's last stage.

The recipe reductions and the builders live in ``benchmarks/real_recipes.py`` (shared with
``benchmarks/train_throughput.py``, which times the same models at two or more LLM blocks).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from vidtempo.training.precision import KeepFp32HalfPrecision
from vidtempo.training.sft import SFTModule

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))  # the shared builders: benchmarks/real_recipes.py
try:
    from real_recipes import REDUCE, ColumnMajorBf16Gemm, model_and_plan, recipe_tokenizer
finally:
    sys.path.pop(0)


def _batch(name: str, collator: dict[str, Any], video_dir: Path) -> Any:
    from vidtempo.data.collate import VideoCollator
    from vidtempo.data.samples import ConversationSample

    tokenizer = recipe_tokenizer(name)
    if name == "tempo_qwen2_5_vl_7b":
        collator = {**collator, "frame_size": 56}
    sample = ConversationSample(video=str(video_dir / "v1.mp4"), id="v1", messages=[
        {"role": "user", "content": "<video>\nWhen is the beep?"}, {"role": "assistant", "content": "at 0.8 s"}])  # fmt: skip
    keys = ("num_frames", "fps", "max_frames", "frame_size", "audio", "backend")
    return VideoCollator(tokenizer, **{k: v for k, v in collator.items() if k in keys})([sample])


@pytest.mark.parametrize("name", sorted(REDUCE))
def test_real_recipe_at_real_widths_trains_a_bf16_step_and_generates(name, video_dir):
    start = time.perf_counter()
    torch.manual_seed(0)
    model, stage, collator = model_and_plan(name)
    precision = KeepFp32HalfPrecision("bf16-true")
    batch = precision.convert_input(_batch(name, collator, video_dir))
    assert batch.frames.dtype == torch.uint8 and batch.timestamps.dtype == torch.float32
    module = SFTModule(model, optim=stage["optim"])
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and {p.dtype for p in trainable} == {torch.bfloat16}
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    model.train()
    with precision.train_step_context(), ColumnMajorBf16Gemm():
        loss, metrics = module.compute_loss(batch, "train")
        loss.backward()
    assert torch.isfinite(loss) and loss.dtype == torch.float32, loss
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in trainable)
    before = [p.detach().clone() for p in trainable[:4]]
    optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, trainable[:4]))
    model.eval()
    gen = batch.model_inputs(with_labels=False)
    with precision.forward_context(), ColumnMajorBf16Gemm():
        new = model.generate(**gen, max_new_tokens=2)
    assert new.shape[0] == 1 and 1 <= new.shape[1] <= 2
    print(f"{name}: {metrics['video_tokens']:.0f} video tokens, {time.perf_counter() - start:.1f} s")

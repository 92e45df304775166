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
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from vidtempo.config.instantiate import instantiate
from vidtempo.config.load import load_recipe
from vidtempo.models.build import build_video_llm
from vidtempo.models.interfaces import TrainableParts
from vidtempo.models.weights import assign_tensor, empty_init
from vidtempo.training.build import expand_stages
from vidtempo.training.precision import KeepFp32HalfPrecision
from vidtempo.training.run import prepare
from vidtempo.training.sft import SFTModule

ROOT = Path(__file__).resolve().parents[2]
_GEMMS = {torch.ops.aten.mm.default: 0, torch.ops.aten.addmm.default: 1, torch.ops.aten.bmm.default: 0,
          torch.ops.aten.baddbmm.default: 1}  # op -> index of its left operand  # fmt: skip


class ColumnMajorBf16Gemm(TorchDispatchMode):
    """CPU speed only, same math: on CPUs without AVX-512 (this one: AVX2), PyTorch's bf16 GEMM with both operands
    row-major (the input gradient of every Linear, ``grad @ W``) takes a fallback kernel that runs at ~0.1 GFLOPS,
    while the same product with a column-major left operand runs at ~10 GFLOPS. This mode hands such products a
    column-major copy of the left operand (an activation: small). Not used by vidtempo itself."""

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        i = _GEMMS.get(func)
        if i is not None:
            a, b = args[i], args[i + 1]
            if a.dtype == torch.bfloat16 and a.device.type == "cpu" and a.is_contiguous() and b.is_contiguous():
                args = (*args[:i], a.mT.contiguous().mT, *args[i + 1 :])
        return func(*args, **(kwargs or {}))

VOCAB = 4096
ONE_BLOCK = {"num_hidden_layers": 1, "vocab_size": VOCAB}
TINY_IMAGE = {"image_size": 28, "pool_to": [2, 2]}
SHORT_WHISPER = {"config": {"encoder_layers": 1, "decoder_layers": 1, "max_source_positions": 50}}
QFORMER_2 = {"preset": "bert_base", "num_hidden_layers": 2}
COLLATOR = {"num_frames": 4, "fps": None, "max_frames": None, "frame_size": 32}


def _tdc(cfg: Any) -> None:
    model = cfg.model
    model.vision_encoder.grid = [2, 2]
    model.vision_encoder.towers[0] = {**model.vision_encoder.towers[0], **TINY_IMAGE, "config": {"num_hidden_layers": 1}}
    model.vision_encoder.towers[1] = {**model.vision_encoder.towers[1], **TINY_IMAGE, "config": {"num_hidden_layers": 1}}
    model.audio_encoder = {**model.audio_encoder, **SHORT_WHISPER}
    model.compressor.qformer = QFORMER_2
    model.compressor.tokenizer = "tiny"
    model.compressor.audio_tokens_per_frame = 4  # 50 in the recipe: 200 LLM tokens for 4 frames
    model.llm.config = ONE_BLOCK


def _damo(cfg: Any) -> None:
    model = cfg.model
    model.vision_encoder = {**model.vision_encoder, "depth": 2, "img_size": 28}  # select_layer -2 = block 0
    model.audio_encoder = {**model.audio_encoder, **SHORT_WHISPER}
    model.compressor.depth = 1
    model.compressor.qformer = QFORMER_2
    model.compressor.tokenizer = "tiny"
    model.compressor.segment_seconds = 1.0  # = the shortened Whisper window
    model.llm.config = ONE_BLOCK


def _tempo(cfg: Any) -> None:
    cfg.model.llm.config = {**ONE_BLOCK, "bos_token_id": None, "eos_token_id": 3, "pad_token_id": 1,
                            "vision_start_token_id": 512, "vision_end_token_id": 513, "image_token_id": 515,
                            "video_token_id": 516,
                            "vision_config": {"depth": 2, "fullatt_block_indexes": [1]}}  # fmt: skip
    cfg.model.min_pixels = 28 * 28 * 4  # 56 x 56 frames: 2 x 2 merged tokens per frame pair
    cfg.model.max_pixels = 28 * 28 * 4
    cfg.model.total_pixels = None


RECIPES = {"tdc_qwen2": _tdc, "tdc_llama3_2_3b": _tdc, "damo_mistral7b": _damo, "tempo_qwen2_5_vl_7b": _tempo}


def _model_and_plan(name: str) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    cfg = load_recipe(ROOT / "recipes" / f"{name}.yaml")
    RECIPES[name](cfg)
    plain, _ = prepare(cfg)
    stage = expand_stages(plain)[-1]  # the last stage: LoRA on the LLM (+ ViT for TEMPO) and, for TDC, audio
    collator = {**(stage["data"].get("collator") or {}), **COLLATOR}
    node = dict(plain["model"])
    with empty_init():  # the LLM (the costly part): real constructor, parameters on meta, filled cheaply in bf16
        node["llm"] = instantiate(node["llm"], key="model.llm", recipe=name)
    _fill_random(node["llm"])
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # the other parts: their own random init, straight in bf16
    try:
        model = build_video_llm(node, recipe=name)  # no weights, no download
    finally:
        torch.set_default_dtype(default)
    model.lora = model.lora if not stage.get("lora") else type(model.lora)(**stage["lora"])
    model.set_trainable(TrainableParts(**stage["trainable"]))
    return model.to(torch.bfloat16), stage, collator


def _fill_random(model: torch.nn.Module) -> None:
    """Every meta parameter as a bf16 tensor: matrices uniform in +-0.05, biases 0, other vectors (norm scales) 1
    (about 5x faster than the layers' own init at these widths; only the dimensions and dtypes are under test)."""
    gen = torch.Generator().manual_seed(0)
    done: dict[int, torch.Tensor] = {}  # tied parameters stay tied
    for name, param in list(model.named_parameters(remove_duplicate=False)):
        if not param.is_meta:
            continue
        if id(param) not in done:
            value = torch.empty(param.shape, dtype=torch.bfloat16)
            if param.ndim >= 2:
                value.uniform_(-0.05, 0.05, generator=gen)
            else:
                value.fill_(0.0 if name.endswith("bias") else 1.0)
            done[id(param)] = assign_tensor(model, name, value, like=param)
        else:
            assign_tensor(model, name, done[id(param)])


def _batch(name: str, collator: dict[str, Any], video_dir: Path) -> Any:
    from vidtempo.data.collate import VideoCollator
    from vidtempo.data.samples import ConversationSample

    if name == "tempo_qwen2_5_vl_7b":
        from vidtempo.models.native.qwen2_5_vl import tiny_qwen2_5_vl_tokenizer

        tokenizer, collator = tiny_qwen2_5_vl_tokenizer(), {**collator, "frame_size": 56}
    else:
        from vidtempo.models.tokenizers import tiny_tokenizer

        tokenizer = tiny_tokenizer()
    sample = ConversationSample(video=str(video_dir / "v1.mp4"), id="v1", messages=[
        {"role": "user", "content": "<video>\nWhen is the beep?"}, {"role": "assistant", "content": "at 0.8 s"}])  # fmt: skip
    keys = ("num_frames", "fps", "max_frames", "frame_size", "audio", "backend")
    return VideoCollator(tokenizer, **{k: v for k, v in collator.items() if k in keys})([sample])


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_real_recipe_at_real_widths_trains_a_bf16_step_and_generates(name, video_dir):
    start = time.perf_counter()
    torch.manual_seed(0)
    model, stage, collator = _model_and_plan(name)
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

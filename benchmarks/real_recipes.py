"""Real-size recipes built at their real widths with reduced depth, random init, no download (#27 items 9, 10).

Shared by ``tests/models/test_real_recipes.py`` (one bf16 step and one generation per recipe on CPU) and
``benchmarks/train_throughput.py`` (throughput at real widths). Kept at real size: every width (hidden sizes,
MLP widths, heads, KV heads, head dims, LoRA ranks and targets, Q-Former width and query count, compressor
widths, projector dims). Reduced (each a field of :class:`Reduction`; the defaults are the test's): the LLM
depth, the LLM vocabulary (the 152k table alone is 1.1 B parameters; the Qwen2.5-VL vision token ids move to the
tiny tokenizer's 512-516), the towers' depth (1 block; 2 Q-Former layers so one has cross-attention; the native
Qwen2.5-VL ViT keeps one window and one full-attention block), image sides (28 px: a 2x2 patch grid per tower,
grids pooled to 2x2; ``image_size=None`` keeps the recipe's sides and grids), Whisper's window (1 s = 50 steps
instead of 30 s), TDC's audio tokens per frame and the native Qwen2.5-VL's pixels per frame. Tokenizers are
the tiny ones (the real ones would need a download).

Example (builds ~0.5 B parameters, so not a doctest)::

    model, stage, collator = model_and_plan("tdc_qwen2", Reduction(llm_layers=2))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from vidtempo.config.instantiate import instantiate
from vidtempo.config.load import load_recipe
from vidtempo.models.build import build_video_llm
from vidtempo.models.interfaces import TrainableParts
from vidtempo.models.weights import assign_tensor, empty_init
from vidtempo.training.build import expand_stages
from vidtempo.training.run import prepare

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 4096
QFORMER_2 = {"preset": "bert_base", "num_hidden_layers": 2}
COLLATOR = {"num_frames": 4, "fps": None, "max_frames": None, "frame_size": 32}
QWEN_VISION_IDS = {"bos_token_id": None, "eos_token_id": 3, "pad_token_id": 1, "vision_start_token_id": 512,
                   "vision_end_token_id": 513, "image_token_id": 515, "video_token_id": 516}  # fmt: skip
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


@dataclass(frozen=True)
class Reduction:
    """What is reduced to fit a machine (widths never are). Defaults: the CPU test's sizes.

    Args:
        llm_layers: LLM decoder blocks.
        vocab: LLM vocabulary rows (None = the recipe's).
        image_size: tower image side in pixels with a 2x2 grid pooled to 2x2 (None = the recipe's sides/grids).
        whisper_steps: Whisper encoder positions (50 = a 1 s window; 1500 = the real 30 s).
        audio_tokens_per_frame: TDC's audio tokens per frame (the recipe: 50).
        qwen_pixels: pixels per frame of the native Qwen2.5-VL (min = max; 28 * 28 * 4 = 56 x 56 frames).
        vit_depth: native Qwen2.5-VL ViT blocks (the last one full attention, the others windowed).
    """

    llm_layers: int = 1
    vocab: int | None = VOCAB
    image_size: int | None = 28
    whisper_steps: int = 50
    audio_tokens_per_frame: int = 4
    qwen_pixels: int = 28 * 28 * 4
    vit_depth: int = 2

    def llm_config(self) -> dict[str, Any]:
        return {"num_hidden_layers": self.llm_layers, **({"vocab_size": self.vocab} if self.vocab else {})}


def _whisper(red: Reduction) -> dict[str, Any]:
    return {"config": {"encoder_layers": 1, "decoder_layers": 1, "max_source_positions": red.whisper_steps}}


def _tdc(cfg: Any, red: Reduction) -> None:
    model = cfg.model
    for i in (0, 1):
        tower = {**model.vision_encoder.towers[i], "config": {"num_hidden_layers": 1}}
        if red.image_size is not None:
            tower = {**tower, "image_size": red.image_size, "pool_to": [2, 2]}
        model.vision_encoder.towers[i] = tower
    if red.image_size is not None:
        model.vision_encoder.grid = [2, 2]
    model.audio_encoder = {**model.audio_encoder, **_whisper(red)}
    model.compressor.qformer = QFORMER_2
    model.compressor.tokenizer = "tiny"
    model.compressor.audio_tokens_per_frame = red.audio_tokens_per_frame
    model.llm.config = red.llm_config()


def _damo(cfg: Any, red: Reduction) -> None:
    model = cfg.model
    model.vision_encoder = {**model.vision_encoder, "depth": 2,  # select_layer -2 = block 0
                            **({"img_size": red.image_size} if red.image_size is not None else {})}  # fmt: skip
    model.audio_encoder = {**model.audio_encoder, **_whisper(red)}
    model.compressor.depth = 1
    model.compressor.qformer = QFORMER_2
    model.compressor.tokenizer = "tiny"
    model.compressor.segment_seconds = red.whisper_steps / 50  # = the shortened Whisper window
    model.llm.config = red.llm_config()


def _tempo(cfg: Any, red: Reduction) -> None:
    vision = {"depth": red.vit_depth, "fullatt_block_indexes": [red.vit_depth - 1]}
    cfg.model.llm.config = {**red.llm_config(), **QWEN_VISION_IDS, "vision_config": vision}
    cfg.model.min_pixels = red.qwen_pixels
    cfg.model.max_pixels = red.qwen_pixels
    cfg.model.total_pixels = None


REDUCE: dict[str, Callable[[Any, Reduction], None]] = {
    "tdc_qwen2": _tdc, "tdc_llama3_2_3b": _tdc, "damo_mistral7b": _damo, "tempo_qwen2_5_vl_7b": _tempo}  # fmt: skip


def stages_of(name: str, red: Reduction) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(resolved recipe, merged stages) of the reduced recipe ``recipes/<name>.yaml``."""
    cfg = load_recipe(ROOT / "recipes" / f"{name}.yaml")
    REDUCE[name](cfg, red)
    plain, _ = prepare(cfg)
    return plain, expand_stages(plain)


def model_and_plan(name: str, red: Reduction = Reduction(), stage: dict[str, Any] | None = None,
                   device: torch.device | str = "cpu", dtype: torch.dtype = torch.bfloat16,
                   ) -> tuple[Any, dict[str, Any], dict[str, Any]]:  # fmt: skip
    """(model, stage, collator settings): the reduced recipe's model, random init, in ``dtype`` on ``device``,
    with the ``trainable`` plan (and LoRA) of ``stage`` (default: the recipe's last stage). The LLM (the costly
    part) is built on the meta device and filled on ``device`` directly; the other parts run their own init."""
    plain, stages = stages_of(name, red)
    stage = stage if stage is not None else stages[-1]
    collator = {**(stage["data"].get("collator") or {}), **COLLATOR}
    node = dict(plain["model"])
    with empty_init():  # real constructor, parameters on meta, filled cheaply
        node["llm"] = instantiate(node["llm"], key="model.llm", recipe=name)
    fill_random(node["llm"], device, dtype)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # the other parts: their own random init, straight in dtype
    try:
        model = build_video_llm(node, recipe=name)  # no weights, no download
    finally:
        torch.set_default_dtype(default)
    model.lora = model.lora if not stage.get("lora") else type(model.lora)(**stage["lora"])
    model.set_trainable(TrainableParts(**stage["trainable"]))
    return model.to(device=device, dtype=dtype), stage, collator


def fill_random(model: torch.nn.Module, device: torch.device | str = "cpu", dtype: torch.dtype = torch.bfloat16) -> None:
    """Every meta parameter as a ``dtype`` tensor on ``device``: matrices uniform in +-0.05, biases 0, other
    vectors (norm scales) 1 (about 5x faster than the layers' own init at these widths; only the dimensions,
    dtypes and the arithmetic are under test)."""
    gen = torch.Generator(device=device).manual_seed(0)
    done: dict[int, torch.Tensor] = {}  # tied parameters stay tied
    for name, param in list(model.named_parameters(remove_duplicate=False)):
        if not param.is_meta:
            continue
        if id(param) not in done:
            value = torch.empty(param.shape, dtype=dtype, device=device)
            if param.ndim >= 2:
                value.uniform_(-0.05, 0.05, generator=gen)
            else:
                value.fill_(0.0 if name.endswith("bias") else 1.0)
            done[id(param)] = assign_tensor(model, name, value, like=param)
        else:
            assign_tensor(model, name, done[id(param)])


def recipe_tokenizer(name: str) -> Any:
    """The tiny tokenizer standing in for the recipe's (the Qwen2.5-VL one knows its vision tokens)."""
    if name == "tempo_qwen2_5_vl_7b":
        from vidtempo.models.native.qwen2_5_vl import tiny_qwen2_5_vl_tokenizer

        return tiny_qwen2_5_vl_tokenizer()
    from vidtempo.models.tokenizers import tiny_tokenizer

    return tiny_tokenizer()

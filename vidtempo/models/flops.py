"""Video-aware FLOP model: forward and training FLOPs per sample of a ``VideoModel``, split by part.

Pure arithmetic from the parts' configs (no tracing, so it also works on a model built on the meta device,
as ``vidtempo inspect`` builds it). Counted are the matrix products: every linear layer and convolution
(weights) and the two products of each attention (``Q K^T`` and ``P V``, the L^2 terms, counted over the full
L x L square as ``torch.utils.flop_counter`` and sdpa kernels do, causal or not). A multiply-add is 2 FLOPs.
Left out (as by ``FlopCounterMode``): norms, activations, softmax, embeddings lookups, pooling, the loss and
the optimiser step; activation recomputation under gradient checkpointing is not counted either (model FLOPs,
not hardware FLOPs). ``docs/performance.md`` gives the formulas.

A prefix-shared preference pair (:func:`pair_flops`, DPO's one-row layout of
``vidtempo.models.prefix_share``) runs the video path and the prefix (video tokens + prompt) once: the LLM's
linear layers see prefix + both answers, its attention is the prefix's causal square plus both answers'
queries over the row (prefix + both answers, the other answer masked, as the kernel computes it), and the LM
head runs at the answer positions only.

Backward of a part, from its ``trainable`` flag and whether its input carries a gradient:

* weights: a weight gradient (= the forward FLOPs of that product) only for trained weights (LoRA: only the
  adapter's); an activation gradient (= the forward FLOPs again) wherever something before needs it;
* attention: both operands' gradients (2x the forward products) once the inputs carry a gradient;
* a frozen part with nothing trained before it has no backward at all (frozen towers run forward only).

Example:
    >>> from vidtempo.models.build import build_video_llm
    >>> model = build_video_llm({"_target_": "vidtempo.models.VideoLLM", "vision_encoder": {"_target_": "tiny"},
    ...                          "compressor": {"_target_": "pool", "in_dim": 32}, "llm": {"_target_": "tiny"}})
    >>> report = model_flops(model, frames=4, text_tokens=16)
    >>> report.video_tokens, report.llm_tokens, report.parts["vision_encoder"].backward
    (16, 32, 0.0)
    >>> report.train > report.forward > 0
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

__all__ = ["FlopReport", "PartFlops", "model_flops", "pair_flops"]

QFORMER_TEXT_TOKENS = 32  # default instruction tokens a text-reading Q-Former sees ([CLS] ... [SEP])


@dataclass
class PartFlops:
    """FLOPs of one part for one sample.

    Attributes:
        forward: forward matrix-product FLOPs.
        backward: backward FLOPs (weight and activation gradients) under the model's ``trainable`` plan.
    """

    forward: float = 0.0
    backward: float = 0.0

    @property
    def train(self) -> float:
        """Forward + backward."""
        return self.forward + self.backward


@dataclass
class FlopReport:
    """FLOPs per sample of a whole model, split by part.

    Attributes:
        parts: {part: PartFlops} in the model's order (``vision_encoder``, ``audio_encoder``, ``compressor``,
            ``projector``, ``llm``).
        llm_tokens: tokens of the LLM sequence (text + video).
        video_tokens: video tokens inserted into it.
        unmodelled: parts whose module the model does not know (counted as 0).
    """

    parts: dict[str, PartFlops]
    llm_tokens: int
    video_tokens: int
    unmodelled: list[str] = field(default_factory=list)

    @property
    def forward(self) -> float:
        return sum(p.forward for p in self.parts.values())

    @property
    def train(self) -> float:
        """Training FLOPs per sample (forward + backward)."""
        return sum(p.train for p in self.parts.values())


# ---------------------------------------------------------------------------------------------- accounting
@dataclass
class _Ops:
    """Forward FLOPs of one part, by kind: ``weight`` products (linear, conv), ``attn`` products (Q K^T, P V),
    ``first`` = the weight products that read the part's input directly (no activation gradient unless the
    input carries one), ``lora`` = LoRA adapter products, ``dead`` = forward-only products that nothing
    differentiates (SigLIP's unused pooling head, the constant log-mel filterbank)."""

    weight: float = 0.0
    attn: float = 0.0
    first: float = 0.0
    lora: float = 0.0
    dead: float = 0.0

    def __iadd__(self, other: _Ops) -> _Ops:
        self.weight += other.weight
        self.attn += other.attn
        self.first += other.first
        self.lora += other.lora
        self.dead += other.dead
        return self

    def __add__(self, other: _Ops) -> _Ops:
        out = self.scaled(1.0)
        out += other
        return out

    def scaled(self, k: float) -> _Ops:
        return _Ops(self.weight * k, self.attn * k, self.first * k, self.lora * k, self.dead * k)


def _part(ops: _Ops, trainable: Any, grad_in: bool) -> tuple[PartFlops, bool]:
    """(FLOPs, whether the part's output carries a gradient) of a part under its ``trainable`` flag."""
    lora = trainable == "lora" and ops.lora > 0
    trains = trainable is True or lora
    fwd = ops.weight + ops.attn + ops.lora + ops.dead
    if not (trains or grad_in):
        return PartFlops(fwd, 0.0), False
    act = ops.weight - (0.0 if grad_in else ops.first)  # activation gradients of the weight products
    bwd = act + 2 * ops.attn
    if trainable is True:
        bwd += ops.weight  # weight gradients
    # adapters trained (``"lora"``, or ``True`` on a LoRA-wrapped part): weight and activation gradients;
    # frozen adapters behind a trained part: activation gradients only
    bwd += (2 if trains else 1) * ops.lora
    return PartFlops(fwd, bwd), True


def _linear(tokens: float, d_in: int, d_out: int) -> float:
    return 2.0 * tokens * d_in * d_out


def _attention(q_len: float, k_len: float, width: int) -> float:
    """Q K^T and P V over ``width`` = heads x head_dim."""
    return 2 * 2.0 * q_len * k_len * width


# ---------------------------------------------------------------------------------------------- towers
def _vit(cfg: Any, tokens: int, patches: int, head: bool) -> _Ops:
    """One image through a transformers ViT (SigLIP, CLIP, DINOv2): patch conv, blocks, SigLIP's head."""
    d, layers = int(cfg.hidden_size), int(cfg.num_hidden_layers)
    p = int(cfg.patch_size)
    patch = _linear(patches, 3 * p * p, d)
    ops = _Ops(weight=patch, first=patch)
    if getattr(cfg, "use_swiglu_ffn", False):  # transformers Dinov2SwiGLUFFN
        hidden = (int(int(d * cfg.mlp_ratio) * 2 / 3) + 7) // 8 * 8
        mlp = _linear(tokens, d, 2 * hidden) + _linear(tokens, hidden, d)
    else:
        inter = int(getattr(cfg, "intermediate_size", 0) or d * getattr(cfg, "mlp_ratio", 4))
        mlp = 2 * _linear(tokens, d, inter)
    ops += _Ops(
        weight=layers * (4 * _linear(tokens, d, d) + mlp), attn=layers * _attention(tokens, tokens, d)
    )
    if head:  # SigLIP's attention-pooling head runs in the forward (its output is unused)
        inter = int(cfg.intermediate_size)
        ops += _Ops(dead=2 * _linear(1, d, d) + 2 * _linear(tokens, d, d) + 2 * _linear(1, d, inter)
                    + _attention(1, tokens, d))  # fmt: skip
    return ops


def _vision_ops(enc: nn.Module) -> _Ops | None:
    """Forward FLOPs of one frame through a vision encoder (None = an encoder the model does not know)."""
    name = type(enc).__name__
    if hasattr(enc, "towers"):  # ConcatEncoder: every tower reads the frame
        total = _Ops()
        for tower in enc.towers:
            ops = _vision_ops(tower)
            if ops is None:
                return None
            total += ops
        return total
    if hasattr(enc, "tower") and hasattr(enc, "native_grid"):  # HFVisionEncoder
        cfg = enc.tower.config
        patches = enc.native_grid[0] * enc.native_grid[1]
        prefix = int(getattr(enc, "num_prefix", 0))
        return _vit(
            cfg, patches + prefix, patches, bool(getattr(cfg, "vision_use_head", False)) and "Siglip" in name
        )
    if name == "TimmEncoder":
        return _timm_vit(enc)
    if name == "FrameCNN":
        return _frame_cnn(enc)
    if name == "PixelPatchEncoder":
        return _Ops()
    return None


def _timm_vit(enc: nn.Module) -> _Ops:
    """A timm ViT (EVA02-CLIP): patch conv, then every linear of the blocks that run (up to ``select_layer``)
    and their self-attention; the blocks' linears are read from the modules (meta tensors suffice)."""
    patches = enc.native_grid[0] * enc.native_grid[1]
    tokens, conv = patches + enc.num_prefix, enc.model.patch_embed.proj
    first = _linear(patches, conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1], conv.out_channels)
    ops = _Ops(weight=first, first=first)
    blocks = enc.model.blocks[: None if enc.block_index is None else enc.block_index + 1]
    for block in blocks:  # only the patch conv reads the pixels: the blocks' products have no ``first``
        ops += _Ops(weight=_tokenwise(block, tokens).weight, attn=_attention(tokens, tokens, enc.out_dim))
    return ops


def _frame_cnn(enc: nn.Module) -> _Ops:
    side, ops, c_in = int(enc.image_size), _Ops(), 3
    for layer in enc.stages:
        if isinstance(layer, nn.Conv2d):
            side = (side + 2 * layer.padding[0] - layer.kernel_size[0]) // layer.stride[0] + 1
            flops = _linear(
                side * side, c_in * layer.kernel_size[0] * layer.kernel_size[1], layer.out_channels
            )
            ops += _Ops(weight=flops, first=flops if c_in == 3 else 0.0)
            c_in = layer.out_channels
    return ops + _Ops(weight=_linear(side * side, c_in, enc.proj.out_channels))


def _audio_ops(enc: nn.Module, seconds: float) -> _Ops | None:
    """Forward FLOPs of ``seconds`` of audio through an audio encoder."""
    name = type(enc).__name__
    if name == "WhisperAudioEncoder":
        cfg = enc.encoder.config
        d, n_mels, steps = int(cfg.d_model), int(cfg.num_mel_bins), int(cfg.max_source_positions)
        windows = max(1, math.ceil(seconds * enc.sample_rate / enc.window_samples))
        conv = _linear(2 * steps, 3 * n_mels, d)
        one = _Ops(
            weight=conv + _linear(steps, 3 * d, d), first=conv, dead=_mel_filterbank(n_mels, 2 * steps)
        )
        one += _Ops(weight=cfg.encoder_layers * (4 * _linear(steps, d, d) + 2 * _linear(steps, d, cfg.encoder_ffn_dim)),
                    attn=cfg.encoder_layers * _attention(steps, steps, d))  # fmt: skip
        return one.scaled(windows)
    if name == "MelCNN":
        frames = max(int(seconds * enc.sample_rate), 1) // 160  # 10-ms log-mel frames
        ops, c_in = _Ops(dead=_mel_filterbank(enc.n_mels, frames)), enc.n_mels
        for layer in enc.stages:
            if isinstance(layer, nn.Conv1d):
                frames = math.ceil(frames / 2)
                flops = _linear(frames, c_in * 3, layer.out_channels)
                ops += _Ops(weight=flops, first=flops if c_in == enc.n_mels else 0.0)
                c_in = layer.out_channels
        return ops + _Ops(weight=_linear(frames, c_in, enc.out_dim))
    return None


def _mel_filterbank(n_mels: int, frames: int) -> float:
    """The log-mel front end's one product: (n_mels, 201) filters x (201, frames) power spectrum (n_fft 400);
    forward only (a constant filterbank on the waveform)."""
    return _linear(frames, 201, n_mels)


# ---------------------------------------------------------------------------------------------- compressors
def _encoder_layer(tokens: float, d: int, ffn: int) -> _Ops:
    """A self-attention + FFN block over ``tokens`` tokens of width ``d``."""
    return _Ops(
        weight=4 * _linear(tokens, d, d) + 2 * _linear(tokens, d, ffn), attn=_attention(tokens, tokens, d)
    )


def _cross_block(queries: float, states: float, d: int, ffn: int, kv_width: int | None = None) -> _Ops:
    kv = kv_width or d
    return _Ops(weight=2 * _linear(queries, d, d) + 2 * _linear(states, kv, d) + 2 * _linear(queries, d, ffn),
                attn=_attention(queries, states, d))  # fmt: skip


def _qformer(qf: nn.Module, frames: float, queries: int, text: int, states: int) -> _Ops:
    """``frames`` Q-Former calls: ``queries`` query + ``text`` text tokens, cross-attention to ``states``."""
    cfg = qf.model.config
    hq, inter, enc = int(cfg.hidden_size), int(cfg.intermediate_size), int(cfg.encoder_hidden_size)
    ops = _Ops()
    for layer in range(int(cfg.num_hidden_layers)):
        seq = queries + text
        ops += _Ops(
            weight=4 * _linear(seq, hq, hq) + 2 * _linear(seq, hq, inter), attn=_attention(seq, seq, hq)
        )
        if layer % int(cfg.cross_attention_frequency) == 0:
            ops += _Ops(weight=2 * _linear(queries, hq, hq) + 2 * _linear(states, enc, hq),
                        attn=_attention(queries, states, hq))  # fmt: skip
    return ops.scaled(frames)


def _tdc_chunks(comp: nn.Module, frames: int) -> int:
    """Chunks of a ``frames``-frame video as ``TDCCompressor.num_tokens`` assumes them (exact without scene
    segmentation; the most chunks any cut placement gives otherwise)."""
    seg, size = comp.segmenter, comp.chunk_size
    cuts = frames - 1 if seg.max_segments is None else min(seg.max_segments, frames - 1)
    if cuts == 0:
        return math.ceil(frames / size)
    if seg.mode == "topk" and frames <= cuts + 1:
        return frames
    return min(frames, cuts + math.ceil((frames - cuts) / size))


def _tdc(comp: nn.Module, frames: int, grid: tuple[int, int], audio: bool, text: int) -> _Ops:
    h = int(comp.out_dim)
    hidden = comp.frame_proj[0].out_features
    patches = grid[0] * grid[1]
    first = _linear(frames * patches, comp.in_dim, hidden)
    ops = _Ops(weight=first + _linear(frames * patches, hidden, h), first=first)
    chunks = _tdc_chunks(comp, frames)
    compressed = frames - chunks if comp.add_static else frames
    k, hq = comp.num_queries, comp.qformer.hidden_size
    if comp.query_proj is not None:
        ops += _Ops(weight=_linear(chunks * k, h, hq))
    states = comp.frame_tokens(grid, audio)  # visual (+ newline, + audio) tokens of one frame
    if audio and comp.audio_proj is not None:
        ops += _Ops(weight=_linear(frames * comp.audio_tokens_per_frame, comp.audio_dim, h))
    text = (
        min(text, comp.max_text_len) if comp.tokenizer is not None or comp._tokenizer_spec is not None else 0
    )
    ops += _qformer(comp.qformer, compressed, k, text, states)
    ops += _Ops(weight=_linear(compressed * k, hq, h))
    return ops


def _pool(comp: nn.Module, frames: int, grid: tuple[int, int], audio: bool) -> _Ops:
    d, ops = comp.in_dim, _Ops()
    if audio and comp.audio_proj is not None:
        ops += _Ops(weight=_linear(frames, comp.audio_dim, d))
    if comp.temporal is not None:
        tokens = frames * math.ceil(grid[0] / comp.stride) * math.ceil(grid[1] / comp.stride)
        layer = comp.temporal.layers[0]
        ops += _encoder_layer(tokens, d, layer.linear1.out_features).scaled(len(comp.temporal.layers))
    return ops


def _fuseformer(comp: nn.Module, frames: int, audio_seconds: float | None) -> _Ops:
    w, local = comp.width, comp.local_grid[0] * comp.local_grid[1]
    first = _linear(frames * local, comp.in_dim, w)
    ops = _Ops(weight=first, first=first)
    if comp.global_residual:
        ops += _Ops(
            weight=_linear(frames, comp.in_dim, w) + _linear(frames, w, w),
            first=_linear(frames, comp.in_dim, w),
        )
    steps = math.ceil(frames / comp.temporal_stride)
    conv = comp.temporal_conv
    ops += _Ops(weight=_linear(steps * local, conv.in_channels // conv.groups * conv.kernel_size[0], w))
    streams = {"visual": steps * local}
    queries = {"visual": comp.visual_queries.shape[0]}
    if audio_seconds is not None and comp.audio_dim is not None:
        m, k = comp.audio_segments, comp.audio_local_tokens
        ops += _Ops(weight=_linear(m * k, comp.audio_dim, w))
        if comp.global_residual:
            ops += _Ops(weight=_linear(m, comp.audio_dim, w) + _linear(m, w, w))
        streams["audio"], queries["audio"] = m * k, comp.audio_queries.shape[0]
    layer = comp.layers[0]
    ffn = layer.fusion.ffn[0].out_features
    fused = comp.fusion_tokens.shape[0] + sum(queries.values())
    one = _encoder_layer(fused, w, ffn)
    for m, n in streams.items():
        one += _encoder_layer(n, w, ffn)
        one += _cross_block(queries[m], n, w, ffn)
    ops += one.scaled(len(comp.layers))
    ops += _qformer(comp.qformer, 1, comp.num_queries, 0, fused)
    if isinstance(comp.out_proj, nn.Linear):
        ops += _Ops(weight=_linear(comp.num_queries, comp.out_proj.in_features, comp.out_proj.out_features))
    return ops


def _compressor_ops(comp: nn.Module, frames: int, grid: tuple[int, int], audio_seconds: float | None,
                    text: int) -> _Ops | None:  # fmt: skip
    name, audio = type(comp).__name__, audio_seconds is not None
    if not frames:  # a text-only sample: the compressor does not run
        return _Ops()
    if grid == (0, 0):  # the encoder's grid is unknown
        return None
    if name == "TDCCompressor":
        return _tdc(comp, frames, grid, audio, text)
    if name == "SpatialPoolCompressor":
        return _pool(comp, frames, grid, audio)
    if name == "TFuseformerCompressor":
        return _fuseformer(comp, frames, audio_seconds)
    return None


def _tokenwise(module: nn.Module, tokens: int) -> _Ops:
    """A projector applied token by token: every ``nn.Linear`` in it, in order (the first reads the input)."""
    ops = _Ops()
    for i, lin in enumerate(m for m in module.modules() if isinstance(m, nn.Linear)):
        flops = _linear(tokens, lin.in_features, lin.out_features)
        ops += _Ops(weight=flops, first=flops if i == 0 else 0.0)
    return ops


# ---------------------------------------------------------------------------------------------- LLMs
@dataclass(frozen=True)
class _Sequence:
    """What the LLM runs for one sample: ``tokens`` through every linear layer, attention over the
    ``blocks`` of (queries, keys), and the LM head on ``head`` tokens."""

    tokens: int
    blocks: tuple[tuple[int, int], ...]
    head: int

    @classmethod
    def plain(cls, tokens: int) -> _Sequence:
        """One causal sequence (the full L x L square, as the kernels compute it); the head on every token."""
        return cls(tokens, ((tokens, tokens),), tokens)

    @classmethod
    def shared(cls, prefix: int, chosen: int, rejected: int) -> _Sequence:
        """A prefix-shared pair row: the prefix's causal square, both answers' queries over the whole row."""
        answers = chosen + rejected
        return cls(prefix + answers, ((prefix, prefix), (answers, prefix + answers)), answers)


def _decoder(cfg: Any, seq: _Sequence) -> _Ops:
    """A llama-style decoder (Qwen2, Llama, Mistral, Qwen2.5-VL's text model) running ``seq``; ``first`` is
    block 0's q/k/v (they read the embeddings)."""
    h, inter, layers = int(cfg.hidden_size), int(cfg.intermediate_size), int(cfg.num_hidden_layers)
    heads = int(cfg.num_attention_heads)
    kv = int(getattr(cfg, "num_key_value_heads", None) or heads)
    hd = int(getattr(cfg, "head_dim", None) or h // heads)
    tokens = seq.tokens
    qkv = _linear(tokens, h, (heads + 2 * kv) * hd)
    block = qkv + _linear(tokens, heads * hd, h) + 3 * _linear(tokens, h, inter)
    attn = sum(_attention(q, k, heads * hd) for q, k in seq.blocks)
    ops = _Ops(weight=layers * block, attn=layers * attn, first=qkv)
    return ops + _Ops(weight=_linear(seq.head, h, int(cfg.vocab_size)))


def _lora(module: nn.Module, tokens_of: Any) -> float:
    """Forward FLOPs of the LoRA adapters inside ``module``; ``tokens_of(name)`` = tokens the layer sees."""
    total = 0.0
    for name, layer in module.named_modules():
        ranks = getattr(layer, "r", None)
        if not isinstance(ranks, dict) or not hasattr(layer, "lora_A"):
            continue
        for adapter in layer.lora_A:
            r = int(ranks[adapter])
            total += _linear(tokens_of(name), int(layer.in_features), r) + _linear(
                tokens_of(name), r, int(layer.out_features)
            )
    return total


# ---------------------------------------------------------------------------------------------- models
def model_flops(
    model: nn.Module,
    frames: int,
    text_tokens: int,
    frame_size: int | Sequence[int] | None = None,
    audio_seconds: float | None = None,
    query_tokens: int = QFORMER_TEXT_TOKENS,
    cached_features: bool = False,
) -> FlopReport:
    """Forward and training FLOPs per sample of ``model`` (a ``VideoLLM`` or ``Qwen25VLVideoModel``) under its
    ``trainable`` plan.

    Args:
        frames: valid frames of the sample's video (0 = text only).
        text_tokens: text tokens of the sample (prompt + answer, without the video placeholder).
        frame_size: frame side or (height, width) in pixels; only the native Qwen2.5-VL depends on it
            (default: the model's ``frame_size``); ``VideoLLM`` encoders resize to their own size.
        audio_seconds: seconds of audio the audio encoder reads (None = no audio).
        query_tokens: instruction tokens a text-reading Q-Former (TDC) sees, capped at its ``max_text_len``.
        cached_features: the batch carries cached encoder features (``vidtempo cache``): no vision encoder.

    Example:
        >>> from vidtempo.models.native.qwen2_5_vl import Qwen25VLVideoModel, tiny_qwen2_5_vl
        >>> native = Qwen25VLVideoModel(llm=tiny_qwen2_5_vl(), trainable={"llm": "lora"})
        >>> r = model_flops(native, frames=4, text_tokens=10, frame_size=56)
        >>> r.video_tokens, r.llm_tokens, sorted(r.parts)
        (8, 20, ['llm', 'projector', 'vision_encoder'])
    """
    if type(model).__name__ == "Qwen25VLVideoModel":
        return _native_qwen(model, frames, text_tokens, frame_size)
    return _video_llm(model, frames, text_tokens, audio_seconds, query_tokens, cached_features)


def pair_flops(
    model: nn.Module,
    frames: int,
    prompt_tokens: int,
    chosen_tokens: int,
    rejected_tokens: int,
    frame_size: int | Sequence[int] | None = None,
    audio_seconds: float | None = None,
    query_tokens: int = QFORMER_TEXT_TOKENS,
    cached_features: bool = False,
) -> FlopReport:
    """Forward and training FLOPs of one prefix-shared preference pair (one row ``[prefix | chosen |
    rejected]``, ``vidtempo.models.prefix_share``) under the policy's ``trainable`` plan: the video path and
    the prefix once, each answer attending to the prefix and itself (module docstring). The reference pass
    is not included. Arguments as :func:`model_flops`, with the text split into the shared ``prompt_tokens``
    (without the video placeholder) and each side's answer tokens.

    Example:
        >>> from vidtempo.models.build import build_video_llm
        >>> model = build_video_llm({"_target_": "vidtempo.models.VideoLLM", "vision_encoder": {"_target_": "tiny"},
        ...                          "compressor": {"_target_": "pool", "in_dim": 32}, "llm": {"_target_": "tiny"}})
        >>> pair = pair_flops(model, frames=4, prompt_tokens=12, chosen_tokens=4, rejected_tokens=6)
        >>> pair.llm_tokens, pair.video_tokens  # 16 video + 12 prompt + 4 + 6
        (38, 16)
        >>> two = [model_flops(model, frames=4, text_tokens=12 + n) for n in (4, 6)]
        >>> pair.train < sum(r.train for r in two)
        True
    """
    answers = (chosen_tokens, rejected_tokens)
    if type(model).__name__ == "Qwen25VLVideoModel":
        return _native_qwen(model, frames, prompt_tokens, frame_size, answers)
    return _video_llm(model, frames, prompt_tokens, audio_seconds, query_tokens, cached_features, answers)


def _llm_sequence(prefix: int, answers: tuple[int, int] | None) -> _Sequence:
    """One sample of ``prefix`` tokens (plain), or a shared pair row with that prefix and these answers."""
    return _Sequence.plain(prefix) if answers is None else _Sequence.shared(prefix, *answers)


def _video_llm(model: Any, frames: int, text_tokens: int, audio_seconds: float | None, query_tokens: int,
               cached: bool, answers: tuple[int, int] | None = None) -> FlopReport:  # fmt: skip
    plan, unmodelled = model.trainable, []
    audio = audio_seconds if model.audio_encoder is not None else None
    video, grid = _video_tokens(model, frames, audio is not None)  # grid (0, 0): unknown
    seq = _llm_sequence(text_tokens + video, answers)
    tokens = seq.tokens
    ops: dict[str, _Ops | None] = {
        "vision_encoder": _vision_ops(model.vision_encoder),
        "audio_encoder": _audio_ops(model.audio_encoder, audio) if audio is not None else _Ops(),
        "compressor": _compressor_ops(model.compressor, frames, grid, audio, query_tokens),
        "projector": _tokenwise(model.projector, video),
        "llm": _decoder(model.llm.config, seq),
    }
    if ops["vision_encoder"] is not None:
        ops["vision_encoder"] = ops["vision_encoder"].scaled(0 if cached else frames)
    llm_ops = ops["llm"]
    assert llm_ops is not None
    llm_ops.lora = _lora(model.llm, lambda name: tokens)
    parts, grad = {}, False
    for part in ("vision_encoder", "audio_encoder", "compressor", "projector", "llm"):
        if part == "audio_encoder" and model.audio_encoder is None:
            continue
        part_ops = ops[part]
        if part_ops is None:
            unmodelled.append(part)
            part_ops = _Ops()
        grad_in = grad if part not in ("vision_encoder", "audio_encoder") else False
        parts[part], out_grad = _part(part_ops, getattr(plan, part), grad_in)
        grad = grad or out_grad
    return FlopReport(parts, tokens, video, unmodelled)


def _grid(enc: nn.Module) -> tuple[int, int] | None:
    """The (h, w) patch grid a vision encoder emits, from its attributes (None = not known without running it)."""
    grid = getattr(enc, "grid", None)
    if grid is not None:
        return (int(grid[0]), int(grid[1]))
    if hasattr(enc, "towers"):  # ConcatEncoder without a grid: the first tower's
        return _grid(enc.towers[0])
    if hasattr(enc, "patch"):  # PixelPatchEncoder
        g = enc.image_size // enc.patch
        return (g, g)
    return None


def _video_tokens(model: Any, frames: int, audio: bool) -> tuple[int, tuple[int, int]]:
    """(video tokens, patch grid) by arithmetic: no encoder runs (under FSDP a forward would be a collective)."""
    grid = _grid(model.vision_encoder)
    if grid is None:  # an unknown encoder: ask the model, which encodes one blank frame
        return (model.video_tokens(frames, audio) if frames else 0), (0, 0)
    return int(model.compressor.num_tokens(frames, grid, audio)), grid


def _native_qwen(
    model: Any, frames: int, text_tokens: int, frame_size: int | Sequence[int] | None,
    answers: tuple[int, int] | None = None,
) -> FlopReport:
    from vidtempo.models.native.qwen2_5_vl import frame_pixel_budget, smart_resize

    vc, tc = model.hf.config.vision_config, model.hf.config.text_config
    side = frame_size if frame_size is not None else model.frame_size
    height, width = (side, side) if isinstance(side, int) else (int(side[0]), int(side[1]))
    tp, patch, merge = int(vc.temporal_patch_size), int(vc.patch_size), int(vc.spatial_merge_size)
    cap = frame_pixel_budget(frames, model.min_pixels, model.max_pixels, model.total_pixels)
    h_px, w_px = smart_resize(height, width, patch * merge, model.min_pixels, cap)
    t, h, w = math.ceil(frames / tp), h_px // patch, w_px // patch
    patches, merged = t * h * w, t * h * w // merge**2
    vit = _qwen_vit(vc, t, h, w) if frames else _Ops()
    wide = int(vc.hidden_size) * merge**2
    # the merger's first linear reads its own (trained) LayerNorm: no ``first``
    proj = _Ops(weight=_linear(merged, wide, wide) + _linear(merged, wide, int(vc.out_hidden_size)))
    video = merged if frames else 0
    seq = _llm_sequence(text_tokens + video + (2 if frames else 0), answers)  # + vision start / end tokens
    tokens = seq.tokens
    llm = _decoder(tc, seq)
    vit.lora = _lora(model.llm, lambda name: patches if ".visual." in f".{name}" else 0)
    llm.lora = _lora(model.llm, lambda name: 0 if ".visual." in f".{name}" else tokens)
    plan = model.trainable
    parts: dict[str, PartFlops] = {}
    parts["vision_encoder"], grad = _part(vit, plan.vision_encoder, False)
    parts["projector"], out = _part(proj, plan.projector, grad)
    parts["llm"], _ = _part(llm, plan.llm, grad or out)
    return FlopReport(parts, tokens, video)


def _qwen_vit(vc: Any, t: int, h: int, w: int) -> _Ops:
    """Qwen2.5-VL's ViT over a (t, h, w) patch grid: window attention within each temporal slice, full
    attention (per slice) in ``fullatt_block_indexes``; gated MLP."""
    d, inter, depth = int(vc.hidden_size), int(vc.intermediate_size), int(vc.depth)
    merge, patches = int(vc.spatial_merge_size), t * h * w
    conv = _linear(patches, 3 * int(vc.temporal_patch_size) * int(vc.patch_size) ** 2, d)
    block = _linear(patches, d, 3 * d) + _linear(patches, d, d) + 3 * _linear(patches, d, inter)
    full = t * _attention(h * w, h * w, d)
    side = int(vc.window_size) // merge // int(vc.patch_size)  # merged units per window side
    rows, cols = _segments(h // merge, side), _segments(w // merge, side)
    window = t * sum(_attention(merge**2 * r * c, merge**2 * r * c, d) for r in rows for c in cols)
    n_full = len([i for i in vc.fullatt_block_indexes if i < depth])
    return _Ops(weight=conv + depth * block, attn=n_full * full + (depth - n_full) * window, first=conv)


def _segments(n: int, size: int) -> list[int]:
    """Lengths of consecutive windows of ``size`` covering ``n`` (the last one shorter)."""
    return [min(size, n - s) for s in range(0, n, size)]

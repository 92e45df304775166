"""DaMO's T-Fuseformer compressor (Chiu et al., arXiv 2506.11558; ``docs/methods/damo.md``): a dual-stream
(visual + audio) temporal fuser, then a BLIP-2-style Q-Former.

The official code is not available; the structure follows the paper's abstract and a secondary digest
(``docs/methods/damo.md`` lists what is documented and what is our choice). Per video:

1. **Global residual.** Each frame's local patch tokens are adaptive-average-pooled to L' tokens (a
   ``local_grid`` h' x w' over the patch grid) and projected to ``width``; an FFN of the frame's global feature
   is added to every one of them. The global feature is the CLS token when the encoder gives one (features
   with ``P = h * w + 1``: token 0), else the mean of the patches (every built-in encoder drops the CLS, so the
   patch mean is what they get). Audio is cut into ``audio_segments`` windows of ``segment_seconds`` (None =
   the clip's audio span split evenly); each window's steps are pooled to ``audio_local_tokens`` tokens plus an
   FFN of the window's mean.
2. **Temporal compression.** A grouped 1-D convolution over time (kernel = stride = ``temporal_stride``, per
   visual token slot); a window's time is the mean of its real frames' times.
3. **Temporal and modality embeddings.** A learnable table over 1-s buckets of absolute time plus a sinusoidal
   embedding of the time in seconds, one module shared by both streams (a frame and a sound at the same
   moment get the same embedding), then a learnable embedding per modality.
4. **T-Fuseformer** (``depth`` layers): per modality self-attention + FFN over its tokens, then cross-attention
   + FFN from its learnable queries (``visual_queries`` 192, ``audio_queries`` 64); then ``fusion_tokens`` (128)
   learnable tokens concatenated with both modalities' queries through self-attention + FFN
   (``qformer_reads_streams``: the Q-Former also reads the stream tokens themselves).
5. **Q-Former** (:class:`~vidtempo.models.compressors.qformer.QFormer`, transformers' InstructBLIP Q-Former):
   ``num_queries`` (32) learnable queries cross-attend to the fused tokens; their outputs are the video tokens
   (``num_tokens`` = ``num_queries`` exactly), through ``out_proj`` when ``out_dim`` is set.

A video without audio (no audio features, or none valid) takes the visual path alone: its audio queries are
masked out of the fusion self-attention and of the Q-Former's cross-attention, so its tokens equal those of
the same video in a batch without audio. ``VideoTokens.info["videos_without_audio"]`` counts them.

With ``alignment`` (default) the compressor also owns BLIP-2's stage-1 heads (``Blip2ForImageTextRetrieval``'s
``vision_projection``, ``text_projection``, ``itm_head``, plus a learnable temperature and a BERT-style
language-model head for caption generation) and the text paths the ``align`` objective and retrieval use:
:meth:`embed_video`, :meth:`embed_text`, :meth:`match_logits`, :meth:`caption_logits`.

Example:
    >>> import torch
    >>> from vidtempo.models.interfaces import CompressorInput
    >>> comp = TFuseformerCompressor(in_dim=8, width=16, num_heads=2, depth=1, visual_queries=6,
    ...                              audio_queries=2, fusion_tokens=4, num_queries=4, local_grid=(2, 2),
    ...                              qformer="tiny").eval()
    >>> out = comp(CompressorInput(feats=torch.randn(2, 4, 16, 8), frame_mask=torch.ones(2, 4, dtype=torch.bool),
    ...                            timestamps=torch.arange(4.0).expand(2, 4), grid=(4, 4)))
    >>> tuple(out.tokens.shape), comp.num_tokens(4, (4, 4)), out.info["videos_without_audio"]
    ((2, 4, 32), 4, 2)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vidtempo.models.compressors.audio_windows import pool_audio_per_frame
from vidtempo.models.compressors.qformer import QFormer, build_qformer_tokenizer
from vidtempo.models.interfaces import AudioFeatures, CompressorInput, TokenCompressor, VideoTokens
from vidtempo.models.time_embedding import sinusoidal_time_embedding

DECODER_BOS = "[DEC]"  # BLIP-2's decoder start token (LAVIS adds it to the BERT tokenizer)


@dataclass
class FusedVideo:
    """What the T-Fuseformer hands the Q-Former.

    Attributes:
        states: (B, E, width) fusion tokens, then visual queries, then audio queries (when any video has audio),
            then (``qformer_reads_streams``) the visual and audio stream tokens.
        mask: (B, E) bool, False = an audio query or token of a video without audio, or a padded window.
        without_audio: videos of the batch that took the visual path alone.
        positions: (B, E) each state's place in its clip, 0 = first real frame, 1 = last; NaN for a state with
            no time (the fusion tokens). Set only with ``time_window`` (the Q-Former's time-local bias).
    """

    states: torch.Tensor
    mask: torch.Tensor
    without_audio: int
    positions: torch.Tensor | None = None


class _SelfBlock(nn.Module):
    """Pre-LN self-attention + FFN over (B, N, W) tokens with a (B, N) padding mask (True = real) and an optional
    (B, N, N) additive attention bias."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.ffn = _ffn(width, int(width * mlp_ratio), width, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm1(x)
        x = x + _attend(self.attn, h, h, mask, bias)
        return x + self.ffn(self.norm2(x))


class _CrossBlock(nn.Module):
    """Pre-LN cross-attention from (B, K, W) queries to (B, N, W) tokens (mask (B, N), True = real; optional
    (B, K, N) additive bias) + FFN."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm_q, self.norm_kv, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.ffn = _ffn(width, int(width * mlp_ratio), width, dropout)

    def forward(
        self, q: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        q = q + _attend(self.attn, self.norm_q(q), self.norm_kv(x), mask, bias)
        return q + self.ffn(self.norm2(q))


def _attend(
    attn: nn.MultiheadAttention, q: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """(B, Q, W) attention output over (B, K, W) keys/values: padding (B, K) masked out, plus the (B, Q, K)
    additive ``bias`` when given (folded with the padding into one float mask per head)."""
    if bias is None:
        return attn(q, kv, kv, key_padding_mask=~mask, need_weights=False)[0]
    full = bias.to(q.dtype).masked_fill(~mask[:, None, :], float("-inf"))  # (B, Q, K)
    full = full.repeat_interleave(attn.num_heads, dim=0)  # (B * heads, Q, K), batch-major
    return attn(q, kv, kv, attn_mask=full, need_weights=False)[0]


class TFuseformerLayer(nn.Module):
    """One T-Fuseformer layer: per-modality self-attention + FFN, modality-query cross-attention, then fusion.

    Example:
        >>> layer = TFuseformerLayer(width=8, heads=2)
        >>> x, q, f = torch.randn(2, 5, 8), torch.randn(2, 3, 8), torch.randn(2, 2, 8)
        >>> out = layer({"visual": x}, {"visual": torch.ones(2, 5, dtype=torch.bool)}, {"visual": q}, f, {})
        >>> [tuple(t.shape) for t in (out[0]["visual"], out[1]["visual"], out[2])]
        [(2, 5, 8), (2, 3, 8), (2, 2, 8)]
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.stream = nn.ModuleDict(
            {m: _SelfBlock(width, heads, mlp_ratio, dropout) for m in ("visual", "audio")}
        )
        self.cross = nn.ModuleDict(
            {m: _CrossBlock(width, heads, mlp_ratio, dropout) for m in ("visual", "audio")}
        )
        self.fusion = _SelfBlock(width, heads, mlp_ratio, dropout)

    def forward(
        self,
        tokens: dict[str, torch.Tensor],
        masks: dict[str, torch.Tensor],
        queries: dict[str, torch.Tensor],
        fusion: torch.Tensor,
        rows: dict[str, torch.Tensor],
        bias: dict[str, torch.Tensor] | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
        """``tokens[m]`` (B_m, N_m, W) / ``masks[m]`` (B_m, N_m) of the videos that have modality m,
        ``queries[m]`` (B, K_m, W) of every video, ``fusion`` (B, F, W); ``rows[m]`` (B_m,) the batch rows of
        ``tokens[m]`` (absent = every row). ``bias`` (optional): additive attention biases, ``bias[m]``
        (B_m, K_m, N_m) for modality m's query cross-attention and ``bias["fusion"]`` (B, E, E) for the fusion
        self-attention over [fusion tokens, queries of each modality in ``tokens``' order]. Returns updated
        tokens, queries and fusion tokens."""
        bias = bias or {}
        new_tokens, new_queries = {}, {}
        for m, x in tokens.items():
            x = self.stream[m](x, masks[m])  # (B_m, N_m, W)
            new_tokens[m] = x
            q = queries[m]
            if m in rows:  # only the rows that have this modality read it; the others keep their queries
                q = q.index_copy(0, rows[m], self.cross[m](q[rows[m]], x, masks[m], bias.get(m)))
            else:
                q = self.cross[m](q, x, masks[m], bias.get(m))  # (B, K_m, W)
            new_queries[m] = q
        parts = [fusion, *(new_queries[m] for m in tokens)]
        sizes = [p.shape[1] for p in parts]
        keep = torch.cat([_query_mask(fusion.shape[0], p.shape[1], rows.get(m), p.device)
                          for m, p in zip(("fusion", *tokens), parts)], dim=1)  # fmt: skip
        fused = self.fusion(torch.cat(parts, dim=1), keep, bias.get("fusion")).split(sizes, dim=1)
        return new_tokens, dict(zip(tokens, fused[1:])), fused[0]


class TFuseformerCompressor(TokenCompressor):
    """DaMO's dual-stream T-Fuseformer + Q-Former (see the module docstring). Defaults follow the paper where
    it gives a number (192 / 64 / 128 queries, 4 layers, width 768, 8 audio windows of 30 s); the rest is ours.

    Args:
        in_dim: vision feature width D_v.
        audio_dim: audio feature width D_a (Whisper-small: 768); None = visual only.
        width: T-Fuseformer width (768).
        depth: T-Fuseformer layers (4). num_heads: attention heads (12). mlp_ratio: FFN width / width (4).
        dropout: attention and FFN dropout (0.1).
        visual_queries, audio_queries, fusion_tokens: learnable query counts (192, 64, 128); alpha = 192 / 64.
        local_grid: (h', w') adaptive-average-pool grid of each frame's patches (L' = h' * w'; 4 x 4).
        global_residual: add the FFN of the global feature to the pooled tokens (ablation switch).
        temporal_stride: frames per window of the grouped temporal convolution (2; 1 = none).
        temporal_groups: groups of that convolution (None = ``num_heads``, 12; must divide ``width``).
        time_embedding: add the learnable + sinusoidal time embeddings (ablation switch).
        time_buckets: 1-s buckets of the learnable time table (later times share the last bucket).
        qformer_reads_streams: the Q-Former's cross-attention also reads each modality's stream tokens (one per
            time window and local slot, with their time embeddings) after the last T-Fuseformer layer, not
            only the fusion tokens and modality queries (ours; the paper's text does not say). False = the
            queries alone, as before.
        anchored_queries: each modality query k starts from the time code (the shared temporal embedding) of an
            instant k / (K - 1) of the way through the clip's real frames, so its attention is drawn, at first,
            to the tokens of that moment (ours; needs ``time_embedding``). False = the queries know no time.
        time_window: time-local attention (ours; None = off, every query reads the whole clip). Each modality
            query k and each Q-Former query j gets a place in the clip, k / (K - 1) of the way from its first to
            its last real frame, and every attention of a query to a state with a time (stream tokens, other
            modalities' queries) adds ``-d**2 / 2`` to its logit, d = (place difference) / ``time_window``
            (clip fractions; capped at 10). The fusion tokens have no time and read, and are read by, everything.
            So query k pools mostly the k-th part of the clip and the video tokens keep when things happen.
        audio_segments: M audio windows (8). segment_seconds: their length (30 s, Whisper's window);
            None = the clip's audio span split into M equal windows.
        audio_local_tokens: tokens per audio window (16).
        num_queries: Q-Former queries = video tokens per clip (32).
        qformer: a :class:`QFormer`, a preset name (``"bert_base"``, ``"tiny"``) or a config dict with an optional
            ``preset`` key; it reads ``width``-wide states.
        out_dim: width of the emitted tokens through a linear ``out_proj``; None = the Q-Former width (pair with
            projector ``linear``, DaMO's projection into the LLM).
        alignment: build the stage-1 heads and text paths (``embed_video`` / ``embed_text`` / matching /
            caption generation).
        embed_dim: width of the contrastive embeddings (BLIP-2: 256).
        tokenizer: the Q-Former's BERT-style tokenizer: ``"tiny"``, a local directory, or an object; ``[DEC]``
            is added to it (BLIP-2's decoder start token).
        text_vocab_size: with a tokenizer directory, its vocabulary size before ``[DEC]`` (bert-base-uncased:
            30522): the tokenizer then loads on first use, so the model builds offline.
        max_text_len: caption tokens kept (32, BLIP-2's stage-1 captions).

    Example:
        >>> comp = TFuseformerCompressor(in_dim=8, audio_dim=4, width=16, num_heads=2, depth=1, qformer="tiny",
        ...                              num_queries=5, out_dim=12)
        >>> comp.num_tokens(24, (4, 4), audio=True), comp.out_dim, comp.alpha
        (5, 12, 3.0)
    """

    # every output token is a Q-Former query that reads the whole clip: no token belongs to one frame, so the
    # per-frame losses on the LLM's video positions (saliency, frame_tags) do not apply (VideoLLM then does not
    # declare the ``token_frames`` capability, and those losses refuse the model by name)
    tokens_map_to_frames = False

    def __init__(
        self,
        in_dim: int,
        *,
        audio_dim: int | None = None,
        width: int = 768,
        depth: int = 4,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        dropout: float = 0.1,
        visual_queries: int = 192,
        audio_queries: int = 64,
        fusion_tokens: int = 128,
        local_grid: tuple[int, int] | list[int] = (4, 4),
        global_residual: bool = True,
        temporal_stride: int = 2,
        temporal_groups: int | None = None,
        time_embedding: bool = True,
        time_buckets: int = 512,
        qformer_reads_streams: bool = False,
        anchored_queries: bool = False,
        time_window: float | None = None,
        audio_segments: int = 8,
        segment_seconds: float | None = 30.0,
        audio_local_tokens: int = 16,
        num_queries: int = 32,
        qformer: QFormer | Mapping[str, Any] | str = "bert_base",
        out_dim: int | None = None,
        alignment: bool = True,
        embed_dim: int = 256,
        tokenizer: Any = "tiny",
        text_vocab_size: int | None = None,
        max_text_len: int = 32,
    ) -> None:
        super().__init__()
        temporal_groups = temporal_groups or num_heads
        _check_counts(in_dim=in_dim, width=width, depth=depth, num_heads=num_heads, visual_queries=visual_queries,
                      fusion_tokens=fusion_tokens, temporal_stride=temporal_stride, temporal_groups=temporal_groups,
                      time_buckets=time_buckets, audio_segments=audio_segments, num_queries=num_queries,
                      audio_local_tokens=audio_local_tokens, embed_dim=embed_dim, max_text_len=max_text_len)  # fmt: skip
        if audio_dim is not None and audio_queries < 1:
            raise ValueError(
                f"TFuseformerCompressor: audio_queries must be >= 1 with audio_dim set, got {audio_queries}"
            )
        if width % temporal_groups or width % num_heads:
            raise ValueError(f"TFuseformerCompressor: width={width} must be divisible by temporal_groups="
                             f"{temporal_groups} and num_heads={num_heads}")  # fmt: skip
        if segment_seconds is not None and segment_seconds <= 0:
            raise ValueError(
                f"TFuseformerCompressor: segment_seconds must be > 0 or None, got {segment_seconds}"
            )
        if len(local_grid) != 2 or min(local_grid) < 1:
            raise ValueError(f"TFuseformerCompressor: local_grid must be two sizes >= 1, got {local_grid}")
        self.in_dim, self.audio_dim, self.width = int(in_dim), audio_dim, int(width)
        self.local_grid = (int(local_grid[0]), int(local_grid[1]))
        self.global_residual, self.use_time = global_residual, time_embedding
        self.qformer_reads_streams = bool(qformer_reads_streams)
        if anchored_queries and not time_embedding:
            raise ValueError("TFuseformerCompressor: anchored_queries needs time_embedding (the anchors are time codes)")
        self.anchored_queries = bool(anchored_queries)
        if time_window is not None and not float(time_window) > 0:
            raise ValueError(f"TFuseformerCompressor: time_window must be > 0 or None, got {time_window}")
        self.time_window = None if time_window is None else float(time_window)
        self.temporal_stride, self.time_buckets = int(temporal_stride), int(time_buckets)
        self.audio_segments, self.segment_seconds = int(audio_segments), segment_seconds
        self.audio_local_tokens, self.num_queries = int(audio_local_tokens), int(num_queries)
        self.max_text_len = int(max_text_len)

        self.visual_local = nn.Linear(in_dim, width)
        self.visual_global = _ffn(in_dim, width, width, 0.0)
        self.temporal_conv = nn.Conv1d(
            width, width, temporal_stride, stride=temporal_stride, groups=temporal_groups
        )
        self.time_table = nn.Embedding(time_buckets, width)
        nn.init.normal_(self.time_table.weight, std=0.02)
        self.modality = nn.Parameter(torch.randn(2, width) * 0.02)  # 0 visual, 1 audio
        self.visual_queries = nn.Parameter(torch.randn(visual_queries, width) * 0.02)
        self.fusion_tokens = nn.Parameter(torch.randn(fusion_tokens, width) * 0.02)
        if audio_dim is not None:
            self.audio_local = nn.Linear(audio_dim, width)
            self.audio_global = _ffn(audio_dim, width, width, 0.0)
            self.audio_queries = nn.Parameter(torch.randn(audio_queries, width) * 0.02)
        self.layers = nn.ModuleList(
            TFuseformerLayer(width, num_heads, mlp_ratio, dropout) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width)

        lazy = (
            alignment
            and text_vocab_size is not None
            and isinstance(tokenizer, (str, Path))
            and tokenizer != "tiny"
        )
        self._tokenizer_spec, self.text_vocab_size = (tokenizer if lazy else None), text_vocab_size
        self.tokenizer = (
            _with_decoder_bos(build_qformer_tokenizer(tokenizer)) if alignment and not lazy else None
        )
        self.qformer = _build_qformer(qformer, width)
        if self.tokenizer is not None:
            self.qformer.resize_vocab(len(self.tokenizer))
        elif lazy:
            self.qformer.resize_vocab(int(text_vocab_size) + 1)  # + [DEC]
        hq = self.qformer.hidden_size
        self.query_tokens = nn.Parameter(torch.randn(1, num_queries, hq) * 0.02)  # BLIP-2's init std
        self.out_dim = int(out_dim) if out_dim is not None else hq
        self.out_proj = nn.Linear(hq, out_dim) if out_dim is not None else nn.Identity()
        self.alignment = alignment
        # The text paths (heads, Q-Former word / position embeddings and text feed-forward) are trained only
        # by the align objective, which switches this on while it runs; otherwise they are frozen
        # (``unused_parameter_names``), as no token path reads them.
        self.text_paths_active = False
        if alignment:  # Blip2ForImageTextRetrieval's heads, plus what it lacks: temperature and the LM head
            self.vision_projection, self.text_projection = nn.Linear(hq, embed_dim), nn.Linear(hq, embed_dim)
            self.itm_head = nn.Linear(hq, 2)
            # BLIP-2's initial temperature; shape (1,), not (): FSDP2's fully_shard refuses 0-d parameters
            self.temp = nn.Parameter(torch.tensor([0.07]))
            self.lm_transform = _lm_transform(self.qformer)
            self.lm_bias = nn.Parameter(torch.zeros(self.qformer.vocab_size))

    # ------------------------------------------------------------------------------------------ counts
    @property
    def alpha(self) -> float:
        """Visual : audio query ratio (DaMO: 3); 0 without audio."""
        return (
            self.visual_queries.shape[0] / self.audio_queries.shape[0] if self.audio_dim is not None else 0.0
        )

    def num_tokens(self, num_frames: int, grid: tuple[int, int], audio: bool = False) -> int:
        """Exactly ``num_queries`` tokens per video, whatever its length or audio."""
        return self.num_queries

    # ------------------------------------------------------------------------------------------ forward
    def forward(self, inputs: CompressorInput) -> VideoTokens:
        """(B, T, P, D) features (+ audio) -> (B, num_queries, out_dim) tokens; every token is valid."""
        fused = self.fuse(inputs)
        tokens = self.out_proj(self.query_states(fused))  # (B, K, out_dim)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return VideoTokens(tokens=tokens, mask=mask, info={"videos_without_audio": fused.without_audio})

    def fuse(self, inputs: CompressorInput) -> FusedVideo:
        """Global residual, temporal pathway and T-Fuseformer: the states the Q-Former reads."""
        self._check_inputs(inputs)
        b = inputs.feats.shape[0]
        vis, vis_mask, vis_times = self._visual_stream(inputs)  # (B, N_v, W), (B, N_v), (B, N_v)
        tokens = {"visual": self._embed(vis, vis_times, 0)}
        masks, rows, times = {"visual": vis_mask}, {}, {"visual": vis_times}
        queries = {"visual": self.visual_queries.expand(b, -1, -1)}
        if self.anchored_queries:
            queries["visual"] = self._anchored(queries["visual"], inputs.frame_mask, inputs.timestamps)
        has_audio = self._has_audio(inputs.audio, b)  # (B,) bool
        if bool(has_audio.any()):
            assert inputs.audio is not None
            aud, aud_mask, aud_times = self._audio_stream(inputs.audio, has_audio)  # (B_a, N_a, W) ...
            tokens["audio"], masks["audio"], times["audio"] = self._embed(aud, aud_times, 1), aud_mask, aud_times
            rows["audio"] = has_audio.nonzero().flatten()
            queries["audio"] = self.audio_queries.expand(b, -1, -1)
            if self.anchored_queries:
                queries["audio"] = self._anchored(queries["audio"], inputs.frame_mask, inputs.timestamps)
        fusion = self.fusion_tokens.expand(b, -1, -1)
        places = self._places(inputs, times, rows)  # None without time_window
        bias, at = None, []  # with time_window: the layers' biases and the fused states' places
        if places is not None:
            query_places = torch.cat([_no_place(b, fusion.shape[1], fusion.device),
                                      *(_spread(b, q.shape[1], q.device) for q in queries.values())], dim=1)
            bias, at = self._layer_bias(places, queries, query_places), [query_places]  # (B, F + K_v [+ K_a])
        for layer in self.layers:
            tokens, queries, fusion = layer(tokens, masks, queries, fusion, rows, bias)
        parts = [fusion, *queries.values()]
        keep = [_query_mask(b, p.shape[1], rows.get(m), p.device) for m, p in zip(("fusion", *queries), parts)]
        if self.qformer_reads_streams:  # + each modality's time-stamped stream tokens (B, N_m, W)
            for m, x in tokens.items():
                part, mask = _full_batch(x, masks[m], rows.get(m), b)
                parts.append(part)
                keep.append(mask)
                if places is not None:
                    at.append(_full_batch(places[m], masks[m], rows.get(m), b)[0])  # (B, N_m)
        states = self.norm(torch.cat(parts, dim=1))  # (B, F + K_v [+ K_a] [+ N_v [+ N_a]], W)
        return FusedVideo(states=states, mask=torch.cat(keep, dim=1), without_audio=int(b - has_audio.sum()),
                          positions=torch.cat(at, dim=1) if places is not None else None)  # fmt: skip

    def query_states(self, fused: FusedVideo) -> torch.Tensor:
        """(B, K, Hq): the Q-Former's query outputs over the fused states (no text)."""
        b = fused.states.shape[0]
        out = self._qformer(None, None, self.query_tokens.expand(b, -1, -1), fused)
        return out[:, : self.num_queries]

    # ------------------------------------------------------------------------------------------ streams
    def _visual_stream(self, inputs: CompressorInput) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Global residual per frame, then the grouped temporal convolution.

        Returns (B, T' * L', W) tokens, (B, T' * L') mask and (B, T' * L') times in seconds.
        """
        feats, frame_mask = inputs.feats, inputs.frame_mask.bool()  # (B, T, P, D), (B, T)
        h, w = inputs.grid
        b, t, p, d = feats.shape
        cls = feats[:, :, 0] if p == h * w + 1 else None  # the encoder kept its CLS token first
        patches = feats[:, :, p - h * w :]  # (B, T, h*w, D)
        grid = patches.reshape(b * t, h, w, d).permute(0, 3, 1, 2)  # (B*T, D, h, w)
        local = F.adaptive_avg_pool2d(grid.float(), self.local_grid).to(feats.dtype)  # (B*T, D, h', w')
        local = local.flatten(2).transpose(1, 2).reshape(b, t, -1, d)  # (B, T, L', D)
        x = self.visual_local(local)  # (B, T, L', W)
        if self.global_residual:
            glob = cls if cls is not None else patches.mean(dim=2)  # (B, T, D)
            x = x + self.visual_global(glob).unsqueeze(2)
        x = x * frame_mask[..., None, None].to(x.dtype)  # padded frames contribute nothing to the convolution
        x, mask, times = self._temporal_conv(
            x, frame_mask, inputs.timestamps
        )  # (B, T', L', W), (B, T'), (B, T')
        n_local = x.shape[2]
        return (
            x.flatten(1, 2),
            mask.repeat_interleave(n_local, dim=1),
            times.repeat_interleave(n_local, dim=1),
        )

    def _temporal_conv(
        self, x: torch.Tensor, frame_mask: torch.Tensor, times: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Grouped convolution over time per token slot: (B, T, L', W) -> (B, T', L', W), T' = ceil(T / s)."""
        b, t, n, w = x.shape
        s = self.temporal_stride
        pad = (-t) % s
        slots = F.pad(x.permute(0, 2, 3, 1).reshape(b * n, w, t), (0, pad))  # (B*L', W, T + pad)
        out = self.temporal_conv(slots)  # (B*L', W, T')
        out = out.reshape(b, n, w, -1).permute(0, 3, 1, 2)  # (B, T', L', W)
        m = F.pad(frame_mask.float(), (0, pad)).reshape(b, -1, s)  # (B, T', s)
        tm = F.pad(times.float(), (0, pad)).reshape(b, -1, s)
        count = m.sum(-1)  # (B, T') real frames per window
        window_times = (tm * m).sum(-1) / count.clamp(min=1)
        return out, count > 0, window_times

    def _has_audio(self, audio: AudioFeatures | None, b: int) -> torch.Tensor:
        if audio is None or self.audio_dim is None:
            return torch.zeros(b, dtype=torch.bool)
        return audio.mask.bool().any(dim=1).cpu()

    def _audio_stream(
        self, audio: AudioFeatures, has_audio: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The videos with audio: M windows, each pooled to L'_a tokens + FFN(window mean).

        Returns (B_a, M * L'_a, W) tokens, (B_a, M * L'_a) mask (False = a window with no audio) and times.
        """
        m, k = self.audio_segments, self.audio_local_tokens
        local, glob, masks, times = [], [], [], []
        for i in has_audio.nonzero().flatten().tolist():
            valid = audio.mask[i].bool()
            span = self.segment_seconds or max(float(audio.times[i][valid].max()) + 1e-3, 1e-3) / m
            centres = (torch.arange(m, device=audio.feats.device, dtype=torch.float32) + 0.5) * span  # (M,)
            local.append(
                pool_audio_per_frame(audio.feats[i], audio.times[i], valid, centres, k, span)
            )  # (M, k, Da)
            glob.append(pool_audio_per_frame(audio.feats[i], audio.times[i], valid, centres, 1, span)[:, 0])
            starts = torch.arange(m, device=centres.device, dtype=torch.float32) * span  # (M,)
            ends = starts + span
            ends[-1] = float("inf")  # the last window also takes any audio past the covered span
            steps = audio.times[i][valid]
            masks.append(((steps[None] >= starts[:, None]) & (steps[None] < ends[:, None])).any(1))
            times.append(centres)
        dtype = self.audio_local.weight.dtype
        x = self.audio_local(torch.stack(local).to(dtype))  # (B_a, M, k, W)
        if self.global_residual:
            x = x + self.audio_global(torch.stack(glob).to(dtype)).unsqueeze(2)
        mask = torch.stack(masks)  # (B_a, M)
        if not bool(mask.all()):  # a window past the last audio step carries nothing: leave it out
            x = x * mask[..., None, None].to(x.dtype)
        return (
            x.flatten(1, 2),
            mask.repeat_interleave(k, dim=1),
            torch.stack(times).repeat_interleave(k, dim=1),
        )

    def _embed(self, x: torch.Tensor, times: torch.Tensor, modality: int) -> torch.Tensor:
        """Add the shared temporal embeddings of ``times`` (seconds) and the modality embedding."""
        x = x + self.modality[modality].to(x.dtype)
        if not self.use_time:
            return x
        return x + self._time_code(times).to(x.dtype)

    def _time_code(self, times: torch.Tensor) -> torch.Tensor:
        """(B, N) seconds -> (B, N, W): the learnable 1-s bucket table + the scaled sinusoid."""
        bucket = times.floor().long().clamp(0, self.time_buckets - 1)  # (B, N) 1-s buckets
        sinus = sinusoidal_time_embedding(times, self.width)  # (B, N, W)
        return self.time_table(bucket) + sinus.to(self.time_table.weight.dtype) * self.width**-0.5

    def _anchored(self, queries: torch.Tensor, frame_mask: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        """(B, K, W) modality queries + the time code of K instants spread evenly over each clip's real frames
        (query k reads, at first, the k-th part of the clip)."""
        first, last = _clip_bounds(frame_mask, times)  # (B,), (B,)
        place = _spread(1, queries.shape[1], times.device)  # (1, K)
        anchors = first[:, None] + place * (last - first)[:, None]  # (B, K) seconds
        return queries + self._time_code(anchors).to(queries.dtype)

    def _places(
        self, inputs: CompressorInput, times: dict[str, torch.Tensor], rows: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor] | None:
        """With ``time_window``: each stream token's place in its clip (B_m, N_m) from its time ``times[m]``
        (seconds), 0 = the first real frame, 1 = the last; None without ``time_window``."""
        if self.time_window is None:
            return None
        first, last = _clip_bounds(inputs.frame_mask, inputs.timestamps.float())  # (B,), (B,)
        span = (last - first).clamp(min=1e-3)
        out = {}
        for m, t in times.items():
            r = rows.get(m)
            f, s = (first, span) if r is None else (first[r.to(first.device)], span[r.to(first.device)])
            out[m] = (t.float() - f[:, None]) / s[:, None]  # (B_m, N_m)
        return out

    def _layer_bias(
        self, places: dict[str, torch.Tensor], queries: dict[str, torch.Tensor], query_places: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The T-Fuseformer's time-local biases (``TFuseformerLayer.forward``'s ``bias``) from the stream tokens'
        ``places`` and the (B, F + K_v [+ K_a]) places of the fusion tokens and queries."""
        assert self.time_window is not None
        bias = {}
        for m, p in places.items():
            k = queries[m].shape[1]
            bias[m] = time_locality_bias(_spread(p.shape[0], k, p.device), p, self.time_window)  # (B_m, K_m, N_m)
        bias["fusion"] = time_locality_bias(query_places, query_places, self.time_window)  # (B, E, E)
        return bias

    def _check_inputs(self, inputs: CompressorInput) -> None:
        feats, (h, w) = inputs.feats, inputs.grid
        if feats.dim() != 4:
            raise ValueError(
                f"TFuseformerCompressor: feats must be (B, T, P, D), got shape {tuple(feats.shape)}"
            )
        if feats.shape[2] not in (h * w, h * w + 1):
            raise ValueError(f"TFuseformerCompressor: grid {inputs.grid} does not match {feats.shape[2]} patches "
                             "per frame (h * w, or h * w + 1 with a leading CLS token)")  # fmt: skip
        if feats.shape[3] != self.in_dim:
            raise ValueError(
                f"TFuseformerCompressor: in_dim={self.in_dim} but the features are {feats.shape[3]}-d"
            )
        if inputs.frame_mask.shape != feats.shape[:2]:
            raise ValueError(f"TFuseformerCompressor: frame_mask has shape {tuple(inputs.frame_mask.shape)}, "
                             f"expected {tuple(feats.shape[:2])}")  # fmt: skip
        empty = (~inputs.frame_mask.bool().any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"TFuseformerCompressor: video(s) {empty} of the batch have no real frame")
        audio = inputs.audio
        if audio is not None and self.audio_dim is not None and audio.feats.shape[-1] != self.audio_dim:
            raise ValueError(f"TFuseformerCompressor: audio_dim={self.audio_dim} but the audio features are "
                             f"{audio.feats.shape[-1]}-d")  # fmt: skip
        if audio is not None and self.audio_dim is None:
            raise ValueError("TFuseformerCompressor: audio features were given but audio_dim is not set")

    # ------------------------------------------------------------------------------------------ Q-Former paths
    def _qformer(
        self, ids: torch.Tensor | None, attention: torch.Tensor | None, queries: torch.Tensor | None,
        fused: FusedVideo | None,
    ) -> torch.Tensor:  # fmt: skip
        """transformers' Q-Former with the fused states (and their mask) as cross-attention input:
        (B, K + L, Hq) last-layer states, queries first."""
        model = self.qformer.model
        dtype = model.embeddings.layernorm.weight.dtype
        out = model(
            input_ids=ids,
            attention_mask=attention,
            query_embeds=None if queries is None else queries.to(dtype),
            encoder_hidden_states=None if fused is None else fused.states.to(dtype),
            encoder_attention_mask=None if fused is None else self._encoder_mask(fused, dtype),
        )
        return out.last_hidden_state

    def _encoder_mask(self, fused: FusedVideo, dtype: torch.dtype) -> torch.Tensor:
        """The Q-Former's cross-attention mask: (B, E) 0/1 padding, or with ``time_window`` a (B, 1, K, E)
        additive bias (query j placed j / (K - 1) of the way through the clip; padding at the dtype's min)."""
        if self.time_window is None or fused.positions is None:
            return fused.mask.long()
        b = fused.states.shape[0]
        bias = time_locality_bias(_spread(b, self.num_queries, fused.positions.device), fused.positions,
                                  self.time_window)  # (B, K, E)  # fmt: skip
        return bias.to(dtype).masked_fill(~fused.mask.bool()[:, None, :], torch.finfo(dtype).min)[:, None]

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) ``[CLS] text [SEP]`` ids and mask (right padding, ``max_text_len`` truncation)."""
        tok = self._text_tokenizer()
        enc = tok(
            list(texts), padding="longest", truncation=True, max_length=self.max_text_len, return_tensors="pt"
        )
        device = self.query_tokens.device
        return enc["input_ids"].to(device), enc["attention_mask"].to(device)

    def video_embedding(self, query_out: torch.Tensor) -> torch.Tensor:
        """(B, K, Hq) query outputs -> (B, E) unit video embedding: projected, averaged over queries."""
        self._need_alignment()
        return F.normalize(
            self.vision_projection(query_out.to(self.vision_projection.weight.dtype)).mean(1), dim=-1
        )

    def text_embedding(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L) caption ids -> (B, E) unit text embedding of the ``[CLS]`` state (text alone, no queries)."""
        self._need_alignment()
        states = self._qformer(ids, mask, None, None)  # (B, L, Hq)
        return F.normalize(self.text_projection(states[:, 0].to(self.text_projection.weight.dtype)), dim=-1)

    def embed_video(self, inputs: CompressorInput) -> torch.Tensor:
        """(B, E) unit video embeddings (retrieval; the contrastive head)."""
        return self.video_embedding(self.query_states(self.fuse(inputs)))

    def embed_text(self, texts: list[str]) -> torch.Tensor:
        """(B, E) unit text embeddings (retrieval; the contrastive head)."""
        return self.text_embedding(*self.tokenize(texts))

    def match_logits(self, fused: FusedVideo, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, 2) matching logits (index 1 = match) of video i with caption i: queries and text share
        bidirectional self-attention, the queries read the video; the head's logits are averaged over queries
        (as ``Blip2ForImageTextRetrieval``)."""
        self._need_alignment()
        b, k = ids.shape[0], self.num_queries
        joint = torch.cat([torch.ones(b, k, dtype=mask.dtype, device=mask.device), mask], dim=1)  # (B, K + L)
        out = self._qformer(ids, joint, self.query_tokens.expand(b, -1, -1), fused)  # (B, K + L, Hq)
        return self.itm_head(out[:, :k].to(self.itm_head.weight.dtype)).mean(dim=1)

    def caption_logits(self, fused: FusedVideo, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L, V) next-token logits of caption generation conditioned on the queries.

        The first token (``[CLS]``) is replaced by ``[DEC]``; text attends to every query and causally to the
        text, queries attend to queries only (BLIP-2's ITG mask), so the queries never see the caption.
        """
        self._need_alignment()
        b, k = ids.shape[0], self.num_queries
        ids = ids.clone()
        ids[:, 0] = self._text_tokenizer().convert_tokens_to_ids(DECODER_BOS)
        dtype = self.qformer.model.embeddings.layernorm.weight.dtype
        bias = decoder_attention_bias(k, mask, dtype)  # (B, 1, K + L, K + L)
        out = self._qformer(ids, bias, self.query_tokens.expand(b, -1, -1), fused)[:, k:]  # (B, L, Hq)
        hidden = self.lm_transform(out)
        return F.linear(hidden, self.qformer.model.embeddings.word_embeddings.weight, self.lm_bias)

    def _need_alignment(self) -> None:
        if not self.alignment:
            raise ValueError(
                "TFuseformerCompressor: built with alignment=False (no contrastive/matching heads)"
            )

    def _text_tokenizer(self) -> Any:
        self._need_alignment()
        if self.tokenizer is None:
            tok = _with_decoder_bos(build_qformer_tokenizer(self._tokenizer_spec))
            if len(tok) != self.qformer.vocab_size:
                raise ValueError(f"TFuseformerCompressor: tokenizer {self._tokenizer_spec} has {len(tok)} tokens "
                                 f"with {DECODER_BOS}, the Q-Former {self.qformer.vocab_size} "
                                 f"(text_vocab_size={self.text_vocab_size})")  # fmt: skip
            self.tokenizer = tok
        return self.tokenizer

    def unused_parameter_names(self) -> set[str]:
        """Parameters the video-token path never reads: the text paths, unless ``text_paths_active``
        (``VideoLLM.set_trainable`` keeps them frozen)."""
        if self.text_paths_active:
            return set()
        return {name for name, _ in self.named_parameters() if is_text_path(name)}

    # ------------------------------------------------------------------------------------------ weights
    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """Checkpoints saved before the temperature became shape (1,) hold it as a 0-d tensor: reshape it."""
        temp = state_dict.get(prefix + "temp")
        if isinstance(temp, torch.Tensor) and temp.dim() == 0:
            state_dict[prefix + "temp"] = temp.reshape(1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def load_pretrained(self, local_dir: str | Path) -> TFuseformerCompressor:
        """Initialise the Q-Former from a local BERT checkpoint (``bert-base-uncased``); returns self."""
        self.qformer.load_pretrained(local_dir)
        return self

    def extra_repr(self) -> str:
        return (f"in_dim={self.in_dim}, audio_dim={self.audio_dim}, width={self.width}, "
                f"local_grid={self.local_grid}, temporal_stride={self.temporal_stride}, "
                f"num_queries={self.num_queries}, alpha={self.alpha}, alignment={self.alignment}")  # fmt: skip


# ---------------------------------------------------------------------------------------------- helpers
def decoder_attention_bias(num_queries: int, text_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, 1, K + L, K + L) additive self-attention bias of BLIP-2's caption generation: queries see queries;
    text token i sees every query and the real text tokens 0..i.

    Example:
        >>> bias = decoder_attention_bias(2, torch.tensor([[1, 1, 0]]), torch.float32)
        >>> (bias[0, 0] == 0).int()
        tensor([[1, 1, 0, 0, 0],
                [1, 1, 0, 0, 0],
                [1, 1, 1, 0, 0],
                [1, 1, 1, 1, 0],
                [1, 1, 1, 1, 0]], dtype=torch.int32)
    """
    b, length = text_mask.shape
    k, n = num_queries, num_queries + length
    allowed = torch.zeros(b, n, n, dtype=torch.bool, device=text_mask.device)
    allowed[:, :, :k] = True  # everyone sees the queries
    allowed[:, :k, k:] = False  # queries never see text
    causal = torch.ones(length, length, dtype=torch.bool, device=text_mask.device).tril()
    allowed[:, k:, k:] = causal[None] & text_mask.bool()[:, None, :]
    bias = torch.zeros(b, 1, n, n, dtype=dtype, device=text_mask.device)
    return bias.masked_fill(~allowed[:, None], torch.finfo(dtype).min)


TEXT_PATH_HEADS = ("vision_projection.", "text_projection.", "itm_head.", "lm_transform.")
# the Q-Former's text embeddings and each layer's text feed-forward (``intermediate`` / ``output``, not the
# attention blocks' ``attention.output`` nor the query branch's ``intermediate_query`` / ``output_query``)
TEXT_PATH_PATTERN = re.compile(
    r"\.embeddings\.(word|position)_embeddings\.|\.layer\.\d+\.(intermediate|output)\."
)


def is_text_path(name: str) -> bool:
    """Whether compressor parameter ``name`` serves only the text paths (alignment heads, the Q-Former's text
    embeddings and text feed-forward; the query feed-forward is ``intermediate_query`` / ``output_query``).

    Example:
        >>> is_text_path("qformer.model.encoder.layer.0.output.dense.weight"), is_text_path("itm_head.bias")
        (True, True)
        >>> [is_text_path(n) for n in ("qformer.model.encoder.layer.0.output_query.dense.weight", "temporal_conv.bias",
        ...                            "qformer.model.encoder.layer.0.attention.output.dense.weight")]
        [False, False, False]
    """
    if name in ("temp", "lm_bias") or name.startswith(TEXT_PATH_HEADS):
        return True
    return TEXT_PATH_PATTERN.search(name) is not None


def time_locality_bias(q_places: torch.Tensor, k_places: torch.Tensor, window: float) -> torch.Tensor:
    """(B, Q) query places and (B, K) key places in clip fractions (NaN = no time) -> (B, Q, K) additive attention
    bias ``-d**2 / 2``, d = |q - k| / ``window`` capped at 10; 0 where either side has no time.

    Example:
        >>> nan = float("nan")
        >>> time_locality_bias(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 0.5, nan]]), 0.5)
        tensor([[[-0.0000, -0.5000,  0.0000],
                 [-2.0000, -0.5000,  0.0000]]])
    """
    d = ((q_places.float()[:, :, None] - k_places.float()[:, None, :]) / window).abs().clamp(max=10.0)
    return torch.nan_to_num(-0.5 * d**2, nan=0.0)


def _spread(b: int, k: int, device: torch.device) -> torch.Tensor:
    """(B, K) places of K queries spread evenly over a clip: k / (K - 1) (one query: the middle)."""
    place = torch.linspace(0, 1, k, device=device) if k > 1 else torch.full((1,), 0.5, device=device)
    return place.expand(b, k)


def _clip_bounds(frame_mask: torch.Tensor, times: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) mask and seconds -> (B,) time of each clip's first and last real frame."""
    real = frame_mask.bool()
    first = torch.where(real, times, torch.full_like(times, float("inf"))).amin(1)
    last = torch.where(real, times, torch.full_like(times, float("-inf"))).amax(1)
    return first, last


def _no_place(b: int, k: int, device: torch.device) -> torch.Tensor:
    """(B, K) NaN places: states with no time (the fusion tokens)."""
    return torch.full((b, k), float("nan"), device=device)


def _full_batch(
    x: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor | None, b: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B_m, N, ...) values (tokens, or places) and (B_m, N) mask of the rows ``rows`` (None = every row) ->
    (B, N, ...) and (B, N), the other rows zero and masked out."""
    if rows is None:
        return x, mask.bool()
    rows = rows.to(x.device)
    full = x.new_zeros(b, *x.shape[1:]).index_copy(0, rows, x)
    keep = torch.zeros(b, x.shape[1], dtype=torch.bool, device=x.device).index_copy(0, rows, mask.bool())
    return full, keep


def _query_mask(b: int, k: int, rows: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """(B, K) True for every row, or only for ``rows`` (the videos that have the modality)."""
    if rows is None:
        return torch.ones(b, k, dtype=torch.bool, device=device)
    keep = torch.zeros(b, k, dtype=torch.bool, device=device)
    keep[rows.to(device)] = True
    return keep


def _ffn(d_in: int, hidden: int, d_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, d_out),
                         nn.Dropout(dropout))  # fmt: skip


def _lm_transform(qformer: QFormer) -> nn.Module:
    """BERT's prediction-head transform (dense, activation, LayerNorm) from transformers, sized like the
    Q-Former; the decoder weights are the Q-Former's word embeddings (tied, as LAVIS's BertLMHeadModel)."""
    from transformers.models.bert.modeling_bert import BertPredictionHeadTransform

    return BertPredictionHeadTransform(qformer.model.config)


def _with_decoder_bos(tokenizer: Any) -> Any:
    if DECODER_BOS not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"bos_token": DECODER_BOS})
    return tokenizer


def _build_qformer(spec: QFormer | Mapping[str, Any] | str, width: int) -> QFormer:
    if isinstance(spec, QFormer):
        if spec.encoder_width != width:
            raise ValueError(
                f"TFuseformerCompressor: the Q-Former reads {spec.encoder_width}-d states, width={width}"
            )
        return spec
    if isinstance(spec, str):
        return QFormer(width, preset=spec)
    if isinstance(spec, Mapping):
        cfg = dict(spec)
        return QFormer(width, preset=cfg.pop("preset", "bert_base"), config=cfg)
    raise ValueError(
        f"TFuseformerCompressor: qformer must be a QFormer, a preset name or a config dict, got {spec!r}"
    )


def _check_counts(**values: int) -> None:
    for name, value in values.items():
        if int(value) < 1:
            raise ValueError(f"TFuseformerCompressor: {name} must be >= 1, got {value}")


__all__ = ["DECODER_BOS", "FusedVideo", "TFuseformerCompressor", "TFuseformerLayer", "decoder_attention_bias",
           "is_text_path", "time_locality_bias"]  # fmt: skip

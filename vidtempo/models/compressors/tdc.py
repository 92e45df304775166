"""TDC: Temporal Dynamic Context compression (Hao et al., arXiv 2504.10443; released code Hoar012/TDC-Video,
``tdc/cambrian_arch.py prepare_inputs_labels_for_multimodal``; see ``docs/methods/tdc.md``).

Per video: cut scenes (:class:`~vidtempo.models.segmentation.SceneSegmenter`, top-k lowest consecutive-frame
similarities), split every scene into chunks of at most ``chunk_size`` (8) frames. In each chunk:

* frame 1 is the **static frame**: all of its tokens (the h x w grid projected to the LLM width, optionally a
  learned newline token after every row, then its audio tokens) followed by a learnable ``<Sep>``;
* every later frame j is compressed to K (16) tokens by a Q-Former reading ``[X_j; A_j]`` (visual + audio
  tokens) with the instruction text as input; its queries are the static frame's visual tokens
  adaptive-average-pooled to K and projected by ``query_proj`` (or K learned queries); the outputs go through
  ``vision_proj`` back to the LLM width, are L2-normalised (released code) and followed by ``<Sep>``.

Tokens per chunk of L frames (n_v visual tokens per frame, a audio tokens, K queries)::

    add_static=True:  (n_v + a + 1) + (L - 1) * (K + 1)          n_v = h*w, or h*(w+1) with newline tokens
    add_static=False: L * (K + 1)

Example: one 8-frame chunk of a 12x12 grid without newlines: 144 + 1 + 7 * 17 = 264 tokens.

The compressor emits LLM-width tokens, so pair it with
``vidtempo.models.projectors.IdentityProjector`` (alias ``identity``) in a ``VideoLLM``.

Example:
    >>> import torch
    >>> from vidtempo.models.interfaces import CompressorInput
    >>> comp = TDCCompressor(in_dim=8, llm_dim=16, qformer="tiny", max_segments=0, newline=False).eval()
    >>> out = comp(CompressorInput(feats=torch.randn(1, 8, 4, 8), frame_mask=torch.ones(1, 8, dtype=torch.bool),
    ...                            timestamps=torch.arange(8.0)[None] + 0.5, grid=(2, 2), query=["when?"]))
    >>> tuple(out.tokens.shape), comp.count_tokens([8], (2, 2))  # 4 + 1 + 7 * (16 + 1)
    ((1, 124, 16), 124)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vidtempo.models.compressors.audio_windows import pool_audio_batch, pool_audio_per_frame  # noqa: F401 (re-exported)
from vidtempo.models.compressors.qformer import QFormer, build_qformer_tokenizer
from vidtempo.models.interfaces import AudioFeatures, CompressorInput, TokenCompressor, VideoTokens
from vidtempo.models.segmentation import ChunkMasks, SceneSegmenter
from vidtempo.models.time_embedding import sinusoidal_time_embedding

QUERY_TYPES = ("avg_pool", "learned")


class TDCCompressor(TokenCompressor):
    """TDC static-frame + Q-Former context compressor (defaults follow the released code).

    Args:
        in_dim: vision feature width D.
        llm_dim: LLM hidden size H (width of every emitted token; ``out_dim``).
        num_queries: K, tokens per compressed frame (TDC ``context_token_num``: 16).
        chunk_size: most frames per chunk inside a scene (TDC: 8).
        max_segments: scene cut points (TDC ``max_num_segments``: 24); 0 = no scene segmentation.
        segment_mode: ``"topk"`` (released code) or ``"threshold"`` (paper variant).
        segment_threshold: similarity threshold of the ``"threshold"`` mode.
        segmenter: a ready :class:`SceneSegmenter` (overrides the three arguments above).
        newline: append a learned newline token after every grid row of each frame (released code: on).
        add_static: keep all tokens of each chunk's first frame; False = every frame compressed (ablation).
        query_type: ``"avg_pool"`` (queries from the static frame, released default) or ``"learned"``.
        l2_normalize: L2-normalise every Q-Former output token (released code).
        l2_scale: with ``l2_normalize``, multiply the unit-norm tokens by one learnable scalar initialised to
            this value, e.g. the mean norm of the LLM's input embeddings (``docs/methods/tdc.md``: a unit norm may not
            match the LLM's embedding scale; not in TDC). None = the released code's unit norm.
        qformer: a :class:`QFormer`, a preset name (``"bert_base"``, ``"tiny"``) or a config dict with an
            optional ``preset`` key; its cross-attention reads ``llm_dim``-wide states.
        tokenizer: the Q-Former's BERT-style tokenizer: ``"tiny"``, a local directory, or an object.
        text_vocab_size: with a tokenizer directory, its vocabulary size (30522 for bert-base-uncased): the
            tokenizer then loads on first use, so the model builds offline without its files.
        text_input: feed the instruction (``CompressorInput.query``) to the Q-Former (released code: on).
        max_text_len: instruction tokens kept (right truncation; TDC: 256).
        audio_dim: audio feature width Da; enables ``audio_proj`` (None = no audio).
        audio_tokens_per_frame: audio tokens per frame (TDC with BEATs: 50).
        audio_window: seconds of audio per frame: a frame at time t gets the audio of
            ``[floor(t / w) * w, start of the next frame's window)`` (TDC: 1 s at 1 fps).
        max_tokens: token budget per video (TDC: model_max_length - 16 - text length); None = no guard.
        qformer_batch: most frames per Q-Former call (None = all compressed frames of a batch at once).
        frame_proj_hidden: hidden width of ``frame_proj`` (default ``llm_dim``).
        time_embedding: add a learnable-scaled sinusoidal embedding of each token's frame time (seconds) to
            every emitted token (not in TDC, whose tokens carry no time; the ``pool`` baseline's option, so
            answers in seconds are possible without timestamp text).

    Example:
        >>> comp = TDCCompressor(in_dim=8, llm_dim=16, qformer="tiny", newline=True, audio_dim=4,
        ...                      audio_tokens_per_frame=2)
        >>> comp.count_tokens([8, 3], grid=(2, 2), audio=True)  # (2*3 + 2 + 1) + 7*17 + (6 + 2 + 1) + 2*17
        171
    """

    def __init__(
        self,
        in_dim: int,
        llm_dim: int,
        *,
        num_queries: int = 16,
        chunk_size: int = 8,
        max_segments: int | None = 24,
        segment_mode: str = "topk",
        segment_threshold: float = 0.9,
        segmenter: SceneSegmenter | None = None,
        newline: bool = True,
        add_static: bool = True,
        query_type: str = "avg_pool",
        l2_normalize: bool = True,
        l2_scale: float | None = None,
        qformer: QFormer | Mapping[str, Any] | str = "bert_base",
        tokenizer: Any = "tiny",
        text_input: bool = True,
        max_text_len: int = 256,
        audio_dim: int | None = None,
        audio_tokens_per_frame: int = 50,
        audio_window: float = 1.0,
        max_tokens: int | None = None,
        qformer_batch: int | None = None,
        frame_proj_hidden: int | None = None,
        text_vocab_size: int | None = None,
        time_embedding: bool = False,
    ) -> None:
        super().__init__()
        _check_positive(in_dim=in_dim, llm_dim=llm_dim, num_queries=num_queries,
                        audio_tokens_per_frame=audio_tokens_per_frame, max_text_len=max_text_len)  # fmt: skip
        if query_type not in QUERY_TYPES:
            raise ValueError(f"TDCCompressor: query_type must be one of {QUERY_TYPES}, got '{query_type}'")
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"TDCCompressor: max_tokens must be >= 1 or None, got {max_tokens}")
        if audio_window <= 0:
            raise ValueError(f"TDCCompressor: audio_window must be > 0 seconds, got {audio_window}")
        if l2_scale is not None and (not l2_normalize or l2_scale <= 0):
            raise ValueError(f"TDCCompressor: l2_scale={l2_scale} needs l2_normalize=True and a value > 0 "
                             "(it scales the unit-norm Q-Former tokens)")  # fmt: skip
        self.in_dim, self.out_dim = int(in_dim), int(llm_dim)
        self.num_queries = int(num_queries)
        self.segmenter = segmenter or SceneSegmenter(
            max_segments=max_segments, chunk_size=chunk_size, mode=segment_mode, threshold=segment_threshold
        )
        self.chunk_size = self.segmenter.chunk_size
        self.add_static, self.query_type, self.l2_normalize = add_static, query_type, l2_normalize
        self.text_input, self.max_text_len = text_input, int(max_text_len)
        self.audio_tokens_per_frame, self.audio_window = int(audio_tokens_per_frame), float(audio_window)
        self.max_tokens, self.qformer_batch = max_tokens, qformer_batch

        hidden = frame_proj_hidden or llm_dim  # like TDC's mm_projector: Linear -> GELU -> Linear
        self.frame_proj = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, llm_dim))
        self.newline = nn.Parameter(torch.randn(llm_dim) * llm_dim**-0.5) if newline else None
        self.sep = nn.Parameter(torch.randn(llm_dim))  # TDC's ``frame_seg``: randn init
        self.l2_scale = nn.Parameter(torch.tensor(float(l2_scale))) if l2_scale is not None else None
        # A tokenizer directory with a declared vocabulary size loads lazily (first forward), so the model
        # can be built offline (``vidtempo inspect``) before the tokenizer files exist on this machine.
        lazy = text_input and text_vocab_size is not None and isinstance(tokenizer, (str, Path)) and tokenizer != "tiny"
        self._tokenizer_spec = tokenizer if lazy else None
        self.text_vocab_size = text_vocab_size
        self.tokenizer = build_qformer_tokenizer(tokenizer) if text_input and not lazy else None
        self.qformer = _build_qformer(qformer, llm_dim, self.tokenizer)
        if lazy:
            self.qformer.resize_vocab(int(text_vocab_size))
        hq = self.qformer.hidden_size
        if query_type == "avg_pool":
            self.query_proj: nn.Linear | None = nn.Linear(llm_dim, hq)
            self.learned_queries = None
        else:
            self.query_proj = None
            self.learned_queries = nn.Parameter(torch.randn(num_queries, hq) * 0.02)  # BLIP-2 init std
        self.vision_proj = nn.Linear(hq, llm_dim)
        self.audio_dim = audio_dim
        self.audio_proj = nn.Linear(audio_dim, llm_dim) if audio_dim is not None else None
        # unit-norm embedding at init, the scale of the L2-normalised context tokens
        self.time_scale = nn.Parameter(torch.full((1,), (llm_dim / 2) ** -0.5)) if time_embedding else None

    # ------------------------------------------------------------------------------------------ counts
    def frame_tokens(self, grid: tuple[int, int], audio: bool = False) -> int:
        """Tokens of one uncompressed (static) frame without its ``<Sep>``: n_v (+ a with audio)."""
        h, w = grid
        n_v = h * (w + 1) if self.newline is not None else h * w
        return n_v + (self.audio_tokens_per_frame if audio else 0)

    def chunk_tokens(self, length: int, grid: tuple[int, int], audio: bool = False) -> int:
        """Tokens of one chunk of ``length`` frames (``docs/methods/tdc.md``), before the budget guard."""
        if length < 1:
            raise ValueError(f"a chunk has at least one frame, got {length}")
        compressed = self.num_queries + 1
        if not self.add_static:
            return length * compressed
        return self.frame_tokens(grid, audio) + 1 + (length - 1) * compressed

    def count_tokens(
        self, chunk_lengths: Sequence[int], grid: tuple[int, int], audio: bool = False, guard: bool = True
    ) -> int:
        """Exact tokens of one video made of chunks of the given lengths (after the budget guard if ``guard``)."""
        sizes = [self.chunk_tokens(n, grid, audio) for n in chunk_lengths]
        if guard:
            sizes = _guarded_sizes(sizes, self.max_tokens)
        return sum(sizes)

    def num_tokens(self, num_frames: int, grid: tuple[int, int], audio: bool = False) -> int:
        """Tokens for one video of ``num_frames`` frames: exact or an upper bound (then tight).

        Exact without scene segmentation (``max_segments=0``: chunks of ``chunk_size``) and, in ``"topk"``
        mode, for ``num_frames <= max_segments + 1`` (every frame is its own scene). Otherwise the count
        depends on where the scene cuts fall; this returns the largest count any cut placement can give
        (c cuts make at most ``c + ceil((T - c) / chunk_size)`` chunks and at least
        ``max(c + 1, ceil(T / chunk_size))``). The budget guard (``max_tokens``) caps the result.
        """
        t, size = int(num_frames), self.chunk_size
        if t <= 0:
            return 0
        seg = self.segmenter
        cuts = t - 1 if seg.max_segments is None else min(seg.max_segments, t - 1)
        if cuts == 0 or (seg.mode == "topk" and t <= cuts + 1):  # exact cases
            lengths = [1] * t if cuts else [min(size, t - s) for s in range(0, t, size)]
            return self.count_tokens(lengths, grid, audio)
        fewest = max(cuts + 1, math.ceil(t / size)) if seg.mode == "topk" else math.ceil(t / size)
        most = min(t, cuts + math.ceil((t - cuts) / size))
        static = self.chunk_tokens(1, grid, audio)
        best = max(n * static + (t - n) * (self.num_queries + 1) for n in (fewest, most))
        if not self.add_static:
            best = t * (self.num_queries + 1)
        return best if self.max_tokens is None else min(best, self.max_tokens)

    # ------------------------------------------------------------------------------------------ forward
    def forward(self, inputs: CompressorInput) -> VideoTokens:
        """Compress (B, T, P, D) features to (B, N, H) tokens; ``info`` reports chunks and trimmed tokens."""
        feats, frame_mask = inputs.feats, inputs.frame_mask.bool()  # (B, T, P, D), (B, T)
        self._check_inputs(inputs)
        b = feats.shape[0]
        masks = self.segmenter.chunk_masks(feats.detach(), inputs.timestamps, frame_mask)
        plan = _plan(masks, self.add_static)
        vis = self._visual_tokens(feats[masks.valid], inputs.grid)  # (M, n_v, H), M valid frames in order
        frame_tok = vis
        if inputs.audio is not None:
            aud = self._audio_tokens(inputs.audio, inputs.timestamps, masks.valid)  # (M, a, H)
            frame_tok = torch.cat([vis, aud.to(vis.dtype)], dim=1)  # (M, n_v + a, H)
        static = frame_tok[plan.static_frames]  # (S, n_s, H)
        context = self._compress(vis, frame_tok, plan, inputs.query, b)  # (Nd, K, H)
        bank = torch.cat(
            [
                static.flatten(0, 1),
                context.flatten(0, 1),
                self.sep[None].to(vis.dtype),
                vis.new_zeros(1, vis.shape[-1]),
            ]
        )  # (S*n_s + Nd*K + 2, H): every token any video emits, plus <Sep> and a zero padding row
        index, mask, info = self._layout(plan, static.shape[1], bank.shape[0])
        tokens = bank[index]  # (B, N, H)
        if self.time_scale is not None:
            tokens = tokens + self._time_embedding(inputs.timestamps, info["token_frames"], mask, tokens)
        return VideoTokens(tokens=tokens, mask=mask.to(feats.device), info=info)

    def _time_embedding(
        self, timestamps: torch.Tensor, token_frames: torch.Tensor, mask: torch.Tensor, tokens: torch.Tensor
    ) -> torch.Tensor:
        """(B, N, H) scaled sinusoidal embedding of each token's frame time; zeros at padding."""
        assert self.time_scale is not None
        frames = token_frames.clamp(min=0).to(timestamps.device)  # (B, N)
        times = torch.gather(timestamps, 1, frames)  # (B, N) seconds
        emb = sinusoidal_time_embedding(times, tokens.shape[-1]).to(tokens.dtype)  # (B, N, H)
        return self.time_scale * emb * mask.to(tokens.device).unsqueeze(-1)

    def _check_inputs(self, inputs: CompressorInput) -> None:
        feats = inputs.feats
        if feats.dim() != 4:
            raise ValueError(f"TDCCompressor: feats must be (B, T, P, D), got shape {tuple(feats.shape)}")
        h, w = inputs.grid
        if h * w != feats.shape[2]:
            raise ValueError(
                f"TDCCompressor: grid {inputs.grid} does not match {feats.shape[2]} patches per frame"
            )
        if feats.shape[3] != self.in_dim:
            raise ValueError(f"TDCCompressor: in_dim={self.in_dim} but the features are {feats.shape[3]}-d")
        if inputs.frame_mask.shape != feats.shape[:2]:
            raise ValueError(
                f"TDCCompressor: frame_mask has shape {tuple(inputs.frame_mask.shape)}, expected {tuple(feats.shape[:2])}"
            )
        if inputs.audio is not None and self.audio_proj is None:
            raise ValueError(
                "TDCCompressor: audio features were given but audio_dim is not set (no audio_proj)"
            )
        if inputs.query is not None and len(inputs.query) != feats.shape[0]:
            raise ValueError(
                f"TDCCompressor: {len(inputs.query)} queries for a batch of {feats.shape[0]} videos"
            )

    def _visual_tokens(self, feats: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """(M, P, D) valid-frame features -> (M, n_v, H) projected tokens, newline after each row if enabled."""
        x = self.frame_proj(feats)  # (M, P, H)
        if self.newline is None:
            return x
        m, _, hid = x.shape
        h, w = grid
        rows = x.reshape(m, h, w, hid)
        nl = self.newline.to(x.dtype).expand(m, h, 1, hid)
        return torch.cat([rows, nl], dim=2).reshape(m, h * (w + 1), hid)  # (M, h*(w+1), H)

    def _audio_tokens(self, audio: AudioFeatures, timestamps: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(M, a, H): each valid frame's audio window pooled to ``audio_tokens_per_frame`` and projected."""
        assert self.audio_proj is not None
        if audio.feats.shape[-1] != self.audio_dim:
            raise ValueError(f"TDCCompressor: audio_dim={self.audio_dim} but the audio features are "
                             f"{audio.feats.shape[-1]}-d")  # fmt: skip
        pooled = pool_audio_batch(audio.feats, audio.times, audio.mask, timestamps, valid,
                                  self.audio_tokens_per_frame, self.audio_window)[valid]  # (M, a, Da)  # fmt: skip
        dtype = self.audio_proj.weight.dtype
        return self.audio_proj(pooled.to(dtype))  # (M, a, Da) -> (M, a, H)

    def _queries(self, vis: torch.Tensor, plan: _Plan) -> torch.Tensor:
        """(C, K, Hq) queries per chunk: pooled static-frame visual tokens (newlines included) or learned."""
        if self.learned_queries is not None:
            return self.learned_queries.expand(len(plan.chunk_first), -1, -1)
        assert self.query_proj is not None
        first = vis[plan.chunk_first]  # (C, n_v, H)
        pooled = F.adaptive_avg_pool1d(first.transpose(1, 2), self.num_queries).transpose(1, 2)  # (C, K, H)
        return self.query_proj(pooled)

    def _compress(
        self, vis: torch.Tensor, frame_tok: torch.Tensor, plan: _Plan, query: list[str] | None, batch: int
    ) -> torch.Tensor:
        """One batched Q-Former pass over every compressed frame: -> (Nd, K, H)."""
        n_dyn = len(plan.dyn_frames)
        if n_dyn == 0:
            return vis.new_zeros(0, self.num_queries, vis.shape[-1])
        queries = self._queries(vis, plan)  # (C, K, Hq)
        ids, text_mask = self._tokenize(query, batch, vis.device)
        dyn_frames, dyn_chunks, dyn_videos = plan.dyn_frames, plan.dyn_chunks, plan.dyn_videos
        step = self.qformer_batch or n_dyn
        outs = []
        for s in range(0, n_dyn, step):  # one call unless qformer_batch limits memory
            sl = slice(s, s + step)
            rows = dyn_videos[sl]
            outs.append(
                self.qformer(
                    queries[dyn_chunks[sl]],  # (n, K, Hq)
                    frame_tok[dyn_frames[sl]],  # (n, n_v + a, H): the frame's visual (+ audio) tokens
                    None if ids is None else ids[rows],
                    None if text_mask is None else text_mask[rows],
                )
            )
        out = self.vision_proj(torch.cat(outs).to(self.vision_proj.weight.dtype))  # (Nd, K, H)
        if not self.l2_normalize:
            return out
        out = F.normalize(out, dim=-1)
        return out if self.l2_scale is None else out * self.l2_scale.to(out.dtype)

    def _tokenize(
        self, query: list[str] | None, batch: int, device: torch.device
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(B, L) instruction ids and mask, or (None, None) without text input."""
        if self.tokenizer is None and self._tokenizer_spec is not None:
            self.tokenizer = build_qformer_tokenizer(self._tokenizer_spec)
            if len(self.tokenizer) != self.text_vocab_size:
                raise ValueError(f"TDCCompressor: tokenizer {self._tokenizer_spec} has {len(self.tokenizer)} tokens, "
                                 f"text_vocab_size={self.text_vocab_size}")  # fmt: skip
        if self.tokenizer is None or query is None:
            return None, None
        texts = [_clean_instruction(q) for q in query]
        enc = self.tokenizer(texts, padding="longest", truncation=True, max_length=self.max_text_len,
                             return_tensors="pt")  # fmt: skip
        return enc["input_ids"].to(device), enc["attention_mask"].to(device)

    def _layout(
        self, plan: _Plan, n_static: int, bank_rows: int
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Token indices into the bank per video (chunk order, budget guard applied), right-padded; vectorised
        over the batch (one host transfer, for the longest row and the counts in ``info``).

        Every valid frame has F slots (its tokens then ``<Sep>``; a static frame n_s + 1, a compressed one
        K + 1); the slots of a row in (frame, slot) order are the video's tokens in chunk order. The budget
        guard keeps a chunk's first ``size - per`` tokens and then the row's first ``max_tokens`` of those
        (:func:`_guarded_sizes`). Returns (B, N) long indices, (B, N) bool mask and the info dict.
        """
        k = self.num_queries
        sep, pad = bank_rows - 2, bank_rows - 1
        is_static, is_dyn, chunk_start = plan.is_static, plan.is_dyn, plan.chunk_start  # (B, T) each
        b, t = is_static.shape
        device = is_static.device
        n_slots = max(n_static + 1 if self.add_static else 0, k + 1)
        j = torch.arange(n_slots, device=device)  # (F,)
        srank = (is_static.flatten().long().cumsum(0) - 1).view(b, t)[..., None]  # (B, T, 1) row of the bank
        drank = (is_dyn.flatten().long().cumsum(0) - 1).view(b, t)[..., None]
        static_idx = torch.where(j < n_static, srank * n_static + j, sep)
        dyn_idx = torch.where(j < k, plan.num_static * n_static + drank * k + j, sep)
        index = torch.where(is_static[..., None], static_idx, dyn_idx)  # (B, T, F)
        slot = (is_static[..., None] & (j <= n_static)) | (is_dyn[..., None] & (j <= k))  # (B, T, F)
        frame_of = torch.arange(t, device=device).view(1, t, 1).expand(b, t, n_slots)  # each slot's frame
        keep = slot
        if self.max_tokens is not None:
            ntok = slot.sum(-1)  # (B, T) tokens per frame
            frames = torch.arange(t, device=device)[None]
            owner = torch.where(chunk_start, frames, torch.zeros_like(frames)).cummax(1).values  # (B, T) chunk's start
            size_at_start = torch.zeros_like(ntok).scatter_add(1, owner, ntok)  # (B, T) chunk sizes at their start
            size = torch.gather(size_at_start, 1, owner)  # (B, T) the size of each frame's chunk
            before = ntok.cumsum(1) - ntok  # (B, T) tokens of the row before the frame
            in_chunk = (before - torch.gather(before, 1, owner))[..., None] + j  # (B, T, F) rank in the chunk
            total, chunks = ntok.sum(1), chunk_start.sum(1)  # (B,)
            excess = (total - self.max_tokens).clamp(min=0)
            per = torch.div(excess + chunks.clamp(min=1) - 1, chunks.clamp(min=1), rounding_mode="floor")  # (B,)
            keep = slot & (in_chunk < (size - per[:, None])[..., None])
            rank = keep.flatten(1).long().cumsum(1).view(b, t, n_slots) - 1
            keep = keep & (rank < self.max_tokens)
        flat_keep = keep.flatten(1)  # (B, T*F)
        kept = flat_keep.sum(1)  # (B,)
        trimmed = slot.flatten(1).sum(1) - kept
        chunks_per_video = chunk_start.sum(1)
        counts = torch.cat([kept.max().view(1) if b else kept.new_zeros(1), trimmed, chunks_per_video]).tolist()
        longest, trimmed_list, chunk_list = int(counts[0]), counts[1 : 1 + b], counts[1 + b :]
        dest = torch.where(flat_keep, flat_keep.long().cumsum(1) - 1, longest)  # (B, T*F); longest = dropped
        out_index = torch.full((b, longest + 1), pad, dtype=torch.long, device=device)
        out_index = out_index.scatter(1, dest, index.flatten(1))[:, :longest]
        token_frames = torch.full((b, longest + 1), -1, dtype=torch.long, device=device)
        token_frames = token_frames.scatter(1, dest, frame_of.reshape(b, -1))[:, :longest]
        mask = torch.arange(longest, device=device)[None] < kept[:, None]  # (B, N)
        info = {"trimmed": sum(trimmed_list), "chunks": sum(chunk_list), "trimmed_per_video": trimmed_list,
                "chunks_per_video": chunk_list, "token_frames": token_frames}  # fmt: skip
        return out_index, mask, info

    # ------------------------------------------------------------------------------------------ weights
    def load_pretrained(self, local_dir: str | Path) -> TDCCompressor:
        """Initialise the Q-Former from a local BERT checkpoint (TDC stage 2: bert-base-uncased); returns self."""
        self.qformer.load_pretrained(local_dir)
        return self

    def extra_repr(self) -> str:
        return (
            f"in_dim={self.in_dim}, out_dim={self.out_dim}, num_queries={self.num_queries}, "
            f"chunk_size={self.chunk_size}, query_type={self.query_type}, add_static={self.add_static}, "
            f"newline={self.newline is not None}, l2_normalize={self.l2_normalize}, "
            f"l2_scale={self.l2_scale is not None}, max_tokens={self.max_tokens}"
        )


# ---------------------------------------------------------------------------------------------- helpers
@dataclass
class _Plan:
    """Which valid frames (global index over the batch, row-major) are static / compressed, as tensors.

    Attributes:
        is_static, is_dyn, chunk_start: (B, T) bool masks of the static, compressed and chunk-first frames.
        static_frames: (S,) global index of each static frame (the bank's static rows, in order).
        chunk_first: (C,) global index of each chunk's first frame (query source).
        dyn_frames, dyn_chunks, dyn_videos: (Nd,) each compressed frame's global index, chunk and video.
    """

    is_static: torch.Tensor
    is_dyn: torch.Tensor
    chunk_start: torch.Tensor
    static_frames: torch.Tensor
    chunk_first: torch.Tensor
    dyn_frames: torch.Tensor
    dyn_chunks: torch.Tensor
    dyn_videos: torch.Tensor

    @property
    def num_static(self) -> int:
        return int(self.static_frames.shape[0])


def _plan(masks: ChunkMasks, add_static: bool) -> _Plan:
    """The batch's static / compressed frames from the segmenter's masks (no per-video loop)."""
    valid, chunk_start = masks.valid, masks.chunk_start  # (B, T)
    is_static = chunk_start if add_static else torch.zeros_like(chunk_start)
    is_dyn = valid & ~is_static
    global_index = (valid.flatten().long().cumsum(0) - 1).view(valid.shape)  # (B, T) index among valid frames
    chunk_id = (chunk_start.flatten().long().cumsum(0) - 1).view(valid.shape)  # (B, T) the frame's chunk
    rows = torch.arange(valid.shape[0], device=valid.device)[:, None].expand_as(valid)
    dyn = is_dyn.nonzero(as_tuple=True)
    first = global_index[chunk_start]  # (C,)
    return _Plan(is_static=is_static, is_dyn=is_dyn, chunk_start=chunk_start,
                 static_frames=first if add_static else first[:0], chunk_first=first,
                 dyn_frames=global_index[dyn], dyn_chunks=chunk_id[dyn], dyn_videos=rows[dyn])  # fmt: skip


def _guarded_sizes(sizes: list[int], max_tokens: int | None) -> list[int]:
    """Chunk sizes after the budget guard (see :func:`_guard`)."""
    total = sum(sizes)
    if max_tokens is None or total <= max_tokens:
        return list(sizes)
    per = math.ceil((total - max_tokens) / len(sizes))
    out, left = [], max_tokens
    for n in sizes:
        n = min(max(n - per, 0), left)  # the min() is the final hard truncation
        out.append(n)
        left -= n
    return out


def _clean_instruction(text: str) -> str:
    """The Q-Former text: the first user turn without media placeholders or newlines (TDC ``prompts[0]``)."""
    for tag in ("<video>", "<image>"):
        text = text.replace(tag, " ")
    return " ".join(text.split())


def _build_qformer(spec: QFormer | Mapping[str, Any] | str, width: int, tokenizer: Any) -> QFormer:
    if isinstance(spec, QFormer):
        qformer = spec
        if qformer.encoder_width != width:
            raise ValueError(
                f"TDCCompressor: the Q-Former reads {qformer.encoder_width}-d states, llm_dim={width}"
            )
    elif isinstance(spec, str):
        qformer = QFormer(width, preset=spec)
    elif isinstance(spec, Mapping):
        cfg = dict(spec)
        qformer = QFormer(width, preset=cfg.pop("preset", "bert_base"), config=cfg)
    else:
        raise ValueError(
            f"TDCCompressor: qformer must be a QFormer, a preset name or a config dict, got {spec!r}"
        )
    if tokenizer is not None:
        qformer.resize_vocab(len(tokenizer))  # TDC: Qformer.resize_token_embeddings(len(tokenizer))
    return qformer


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if int(value) < 1:
            raise ValueError(f"TDCCompressor: {name} must be >= 1, got {value}")

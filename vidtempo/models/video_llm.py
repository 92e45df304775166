"""``VideoLLM``: composition of a per-frame vision encoder, optional audio encoder, a token compressor,
a projector and a causal LM. Video tokens replace the ``VIDEO_TOKEN_INDEX`` placeholder in ``input_ids``.

Example:
    >>> import torch
    >>> from vidtempo.models.encoders.presets import tiny_vision_encoder
    >>> from vidtempo.models.compressors.pooling import SpatialPoolCompressor
    >>> from vidtempo.models.llms.presets import tiny_llm
    >>> enc = tiny_vision_encoder()
    >>> model = VideoLLM(vision_encoder=enc, compressor=SpatialPoolCompressor(enc.out_dim), llm=tiny_llm())
    >>> ids = torch.tensor([[5, VIDEO_TOKEN_INDEX, 7, 8]])
    >>> video = VideoInputs(frames=torch.rand(1, 2, 3, 32, 32), timestamps=torch.tensor([[0.5, 1.5]]))
    >>> out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids.clamp(min=0), video=video)
    >>> out.loss.ndim, "hidden_states" in model.capabilities
    (0, True)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vidtempo.models.interfaces import (
    IGNORE_INDEX,
    VIDEO_TOKEN_INDEX,
    AudioEncoder,
    AudioFeatures,
    CompressorInput,
    TokenCompressor,
    TrainableParts,
    VideoInputs,
    VideoModel,
    VideoModelOutput,
    VideoTokens,
    VisionEncoder,
)
from vidtempo.models.label_head import LabelHead, causal_lm_label_forward
from vidtempo.models.lora import LoraSettings, apply_lora
from vidtempo.models.packed_attention import packed_forward
from vidtempo.models.projectors import MLPProjector
from vidtempo.models.splicing import splice_rows, video_span_tensors

__all__ = ["IGNORE_INDEX", "PARTS", "VIDEO_TOKEN_INDEX", "TrainableParts", "VideoLLM", "VideoLLMOutput",
           "clip_rows", "video_spans"]  # fmt: skip

PARTS = ("vision_encoder", "audio_encoder", "compressor", "projector", "llm")
VideoLLMOutput = VideoModelOutput  # the name this output had before ``VideoModel`` (kept for user code)


class VideoLLM(VideoModel):
    """A video LLM made of injected parts (constructor injection; nothing is built from config here).

    Args:
        vision_encoder: per-frame encoder (``VisionEncoder``).
        compressor: turns (B, T, P, D) features into (B, N, D_c) tokens.
        llm: causal LM wrapper (``HFCausalLM``).
        projector: D_c -> H; default an MLP sized from the parts.
        audio_encoder: optional; its features are handed to the compressor.
        trainable: which parts train (``TrainableParts`` or a dict of its fields).
        lora: LoRA settings used when ``trainable.llm == "lora"``.
        max_length: LLM context; a longer spliced sequence raises ``ValueError``.
        new_token_ids: ids of tokens added to the tokenizer (``tokenizer.time_tokens``; training sets it from the
            tokenizer and checkpoints keep it): the LLM's embeddings and head grow to hold them, each new row
            starting at the mean old row (``vidtempo.models.new_tokens``). These rows train with the LLM
            (``llm: true``) or, under LoRA, alongside the adapter (peft ``trainable_token_indices``); a frozen
            LLM (``llm: false``) leaves them at their start.
    """

    def __init__(
        self,
        *,
        vision_encoder: VisionEncoder,
        compressor: TokenCompressor,
        llm: nn.Module,
        projector: nn.Module | None = None,
        audio_encoder: AudioEncoder | None = None,
        trainable: TrainableParts | dict[str, Any] | None = None,
        lora: LoraSettings | dict[str, Any] | None = None,
        max_length: int | None = None,
        new_token_ids: list[int] | None = None,
    ) -> None:
        super().__init__()
        self.vision_encoder = vision_encoder
        self.audio_encoder = audio_encoder
        self.compressor = compressor
        self.llm = llm
        self.new_token_ids = sorted(int(i) for i in new_token_ids or [])
        if self.new_token_ids:
            from vidtempo.models.new_tokens import grow_vocab

            grow_vocab(llm.model, self.new_token_ids)
        hidden = int(llm.hidden_size)
        self.projector = projector if projector is not None else MLPProjector(compressor.out_dim, hidden)
        self._check_dims(hidden)
        self.max_length = max_length
        self.trainable = trainable if isinstance(trainable, TrainableParts) else TrainableParts(**(trainable or {}))
        self.lora = lora if isinstance(lora, LoraSettings) or lora is None else LoraSettings(**lora)
        self.base_modified = False  # set once the LLM's own weights were trained in a stage or merged
        self.set_trainable(self.trainable)
        self._patch_grid: tuple[int, int] | None = None
        self.patch_grid()  # now, while the encoder is whole

    # ----------------------------------------------------------------- construction helpers
    def _check_dims(self, hidden: int) -> None:
        comp_in = getattr(self.compressor, "in_dim", None)
        if comp_in is not None and comp_in != self.vision_encoder.out_dim:
            raise ValueError(
                f"compressor in_dim={comp_in} but the vision encoder gives {self.vision_encoder.out_dim}-d features"
            )
        proj_in, proj_out = getattr(self.projector, "in_dim", None), getattr(self.projector, "out_dim", None)
        if proj_in is not None and proj_in != self.compressor.out_dim:
            raise ValueError(f"projector in_dim={proj_in} but the compressor emits {self.compressor.out_dim}-d tokens")
        if proj_out is not None and proj_out != hidden:
            raise ValueError(f"projector out_dim={proj_out} but the LLM hidden size is {hidden}")

    def set_trainable(self, plan: TrainableParts) -> None:
        """Apply a freeze plan (wraps the LLM with LoRA the first time ``llm == "lora"``)."""
        self.trainable = plan
        if plan.llm == "lora" and not self.has_lora:
            apply_lora(self.llm, self.lora or LoraSettings(), trainable_tokens=self.new_token_ids)
        for part in PARTS:
            module = getattr(self, part)
            if module is None:
                continue
            flag = getattr(plan, part)
            unused = module.unused_parameter_names() if hasattr(module, "unused_parameter_names") else set()
            for name, param in module.named_parameters():
                adapter = "lora_" in name or "trainable_tokens_" in name  # the adapter's own weights
                param.requires_grad = (adapter if flag == "lora" else bool(flag)) and name not in unused

    # ----------------------------------------------------------------- the VideoModel contract
    @property
    def capabilities(self) -> frozenset[str]:  # type: ignore[override]
        caps = {"hidden_states", "frame_features", "cached_features", "embed_frames", "packing"}
        # video tokens map to frames unless the compressor says they do not (t_fuseformer's Q-Former queries
        # each read the whole clip: reading query k as frame k would be silently wrong)
        if getattr(self.compressor, "tokens_map_to_frames", True):
            caps.add("token_frames")
        if self.audio_encoder is not None:
            caps.add("audio")
        if getattr(self.compressor, "alignment", False):  # a compressor with retrieval heads (t_fuseformer)
            caps |= {"embed_video", "embed_text"}
        return frozenset(caps)

    @property
    def hidden_size(self) -> int:
        return int(self.llm.hidden_size)

    @property
    def frame_feature_dim(self) -> int:
        return int(self.vision_encoder.out_dim)

    @property
    def frame_size(self) -> int:
        return int(self.vision_encoder.image_size)

    def video_tokens(self, num_frames: int, audio: bool = False) -> int:
        return int(self.compressor.num_tokens(num_frames, self.patch_grid(), audio))

    def patch_grid(self) -> tuple[int, int]:
        """(h, w) patch grid of one frame at :attr:`frame_size`, measured once with a blank frame (the first
        call happens in the constructor, while the encoder is whole; later calls, e.g. under FSDP2 sharding,
        read the cached value). The global RNG is left as it was."""
        if self._patch_grid is None:
            probe = next(self.vision_encoder.parameters(), None)
            device = probe.device if probe is not None else torch.device("cpu")  # "meta" under `inspect`
            size, training = self.frame_size, self.vision_encoder.training
            self.vision_encoder.eval()  # no batch-norm statistics updated, no dropout drawn
            try:
                with torch.random.fork_rng(devices=[]), torch.no_grad():
                    _, grid = self.vision_encoder.encode(torch.zeros(1, 3, size, size, device=device))
            finally:
                self.vision_encoder.train(training)
            self._patch_grid = (int(grid[0]), int(grid[1]))
        return self._patch_grid

    def embed_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, D): the mean of each frame's encoder patch features."""
        feats, _ = self.vision_encoder.encode(pixels)  # (N, P, D)
        return feats.mean(dim=1)

    def embed_video(self, video: VideoInputs) -> torch.Tensor:
        """(B, D) unit video embeddings from the compressor's contrastive head (capability ``embed_video``)."""
        self._need_embedding("embed_video")
        return self.compressor.embed_video(self.compressor_input(video))

    def embed_text(self, texts: list[str]) -> torch.Tensor:
        """(B, D) unit text embeddings from the compressor's contrastive head (capability ``embed_text``)."""
        self._need_embedding("embed_text")
        return self.compressor.embed_text(list(texts))

    def call_as_forward(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, run as one forward of this model.

        Under FSDP2 an objective registers this method with ``register_fsdp_forward_method``, so that a
        computation that calls the parts' own methods (e.g. the ``align`` objective, which calls the
        compressor's text and matching paths) gathers the root's sharded parameters before ``fn``, frees them
        after, and reduces their gradients in backward, as ``forward`` does. Without FSDP it is a plain call.

        Example:
            >>> VideoLLM.call_as_forward(None, lambda x: x + 1, 1)
            2
        """
        return fn(*args, **kwargs)

    def _need_embedding(self, capability: str) -> None:
        if capability not in self.capabilities:
            raise NotImplementedError(f"VideoLLM: {type(self.compressor).__name__} has no retrieval heads "
                                      f"({capability} needs a compressor such as t_fuseformer)")  # fmt: skip

    def text_tokenizer(self) -> Any:
        return getattr(self.compressor, "tokenizer", None)

    def set_text_tokenizer(self, tokenizer: Any) -> None:
        if getattr(self.compressor, "tokenizer", None) is not None:
            self.compressor.tokenizer = tokenizer

    def train(self, mode: bool = True) -> VideoLLM:
        super().train(mode)
        for part in ("vision_encoder", "audio_encoder"):  # frozen encoders stay deterministic
            module = getattr(self, part)
            if module is not None and not getattr(self.trainable, part):
                module.eval()
        return self

    # ----------------------------------------------------------------- video tokens
    def encode_video(self, video: VideoInputs) -> VideoTokens:
        """Frames (U, T, 3, H, W) in [0, 1] (or cached ``features`` (U, T, P, D) + ``grid``) -> video tokens
        (B, N, H_llm) with mask (B, N). With ``video.clip_index`` (B,), the U distinct clips are each encoded
        once and row b gets clip ``clip_index[b]``'s features before the compressor (which may read the row's
        question); frame_mask and timestamps are (B, T). ``info`` holds the compressor's diagnostics and
        ``frame_features``, the encoder's (B, T, P, D) patch features (capability ``frame_features``)."""
        inputs = self.compressor_input(video)
        comp = self.compressor(inputs)
        info = {**(comp.info or {}), "frame_features": inputs.feats}  # (B, T, P, D): read by encoder-level losses
        return VideoTokens(tokens=self.projector(comp.tokens), mask=comp.mask, info=info)

    def compressor_input(self, video: VideoInputs) -> CompressorInput:
        """What the compressor reads: the encoders' (B, T, P, D) frame features (one encoding per clip), audio
        features, frame mask, timestamps and queries (see :meth:`encode_video`)."""
        frame_mask, timestamps, clip_index = video.mask(), video.times(), video.clip_index
        if video.features is not None:
            full = video.features.to(next(self.compressor.parameters(), video.features).dtype)
            grid = video.grid
        else:
            assert video.frames is not None
            full, grid = self._encode_frames(video.frames, clip_rows(frame_mask, clip_index, video.frames.shape[0]))
        audio_feats = self._encode_audio(video.audio, video.audio_lengths)
        if clip_index is not None:
            full = full[clip_index]  # (U, T, P, D) -> (B, T, P, D)
            if audio_feats is not None:
                audio_feats = AudioFeatures(*(x[clip_index] for x in (audio_feats.feats, audio_feats.times,
                                                                      audio_feats.mask)))  # fmt: skip
        assert grid is not None
        return CompressorInput(feats=full, frame_mask=frame_mask, timestamps=timestamps, grid=grid,
                               audio=audio_feats, query=video.queries)  # fmt: skip

    def _encode_frames(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        b, t = frames.shape[:2]
        valid = frames[frame_mask]  # (M, 3, H, W): padded frames are never encoded
        with torch.set_grad_enabled(torch.is_grad_enabled() and bool(self.trainable.vision_encoder)):
            feats, grid = self.vision_encoder.encode(valid)  # (M, P, D)
        full = feats.new_zeros(b, t, *feats.shape[1:])
        full[frame_mask] = feats  # (B, T, P, D)
        return full, grid

    def _encode_audio(self, audio: torch.Tensor | None, lengths: torch.Tensor | None) -> AudioFeatures | None:
        if self.audio_encoder is None or audio is None:
            return None
        if lengths is None:
            lengths = torch.full((audio.shape[0],), audio.shape[1], device=audio.device)
        with torch.set_grad_enabled(torch.is_grad_enabled() and bool(self.trainable.audio_encoder)):
            return self.audio_encoder(audio, lengths)

    # ----------------------------------------------------------------- splicing
    def splice(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        video: VideoTokens | None,
        labels: torch.Tensor | None = None,
        padding_side: str = "right",
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Replace each row's single placeholder with its valid video tokens.

        Returns (inputs_embeds (B, L', H), attention_mask (B, L'), labels (B, L') or None, n_video (B,)).
        """
        embed = self.llm.get_input_embeddings()
        text = embed(input_ids.clamp(min=0))  # (B, L, H); placeholder ids embedded as 0, replaced below
        out = splice_rows(text, input_ids, attention_mask, video.tokens if video is not None else None,
                          video.mask if video is not None else None, labels, padding_side, self.max_length)  # fmt: skip
        return out.embeds, out.mask, out.labels, out.num_video

    # ----------------------------------------------------------------- forward / generate
    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None,
        video: VideoInputs | None = None, *, return_hidden: bool = False, packing: int | None = None,
        loss_head: LabelHead | None = None,
    ) -> VideoModelOutput:  # fmt: skip
        """Teacher-forced forward. Shapes: input_ids (B, L); ``video`` frames (U, T, 3, H, W) or features
        (U, T, P, D), see :class:`VideoInputs` (each clip is encoded once; ``encode_video``). ``packing=N``
        runs the LLM on rows of at most N tokens holding several samples each (``vidtempo.models.packed_attention``;
        the same loss, outputs in the unpacked layout). With ``loss_head`` (and labels, unpacked) the loss comes
        from the label positions only and ``logits`` is None (``vidtempo.models.label_head``)."""
        tokens = self.encode_video(video) if video is not None else None
        embeds, mask, spliced_labels, n_video = self.splice(input_ids, attention_mask, tokens, labels)
        if packing is not None:
            packed = packed_forward(self.llm, embeds, mask, spliced_labels, packing, return_hidden=return_hidden,
                                    attn_implementation=getattr(self.llm.config, "_attn_implementation", None))  # fmt: skip
            info = {**(tokens.info or {}), "packed_rows": len(packed.plan.rows)} if tokens is not None else {}
            last = packed.hidden_states[-1] if packed.hidden_states else None
            return VideoModelOutput(packed.loss, packed.logits, spliced_labels, mask, n_video, info, last,
                                    packed.hidden_states)  # fmt: skip
        if loss_head is not None and spliced_labels is not None:
            loss, states = causal_lm_label_forward(self.llm.model, embeds, mask, spliced_labels, loss_head,
                                                   return_hidden)  # fmt: skip
            info = dict(tokens.info or {}) if tokens is not None else {}
            return VideoModelOutput(loss, None, spliced_labels, mask, n_video, info,
                                    states[-1] if states else None, states)  # fmt: skip
        extra = {"output_hidden_states": True} if return_hidden else {}
        out = self.llm(inputs_embeds=embeds, attention_mask=mask, **extra)
        logits = out.logits
        loss = None
        if spliced_labels is not None:
            loss = nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), spliced_labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX
            )
        info = dict(tokens.info or {}) if tokens is not None else {}
        states = tuple(out.hidden_states) if return_hidden else None
        last = states[-1] if states else None
        return VideoModelOutput(loss, logits, spliced_labels, mask, n_video, info, last, states)

    @torch.no_grad()
    def generate(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, video: VideoInputs | None = None,
        **generate_kwargs: Any,
    ) -> torch.Tensor:  # fmt: skip
        """Greedy by default; returns only the new token ids (B, L_new)."""
        tokens = self.encode_video(video) if video is not None else None
        embeds, mask, _, _ = self.splice(input_ids, attention_mask, tokens, padding_side="left")
        generate_kwargs.setdefault("do_sample", False)
        generate_kwargs.setdefault("max_new_tokens", 32)
        return self.llm.model.generate(inputs_embeds=embeds, attention_mask=mask, **generate_kwargs)

    # ----------------------------------------------------------------- reporting
    def parameter_counts(self) -> dict[str, tuple[int, int]]:
        """{part: (total, trainable)} parameter counts."""
        counts = {}
        for part in PARTS:
            module = getattr(self, part)
            if module is not None:
                params = list(module.parameters())
                counts[part] = (sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad))
        return counts


def clip_rows(frame_mask: torch.Tensor, clip_index: torch.Tensor | None, num_clips: int) -> torch.Tensor:
    """(U, T) frame mask of each distinct clip from the (B, T) row mask (rows of a clip share it); the row
    mask itself without ``clip_index``."""
    if clip_index is None:
        return frame_mask
    out = frame_mask.new_zeros(num_clips, frame_mask.shape[1])
    out[clip_index] = frame_mask
    return out


def video_spans(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, num_video_tokens: torch.Tensor
) -> list[tuple[int, int]]:
    """(start, length) of each row's video tokens in the spliced, right-padded sequence that ``forward``
    returns (``logits`` / ``last_hidden_state``); (0, 0) for a row without video.

    Example:
        >>> ids = torch.tensor([[1, 2, VIDEO_TOKEN_INDEX, 3], [0, VIDEO_TOKEN_INDEX, 4, 0]])
        >>> video_spans(ids, torch.tensor([[1, 1, 1, 1], [0, 1, 1, 0]]), torch.tensor([5, 2]))
        [(2, 5), (0, 2)]
    """
    starts, lengths = video_span_tensors(input_ids, attention_mask, num_video_tokens)
    return [(int(s), int(n)) for s, n in zip(starts.tolist(), lengths.tolist())]

"""Supervised fine-tuning: masked next-token cross-entropy on assistant turns.

Example:
    >>> from vidtempo.training.optim import OptimSettings
    >>> import torch
    >>> module = SFTModule(model=torch.nn.Linear(2, 2), optim=OptimSettings(lr=1e-3))
    >>> module.max_skip_fraction
    0.1
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from vidtempo.data.collate import VideoCollator
from vidtempo.data.frame_targets import OPTION_SLOTS
from vidtempo.training.encoder_tags import EncoderTagLoss, vision_feature_dim
from vidtempo.training.optim import OptimSettings, lightning_optimizers
from vidtempo.training.saliency import FrameSaliencyLoss
from vidtempo.training.skips import SkipTracker


class SFTModule(L.LightningModule):
    """Teacher-forced SFT of a ``VideoLLM`` (or any module with the same forward contract).

    Args:
        model: the model; its ``forward(**batch.model_inputs())`` returns an object with ``.loss``.
        optim: optimiser/schedule settings (``OptimSettings`` or a dict of its fields).
        max_skip_fraction: fail the run when more than this fraction of samples could not be decoded.
        saliency_weight: weight of the per-frame saliency loss (``vidtempo.training.saliency``) added to the
            next-token loss; 0 = off. Needs ``data.collator.frame_targets: true`` and the video after the
            question (``video_position: after_text``). The head is trained with the model but is not part of
            the exported model.
        tag_weight: weight of the per-frame tag loss (what is on screen at each frame, ``batch.frame_tags``:
            a multi-label head on the same hidden states, question-independent, so it trains the encoder
            from the first step); 0 = off. Needs ``data.collator.frame_tags``.
        num_tags: number of tag labels (the trainer fills it in from ``data.collator.frame_tags``).
        saliency_slots: how many of the collator's target slots the saliency head predicts (11, the default:
            the moment, 5 options, 5 "seen so far"; 6 leaves out the seen-so-far slots; 13 adds "some / every
            option has begun", ``vidtempo.data.frame_targets``), or a list of slot indices (``[0, 11, 12]``).
        saliency_reduction: ``sample`` (every sample weighs the same) or ``entry`` (every known target weighs
            the same); see ``FrameSaliencyLoss``.
        saliency_layer, tag_layer: which of the LLM's hidden states each head reads, indexed like
            ``hidden_states`` (0 = the embeddings, k = the output of block k, -1 = the final state, the
            default). Tokens after the video read a block's output only through the next block's attention,
            so a head on block k's output puts what it predicts where blocks k+1.. can use it (deep
            supervision; docs/methods/frame_losses.md).
        encoder_tag_weight: weight of a second per-frame tag loss read from the vision encoder's own features
            (``EncoderTagLoss``: each frame's patch features max-pooled, a linear head), so the encoder learns
            what each frame shows without going through the compressor and the LLM; 0 = off. Needs
            ``data.collator.frame_tags``.
        encoder_tag_slots: the tag columns that head predicts (default: all ``num_tags``); give the visual
            ones when the tags also list sounds, e.g. ``12`` for the first 12.
    """

    def __init__(
        self,
        model: nn.Module,
        optim: OptimSettings | dict[str, Any] | None = None,
        max_skip_fraction: float = 0.1,
        saliency_weight: float = 0.0,
        tag_weight: float = 0.0,
        num_tags: int = 0,
        saliency_slots: int | list[int] = OPTION_SLOTS,
        saliency_reduction: str = "sample",
        saliency_layer: int = -1,
        tag_layer: int = -1,
        encoder_tag_weight: float = 0.0,
        encoder_tag_slots: int | list[int] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.optim = optim if isinstance(optim, OptimSettings) else OptimSettings(**(optim or {}))
        self.max_skip_fraction = max_skip_fraction
        self.skips = SkipTracker(max_skip_fraction)
        self.saliency_weight = float(saliency_weight)
        self.saliency = (
            FrameSaliencyLoss(llm_hidden_size(model), slots=saliency_slots, reduction=saliency_reduction)
            if self.saliency_weight
            else None
        )
        self.tag_weight = float(tag_weight)
        if self.tag_weight and num_tags < 1:
            raise ValueError("tag_weight > 0 needs num_tags >= 1 (the labels of data.collator.frame_tags)")
        self.tags = FrameSaliencyLoss(llm_hidden_size(model), slots=num_tags) if self.tag_weight else None
        self.encoder_tag_weight = float(encoder_tag_weight)
        if self.encoder_tag_weight and num_tags < 1 and encoder_tag_slots is None:
            raise ValueError("encoder_tag_weight > 0 needs num_tags >= 1 (the labels of data.collator.frame_tags)")
        self.encoder_tags = (
            EncoderTagLoss(vision_feature_dim(model), encoder_tag_slots if encoder_tag_slots is not None else num_tags)
            if self.encoder_tag_weight
            else None
        )
        self.layers = {"frame_targets": int(saliency_layer), "frame_tags": int(tag_layer)}

    collator_class = VideoCollator  # the collator this objective's batches come from

    def forward(self, batch: Any) -> Any:
        hidden = self.saliency is not None or self.tags is not None
        return self.model(**batch.model_inputs(), **({"output_hidden_states": True} if hidden else {}))

    def configure_model(self) -> None:
        """FSDP2 on ``ModelParallelStrategy`` (CPU or GPU): shard each LLM block, then the whole model, then
        the per-frame heads (``strategies.shard_objective``)."""
        from vidtempo.training.strategies import shard_for_strategy

        shard_for_strategy(self)

    def _step(self, batch: Any, stage: str) -> torch.Tensor | None:
        self.skips.update(batch, stage)
        if len(batch) == 0:
            return None  # every sample of this batch failed to decode (already counted)
        out = self(batch)
        loss = out.loss
        sync = stage != "train"
        if self.frame_heads():
            self.log(f"{stage}/lm_loss", out.loss, batch_size=len(batch), sync_dist=sync)
        for name, head, weight, targets in (("saliency", self.saliency, self.saliency_weight, "frame_targets"),
                                            ("tag", self.tags, self.tag_weight, "frame_tags")):  # fmt: skip
            if head is None:
                continue
            aux = self._frame_loss(head, out, batch, targets)
            self.log(f"{stage}/{name}_loss", aux, batch_size=len(batch), sync_dist=sync)
            loss = loss + weight * aux
        if self.encoder_tags is not None:
            aux = self._encoder_tag_loss(out, batch)
            self.log(f"{stage}/encoder_tag_loss", aux, batch_size=len(batch), sync_dist=sync)
            loss = loss + self.encoder_tag_weight * aux
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=len(batch), sync_dist=sync)
        if stage == "train":
            self.log("train/video_tokens", out.num_video_tokens.float().mean(), batch_size=len(batch))
            if "trimmed" in out.info:  # a compressor's budget guard (tdc ``max_tokens``) cut tokens: per sample
                self.log("train/trimmed_tokens", float(out.info["trimmed"]) / len(batch), batch_size=len(batch))
            self.log("train/skipped", float(self.skips.skipped), batch_size=len(batch))
        return loss

    def _frame_loss(self, head: FrameSaliencyLoss, out: Any, batch: Any, key: str) -> torch.Tensor:
        targets = getattr(batch, key)
        if targets is None:
            setting = "frame_targets: true" if key == "frame_targets" else "frame_tags: [labels]"
            raise ValueError(f"the {key} loss needs per-frame targets: set data.collator.{setting}")
        hidden = hidden_state(out, self.layers[key], "saliency_layer" if key == "frame_targets" else "tag_layer")
        return head(hidden, batch.input_ids, batch.attention_mask, out.num_video_tokens,
                    batch.frame_mask, targets, out.info.get("token_frames"))  # fmt: skip

    def _encoder_tag_loss(self, out: Any, batch: Any) -> torch.Tensor:
        assert self.encoder_tags is not None
        if batch.frame_tags is None:
            raise ValueError("the encoder_tag loss needs per-frame tags: set data.collator.frame_tags: [labels]")
        features = out.info.get("frame_features")
        if features is None:
            raise ValueError("encoder_tag_weight > 0 needs the model's per-frame encoder features "
                             "(VideoLLM puts them in info['frame_features'])")  # fmt: skip
        return self.encoder_tags(features, batch.frame_mask, batch.frame_tags)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def frame_heads(self) -> dict[str, nn.Module]:
        """The per-frame heads this objective trains beside the model (not part of the exported model)."""
        heads = (("saliency", self.saliency), ("tags", self.tags), ("encoder_tags", self.encoder_tags))
        return {k: m for k, m in heads if m is not None}

    def configure_optimizers(self) -> Any:
        return lightning_optimizers(self.model, self.optim, self.trainer, extra=self.frame_heads())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["vidtempo_skips"] = self.skips.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.skips.load_state_dict(checkpoint.get("vidtempo_skips", {}))


def hidden_state(out: Any, layer: int, key: str) -> torch.Tensor:
    """(B, L', H) hidden state ``layer`` of a forward output (``out.hidden_states``; -1 may also be
    ``out.last_hidden_state``); a clear error naming ``objective.<key>`` when the layer does not exist."""
    states = getattr(out, "hidden_states", None)
    if layer == -1 and states is None:
        return out.last_hidden_state
    if states is None:
        raise ValueError(f"objective.{key}={layer} needs the model's hidden_states (VideoLLM returns them)")
    if not -len(states) <= layer < len(states):
        raise ValueError(
            f"objective.{key}={layer} is out of range: the LLM has {len(states)} hidden states "
            f"(0 = embeddings .. {len(states) - 1} = last block; negative counts from the end)"
        )
    return states[layer]


def llm_hidden_size(model: nn.Module) -> int:
    """Hidden size of a ``VideoLLM``'s LLM (or of a model with a transformers ``config``)."""
    llm = getattr(model, "llm", None)
    if llm is not None and hasattr(llm, "hidden_size"):
        return int(llm.hidden_size)
    config = getattr(model, "config", None)
    size = getattr(getattr(config, "text_config", config), "hidden_size", None)
    if size is None:
        raise ValueError(f"saliency_weight needs the LLM hidden size; {type(model).__name__} exposes none")
    return int(size)

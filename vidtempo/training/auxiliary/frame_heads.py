"""Per-frame heads on the LLM's hidden states at the video positions, as auxiliary losses.

* ``saliency`` (:class:`SaliencyLoss`): "is the moment the question asks about on screen in this frame?"
* ``frame_tags`` (:class:`FrameTagLoss`): "what is on screen (or heard) at this frame?", question-independent.

Both score each frame with a linear head (:class:`FrameSaliencyLoss`) and compare with a per-frame target of
the batch (``batch.targets``) by binary cross-entropy.

A linear head reads the LLM's last hidden state at each video position, and a binary cross-entropy compares
its per-frame scores with annotated intervals (``batch.frame_targets``). Slot 0 is the sample's moment
(``meta["timestamps"]`` of a grounding query, or ``meta["evidence"]``: where the answer to a multiple-choice
question can be seen, as in NExT-GQA); slots 1-5 are the moments the answer options name
(``meta["option_timestamps"]``, e.g. the objects of "which of these appears first?"), and slots 6-10 say
whether option k's moment has begun by the frame ("seen so far", a step per option); slots 11-12 say whether
some / every option's has. Slot 0 is the
saliency objective of Moment-DETR / UniVTG (per-clip "inside the query's window" scores); the option slots
apply the same idea to multiple choice. The loss is added to the next-token loss. It gives every frame a direct gradient towards "find the named thing at this time",
which the digits of a text answer give only weakly. On TempoSynth it is what makes a tiny from-scratch
model ground (docs/benchmarks/synth.md).

A compressor whose tokens do not belong to frames (DaMO's Q-Former queries) is read through
:class:`TokenFrameReadout` (the loss's ``tokens`` and ``frames`` options): a linear map from all the video
positions to per-frame states.

The video tokens must be able to see the question: put the video after it
(``data.collator.video_position: after_text``); otherwise the head cannot know what to look for.

Example:
    >>> import torch
    >>> loss_fn = FrameSaliencyLoss(hidden_size=8)
    >>> hidden = torch.randn(1, 6, 8)                     # (B, L', H): 2 text tokens, 4 video tokens
    >>> ids = torch.tensor([[5, -200, 6]])                # placeholder at position 1
    >>> targets = torch.tensor([[0.0, 1.0, 1.0, 0.0]])    # (B, T) or (B, T, slots): 4 frames, 1 token each
    >>> loss = loss_fn(hidden, ids, torch.ones_like(ids), torch.tensor([4]),
    ...                torch.ones(1, 4, dtype=torch.bool), targets)
    >>> loss.ndim
    0
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from vidtempo.models.interfaces import VideoModel, VideoModelOutput
from vidtempo.models.splicing import video_span_tensors
from vidtempo.training.auxiliary.base import AuxLoss


class FrameSaliencyLoss(nn.Module):
    """BCE between a linear head's per-frame score and per-frame targets.

    Each frame's score is the mean of the head over that frame's tokens: the compressor either gives every
    frame the same number of tokens (``pool``) or reports each token's frame (``tdc``: ``info["token_frames"]``).

    Args:
        hidden_size: the LLM's hidden size.
        slots: the target slots it predicts, one head output each: a count ``n`` (slots ``0..n-1``) or a list
            of slot indices (e.g. ``[0, 11, 12]``: the moment and "some / every option seen" of TempoSynth's
            layout, ``vidtempo.synth.targets``).
        reduction: ``sample`` (each sample's mean over its known (frame, slot) targets, then the mean over
            samples: a question with 9 known slots weighs as much as one with 1) or ``entry`` (the mean over
            every known target of the batch).
        tokens, frames, rank: set ``tokens`` and ``frames`` for video tokens that do not belong to frames: the
            head then reads :class:`TokenFrameReadout`'s per-frame states instead of each frame's own tokens.
    """

    def __init__(
        self, hidden_size: int, slots: int | Sequence[int] = 1, reduction: str = "sample",
        tokens: int | None = None, frames: int | None = None, rank: int = 64,
    ) -> None:  # fmt: skip
        super().__init__()
        if reduction not in ("sample", "entry"):
            raise ValueError(f"reduction must be 'sample' or 'entry', got {reduction!r}")
        self.slots = slot_indices(slots)
        self.reduction = reduction
        # tokens + frames: the tokens do not map to frames (Q-Former queries); a linear readout maps them to frames
        options = readout_options(tokens, frames, rank)
        self.readout = TokenFrameReadout(hidden_size, **options) if options else None
        self.head = nn.Linear(self.readout.rank if self.readout else hidden_size, len(self.slots))

    def _columns(self, available: int) -> list[int] | slice:
        """The target columns this head predicts, of ``available``; all of them when it predicts more
        consecutive slots than there are (a (B, T) target is slot 0 only)."""
        if self.slots == list(range(len(self.slots))):
            return slice(0, len(self.slots))
        if max(self.slots) >= available:
            raise ValueError(f"saliency slot {max(self.slots)} requested, but the targets have {available} slots")
        return self.slots

    def frame_scores(
        self, hidden: torch.Tensor, span: tuple[int, int], num_frames: int, token_frames: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, slots) logits of one row from its video positions ``hidden[start:start + n]`` (n, H), and a (T,)
        mask of the frames that have tokens. ``token_frames`` (n,) gives each token's frame (compressors with
        a varying number of tokens per frame, e.g. TDC's ``info["token_frames"]``); without it every frame
        must have n / T tokens."""
        start, n = span
        if self.readout is not None:
            self.readout.check(num_frames, torch.tensor([n]))
            states = self.readout(hidden[None], torch.tensor([start]), torch.tensor([n]))[0, :num_frames]  # (T, r)
            return self.head(states), torch.full((num_frames,), n > 0, device=states.device)
        per_token = self.head(hidden[start : start + n])  # (n, slots)
        if token_frames is not None:
            if len(token_frames) != n:
                raise ValueError(f"token_frames has {len(token_frames)} entries for {n} video tokens")
            idx = token_frames.to(per_token.device)
            sums = per_token.new_zeros(num_frames, per_token.shape[1]).index_add(0, idx, per_token)
            counts = torch.bincount(idx, minlength=num_frames)[:num_frames]  # (T,)
            return sums / counts.clamp(min=1).unsqueeze(1).to(sums.dtype), counts > 0
        if num_frames == 0 or n % num_frames:
            raise ValueError(
                f"the saliency loss needs the same number of video tokens per frame, got {n} tokens for "
                f"{num_frames} frames; use a compressor with a fixed number of tokens per frame (e.g. pool) "
                "or one that reports info['token_frames'] (e.g. tdc)"
            )
        scores = per_token.reshape(num_frames, n // num_frames, -1).mean(1)  # (T, slots)
        return scores, torch.ones(num_frames, dtype=torch.bool, device=scores.device)

    def forward(
        self,
        hidden: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        num_video_tokens: torch.Tensor,
        frame_mask: torch.Tensor,
        frame_targets: torch.Tensor,
        token_frames: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean BCE over the (frame, slot) pairs that have a target, per ``reduction`` (0 with none, still in
        the graph).

        Shapes: hidden (B, L', H) from ``VideoModel.forward(return_hidden=True)``; input_ids and
        attention_mask (B, L) before splicing; num_video_tokens (B,); frame_mask (B, T); frame_targets
        (B, T, S) (the head reads its ``slots``), or (B, T) for slot 0 only; NaN = unknown;
        token_frames (B, N) each video token's frame, -1 for padding (optional, see ``frame_scores``).
        """
        if frame_targets.ndim == 2:
            frame_targets = frame_targets.unsqueeze(-1)
        device = hidden.device
        targets = frame_targets[..., self._columns(frame_targets.shape[-1])].to(device)  # (B, T, S)
        frame_mask = frame_mask.to(device).bool()
        b, t = frame_mask.shape
        starts, n = video_span_tensors(input_ids, attention_mask, num_video_tokens)  # (B,), (B,)
        starts, n = starts.to(device), n.to(device)
        has_target = ~torch.isnan(targets) & frame_mask[..., None]  # (B, T, S)
        active = (n > 0) & has_target.flatten(1).any(1)  # (B,) rows this loss reads
        if self.readout is not None:
            self.readout.check(t, n)
            scores = self.head(self.readout(hidden, starts, n)[:, :t])  # (B, T, slots)
            covered = (n > 0)[:, None].expand(b, t)  # (B, T): every frame is read from the whole clip
            return self._bce(scores[..., : targets.shape[-1]], targets, has_target & covered[..., None], active)
        if token_frames is not None:
            frame_of = token_frames.to(device).long()  # (B, J): each video token's frame, -1 = padding
            bad = active & ((frame_of >= 0).sum(1) != n)
            problem = "token_frames does not give one frame per video token"
        else:
            frames = frame_mask.sum(1)  # (B,)
            per = torch.div(n, frames.clamp(min=1), rounding_mode="floor").clamp(min=1)  # (B,) tokens per frame
            frame_of = torch.arange(hidden.shape[1], device=device)[None] // per[:, None]  # (B, J = L')
            bad = active & ((frames == 0) | (n % frames.clamp(min=1) != 0))
            problem = ("the saliency loss needs the same number of video tokens per frame; use a compressor with "
                       "a fixed number of tokens per frame (e.g. pool) or one that reports info['token_frames'] "
                       "(e.g. tdc)")  # fmt: skip
        first_bad = int(torch.where(bad.any(), bad.long().argmax(), -1))  # the one host transfer
        if first_bad >= 0:
            raise ValueError(f"sample {first_bad}: {int(n[first_bad])} video tokens for "
                             f"{int(frame_mask[first_bad].sum())} frames: {problem}")  # fmt: skip
        j = torch.arange(frame_of.shape[1], device=device)[None]  # (1, J)
        valid = (j < n[:, None]) & active[:, None] & (frame_of >= 0) & (frame_of < t)  # (B, J)
        pos = (starts[:, None] + j).clamp(max=hidden.shape[1] - 1)  # (B, J) columns in the spliced sequence
        per_token = self.head(hidden)  # (B, L', slots)
        per_token = torch.gather(per_token, 1, pos[..., None].expand(-1, -1, per_token.shape[-1]))  # (B, J, slots)
        dest = torch.where(valid, frame_of, torch.full_like(frame_of, t))  # (B, J): frame t = dropped
        sums = per_token.new_zeros(b, t + 1, per_token.shape[-1])
        sums = sums.scatter_add(1, dest[..., None].expand_as(per_token), per_token * valid[..., None])
        counts = torch.zeros(b, t + 1, device=device).scatter_add(1, dest, valid.float())[:, :t]  # (B, T)
        scores = (sums[:, :t] / counts.clamp(min=1)[..., None].to(sums.dtype))[..., : targets.shape[-1]]
        return self._bce(scores, targets, has_target & (counts > 0)[..., None], active)

    def _bce(
        self, scores: torch.Tensor, targets: torch.Tensor, known: torch.Tensor, active: torch.Tensor
    ) -> torch.Tensor:
        """BCE of (B, T, S) logits against (B, T, S) targets over the ``known`` entries of the ``active`` (B,)
        rows, reduced per ``reduction``."""
        known = known & active[:, None, None]  # (B, T, S)
        bce = nn.functional.binary_cross_entropy_with_logits(scores.float(), targets.nan_to_num(0.0).float(),
                                                             reduction="none")  # fmt: skip
        bce = torch.where(known, bce, torch.zeros_like(bce))
        if self.reduction == "entry":
            return bce.sum() / known.sum().clamp(min=1)
        per_row = bce.flatten(1).sum(1) / known.flatten(1).sum(1).clamp(min=1)  # (B,)
        rows = known.flatten(1).any(1)
        return (per_row * rows).sum() / rows.sum().clamp(min=1)


class TokenFrameReadout(nn.Module):
    """Per-frame states read from a fixed number of video tokens that do not belong to frames (e.g. DaMO's
    Q-Former queries, each of which reads the whole clip). Each token's state is LayerNorm-ed and projected to
    ``rank`` dims; frame f's state is a weighted sum of the N projected tokens, with learned weights ``mix``
    (F, N) that start as linear interpolation (frame f reads the tokens at its place in the sequence: token k
    ~ the k-th part of the clip). A head then scores each frame. With N >= F any per-frame pattern that is
    linear in the tokens can be read (a full N x F linear map of rank-dim states was tried first and did not
    learn even where the tokens were frames). Ours, not DaMO's: the paper has no per-frame loss
    (docs/methods/damo.md).

    Args:
        hidden_size: the LLM's hidden size H. tokens: video tokens per clip N (t_fuseformer: ``num_queries``).
        frames: frame slots F (the collator's ``num_frames``). rank: width r of the per-token projection.

    Example:
        >>> readout = TokenFrameReadout(hidden_size=8, tokens=4, frames=3, rank=5)
        >>> hidden = torch.randn(2, 7, 8)                     # (B, L', H)
        >>> tuple(readout(hidden, torch.tensor([1, 2]), torch.tensor([4, 4])).shape)   # video at 1..4 / 2..5
        (2, 3, 5)
    """

    def __init__(self, hidden_size: int, tokens: int, frames: int, rank: int = 64) -> None:
        super().__init__()
        options = readout_options(tokens, frames, rank)
        assert options is not None
        self.tokens, self.frames, self.rank = options["tokens"], options["frames"], options["rank"]
        self.norm = nn.LayerNorm(hidden_size)
        self.down = nn.Linear(hidden_size, self.rank)
        self.mix = nn.Parameter(_interpolation(self.frames, self.tokens))  # (F, N)

    def check(self, num_frames: int, num_tokens: torch.Tensor) -> None:
        """A clear error when a batch has more frames than ``frames``, or a row with video has other than
        ``tokens`` video tokens (one host transfer)."""
        if num_frames > self.frames:
            raise ValueError(f"the batch has {num_frames} frames, but the token readout was built for "
                             f"frames={self.frames}: set the loss's frames to data.collator.num_frames")  # fmt: skip
        wrong = ((num_tokens != self.tokens) & (num_tokens > 0)).nonzero().flatten().tolist()
        if wrong:
            raise ValueError(f"sample {wrong[0]}: {int(num_tokens[wrong[0]])} video tokens, but the token readout "
                             f"was built for tokens={self.tokens} (the compressor's fixed token count)")  # fmt: skip

    def forward(self, hidden: torch.Tensor, starts: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        """(B, L', H) states, (B,) first video position and (B,) video token count (``tokens``, or 0 for a row
        without video) -> (B, F, rank) frame states (those of a row without video are not read)."""
        device = hidden.device
        j = torch.arange(self.tokens, device=device)[None]  # (1, N)
        pos = (starts.to(device)[:, None] + j).clamp(max=hidden.shape[1] - 1)  # (B, N)
        states = torch.gather(hidden, 1, pos[..., None].expand(-1, -1, hidden.shape[-1]))  # (B, N, H)
        z = self.down(self.norm(states))  # (B, N, r)
        return torch.einsum("fn,bnr->bfr", self.mix.to(z.dtype), z)  # (B, F, r)


def readout_options(tokens: int | None, frames: int | None, rank: int) -> dict[str, int] | None:
    """The :class:`TokenFrameReadout` arguments of a loss's ``tokens`` / ``frames`` / ``rank`` options, None
    without a readout (both None); a clear error for one without the other or a count below 1.

    Example:
        >>> readout_options(16, 16, 64), readout_options(None, None, 64)
        ({'tokens': 16, 'frames': 16, 'rank': 64}, None)
    """
    if tokens is None and frames is None:
        return None
    if tokens is None or frames is None:
        raise ValueError(f"the token readout needs both tokens and frames, got tokens={tokens}, frames={frames}")
    options = {"tokens": int(tokens), "frames": int(frames), "rank": int(rank)}
    for name, value in options.items():
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    return options


def _interpolation(frames: int, tokens: int) -> torch.Tensor:
    """(F, N) linear interpolation weights: frame f starts reading the tokens at its place in the clip,
    f * (N - 1) / (F - 1) (token k ~ the k-th part of the clip; training may move it)."""
    place = torch.linspace(0, tokens - 1, frames) if frames > 1 else torch.zeros(1)  # (F,)
    return torch.clamp(1 - (place[:, None] - torch.arange(tokens)[None]).abs(), min=0)


def slot_indices(slots: int | Sequence[int]) -> list[int]:
    """Slot indices from a count (``0..n-1``) or a list of distinct indices >= 0; a clear error otherwise."""
    if isinstance(slots, int) and not isinstance(slots, bool):
        if slots < 1:
            raise ValueError(f"saliency slots must be >= 1, got {slots}")
        return list(range(slots))
    picked = list(slots) if isinstance(slots, Sequence) and not isinstance(slots, str) else None
    if not picked or not all(isinstance(k, int) and k >= 0 for k in picked) or len(set(picked)) != len(picked):
        raise ValueError(f"saliency slots must be a count >= 1 or a list of distinct slot indices >= 0, got {slots!r}")
    return picked


def hidden_state(out: VideoModelOutput, layer: int, key: str) -> torch.Tensor:
    """(B, L', H) hidden state ``layer`` of a forward output (``out.hidden_states``; -1 may also be
    ``out.last_hidden_state``); a clear error naming the option ``key`` when the layer does not exist."""
    states = out.hidden_states
    if layer == -1 and states is None and out.last_hidden_state is not None:
        return out.last_hidden_state
    if states is None:
        raise ValueError(f"{key}={layer} needs the model's hidden_states (forward(return_hidden=True))")
    if not -len(states) <= layer < len(states):
        raise ValueError(
            f"{key}={layer} is out of range: the LLM has {len(states)} hidden states "
            f"(0 = embeddings .. {len(states) - 1} = last block; negative counts from the end)"
        )
    return states[layer]


class _FrameHeadLoss(AuxLoss):
    """A :class:`FrameSaliencyLoss` head on hidden state ``layer`` at the video positions."""

    requires = frozenset({"hidden_states", "token_frames"})
    capability_hint = ("for video tokens that do not belong to frames (Q-Former queries), set the loss's tokens (the "
                       "compressor's tokens per clip) and frames (data.collator.num_frames): a linear readout then "
                       "maps every video token to the frames")  # fmt: skip

    def __init__(self, weight: float = 1.0, target: str | None = None, slots: int | Sequence[int] | None = None,
                 reduction: str = "sample", layer: int = -1, tokens: int | None = None, frames: int | None = None,
                 rank: int = 64) -> None:  # fmt: skip
        super().__init__(weight, target)
        if slots is not None:
            slot_indices(slots)  # a bad value fails when the recipe is built, not at the first step
        if reduction not in ("sample", "entry"):
            raise ValueError(f"reduction must be 'sample' or 'entry', got {reduction!r}")
        self.slots, self.reduction, self.layer = slots, reduction, int(layer)
        self.readout_options = readout_options(tokens, frames, rank)  # checked when the recipe is built
        if self.readout_options is not None:  # the token readout reads every video token: no token-to-frame map
            self.requires = frozenset({"hidden_states"})  # type: ignore[misc]
        self.scorer: FrameSaliencyLoss | None = None

    def bind(self, model: VideoModel, target_channels: Mapping[str, int]) -> None:
        slots = self.slots if self.slots is not None else target_channels[self.target]
        self.scorer = FrameSaliencyLoss(model.hidden_size, slots=slots, reduction=self.reduction,
                                        **(self.readout_options or {}))  # fmt: skip

    def forward(self, out: VideoModelOutput, batch: Any) -> torch.Tensor:
        assert self.scorer is not None, "bind() was not called"
        hidden = hidden_state(out, self.layer, f"{type(self).__name__} layer")
        return self.scorer(hidden, batch.input_ids, batch.attention_mask, out.num_video_tokens,
                           batch.frame_mask, self.batch_target(batch), out.info.get("token_frames"))  # fmt: skip

    def handover_module(self) -> nn.Module:
        assert self.scorer is not None
        return self.scorer


class SaliencyLoss(_FrameHeadLoss):
    """"Is the moment this question asks about on screen in this frame?" (Moment-DETR / UniVTG-style saliency,
    extended to the moments answer options name). Reads ``batch.targets['frame_targets']`` by default (e.g.
    TempoSynth's ``synth_frame_slots``) and needs the video after the question
    (``data.collator.video_position: after_text``): otherwise its tokens cannot know what to look for.

    Args:
        weight: loss weight. target: the batch target it reads.
        slots: the target slots it predicts (a count or a list of indices; default every channel).
        reduction: ``sample`` (every sample weighs the same) or ``entry`` (every known target weighs the same).
        layer: which hidden state the head reads (0 = embeddings, k = block k's output, -1 = the last).
        tokens, frames, rank: None (each video token belongs to a frame: ``token_frames``), or, for a model
            whose tokens do not (DaMO's Q-Former queries), its fixed video tokens per clip N and the collator's
            frame count F: a linear readout of rank ``rank`` then maps all N tokens to F frames
            (:class:`TokenFrameReadout`), and the loss needs only ``hidden_states``.

    Example:
        >>> SaliencyLoss(weight=1.0, slots=13).requires == frozenset({"hidden_states", "token_frames"})
        True
        >>> sorted(SaliencyLoss(weight=1.0, slots=11, tokens=16, frames=16).requires)
        ['hidden_states']
    """

    default_target = "frame_targets"

    @classmethod
    def check_collator(cls, node: Mapping[str, Any], collator: Mapping[str, Any]) -> str | None:
        problem = super().check_collator(node, collator)
        if problem is None and collator.get("video_position", "keep") != "after_text":
            return ("needs data.collator.video_position: after_text (the video tokens must see the "
                    "question)")  # fmt: skip
        return problem


class FrameTagLoss(_FrameHeadLoss):
    """"What is on screen (or heard) at this frame?": a multi-label head on the LLM's states at the video
    positions, question-independent, so it trains the encoder from the first step. Reads
    ``batch.targets['frame_tags']`` by default (``event_tags`` builder). Arguments as :class:`SaliencyLoss`.

    Example:
        >>> FrameTagLoss(weight=1.0).target
        'frame_tags'
    """

    default_target = "frame_tags"

"""Preference pairs scored in one forward, each video encoded once, the shared prefix computed once.

A DPO step scores prompt + chosen and prompt + rejected under the policy (and the reference). The plain way
runs the two sides as two forwards: the video is encoded twice and the prefix (thousands of video tokens plus
the prompt) runs through the LLM twice, although only the answers (tens of tokens) differ.

:func:`score_pairs` does it in one forward:

* **shared prefix** (output-side pairs: same video, same prompt): one row per pair,
  ``[prefix | chosen answer | rejected answer]``, with a 4-D attention mask in which the rejected answer
  attends to the prefix and to itself (causally) but not to the chosen answer, and position ids that restart
  the rejected answer where the chosen one starts (``pos[P - 1] + 1 + k``: plain positions for ``VideoLLM``;
  for the native Qwen2.5-VL the text positions after the video continue from the largest mRoPE position, the
  same on all three axes). Every hidden state of the rejected answer then equals the one a separate forward
  gives; the last prefix position scores the first token of both answers. The prefix costs one pass instead
  of two, forward and backward. The rows are built for all pairs at once from the (B,) lengths (one host
  read per batch), and the attention runs split for all pairs at once (:class:`SplitSpans`): one causal call
  over the prefixes, one masked call for the answers.
* **fallback** (the videos or prompts differ, e.g. input-side pairs, or an attention backend without custom
  masks): chosen and rejected rows as one batch of 2B rows (one forward, standard padding mask); a video the
  two sides share is still encoded once. The reason is logged once.

The LM head runs only at the scored positions (:mod:`vidtempo.models.label_head`). The returned
:class:`PairLayout` keeps the input embeddings, so the reference forward (adapter off) reuses them when nothing
before the LLM trains (no video re-encoding) and shares its prefix the same way.

Run it through :func:`call_with_hooks` (``DPOModule`` does) so that a model sharded with FSDP2 gathers its
root-level parameters (embeddings, head, projector) as in its own ``forward``.

Example:
    >>> import torch
    >>> from vidtempo.models.build import build_video_llm
    >>> from vidtempo.models.interfaces import VIDEO_TOKEN_INDEX as V
    >>> model = build_video_llm({"_target_": "vidtempo.models.VideoLLM", "vision_encoder": {"_target_": "tiny"},
    ...                          "compressor": {"_target_": "pool", "in_dim": 32}, "llm": {"_target_": "tiny"}})
    >>> video = VideoInputs(frames=torch.rand(1, 2, 3, 32, 32))
    >>> chosen = {"input_ids": torch.tensor([[5, V, 7, 8, 9]]), "attention_mask": torch.ones(1, 5, dtype=torch.long),
    ...           "labels": torch.tensor([[-100, -100, -100, 8, 9]]), "video": video}
    >>> rejected = {**chosen, "input_ids": torch.tensor([[5, V, 7, 9, 8]]), "labels": torch.tensor([[-100, -100, -100, 9, 8]])}
    >>> scores, layout = score_pairs(model, chosen, rejected)
    >>> layout.shared, tuple(scores.chosen_logps.shape), scores.chosen_lengths.tolist()
    (True, (1,), [2])
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vidtempo.data.inputs import VideoInputs
from vidtempo.models.interfaces import IGNORE_INDEX, VIDEO_TOKEN_INDEX
from vidtempo.models.label_head import LabelHead, causal_lm_parts, label_targets, token_logps

log = logging.getLogger(__name__)

SHARING = ("auto", "off")


# ------------------------------------------------------------------------------------------- results
@dataclass
class PairScores:
    """Summed answer log-probs of B pairs, each (B,) float32, their token counts (B,), and the token-mean NLL
    of every chosen-answer token of the batch (scalar; RPO's term)."""

    chosen_logps: torch.Tensor
    rejected_logps: torch.Tensor
    chosen_lengths: torch.Tensor
    rejected_lengths: torch.Tensor
    chosen_nll: torch.Tensor


@dataclass
class PairLayout:
    """What one forward of a pair batch runs: rows, mask, positions and the scored positions.

    Attributes:
        embeds: (R, L, H) input embeddings (R = B shared, 2B otherwise).
        mask: (R, L) padding mask; shared: (B, L) segment of each position (0 prefix, 1 chosen answer,
            2 rejected answer, -1 padding), see :func:`shared_prefix_mask`.
        positions: (R, L) or (3, R, L) position ids.
        rows / positions_scored / targets / groups: (N,) each: the hidden state ``[rows, positions_scored]``
            scores ``targets``; ``groups`` is ``side * B + pair`` (side 0 chosen, 1 rejected).
        pairs: B. shared: whether the prefix is shared. reason: why not (None when shared).
        reusable: the embeddings do not depend on anything that trains or draws dropout (a reference pass of
            the same model may reuse them).
        spans: shared: the split attention's index tensors (:class:`SplitSpans`); None otherwise.
    """

    embeds: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    rows: torch.Tensor
    positions_scored: torch.Tensor
    targets: torch.Tensor
    groups: torch.Tensor
    pairs: int
    shared: bool
    reason: str | None
    reusable: bool
    spans: SplitSpans | None = None


# ------------------------------------------------------------------------------------------- FSDP-safe call
def call_with_hooks(module: nn.Module, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(module, *args, **kwargs)`` run as ``module``'s forward, through ``module.__call__``: its forward
    hooks fire (FSDP2 gathers the root's parameters before and registers its backward hooks after)."""
    module.forward = functools.partial(fn, module)  # type: ignore[method-assign]  # instance attribute
    try:
        return module(*args, **kwargs)
    finally:
        del module.forward


# ------------------------------------------------------------------------------------------- model adapters
def _is_qwen(model: nn.Module) -> bool:
    from vidtempo.models.native.qwen2_5_vl import Qwen25VLVideoModel

    return isinstance(model, Qwen25VLVideoModel)


def supports_pairs(model: nn.Module) -> str | None:
    """None when :func:`score_pairs` can run ``model``, else why not."""
    from vidtempo.models.llms.hf import HFCausalLM
    from vidtempo.models.video_llm import VideoLLM

    if _is_qwen(model):
        return None
    if isinstance(model, VideoLLM) and isinstance(model.llm, HFCausalLM):
        return None
    return f"{type(model).__name__} (llm {type(getattr(model, 'llm', None)).__name__}) has no pair forward"


def _hf_config(model: nn.Module) -> Any:
    return model.hf.config.text_config if _is_qwen(model) else model.llm.model.config


def _attn_impl(model: nn.Module) -> str:
    return str(getattr(_hf_config(model), "_attn_implementation", "sdpa") or "sdpa")


def _text_embedding(model: nn.Module) -> nn.Module:
    return model.hf.get_input_embeddings() if _is_qwen(model) else model.llm.get_input_embeddings()


def _trunk(model: nn.Module, embeds: torch.Tensor, mask: torch.Tensor | None, positions: torch.Tensor,
           **kwargs: Any) -> torch.Tensor:  # fmt: skip
    """(R, L, H) final-norm hidden states of the LLM on the given rows (``kwargs`` reach the attention)."""
    decoder = model.hf.model.language_model if _is_qwen(model) else causal_lm_parts(model.llm.model)[0]
    out = decoder(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False, **kwargs)
    return out.last_hidden_state


def _recomputed(model: nn.Module) -> bool:
    """Whether this forward's LLM blocks will be recomputed in the backward pass (gradient checkpointing).
    The split attention is selected by switching the config's attention implementation for the duration of the
    forward (``_attention_impl``); a recomputation runs after the switch is undone, with the backend's own
    attention and no mask, so a checkpointed forward takes the dense-mask path (the mask is an input the
    checkpoint keeps)."""
    if not torch.is_grad_enabled():
        return False
    decoder = model.hf.model.language_model if _is_qwen(model) else causal_lm_parts(model.llm.model)[0]
    return decoder.training and any(getattr(m, "gradient_checkpointing", False) is True for m in decoder.modules())


def _head(model: nn.Module) -> nn.Module:
    return model.hf.lm_head if _is_qwen(model) else causal_lm_parts(model.llm.model)[1]


def _embedding_path(model: nn.Module) -> list[nn.Module]:
    """Modules that make the input embeddings (video path + token embedding)."""
    if _is_qwen(model):
        return [model.hf.model.visual, model.hf.get_input_embeddings()]
    parts = [getattr(model, p) for p in ("vision_encoder", "audio_encoder", "compressor", "projector")]
    return [p for p in parts if p is not None] + [model.llm.get_input_embeddings()]


def _embeddings_reusable(model: nn.Module) -> bool:
    """Nothing in the embedding path trains or draws dropout: a reference pass sees the same embeddings."""
    for module in _embedding_path(model):
        if any(p.requires_grad for p in module.parameters()):
            return False
        if any(m.training and isinstance(m, nn.Dropout) and m.p > 0 for m in module.modules()):
            return False
    return True


@dataclass
class _Side:
    """One side's spliced rows: embeds (B, L, H), mask (B, L), labels (B, L), positions (B, L) or (K, B, L)."""

    embeds: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor
    positions: torch.Tensor


def _embed_side(model: nn.Module, side: dict[str, Any], video_state: Any = None) -> tuple[_Side, Any]:
    """Splice one side's video into its text: (rows, the encoded video, reusable by a side with the same video)."""
    ids, mask, labels, video = side["input_ids"], side["attention_mask"], side["labels"], side.get("video")
    if _is_qwen(model):
        inputs = model.prepare_inputs(ids, mask, labels, video)
        embeds = _text_embedding(model)(inputs["input_ids"])  # (B, L', H)
        if "pixel_values_videos" in inputs:
            if video_state is None:
                plan = model.trainable
                with torch.set_grad_enabled(torch.is_grad_enabled() and bool(plan.vision_encoder or plan.projector)):
                    feats = model.hf.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"])
                video_state = torch.cat(feats.pooler_output)  # (sum N, H)
            where = (inputs["input_ids"] == model.hf.config.video_token_id).unsqueeze(-1)
            embeds = embeds.masked_scatter(where, video_state.to(embeds.dtype))
        return _Side(embeds, inputs["attention_mask"], inputs["labels"], inputs["position_ids"]), video_state
    if video_state is None and video is not None:
        video_state = model.encode_video(video)
    embeds, out_mask, out_labels, _ = model.splice(ids, mask, video_state, labels)
    positions = torch.arange(embeds.shape[1], device=embeds.device).expand(embeds.shape[0], -1)
    return _Side(embeds, out_mask, out_labels, positions), video_state


# ------------------------------------------------------------------------------------------- sharing decision
def _same_video(chosen: VideoInputs | None, rejected: VideoInputs | None) -> bool:
    if chosen is None or rejected is None:
        return chosen is None and rejected is None
    for name in ("frames", "features", "frame_mask", "timestamps", "audio", "audio_lengths", "clip_index"):
        a, b = getattr(chosen, name), getattr(rejected, name)
        if (a is None) != (b is None) or (a is not None and (a.shape != b.shape or not torch.equal(a, b))):
            return False
    return chosen.grid == rejected.grid


def _first_label(labels: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B,) index of each row's first answer label within its ``lengths`` valid tokens; rows without one (or
    with a label at index 0, which leaves no prompt) get their length."""
    col = torch.arange(labels.shape[1], device=labels.device)  # (L,)
    labelled = (labels != IGNORE_INDEX) & (col < lengths[:, None])  # (B, L)
    first = labelled.int().argmax(1)  # (B,): 0 when none
    return torch.where(first > 0, first, lengths)


def text_prefix_lengths(chosen: dict[str, Any], rejected: dict[str, Any]) -> torch.Tensor:
    """(B,) length of the text prefix each pair's sides would share: the prompt up to the first answer label of
    either side (right-padded ``model_inputs()`` dicts; no check that the prompts agree, no host read).

    Example:
        >>> side = {"input_ids": torch.tensor([[5, 6, 7, 8]]), "attention_mask": torch.ones(1, 4, dtype=torch.long),
        ...         "labels": torch.tensor([[-100, -100, 7, 8]])}
        >>> text_prefix_lengths(side, {**side, "labels": torch.tensor([[-100, -100, -100, 8]])}).tolist()
        [2]
    """
    device = chosen["input_ids"].device
    n_c, n_r = chosen["attention_mask"].sum(1), rejected["attention_mask"].to(device).sum(1)  # (B,)
    return torch.minimum(_first_label(chosen["labels"].to(device), n_c),
                         _first_label(rejected["labels"].to(device), n_r))  # fmt: skip


def _text_prefix(chosen: dict[str, Any], rejected: dict[str, Any]) -> tuple[torch.Tensor | None, str | None]:
    """(B,) length of the shared text prefix of each pair (prompt up to the first answer label), or a reason.
    Computed for all pairs at once; one host read (of the first failing pair) decides."""
    ids_c, ids_r = chosen["input_ids"], rejected["input_ids"]  # (B, Lc), (B, Lr), right-padded
    n_c = chosen["attention_mask"].sum(1)  # (B,)
    n_r = rejected["attention_mask"].to(n_c.device).sum(1)
    ids_r = ids_r.to(ids_c.device)
    p = text_prefix_lengths(chosen, rejected)  # (B,)
    width = min(ids_c.shape[1], ids_r.shape[1])
    col = torch.arange(width, device=ids_c.device)
    same = ((ids_c[:, :width] == ids_r[:, :width]) | (col >= p[:, None])).all(1)  # prompts equal up to p
    differ = (p < 1) | (p >= n_c) | (p >= n_r) | ~same  # (B,)

    def after(ids: torch.Tensor, n: torch.Tensor) -> torch.Tensor:  # a placeholder in [p, n)
        c = torch.arange(ids.shape[1], device=ids.device)
        return ((ids == VIDEO_TOKEN_INDEX) & (c >= p[:, None]) & (c < n[:, None])).any(1)

    late = ~differ & (after(ids_c, n_c) | after(ids_r, n_r))  # (B,)
    code = differ.long() + 2 * late.long()  # 0 shared, 1 prompts differ, 2 placeholder after the prompt
    first = (code > 0).int().argmax()
    pair, why = torch.stack([first, code[first]]).tolist()  # the one host read
    if why == 1:
        return None, f"pair {pair}: chosen and rejected prompts differ"
    if why == 2:
        return None, f"pair {pair}: the video placeholder lies after the prompt"
    return p, None


def sharing_reason(model: nn.Module, chosen: dict[str, Any], rejected: dict[str, Any],
                   sharing: str) -> tuple[torch.Tensor | None, str | None]:  # fmt: skip
    """(text prefix lengths, None) when the pairs can share their prefix, else (None, the reason)."""
    if sharing == "off":
        return None, "prefix_sharing: off"
    impl = _attn_impl(model)
    if impl not in ("sdpa", "eager"):
        return None, f"attention implementation '{impl}' takes no custom 4-D mask (sdpa and eager do)"
    if not _same_video(chosen.get("video"), rejected.get("video")):
        return None, "chosen and rejected sides show different videos (input-side pairs)"
    return _text_prefix(chosen, rejected)


# ------------------------------------------------------------------------------------------- layouts
def _fit(x: torch.Tensor, length: int, value: float | int = 0) -> torch.Tensor:
    """``x`` cut or right-padded to ``length`` along its sequence axis (see :func:`_pad_to`)."""
    dim = 1 if x.dim() == 3 and x.dtype.is_floating_point else x.dim() - 1
    return x.narrow(dim, 0, length) if x.shape[dim] >= length else _pad_to(x, length, value)


def _shared_layout(model: nn.Module, chosen: dict[str, Any], rejected: dict[str, Any],
                   prefix: torch.Tensor) -> PairLayout:  # fmt: skip
    """One row per pair: [prefix | chosen answer | rejected answer] with the shared-prefix mask, built for all
    pairs at once from the (B,) lengths on the device (one host read: the row, prefix and answer maxima)."""
    side, _ = _embed_side(model, chosen)
    device, pairs = side.embeds.device, side.embeds.shape[0]
    r_ids, r_labels = rejected["input_ids"].to(device), rejected["labels"].to(device)  # (B, Lr)
    prefix = prefix.to(device)  # (B,) shared text prefix
    n_c = side.mask.sum(1)  # (B,) spliced chosen row
    answer_r = rejected["attention_mask"].to(device).sum(1) - prefix  # (B,) rejected answer tokens
    prefix_len = n_c - (chosen["attention_mask"].to(device).sum(1) - prefix)  # (B,) spliced prefix
    row_len = n_c + answer_r  # (B,)
    length, prefix_max, answer_max, r_max = torch.stack(
        [row_len.max(), prefix_len.max(), (row_len - prefix_len).max(), answer_r.max()]).tolist()  # fmt: skip
    col = torch.arange(length, device=device)[None]  # (1, L)
    in_c, in_row = col < n_c[:, None], col < row_len[:, None]  # (B, L)
    in_r = in_row & ~in_c
    # the rejected answer: its text after the prefix, embedded once (B, r_max, H), placed after the chosen row
    k = torch.arange(r_max, device=device)[None]  # (1, r_max)
    r_src = (prefix[:, None] + k).clamp(max=r_ids.shape[1] - 1)  # (B, r_max)
    r_emb = _text_embedding(model)(torch.where(k < answer_r[:, None], r_ids.gather(1, r_src), 0).clamp(min=0))
    r_at = (col - n_c[:, None]).clamp(0, r_max - 1)  # (B, L): rejected token k at position n_c + k
    batch = torch.arange(pairs, device=device)[:, None]  # (B, 1)
    embeds = torch.where(in_c[..., None], _fit(side.embeds, length),
                         torch.where(in_r[..., None], r_emb.to(side.embeds.dtype)[batch, r_at], 0))  # fmt: skip
    # positions: the rejected answer restarts after the prefix's last position (plain or the 3 mRoPE axes)
    lead = side.positions.shape[:-2]
    last = (prefix_len - 1).expand(*lead, pairs)[..., None]  # (..., B, 1)
    start = side.positions.gather(-1, last) + 1  # (..., B, 1)
    positions = torch.where(in_c, _fit(side.positions, length),
                            torch.where(in_r, start + (col - n_c[:, None]), 0))  # (..., B, L)  # fmt: skip
    group = torch.where(col < prefix_len[:, None], 0, torch.where(in_c, 1, torch.where(in_r, 2, -1)))  # (B, L)
    # scored tokens: label j is scored by the state at j - 1, the rejected answer's first by the prefix's last
    labels = torch.where(in_c, _fit(side.labels, length, IGNORE_INDEX),
                         torch.where(in_r, r_labels.gather(1, (prefix[:, None] + r_at).clamp(max=r_ids.shape[1] - 1)),
                                     IGNORE_INDEX))  # (B, L)  # fmt: skip
    labels[:, 0] = IGNORE_INDEX  # nothing before the first position scores it
    rows, at = (labels != IGNORE_INDEX).nonzero(as_tuple=True)  # (N,) each, row-major
    first_r = at == n_c[rows]
    return PairLayout(
        embeds=embeds, mask=group, positions=positions, rows=rows,
        positions_scored=torch.where(first_r, prefix_len[rows] - 1, at - 1), targets=labels[rows, at],
        groups=rows + pairs * (at >= n_c[rows]).long(), pairs=pairs, shared=True, reason=None,
        reusable=_embeddings_reusable(model), spans=_split_spans(group, prefix_len, row_len, prefix_max, answer_max),
    )  # fmt: skip


def _pad_to(x: torch.Tensor, length: int, value: float | int = 0) -> torch.Tensor:
    """Right-pad the sequence axis (the last for ids / masks / positions, dim 1 for (B, L, H) embeds)."""
    dim = 1 if x.dim() == 3 and x.dtype.is_floating_point else x.dim() - 1
    missing = length - x.shape[dim]
    if missing == 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x, x.new_full(shape, value)], dim)


def _batched_layout(model: nn.Module, chosen: dict[str, Any], rejected: dict[str, Any], reason: str) -> PairLayout:
    """Chosen and rejected rows as one batch of 2B (standard padding mask); a shared video is encoded once."""
    c_side, state = _embed_side(model, chosen)
    same = _same_video(chosen.get("video"), rejected.get("video"))
    r_side, _ = _embed_side(model, rejected, state if same else None)
    pairs, length = c_side.embeds.shape[0], max(c_side.embeds.shape[1], r_side.embeds.shape[1])
    embeds = torch.cat([_pad_to(c_side.embeds, length), _pad_to(r_side.embeds, length)])
    mask = torch.cat([_pad_to(c_side.mask, length), _pad_to(r_side.mask, length)])
    labels = torch.cat([_pad_to(c_side.labels, length, IGNORE_INDEX), _pad_to(r_side.labels, length, IGNORE_INDEX)])
    positions = torch.cat([_pad_to(c_side.positions, length), _pad_to(r_side.positions, length)], -2)
    rows, pos, targets = label_targets(labels)
    return PairLayout(embeds=embeds, mask=mask, positions=positions, rows=rows, positions_scored=pos,
                      targets=targets, groups=rows, pairs=pairs, shared=False, reason=reason,
                      reusable=_embeddings_reusable(model))  # fmt: skip


def shared_prefix_mask(group: torch.Tensor) -> torch.Tensor:
    """(B, L) segments (0 prefix, 1 / 2 answers, -1 padding) -> (B, 1, L, L) bool: query i sees key j when
    j <= i, j is not padding and j is in the prefix or in i's own segment. No row is fully masked (padding
    queries see the prefix), so no NaN."""
    length = group.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=group.device).tril()
    keys, queries = group[:, None, :], group[:, :, None]  # (B, 1, L), (B, L, 1)
    return (causal & (keys >= 0) & ((keys == 0) | (keys == queries)))[:, None]


def _dense_mask(model: nn.Module, group: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The shared-prefix mask as an additive float (B, 1, L, L), made once per forward (sdpa would convert a
    bool mask in every layer): -inf for sdpa (its own conversion), the dtype's minimum for eager."""
    fill = torch.finfo(dtype).min if _attn_impl(model) == "eager" else float("-inf")
    allowed = shared_prefix_mask(group)
    return torch.zeros(allowed.shape, dtype=dtype, device=group.device).masked_fill(~allowed, fill)


# ------------------------------------------------------------------------------------------- split attention
SPLIT_ATTENTION = "vidtempo_shared_prefix"  # the name registered with transformers' AttentionInterface


@dataclass
class SplitSpans:
    """Index tensors of a shared layout's split attention, made once per layout (every layer and the reference
    pass reuse them). B pairs, L row length, P = ``prefix_max`` (longest prefix), A = ``answer_max`` (longest
    chosen + rejected answer span).

    Attributes:
        answer_index: (B, A) row position of each answer query (past a row's answers: clamped, unused).
        answer_mask: (B, 1, A, L) bool: the prefix and the query's own answer, causally (past a row's answers:
            key 0 only, so no query row is fully masked).
        out_index: (B, L) where each position's output lies in ``[prefix outputs (P) | answer outputs (A) | 0]``.
    """

    prefix_max: int
    answer_max: int
    answer_index: torch.Tensor
    answer_mask: torch.Tensor
    out_index: torch.Tensor


def _split_spans(group: torch.Tensor, prefix_len: torch.Tensor, row_len: torch.Tensor, prefix_max: int,
                 answer_max: int) -> SplitSpans:  # fmt: skip
    """The split attention's indices from the (B, L) segments and the (B,) prefix / row lengths."""
    length = group.shape[1]
    col = torch.arange(length, device=group.device)  # (L,)
    query = prefix_len[:, None] + torch.arange(answer_max, device=group.device)  # (B, A)
    valid = query < row_len[:, None]  # (B, A)
    query = query.clamp(max=length - 1)
    seg_q, seg_k = group.gather(1, query)[:, :, None], group[:, None, :]  # (B, A, 1), (B, 1, L)
    allowed = (col <= query[:, :, None]) & (seg_k >= 0) & ((seg_k == 0) | (seg_k == seg_q))  # (B, A, L)
    allowed = torch.where(valid[:, :, None], allowed, col == 0)
    out = torch.where(col < prefix_len[:, None], col,
                      torch.where(col < row_len[:, None], prefix_max + col - prefix_len[:, None],
                                  prefix_max + answer_max))  # (B, L)  # fmt: skip
    return SplitSpans(prefix_max, answer_max, query, allowed[:, None], out)


def _spans_of(group: torch.Tensor) -> SplitSpans:
    """The split attention's indices of a shared layout given by its (B, L) segments alone (one host read)."""
    prefix_len, row_len = (group == 0).sum(1), (group >= 0).sum(1)  # (B,)
    prefix_max, answer_max = torch.stack([prefix_len.max(), (row_len - prefix_len).max()]).tolist()
    return _split_spans(group, prefix_len, row_len, prefix_max, answer_max)


def _split_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                     **kwargs: Any) -> tuple[torch.Tensor, None]:  # fmt: skip
    """Shared-prefix attention of all pairs at once, without a dense mask: the prefix queries of every row
    attend causally to the first P positions (the causal kernel, as in SFT; a row whose prefix is shorter than
    P discards its outputs past its prefix), and the answer queries, gathered to (B, A), attend to their row
    through the small (B, 1, A, L) mask. query (B, H, L, d), key / value (B, H_kv, L, d) -> (B, L, H, d);
    padding positions get zeros."""
    spans: SplitSpans = kwargs["vidtempo_spans"]
    batch, heads, _, dim = query.shape
    kv_heads, p, a = key.shape[1], spans.prefix_max, spans.answer_max
    n_rep = heads // kv_heads  # grouped-query attention: each key/value head serves n_rep query heads
    sdpa = torch.nn.functional.scaled_dot_product_attention
    head = sdpa(query[:, :, :p], key[:, :, :p], value[:, :, :p], dropout_p=dropout, is_causal=True, scale=scaling,
                enable_gqa=n_rep > 1)  # (B, H, P, d)  # fmt: skip
    rows = torch.arange(batch, device=query.device)[:, None]  # (B, 1)
    answers = query.transpose(1, 2)[rows, spans.answer_index]  # (B, A, H, d)
    # the n_rep query heads of a key/value head side by side along the query axis: no repeated K / V copy
    answers = answers.transpose(1, 2).reshape(batch, kv_heads, n_rep * a, dim)
    mask = spans.answer_mask.expand(batch, n_rep, a, -1).reshape(batch, 1, n_rep * a, -1)
    tail = sdpa(answers, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling)  # (B, H_kv, n_rep A, d)
    both = torch.cat([head, tail.reshape(batch, heads, a, dim), head.new_zeros(batch, heads, 1, dim)], 2)
    return both.transpose(1, 2)[rows, spans.out_index], None  # (B, L, H, d)


def _register_split_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(SPLIT_ATTENTION, _split_attention)


@contextlib.contextmanager
def _attention_impl(config: Any, name: str) -> Iterator[None]:
    """Temporarily run ``config``'s attention layers with the registered implementation ``name``."""
    before = config._attn_implementation_internal
    config._attn_implementation_internal = name
    try:
        yield
    finally:
        config._attn_implementation_internal = before


# ------------------------------------------------------------------------------------------- scoring
def pair_layout(model: nn.Module, chosen: dict[str, Any], rejected: dict[str, Any],
                sharing: str = "auto") -> PairLayout:  # fmt: skip
    """The rows of one forward over B pairs (chosen / rejected given as ``model_inputs()`` dicts)."""
    if sharing not in SHARING:
        raise ValueError(f"prefix_sharing must be one of {', '.join(SHARING)}, got '{sharing}'")
    prefix, reason = sharing_reason(model, chosen, rejected, sharing)
    if prefix is not None:
        return _shared_layout(model, chosen, rejected, prefix)
    assert reason is not None
    return _batched_layout(model, chosen, rejected, reason)


def score_layout(model: nn.Module, layout: PairLayout, head: LabelHead | None = None,
                 attention: str = "split") -> PairScores:  # fmt: skip
    """Run the LLM on a layout and sum the answer log-probs per pair and side. A shared layout runs its
    attention ``split`` (the prefix with the causal kernel, the answers with a small mask; the default) or
    through one dense (B, 1, L, L) ``mask`` (the backend's own attention; for comparison)."""
    if not layout.shared:
        hidden = _trunk(model, layout.embeds, layout.mask, layout.positions)
    elif attention == "mask" or _recomputed(model):
        hidden = _trunk(model, layout.embeds, _dense_mask(model, layout.mask, layout.embeds.dtype), layout.positions)
    else:
        _register_split_attention()
        with _attention_impl(_hf_config(model), SPLIT_ATTENTION):
            spans = layout.spans if layout.spans is not None else _spans_of(layout.mask)
            hidden = _trunk(model, layout.embeds, None, layout.positions, vidtempo_spans=spans)
    groups = 2 * layout.pairs
    logps = token_logps(hidden[layout.rows, layout.positions_scored], _head(model), layout.targets, head,
                        layout.groups, groups)  # fmt: skip
    sums = logps.new_zeros(groups).index_add(0, layout.groups, logps)  # (2B,)
    counts = torch.bincount(layout.groups, minlength=groups)  # (2B,)
    b = layout.pairs
    chosen_tokens = counts[:b].sum()
    nll = -sums[:b].sum() / chosen_tokens.clamp(min=1).to(sums.dtype)
    return PairScores(sums[:b], sums[b:], counts[:b], counts[b:], nll)


def score_pairs(
    model: nn.Module,
    chosen: dict[str, Any],
    rejected: dict[str, Any],
    head: LabelHead | None = None,
    sharing: str = "auto",
    reuse: PairLayout | None = None,
) -> tuple[PairScores, PairLayout]:
    """Scores of B pairs in one forward (see the module docstring); ``reuse`` = an earlier layout of the same
    batch whose (detached) embeddings this pass takes instead of embedding again (the reference pass).

    Returns:
        ``(PairScores, PairLayout)``.
    """
    if reuse is not None and reuse.reusable:
        layout = PairLayout(**{**reuse.__dict__, "embeds": reuse.embeds.detach()})
    else:
        layout = pair_layout(model, chosen, rejected, sharing)
    return score_layout(model, layout, head), layout

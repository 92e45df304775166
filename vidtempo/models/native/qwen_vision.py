"""The Qwen2.5-VL vision tower without per-video / per-frame loops (#27 item 7).

transformers' tower builds its rotary position ids and window index video by video (one host sync and a
handful of ops per video), and outside FlashAttention its attention runs one call per frame (full-attention
blocks) or per window (windowed blocks). Two subclasses, swapped in by :func:`batch_vision_tower` (the weights,
state-dict keys and LoRA targets stay the same):

* :class:`BatchedIndexVision` computes the position ids, window index and window boundaries once per distinct
  grid (with transformers' own functions, on a one-video grid) and lays them out for every video with index
  arithmetic (:func:`vision_indices`);
* :class:`GroupedVisionAttention` gathers the attention segments of equal length into one batch and makes one
  attention call per distinct length (one when every frame has the same size; a few for the edge windows).

Both give what the per-video code gives (tests compare them); FlashAttention keeps transformers' varlen path.

Example:
    >>> from vidtempo.models.native.qwen2_5_vl import tiny_qwen2_5_vl
    >>> visual = batch_vision_tower(tiny_qwen2_5_vl().model.model.visual)
    >>> type(visual).__name__, type(visual.blocks[0].attn).__name__
    ('BatchedIndexVision', 'GroupedVisionAttention')
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
    ALL_ATTENTION_FUNCTIONS,
    Qwen2_5_VisionTransformerPretrainedModel,
    Qwen2_5_VLVisionAttention,
    apply_rotary_pos_emb_vision,
    eager_attention_forward,
)
from transformers.utils.generic import is_flash_attention_requested
from transformers.vision_utils import get_vision_position_ids, get_vision_window_index

from vidtempo.models.native.qwen_batch import segment_index

_PRECOMPUTED = ("position_ids", "window_index", "cu_window_seqlens")


def vision_indices(grid_thw: torch.Tensor, merge: int, window_size: int, patch_size: int) -> dict[str, torch.Tensor]:
    """(V, 3) patch grids -> the tower's ``position_ids`` (P, 2), ``window_index`` (P / merge^2,) and
    ``cu_window_seqlens`` (W + 1,) int32 for all videos, equal to transformers' per-video loops.

    Each distinct grid is computed once (host syncs per distinct grid, not per video); the videos' copies are
    gathered and offset by the tokens before them.
    """
    device, unit = grid_thw.device, merge * merge
    distinct, inverse = torch.unique(grid_thw, dim=0, return_inverse=True)
    pos_bank, win_bank, cu_bank = [], [], []
    for grid in distinct.tolist():  # one iteration per distinct resolution
        one = torch.tensor([grid], device=device)
        pos_bank.append(get_vision_position_ids(one, merge))
        win, cu = get_vision_window_index(one, merge, window_size, patch_size)
        win_bank.append(win.to(device))
        cu_bank.append(cu[1:].to(device=device, dtype=torch.long))  # window ends inside the video
    patches = distinct.prod(-1)  # (G,) patches of one video per distinct grid
    ends = torch.tensor([len(c) for c in cu_bank], device=device)  # (G,) windows per video
    counts = torch.bincount(inverse, minlength=len(distinct))
    totals = torch.stack([(counts * patches).sum(), (counts * ends).sum()]).tolist()  # the one host sync
    p_v, m_v, w_v = patches[inverse], patches[inverse] // unit, ends[inverse]  # per video
    p_off, m_off = p_v.cumsum(0) - p_v, m_v.cumsum(0) - m_v  # tokens before each video

    def starts(sizes: torch.Tensor) -> torch.Tensor:
        return (sizes.cumsum(0) - sizes)[inverse]  # each video's grid's place in the bank

    pos_idx = segment_index(starts(patches), p_v, totals[0])
    win_idx = segment_index(starts(patches // unit), m_v, totals[0] // unit)
    cu_idx = segment_index(starts(ends), w_v, totals[1])
    position_ids = torch.cat(pos_bank)[pos_idx]
    window_index = torch.cat(win_bank)[win_idx] + torch.repeat_interleave(m_off, m_v, output_size=totals[0] // unit)
    cu = torch.cat(cu_bank)[cu_idx] + torch.repeat_interleave(p_off, w_v, output_size=totals[1])
    cu = torch.cat([cu.new_zeros(1), cu]).to(torch.int32)
    return {"position_ids": position_ids, "window_index": window_index,
            "cu_window_seqlens": torch.unique_consecutive(cu)}  # fmt: skip


class BatchedIndexVision(Qwen2_5_VisionTransformerPretrainedModel):
    """The tower with its position ids and window index laid out for all videos at once (see the module)."""

    def forward(self, hidden_states: torch.Tensor, grid_thw: torch.Tensor, **kwargs: Any) -> Any:
        if not all(kwargs.get(k) is not None for k in _PRECOMPUTED):
            indices = vision_indices(grid_thw, self.spatial_merge_size, self.window_size, self.patch_size)
            kwargs = {**indices, **{k: v for k, v in kwargs.items() if v is not None}}
        return super().forward(hidden_states, grid_thw, **kwargs)


def attention_groups(cu_seqlens: torch.Tensor) -> list[tuple[int, torch.Tensor | None]]:
    """Segment boundaries (S + 1,) -> [(length, token index of all segments of that length or None = all
    tokens in order)], one entry per distinct length. One host sync per call.

    Example:
        >>> [(n, None if i is None else i.tolist()) for n, i in attention_groups(torch.tensor([0, 2, 3, 5]))]
        [(1, [2]), (2, [0, 1, 3, 4])]
    """
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    distinct = [int(n) for n in torch.unique(lengths).tolist() if n > 0]
    if len(distinct) == 1:
        return [(distinct[0], None)]
    out = []
    for n in distinct:  # one iteration per distinct segment length
        first = cu_seqlens[:-1][lengths == n].long()
        out.append((n, (first[:, None] + torch.arange(n, device=first.device)).flatten()))
    return out


class GroupedVisionAttention(Qwen2_5_VLVisionAttention):
    """Vision attention with equal-length segments batched into one attention call (see the module)."""

    def forward(self, hidden_states: torch.Tensor, cu_seqlens: torch.Tensor,
                position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None, max_seqlen: int | None = None,
                **kwargs: Any) -> torch.Tensor:  # fmt: skip
        if is_flash_attention_requested(self.config):  # varlen kernels take the boundaries directly
            return super().forward(hidden_states, cu_seqlens, position_embeddings, max_seqlen, **kwargs)
        tokens = hidden_states.shape[0]
        q, k, v = self.qkv(hidden_states).reshape(tokens, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
        assert position_embeddings is not None
        q, k = apply_rotary_pos_emb_vision(q, k, *position_embeddings)  # (N, heads, d) each
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        out: torch.Tensor | None = None
        for length, index in attention_groups(cu_seqlens):
            qs, ks, vs = (x if index is None else x[index] for x in (q, k, v))  # (S * n, heads, d)
            qs, ks, vs = (x.reshape(-1, length, self.num_heads, self.head_dim).transpose(1, 2) for x in (qs, ks, vs))
            res, _ = attention(self, qs, ks, vs, attention_mask=None, scaling=self.scaling, is_causal=False,
                               dropout=0.0 if not self.training else self.attention_dropout, **kwargs)  # fmt: skip
            res = res.reshape(-1, self.num_heads * self.head_dim)  # (S * n, D): (S, n, heads, d) from the interface
            if index is None:
                out = res
            else:
                base = res.new_zeros(tokens, res.shape[-1]) if out is None else out
                out = base.index_copy(0, index, res)
        assert out is not None
        return self.proj(out)


def batch_vision_tower(visual: nn.Module) -> nn.Module:
    """Swap the tower's class and its attention modules' classes to the batched ones, in place; returns it."""
    if isinstance(visual, Qwen2_5_VisionTransformerPretrainedModel) and not isinstance(visual, BatchedIndexVision):
        visual.__class__ = BatchedIndexVision
    for module in visual.modules():
        if type(module) is Qwen2_5_VLVisionAttention:
            module.__class__ = GroupedVisionAttention
    return visual

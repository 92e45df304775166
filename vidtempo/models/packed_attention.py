"""Padding-free packing of a spliced batch: several samples per LLM row, attention confined to each sample.

A batch of B right-padded rows (the spliced ``(B, L', H)`` embeddings, as ``VideoLLM.splice`` or the native
model's input preparation give them) is repacked before the LLM runs:

* **masked path** (CPU, and CUDA without FlashAttention): the samples are placed first-fit-decreasing into rows
  of at most ``max_tokens`` tokens; each row gets a 4-D ``(R, 1, L_p, L_p)`` additive mask that is causal
  *within* each sample and blocks every other sample (block-diagonal causal), and per-sample position ids
  (0, 1, ... from each sample's start; for Qwen2.5-VL the sample's own 3-D mRoPE positions). The padded tail
  of a row attends only to itself (no NaN rows). Exact: every sample sees what it sees unpacked.
* **varlen path** (CUDA, ``attn_implementation: flash_attention_2`` and ``flash_attn`` importable): all samples
  in one row with no padding at all, ``position_ids`` restarting at each sample and ``cu_seq_lens_q/k`` +
  ``max_length_q/k`` handed to transformers' FlashAttention integration (``flash_attn_varlen_func``). Selected
  by availability (:func:`varlen_available`); it has not run on a GPU yet.

The loss is the unpacked loss: each token's target is the next token *of its own sample* (computed before
packing), averaged over the same label positions. Logits and hidden states are scattered back to the
``(B, L', ...)`` layout of the unpacked forward, so ``VideoModelOutput`` keeps its shapes.

Example:
    >>> import torch
    >>> plan = plan_rows([5, 2, 3], max_tokens=6)         # first-fit decreasing
    >>> plan.rows, plan.width
    ([[0], [1, 2]], 5)
    >>> block_causal_mask(torch.tensor([[0, 0, 1, 1, -1]]), torch.float32)[0, 0].eq(0).int().tolist()[:3]
    [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0]]
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vidtempo.models.interfaces import IGNORE_INDEX
from vidtempo.utils.bins import first_fit_decreasing

__all__ = ["PackPlan", "PackedOutput", "block_causal_mask", "packed_forward", "plan_rows", "varlen_available"]


@dataclass
class PackPlan:
    """Which samples share a row, in order, and the padded row width (the longest row; varlen: the total)."""

    rows: list[list[int]]
    width: int


def plan_rows(lengths: list[int], max_tokens: int | None, *, key: str = "data.packing.max_tokens") -> PackPlan:
    """First-fit-decreasing placement of samples of ``lengths`` tokens into rows of at most ``max_tokens``
    (None: one row holding every sample, the varlen layout). Samples keep their batch order within a row.

    Raises:
        ValueError: a sample longer than ``max_tokens`` (naming ``key``).
    """
    if max_tokens is None:
        return PackPlan([list(range(len(lengths)))], sum(lengths))
    if max_tokens < 1:
        raise ValueError(f"{key} must be >= 1, got {max_tokens}")
    for i, n in enumerate(lengths):
        if n > max_tokens:
            raise ValueError(f"sample {i} has {n} tokens after inserting the video, more than {key}={max_tokens}: "
                             f"raise {key} to at least model.max_length (data.overlong caps every sample there)")  # fmt: skip
    rows = first_fit_decreasing(range(len(lengths)), lengths, max_tokens)
    return PackPlan([sorted(r) for r in rows], max((sum(lengths[i] for i in r) for r in rows), default=0))


def varlen_available(device: torch.device, attn_implementation: str | None) -> bool:
    """Whether the FlashAttention varlen path runs: a CUDA device, ``flash_attention_2`` and ``flash_attn``."""
    return (device.type == "cuda" and attn_implementation == "flash_attention_2"
            and importlib.util.find_spec("flash_attn") is not None)  # fmt: skip


def block_causal_mask(seq_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(R, L) sample id of each slot (-1 = padding) -> (R, 1, L, L) mask: query i may attend key j when both are
    in the same sample and j <= i. ``dtype=torch.bool``: True where allowed (what transformers' sdpa path reads);
    a float dtype: an additive mask, 0 where allowed and the dtype's most negative value elsewhere (eager).
    Padding slots attend to the padding before them (never to a sample), so no row of the mask is empty."""
    length = seq_ids.shape[1]
    same = seq_ids[:, :, None] == seq_ids[:, None, :]  # (R, L, L)
    causal = torch.ones(length, length, dtype=torch.bool, device=seq_ids.device).tril()
    allowed = same & causal
    if dtype == torch.bool:
        return allowed[:, None]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=seq_ids.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


@dataclass
class PackedOutput:
    """The packed forward's results in the unpacked layout: loss (scalar or None), logits (B, L', V), hidden
    states (each (B, L', H)) or None, and the rows and width the LLM ran on."""

    loss: torch.Tensor | None
    logits: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None
    plan: PackPlan


def packed_forward(
    llm: Callable[..., Any],
    embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor | None,
    max_tokens: int,
    *,
    position_ids: torch.Tensor | None = None,
    attn_implementation: str | None = None,
    return_hidden: bool = False,
    varlen: bool | None = None,
    **llm_kwargs: Any,
) -> PackedOutput:
    """Run ``llm`` on the batch packed into rows (see the module docstring) and unpack its outputs.

    Args:
        llm: called as ``llm(inputs_embeds=..., attention_mask=..., position_ids=..., **llm_kwargs)``; returns
            an object with ``logits`` (and ``hidden_states`` with ``output_hidden_states=True``).
        embeds: (B, L', H) right-padded spliced embeddings; attention_mask (B, L') (a prefix of each row).
        labels: (B, L') or None; the loss is the mean next-token cross-entropy over non-ignored labels.
        max_tokens: most tokens per row on the masked path (``data.packing.max_tokens``).
        position_ids: per-sample positions in the unpacked layout: None = 0, 1, ... per row; (3, B, L') = the
            sample's mRoPE positions (Qwen2.5-VL: the packed rows get (4, R, L_p), text positions first).
        attn_implementation: the LLM's attention implementation (selects the varlen path, see
            :func:`varlen_available`).
        return_hidden: also unpack every hidden state.
        varlen: force the one-row varlen layout (True) or the masked rows (False); None = by availability. The
            varlen layout with sdpa / eager attention relies on transformers deriving the block-causal mask from
            the restarting ``position_ids`` (how the CPU tests exercise the GPU path's layout).

    Returns:
        :class:`PackedOutput`.
    """
    b, length, hidden = embeds.shape
    device = embeds.device
    lengths = attention_mask.sum(1)  # (B,)
    varlen = varlen_available(device, attn_implementation) if varlen is None else varlen
    sizes = lengths.tolist()  # the one host transfer: the packing is planned on the host
    plan = plan_rows(sizes, None if varlen else max_tokens)
    r, width = len(plan.rows), max(plan.width, 1)
    row_of, offset_of = (x.to(device) for x in _row_offsets(plan, sizes))
    t = torch.arange(length, device=device)[None]  # (1, L')
    valid = t < lengths[:, None]  # (B, L')
    dump = r * width
    dest = torch.where(valid, row_of[:, None] * width + offset_of[:, None] + t, dump)  # (B, L') packed slot
    source = torch.arange(b * length, device=device).view(b, length)
    gather = torch.full((dump + 1,), b * length, dtype=torch.long, device=device)
    gather = gather.scatter(0, dest.flatten(), source.flatten())[:dump]  # (R*L_p,) unpacked source or pad
    seq = torch.full((dump + 1,), -1, dtype=torch.long, device=device)
    seq = seq.scatter(0, dest.flatten(), torch.arange(b, device=device)[:, None].expand(b, length).flatten())
    seq = seq[:dump].view(r, width)  # (R, L_p) sample of each slot, -1 = padding

    def pack(x: torch.Tensor, fill: float | int) -> torch.Tensor:  # (B, L', ...) -> (R, L_p, ...)
        flat = x.reshape(b * length, *x.shape[2:])
        bank = torch.cat([flat, flat.new_full((1, *x.shape[2:]), fill)])
        return bank[gather].view(r, width, *x.shape[2:])

    packed_embeds = pack(embeds, 0)
    text_pos = pack(t.expand(b, length), 0)  # (R, L_p) position within the sample
    if position_ids is None:
        pos = text_pos
    else:  # (3, B, L') mRoPE -> (4, R, L_p): text positions first (transformers' packed-sequence convention)
        pos = torch.cat([text_pos[None], torch.stack([pack(p, 0) for p in position_ids])])
    call: dict[str, Any] = {"use_cache": False, **llm_kwargs}  # training: no KV cache (it also hides packing from HF)
    if return_hidden:
        call["output_hidden_states"] = True
    if varlen:
        cu = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)]).to(torch.int32)
        longest = max(sizes)
        call.update(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=longest, max_length_k=longest)
        out = llm(inputs_embeds=packed_embeds, attention_mask=None, position_ids=pos, **call)
    else:
        eager = attn_implementation == "eager"  # additive float mask; sdpa and flex read a boolean one
        mask = block_causal_mask(seq, packed_embeds.dtype if eager else torch.bool)
        out = llm(inputs_embeds=packed_embeds, attention_mask=mask, position_ids=pos, **call)
    loss = None
    if labels is not None:  # each token's target: the next token of its own sample
        targets = torch.cat([labels[:, 1:], labels.new_full((b, 1), IGNORE_INDEX)], dim=1)  # (B, L')
        packed_targets = pack(targets, IGNORE_INDEX)  # (R, L_p)
        loss = nn.functional.cross_entropy(out.logits.flatten(0, 1).float(), packed_targets.flatten(),
                                           ignore_index=IGNORE_INDEX)  # fmt: skip
    unpack_index = dest.flatten()  # (B*L',): packed slot of each unpacked position, dump = zero row

    def unpack(x: torch.Tensor) -> torch.Tensor:  # (R, L_p, ...) -> (B, L', ...)
        flat = x.reshape(r * width, *x.shape[2:])
        return torch.cat([flat, flat.new_zeros(1, *x.shape[2:])])[unpack_index].view(b, length, *x.shape[2:])

    states = tuple(unpack(h) for h in out.hidden_states) if return_hidden else None
    return PackedOutput(loss, unpack(out.logits), states, plan)


def _row_offsets(plan: PackPlan, sizes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) row and (B,) start column of every sample in the packed rows."""
    row_of, offset_of = [0] * len(sizes), [0] * len(sizes)
    for row, members in enumerate(plan.rows):
        used = 0
        for i in members:
            row_of[i], offset_of[i] = row, used
            used += sizes[i]
    return torch.tensor(row_of, dtype=torch.long), torch.tensor(offset_of, dtype=torch.long)

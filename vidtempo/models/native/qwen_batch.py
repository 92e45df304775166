"""A whole batch -> Qwen2.5-VL inputs without a per-sample loop (#27 item 7).

Clips that share a frame count share a resolution (a batch's frames all have one H x W; only the clip pixel
budget, which depends on the number of frames, changes the resized size), so they are resized, normalised,
padded to whole temporal patches and patchified together, one group per distinct frame count
(:func:`clip_groups`). The ``<|video_pad|>`` spans are spliced into the token rows
(:func:`splice_video_tokens`) and the 3-D mRoPE positions computed (:func:`mrope_positions`) with tensor
arithmetic over the batch: the Python iterations and host syncs per step do not grow with the batch size.

The results equal the per-sample path they replaced: the patches of the Qwen2-VL video processor, the token
rows of a per-row splice and the positions of ``Qwen2_5_VLModel.get_rope_index`` (tests compare them).

Example:
    >>> import torch
    >>> out = splice_video_tokens(torch.tensor([[7, -200, 8]]), torch.ones(1, 3, dtype=torch.long), None,
    ...                           torch.tensor([2]), torch.tensor([True]), ids=(512, 516, 513), pad_id=0)
    >>> out.input_ids.tolist(), out.lengths.tolist()
    ([[7, 512, 516, 516, 513, 8]], [6])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vidtempo.models.interfaces import IGNORE_INDEX, VIDEO_TOKEN_INDEX


# ------------------------------------------------------------------------------------------ index helpers
def segment_index(starts: torch.Tensor, lengths: torch.Tensor, total: int) -> torch.Tensor:
    """(S,) segment starts and lengths -> (total,) = cat(arange(start, start + length) for each segment).

    ``total`` = ``lengths.sum()``, known to the caller (no host sync here).

    Example:
        >>> segment_index(torch.tensor([10, 0]), torch.tensor([2, 3]), 5).tolist()
        [10, 11, 0, 1, 2]
    """
    ends = lengths.cumsum(0)
    local = torch.arange(total, device=lengths.device) - torch.repeat_interleave(ends - lengths, lengths,
                                                                                 output_size=total)  # fmt: skip
    return torch.repeat_interleave(starts, lengths, output_size=total) + local


def clip_groups(counts: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    """(B,) valid-frame counts -> [(count, (k,) rows with that count, ascending)] for counts > 0, by count.

    One host sync for the distinct counts and one per group (not per row).

    Example:
        >>> [(c, r.tolist()) for c, r in clip_groups(torch.tensor([4, 0, 3, 4]))]
        [(3, [2]), (4, [0, 3])]
    """
    distinct = torch.unique(counts).tolist()
    return [(int(c), (counts == c).nonzero().flatten()) for c in distinct if c > 0]


# ------------------------------------------------------------------------------------------ tokens
@dataclass
class SplicedTokens:
    """Token rows with each video's span in place: input_ids / attention_mask / labels (B, L'), the start of
    each row's content (B,) (non-zero for left padding), its length (B,), the first video token's offset in
    the row's content (B,) and the video tokens per row (B,) (0 = no video)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor | None
    offsets: torch.Tensor
    lengths: torch.Tensor
    video_start: torch.Tensor
    video_tokens: torch.Tensor


def splice_video_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor | None,
    tokens: torch.Tensor,
    has_video: torch.Tensor,
    *,
    ids: tuple[int, int, int],
    pad_id: int,
    padding_side: str = "right",
    max_length: int | None = None,
) -> SplicedTokens:
    """Replace each row's ``VIDEO_TOKEN_INDEX`` placeholder by ``start + pad x n + end`` for the whole batch.

    input_ids / attention_mask / labels (B, L); tokens (B,) merged video tokens of each row's video; has_video
    (B,) bool; ``ids`` = (vision_start, video_pad, vision_end). Padding inside the input rows is dropped and the
    rows re-padded on ``padding_side`` with ``pad_id``; labels over the span are ``IGNORE_INDEX``. A row
    without a video loses its placeholder. Errors name the first bad row: two placeholders, frames without a
    placeholder, or a spliced length over ``max_length``. One host sync per call.
    """
    batch, length = input_ids.shape
    device = input_ids.device
    keep = attention_mask.bool()
    is_ph = (input_ids == VIDEO_TOKEN_INDEX) & keep
    count = is_ph.sum(1)
    has_video = has_video.to(device)
    with_video = (count > 0) & has_video
    drop = (count > 0) & ~has_video
    n = torch.where(with_video, tokens.to(device), 0)  # (B,)
    cpos = keep.long().cumsum(1) - 1  # (B, L) index of each kept token among its row's kept tokens
    ph = torch.where(is_ph, cpos, length).amin(1)  # (B,) the placeholder's index (L: none)
    shift = torch.where(with_video, n + 1, torch.where(drop, -1, 0))  # (B,) length change at the placeholder
    lengths = keep.sum(1) + shift
    problems = torch.stack([count > 1, has_video & (count == 0),
                            lengths > max_length if max_length is not None else torch.zeros_like(drop)])  # fmt: skip
    summary = torch.cat([problems.any(0).long(), lengths.amax().reshape(1)]).tolist()  # the one host sync
    longest = int(summary[-1]) if batch else 0
    if any(summary[:-1]):
        _raise_first(problems, count, lengths, max_length)
    offsets = (longest - lengths) if padding_side == "left" else torch.zeros_like(lengths)
    # each kept text token's place in the output row; the rest go to a dump column dropped afterwards
    dest = cpos + torch.where(cpos > ph[:, None], shift[:, None], 0) + offsets[:, None]
    text = keep & ~is_ph
    dest = torch.where(text, dest, longest)
    out_ids = input_ids.new_full((batch, longest + 1), pad_id).scatter_(1, dest, input_ids)[:, :longest]
    out_labels = None
    if labels is not None:
        out_labels = torch.full((batch, longest + 1), IGNORE_INDEX, dtype=input_ids.dtype, device=device)
        out_labels = out_labels.scatter_(1, dest, labels.to(device, input_ids.dtype))[:, :longest]
    pos = torch.arange(longest, device=device)[None] - offsets[:, None]  # (B, L') position inside the content
    rel = pos - ph[:, None]  # 0 = vision_start, 1..n = video pads, n + 1 = vision_end
    span = with_video[:, None] & (rel >= 0) & (rel <= n[:, None] + 1)
    start, pad, end = ids
    fill = torch.where(rel == 0, start, torch.where(rel == n[:, None] + 1, end, pad))
    out_ids = torch.where(span, fill.to(out_ids.dtype), out_ids)
    mask = ((pos >= 0) & (pos < lengths[:, None])).to(input_ids.dtype)
    return SplicedTokens(out_ids, mask, out_labels, offsets, lengths, torch.where(with_video, ph + 1, 0), n)


def _raise_first(problems: torch.Tensor, count: torch.Tensor, lengths: torch.Tensor, max_length: int | None) -> None:
    """The error of the first bad row (checks in the per-row order: placeholders, frames, length)."""
    row = int(problems.any(0).nonzero()[0])
    kind = int(problems[:, row].nonzero()[0])
    if kind == 0:
        raise ValueError(f"sample {row} has {int(count[row])} video placeholders; one video per sample is supported")
    if kind == 1:
        raise ValueError(f"sample {row} has video frames but no video placeholder in its prompt")
    raise ValueError(
        f"sample {row}: {int(lengths[row])} tokens after inserting the video exceed max_length={max_length}; "
        "sample fewer frames, lower model.max_pixels / total_pixels or raise model.max_length"
    )


# ------------------------------------------------------------------------------------------ positions
def mrope_positions(spliced: SplicedTokens, grid: torch.Tensor, interval: torch.Tensor, merge: int) -> torch.Tensor:
    """(3, B, L') temporal / height / width positions of ``get_rope_index`` for rows with at most one video.

    grid (B, 3) each row's (t, h, w) patch grid (any value for rows without a video); interval (B,) float32
    ``tokens_per_second * second_per_grid`` of each row's video. Text counts up by one; the video's tokens sit
    at ``start + (floor(i_t * interval), i_h, i_w)`` on the merged grid, and the text after it resumes at
    ``start + max(h, w) / merge``. Padding positions are 0.
    """
    ids = spliced.input_ids
    device = ids.device
    pos = torch.arange(ids.shape[1], device=device)[None] - spliced.offsets[:, None]  # (B, L')
    start, n = spliced.video_start[:, None], spliced.video_tokens[:, None]
    gh, gw = (grid[:, 1] // merge)[:, None].to(device), (grid[:, 2] // merge)[:, None].to(device)
    k = (pos - start).clamp(min=0)  # index inside the video span
    plane = (gh * gw).clamp(min=1)
    t_pos = start + (k // plane * interval[:, None].to(device)).long()
    h_pos = start + (k // gw.clamp(min=1)) % gh.clamp(min=1)
    w_pos = start + k % gw.clamp(min=1)
    inside = (pos >= start) & (pos < start + n) & (n > 0)
    after = (pos >= start + n) & (n > 0)
    text = torch.where(after, pos - n + torch.maximum(gh, gw), pos)
    out = torch.stack([torch.where(inside, t_pos, text), torch.where(inside, h_pos, text),
                       torch.where(inside, w_pos, text)])  # fmt: skip
    return torch.where(spliced.attention_mask.bool()[None], out, 0).to(ids.dtype)

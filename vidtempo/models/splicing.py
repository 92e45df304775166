"""Vectorised splice: each row's single ``VIDEO_TOKEN_INDEX`` placeholder replaced by its valid video tokens,
for the whole batch at once (no per-sample Python loop, one host transfer per call for the output length and
the input checks).

Every text token of a row gets its destination in the spliced row (its rank among the row's kept tokens,
shifted by the video tokens when it follows the placeholder); every valid video token the placeholder's rank
plus its own rank among the row's valid video tokens. One gather from ``[text tokens; video tokens; zero row]``
then builds the (B, L', H) embeddings, and the same index builds the labels (video positions and padding are
``IGNORE_INDEX``).

Example:
    >>> import torch
    >>> text = torch.arange(8.0).view(2, 4, 1)                 # (B, L, H=1) text embeddings
    >>> ids = torch.tensor([[5, -200, 7, 0], [-200, 6, 7, 8]])
    >>> mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    >>> video = torch.full((2, 3, 1), -1.0)                    # (B, N=3, H) video tokens
    >>> vmask = torch.tensor([[True, True, False], [True, False, False]])
    >>> out = splice_rows(text, ids, mask, video, vmask)
    >>> out.embeds[..., 0].tolist(), out.mask.tolist(), out.num_video.tolist()
    ([[0.0, -1.0, -1.0, 2.0], [-1.0, 5.0, 6.0, 7.0]], [[1, 1, 1, 1], [1, 1, 1, 1]], [2, 1])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vidtempo.models.interfaces import IGNORE_INDEX, VIDEO_TOKEN_INDEX

__all__ = ["SplicedRows", "splice_rows", "video_span_tensors"]


@dataclass
class SplicedRows:
    """The spliced batch.

    Attributes:
        embeds: (B, L', H) token embeddings, padding rows zero.
        mask: (B, L') long attention mask.
        labels: (B, L') long or None (video positions and padding ``IGNORE_INDEX``).
        num_video: (B,) video tokens inserted per row.
        lengths: (B,) tokens per spliced row (before padding).
    """

    embeds: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor | None
    num_video: torch.Tensor
    lengths: torch.Tensor


def splice_rows(
    text: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    video: torch.Tensor | None,
    video_mask: torch.Tensor | None,
    labels: torch.Tensor | None = None,
    padding_side: str = "right",
    max_length: int | None = None,
) -> SplicedRows:
    """Replace each row's placeholder with its valid video tokens (vectorised over the batch).

    Args:
        text: (B, L, H) embeddings of ``input_ids`` (the placeholder's row is replaced, its value unused).
        input_ids: (B, L) with at most one ``VIDEO_TOKEN_INDEX`` among each row's kept tokens.
        attention_mask: (B, L); tokens where it is 0 are dropped (any padding side).
        video: (B, N, H) video tokens, or None (then placeholders are dropped: a text-only batch).
        video_mask: (B, N) bool, True = valid token (any positions; their order is kept).
        labels: (B, L) or None.
        padding_side: ``right`` or ``left`` padding of the output.
        max_length: longest spliced row allowed (``ValueError`` naming the sample beyond it).

    Returns:
        :class:`SplicedRows`.
    """
    b, length, hidden = text.shape
    device = text.device
    keep = attention_mask.bool()  # (B, L)
    is_ph = (input_ids == VIDEO_TOKEN_INDEX) & keep  # (B, L)
    n_ph = is_ph.sum(1)  # (B,)
    if video is not None and video_mask is not None:
        n_valid = video_mask.sum(1)  # (B,)
    else:
        n_valid = torch.zeros(b, dtype=torch.long, device=device)
    has_ph = n_ph > 0
    n_video = torch.where(has_ph, n_valid, torch.zeros_like(n_valid))  # (B,)
    lengths = keep.sum(1) - has_ph.long() + n_video  # (B,)

    # one host transfer: the output length and the first offending row of each check (-1 = none)
    def first(cond: torch.Tensor) -> torch.Tensor:
        return torch.where(cond.any(), cond.long().argmax(), torch.full_like(cond.long().argmax(), -1))

    checks = [lengths.max() if b else lengths.new_zeros(()), lengths.argmax() if b else lengths.new_zeros(()),
              first(n_ph > 1), first(~has_ph & (n_valid > 0))]  # fmt: skip
    longest, longest_row, multi, orphan = torch.stack(checks).tolist()
    if multi >= 0:
        raise ValueError(f"sample {multi} has {int(n_ph[multi])} video placeholders; one video per sample is supported")
    if orphan >= 0:
        raise ValueError(f"sample {orphan} has video frames but no video placeholder in its prompt")
    if max_length is not None and longest > max_length:
        raise ValueError(
            f"sample {longest_row}: {longest} tokens after inserting the video exceed max_length={max_length}; "
            "sample fewer frames, use a stronger compressor or raise model.max_length"
        )
    rows = torch.arange(b, device=device)[:, None]  # (B, 1)
    offset = (longest - lengths) if padding_side == "left" else torch.zeros_like(lengths)  # (B,)
    rank = keep.long().cumsum(1) - 1  # (B, L) rank among the kept tokens (placeholder included)
    after = (is_ph.long().cumsum(1) > 0) & ~is_ph  # (B, L) text after the placeholder
    pos = rank + after.long() * (n_video - 1)[:, None] + offset[:, None]  # (B, L) destination column
    dump = b * longest  # one slot past the output: where dropped sources go
    text_dest = torch.where(keep & ~is_ph, rows * longest + pos, torch.full_like(pos, dump))  # (B, L)
    sources = [text.reshape(b * length, hidden)]
    dests = [text_dest.flatten()]
    label_sources = [labels.reshape(-1)] if labels is not None else []
    if video is not None and video_mask is not None:
        n = video.shape[1]
        ph_rank = (rank * is_ph.long()).sum(1)  # (B,) the placeholder's column before the offset
        vrank = video_mask.long().cumsum(1) - 1  # (B, N)
        vpos = rows * longest + offset[:, None] + ph_rank[:, None] + vrank
        vdest = torch.where(video_mask.bool() & has_ph[:, None], vpos, torch.full_like(vpos, dump))  # (B, N)
        sources.append(video.reshape(b * n, hidden).to(text.dtype))
        dests.append(vdest.flatten())
        if labels is not None:
            label_sources.append(labels.new_full((b * n,), IGNORE_INDEX))
    dest = torch.cat(dests)  # (S,) destination of every source row
    zero_row = dest.numel()
    index = torch.full((dump + 1,), zero_row, dtype=torch.long, device=device)
    index = index.scatter(0, dest, torch.arange(zero_row, device=device))[:dump]  # (B*L',) source per slot
    bank = torch.cat([*sources, text.new_zeros(1, hidden)])  # (S + 1, H)
    embeds = bank[index].view(b, longest, hidden)
    cols = torch.arange(longest, device=device)[None, :]
    mask = ((cols >= offset[:, None]) & (cols < (offset + lengths)[:, None])).long()  # (B, L')
    out_labels = None
    if labels is not None:
        label_bank = torch.cat([*label_sources, labels.new_full((1,), IGNORE_INDEX)])
        out_labels = label_bank[index].view(b, longest)
    return SplicedRows(embeds, mask, out_labels, n_video, lengths)


def video_span_tensors(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, num_video_tokens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) start and (B,) length of each row's video tokens in the right-padded spliced sequence (0, 0 for a
    row without video); vectorised, no host transfer.

    Example:
        >>> ids = torch.tensor([[1, 2, VIDEO_TOKEN_INDEX, 3], [0, VIDEO_TOKEN_INDEX, 4, 0]])
        >>> starts, lengths = video_span_tensors(ids, torch.tensor([[1, 1, 1, 1], [0, 1, 1, 0]]), torch.tensor([5, 2]))
        >>> starts.tolist(), lengths.tolist()
        ([2, 0], [5, 2])
    """
    keep = attention_mask.bool()
    is_ph = (input_ids == VIDEO_TOKEN_INDEX) & keep
    rank = keep.long().cumsum(1) - 1
    has = is_ph.any(1) & (num_video_tokens.to(input_ids.device) > 0)
    starts = torch.where(has, (rank * is_ph.long()).sum(1), torch.zeros_like(rank[:, 0]))
    lengths = torch.where(has, num_video_tokens.to(input_ids.device).long(), torch.zeros_like(starts))
    return starts, lengths

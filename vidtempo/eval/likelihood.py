"""Multiple choice by option likelihood (``eval.mcq_scoring: likelihood``): every option is scored as the
answer under the item's condition, and the most likely one is logged as the item's answer, with the
log-probability of every option (:mod:`vidtempo.eval.choice_scoring` builds and scores the options).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from vidtempo.eval.benchmarks import EvalItem
from vidtempo.eval.choice_scoring import choice_batches, pick_options
from vidtempo.eval.controls import ControlledCollator
from vidtempo.eval.generation_log import item_row, permutation_meta, skipped_rows
from vidtempo.eval.settings import EvalSettings
from vidtempo.models.interfaces import VideoModel


def likelihood_rows(
    model: VideoModel,
    tokenizer: Any,
    items: list[EvalItem],
    condition: str,
    benchmark: str,
    settings: EvalSettings,
    device: Any,
) -> Iterable[list[dict[str, Any]]]:
    """Rows of multiple-choice ``items`` answered by option likelihood (:mod:`vidtempo.eval.choice_scoring`),
    one list per batch of ``settings.batch_size`` items; undecodable clips give skipped rows."""
    from vidtempo.data.collate import VideoCollator

    if not items:
        return
    # an item's options are rows of one clip, stacked and encoded once (batch.clip_index); items never share
    # (the time control permutes each item's clip its own way)
    inner = VideoCollator(tokenizer, **{**settings.collator, "generation": False, "share_clips": True,
                                        "share_by": "sample"})  # fmt: skip
    collate = ControlledCollator(inner, condition, settings.control_seed)
    by_id = {i.id: i for i in items}
    for chunk, batch in choice_batches(items, settings.mcq_answer, collate, settings.batch_size):
        picked = pick_options(model, chunk, batch.to(device), settings.mcq_answer) if len(batch) else {}
        perms = {i: permutation_meta(meta) for i, meta in zip(batch.ids, batch.meta)}
        rows = [item_row(item, condition, benchmark, picked[item.id]["raw"],
                         extra={**perms.get(item.id, {}), "option_logprobs": picked[item.id]["option_logprobs"]})
                for item in chunk if item.id in picked]  # fmt: skip
        yield rows + skipped_rows(batch.skipped, by_id, condition, benchmark, {})

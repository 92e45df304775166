"""Fill the feature cache of a recipe (``vidtempo cache RECIPE``): decode every clip of the recipe's
datasets once, run the frozen vision encoder, store the features. Existing entries are kept; a changed
video or encoder has a new key, so stale entries are recomputed, never reused."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vidtempo.config.instantiate import instantiate
from vidtempo.data.collate import VideoCollator, as_conversation
from vidtempo.data.errors import VideoDecodeError
from vidtempo.data.feature_cache import CachedFeatures, FeatureCache, encoder_fingerprint
from vidtempo.models.interfaces import VideoModel


@dataclass
class CacheStats:
    computed: int = 0
    reused: int = 0
    failed: int = 0


def collator_settings(data: dict[str, Any]) -> dict[str, Any]:
    settings = dict(data.get("collator") or {})
    if not settings.get("feature_cache"):
        raise ValueError("the recipe's data.collator.feature_cache is not set: nothing to cache into")
    return settings


def fill_cache(plain: dict[str, Any], recipe: str, model: VideoModel, tokenizer: Any, progress: bool = True) -> CacheStats:
    """Compute the missing entries for every dataset of every stage of a resolved recipe."""
    from rich.progress import Progress

    from vidtempo.training.build import expand_stages

    encoder = model.vision_encoder.eval()
    encoder_id = encoder_fingerprint(encoder)
    stats = CacheStats()
    with Progress(disable=not progress) as bar:
        for stage in expand_stages(plain):
            settings = collator_settings(stage["data"])
            collator = VideoCollator(tokenizer, **{**settings, "encoder_id": encoder_id})
            cache = FeatureCache(settings["feature_cache"])
            for split in ("train", "val"):
                if not stage["data"].get(split):
                    continue
                dataset = instantiate(stage["data"][split], key=f"data.{split}", recipe=recipe)
                task = bar.add_task(f"cache {stage['name']}/{split}", total=len(dataset))
                seen: set[str] = set()
                for i in range(len(dataset)):
                    _fill_one(as_conversation(dataset[i]), collator, cache, encoder, seen, stats)
                    bar.advance(task)
    return stats


def _fill_one(sample: Any, collator: VideoCollator, cache: FeatureCache, encoder: Any, seen: set[str],
              stats: CacheStats) -> None:  # fmt: skip
    if sample.video is None:
        return
    key = collator.cache_key(sample)
    if key in seen:
        return
    seen.add(key)
    if cache.get(key) is not None:
        stats.reused += 1
        return
    try:
        clip = collator.decode(sample)
    except VideoDecodeError:
        stats.failed += 1  # the training run reports it with the path and reason
        return
    with torch.no_grad():
        feats, grid = encoder.encode(clip.frames.to(next(encoder.parameters()).device))  # (T, P, D)
    cache.put(key, CachedFeatures(feats.cpu(), clip.timestamps, grid))
    stats.computed += 1

"""Batches of similar length (``data.group_by_length``): the sampler, its sharding, and the data module."""

from __future__ import annotations

import numpy as np
import pytest

from vidtempo.config.errors import RecipeError
from vidtempo.data.length_grouping import LengthGroupedBatchSampler, padding_fraction
from vidtempo.training.schema import check_data

RNG = np.random.default_rng(0)
LENGTHS = [int(n) for n in RNG.choice([50, 52, 88, 90, 93], size=203)]  # grounding-like and four-option-like


def test_every_item_once_in_fixed_batches_of_similar_length() -> None:
    sampler = LengthGroupedBatchSampler(LENGTHS, batch_size=8, window=4, seed=1)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(203)) and len(batches) == len(sampler)
    assert sum(len(b) < 8 for b in batches) <= -(-203 // 32)  # only a window's last batch is short
    shuffled = [list(range(k, min(k + 8, 203))) for k in range(0, 203, 8)]  # the items are in random order
    grouped, drawn = padding_fraction(LENGTHS, batches), padding_fraction(LENGTHS, shuffled)
    assert grouped < 0.1 < 0.15 < drawn and grouped < drawn / 2
    assert list(LengthGroupedBatchSampler(LENGTHS, 8, 4, seed=1)) == batches  # deterministic per seed and epoch
    sampler.set_epoch(1)
    assert list(sampler) != batches and sorted(i for b in sampler for i in b) == list(range(203))
    in_order = list(LengthGroupedBatchSampler(LENGTHS, 8, 4, shuffle=False))
    assert in_order[0] == sorted(range(32), key=lambda i: -LENGTHS[i])[:8]  # the first window's 8 longest


def test_ranks_get_the_same_count_disjoint_items_and_neighbouring_lengths() -> None:
    ranks = [list(LengthGroupedBatchSampler(LENGTHS, 8, 4, seed=2, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(LengthGroupedBatchSampler(LENGTHS, 8, 4, num_replicas=2))
    seen = [{i for b in r for i in b} for r in ranks]
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) >= 203 - 2 * 8  # at most the last group dropped
    # a step's two batches come from one sorted window: their longest items are neighbours
    gaps = [abs(max(LENGTHS[i] for i in a) - max(LENGTHS[i] for i in b)) for a, b in zip(*ranks, strict=True)]
    # lengths 50, 52 | 88, 90, 93: a step pairs a short batch with a long one only where its window's sorted
    # items cross from long to short (at most once per window of 4 steps)
    assert sum(g > 5 for g in gaps) <= -(-203 // 64)


def test_bad_arguments_and_recipe_values_name_the_key() -> None:
    with pytest.raises(ValueError, match=r"data.group_by_length: window and data.batch_size must be >= 1"):
        LengthGroupedBatchSampler(LENGTHS, 8, 0)
    with pytest.raises(ValueError, match="rank must be in"):
        LengthGroupedBatchSampler(LENGTHS, 8, 2, num_replicas=2, rank=2)
    for bad in (-1, "many", 1.5):
        with pytest.raises(RecipeError, match=r"data\.group_by_length"):
            check_data({"group_by_length": bad}, "data", "r.yaml")


def test_the_data_module_draws_length_grouped_batches(tmp_path) -> None:
    from vidtempo.data.packing import sample_lengths
    from vidtempo.models.tokenizers import tiny_tokenizer
    from vidtempo.training.build import build_datamodule

    data = {"train": {"_target_": "synth", "root": str(tmp_path / "synth"), "split": "train", "num_videos": 6,
                      "max_duration": 6, "tasks": ["grounding", "order"]},
            "collator": {"num_frames": 4, "frame_size": 32, "max_length": 256, "video_tokens": 4},
            "batch_size": 4}  # fmt: skip
    tok = tiny_tokenizer()
    for other, name in (({"group_by_video": 2}, "group_by_video"), ({"packing": {"max_tokens": 512}}, "packing")):
        with pytest.raises(RecipeError, match=rf"key 'data.group_by_length'.*data.{name}"):
            build_datamodule({**data, **other, "group_by_length": 4}, tok, "r.yaml")
    module = build_datamodule({**data, "group_by_length": 8}, tok, "r.yaml")
    module.setup("fit")
    loader = module.train_dataloader()
    assert isinstance(loader.batch_sampler, LengthGroupedBatchSampler)
    lengths = sample_lengths(module.train_set, module.collator)
    batches = list(loader.batch_sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(module.train_set)))
    shuffled = [list(range(k, k + 4)) for k in range(0, len(lengths) - 3, 4)]
    assert padding_fraction(lengths, batches) <= padding_fraction(lengths, shuffled)
    collated = [module.collator([module.train_set[i] for i in b]) for b in batches[:2]]
    for b, batch in zip(batches, collated, strict=False):  # each row's tokens: its item's measured length
        assert batch.input_ids.shape[1] + 4 >= max(lengths[i] for i in b)

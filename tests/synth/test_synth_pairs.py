"""TempoSynth preference pairs (``vidtempo.synth.pairs``) on the general perturbations of ``vidtempo.data.perturb``."""

from __future__ import annotations

import numpy as np

from vidtempo.data.perturb import parse_dense_caption, perturb_caption, perturb_indices, rng_for
from vidtempo.registry import get_registry
from vidtempo.synth.pairs import SynthPreferencePairs


def test_alias_names_the_pair_dataset() -> None:
    assert get_registry("dataset").resolve("synth_preference") is SynthPreferencePairs


def test_caption_perturbations_keep_slots_and_move_sentences() -> None:
    events = parse_dense_caption("0 - 1 seconds, a\n1 - 2 seconds, b\n2 - 3 seconds, c\n3 - 4 seconds, d", "t")
    order = perturb_indices(len(events), "reverse", 2, np.random.default_rng(0))
    assert order == [2, 3, 0, 1]
    assert perturb_caption(events, "reverse", order).splitlines() == [
        "0 - 1 seconds, c", "1 - 2 seconds, d", "2 - 3 seconds, a", "3 - 4 seconds, b"]  # fmt: skip
    assert perturb_caption(events, "drop", [1, 3]) == "1 - 2 seconds, b\n3 - 4 seconds, d"
    assert rng_for(1, "v", "drop").integers(1 << 30) == rng_for(1, "v", "drop").integers(1 << 30)


def test_pairs_over_a_small_set(small_set) -> None:
    pairs = SynthPreferencePairs(str(small_set.root), split="train", magnitudes=[2], limit=2)
    assert len(pairs) > 0 and {p.meta["magnitude"] for p in pairs} == {2}
    for p in pairs:
        assert p.meta["domain"] == "caption" and p.rejected != p.chosen and p.rejected_video is None

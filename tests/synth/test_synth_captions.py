"""SynthCaptions: TempoSynth (video, caption) pairs carry each video's events for per-frame tag targets."""

from __future__ import annotations

import json
from pathlib import Path

from vidtempo.synth.captions import SynthCaptions
from vidtempo.synth.generate import Manifest


def test_pairs_carry_the_same_events_as_the_conversations(small_set: Manifest) -> None:
    pairs = SynthCaptions(str(small_set.root), split="train")
    records = [json.loads(line) for line in small_set.annotation_path("train", "conversations").read_text().splitlines()]
    events = {Path(r["video"]).stem: r["events"] for r in records}
    assert len(pairs) == len(events) > 0
    for pair in pairs.samples:
        assert pair.meta["events"] == events[Path(pair.video).stem]
    assert SynthCaptions(str(small_set.root), split="train", events=False).samples[0].meta == {}

"""Saliency targets on real TempoSynth samples agree with the generator's event script."""

from __future__ import annotations

from pathlib import Path

from vidtempo.data.collate import VideoCollator
from vidtempo.synth.dataset import SynthConversations


def test_collator_targets_agree_with_the_synth_script(small_set, tokenizer):
    """Real TempoSynth grounding samples: the target is 1 exactly where the named object is on screen."""
    samples = SynthConversations(str(small_set.root), "train", tasks=["grounding"]).samples[:4]
    col = VideoCollator(tokenizer, num_frames=8, frame_size=32, frame_targets=True, video_position="after_text")
    batch = col(samples)
    scripts = small_set.scripts()
    for i, s in enumerate(samples):
        name = s.messages[0]["content"].split("When is the ")[1].split(" visible")[0]
        obj = next(o for o in scripts[Path(s.video).stem].objects if o.name == name)
        expected = [float(obj.visible(t)) for t in batch.timestamps[i][batch.frame_mask[i]].tolist()]
        assert batch.frame_targets[i][batch.frame_mask[i]].tolist() == expected
    assert VideoCollator(tokenizer, num_frames=8, frame_size=32)(samples).frame_targets is None

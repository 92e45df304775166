"""Saliency targets on real TempoSynth samples agree with the generator's event script."""

from __future__ import annotations

from pathlib import Path

from vidtempo.data.collate import VideoCollator
from vidtempo.data.targets import EventTags
from vidtempo.synth.dataset import SynthConversations
from vidtempo.synth.targets import SynthFrameSlots


def test_collator_targets_agree_with_the_synth_script(small_set, tokenizer):
    """Real TempoSynth grounding samples: the target is 1 exactly where the named object is on screen."""
    samples = SynthConversations(str(small_set.root), "train", tasks=["grounding"]).samples[:4]
    col = VideoCollator(tokenizer, num_frames=8, frame_size=32, targets={"frame_targets": {"_target_": "synth_frame_slots"}},
                        video_position="after_text")  # fmt: skip
    batch = col(samples)
    scripts = small_set.scripts()
    for i, s in enumerate(samples):
        name = s.messages[0]["content"].split("When is the ")[1].split(" visible")[0]
        obj = next(o for o in scripts[Path(s.video).stem].objects if o.name == name)
        expected = [float(obj.visible(t)) for t in batch.timestamps[i][batch.frame_mask[i]].tolist()]
        assert batch.targets["frame_targets"][i, :, 0][batch.frame_mask[i]].tolist() == expected
    assert VideoCollator(tokenizer, num_frames=8, frame_size=32)(samples).targets == {}


def test_option_targets_follow_the_objects_the_options_name(small_set, tokenizer):
    """An ordering item: slot k is 1 exactly where the object of option k is on screen; slot 0 (the evidence)
    is the answer's object."""
    samples = SynthConversations(str(small_set.root), "train", tasks=["order", "count"]).samples
    order = next(s for s in samples if s.meta["task"] == "order")
    count = next(s for s in samples if s.meta["task"] == "count")
    assert "option_timestamps" not in count.meta  # numbers name no moment
    batch = VideoCollator(tokenizer, num_frames=8, frame_size=32,
                          targets={"frame_targets": SynthFrameSlots()})([order, count])  # fmt: skip
    objects = {f"the {o.name}": o for o in small_set.scripts()[Path(order.video).stem].objects}
    options = [line[3:] for line in order.messages[0]["content"].splitlines() if line[:3] in ("A. ", "B. ", "C. ", "D. ")]
    times = batch.timestamps[0].tolist()
    for k, text in enumerate(options, start=1):
        assert batch.targets["frame_targets"][0, :, k].tolist() == [float(objects[text].visible(t)) for t in times]
    answer = 1 + "ABCD".index(order.messages[1]["content"].strip())
    assert batch.targets["frame_targets"][0, :, 0].tolist() == batch.targets["frame_targets"][0, :, answer].tolist()  # the evidence
    assert batch.targets["frame_targets"][1].isnan().all()


def test_tags_mark_every_object_on_screen(small_set, tokenizer):
    """Every TempoSynth record carries its video's objects; tags are the per-frame answer key."""
    from vidtempo.synth.script import OBJECT_COLORS, SHAPES

    labels = [f"{c} {s}" for c in OBJECT_COLORS for s in SHAPES]
    samples = SynthConversations(str(small_set.root), "train").samples[:6]
    batch = VideoCollator(tokenizer, num_frames=8, frame_size=32, targets={"frame_tags": EventTags(labels)})(samples)
    scripts = small_set.scripts()
    for i, s in enumerate(samples):
        for k, t in enumerate(batch.timestamps[i].tolist()):
            on = {o.name for o in scripts[Path(s.video).stem].visible_objects(t)}
            assert {labels[c] for c in range(len(labels)) if batch.targets["frame_tags"][i, k, c] == 1.0} == on

"""Training-side options of ``SynthConversations``: option-text answers and extra questions per video."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from vidtempo.eval.parsing import parse_choice
from vidtempo.synth.annotate import LETTERS, MCQ_SUFFIX, MCQ_TEXT_SUFFIX, extra_mcq
from vidtempo.synth.dataset import SynthConversations, text_answer
from vidtempo.synth.generate import Manifest


@pytest.fixture
def own_set(small_set: Manifest, tmp_path: Path) -> Path:
    """A private copy of the annotations (extra questions are written next to them) with the shared videos."""
    root = tmp_path / "set"
    shutil.copytree(small_set.root, root, ignore=shutil.ignore_patterns("*.mp4"))
    return root


def test_text_answers_name_the_right_option_and_the_scorer_maps_them_back(small_set: Manifest) -> None:
    letters = SynthConversations(str(small_set.root), "train")
    texts = SynthConversations(str(small_set.root), "train", mcq_answers="text")
    assert len(letters) == len(texts)
    mcq = 0
    for a, b in zip(letters, texts):
        if a.meta["task"] not in ("order", "count", "audio_visual", "after_cut"):
            assert a.messages == b.messages  # grounding and captions are untouched
            continue
        mcq += 1
        q_letter, q_text = a.messages[0]["content"], b.messages[0]["content"]
        assert q_letter.endswith(MCQ_SUFFIX) and q_text.endswith(MCQ_TEXT_SUFFIX)
        assert q_letter.removesuffix(MCQ_SUFFIX) == q_text.removesuffix(MCQ_TEXT_SUFFIX)
        options = [line for line in q_text.split("\n") if line[:1] in LETTERS and line[1:3] == ". "]
        answer = b.messages[1]["content"]
        assert answer not in LETTERS and f"{a.messages[1]['content']}. {answer}" in options
        assert parse_choice(answer, options) == a.messages[1]["content"]
    assert mcq == 4 * len(small_set.splits["train"])


def test_text_answer_rejects_a_sample_that_is_not_a_synth_question(tmp_path: Path) -> None:
    from vidtempo.data.samples import ConversationSample

    bad = ConversationSample(video=None, id="x", meta={"task": "order"},
                             messages=[{"role": "user", "content": "Which?\nA. one\nB. two"},
                                       {"role": "assistant", "content": "B"}])  # fmt: skip
    with pytest.raises(ValueError, match="sample x: not a TempoSynth multiple-choice question"):
        text_answer(bad)
    with pytest.raises(ValueError, match="mcq_answers must be 'letter' or 'text'"):
        SynthConversations(str(tmp_path / "none"), "train", mcq_answers="words")  # type: ignore[arg-type]
    assert not (tmp_path / "none").exists()  # checked before anything is generated


def test_extra_questions_are_new_deterministic_and_correct(small_set: Manifest, own_set: Path) -> None:
    scripts = list(small_set.scripts("train").values())
    a = extra_mcq(scripts, seed=0, split="train", per_video={"order": 3})
    assert [m.id for m in a] == [m.id for m in extra_mcq(scripts, 0, "train", {"order": 3})]
    assert [m.options for m in a] == [m.options for m in extra_mcq(scripts, 0, "train", {"order": 3})]
    assert len({m.id for m in a}) == 3 * len(scripts)
    by_id = {s.video_id: s for s in scripts}
    for m in a:
        starts = {f"the {o.name}": o.start for o in by_id[m.video_id].objects}
        chosen = [starts[o] for o in m.options]
        want = min(chosen) if "first" in m.question else max(chosen)
        assert starts[m.options[LETTERS.index(m.answer)]] == want
    assert len({tuple(m.options) for m in a}) > len(scripts)  # other option sets than the generated ones
    with pytest.raises(ValueError, match="unknown tasks \\['orders'\\]"):
        extra_mcq(scripts, 0, "train", {"orders": 1})

    base = SynthConversations(str(own_set), "train", tasks=["order"])
    more = SynthConversations(str(own_set), "train", tasks=["order"], extra_questions={"order": 2})
    assert len(more) == 3 * len(base)
    files = list((own_set / "annotations" / "train").glob("conversations_extra_*.jsonl"))
    assert [f.name for f in files] == ["conversations_extra_order2_seed0.jsonl"]
    again = SynthConversations(str(own_set), "train", tasks=["order"], extra_questions={"order": 2})
    assert [s.messages for s in again] == [s.messages for s in more]  # read back from the file
    extra = [s for s in more if s.id.endswith(("_x0", "_x1"))]
    assert all(s.meta.get("option_timestamps") and s.meta.get("evidence") for s in extra)


def test_repeat_lists_a_tasks_samples_more_often(small_set: Manifest) -> None:
    from collections import Counter

    base = SynthConversations(str(small_set.root), "train")
    more = SynthConversations(str(small_set.root), "train", repeat={"grounding": 3})
    count = Counter(s.meta["task"] for s in base)
    assert Counter(s.meta["task"] for s in more) == {**count, "grounding": 3 * count["grounding"]}
    assert {s.id for s in more} == {s.id for s in base}
    with pytest.raises(ValueError, match="repeat names task 'orders'"):
        SynthConversations(str(small_set.root), "train", repeat={"orders": 2})
    with pytest.raises(ValueError, match="whole number"):
        SynthConversations(str(small_set.root), "train", repeat={"grounding": 1.5})

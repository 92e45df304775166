"""Turn event scripts into annotation files in the formats the real-data loaders read.

Per split folder (``annotations/{split}/``):

=====================  ==============================================================================
``charades_sta.txt``   grounding, Charades-STA lines ``VIDEOID start end##sentence``
``durations.csv``      ``id,objects,cuts,length`` (like ``Charades_v1_test.csv``'s ``id`` / ``length``)
``conversations.jsonl`` LLaVA conversations for every task (grounding, the MCQ tasks, dense captions)
``mcq.jsonl``          4-option multiple choice: ``order``, ``count``, ``audio_visual``, ``after_cut``
``dense_captions.json`` ActivityNet Captions ``{id: {duration, timestamps, sentences}}``
``scene_cuts.json``    ``{id: {duration, fps, cuts, gradual: [{start, end, kind}]}}``
``retrieval.csv``      MSR-VTT JSFusion ``key,vid_key,video_id,sentence``
``scripts.json``       the full event scripts (exact ground truth)
=====================  ==============================================================================

Example:
    >>> from vidtempo.synth.script import sample_script
    >>> from vidtempo.synth.annotate import build_split
    >>> s = [sample_script(seed=0, index=i, min_duration=6, max_duration=12) for i in range(4)]
    >>> ann = build_split(s, seed=0, split="test")
    >>> sorted({m.answer for m in ann.mcq if m.task == "order"})
    ['A', 'B', 'C', 'D']
"""

from __future__ import annotations

import csv
import io
import json
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from vidtempo.synth.script import EventScript, ObjectTrack, after_cut_candidates
from vidtempo.utils.atomic import atomic_write_text  # noqa: F401 - re-exported for synth modules

LETTERS = "ABCD"
MCQ_TASKS: tuple[str, ...] = ("order", "count", "audio_visual", "after_cut")
# Does the answer change when the frames (and audio windows, with the same permutation) are shuffled in time?
ORDER_DEPENDENT = {"order": True, "count": False, "audio_visual": False, "after_cut": True}
# Does the answer need frames and audio to stay aligned with each other?
ALIGNMENT_DEPENDENT = {"order": False, "count": False, "audio_visual": True, "after_cut": False}
MCQ_SUFFIX = "Answer with the option's letter from the given choices directly."
# the instruction when the model is trained to answer with the option's text (``SynthConversations(mcq_answers=
# "text")``; the eval prompt ``eval.prompts.synth_mcq`` must then end with it, and the scorer matches the text)
MCQ_TEXT_SUFFIX = "Answer with the text of the correct option."
DENSE_PROMPT = "Describe the events in the video with their start and end times."
ANNOTATION_FILES: dict[str, str] = {
    "grounding": "charades_sta.txt",
    "durations": "durations.csv",
    "conversations": "conversations.jsonl",
    "mcq": "mcq.jsonl",
    "dense_captions": "dense_captions.json",
    "scene_cuts": "scene_cuts.json",
    "retrieval": "retrieval.csv",
    "scripts": "scripts.json",
}
ORDINALS = ("first", "second", "third", "fourth")


def seconds(s: float, e: float) -> str:
    """The seconds codec used in answers: ``"2.5 - 4.0 seconds"``."""
    return f"{s:.1f} - {e:.1f} seconds"


def video_path(video_id: str) -> str:
    """Video path relative to the output folder."""
    return f"videos/{video_id}.mp4"


@dataclass
class GroundingQuery:
    """"When is the red circle visible?" -> ``[start, end]``."""

    video_id: str
    sentence: str  # Charades-STA sentence
    question: str  # conversation question
    start: float
    end: float


@dataclass
class McqItem:
    """One 4-option question; ``options`` are texts without letters, ``answer`` the correct letter.

    Example:
        >>> m = McqItem("v_count", "v", "count", "How many high beeps are there?", ["1", "2", "3", "4"], "B", 6.0)
        >>> m.lettered()[1], m.to_record()["order_dependent"]
        ('B. 2', False)
    """

    id: str
    video_id: str
    task: str
    question: str
    options: list[str]
    answer: str
    duration: float

    def lettered(self) -> list[str]:
        """``["A. the red circle", ...]``."""
        return [f"{LETTERS[i]}. {o}" for i, o in enumerate(self.options)]

    def to_record(self) -> dict[str, Any]:
        """The ``mcq.jsonl`` record."""
        return {"id": self.id, "video": video_path(self.video_id), "question": self.question,
                "options": self.lettered(), "answer": self.answer, "task": self.task,
                "order_dependent": ORDER_DEPENDENT[self.task],
                "alignment_dependent": ALIGNMENT_DEPENDENT[self.task], "duration": self.duration}


@dataclass
class SplitAnnotations:
    """All annotations of one split, in memory (made by :func:`build_split`, written by :func:`write_split`)."""

    split: str
    scripts: list[EventScript]
    grounding: list[GroundingQuery] = field(default_factory=list)
    mcq: list[McqItem] = field(default_factory=list)
    dense: dict[str, dict[str, Any]] = field(default_factory=dict)
    retrieval: list[tuple[str, str]] = field(default_factory=list)  # (video_id, sentence)


# --------------------------------------------------------------------------------------------- grounding
def grounding_queries(script: EventScript) -> list[GroundingQuery]:
    """One query per object: its visible interval (short: 0.1-0.3 of the video by construction)."""
    return [GroundingQuery(script.video_id, f"the {o.name} is visible.", f"When is the {o.name} visible?",
                           o.start, o.end) for o in script.objects]


# --------------------------------------------------------------------------------------- multiple choice
def balanced_letters(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` answer letters, each letter used ``n // 4`` or ``n // 4 + 1`` times, in shuffled blocks of 4."""
    out: list[str] = []
    while len(out) < n:
        out.extend(LETTERS[i] for i in rng.permutation(4))
    return out[:n]


def _place(answer: str, distractors: list[str], letter: str, rng: np.random.Generator) -> list[str]:
    """Options with ``answer`` at ``letter`` and the distractors shuffled around it."""
    if len(set(distractors)) != 3 or answer in distractors:
        raise ValueError(f"need 3 distinct distractors different from the answer, got {distractors}")
    others = [distractors[i] for i in rng.permutation(3)]
    k = LETTERS.index(letter)
    return others[:k] + [answer] + others[k:]


def _the(o: ObjectTrack) -> str:
    return f"the {o.name}"


def _object_distractors(script: EventScript, answer: ObjectTrack, rng: np.random.Generator,
                        pool: list[ObjectTrack] | None = None) -> list[str]:
    pool = [o for o in (pool or list(script.objects)) if o is not answer]
    return [_the(pool[i]) for i in rng.choice(len(pool), size=3, replace=False)]


def mcq_order(script: EventScript, letter: str, rng: np.random.Generator) -> McqItem:
    """"Which of these appears first/last?" over 4 objects of the video."""
    chosen = [script.objects[i] for i in sorted(rng.choice(len(script.objects), size=4, replace=False))]
    which = "first" if rng.random() < 0.5 else "last"
    answer = min(chosen, key=lambda o: o.start) if which == "first" else max(chosen, key=lambda o: o.start)
    distractors = [_the(o) for o in chosen if o is not answer]
    return McqItem(f"{script.video_id}_order", script.video_id, "order", f"Which of these appears {which}?",
                   _place(_the(answer), distractors, letter, rng), letter, script.duration)


def mcq_count(script: EventScript, letter: str, rng: np.random.Generator) -> McqItem:
    """"How many high beeps are there?" with nearby numbers as distractors."""
    count = sum(b.pitch == "high" for b in script.beeps)
    pool = [n for n in range(max(0, count - 3), count + 4) if n != count]
    distractors = [str(pool[i]) for i in rng.choice(len(pool), size=3, replace=False)]
    return McqItem(f"{script.video_id}_count", script.video_id, "count", "How many high beeps are there?",
                   _place(str(count), distractors, letter, rng), letter, script.duration)


def mcq_audio_visual(script: EventScript, letter: str, rng: np.random.Generator) -> McqItem:
    """"Which shape is on screen when the low beep sounds?" (exactly one object is on screen then)."""
    low = next(b for b in script.beeps if b.pitch == "low")
    mid = low.time + low.length / 2
    on = script.visible_objects(mid)
    if len(on) != 1:
        raise ValueError(f"{script.video_id}: {len(on)} objects on screen at the low beep, expected 1")
    return McqItem(f"{script.video_id}_audio_visual", script.video_id, "audio_visual",
                   "Which shape is on screen when the low beep sounds?",
                   _place(_the(on[0]), _object_distractors(script, on[0], rng), letter, rng), letter,
                   script.duration)


def mcq_after_cut(script: EventScript, letter: str, rng: np.random.Generator) -> McqItem:
    """"Which of these appears first after the (k-th) scene cut?"."""
    cands = after_cut_candidates(script.cuts, script.objects)
    if not cands:
        raise ValueError(f"{script.video_id}: no cut with a clear first appearance after it")
    k, _, answer = cands[int(rng.integers(len(cands)))]
    which = "the scene cut" if len(script.cuts) == 1 else f"the {ORDINALS[k - 1]} scene cut"
    return McqItem(f"{script.video_id}_after_cut", script.video_id, "after_cut",
                   f"Which of these appears first after {which}?",
                   _place(_the(answer), _object_distractors(script, answer, rng), letter, rng), letter,
                   script.duration)


MCQ_BUILDERS = {"order": mcq_order, "count": mcq_count, "audio_visual": mcq_audio_visual,
                "after_cut": mcq_after_cut}


# ------------------------------------------------------------------------------------ captions, retrieval
def _motion(o: ObjectTrack) -> str:
    dx = o.x1 - o.x0
    if abs(dx) < 0.05:
        return "stays in place"
    return "moves from left to right" if dx > 0 else "moves from right to left"


def dense_captions(script: EventScript) -> dict[str, Any]:
    """ActivityNet Captions entry: scenes, gradual changes, objects and beeps, sorted by start time."""
    events: list[tuple[float, float, str]] = []
    for i, sc in enumerate(script.scenes):
        lead = "the video opens on" if i == 0 else "a hard cut shows"
        events.append((sc.start, sc.end, f"{lead} {sc.background.describe()}."))
    for g in script.gradual:
        text = ("the background colour slowly drifts." if g.kind == "drift"
                else f"the background slowly dissolves into {g.target.describe()}.")
        events.append((g.start, g.end, text))
    for o in script.objects:
        events.append((o.start, o.end, f"a {o.name} appears and {_motion(o)}."))
    for b in script.beeps:
        events.append((b.time, round(b.time + b.length, 1), f"a {b.pitch} beep sounds."))
    events.sort(key=lambda e: (e[0], e[1]))
    return {"duration": script.duration, "timestamps": [[s, e] for s, e, _ in events],
            "sentences": [t for _, _, t in events]}


def retrieval_caption(script: EventScript) -> str:
    """One caption per video naming the objects in order of appearance, the cuts and the beeps."""
    names = [f"a {o.name}" for o in script.objects]
    seq = ", then ".join(names[:-1]) + f" and finally {names[-1]}"
    n_cuts, n_high = len(script.cuts), sum(b.pitch == "high" for b in script.beeps)
    cuts = "once" if n_cuts == 1 else f"{n_cuts} times"
    beeps = "one high beep" if n_high == 1 else f"{n_high} high beeps"
    return f"{seq} appear; the scene cuts {cuts}; {beeps} and one low beep sound"


# ------------------------------------------------------------------------------------------------ build
def _rng(seed: int, *keys: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), *(zlib.crc32(k.encode()) for k in keys)])


def build_split(scripts: list[EventScript], seed: int, split: str) -> SplitAnnotations:
    """All annotations of one split. Answer letters are balanced per task within the split."""
    ann = SplitAnnotations(split, list(scripts))
    letters = {t: balanced_letters(len(scripts), _rng(seed, split, t, "letters")) for t in MCQ_TASKS}
    for i, s in enumerate(scripts):
        ann.grounding.extend(grounding_queries(s))
        rng = _rng(seed, s.video_id, "mcq")
        ann.mcq.extend(MCQ_BUILDERS[t](s, letters[t][i], rng) for t in MCQ_TASKS)
        ann.dense[s.video_id] = dense_captions(s)
        ann.retrieval.append((s.video_id, retrieval_caption(s)))
    return ann


def extra_mcq(scripts: list[EventScript], seed: int, split: str, per_video: dict[str, int]) -> list[McqItem]:
    """``per_video[task]`` more multiple-choice items per video, drawn afresh from the event scripts (other
    options, first/last, answer letter): training augmentation for tasks with one item per video. Ids end in
    ``_x{k}``; deterministic for (seed, split, video, task, k).

    Example:
        >>> from vidtempo.synth.script import sample_script
        >>> items = extra_mcq([sample_script(0, 3)], seed=0, split="train", per_video={"order": 2})
        >>> [m.id for m in items], all(m.task == "order" for m in items)
        (['ts000003_order_x0', 'ts000003_order_x1'], True)
    """
    unknown = sorted(set(per_video) - set(MCQ_BUILDERS))
    if unknown:
        raise ValueError(f"extra questions for unknown tasks {unknown}; multiple-choice tasks: {sorted(MCQ_BUILDERS)}")
    items = []
    for s in scripts:
        for task, n in per_video.items():
            for k in range(int(n)):
                rng = _rng(seed, split, s.video_id, task, f"extra{k}")
                item = MCQ_BUILDERS[task](s, LETTERS[int(rng.integers(4))], rng)
                items.append(replace(item, id=f"{item.id}_x{k}"))
    return items


def script_events(script: EventScript) -> list[list[Any]]:
    """``[name, start, end]`` of each object and ``["high beep" | "low beep", start, end]`` of each beep: the
    ``meta.events`` rows that per-frame tag targets read (``vidtempo.data.targets.EventTags``)."""
    return ([[o.name, o.start, o.end] for o in script.objects]
            + [[f"{b.pitch} beep", b.time, round(b.time + b.length, 3)] for b in script.beeps])  # fmt: skip


def conversation_records(ann: SplitAnnotations) -> list[dict[str, Any]]:
    """LLaVA conversations: grounding (seconds codec), every MCQ (option letter), dense captions. Every record
    carries ``events`` (``[name, start, end]`` of each object and ``["high beep" | "low beep", start, end]`` of
    each beep: per-frame tag targets, see ``VideoCollator``)."""
    dur = {s.video_id: s.duration for s in ann.scripts}

    events = {s.video_id: script_events(s) for s in ann.scripts}

    def rec(rid: str, vid: str, question: str, answer: str, task: str, **extra: Any) -> dict[str, Any]:
        return {"id": rid, "video": video_path(vid),
                "conversations": [{"from": "human", "value": f"<video>\n{question}"},
                                  {"from": "gpt", "value": answer}],
                "task": task, "duration": dur[vid], "events": events[vid], **extra}

    out = []
    counters: dict[str, int] = {}
    for g in ann.grounding:
        k = counters[g.video_id] = counters.get(g.video_id, -1) + 1
        out.append(rec(f"{g.video_id}_grounding_{k}", g.video_id, g.question, seconds(g.start, g.end),
                       "grounding", timestamps=[g.start, g.end]))
    shown = {(s.video_id, _the(o)): [o.start, o.end] for s in ann.scripts for o in s.objects}
    for m in ann.mcq:
        q = "\n".join([m.question, *m.lettered(), MCQ_SUFFIX])
        option_times = [shown.get((m.video_id, o)) for o in m.options]  # None: the option is not an object
        evidence = option_times[LETTERS.index(m.answer)]  # the answer's moment (NExT-GQA-style evidence)
        extra = {"option_timestamps": option_times, "evidence": evidence} if any(option_times) else {}
        out.append(rec(m.id, m.video_id, q, m.answer, m.task, order_dependent=ORDER_DEPENDENT[m.task], **extra))
    for vid, d in ann.dense.items():
        text = "\n".join(f"{seconds(s, e)}, {t}" for (s, e), t in zip(d["timestamps"], d["sentences"]))
        out.append(rec(f"{vid}_dense", vid, DENSE_PROMPT, text, "dense_caption"))
    return out


# ------------------------------------------------------------------------------------------------ write
def jsonl_text(records: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def _csv(header: list[str], rows: Iterable[list[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def render_files(ann: SplitAnnotations) -> dict[str, str]:
    """The text of every annotation file of the split, keyed by kind (see ``ANNOTATION_FILES``)."""
    scripts = ann.scripts
    return {
        "grounding": "".join(f"{g.video_id} {g.start:.1f} {g.end:.1f}##{g.sentence}\n" for g in ann.grounding),
        "durations": _csv(["id", "objects", "cuts", "length"],
                          ([s.video_id, ";".join(o.name for o in s.objects), len(s.cuts), f"{s.duration:.2f}"]
                           for s in scripts)),
        "conversations": jsonl_text(conversation_records(ann)),
        "mcq": jsonl_text(m.to_record() for m in ann.mcq),
        "dense_captions": json.dumps(ann.dense, indent=1) + "\n",
        "scene_cuts": json.dumps({s.video_id: {"duration": s.duration, "fps": s.fps, "cuts": s.cuts,
                                               "gradual": [{"start": g.start, "end": g.end, "kind": g.kind}
                                                           for g in s.gradual]} for s in scripts},
                                 indent=1) + "\n",
        "retrieval": _csv(["key", "vid_key", "video_id", "sentence"],
                          ([f"ret{i}", vid, vid, text] for i, (vid, text) in enumerate(ann.retrieval))),
        "scripts": json.dumps({s.video_id: s.to_dict() for s in scripts}, indent=1) + "\n",
    }


def write_split(ann: SplitAnnotations, folder: str | Path) -> dict[str, Path]:
    """Write every annotation file of ``ann`` into ``folder`` (atomically, one by one)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for kind, text in render_files(ann).items():
        paths[kind] = folder / ANNOTATION_FILES[kind]
        atomic_write_text(paths[kind], text)
    return paths

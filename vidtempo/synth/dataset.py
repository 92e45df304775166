"""TempoSynth as a training dataset: generates the set on first use (resumable), then reads its
conversation annotations through the ordinary ``ConversationDataset`` loader.

Example:
    >>> ds = SynthConversations("runs/data/tiny", split="train", num_videos=8)  # doctest: +SKIP
    >>> ds[0].messages[0]["content"].startswith("<video>")  # doctest: +SKIP
    True
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from torch.utils.data import Dataset

from vidtempo.data.samples import VIDEO_PLACEHOLDER, ConversationSample
from vidtempo.synth.annotate import (
    LETTERS,
    MCQ_SUFFIX,
    MCQ_TASKS,
    MCQ_TEXT_SUFFIX,
    SplitAnnotations,
    atomic_write_text,
    conversation_records,
    extra_mcq,
    jsonl_text,
)


class SynthConversations(Dataset):
    """Conversations of one TempoSynth split, optionally restricted to some tasks.

    Args:
        root: output folder of the generator (generated there when its manifest is missing).
        split: ``train``, ``val`` or ``test``.
        tasks: keep only these tasks (e.g. ``[grounding]``); None = all.
        num_videos, seed, size, fps, min_duration, max_duration: generator settings.
        limit: keep at most this many samples (after task filtering and grouping).
        multi_turn: merge all kept questions about one video into one multi-turn conversation (the video
            is encoded once for all of them: about 4x more supervised answer tokens per encoded video for
            grounding).
        workers: rendering processes when the set is generated (0 = one per CPU core).
        mcq_answers: ``letter`` (as generated: "B") or ``text``: the multiple-choice answers become the
            option's text ("the red circle") and the instruction line ``MCQ_TEXT_SUFFIX``. The scorer maps an
            option's text back to its letter, so the benchmark is unchanged; evaluate with the same instruction
            (``eval.prompts.synth_mcq``, see recipes/tiny/synth_grounding.yaml).
        extra_questions: task -> more multiple-choice questions per video, drawn afresh from the split's event
            scripts (e.g. ``{order: 3}``: training augmentation for tasks with one question per video; other
            options, first/last and answer letter). Written once next to the split's annotations.
        repeat: task -> how many times each of its samples is listed (e.g. ``{grounding: 2}``): a larger share
            of an epoch for a task that has no extra questions (grounding). Applied after ``tasks`` and before
            ``limit`` and ``multi_turn``.
    """

    def __init__(
        self,
        root: str,
        split: str = "train",
        tasks: list[str] | None = None,
        num_videos: int = 32,
        seed: int = 0,
        size: int = 64,
        fps: int = 8,
        min_duration: float = 6.0,
        max_duration: float = 30.0,
        limit: int | None = None,
        multi_turn: bool = False,
        workers: int = 0,
        mcq_answers: str = "letter",
        extra_questions: dict[str, int] | None = None,
        repeat: dict[str, int] | None = None,
    ) -> None:
        from vidtempo.data.datasets import ConversationDataset
        from vidtempo.synth.generate import generate

        if mcq_answers not in ("letter", "text"):
            raise ValueError(f"mcq_answers must be 'letter' or 'text', got {mcq_answers!r}")
        self.root = Path(root)
        if not (self.root / "manifest.json").is_file():
            generate(self.root, num_videos=num_videos, seed=seed, size=size, fps=fps,
                     min_duration=min_duration, max_duration=max_duration,
                     workers=workers or os.cpu_count() or 1)  # fmt: skip
        path = self.root / "annotations" / split / "conversations.jsonl"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: is {self.root} a TempoSynth folder with a '{split}' split?"
            )
        samples = ConversationDataset(path, video_root=self.root).samples
        if extra_questions:
            extra = extra_conversations(self.root, split, seed, dict(extra_questions))
            samples += ConversationDataset(extra, video_root=self.root).samples
        if tasks:
            samples = [s for s in samples if s.meta.get("task") in set(tasks)]
            if not samples:
                raise ValueError(f"{path}: no samples of tasks {tasks}")
        if mcq_answers == "text":
            samples = [text_answer(s) for s in samples]
        if repeat:
            samples = repeated(samples, dict(repeat), path)
        if multi_turn:
            samples = group_by_video(samples)
        self.samples: list[ConversationSample] = samples[:limit] if limit else samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> ConversationSample:
        return self.samples[index]


def text_answer(sample: ConversationSample) -> ConversationSample:
    """A multiple-choice sample answered with the option's text instead of its letter (other samples as they
    are): the answer ``B`` becomes the text of the question's ``B. ...`` line and the instruction line
    becomes ``MCQ_TEXT_SUFFIX``.

    Example:
        >>> s = ConversationSample(video=None, id="q", meta={"task": "order"}, messages=[
        ...     {"role": "user", "content": "<video>\\nWhich?\\nA. the red circle\\nB. the blue square\\n" + MCQ_SUFFIX},
        ...     {"role": "assistant", "content": "B"}])
        >>> text_answer(s).messages[-1]["content"]
        'the blue square'
    """
    if sample.meta.get("task") not in MCQ_TASKS or len(sample.messages) != 2:
        return sample
    question, answer = sample.messages[0]["content"], sample.messages[1]["content"].strip()
    lines = question.split("\n")
    options = dict(line.split(". ", 1) for line in lines if len(line) > 3 and line[0] in LETTERS and line[1:3] == ". ")
    if lines[-1] != MCQ_SUFFIX or answer not in options:
        raise ValueError(f"sample {sample.id}: not a TempoSynth multiple-choice question with a letter answer "
                         f"(expected option lines 'A. ...', the line {MCQ_SUFFIX!r} and an answer A-D)")
    messages = [{**sample.messages[0], "content": "\n".join([*lines[:-1], MCQ_TEXT_SUFFIX])},
                {**sample.messages[1], "content": options[answer]}]
    return dataclasses.replace(sample, messages=messages)


def repeated(samples: list[ConversationSample], times: dict[str, int], source: Path) -> list[ConversationSample]:
    """``samples`` with each sample of task ``t`` listed ``times[t]`` times in a row (others once).

    Example:
        >>> a = ConversationSample(video=None, id="a", meta={"task": "grounding"}, messages=[])
        >>> b = ConversationSample(video=None, id="b", meta={"task": "order"}, messages=[])
        >>> [s.id for s in repeated([a, b], {"grounding": 2}, Path("x.jsonl"))]
        ['a', 'a', 'b']
    """
    present = {s.meta.get("task") for s in samples}
    for task, n in times.items():
        if task not in present:
            raise ValueError(f"{source}: repeat names task {task!r}, which has no samples here (tasks: {sorted(map(str, present))})")
        if int(n) != n or n < 1:
            raise ValueError(f"{source}: repeat[{task!r}] must be a whole number >= 1, got {n!r}")
    return [s for s in samples for _ in range(int(times.get(s.meta.get("task"), 1)))]


def extra_conversations(root: Path, split: str, seed: int, per_video: dict[str, int]) -> Path:
    """``annotations/<split>/conversations_extra_<task><n>....jsonl``: the conversations of
    :func:`~vidtempo.synth.annotate.extra_mcq` (written once, atomically; reused when present)."""
    from vidtempo.synth.generate import Manifest

    tag = "_".join(f"{task}{int(n)}" for task, n in sorted(per_video.items()))
    path = root / "annotations" / split / f"conversations_extra_{tag}_seed{seed}.jsonl"
    if not path.is_file():
        scripts = list(Manifest.load(root).scripts(split).values())
        ann = SplitAnnotations(split, scripts, mcq=extra_mcq(scripts, seed, split, per_video))
        atomic_write_text(path, jsonl_text(conversation_records(ann)))
    return path


def group_by_video(samples: list[ConversationSample]) -> list[ConversationSample]:
    """One multi-turn conversation per video, in first-appearance order; the ``<video>`` placeholder stays
    in the first user turn only. The merged sample keeps the first sample's id and meta, plus ``turns``."""
    by_video: dict[str | None, list[ConversationSample]] = {}
    for s in samples:
        by_video.setdefault(s.video, []).append(s)
    merged = []
    for group in by_video.values():
        messages = list(group[0].messages)
        for s in group[1:]:
            messages += [{**m, "content": m["content"].replace(f"{VIDEO_PLACEHOLDER}\n", "").replace(VIDEO_PLACEHOLDER, "")}
                         for m in s.messages]  # fmt: skip
        merged.append(
            dataclasses.replace(group[0], messages=messages, meta={**group[0].meta, "turns": len(group)})
        )
    return merged

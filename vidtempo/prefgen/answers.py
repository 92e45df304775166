"""Self-generated answer pairs: TEMPO's perturbation idea applied to questions instead of clip captions.

The model being trained answers each training question twice: on the intact video (the chosen answer) and
on the same frames put out of order (the rejected answer): blocks of ``g = max(1, n // m)`` frames shuffled or
reversed, TEMPLE's ``shuffle(m)`` / ``reverse(m)`` on the frame axis (``vidtempo.data.perturb.
perturb_indices``; larger ``m`` = stronger corruption = easier pair). Audio windows move with their frames.
A pair is kept only when the two answers differ: the model's answer changed because the order changed, and
DPO then prefers the answer the true order gives. The pair is output-side (both answers are scored on the
intact video), as in TEMPLE, where the rejected caption comes from perturbed clips and is trained against the
original video.

``chosen: truth`` takes the annotated answer as the chosen side instead of the model's (synthetic data has
exact answers); the rejected side is still the model's own answer on the perturbed frames.

Each pair records ``perturbation``, ``magnitude`` (its curriculum level), ``task`` and ``chosen_source``.

Example:
    >>> block_order(8, "reverse", 4, seed=0, key="q1")   # blocks of 8 // 4 = 2 frames, reversed
    [6, 7, 4, 5, 2, 3, 0, 1]
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vidtempo.data.samples import ConversationSample

log = logging.getLogger(__name__)

ANSWER_PERTURBATIONS: tuple[str, ...] = ("shuffle", "reverse")  # ``drop`` would change the frame count
CHOSEN_SOURCES: tuple[str, ...] = ("self", "truth")


@dataclass
class AnswerPairSettings:
    """Recipe section ``prefgen_answers:`` (besides ``data``, the questions' dataset node).

    Attributes:
        perturbations: ``shuffle`` and/or ``reverse`` (blocks of frames).
        magnitudes: TEMPLE magnitudes (curriculum levels), each >= 2.
        chosen: ``self`` (the model's answer on the intact video, TEMPO) or ``truth`` (the annotated answer).
        batch_size: generation batch size.
        max_new_tokens: answer length cap.
        seed: perturbation seed (mixed with each question's id).
    """

    perturbations: list[str] = field(default_factory=lambda: list(ANSWER_PERTURBATIONS))
    magnitudes: list[int] = field(default_factory=lambda: [16, 8, 4, 2])
    chosen: str = "self"
    batch_size: int = 32
    max_new_tokens: int = 16
    seed: int = 0

    def check(self, where: str = "prefgen_answers") -> None:
        """Raise ``ValueError`` naming the key when a value is invalid."""
        bad = [k for k in self.perturbations if k not in ANSWER_PERTURBATIONS]
        if bad or not self.perturbations:
            raise ValueError(f"{where}.perturbations: expected some of {list(ANSWER_PERTURBATIONS)}, "
                             f"got {self.perturbations}")  # fmt: skip
        if not self.magnitudes or not all(isinstance(m, int) and m >= 2 for m in self.magnitudes):
            raise ValueError(f"{where}.magnitudes: expected integers >= 2, got {self.magnitudes}")
        if self.chosen not in CHOSEN_SOURCES:
            raise ValueError(f"{where}.chosen: expected one of {list(CHOSEN_SOURCES)}, got {self.chosen!r}")
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError(f"{where}: batch_size and max_new_tokens must be >= 1")


def block_order(n: int, kind: str, magnitude: int, seed: int, key: str) -> list[int] | None:
    """The frame order of one perturbed question (``perturb.perturb_indices`` seeded by ``(seed, key,
    kind, magnitude)``); None when it cannot change the order (e.g. one frame)."""
    from vidtempo.data.perturb import perturb_indices, rng_for

    return perturb_indices(n, kind, magnitude, rng_for(seed, key, kind, str(magnitude)))


def perturb_transform(kind: str, magnitude: int, seed: int) -> Any:
    """A batch transform that puts each row's valid frames (and audio windows) in its ``block_order``."""
    from vidtempo.data.time_order import permute_frames

    def transform(batch: Any) -> Any:
        sizes = batch.frame_mask.sum(dim=1).tolist() if batch.frames is not None else []
        orders = [block_order(int(n), kind, magnitude, seed, item) for n, item in zip(sizes, batch.ids)]
        return permute_frames(batch, [np.asarray(o) if o is not None else None for o in orders])

    return transform


def pair_record(sample: ConversationSample, chosen: str, rejected: str, kind: str, magnitude: int,
                source: str) -> dict[str, Any]:  # fmt: skip
    """A ``PreferenceDataset`` record (prompt = the sample's turns before its answer)."""
    return {
        "id": f"{sample.id}_{kind}_m{magnitude}", "video": sample.video, "prompt": sample.messages[:-1],
        "chosen": chosen, "rejected": rejected,
        "perturbation": kind, "magnitude": magnitude, "domain": "answer", "chosen_source": source,
        "task": sample.meta.get("task"), "question_id": sample.id,
    }  # fmt: skip


def answer_pairs(
    generate: Any, samples: Sequence[ConversationSample], settings: AnswerPairSettings, out: str | Path,
    progress: bool = True, fresh: bool = False,
) -> dict[str, int]:  # fmt: skip
    """Write the pairs of ``samples`` to ``out`` (JSONL); resumable per (perturbation, magnitude) pass.

    Args:
        generate: ``generate(samples, transform) -> list[str]`` (e.g. :func:`~vidtempo.prefgen.captions.
            generate_answers` bound to a model, tokenizer and collator; ``transform`` perturbs a batch).
        samples: single-question conversations whose last turn is the annotated answer.
        settings: :class:`AnswerPairSettings`.
        out: the pairs JSONL; ``<out>.status.json`` records finished passes.
        progress: show a rich progress bar.
        fresh: start over, deleting the pairs of an earlier run (otherwise a run with other settings or
            another number of questions is refused rather than overwritten).

    Returns:
        Counts: ``pairs``, ``same`` (perturbed answer equal to the chosen one: no pair), ``passes_done``.
    """
    settings.check()
    out = Path(out)
    for s in samples:
        if len(s.messages) < 2 or s.messages[-1]["role"] != "assistant":
            raise ValueError(f"sample {s.id}: expected a question followed by its annotated answer")
    status_path = out.with_name(out.name + ".status.json")
    status = _load_status(status_path, settings, len(samples), fresh)
    _keep_finished(out, status["passes"])  # drops the rows of a pass interrupted before its status was saved
    questions = [dataclasses.replace(s, messages=s.messages[:-1]) for s in samples]
    passes = [(k, int(m)) for m in settings.magnitudes for k in settings.perturbations]
    counts: Counter[str] = Counter(passes_done=len(status["passes"]))
    from vidtempo.prefgen.pairs import prefgen_progress

    with prefgen_progress(progress) as bar:
        task = bar.add_task("answer pairs", total=len(passes) + 1, completed=len(status["passes"]), note="")
        if settings.chosen == "self":
            chosen = generate(questions, None)
        else:
            chosen = [s.messages[-1]["content"].strip() for s in samples]
        bar.update(task, advance=1)
        for kind, m in passes:
            name = f"{kind}_m{m}"
            if name in status["passes"]:
                continue
            rejected = generate(questions, perturb_transform(kind, m, settings.seed))
            rows = [pair_record(s, c, r, kind, m, settings.chosen)
                    for s, c, r in zip(samples, chosen, rejected) if r != c]  # fmt: skip
            counts["same"] += len(samples) - len(rows)
            with out.open("a") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
            status["passes"].append(name)
            status_path.write_text(json.dumps(status))
            counts["passes_done"] += 1
            bar.update(task, advance=1)
    counts["pairs"] = sum(1 for line in out.read_text().splitlines() if line.strip())
    log.info("answer pairs %s: %s", out, dict(counts))
    return dict(counts)


def _load_status(path: Path, settings: AnswerPairSettings, num_samples: int, fresh: bool) -> dict[str, Any]:
    """The status of a previous run with the same settings, or a new one (``fresh`` or no previous run)."""
    identity = {"settings": dataclasses.asdict(settings), "num_samples": num_samples}
    if path.is_file() and not fresh:
        old = json.loads(path.read_text())
        if {k: old.get(k) for k in identity} != identity:
            raise ValueError(f"{path}: these pairs were written with other settings or questions "
                             f"({ {k: old.get(k) for k in identity} }); use another --out, or --fresh to start over")  # fmt: skip
        return old
    return {**identity, "passes": []}


def _keep_finished(out: Path, passes: list[str]) -> None:
    rows = [line for line in (out.read_text().splitlines() if out.is_file() else []) if line.strip()]
    keep = [r for r in rows if "{perturbation}_m{magnitude}".format(**json.loads(r)) in passes]
    out.write_text("".join(r + "\n" for r in keep))

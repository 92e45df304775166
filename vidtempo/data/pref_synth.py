"""Tiny, deterministic TEMPO-style preference pairs from TempoSynth dense captions (no model involved).

TEMPLE builds rejected answers by perturbing the *order* of a video's clip captions before a model writes the
answer (``drop`` / ``shuffle`` / ``reverse`` at magnitudes 16, 8, 4, 2; ``../shared/docs/methods.md`` 3.5).
Here the chosen answer is TempoSynth's ground-truth dense caption (one ``"s - e seconds, sentence"`` line per
event, sorted by time) and the same perturbations act on its events, so the pairs isolate time order:

* ``caption`` domain (output-side pairs, same video): ``drop(m)`` keeps ``max(1, n // m)`` events chosen at
  random (order kept); ``shuffle(m)`` / ``reverse(m)`` permute / reverse blocks of ``g = max(1, n // m)``
  consecutive events. The time stamps stay in their (sorted) slots and the sentences move, so the rejected
  answer tells the events in the wrong order at plausible times.
* ``video`` domain (input-side pairs): the rejected side keeps the chosen answer but sees a perturbed copy
  of the video (1-second units of frames and audio dropped / block-shuffled / block-reversed, same rules),
  written once under ``<root>/perturbed/``.

Larger ``m`` = stronger corruption = easier pair. Shuffles that leave the order unchanged are re-drawn (a
deliberate deviation from the released code, which keeps them; methods.md 3.10); a pair whose rejected side is
identical to its chosen side is dropped and counted in ``stats``. Each pair's meta records ``perturbation``,
``magnitude`` (its difficulty), ``domain`` and ``task``.

Example:
    >>> import numpy as np
    >>> perturb_indices(8, "reverse", 4, np.random.default_rng(0))  # blocks of 2, reversed
    [6, 7, 4, 5, 2, 3, 0, 1]
    >>> perturb_indices(8, "drop", 4, np.random.default_rng(0))  # keep 8 // 4 = 2 events, in order
    [5, 7]
"""

from __future__ import annotations

import logging
import os
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from vidtempo.data.samples import PreferenceSample

log = logging.getLogger(__name__)

PERTURBATIONS: tuple[str, ...] = ("drop", "shuffle", "reverse")
DEFAULT_MAGNITUDES: tuple[int, ...] = (16, 8, 4, 2)
DOMAINS: tuple[str, ...] = ("caption", "video")
MAX_REDRAWS = 100


def perturb_indices(n: int, kind: str, magnitude: int, rng: np.random.Generator) -> list[int] | None:
    """Indices of ``n`` ordered units after a TEMPLE perturbation; None when it cannot change the order.

    Args:
        n: number of units (clip captions, events, seconds of video).
        kind: ``drop``, ``shuffle`` or ``reverse``.
        magnitude: m >= 1; drop keeps ``max(1, n // m)`` units, shuffle/reverse move blocks of that size.
        rng: random source (drop and shuffle).
    """
    if kind not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation '{kind}'; valid: {', '.join(PERTURBATIONS)}")
    if magnitude < 1:
        raise ValueError(f"perturbation magnitude must be >= 1, got {magnitude}")
    size = max(1, n // magnitude)
    if kind == "drop":
        return sorted(int(i) for i in rng.choice(n, size=size, replace=False)) if size < n else None
    blocks = [list(range(i, min(i + size, n))) for i in range(0, n, size)]
    if len(blocks) < 2:
        return None
    if kind == "reverse":
        return [i for block in reversed(blocks) for i in block]
    for _ in range(MAX_REDRAWS):  # re-draw identity shuffles (methods.md 3.10)
        order = rng.permutation(len(blocks))
        if any(int(o) != k for k, o in enumerate(order)):
            return [i for o in order for i in blocks[int(o)]]
    return None  # pragma: no cover - 2+ blocks give a non-identity draw with probability ~1


def parse_dense_caption(text: str, where: str) -> list[tuple[str, str]]:
    """``"s - e seconds, sentence"`` lines -> [(time stamp, sentence)]."""
    events = []
    for n, line in enumerate(text.strip().splitlines(), 1):
        stamp, sep, sentence = line.partition(", ")
        if not sep or not stamp.endswith("seconds"):
            raise ValueError(f"{where}: line {n} is not 's - e seconds, sentence': {line!r}")
        events.append((stamp, sentence))
    return events


def perturb_caption(events: list[tuple[str, str]], kind: str, order: list[int]) -> str:
    """The rejected dense caption: dropped lines vanish; moved sentences take the slots' time stamps."""
    if kind == "drop":
        return "\n".join(f"{events[i][0]}, {events[i][1]}" for i in order)
    return "\n".join(f"{events[slot][0]}, {events[i][1]}" for slot, i in enumerate(order))


def _rng(seed: int, *keys: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), *(zlib.crc32(k.encode()) for k in keys)])


class SynthPreferencePairs(Dataset):
    """TEMPO-style preference pairs over one TempoSynth split (generated on first use).

    Args:
        root: TempoSynth folder (generated there when its manifest is missing).
        split: ``train``, ``val`` or ``test``.
        magnitudes: perturbation magnitudes (difficulty levels); 16 = easiest.
        perturbations: any of ``drop``, ``shuffle``, ``reverse``.
        domain: ``caption`` (rejected answer perturbed, same video) or ``video`` (rejected video perturbed).
        seed: pair seed (the generator's own seed is ``synth_seed``).
        num_videos, synth_seed, size, fps, min_duration, max_duration: TempoSynth generator settings.
        limit: keep at most this many videos.

    Example:
        >>> pairs = SynthPreferencePairs("runs/data/ts", num_videos=8, max_duration=8)  # doctest: +SKIP
        >>> pairs[0].meta["magnitude"], pairs[0].meta["perturbation"]  # doctest: +SKIP
        (16, 'drop')
    """

    def __init__(
        self,
        root: str,
        split: str = "train",
        magnitudes: Sequence[int] = DEFAULT_MAGNITUDES,
        perturbations: Sequence[str] = PERTURBATIONS,
        domain: str = "caption",
        seed: int = 0,
        num_videos: int = 32,
        synth_seed: int = 0,
        size: int = 64,
        fps: int = 8,
        min_duration: float = 6.0,
        max_duration: float = 30.0,
        limit: int | None = None,
    ) -> None:
        from vidtempo.synth.dataset import SynthConversations

        if domain not in DOMAINS:
            raise ValueError(f"SynthPreferencePairs: unknown domain '{domain}'; valid: {', '.join(DOMAINS)}")
        for kind in perturbations:
            if kind not in PERTURBATIONS:
                raise ValueError(
                    f"SynthPreferencePairs: unknown perturbation '{kind}'; valid: {PERTURBATIONS}"
                )
        self.root, self.domain, self.seed = Path(root), domain, seed
        convs = SynthConversations(root, split=split, tasks=["dense_caption"], num_videos=num_videos,
                                   seed=synth_seed, size=size, fps=fps, min_duration=min_duration,
                                   max_duration=max_duration, limit=limit)  # fmt: skip
        self.stats: Counter[str] = Counter()
        self.samples: list[PreferenceSample] = []
        for conv in convs.samples:
            for m in magnitudes:
                for kind in perturbations:
                    pair = self._pair(conv, kind, int(m))
                    if pair is None:
                        self.stats[f"unchanged_{kind}"] += 1
                    else:
                        self.samples.append(pair)
        if not self.samples:
            raise ValueError(
                f"{self.root} ({split}): no preference pair could be built; stats {dict(self.stats)}"
            )
        log.info("%s %s: %d pairs (%s)", self.root, split, len(self.samples), dict(self.stats))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> PreferenceSample:
        return self.samples[index]

    def _pair(self, conv: Any, kind: str, magnitude: int) -> PreferenceSample | None:
        prompt, chosen = conv.messages[:-1], conv.messages[-1]["content"]
        vid = Path(conv.video).stem
        rng = _rng(self.seed, vid, kind, str(magnitude), self.domain)
        meta = {"perturbation": kind, "magnitude": magnitude, "domain": self.domain, "task": "dense_caption",
                "video_id": vid}  # fmt: skip
        pair_id = f"{vid}_{self.domain}_{kind}_m{magnitude}"
        if self.domain == "caption":
            events = parse_dense_caption(chosen, f"{conv.meta.get('source', self.root)}: {conv.id}")
            order = perturb_indices(len(events), kind, magnitude, rng)
            rejected = perturb_caption(events, kind, order) if order is not None else chosen
            if rejected == chosen:
                return None
            return PreferenceSample(video=conv.video, prompt=prompt, chosen=chosen, rejected=rejected,
                                    id=pair_id, meta=meta)  # fmt: skip
        target = self.root / "perturbed" / f"{pair_id}.mp4"
        if not target.is_file() and not write_perturbed_video(conv.video, target, kind, magnitude, rng):
            return None
        return PreferenceSample(video=conv.video, prompt=prompt, chosen=chosen, rejected=chosen,
                                rejected_video=str(target), id=pair_id, meta=meta)  # fmt: skip


def write_perturbed_video(
    source: str, target: Path, kind: str, magnitude: int, rng: np.random.Generator
) -> bool:
    """Write ``source`` with its 1-second units perturbed to ``target`` (atomically); False if unchanged."""
    import av

    from vidtempo.data.audio import load_audio
    from vidtempo.synth.render import encode_mp4

    with av.open(source) as container:
        fps = int(round(float(container.streams.video[0].average_rate)))
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])  # (T, H, W, 3)
    sr = 16000
    wave, _ = load_audio(source, sr=sr)  # (S,)
    units = -(-len(frames) // fps)
    order = perturb_indices(units, kind, magnitude, rng)
    if order is None:
        return False
    new_frames = np.concatenate([frames[u * fps : (u + 1) * fps] for u in order])
    new_wave = np.concatenate([wave[u * sr : (u + 1) * sr] for u in order]).astype(np.float32)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp.mp4")
    try:
        encode_mp4(
            tmp, new_frames, new_wave, fps=fps, sample_rate=sr, comment=f"perturbed:{kind}:{magnitude}"
        )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return True

"""Tiny, deterministic TEMPO-style preference pairs from TempoSynth dense captions (no model involved).

The chosen answer is TempoSynth's ground-truth dense caption (one ``"s - e seconds, sentence"`` line per event,
sorted by time) and TEMPLE's time-order perturbations (:mod:`vidtempo.data.perturb`) act on its events, so
the pairs isolate time order:

* ``caption`` domain (output-side pairs, same video): the rejected answer is the perturbed dense caption.
* ``video`` domain (input-side pairs): the rejected side keeps the chosen answer but sees a perturbed copy
  of the video (1-second units of frames and audio dropped / block-shuffled / block-reversed, same rules),
  written once under ``<root>/perturbed/``.

A pair whose rejected side is identical to its chosen side is dropped and counted in ``stats``. Each pair's
meta records ``perturbation``, ``magnitude`` (its difficulty), ``domain``, ``task`` and ``video_id``. The
recipe alias is ``synth_preference`` (dataset kind); see ``docs/methods/tempo.md``.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from vidtempo.data.perturb import (
    DEFAULT_MAGNITUDES,
    PERTURBATIONS,
    parse_dense_caption,
    perturb_caption,
    perturb_indices,
    rng_for,
)
from vidtempo.data.samples import PreferenceSample
from vidtempo.synth.dataset import SynthConversations

log = logging.getLogger(__name__)

DOMAINS: tuple[str, ...] = ("caption", "video")


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
        rng = rng_for(self.seed, vid, kind, str(magnitude), self.domain)
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

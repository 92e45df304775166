"""The TempoSynth event script: what happens in one synthetic video, and when.

A script is sampled deterministically from ``(seed, index)`` and fully determines the rendered video, its audio
track and every annotation. All event times lie on a 0.1 s grid, so the seconds codec ``"{s:.1f}"`` renders
them exactly; the duration is a whole number of frames.

Event grammar (see ``docs/temposynth.md``)::

    video    := scene (CUT scene)+          1-3 hard cuts: background layout and colours change at once
    scene    := background [GRADUAL]        a slow colour drift or a dissolve over >= 1 s, never a cut
    objects  := 4-5 coloured shapes, each visible once over a short interval (0.1-0.3 of the video), moving
    beeps    := exactly one low beep (while exactly one object is on screen) + 1-4 high beeps, some of them
                tied to an object's appearance or to a cut

Example:
    >>> from vidtempo.synth.script import sample_script
    >>> s = sample_script(seed=0, index=3, fps=8, min_duration=6, max_duration=12)
    >>> s.video_id, len(s.cuts) >= 1, 4 <= len(s.objects) <= 5
    ('ts000003', True, True)
    >>> s == sample_script(seed=0, index=3, fps=8, min_duration=6, max_duration=12)
    True
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

SCRIPT_VERSION = 1

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
OBJECT_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (35, 195, 60),
    "blue": (40, 90, 235),
    "yellow": (240, 220, 35),
}
# Muted background colours: far from the saturated object colours, so an object stays findable by colour.
BACKGROUND_COLORS: dict[str, tuple[int, int, int]] = {
    "black": (20, 20, 20),
    "dark grey": (70, 70, 70),
    "grey": (125, 125, 125),
    "light grey": (185, 185, 185),
    "purple": (85, 50, 105),
    "teal": (30, 90, 95),
    "brown": (105, 75, 45),
    "olive": (90, 100, 45),
    "beige": (215, 200, 170),
    "navy": (30, 35, 70),
}
LAYOUTS: tuple[str, ...] = ("solid", "split_h", "split_v", "stripes", "border")
LOW_FREQ_RANGE = (350.0, 450.0)  # Hz
HIGH_FREQ_RANGE = (1400.0, 1800.0)  # Hz
NUM_LANES = 3  # objects on screen together use different horizontal lanes, so they never occlude each other


class ScriptError(ValueError):
    """Bad generator parameters, or no valid script could be sampled for a seed."""


@dataclass(frozen=True)
class Background:
    """A background image: a layout filled with one or two named colours.

    Example:
        >>> Background("stripes", "teal", "grey").describe()
        'a striped teal and grey background'
    """

    layout: str
    color1: str
    color2: str

    def describe(self) -> str:
        """Words for captions, e.g. ``"a plain navy background"``."""
        if self.layout == "solid":
            return f"a plain {self.color1} background"
        words = {"split_h": "top/bottom split", "split_v": "left/right split", "stripes": "striped",
                 "border": "framed"}[self.layout]
        return f"a {words} {self.color1} and {self.color2} background"


@dataclass(frozen=True)
class Scene:
    """A scene ``[start, end)`` with its initial background. Consecutive scenes are separated by hard cuts."""

    start: float
    end: float
    background: Background


@dataclass(frozen=True)
class Gradual:
    """A gradual background change inside one scene: not a cut.

    ``kind="drift"`` changes the colours only; ``kind="dissolve"`` cross-fades to another layout. The
    background is ``target`` from ``end`` until the scene's cut.
    """

    start: float
    end: float
    kind: str
    target: Background


@dataclass(frozen=True)
class ObjectTrack:
    """One coloured shape, visible on ``[start, end)``, moving linearly from ``(x0, y0)`` to ``(x1, y1)``.

    Positions are the shape's centre as fractions of the frame width/height; ``size`` is its side as a
    fraction of the frame; ``lane`` is the horizontal band it moves in.

    Example:
        >>> o = ObjectTrack("circle", "red", 1.0, 3.0, 0.2, 0.5, 0.8, 0.5, 0.2, 1)
        >>> o.name, o.visible(2.9), o.visible(3.0), o.position(2.0)
        ('red circle', True, False, (0.5, 0.5))
    """

    shape: str
    color: str
    start: float
    end: float
    x0: float
    y0: float
    x1: float
    y1: float
    size: float
    lane: int

    @property
    def name(self) -> str:
        """``"red circle"``."""
        return f"{self.color} {self.shape}"

    def position(self, t: float) -> tuple[float, float]:
        """Centre ``(x, y)`` (fractions) at time ``t``, clamped to the interval."""
        a = min(max((t - self.start) / max(self.end - self.start, 1e-9), 0.0), 1.0)
        return self.x0 + a * (self.x1 - self.x0), self.y0 + a * (self.y1 - self.y0)

    def visible(self, t: float) -> bool:
        """True when the object is drawn at time ``t``."""
        return self.start <= t < self.end


@dataclass(frozen=True)
class Beep:
    """A sine tone ``[time, time + length)``; ``cause`` names the visual event it is tied to, if any.

    ``cause`` is ``"appear:red circle"``, ``"cut:1"`` (the first cut), ``"onscreen:red circle"`` (the low beep,
    sounding while that object is the only one on screen) or ``None``.
    """

    time: float
    length: float
    pitch: str  # "low" | "high"
    freq: float
    cause: str | None = None


@dataclass(frozen=True)
class EventScript:
    """Everything that happens in one video. Equal scripts render equal videos and annotations.

    Example:
        >>> s = sample_script(seed=1, index=0, min_duration=6, max_duration=6)
        >>> s.duration, s.num_frames, EventScript.from_dict(s.to_dict()) == s
        (6.0, 48, True)
    """

    video_id: str
    seed: int
    index: int
    duration: float
    fps: int
    scenes: tuple[Scene, ...]
    gradual: tuple[Gradual, ...]
    objects: tuple[ObjectTrack, ...]
    beeps: tuple[Beep, ...]
    version: int = SCRIPT_VERSION

    @property
    def cuts(self) -> list[float]:
        """Hard-cut times in seconds (the start of every scene after the first)."""
        return [s.start for s in self.scenes[1:]]

    @property
    def num_frames(self) -> int:
        """Frames in the video (``duration * fps``, a whole number by construction)."""
        return round(self.duration * self.fps)

    def visible_objects(self, t: float) -> list[ObjectTrack]:
        """Objects on screen at time ``t``."""
        return [o for o in self.objects if o.visible(t)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``from_dict`` inverts it)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EventScript:
        """Rebuild a script from :meth:`to_dict` output (e.g. a ``scripts.json`` entry)."""
        if not isinstance(d, dict):
            raise ScriptError(f"a script must be a JSON object, got {type(d).__name__}")
        try:
            scenes = tuple(Scene(s["start"], s["end"], Background(**s["background"])) for s in d["scenes"])
            gradual = tuple(Gradual(g["start"], g["end"], g["kind"], Background(**g["target"]))
                            for g in d["gradual"])
            objects = tuple(ObjectTrack(**o) for o in d["objects"])
            beeps = tuple(Beep(**b) for b in d["beeps"])
            return cls(d["video_id"], d["seed"], d["index"], d["duration"], d["fps"], scenes, gradual,
                       objects, beeps, d.get("version", SCRIPT_VERSION))
        except (KeyError, TypeError) as err:
            raise ScriptError(f"script dict for '{d.get('video_id', '?')}' is malformed: {err!r}") from err

    def fingerprint(self, **render_params: Any) -> str:
        """Stable hash of the script plus render parameters (stored in the mp4 to validate re-runs)."""
        payload = json.dumps({"script": self.to_dict(), "render": render_params}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:32]


def video_id_for(index: int) -> str:
    """File stem of video ``index``: ``ts000042``."""
    return f"ts{index:06d}"


def duration_step(fps: int) -> float:
    """Smallest duration step that is both a whole number of frames and a multiple of 0.1 s."""
    return 1.0 / math.gcd(10, fps)


# ----------------------------------------------------------------------------------------------- sampling
def _ds(x: float) -> float:
    """Round to the 0.1 s grid."""
    return round(round(x * 10) / 10, 1)


def _uniform_ds(rng: np.random.Generator, lo: float, hi: float) -> float:
    """A time on the 0.1 s grid, uniform in ``[lo, hi]`` (both rounded inwards)."""
    a, b = math.ceil(lo * 10 - 1e-6), math.floor(hi * 10 + 1e-6)
    if b < a:
        raise ScriptError(f"empty time range [{lo}, {hi}]")
    return int(rng.integers(a, b + 1)) / 10


@lru_cache(maxsize=512)
def background_array(bg: Background, size: int) -> np.ndarray:
    """(H, W, 3) float32 image of a background (read-only, cached; copy before editing)."""
    yy, xx = np.mgrid[0:size, 0:size]
    band = max(size // 8, 1)
    if bg.layout == "solid":
        second = np.zeros((size, size), bool)
    elif bg.layout == "split_h":
        second = yy >= size // 2
    elif bg.layout == "split_v":
        second = xx >= size // 2
    elif bg.layout == "stripes":
        second = (xx // band) % 2 == 1
    elif bg.layout == "border":
        second = (xx < band) | (yy < band) | (xx >= size - band) | (yy >= size - band)
    else:
        raise ScriptError(f"unknown background layout '{bg.layout}', expected one of {LAYOUTS}")
    c1 = np.array(BACKGROUND_COLORS[bg.color1], np.float32)
    c2 = np.array(BACKGROUND_COLORS[bg.color2], np.float32)
    img = np.where(second[..., None], c2, c1).astype(np.float32)
    img.setflags(write=False)
    return img


@lru_cache(maxsize=1 << 16)
def background_change(a: Background, b: Background) -> float:
    """Mean absolute pixel difference (0-255) between two backgrounds."""
    return float(np.abs(background_array(a, 16) - background_array(b, 16)).mean())


# A hard cut changes the background by at least CUT_MIN_CHANGE; a gradual change by GRADUAL_CHANGE in total,
# spread over >= 1 s, so its frame-to-frame change stays far below a cut's (8 fps: <= 45 / 8 ~ 6 per frame).
CUT_MIN_CHANGE = 45.0
GRADUAL_CHANGE = (15.0, 45.0)


@lru_cache(maxsize=1)
def _background_table() -> tuple[tuple[Background, ...], np.ndarray]:
    """Every usable two-colour background and its (K, 16*16*3) pixels (the two colours must differ enough)."""
    bgs = [Background(layout, c1, c2) for layout in LAYOUTS for c1 in BACKGROUND_COLORS for c2 in BACKGROUND_COLORS
           if c1 != c2]
    bgs = [bg for bg in bgs if background_change(bg, Background("solid", bg.color2, bg.color2)) >= 30]
    return tuple(bgs), np.stack([background_array(bg, 16).ravel() for bg in bgs])


@lru_cache(maxsize=1024)
def _cut_candidates(avoid: Background | None) -> tuple[Background, ...]:
    """Backgrounds a hard cut from ``avoid`` may show: another layout and a change >= CUT_MIN_CHANGE."""
    bgs, pixels = _background_table()
    if avoid is None:
        return bgs
    change = np.abs(pixels - background_array(avoid, 16).ravel()).mean(axis=1)  # (K,)
    return tuple(bg for bg, c in zip(bgs, change) if bg.layout != avoid.layout and c >= CUT_MIN_CHANGE)


@lru_cache(maxsize=1024)
def _gradual_candidates(bg: Background, kind: str) -> tuple[Background, ...]:
    """End states of a gradual change of ``bg``: same layout (drift) or a new one (dissolve), moderate change."""
    lo, hi = GRADUAL_CHANGE
    layouts = (bg.layout,) if kind == "drift" else tuple(x for x in LAYOUTS if x != bg.layout)
    out = [Background(layout, c1, bg.color2) for layout in layouts for c1 in BACKGROUND_COLORS
           if c1 != bg.color2]
    return tuple(t for t in out if lo <= background_change(bg, t) <= hi)


def _sample_background(rng: np.random.Generator, avoid: Background | None) -> Background:
    """A background whose layout and colours differ strongly from ``avoid`` (for a hard cut)."""
    cands = _cut_candidates(avoid)
    if not cands:  # pragma: no cover - every background has distinct candidates
        raise ScriptError(f"no background differs enough from {avoid}")
    return cands[int(rng.integers(len(cands)))]


def _sample_gradual_target(rng: np.random.Generator, bg: Background, kind: str) -> Background | None:
    """The end state of a gradual change: a moderate colour change (drift) or a new layout (dissolve).

    None when no colour gives a moderate change for this background (the scene then has no gradual change).
    """
    cands = _gradual_candidates(bg, kind)
    return cands[int(rng.integers(len(cands)))] if cands else None


def _sample_scenes(rng: np.random.Generator, dur: float) -> tuple[tuple[Scene, ...], tuple[Gradual, ...]]:
    n_cuts = int(rng.integers(1, 4))
    margin = 0.15 * dur
    for _ in range(100):
        cuts = sorted(_uniform_ds(rng, margin, dur - margin) for _ in range(n_cuts))
        if all(b - a >= margin for a, b in zip(cuts, cuts[1:])):
            break
    else:
        cuts = [_ds(dur / 2)]
    bounds = [0.0, *cuts, dur]
    scenes: list[Scene] = []
    gradual: list[Gradual] = []
    state: Background | None = None
    for a, b in zip(bounds, bounds[1:]):
        bg = _sample_background(rng, state)
        scenes.append(Scene(a, b, bg))
        state = bg
        glen = _ds(min(max(1.0, 0.1 * dur), (b - a) - 1.0))
        if glen >= 1.0 and rng.random() < 0.6:
            g0 = _uniform_ds(rng, a + 0.5, b - 0.5 - glen)
            kind = "drift" if rng.random() < 0.5 else "dissolve"
            target = _sample_gradual_target(rng, bg, kind)
            if target is not None:
                gradual.append(Gradual(g0, _ds(g0 + glen), kind, target))
                state = target
    return tuple(scenes), tuple(gradual)


def _sample_objects(rng: np.random.Generator, dur: float) -> tuple[ObjectTrack, ...] | None:
    """4-5 distinct (shape, colour) objects with short, well-separated appearances; None if infeasible."""
    n = int(rng.integers(4, 6))
    combos = [(s, c) for s in SHAPES for c in OBJECT_COLORS]
    picks = rng.choice(len(combos), size=n, replace=False)
    min_gap = max(0.5, 0.04 * dur)
    intervals: list[tuple[float, float]] = []
    for _ in range(n):
        length = _uniform_ds(rng, max(0.1 * dur, 0.5), 0.3 * dur)
        start = _uniform_ds(rng, 0.0, dur - length)
        intervals.append((start, _ds(start + length)))
    starts = sorted(s for s, _ in intervals)
    if any(b - a < min_gap for a, b in zip(starts, starts[1:])):
        return None
    lanes = _assign_lanes(intervals)
    if lanes is None:
        return None
    tracks = []
    for (shape, color), (start, end), lane in zip((combos[i] for i in picks), intervals, lanes):
        size = float(rng.uniform(0.18, 0.26))
        half = size / 2 + 0.02
        x0, x1 = rng.uniform(half, 1 - half, size=2)
        lane_c = (lane + 0.5) / NUM_LANES
        y0, y1 = np.clip(lane_c + rng.uniform(-0.03, 0.03, size=2), half, 1 - half)
        tracks.append(ObjectTrack(shape, color, start, end, round(float(x0), 3), round(float(y0), 3),
                                  round(float(x1), 3), round(float(y1), 3), round(size, 3), lane))
    return tuple(sorted(tracks, key=lambda o: o.start))


def _assign_lanes(intervals: list[tuple[float, float]]) -> list[int] | None:
    """Greedy lane per interval so that time-overlapping objects never share a lane."""
    lanes: list[int] = [-1] * len(intervals)
    for i in sorted(range(len(intervals)), key=lambda k: intervals[k]):
        busy = {lanes[j] for j in range(len(intervals)) if lanes[j] >= 0
                and intervals[j][0] < intervals[i][1] and intervals[i][0] < intervals[j][1]}
        free = [lane for lane in range(NUM_LANES) if lane not in busy]
        if not free:
            return None
        lanes[i] = free[0]
    return lanes


def solo_windows(objects: tuple[ObjectTrack, ...], min_len: float) -> list[tuple[float, float, ObjectTrack]]:
    """Sub-intervals of length >= ``min_len`` during which exactly one object is on screen."""
    out = []
    for o in objects:
        a, b = o.start, o.end
        cuts = sorted((p.start, p.end) for p in objects if p is not o and p.start < b and a < p.end)
        cur = a
        for s, e in cuts:
            if s > cur and s - cur >= min_len:
                out.append((cur, s, o))
            cur = max(cur, e)
        if b - cur >= min_len:
            out.append((cur, b, o))
    return out


def after_cut_candidates(cuts: list[float], objects: tuple[ObjectTrack, ...],
                         margin: float = 0.3) -> list[tuple[int, float, ObjectTrack]]:
    """Cuts with an unambiguous first appearance after them: ``(cut number from 1, cut time, object)``.

    A cut qualifies when no object appears within ``margin`` seconds of it and some object appears later.
    """
    out = []
    for k, c in enumerate(cuts, start=1):
        if any(abs(o.start - c) < margin for o in objects):
            continue
        later = [o for o in objects if o.start > c]
        if later:
            out.append((k, c, min(later, key=lambda o: o.start)))
    return out


def _free(t: float, length: float, taken: list[tuple[float, float]], gap: float = 0.3) -> bool:
    return all(t + length + gap <= a or t >= b + gap for a, b in taken)


def _sample_beeps(rng: np.random.Generator, dur: float, objects: tuple[ObjectTrack, ...],
                  cuts: list[float]) -> tuple[Beep, ...] | None:
    """One low beep inside a solo window, then 1-4 high beeps (tied to appearances/cuts or free)."""
    windows = solo_windows(objects, min_len=0.8)
    if not windows:
        return None
    a, b, obj = windows[int(rng.integers(len(windows)))]
    length = _uniform_ds(rng, 0.2, 0.3)
    t_low = _uniform_ds(rng, a + 0.2, b - 0.2 - length)
    beeps = [Beep(t_low, length, "low", round(float(rng.uniform(*LOW_FREQ_RANGE)), 1), f"onscreen:{obj.name}")]
    taken = [(t_low, t_low + length)]
    n_high = int(rng.integers(1, 5))
    anchors: list[tuple[float, str | None]] = [(o.start, f"appear:{o.name}") for o in objects]
    anchors += [(c, f"cut:{i + 1}") for i, c in enumerate(cuts)]
    order = rng.permutation(len(anchors))
    for _ in range(200):
        if sum(bp.pitch == "high" for bp in beeps) == n_high:
            break
        length = _uniform_ds(rng, 0.2, 0.4)
        if rng.random() < 0.5 and len(order):
            t, cause = anchors[int(order[0])]
            order = order[1:]
        else:
            t, cause = _uniform_ds(rng, 0.0, dur - length), None
        if t + length <= dur and _free(t, length, taken):
            beeps.append(Beep(t, length, "high", round(float(rng.uniform(*HIGH_FREQ_RANGE)), 1), cause))
            taken.append((t, t + length))
    else:
        return None
    return tuple(sorted(beeps, key=lambda bp: bp.time))


def _check_params(fps: int, min_duration: float, max_duration: float) -> None:
    if not isinstance(fps, int) or fps < 1:
        raise ScriptError(f"fps must be a positive integer, got {fps!r}")
    if not 4.0 <= min_duration <= max_duration:
        raise ScriptError(f"need 4 <= min_duration <= max_duration, got min_duration={min_duration}, "
                          f"max_duration={max_duration}")
    step = duration_step(fps)
    if math.floor(max_duration / step + 1e-9) < math.ceil(min_duration / step - 1e-9):
        raise ScriptError(f"no duration in [{min_duration}, {max_duration}] is a multiple of {step} s "
                          f"(whole frames at {fps} fps on the 0.1 s grid)")


def sample_script(seed: int, index: int, *, fps: int = 8, min_duration: float = 6.0,
                  max_duration: float = 30.0, max_tries: int = 500) -> EventScript:
    """Sample the script of video ``index`` of a set generated with ``seed`` (pure function of its args).

    Args:
        seed: generator seed of the whole set.
        index: video number inside the set (also gives the video id).
        fps: frame rate the video will be rendered at (the duration is a whole number of frames).
        min_duration, max_duration: duration range in seconds.
        max_tries: rejection-sampling budget.

    Raises:
        ScriptError: bad parameters, or no valid script in ``max_tries`` attempts.
    """
    _check_params(fps, min_duration, max_duration)
    rng = np.random.default_rng([int(seed), int(index), SCRIPT_VERSION])
    step = duration_step(fps)
    lo, hi = math.ceil(min_duration / step - 1e-9), math.floor(max_duration / step + 1e-9)
    for _ in range(max_tries):
        dur = round(int(rng.integers(lo, hi + 1)) * step, 3)
        scenes, gradual = _sample_scenes(rng, dur)
        objects = _sample_objects(rng, dur)
        if objects is None:
            continue
        cuts = [s.start for s in scenes[1:]]
        if not after_cut_candidates(cuts, objects):
            continue  # the "after the cut" question needs a clear first appearance after some cut
        beeps = _sample_beeps(rng, dur, objects, cuts)
        if beeps is None:
            continue
        return EventScript(video_id_for(index), int(seed), int(index), dur, fps, scenes, gradual, objects, beeps)
    raise ScriptError(f"no valid script for seed={seed} index={index} in {max_tries} tries "
                      f"(duration range [{min_duration}, {max_duration}] s)")

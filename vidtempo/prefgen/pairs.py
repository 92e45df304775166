"""TEMPO / TEMPLE preference pairs from self-generated captions: perturbation, pair filters, resumable writer.

For every selected video (:mod:`vidtempo.prefgen.select`) with clip captions
(:mod:`vidtempo.prefgen.captions`) and every perturbation ``drop`` / ``shuffle`` / ``reverse`` at every
magnitude (16, 8, 4, 2), the merged-segment order is perturbed with
:func:`vidtempo.data.perturb.perturb_indices` (identity shuffles re-drawn, a deliberate deviation from
the released code; ``docs/methods/tempo.md``), then:

* ``caption`` domain (the released code; ``docs/methods/prefgen.md``): chosen = the model's
  description of the captions in true order, rejected = its description of the perturbed list; both answer
  the clean video. TEMPLE's pair filters apply: chosen contained in rejected; ``drop`` with a rejected
  answer at least as long as the chosen one; ``shuffle``/``reverse`` with a length ratio above 1.5 either way.
* ``video`` domain (input-side pairs, "the model sees perturbed clips"): the rejected side keeps the chosen
  description but sees a copy of the video whose segments are dropped / shuffled / reversed the same way,
  written with PyAV (``rejected_video``).

Each JSONL record is a :class:`~vidtempo.data.datasets.PreferenceDataset` record whose extra keys
(``perturbation``, ``magnitude``, ``domain``, ``video_id``, ``order``, ...) land in
``PreferenceSample.meta``, where :class:`~vidtempo.training.curriculum.MagnitudeFilter` reads ``magnitude``.

Resumable: a video's pairs are appended in one ``write`` call, then its status line (kept, rejected with the
reason, or undecodable) goes to ``<out stem>.status.jsonl``; a re-run skips every video with a status line
and first removes pair lines of videos without one (a crash between the two writes) and any partial line.

Example:
    >>> pair_filter_reason("A dog runs. It sits.", "It sits.", "drop") is None
    True
    >>> pair_filter_reason("A dog runs.", "A dog runs. It sits.", "drop")
    'chosen is contained in rejected'
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from vidtempo.data.perturb import PERTURBATIONS, perturb_indices, rng_for
from vidtempo.prefgen.captions import CaptionSettings
from vidtempo.prefgen.select import Selection, SelectSettings
from vidtempo.utils.progress import progress_bar

log = logging.getLogger(__name__)

DOMAINS = ("caption", "video")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v")
# The six captioning instructions of TEMPLE's convert_to_swift.py, one drawn per pair.
CAPTION_INSTRUCTIONS: tuple[str, ...] = (
    "Describe the video in detail.",
    "Provide a detailed description of the events of this video.",
    "Break down the video's content into a chronological sequence of events.",
    "Outline the main actions or developments shown in the video.",
    "Describe the timeline of events as they unfold in the footage.",
    "Explain the progression of events from start to finish in the video.",
)


class PrefgenError(ValueError):
    """Outputs that cannot be resumed (written with other settings, or a corrupt line inside a log)."""


@dataclass
class PairSettings:
    """Pair settings (recipe ``prefgen:`` keys).

    Attributes:
        perturbations: any of ``drop``, ``shuffle``, ``reverse``.
        magnitudes: perturbation magnitudes (difficulty levels; 16 easiest, 2 hardest).
        domains: ``caption`` (output-side pairs, released code) and/or ``video`` (input-side pairs).
        pair_filters: apply TEMPLE's caption-domain pair filters.
        max_length_ratio: the shuffle/reverse length-ratio filter (1.5).
        instructions: prompts drawn per pair (TEMPLE's six captioning instructions).
        seed: perturbation, instruction and sampling seed (mixed with the video id).
        video_size: short side of written perturbed videos (None = native size).
        video_dir: folder for perturbed videos (None = ``<out stem>_videos`` next to the output).
    """

    perturbations: list[str] = field(default_factory=lambda: list(PERTURBATIONS))
    magnitudes: list[int] = field(default_factory=lambda: [16, 8, 4, 2])
    domains: list[str] = field(default_factory=lambda: list(DOMAINS))
    pair_filters: bool = True
    max_length_ratio: float = 1.5
    instructions: list[str] = field(default_factory=lambda: list(CAPTION_INSTRUCTIONS))
    seed: int = 0
    video_size: int | None = None
    video_dir: str | None = None

    def check(self, where: str = "prefgen") -> None:
        """Raise ``ValueError`` naming the key when a value is invalid."""
        for kind in self.perturbations:
            if kind not in PERTURBATIONS:
                raise ValueError(
                    f"{where}.perturbations: unknown '{kind}'; valid: {', '.join(PERTURBATIONS)}"
                )
        for dom in self.domains:
            if dom not in DOMAINS:
                raise ValueError(f"{where}.domains: unknown '{dom}'; valid: {', '.join(DOMAINS)}")
        if not self.magnitudes or not all(isinstance(m, int) and m >= 2 for m in self.magnitudes):
            raise ValueError(
                f"{where}.magnitudes: expected a non-empty list of integers >= 2, got {self.magnitudes}"
            )
        if not self.perturbations or not self.domains or not self.instructions:
            raise ValueError(f"{where}: perturbations, domains and instructions must not be empty")
        if self.max_length_ratio < 1:
            raise ValueError(f"{where}.max_length_ratio: expected >= 1, got {self.max_length_ratio}")


@dataclass
class PrefgenSettings:
    """The recipe's flat ``prefgen:`` section, split into its three parts.

    Example:
        >>> s = PrefgenSettings.from_section({"min_clips": 3, "aggregate": "join", "magnitudes": [4, 2]})
        >>> s.select.min_clips, s.caption.aggregate, s.pairs.magnitudes
        (3, 'join', [4, 2])
    """

    select: SelectSettings = field(default_factory=SelectSettings)
    caption: CaptionSettings = field(default_factory=CaptionSettings)
    pairs: PairSettings = field(default_factory=PairSettings)

    PARTS = (("select", SelectSettings), ("caption", CaptionSettings), ("pairs", PairSettings))

    @classmethod
    def from_section(cls, section: Any, recipe: str = "<recipe>") -> PrefgenSettings:
        """Validate a plain ``prefgen`` mapping; errors name the recipe and the key."""
        from vidtempo.config.errors import RecipeError

        section = section or {}
        if not isinstance(section, dict):
            raise RecipeError(
                f"expected a mapping, got {type(section).__name__}", recipe=recipe, key="prefgen"
            )
        parts: dict[str, dict[str, Any]] = {name: {} for name, _ in cls.PARTS}
        owner = {f.name: name for name, kind in cls.PARTS for f in dataclasses.fields(kind)}
        for key, value in section.items():
            if key not in owner:
                raise RecipeError(f"unknown key; valid keys: {', '.join(sorted(owner))}", recipe=recipe,
                                  key=f"prefgen.{key}")  # fmt: skip
            parts[owner[key]][key] = value
        try:
            out = cls(**{name: kind(**parts[name]) for name, kind in cls.PARTS})
            for name, _ in cls.PARTS:
                getattr(out, name).check()
        except (TypeError, ValueError) as err:
            raise RecipeError(str(err), recipe=recipe, key="prefgen") from err
        return out

    def to_dict(self) -> dict[str, Any]:
        """The flat settings (for the run fingerprint)."""
        return {k: v for name, _ in self.PARTS for k, v in dataclasses.asdict(getattr(self, name)).items()}


# ------------------------------------------------------------------------------------------------ helpers
def pair_filter_reason(chosen: str, rejected: str, kind: str, max_ratio: float = 1.5) -> str | None:
    """TEMPLE's pair filters (convert_to_swift.py): the reason a caption-domain pair is dropped, or None."""
    if chosen in rejected:
        return "chosen is contained in rejected"
    if kind == "drop" and len(chosen) <= len(rejected):
        return f"drop: rejected ({len(rejected)} chars) not shorter than chosen ({len(chosen)})"
    if kind in ("shuffle", "reverse") and (len(chosen) > max_ratio * len(rejected) or
                                           len(rejected) > max_ratio * len(chosen)):  # fmt: skip
        return f"{kind}: length ratio {len(chosen)}/{len(rejected)} beyond {max_ratio:g}"
    return None


def video_units(sel: Selection) -> list[tuple[float, float]]:
    """Seconds of the units a perturbed video is cut into: the merged segments, stretched to tile the video.

    Unit k runs from segment k's start to segment k+1's start; the first starts at 0, the last ends at the
    end of the video, so the identity order rebuilds the whole video.
    """
    starts = [s / sel.fps for s, _ in sel.segment_frames()]
    bounds = [0.0, *starts[1:], sel.duration]
    return list(zip(bounds[:-1], bounds[1:]))


def write_perturbed_video(
    source: str | Path, target: str | Path, units: Sequence[tuple[float, float]], order: Sequence[int],
    *, size: int | None = None, backend: str = "pyav", sample_rate: int = 16000,
) -> Path:  # fmt: skip
    """Write ``source`` re-cut as ``units[order[0]], units[order[1]], ...`` (frames and audio) to ``target``.

    Decodes one unit at a time (memory bounded by the longest unit), encodes H.264 (+ AAC mono when the
    source has audio) at the source frame rate, and renames a temporary file into place (no partial file).

    Returns:
        ``target`` as a Path.
    """
    import av

    from vidtempo.data.audio import load_audio
    from vidtempo.data.video import load_clip, open_video

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open_video(source, backend) as dec:
        rate = Fraction(dec.meta.fps).limit_denominator(1001)
    wave, _ = load_audio(source, sr=sample_rate)  # (S,); empty without an audio track
    tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp{target.suffix}")
    try:
        with av.open(str(tmp), mode="w") as out:
            vs, aus, pts = None, None, 0
            for u in order:
                start, end = units[u]
                frames = load_clip(source, start=start, end=end, size=size, backend=backend).frames.numpy()
                h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2  # yuv420p needs even sides
                if vs is None:  # every stream must exist before the first packet is muxed
                    vs = out.add_stream("libx264", rate=rate)
                    vs.height, vs.width, vs.pix_fmt = h, w, "yuv420p"
                    vs.options = {"preset": "ultrafast", "crf": "18", "threads": "1"}
                    aus = out.add_stream("aac", rate=sample_rate, layout="mono") if len(wave) else None
                for img in frames[:, :h, :w]:  # (h, w, 3) each
                    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                    frame.pts, pts = pts, pts + 1
                    out.mux(vs.encode(frame))
            assert vs is not None
            out.mux(vs.encode(None))
            if aus is not None:
                spans = [
                    (int(round(units[u][0] * sample_rate)), int(round(units[u][1] * sample_rate)))
                    for u in order
                ]
                _encode_audio(out, aus, np.concatenate([wave[a:b] for a, b in spans]).astype(np.float32))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _encode_audio(container: Any, stream: Any, wave: np.ndarray) -> None:
    """Encode (S,) float32 mono ``wave`` into the container's AAC ``stream``."""
    import av

    rate = stream.codec_context.sample_rate
    chunk = stream.codec_context.frame_size or 1024
    for i in range(0, len(wave), chunk):
        frame = av.AudioFrame.from_ndarray(wave[None, i : i + chunk], format="fltp", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, i, Fraction(1, rate)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


# ---------------------------------------------------------------------------------------------- building
@dataclass
class VideoResult:
    """The pair records of one video and its status line."""

    records: list[dict[str, Any]]
    status: dict[str, Any]


def build_pairs(sel: Selection, captions: list[str], captioner: Any, settings: PairSettings,
                video_dir: Path, backend: str = "pyav") -> VideoResult:  # fmt: skip
    """Every pair of one selected video (see the module docstring).

    Args:
        sel: the video's selection (``keep`` must be True).
        captions: one caption per merged segment, in time order.
        captioner: has ``describe(list of caption lists) -> list of descriptions``.
        settings: :class:`PairSettings`.
        video_dir: where perturbed videos go.
        backend: video decoder for the video domain.
    """
    n = len(captions)
    if n != len(sel.segments):
        raise ValueError(f"{sel.video}: {n} captions for {len(sel.segments)} merged segments")
    stats: Counter[str] = Counter()
    plans = []
    for kind in settings.perturbations:
        for m in settings.magnitudes:
            order = perturb_indices(n, kind, int(m), rng_for(settings.seed, sel.video_id, kind, str(m)))
            if order is None:
                stats[f"unchanged_{kind}"] += 1
                continue
            plans.append((kind, int(m), order))
    texts = captioner.describe([captions] + [[captions[i] for i in order] for *_, order in plans])
    chosen, records = texts[0], []
    for (kind, m, order), rejected in zip(plans, texts[1:]):
        prompt = settings.instructions[int(rng_for(settings.seed, sel.video_id, kind, str(m), "prompt")
                                           .integers(len(settings.instructions)))]  # fmt: skip
        base = {"video": str(sel.video), "prompt": prompt, "chosen": chosen, "perturbation": kind,
                "magnitude": m, "video_id": sel.video_id, "order": [int(i) for i in order], "num_segments": n,
                "task": "caption"}  # fmt: skip
        if "caption" in settings.domains:
            reason = pair_filter_reason(chosen, rejected, kind, settings.max_length_ratio)
            if reason and settings.pair_filters:
                stats[f"filtered_{kind}"] += 1
                log.debug("%s %s m%d: pair dropped (%s)", sel.video_id, kind, m, reason)
            else:
                records.append({"id": f"{sel.video_id}_caption_{kind}_m{m}", **base, "rejected": rejected,
                                "domain": "caption"})  # fmt: skip
        if "video" in settings.domains:
            target = video_dir / f"{sel.video_id}_{kind}_m{m}.mp4"
            write_perturbed_video(sel.video, target, video_units(sel), order, size=settings.video_size,
                                  backend=backend)  # fmt: skip
            records.append({"id": f"{sel.video_id}_video_{kind}_m{m}", **base, "rejected": chosen,
                            "rejected_video": str(target), "domain": "video"})  # fmt: skip
    status = {"video_id": sel.video_id, "video": str(sel.video), "status": "kept", "pairs": len(records),
              "stats": dict(stats), "captions": captions, "chosen": chosen,
              "selection": sel.to_record()}  # fmt: skip
    return VideoResult(records, status)


# ------------------------------------------------------------------------------------------------- writer
class PairWriter:
    """Append-only pairs JSONL plus a per-video status log; resumable and crash-safe.

    Args:
        out: the pairs file (``.jsonl``).
        fingerprint: settings of this run; resuming with a different one raises :class:`PrefgenError`.
        fresh: delete previous outputs first.

    Example:
        >>> import tempfile, pathlib
        >>> w = PairWriter(pathlib.Path(tempfile.mkdtemp()) / "pairs.jsonl", {"seed": 0})
        >>> w.write([{"id": "a"}], {"video_id": "v1", "status": "kept"})
        >>> sorted(PairWriter(w.out, {"seed": 0}).done)
        ['v1']
    """

    def __init__(self, out: str | Path, fingerprint: dict[str, Any], fresh: bool = False) -> None:
        self.out = Path(out)
        self.status_path = self.out.with_name(f"{self.out.stem}.status.jsonl")
        if fresh:
            self.out.unlink(missing_ok=True)
            self.status_path.unlink(missing_ok=True)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()[
            :16
        ]
        rows = _read_jsonl(self.status_path)
        if rows and rows[0].get("run") != digest:
            raise PrefgenError(
                f"{self.status_path}: written by a run with other settings ({rows[0].get('settings')}); "
                "use --fresh to start over or another --out"
            )
        if not rows:
            _append(self.status_path, [{"run": digest, "settings": fingerprint}])
        self.statuses = {str(r["video_id"]): r for r in rows[1:] if "video_id" in r}
        self.done = set(self.statuses)
        self._clean_pairs()

    def _clean_pairs(self) -> None:
        """Drop a partial last line and the pairs of videos without a status line (interrupted writes)."""
        if not self.out.is_file():
            return
        data = self.out.read_bytes()
        lines = data.split(b"\n")
        complete, tail = lines[:-1], lines[-1]
        try:
            kept = [ln for ln in complete if ln.strip() and str(json.loads(ln).get("video_id")) in self.done]
        except json.JSONDecodeError as err:
            raise PrefgenError(
                f"{self.out}: a line is not JSON ({err.msg}); delete it or use --fresh"
            ) from err
        if tail or len(kept) != len([ln for ln in complete if ln.strip()]):
            log.warning("%s: removing %d pair lines of unfinished videos%s", self.out,
                        len(complete) - len(kept), " and a partial last line" if tail else "")  # fmt: skip
            tmp = self.out.with_name(f".{self.out.name}.{os.getpid()}.tmp")
            tmp.write_bytes(b"".join(ln + b"\n" for ln in kept))
            os.replace(tmp, self.out)

    def write(self, records: list[dict[str, Any]], status: dict[str, Any]) -> None:
        """Append one video's pairs (one ``write`` call), then its status line."""
        _append(self.out, records)
        _append(self.status_path, [status])
        self.done.add(str(status["video_id"]))
        self.statuses[str(status["video_id"])] = status


def _append(path: Path, rows: list[dict[str, Any]]) -> None:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:  # one call for a regular file; loop only on a short write
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL log; a partial last line (crash) is ignored, any other bad line raises."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            if n == len(lines):
                log.warning("%s: ignoring a partial last line (interrupted run)", path)
                continue
            raise PrefgenError(f"{path}: line {n} is not JSON ({err.msg}); delete it or use --fresh") from err
    return rows


# ----------------------------------------------------------------------------------------------- pipeline
def find_videos(inputs: Sequence[str | Path]) -> list[Path]:
    """Video files from files and folders (searched recursively for video suffixes), in a stable order."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"--videos: {path} is neither a video file nor a folder")
    return found


def video_ids(paths: Sequence[Path]) -> list[str]:
    """File stems; stems shared by several files get a short hash of the full path appended."""
    stems = Counter(p.stem for p in paths)
    return [p.stem if stems[p.stem] == 1 else f"{p.stem}-{zlib.crc32(str(p.resolve()).encode()):08x}"
            for p in paths]  # fmt: skip


def prefgen_progress(enabled: bool) -> Any:
    """The prefgen progress bar (tasks take a ``note`` field); disabled = silent."""
    return progress_bar(enabled, title="prefgen")


def run_prefgen(
    videos: Sequence[str | Path], out: str | Path, settings: PrefgenSettings, captioner: Any, *,
    embed: Any = None, fingerprint: dict[str, Any] | None = None, fresh: bool = False, progress: bool = True,
    limit: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Select, caption and pair every video; append to ``out`` and return the run's counts.

    Args:
        videos: video files and/or folders.
        out: the pairs JSONL.
        settings: :class:`PrefgenSettings`.
        captioner: a :class:`~vidtempo.prefgen.captions.SelfCaptioner` (``caption_clips``, ``describe``).
        embed: clip embedder for grouping (None = pixel features).
        fingerprint: extra run identity (e.g. the checkpoint) stored with the settings.
        fresh: start over (delete ``out`` and its status log).
        progress: show a rich progress bar.
        limit: process at most this many videos.
    """
    import torch

    from vidtempo.data.errors import VideoDecodeError
    from vidtempo.prefgen.select import select_video

    out = Path(out)
    paths = find_videos(videos)[:limit]
    ids = video_ids(paths)
    writer = PairWriter(out, {**settings.to_dict(), **(fingerprint or {})}, fresh=fresh)
    video_dir = (
        Path(settings.pairs.video_dir) if settings.pairs.video_dir else out.with_name(f"{out.stem}_videos")
    )
    counts: Counter[str] = Counter()
    todo = [(p, v) for p, v in zip(paths, ids) if v not in writer.done]
    counts["skipped_finished"] = len(paths) - len(todo)
    with prefgen_progress(progress) as bar:
        task = bar.add_task("prefgen", total=len(paths), completed=len(paths) - len(todo), note="")
        for path, vid in todo:
            torch.manual_seed(int(rng_for(settings.pairs.seed, vid, "torch").integers(2**31)))
            try:
                sel = select_video(path, settings.select, embed, video_id=vid)
                if not sel.keep:
                    status = {"video_id": vid, "video": str(path), "status": "rejected", "reason": sel.reason}
                    result = VideoResult([], {**status, "selection": sel.to_record()})
                else:
                    captions = captioner.caption_clips(str(path), sel.segment_times())
                    result = build_pairs(
                        sel, captions, captioner, settings.pairs, video_dir, settings.select.backend
                    )
            except VideoDecodeError as err:
                result = VideoResult(
                    [], {"video_id": vid, "video": str(path), "status": "error", "reason": str(err)}
                )
            writer.write(result.records, result.status)
            counts[result.status["status"]] += 1
            counts["pairs"] += len(result.records)
            bar.update(task, advance=1, note=f"kept {counts['kept']} rejected {counts['rejected']} "
                                             f"pairs {counts['pairs']}")  # fmt: skip
    log.info("prefgen %s: %s", out, dict(counts))
    return dict(counts)


__all__ = [
    "CAPTION_INSTRUCTIONS", "DOMAINS", "PairSettings", "PairWriter", "PrefgenError", "PrefgenSettings",
    "VideoResult",
    "build_pairs", "find_videos", "pair_filter_reason", "prefgen_progress", "rng_for", "run_prefgen", "video_ids", "video_units",
    "write_perturbed_video",
]  # fmt: skip

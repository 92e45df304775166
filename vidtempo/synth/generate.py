"""Generate a TempoSynth set: videos, per-split annotations and ``manifest.json``.

Layout of ``out_dir``::

    videos/ts000000.mp4 ...            H.264 + AAC, all splits together
    annotations/{train,val,test}/...   see vidtempo.synth.annotate.ANNOTATION_FILES
    manifest.json                      seed, parameters, per-split video ids, file list, version

Re-running with the same arguments keeps every finished video (a video is finished when its mp4 opens, has the
expected frame count and carries the fingerprint of its script), deletes temporary files left by an interrupted
run and re-renders the rest. Annotations and the manifest are rewritten (cheap, deterministic).

Example:
    >>> import tempfile
    >>> from vidtempo.synth.generate import generate
    >>> m = generate(tempfile.mkdtemp(), num_videos=3, seed=0, size=32, max_duration=8, progress=False)
    >>> sum(len(v) for v in m.splits.values())
    3
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vidtempo.synth.annotate import ANNOTATION_FILES, atomic_write_text, build_split, write_split
from vidtempo.synth.render import DEFAULT_SAMPLE_RATE, is_valid_video, remove_stale_temp_files, write_video
from vidtempo.synth.script import SCRIPT_VERSION, EventScript, ScriptError, sample_script
from vidtempo.utils.processes import die_with_parent

if TYPE_CHECKING:
    from rich.progress import Progress

MANIFEST_VERSION = 1
SPLIT_NAMES = ("train", "val", "test")


@dataclass
class Manifest:
    """What a generation run produced (``manifest.json``).

    Attributes:
        root: the output folder.
        seed: generator seed.
        params: every generation parameter (num_videos, size, fps, durations, splits, sample_rate).
        splits: split name -> video ids.
        files: relative paths: ``{"videos": [...], "annotations": {split: {kind: path}}, "manifest": ...}``.
        version: manifest format version.
        stats: counts from the run (rendered, kept, removed temporary files).

    Example:
        >>> m = Manifest(Path("."), 0, {}, {"test": ["ts000000"]}, {"annotations": {}})
        >>> m.video_path("ts000000").name
        'ts000000.mp4'
    """

    root: Path
    seed: int
    params: dict[str, Any]
    splits: dict[str, list[str]]
    files: dict[str, Any]
    version: int = MANIFEST_VERSION
    stats: dict[str, int] = field(default_factory=dict)

    def video_path(self, video_id: str) -> Path:
        """Absolute path of one video."""
        return self.root / "videos" / f"{video_id}.mp4"

    def annotation_path(self, split: str, kind: str) -> Path:
        """Absolute path of one annotation file, e.g. ``("test", "grounding")``."""
        try:
            return self.root / self.files["annotations"][split][kind]
        except KeyError as err:
            raise KeyError(f"{self.root / 'manifest.json'}: no annotation '{kind}' for split '{split}' "
                           f"(splits: {sorted(self.files.get('annotations', {}))}, "
                           f"kinds: {sorted(ANNOTATION_FILES)})") from err

    def scripts(self, split: str | None = None) -> dict[str, EventScript]:
        """Video id -> event script, read from the ``scripts.json`` of one split (all splits when None)."""
        out: dict[str, EventScript] = {}
        for name in [split] if split is not None else list(self.splits):
            path = self.annotation_path(name, "scripts")
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as err:
                raise ValueError(f"{path}: cannot read the event scripts ({err})") from err
            out.update({vid: EventScript.from_dict(d) for vid, d in data.items()})
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("root")
        d["generator"] = "temposynth"
        return d

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        """Read ``manifest.json`` (or the folder holding it)."""
        path = Path(path)
        if path.is_dir():
            path = path / "manifest.json"
        try:
            d = json.loads(path.read_text())
            return cls(path.parent, d["seed"], d["params"], d["splits"], d["files"], d["version"],
                       d.get("stats", {}))
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: not a TempoSynth manifest ({err!r})") from err


def split_counts(n: int, ratios: tuple[float, ...]) -> list[int]:
    """Videos per split: rounded shares; every split with a positive ratio gets >= 1 when ``n`` allows.

    Example:
        >>> split_counts(10, (0.8, 0.1, 0.1)), split_counts(3, (0.8, 0.1, 0.1))
        ([8, 1, 1], [1, 1, 1])
    """
    if (len(ratios) != len(SPLIT_NAMES) or any(r < 0 for r in ratios)
            or not math.isclose(sum(ratios), 1.0, abs_tol=1e-6)):
        raise ValueError(f"splits must be 3 non-negative ratios (train, val, test) summing to 1, got {ratios}")
    counts = [round(n * r) for r in ratios]
    positive = [i for i, r in enumerate(ratios) if r > 0]
    if n >= len(positive):
        for i in positive:
            counts[i] = max(counts[i], 1)
    while sum(counts) != n:  # fix the total on the largest split
        i = max(range(len(counts)), key=lambda k: counts[k])
        counts[i] += 1 if sum(counts) < n else -1
    return counts


def assign_splits(n: int, seed: int, ratios: tuple[float, ...]) -> dict[str, list[int]]:
    """Video indices per split, by a seeded permutation (each split sorted)."""
    perm = np.random.default_rng([int(seed), 0x5917]).permutation(n)
    out, start = {}, 0
    for name, count in zip(SPLIT_NAMES, split_counts(n, ratios)):
        out[name] = sorted(int(i) for i in perm[start:start + count])
        start += count
    return out


def _check(num_videos: int, size: int) -> None:
    if not isinstance(num_videos, int) or num_videos < 1:
        raise ValueError(f"num_videos must be a positive integer, got {num_videos!r}")
    if not isinstance(size, int) or size < 16 or size % 2:
        raise ValueError(f"size must be an even integer >= 16 (H.264 yuv420p), got {size!r}")


def _progress(enabled: bool) -> Progress:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[note]}"), TimeElapsedColumn(), TextColumn("eta"),
                    TimeRemainingColumn(), disable=not enabled)


def render_all(scripts: list[EventScript], videos_dir: Path, *, size: int, sample_rate: int,
               progress: bool, workers: int = 1) -> dict[str, int]:
    """Render the videos that are not already finished; returns ``{"rendered", "kept"}`` counts.

    ``workers > 1`` renders in that many processes (each video is independent and written atomically, so
    the result is byte-for-byte the same as with one process)."""
    stats = {"rendered": 0, "kept": 0}
    with _progress(progress) as bar:
        task = bar.add_task("TempoSynth videos", total=len(scripts), note="")

        def advance(key: str) -> None:
            stats[key] += 1
            bar.update(task, advance=1, note=f"{stats['rendered']} rendered, {stats['kept']} kept")

        todo = []
        for s in scripts:
            path = videos_dir / f"{s.video_id}.mp4"
            if is_valid_video(path, s, size=size, sample_rate=sample_rate):
                advance("kept")
            else:
                todo.append((s, path))
        if workers <= 1 or len(todo) < 2:
            for s, path in todo:
                write_video(s, path, size=size, sample_rate=sample_rate)
                advance("rendered")
            return stats
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
            futures = [pool.submit(write_video, s, path, size=size, sample_rate=sample_rate) for s, path in todo]
            for future in as_completed(futures):
                future.result()  # re-raises a RenderError from the worker
                advance("rendered")
    return stats


def generate(out_dir: str | Path, num_videos: int, seed: int, size: int = 64, fps: int = 8,
             min_duration: float = 6, max_duration: float = 30,
             splits: tuple[float, float, float] = (0.8, 0.1, 0.1), progress: bool = True,
             workers: int = 1) -> Manifest:
    """Generate (or finish) a TempoSynth set in ``out_dir``.

    Args:
        out_dir: output folder (created).
        num_videos: number of videos over all splits.
        seed: generator seed; the same arguments give the same scripts and annotation files.
        size: frame side in pixels (even, >= 16).
        fps: frame rate (integer).
        min_duration, max_duration: duration range in seconds (>= 4).
        splits: (train, val, test) ratios, split by video.
        progress: show a rich progress bar.
        workers: rendering processes (same output for any value).

    Returns:
        The :class:`Manifest`, also written to ``out_dir/manifest.json``.

    Raises:
        ValueError: bad arguments (``ScriptError`` for fps/durations).
        RenderError: a video could not be encoded.
    """
    _check(num_videos, size)
    root = Path(out_dir)
    videos_dir = root / "videos"
    videos_dir.mkdir(parents=True, exist_ok=True)
    scripts = [sample_script(seed, i, fps=fps, min_duration=min_duration, max_duration=max_duration)
               for i in range(num_videos)]
    by_split = assign_splits(num_videos, seed, tuple(splits))
    removed = remove_stale_temp_files(videos_dir)
    stats = render_all(scripts, videos_dir, size=size, sample_rate=DEFAULT_SAMPLE_RATE, progress=progress,
                       workers=workers)
    stats["removed_temp_files"] = len(removed)
    files: dict[str, Any] = {"videos": [f"videos/{s.video_id}.mp4" for s in scripts], "annotations": {}}
    for split, idx in by_split.items():
        ann = build_split([scripts[i] for i in idx], seed, split)
        paths = write_split(ann, root / "annotations" / split)
        files["annotations"][split] = {k: p.relative_to(root).as_posix() for k, p in paths.items()}
    files["manifest"] = "manifest.json"
    params = {"num_videos": num_videos, "size": size, "fps": fps, "min_duration": min_duration,
              "max_duration": max_duration, "splits": list(splits), "sample_rate": DEFAULT_SAMPLE_RATE,
              "script_version": SCRIPT_VERSION}
    manifest = Manifest(root, int(seed), params, {k: [scripts[i].video_id for i in v] for k, v in by_split.items()},
                        files, stats=stats)
    # stats vary between runs (rendered vs kept); keep them out of the file so re-runs give identical bytes
    payload = {k: v for k, v in manifest.to_dict().items() if k != "stats"}
    atomic_write_text(root / "manifest.json", json.dumps(payload, indent=1) + "\n")
    return manifest


__all__ = ["Manifest", "ScriptError", "assign_splits", "generate", "split_counts"]

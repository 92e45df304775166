"""Decoding benchmark: 24 sampled frames per backend (PyAV, decord, torchcodec) vs decode-everything-then-index.

Usage: ``python benchmarks/decode.py [--workdir DIR] [--repeats 5]`` (``make bench`` runs it with 3 repeats).

Every measurement is one call of ``load_clip(path, num_frames=24, backend=...)``: its wall time (file open and
index scan included) and its peak RSS growth (``VmHWM`` after the call minus before it, the peak mark reset to
the current RSS first through ``/proc/self/clear_refs``). Each backend runs in a fresh subprocess per round
(imports and a warm-up decode of a 1 s clip first, so library loading is not counted), which decodes the 60 s
video, then the 600 s one. Two H.264 videos,
640x360, 25 fps, keyframe every 2 s: 60 s (1,500 frames) and 600 s (15,000 frames). Repeats are interleaved
(every backend and video once per round) so load spikes of a shared machine hit all alike; the table gives the
median and the min-max spread, each call's time as a ratio to PyAV's (the default backend) in the same round
(median and spread over rounds), and the ratio of best times. The naive baseline (PyAV decodes every frame to RGB, keeps them all, then indexes) runs on the
60 s video only: on 600 s it would hold 15,000 RGB frames (about 10 GB).

The test videos are written once into ``--workdir`` (default: a temp folder) with vidtempo.data.testing.
Ends with ``RESULT case=<video> method=<backend> ...`` lines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

NUM_FRAMES = 24
FPS = 25
SIZE = (640, 360)  # (W, H)


def make_video(workdir: Path, seconds: int) -> Path:
    """The benchmark video of ``seconds`` seconds (reused when already written)."""
    from vidtempo.data.testing import make_test_video

    path = workdir / f"bench_{seconds}s_{SIZE[0]}x{SIZE[1]}.mp4"
    if not path.exists():
        t0 = time.perf_counter()
        tmp = path.with_suffix(".part.mp4")
        make_test_video(tmp, duration=seconds, fps=FPS, size=SIZE, audio=False, gop=2 * FPS, beeps=())
        tmp.rename(path)
        print(f"  wrote {path.name} in {time.perf_counter() - t0:.1f} s", flush=True)
    return path


def naive_decode_all(path: Path, num_frames: int = NUM_FRAMES) -> np.ndarray:
    """Baseline: decode and convert every frame, keep them all, then take the uniform indices."""
    import av

    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    n = len(frames)
    idx = ((np.arange(num_frames) + 0.5) * n / num_frames).astype(int)
    return np.stack([frames[i] for i in idx])  # (T, H, W, 3)


def run_once(path: Path, method: str) -> int:
    """Decode 24 frames with ``method`` (a backend name or ``naive``); returns frames obtained."""
    if method == "naive":
        return len(naive_decode_all(path))
    from vidtempo.data.video import load_clip

    return len(load_clip(path, num_frames=NUM_FRAMES, backend=method).frames)


def available(method: str) -> str | None:
    """None when ``method`` can run here, else the reason it cannot."""
    if method == "decord":
        try:
            import decord  # noqa: F401
        except ImportError as err:
            return str(err)
    if method == "torchcodec":
        from vidtempo.data.video import _import_torchcodec

        try:
            _import_torchcodec()
        except ImportError as err:
            return str(err).split(":")[0]
    return None


def peak_rss_kib() -> int:
    """Peak resident set of this process in KiB: ``VmHWM`` (reset by exec), else ``ru_maxrss``.

    ``ru_maxrss`` survives fork+exec, so a child of a large parent would start at the parent's peak.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (``/proc/self/clear_refs`` = 5, Linux >= 4.0); False if not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def child_rss(method: str, paths: list[str]) -> None:
    """Subprocess body: after imports and a warm-up, one call of ``method`` per path; prints one JSON line per
    path with the call's seconds and peak-RSS growth (MiB; the peak mark reset before each call)."""
    from vidtempo.data.testing import make_test_video
    from vidtempo.data.video import load_clip

    with tempfile.TemporaryDirectory() as tmp:  # load codec libraries before the baseline reading
        warm = make_test_video(Path(tmp) / "warm.mp4", duration=1.0, fps=8, audio=False, beeps=())
        load_clip(warm, num_frames=2, backend="pyav" if method == "naive" else method)
    for path in paths:
        reset = reset_peak_rss()
        before = peak_rss_kib()
        t0 = time.perf_counter()
        got = run_once(Path(path), method)
        seconds = time.perf_counter() - t0
        after = peak_rss_kib()
        if got != NUM_FRAMES:
            raise RuntimeError(f"{method}: {got} frames instead of {NUM_FRAMES}")
        print(json.dumps({"path": path, "rss_growth_mib": (after - before) / 1024, "seconds": seconds,
                          "peak_reset": reset}))  # fmt: skip


def measure(method: str, paths: list[Path]) -> dict[Path, dict]:
    """One fresh subprocess for ``method``, one call per path: {path: {"seconds", "rss_growth_mib"}}."""
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", method, *map(str, paths)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if out.returncode:
        raise RuntimeError(f"{method} failed: {out.stderr.strip().splitlines()[-1:]}")
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return {Path(r["path"]): r for r in rows}


def versions() -> str:
    import av
    import torch

    parts = [f"torch {torch.__version__}", f"PyAV {av.__version__} (bundled FFmpeg)"]
    try:
        import decord

        parts.append(f"decord {decord.__version__}")
    except ImportError:
        pass
    try:
        import torchcodec

        parts.append(f"torchcodec {torchcodec.__version__} (system FFmpeg)")
    except ImportError:
        pass
    return ", ".join(parts)


def spread(values: list[float], fmt: str = "{:.3f}") -> str:
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "vidtempo_bench")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rss-child", nargs="+", metavar="METHOD PATH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        child_rss(args.rss_child[0], args.rss_child[1:])
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; {versions()}")  # fmt: skip
    videos = {"60s": make_video(args.workdir, 60), "600s": make_video(args.workdir, 600)}
    methods = []
    for m in ("pyav", "decord", "torchcodec"):
        reason = available(m)
        if reason:
            print(f"  {m}: skipped ({reason})")
        else:
            methods.append(m)
    cases = [(v, m) for v in videos for m in methods] + [("60s", "naive")]
    runs: dict[tuple[str, str], list[dict]] = {c: [] for c in cases}
    for r in range(args.repeats):
        for method in [*methods, "naive"]:
            names = [v for v, m in cases if m == method]
            got = measure(method, [videos[v] for v in names])
            for v in names:
                runs[(v, method)].append(got[videos[v]])
        print(f"  round {r + 1}/{args.repeats} done (load average {os.getloadavg()[0]:.1f})", flush=True)
    print(f"\n24 uniform frames, one fresh subprocess per backend and round (60 s then 600 s), "
          f"{args.repeats} interleaved rounds: median (min-max)")
    print("x PyAV: this call's time / PyAV's in the same round (median and min-max over rounds); x PyAV (min):")
    print("best time / PyAV's best time, the least disturbed by other load")
    print(f"{'video':<6}{'method':<24}{'seconds':>22}{'x PyAV':>20}{'x PyAV (min)':>14}{'peak RSS growth MiB':>24}")
    lines = []
    for video, method in cases:
        secs = [x["seconds"] for x in runs[(video, method)]]
        rss = [x["rss_growth_mib"] for x in runs[(video, method)]]
        base = [x["seconds"] for x in runs[(video, "pyav")]] if "pyav" in methods else [float("nan")] * len(secs)
        ratios = [a / b for a, b in zip(secs, base)]  # paired by round: both ran seconds apart
        best = min(secs) / min(base)
        name = "naive (PyAV decode-all)" if method == "naive" else method
        print(f"{video:<6}{name:<24}{spread(secs):>22}{spread(ratios, '{:.2f}'):>20}{best:>13.2f}x"
              f"{spread(rss, '{:.1f}'):>24}")  # fmt: skip
        lines.append(f"RESULT case=decode_{video} method={method} frames={NUM_FRAMES} repeats={args.repeats} "
                     f"seconds_median={statistics.median(secs):.4f} seconds_min={min(secs):.4f} "
                     f"seconds_max={max(secs):.4f} vs_pyav_median={statistics.median(ratios):.3f} "
                     f"vs_pyav_min={min(ratios):.3f} vs_pyav_max={max(ratios):.3f} vs_pyav_best={best:.3f} "
                     f"rss_mib_median={statistics.median(rss):.1f} rss_mib_min={min(rss):.1f} "
                     f"rss_mib_max={max(rss):.1f}")  # fmt: skip
    print("naive on 600s: not run (would hold ~10 GB of RGB frames)\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

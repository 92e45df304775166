"""Decoding benchmark: sample-then-decode (every backend) vs decode-everything-then-index.

Usage: ``python benchmarks/decode.py [--workdir DIR] [--repeats 3]`` (``make bench``).

1. Speed: 24 uniform frames from a 60 s 640x360 H.264 video (25 fps, keyframe every 2 s), per backend, and
   the naive baseline in the same run (PyAV decodes every frame to RGB, keeps them all, then indexes).
2. Memory: peak RSS growth (``VmHWM`` after minus before the call, each in a fresh subprocess) for
   60 s vs 600 s videos. The naive baseline is measured on 60 s only: on 600 s it would hold 15,000 RGB
   frames (about 10 GB).

The test videos are written once into ``--workdir`` (default: a temp folder) with vidtempo.data.testing.
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


def child_rss(path: str, method: str) -> None:
    """Subprocess body: print peak-RSS growth (MiB) of one decode, after imports and a warm-up."""
    from vidtempo.data.testing import make_test_video
    from vidtempo.data.video import load_clip

    warm = Path(tempfile.mkdtemp()) / "warm.mp4"  # load codec libraries before the baseline reading
    make_test_video(warm, duration=1.0, fps=8, audio=False, beeps=())
    load_clip(warm, num_frames=2, backend="pyav" if method == "naive" else method)
    before = peak_rss_kib()
    t0 = time.perf_counter()
    run_once(Path(path), method)
    seconds = time.perf_counter() - t0
    after = peak_rss_kib()
    print(json.dumps({"rss_growth_mib": (after - before) / 1024, "seconds": seconds}))


def measure_rss(path: Path, method: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", str(path), method],
        capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def speed(path: Path, methods: list[str], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {m: [] for m in methods}
    for m in methods:  # warm-up: library loads and page cache
        run_once(path, m)
    for _ in range(repeats):  # interleaved so load spikes hit every method alike
        for m in methods:
            t0 = time.perf_counter()
            assert run_once(path, m) == NUM_FRAMES
            times[m].append(time.perf_counter() - t0)
    return {m: statistics.median(v) for m, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "vidtempo_bench")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rss-child", nargs=2, metavar=("PATH", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        child_rss(*args.rss_child)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    short, long = make_video(args.workdir, 60), make_video(args.workdir, 600)
    methods = []
    for m in ("pyav", "decord", "torchcodec"):
        reason = available(m)
        if reason:
            print(f"  {m}: skipped ({reason})")
        else:
            methods.append(m)
    medians = speed(short, [*methods, "naive"], args.repeats)
    base = medians["naive"]
    print(f"\n24 uniform frames from 60 s {SIZE[0]}x{SIZE[1]} H.264 ({FPS} fps, keyframe every 2 s), "
          f"median of {args.repeats}:")
    print(f"{'method':<24}{'seconds':>9}{'frames/s':>10}{'vs naive':>10}")
    for m in [*methods, "naive"]:
        name = "naive (PyAV decode-all)" if m == "naive" else m
        print(f"{name:<24}{medians[m]:>9.3f}{NUM_FRAMES / medians[m]:>10.1f}{base / medians[m]:>9.1f}x")
    print("\npeak RSS growth of one call (fresh subprocess each), MiB (call seconds in brackets):")
    print(f"{'method':<24}{'60 s video':>18}{'600 s video':>18}")
    for m in [*methods, "naive"]:
        cells = []
        for path in (short, long):
            if m == "naive" and path == long:
                cells.append("not run (~10 GB)")
                continue
            r = measure_rss(path, m)
            cells.append(f"{r['rss_growth_mib']:.1f} ({r['seconds']:.2f} s)")
        print(f"{m:<24}{cells[0]:>18}{cells[1]:>18}")


if __name__ == "__main__":
    main()

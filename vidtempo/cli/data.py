"""``vidtempo data ...``: data sub-commands. Currently ``synth`` (generate a TempoSynth set).

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="vidtempo data")
    >>> add_arguments(parser)
    >>> args = parser.parse_args(["synth", "--out", "/tmp/ts", "--num-videos", "4", "--seed", "1"])
    >>> args.data_command, args.num_videos, args.size, args.splits
    ('synth', 4, 64, [0.8, 0.1, 0.1])
"""

from __future__ import annotations

import argparse
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``synth`` sub-command (and its flags) under ``parser``."""
    subs = parser.add_subparsers(dest="data_command", metavar="{synth}", required=True)
    p = subs.add_parser("synth", help="generate TempoSynth videos and annotations",
                        description="Generate TempoSynth: H.264 + AAC videos with scripted cuts, moving shapes "
                                    "and beeps, plus grounding / multiple-choice / caption / retrieval "
                                    "annotations split by video. Re-running finishes an interrupted set.")
    p.add_argument("--out", required=True, help="output folder (videos/, annotations/, manifest.json)")
    p.add_argument("--num-videos", type=int, required=True, help="number of videos over all splits")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument("--size", type=int, default=64, help="frame side in pixels, even (default 64)")
    p.add_argument("--fps", type=int, default=8, help="frames per second (default 8)")
    p.add_argument("--min-duration", type=float, default=6.0, help="shortest video in seconds (default 6)")
    p.add_argument("--max-duration", type=float, default=30.0, help="longest video in seconds (default 30)")
    p.add_argument("--splits", type=float, nargs=3, default=[0.8, 0.1, 0.1], metavar=("TRAIN", "VAL", "TEST"),
                   help="split ratios by video (default 0.8 0.1 0.1)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--workers", type=int, default=1,
                   help="rendering processes, 0 = one per CPU core (same files for any value; default 1)")


def run(args: argparse.Namespace) -> int:
    """Run the chosen data sub-command; returns the exit code (2 for bad arguments)."""
    if args.data_command != "synth":  # pragma: no cover - argparse restricts the choices
        print(f"unknown data command '{args.data_command}'", file=sys.stderr)
        return 2
    from vidtempo.synth.generate import generate
    from vidtempo.synth.render import RenderError

    try:
        m = generate(args.out, args.num_videos, args.seed, size=args.size, fps=args.fps,
                     min_duration=args.min_duration, max_duration=args.max_duration,
                     splits=tuple(args.splits), progress=not args.no_progress,
                     workers=args.workers or os.cpu_count() or 1)
    except (ValueError, RenderError) as err:
        print(f"vidtempo data synth: error: {err}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{k} {len(v)}" for k, v in m.splits.items())
    print(f"TempoSynth: {sum(len(v) for v in m.splits.values())} videos ({counts}); "
          f"{m.stats.get('rendered', 0)} rendered, {m.stats.get('kept', 0)} kept; "
          f"manifest {m.root / 'manifest.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m vidtempo.cli.data synth --out DIR --num-videos N``."""
    parser = argparse.ArgumentParser(prog="vidtempo data")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

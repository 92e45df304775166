"""``vidtempo demo``: the main job end to end on embedded data, no download.

1. generate a small TempoSynth set (real H.264 + AAC videos with exact temporal ground truth);
2. train ``recipes/tiny/synth_all.yaml`` (a from-scratch tiny video LLM that sees and hears: grounding,
   ordering, audio-visual and two more tasks) on CPU, time-boxed;
3. evaluate it on the test split with the time-shuffle and blind controls and print the table (multiple
   choice by option likelihood, the recipe's ``eval.mcq_scoring``).

``--recipe recipes/tiny/synth_grounding.yaml`` runs the earlier, vision-only demo (grounding only).

Everything is resumable: running it again reuses the data, the finished training and the generations.
"""

from __future__ import annotations

import argparse
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "tiny" / "synth_all.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo", help="output folder (data, run, eval)")
    parser.add_argument("--recipe", default=str(RECIPE), help="training recipe")
    parser.add_argument("--num-videos", type=int, default=1200, help="TempoSynth videos over all splits")
    parser.add_argument("--minutes", type=float, default=7.0, help="training time box")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="step cap (default: the recipe's trainer.max_steps; the time box usually ends first)")
    parser.add_argument("--limit", type=int, default=60, help="evaluate at most N items per task (0 = all)")


def run(args: argparse.Namespace) -> int:
    from vidtempo.cli.main import main

    out = Path(args.out).resolve()
    data = out / "data"
    seconds = int(args.minutes * 60)
    overrides = [
        f"output_dir={out / 'run'}",
        f"data.train.root={data}", f"data.val.root={data}",
        f"data.train.num_videos={args.num_videos}", f"data.val.num_videos={args.num_videos}",
        *([f"trainer.max_steps={args.max_steps}"] if args.max_steps else []),
        f"trainer.max_time='00:00:{seconds // 60:02d}:{seconds % 60:02d}'",
    ]  # fmt: skip
    steps = [
        ["data", "synth", "--out", str(data), "--num-videos", str(args.num_videos), "--seed", "0",
         "--max-duration", "20", "--workers", "0"],
        ["train", args.recipe, *overrides],
        ["eval", args.recipe, *overrides, "--checkpoint", str(out / "run" / "0_sft" / "final"),
         "--benchmark", "synth", "--annotations", str(data), "--out", str(out / "eval"),
         *(["--limit", str(args.limit)] if args.limit else []), "--no-progress"],
    ]  # fmt: skip
    for step in steps:
        print(f"\n$ vidtempo {' '.join(step)}", flush=True)
        code = main(step)
        if code:
            return code
    print(f"\ndemo outputs in {out}: run/ (checkpoints, logs), eval/report.json, eval/generations.jsonl")
    return 0

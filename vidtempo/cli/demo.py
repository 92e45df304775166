"""``vidtempo demo``: the main job end to end on embedded data, no download.

1. generate a small TempoSynth set (real H.264 + AAC videos with exact temporal ground truth);
2. train ``recipes/tiny/synth_all.yaml`` (a from-scratch tiny video LLM that sees and hears: grounding,
   ordering, audio-visual and two more tasks) on CPU for a **fixed number of steps** (the recipe's
   ``trainer.max_steps``; two CPU processes, DDP), so the result depends on the step count and the seed, not on
   the machine's speed. A time box is only a safety net: a run it cuts short says so above the table;
3. evaluate it on the test split with the time-shuffle and blind controls (multiple choice by option
   likelihood, the recipe's ``eval.mcq_scoring``) and print the results, then each target of the TempoSynth
   issue beside its measure (met or not), with the steps, steps/s and wall time.

``--minutes M`` sets the time box for a quicker look (the table then says where it stopped);
``--recipe recipes/tiny/synth_grounding.yaml`` runs the earlier, vision-only demo (grounding only).

While training starts up, this process imports what the evaluation needs (``preload``: seconds of one core
that would otherwise come after training). Everything is resumable: running it again reuses the data, the
finished training and the generations.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "tiny" / "synth_all.yaml"
SAFETY_MINUTES = 30.0  # the time box when none is asked for: only a stuck or very slow machine reaches it
TIMING = "demo_training.json"  # in the run folder: steps and seconds of the training this demo ran
# what the evaluation step imports (torch, transformers, the model and eval code: seconds of one core)
EVAL_MODULES = ("torch", "transformers", "vidtempo.eval.runner", "vidtempo.models.checkpoint",
                "vidtempo.models.build", "vidtempo.models.llms.hf", "vidtempo.data.collate")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo", help="output folder (data, run, eval)")
    parser.add_argument("--recipe", default=str(RECIPE), help="training recipe")
    parser.add_argument("--num-videos", type=int, default=1200, help="TempoSynth videos over all splits")
    parser.add_argument("--seed", type=int, default=None, help="training seed (default: the recipe's)")
    parser.add_argument("--steps", "--max-steps", dest="steps", type=int, default=None,
                        help="training steps (default: the recipe's trainer.max_steps)")
    parser.add_argument("--minutes", type=float, default=None,
                        help=f"time box for a quicker look: training stops after M minutes and the table says "
                             f"at which step (default: the recipe's trainer.max_time, else a {SAFETY_MINUTES:g}-minute "
                             "safety net)")  # fmt: skip
    parser.add_argument("--limit", type=int, default=120,
                        help="evaluate at most N items per task (0 = all; 120 = the whole test split of each "
                             "multiple-choice task, +-6.5 points at 95 %% where 60 items give +-9)")  # fmt: skip


def recipe_budget(recipe: str) -> tuple[int, float | None]:
    """The recipe's ``trainer.max_steps`` (after its ``_base_`` chain) and its ``trainer.max_time`` in seconds
    (None without one: a fixed-step recipe such as the demo's)."""
    from vidtempo.config.load import load_recipe

    trainer = load_recipe(recipe).get("trainer", {})
    steps, box = trainer.get("max_steps"), trainer.get("max_time")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{recipe}: trainer.max_steps must be a positive int for the demo (got {steps!r}), or "
                         "pass --steps")  # fmt: skip
    if box is None:
        return steps, None
    parts = [float(p) for p in str(box).split(":")]  # Lightning's "DD:HH:MM:SS"
    if len(parts) != 4:
        raise ValueError(f"{recipe}: trainer.max_time must be 'DD:HH:MM:SS', got {box!r}")
    return steps, ((parts[0] * 24 + parts[1]) * 60 + parts[2]) * 60 + parts[3]


def run_command(argv: list[str], separate: bool = False) -> int:
    """One ``vidtempo`` command, in this process or (``separate``) in a child process: training with several
    processes (``trainer.devices`` > 1) relaunches its own command for each rank, so it must be a command of
    its own, not this demo."""
    print(f"\n$ vidtempo {' '.join(argv)}", flush=True)
    if separate:
        return subprocess.run([sys.executable, "-m", "vidtempo.cli.main", *argv]).returncode
    from vidtempo.cli.main import main

    return main(argv)


def run(args: argparse.Namespace) -> int:
    began = time.perf_counter()
    out = Path(args.out).resolve()
    data = out / "data"
    recipe_steps, recipe_box = recipe_budget(args.recipe)
    planned = args.steps or recipe_steps
    # the box: --minutes, else a time-boxed recipe's own (the earlier demo recipes), else the safety net
    seconds = int(round(args.minutes * 60 if args.minutes else recipe_box or SAFETY_MINUTES * 60))
    overrides = [
        f"output_dir={out / 'run'}",
        f"data.train.root={data}", f"data.val.root={data}",
        f"data.train.num_videos={args.num_videos}", f"data.val.num_videos={args.num_videos}",
        f"trainer.max_steps={planned}",
        f"trainer.max_time='00:{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'",
        *([f"seed={args.seed}"] if args.seed is not None else []),
    ]  # fmt: skip
    final = out / "run" / "0_sft" / "final"
    code = run_command(["data", "synth", "--out", str(data), "--num-videos", str(args.num_videos), "--seed", "0",
                        "--max-duration", "20", "--workers", "0"])  # fmt: skip
    if code:
        return code
    imports = preload(EVAL_MODULES)  # while training starts up (a core's seconds the evaluation would wait for)
    code = train(["train", args.recipe, *overrides], final, out / "run" / TIMING)
    if code:
        return code
    imports.join()  # long done after a training; a resumed demo (training finished) waits rather than race it
    code = run_command(["eval", args.recipe, *overrides, "--checkpoint", str(final), "--benchmark", "synth",
                        "--annotations", str(data), "--out", str(out / "eval"),
                        *(["--limit", str(args.limit)] if args.limit else []), "--no-progress"])  # fmt: skip
    if code:
        return code
    print_summary(out, planned, args.limit, time.perf_counter() - began)
    print(f"\ndemo outputs in {out}: run/ (checkpoints, logs), eval/report.json, eval/generations.jsonl")
    return 0


def preload(modules: tuple[str, ...]) -> threading.Thread:
    """Import ``modules`` in a background thread of this process and return it (started, daemon). The demo
    starts it with training: the import shares the cores with the training processes' own imports for a few
    seconds, where after training it would run alone on one core while the other waits, and the evaluation
    that follows in this process finds its modules imported. A module that fails to import is left for the
    evaluation to report.

    Example:
        >>> preload(("json",)).join()
    """

    def run() -> None:
        for name in modules:
            with contextlib.suppress(Exception):
                importlib.import_module(name)

    thread = threading.Thread(target=run, name="vidtempo-demo-preload", daemon=True)
    thread.start()
    return thread


def train(argv: list[str], final: Path, timing: Path) -> int:
    """Train (in its own process) unless ``final`` is complete; record the steps and seconds in ``timing``."""
    from vidtempo.utils.atomic import atomic_write_text, is_complete

    if is_complete(final) and timing.is_file():
        print(f"\ntraining already finished: {final}")
        return 0
    start = time.perf_counter()
    code = run_command(argv, separate=True)
    if code:
        return code
    seconds = time.perf_counter() - start
    atomic_write_text(timing, json.dumps({"steps": finished_steps(final), "seconds": round(seconds, 1)}) + "\n")
    return 0


def finished_steps(final: Path) -> int:
    """The global step a finished stage stopped at (its ``final/`` marker)."""
    from vidtempo.utils.atomic import MARKER

    info = json.loads((final / MARKER).read_text() or "{}")
    if "global_step" not in info:
        raise ValueError(f"{final / MARKER}: no global_step (expected the info a finished stage writes)")
    return int(info["global_step"])


def summary_lines(report: dict[str, Any], timing: dict[str, Any], planned: int, wall: float) -> tuple[
        str | None, list[list[str]], str]:  # fmt: skip
    """(shortened-run note or None, rows ``[measure, target, result, met]``, the run line)."""
    from vidtempo.eval.targets import check_targets, shortened_run_note

    steps, seconds = int(timing["steps"]), float(timing["seconds"])
    rows = [[c.target.label, c.target.bound_text(), "-" if c.value is None else f"{c.value:.1f}",
             "met" if c.met else "NOT met"] for c in check_targets(report)]  # fmt: skip
    rate = steps / seconds if seconds > 0 else float("nan")
    line = (f"steps {steps} of {planned}, {rate:.2f} steps/s (training {_minutes(seconds)}, process start "
            f"included); wall time {_minutes(wall)} (this command, rendering and evaluation included)")
    return shortened_run_note(steps, planned), rows, line


def print_summary(out: Path, planned: int, limit: int, wall: float) -> None:
    """The targets table of the demo, with the shortened-run note above it when training stopped early."""
    from rich.console import Console
    from rich.table import Table

    report = json.loads((out / "eval" / "report.json").read_text())
    timing = json.loads((out / "run" / TIMING).read_text())
    note, rows, line = summary_lines(report, timing, planned, wall)
    console = Console()
    if note:
        console.print(f"\n[bold red]{note}[/]")
    per_task = f"at most {limit} items per task" if limit else "every test item"
    table = Table(title=f"vidtempo demo: the TempoSynth targets on unseen test videos ({per_task}, %)")
    for col in ("measure", "target", "result", "met"):
        table.add_column(col, justify="left" if col == "measure" else "right")
    for row in rows:
        table.add_row(*row[:3], f"[green]{row[3]}[/]" if row[3] == "met" else f"[bold red]{row[3]}[/]")
    console.print(table)
    console.print(line)
    if note:
        console.print(f"[bold red]{note}[/]")


def _minutes(seconds: float) -> str:
    whole = int(round(seconds))
    return f"{whole // 60} min {whole % 60} s"

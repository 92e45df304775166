"""``vidtempo inspect RECIPE``: build the model on the meta device (no weights, no download) and print
parameter counts per part and video tokens per video."""

from __future__ import annotations

import argparse
from typing import Any

DURATIONS = (30.0, 60.0, 600.0, 3600.0)


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("recipe", help="recipe YAML file")
    parser.add_argument("overrides", nargs="*", help="key=value, +key=value or ~key")


def frames_for(collator: dict[str, Any], duration: float) -> int:
    """Frames the collator settings sample from a video of ``duration`` seconds."""
    num, fps, cap = collator.get("num_frames"), collator.get("fps"), collator.get("max_frames")
    if fps:
        n = max(1, int(duration * float(fps)))
    elif num:
        n = int(num)
    else:
        n = int(duration * 30)
    return min(n, int(cap)) if cap else n


def inspect_recipe(cfg: Any) -> dict[str, Any]:
    """{"stages": {stage: {part: (total, trainable)}}, "tokens": {duration: (frames, tokens)}, "frame_size": px}."""
    import torch

    from vidtempo.models.build import build_video_llm
    from vidtempo.models.interfaces import TrainableParts
    from vidtempo.training.build import expand_stages
    from vidtempo.training.run import prepare

    plain, recipe = prepare(cfg)
    with torch.device("meta"):
        model = build_video_llm(plain["model"], recipe=recipe)
    stages = expand_stages(plain)
    report: dict[str, Any] = {"stages": {}}
    for stage in stages:
        model.set_trainable(TrainableParts(**stage["trainable"]))
        report["stages"][stage["name"]] = model.parameter_counts()
    collator = (plain["data"].get("collator") or {})
    audio = "audio" in model.capabilities
    report["frame_size"] = model.frame_size
    report["tokens"] = {d: (frames_for(collator, d), model.video_tokens(frames_for(collator, d), audio))
                        for d in DURATIONS}  # fmt: skip
    report["max_length"] = model.max_length
    return report


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from vidtempo.config.load import load_recipe

    report = inspect_recipe(load_recipe(args.recipe, args.overrides))
    console = Console()
    for stage, counts in report["stages"].items():
        table = Table(title=f"parameters, stage '{stage}'")
        for col in ("part", "total", "trainable"):
            table.add_column(col, justify="right" if col != "part" else "left")
        for part, (total, trainable) in counts.items():
            table.add_row(part, f"{total:,}", f"{trainable:,}")
        total = sum(c[0] for c in counts.values())
        trainable = sum(c[1] for c in counts.values())
        table.add_row("all", f"{total:,}", f"{trainable:,}")
        console.print(table)
    side = report["frame_size"]
    table = Table(title=f"video tokens ({side}x{side} frames)")
    for col in ("duration", "frames", "video tokens", "fits max_length"):
        table.add_column(col, justify="right")
    for duration, (frames, tokens) in report["tokens"].items():
        fits = "-" if report["max_length"] is None else ("yes" if tokens < report["max_length"] else "NO")
        table.add_row(f"{duration:g} s", str(frames), f"{tokens:,}", fits)
    console.print(table)
    return 0

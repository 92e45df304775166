"""``vidtempo inspect RECIPE``: build the model on the meta device (no weights, no download) and print
parameter counts per part (the embedding and LM-head rows ``tokenizer.time_tokens`` adds included, as ``train``
builds the model), video tokens per video and FLOPs per sample per part (forward / training, per stage;
``vidtempo.models.flops``, ``docs/performance.md``)."""

from __future__ import annotations

import argparse
from typing import Any

DURATIONS = (30.0, 60.0, 600.0, 3600.0)
TEXT_TOKENS = 256  # text tokens per sample assumed for the FLOP table (``--text-tokens``)


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("recipe", help="recipe YAML file")
    parser.add_argument("overrides", nargs="*", help="key=value, +key=value or ~key")
    parser.add_argument("--text-tokens", type=int, default=TEXT_TOKENS,
                        help=f"text tokens per sample for the FLOP table (default {TEXT_TOKENS})")  # fmt: skip


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


def inspect_recipe(cfg: Any, text_tokens: int = TEXT_TOKENS) -> dict[str, Any]:
    """{"stages": {stage: {part: (total, trainable)}}, "tokens": {duration: (frames, tokens)}, "frame_size": px,
    "flops": {stage: {duration: FlopReport}}, "text_tokens": n}."""
    import torch

    from vidtempo.models.build import build_video_llm
    from vidtempo.models.flops import model_flops
    from vidtempo.models.interfaces import TrainableParts
    from vidtempo.training.build import build_tokenizer, expand_stages, model_node_for
    from vidtempo.training.run import prepare

    plain, recipe = prepare(cfg)
    node = plain["model"]
    if (plain.get("tokenizer") or {}).get("time_tokens"):  # the rows the model adds for them count too
        node = model_node_for(node, build_tokenizer(plain, recipe), recipe)
    with torch.device("meta"):
        model = build_video_llm(node, recipe=recipe)
    stages = expand_stages(plain)
    report: dict[str, Any] = {"stages": {}, "flops": {}, "text_tokens": text_tokens}
    collator = (plain["data"].get("collator") or {})
    audio = "audio" in model.capabilities
    for stage in stages:
        model.set_trainable(TrainableParts(**stage["trainable"]))
        report["stages"][stage["name"]] = model.parameter_counts()
        report["flops"][stage["name"]] = {
            d: model_flops(model, frames_for(collator, d), text_tokens, audio_seconds=d if audio else None)
            for d in DURATIONS
        }
    report["frame_size"] = model.frame_size
    report["tokens"] = {d: (frames_for(collator, d), model.video_tokens(frames_for(collator, d), audio))
                        for d in DURATIONS}  # fmt: skip
    report["max_length"] = model.max_length
    return report


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from vidtempo.config.load import load_recipe

    report = inspect_recipe(load_recipe(args.recipe, args.overrides), getattr(args, "text_tokens", TEXT_TOKENS))
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
    for stage, by_duration in report["flops"].items():
        console.print(flops_table(stage, by_duration, report["text_tokens"]))
    return 0


def flops_table(stage: str, by_duration: dict[float, Any], text_tokens: int) -> Any:
    """A rich table: one row per part, one column per duration, ``forward / training`` FLOPs per sample."""
    from rich.table import Table

    table = Table(title=f"FLOP per sample, stage '{stage}': forward/training ({text_tokens} text tokens)")
    table.add_column("part")
    for duration in by_duration:
        table.add_column(f"{duration:g} s", justify="right")
    reports = list(by_duration.values())
    for part in reports[0].parts:
        cells = [f"{format_flops(r.parts[part].forward)}/{format_flops(r.parts[part].train)}" for r in reports]
        table.add_row(part + (" (not modelled)" if part in reports[0].unmodelled else ""), *cells)
    table.add_row("all", *(f"{format_flops(r.forward)}/{format_flops(r.train)}" for r in reports))
    return table


def format_flops(flops: float) -> str:
    """FLOPs with an SI prefix.

    Example:
        >>> format_flops(0), format_flops(2.5e9), format_flops(1.234e15)
        ('0', '2.5G', '1.23P')
    """
    if flops <= 0:
        return "0"
    for prefix, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if flops >= scale:
            return f"{flops / scale:.3g}{prefix}"
    return f"{flops:.3g}"

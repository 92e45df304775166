"""``vidtempo prefgen RECIPE --checkpoint DIR --videos ... --out pairs.jsonl``: TEMPO self-generated pairs.

Settings come from the recipe's ``prefgen:`` section (``vidtempo.prefgen.pairs.PrefgenSettings``; TEMPLE's
values by default) and its ``data.collator`` (frame size, decoder). Re-running the same command resumes.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe YAML (its prefgen: section and data.collator settings)")
    parser.add_argument(
        "overrides", nargs="*", help="key=value, +key=value or ~key (e.g. prefgen.min_clips=3)"
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory of the model being trained")
    parser.add_argument(
        "--videos", nargs="+", required=True, help="video files and/or folders (searched recursively)"
    )
    parser.add_argument("--out", required=True, help="output pairs JSONL (a PreferenceDataset file)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--limit", type=int, default=None, help="process at most this many videos")
    parser.add_argument("--fresh", action="store_true", help="delete previous outputs instead of resuming")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import torch
    from omegaconf import OmegaConf

    from vidtempo.cli.main import UserError
    from vidtempo.config.load import load_recipe, resolve_recipe
    from vidtempo.models.checkpoint import load_pretrained
    from vidtempo.prefgen.captions import SelfCaptioner
    from vidtempo.prefgen.pairs import PrefgenError, PrefgenSettings, run_prefgen
    from vidtempo.prefgen.select import encoder_embedder

    cfg = OmegaConf.to_container(resolve_recipe(load_recipe(args.recipe, args.overrides)))
    settings = PrefgenSettings.from_section(cfg.get("prefgen"), args.recipe)
    collator = dict((cfg.get("data") or {}).get("collator") or {})
    settings.select.backend = collator.get("backend", settings.select.backend)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    model, tokenizer, _ = load_pretrained(args.checkpoint)
    if tokenizer is None:
        raise FileNotFoundError(
            f"{args.checkpoint}: the checkpoint has no tokenizer files (tokenizer_config.json)"
        )
    model = model.to(device).eval()
    captioner = SelfCaptioner(model, tokenizer, collator, settings.caption)
    embed = encoder_embedder(model) if settings.select.group_features == "encoder" else None
    try:
        fingerprint = {"checkpoint": str(args.checkpoint), "collator": collator}
        counts = run_prefgen(args.videos, args.out, settings, captioner, embed=embed, fresh=args.fresh,
                             progress=not args.no_progress, limit=args.limit,
                             fingerprint=fingerprint)  # fmt: skip
    except PrefgenError as err:
        raise UserError(str(err)) from err
    print(f"{args.out}: {counts.get('pairs', 0)} pairs from {counts.get('kept', 0)} videos "
          f"({counts.get('rejected', 0)} rejected, {counts.get('error', 0)} undecodable, "
          f"{counts.get('skipped_finished', 0)} already done)")  # fmt: skip
    return 0

"""``vidtempo prefgen RECIPE --checkpoint DIR --videos ... --out pairs.jsonl``: TEMPO self-generated pairs.

Settings come from the recipe's ``prefgen:`` section (``vidtempo.prefgen.pairs.PrefgenSettings``; TEMPLE's
values by default) and its ``data.collator`` (frame size, decoder). Re-running the same command resumes.

``vidtempo prefgen RECIPE --checkpoint DIR --questions --out pairs.jsonl``: answer pairs instead
(``vidtempo.prefgen.answers``): the model answers the questions of the recipe's ``prefgen_answers.data``
dataset on intact and on time-perturbed frames.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe YAML (its prefgen: section and data.collator settings)")
    parser.add_argument(
        "overrides", nargs="*", help="key=value, +key=value or ~key (e.g. prefgen.min_clips=3)"
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory of the model being trained")
    parser.add_argument("--videos", nargs="+", help="video files and/or folders (searched recursively)")
    parser.add_argument("--questions", action="store_true",
                        help="answer pairs on the questions of the recipe's prefgen_answers.data instead")  # fmt: skip
    parser.add_argument("--out", required=True, help="output pairs JSONL (a PreferenceDataset file)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--limit", type=int, default=None, help="process at most this many videos")
    parser.add_argument("--fresh", action="store_true", help="delete previous outputs instead of resuming")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from vidtempo.cli.main import UserError
    from vidtempo.config.load import load_recipe, resolve_recipe
    from vidtempo.prefgen.captions import SelfCaptioner
    from vidtempo.prefgen.pairs import PrefgenError, PrefgenSettings, run_prefgen
    from vidtempo.prefgen.select import encoder_embedder

    cfg = OmegaConf.to_container(resolve_recipe(load_recipe(args.recipe, args.overrides)))
    if args.questions:
        return run_answers(args, cfg)
    if not args.videos:
        raise UserError("prefgen needs --videos (caption pairs) or --questions (answer pairs)")
    settings = PrefgenSettings.from_section(cfg.get("prefgen"), args.recipe)
    collator = dict((cfg.get("data") or {}).get("collator") or {})
    settings.select.backend = collator.get("backend", settings.select.backend)
    model, tokenizer, _ = _load(args, cfg)
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


def run_answers(args: argparse.Namespace, cfg: dict) -> int:
    """``--questions``: self-generated answer pairs (``vidtempo.prefgen.answers``)."""
    from vidtempo.cli.main import UserError
    from vidtempo.config.errors import RecipeError
    from vidtempo.config.instantiate import instantiate
    from vidtempo.data.collate import VideoCollator
    from vidtempo.prefgen.answers import AnswerPairSettings, answer_pairs
    from vidtempo.prefgen.captions import generate_answers

    section = dict(cfg.get("prefgen_answers") or {})
    if "data" not in section:
        raise RecipeError("--questions needs prefgen_answers.data: the dataset whose questions are answered "
                          "(e.g. {_target_: synth, split: train, tasks: [order]})", recipe=args.recipe,
                          key="prefgen_answers.data")  # fmt: skip
    data = {"_kind_": "dataset", **section.pop("data")}  # aliases such as `synth` resolve as datasets
    try:
        settings = AnswerPairSettings(**section)
        settings.check()
    except (TypeError, ValueError) as err:
        raise RecipeError(str(err), recipe=args.recipe, key="prefgen_answers") from err
    samples = list(instantiate(data, key="prefgen_answers.data", recipe=args.recipe))[: args.limit]
    model, tokenizer, collator = _load(args, cfg)
    opts = {k: v for k, v in collator.items() if k not in ("feature_cache", "encoder_id", "targets")}
    collate = VideoCollator(tokenizer, **opts, generation=True)

    def generate(questions: list, transform: Any) -> list[str]:
        return generate_answers(model, tokenizer, questions, collate, settings.batch_size, transform,
                                max_new_tokens=settings.max_new_tokens, do_sample=False)  # fmt: skip

    if not samples:
        raise UserError(f"{args.recipe}: prefgen_answers.data has no questions")
    try:
        counts = answer_pairs(generate, samples, settings, args.out, progress=not args.no_progress,
                              fresh=args.fresh)  # fmt: skip
    except ValueError as err:
        raise UserError(str(err)) from err
    print(f"{args.out}: {counts['pairs']} pairs from {len(samples)} questions "
          f"({counts.get('same', 0)} perturbed answers equal to the chosen one)")  # fmt: skip
    return 0


def _load(args: argparse.Namespace, cfg: dict) -> tuple:
    """(model on the device in eval mode, tokenizer, the recipe's data.collator settings)."""
    import torch

    from vidtempo.models.checkpoint import load_pretrained

    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    model, tokenizer, _ = load_pretrained(args.checkpoint)
    if tokenizer is None:
        raise FileNotFoundError(
            f"{args.checkpoint}: the checkpoint has no tokenizer files (tokenizer_config.json)"
        )
    return model.to(device).eval(), tokenizer, dict((cfg.get("data") or {}).get("collator") or {})

"""``vidtempo cache RECIPE``: compute the frozen vision encoder's features once for the recipe's data."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe YAML with data.collator.feature_cache set")
    parser.add_argument("overrides", nargs="*", help="key=value, +key=value or ~key")


def run(args: argparse.Namespace) -> int:
    from vidtempo.config.load import load_recipe
    from vidtempo.models.build import build_video_llm
    from vidtempo.training.build import build_tokenizer
    from vidtempo.training.cache import fill_cache
    from vidtempo.training.run import prepare

    plain, recipe = prepare(load_recipe(args.recipe, args.overrides))
    import lightning as L

    L.seed_everything(int(plain.get("seed", 0)), verbose=False)  # same random init as `train` (tiny encoders)
    model = build_video_llm(plain["model"], weights=plain.get("weights"), recipe=recipe)
    stats = fill_cache(plain, recipe, model, build_tokenizer(plain, recipe))
    print(f"feature cache: {stats.computed} computed, {stats.reused} reused, {stats.failed} undecodable")
    return 0

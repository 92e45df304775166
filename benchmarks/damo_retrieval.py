"""DaMO stage 1 alone: train the ``align`` stage N steps, then text-to-video retrieval on unseen videos.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/damo_retrieval.py --root /tmp/vt_data/temposynth_demo \\
        --steps 600 --eval-at 200,400,600 [--recipe recipes/tiny/damo_synth_align.yaml] [--seed 0] \\
        [--case NAME] [overrides ...]

A fast, in-process version of ``vidtempo train RECIPE`` (its first stage) + ``vidtempo eval RECIPE
--benchmark synth_retrieval``: the recipe's model, its stage-1 objective (``align``, with the recipe's
auxiliary losses), optimiser settings (AdamW, per-part lr multipliers, warmup + schedule over ``--steps``,
gradient clip) and collator. It differs from ``vidtempo train`` in three ways: a plain PyTorch loop (no
Lightning, no checkpoints), a fixed number of steps (no time box), and every clip decoded once into a clip
store on disk (``--clip-store``) and kept in memory, so repeated runs skip decoding. The retrieval metrics are
those of ``vidtempo eval``: the VTC heads' cosine similarity (``embed_video`` / ``embed_text``) of every test
caption against every test video, scored by ``retrieval_metrics_multi`` (optimistic ties).

Its figures are lower than the CLI's: at 4000 steps, seed 0, it gave text-to-video R@1 34.2 % where
``vidtempo train`` + ``vidtempo eval`` gave 55.8 % (2026-12-07; the gap is in training, not in evaluation, and
its cause was not found; docs/methods/damo.md, "Retrieval after stage 1"). Use it to compare settings with
each other, and the CLI for the recipe's figure.

Overrides are recipe overrides (``key=value``) applied before the recipe is resolved, e.g.
``stages.0.objective.weights.vtm=0``. Output: one ``EVAL`` line per evaluation, then ``RESULT case=...`` lines
(one per evaluated step).
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vidtempo.config.load import apply_override, load_recipe  # noqa: E402
from vidtempo.eval.metrics import retrieval_metrics_multi  # noqa: E402
from vidtempo.models.build import build_video_llm  # noqa: E402
from vidtempo.models.interfaces import TrainableParts  # noqa: E402
from vidtempo.synth.captions import SynthCaptions  # noqa: E402
from vidtempo.training.align import AlignCollator  # noqa: E402
from vidtempo.training.build import build_objective, build_tokenizer, expand_stages, model_node_for  # noqa: E402
from vidtempo.training.optim import OptimSettings, build_optimizer  # noqa: E402
from vidtempo.training.run import prepare  # noqa: E402


def evaluate(model: Any, collator: AlignCollator, pairs: list[Any], batch_size: int = 32) -> dict[str, dict[str, float]]:
    """t2v / v2t retrieval of ``pairs`` (one caption per video) by the VTC heads' cosine similarity."""
    model.eval()
    videos, texts = [], []
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            batch = collator(chunk)  # the pairs' captions are not read here
            if batch.skipped:
                raise RuntimeError(f"test videos failed to decode: {[r.path for r in batch.skipped]}")
            videos.append(model.embed_video(batch.video_inputs()).float())  # (b, E)
            texts.append(model.embed_text([p.caption for p in chunk]).float())  # (b, E)
    model.train()
    sim = torch.cat(texts) @ torch.cat(videos).t()  # (T, V)
    return retrieval_metrics_multi(sim.numpy(), list(range(len(pairs))))


@dataclass
class AlignRun:
    """Stage 0 of a DaMO recipe, built for a hand-written training loop."""

    stage: dict[str, Any]
    recipe: str
    tokenizer: Any
    model: Any
    objective: Any
    settings: OptimSettings
    optimizer: torch.optim.Optimizer
    scheduler: Any
    params: list[torch.nn.Parameter]


def build_align_stage(recipe_path: str, root: str, seed: int, overrides: list[str], steps: int,
                      weights: dict[str, float] | None = None) -> AlignRun:  # fmt: skip
    """Seed, load ``recipe_path`` with ``overrides`` and its train root, check stage 0 is ``align`` (its loss
    weights replaced by ``weights`` if given), and build the model, objective and optimiser for ``steps``."""
    torch.manual_seed(seed)
    random.seed(seed)
    cfg = load_recipe(recipe_path, [f"seed={seed}", *overrides])
    apply_override(cfg, f"data.train.root={root}", recipe_path)
    plain, recipe = prepare(cfg)
    stage = expand_stages(plain)[0]
    if stage["objective"].get("_target_") != "align":
        raise SystemExit(f"{recipe}: stage 0 is not an align stage")
    if weights is not None:
        stage["objective"]["weights"] = dict(weights)
    tokenizer = build_tokenizer(plain, recipe)
    model = build_video_llm(model_node_for(plain["model"], tokenizer, recipe), recipe=recipe)
    model.set_trainable(TrainableParts(**stage["trainable"]))
    objective = build_objective(stage, model, recipe, "stages.0.")  # switches the compressor's text paths on
    settings = OptimSettings(**stage["optim"])
    optimizer, scheduler = build_optimizer(model, settings, steps, extra=objective.trained_modules())
    params = [p for g in optimizer.param_groups for p in g["params"]]
    return AlignRun(stage, recipe, tokenizer, model, objective, settings, optimizer, scheduler, params)


def train_collator(stage: dict[str, Any], tokenizer: Any, clip_store: str) -> AlignCollator:
    """The stage's collator settings (targets included) with every clip decoded once into ``clip_store``."""
    node = {**(stage["data"].get("collator") or {}), "clip_store": clip_store, "cache_decoded": 4096}
    return AlignCollator(tokenizer, **node)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="recipes/tiny/damo_synth_align.yaml")
    ap.add_argument("--root", required=True, help="a TempoSynth folder (train and test splits)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--eval-at", default="", help="comma-separated steps (the last step is always evaluated)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--case", default="recipe")
    ap.add_argument("--clip-store", default="/tmp/vidtempo_damo_clip_store")
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_intermixed_args(argv)  # overrides before or after the flags

    run = build_align_stage(args.recipe, args.root, args.seed, args.overrides, args.steps)
    stage, recipe, tokenizer, model, objective = run.stage, run.recipe, run.tokenizer, run.model, run.objective
    settings, optimizer, scheduler, params = run.settings, run.optimizer, run.scheduler, run.params

    train_set = SynthCaptions(args.root, split="train")
    test_pairs = SynthCaptions(args.root, split="test", events=False).samples
    collator = train_collator(stage, tokenizer, args.clip_store)
    batch_size = int(stage["data"].get("batch_size", 16))
    eval_at = {int(s) for s in args.eval_at.split(",") if s} | {args.steps}
    rng = random.Random(args.seed)
    order: list[int] = []
    objective.train()
    results, sums, t0 = [], {}, time.time()
    print(f"case={args.case} recipe={recipe} steps={args.steps} batch={batch_size} optim={stage['optim']} "
          f"objective={stage['objective']}", flush=True)  # fmt: skip
    for step in range(1, args.steps + 1):
        if len(order) < batch_size:
            order += rng.sample(range(len(train_set)), len(train_set))
        rows, order = order[:batch_size], order[batch_size:]
        batch = collator([train_set[i] for i in rows])
        loss, metrics = objective._losses(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
        optimizer.step()
        scheduler.step()
        for k, v in {"loss": loss, **metrics}.items():
            sums[k] = sums.get(k, 0.0) + float(torch.as_tensor(v).detach())
        if step % args.log_every == 0:
            print(f"step {step} " + " ".join(f"{k}={v / args.log_every:.4f}" for k, v in sorted(sums.items()))
                  + f" s/step={(time.time() - t0) / step:.2f}", flush=True)  # fmt: skip
            sums = {}
        if step in eval_at:
            m = evaluate(model, collator, test_pairs)
            t2v, v2t = m["t2v"], m["v2t"]
            line = (f"case={args.case} seed={args.seed} step={step} t2v_R1={t2v['R1']:.2f} t2v_R5={t2v['R5']:.2f} "
                    f"t2v_R10={t2v['R10']:.2f} t2v_MdR={t2v['MedianR']:.1f} v2t_R1={v2t['R1']:.2f} "
                    f"v2t_R5={v2t['R5']:.2f} v2t_R10={v2t['R10']:.2f} v2t_MdR={v2t['MedianR']:.1f} "
                    f"minutes={(time.time() - t0) / 60:.1f}")  # fmt: skip
            print("EVAL " + line, flush=True)
            results.append(line)
        if not math.isfinite(float(loss.detach())):
            raise SystemExit(f"non-finite loss at step {step}")
    for line in results:
        print("RESULT " + line)


if __name__ == "__main__":
    main()

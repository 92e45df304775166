"""DaMO stage 1: the VTM (video-text matching) loss on a fixed pool of TempoSynth pairs, to tell a matching
path that cannot learn from one that learns slowly.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/damo_vtm_curve.py --root /tmp/vt_data/temposynth_demo \\
        --pairs 6 --batch 6 --steps 400 [--weights 0,1,0] [--recipe recipes/tiny/damo_synth_align.yaml] \\
        [--case NAME] [--seed 0] [overrides ...]

The recipe's model, its ``align`` objective (its loss weights replaced by ``--weights vtc,vtm,vtg``) and its
stage-1 optimiser (AdamW, per-part lr multipliers, warmup + schedule over ``--steps``, gradient clip) train on
the first ``--pairs`` training pairs of the TempoSynth folder, cycled in batches of ``--batch`` (every clip
decoded once through the recipe's collator into ``--clip-store``). With ``--pairs`` equal to ``--batch`` the
same batch repeats: a matching path that works memorises it and VTM falls far below 0.6365, the loss of a
constant prediction with one positive in three pairs. More pairs than a batch move towards training, where
VTM has to generalise.

Output: the mean losses every ``--log-every`` steps, then ``RESULT case=... vtm_first=... vtm_last=...
escape_step=...``: the mean VTM of the first and the last logging window, and the first window whose mean is
below 0.6 (``none`` if none was).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from damo_retrieval import build_align_stage, train_collator  # noqa: E402

from vidtempo.synth.captions import SynthCaptions  # noqa: E402

PRIOR = -(math.log(1 / 3) / 3 + 2 * math.log(2 / 3) / 3)  # 0.6365: constant prediction, 1/3 positives
ESCAPED = 0.6


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="recipes/tiny/damo_synth_align.yaml")
    ap.add_argument("--root", required=True, help="a TempoSynth folder (train split)")
    ap.add_argument("--pairs", type=int, default=6, help="distinct training pairs, cycled")
    ap.add_argument("--batch", type=int, default=6)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--weights", default="0,1,0", help="vtc,vtm,vtg")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--case", default="vtm")
    ap.add_argument("--clip-store", default="/tmp/vidtempo_damo_clip_store")
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_intermixed_args(argv)  # overrides before or after the flags
    if args.pairs < args.batch or args.batch < 2:
        raise SystemExit(f"--pairs ({args.pairs}) must be >= --batch ({args.batch}) >= 2")
    weights = [float(w) for w in args.weights.split(",")]
    if len(weights) != 3 or weights[1] <= 0:
        raise SystemExit(f"--weights: expected vtc,vtm,vtg with vtm > 0, got {args.weights!r}")

    run = build_align_stage(args.recipe, args.root, args.seed, args.overrides, args.steps,
                            weights=dict(zip(("vtc", "vtm", "vtg"), weights, strict=True)))  # fmt: skip
    stage, recipe, tokenizer, model, objective = run.stage, run.recipe, run.tokenizer, run.model, run.objective
    settings, optimizer, scheduler, params = run.settings, run.optimizer, run.scheduler, run.params
    head = model.compressor.itm_head.weight
    if not any(p is head for p in params):
        raise SystemExit("the matching head (compressor.itm_head) is not in the optimiser")

    train_set = SynthCaptions(args.root, split="train")
    collator = train_collator(stage, tokenizer, args.clip_store)
    batches = [collator([train_set[i] for i in range(j, j + args.batch)])
               for j in range(0, args.pairs - args.batch + 1, args.batch)]  # fmt: skip
    print(f"case={args.case} recipe={recipe} pairs={len(batches) * args.batch} batch={args.batch} "
          f"steps={args.steps} weights={stage['objective']['weights']} optim={stage['optim']}", flush=True)  # fmt: skip
    objective.train()
    windows: list[float] = []
    sums: dict[str, float] = {}
    t0 = time.time()
    for step in range(1, args.steps + 1):
        loss, metrics = objective._losses(batches[(step - 1) % len(batches)])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
        optimizer.step()
        scheduler.step()
        for k, v in metrics.items():
            if k.endswith("_loss"):
                sums[k] = sums.get(k, 0.0) + float(torch.as_tensor(v).detach())
        if step % args.log_every == 0:
            means = {k: v / args.log_every for k, v in sorted(sums.items())}
            windows.append(means["vtm_loss"])
            print(f"step {step} " + " ".join(f"{k}={v:.4f}" for k, v in means.items())
                  + f" s/step={(time.time() - t0) / step:.2f}", flush=True)  # fmt: skip
            sums = {}
    escape = next((str((i + 1) * args.log_every) for i, v in enumerate(windows) if v < ESCAPED), "none")
    print(f"RESULT case={args.case} pairs={len(batches) * args.batch} batch={args.batch} steps={args.steps} "
          f"weights={args.weights} vtm_first={windows[0]:.4f} vtm_last={windows[-1]:.4f} prior={PRIOR:.4f} "
          f"escape_step={escape} minutes={(time.time() - t0) / 60:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()

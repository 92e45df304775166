"""Where does tiny DaMO lose the per-frame information? A trainable tag probe at one point of the compressor.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/damo_tag_probe.py --root DATA/temposynth_demo --reads tokens \\
        [--steps 300] [--lr 1.5e-3] [--compressor-lr LR] [--seed 0] [--clip-store DIR] [overrides ...]

Builds the model of ``recipes/tiny/damo_synth_align.yaml`` (plus recipe ``overrides`` placed after the
options, e.g. ``model.compressor.time_window=null``), then trains the vision and audio encoders, the compressor
and a :class:`~vidtempo.training.auxiliary.TokenFrameReadout` + head on one question-independent target: which
of the 12 coloured shapes is on screen at each of the 16 frames (``frame_tags``, binary cross-entropy over the
train split's videos, batch 16, AdamW). The readout reads one set of states (``--reads``):

* ``features``: each frame's mean CNN feature (16 tokens that *are* the frames), through a linear map to 128;
* ``streams``: the T-Fuseformer's visual stream tokens after its last layer, averaged over each time window's
  local slots (8 windows; needs ``model.compressor.qformer_reads_streams=true``, the recipe's since
  2026-12-07, which places them in the fused states);
* ``visual_queries``: the T-Fuseformer's visual modality queries after its last layer (24);
* ``tokens``: the compressor's output tokens after the projector, the LLM's video tokens (16).

The loss stays at the label prior (about 0.256) when the states carry no per-frame information the probe can
learn to read. No LLM runs. Prints the mean loss every 50 steps and ends with a ``RESULT`` line.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from damo_retrieval import build_align_stage, train_collator  # noqa: E402

from vidtempo.synth.captions import SynthCaptions  # noqa: E402
from vidtempo.training.auxiliary import FrameSaliencyLoss  # noqa: E402

READS = ("features", "streams", "visual_queries", "tokens")
SHAPES = 12  # the frame_tags target's first 12 labels (the beeps are left out)


def probe_states(model: Any, batch: Any, reads: str, lift: torch.nn.Module) -> torch.Tensor:
    """(B, N, 128) states the readout reads (see the module docstring)."""
    comp = model.compressor
    if reads == "tokens":
        return model.encode_video(batch.video_inputs()).tokens
    inputs = model.compressor_input(batch.video_inputs())
    if reads == "features":
        return lift(inputs.feats.mean(2))  # (B, T, D) -> (B, T, 128)
    fused = comp.fuse(inputs)  # states: fusion tokens, visual queries, audio queries [, visual / audio streams]
    first = comp.fusion_tokens.shape[0]
    if reads == "visual_queries":
        return lift(fused.states[:, first : first + comp.visual_queries.shape[0]])
    if not comp.qformer_reads_streams:
        raise SystemExit("--reads streams needs model.compressor.qformer_reads_streams=true (the recipe's)")
    heard = comp.audio_dim is not None and fused.without_audio < fused.states.shape[0]  # audio queries present
    start = first + comp.visual_queries.shape[0] + (comp.audio_queries.shape[0] if heard else 0)
    local = comp.local_grid[0] * comp.local_grid[1]
    windows = -(-inputs.feats.shape[1] // comp.temporal_stride)
    vis = fused.states[:, start : start + windows * local]  # (B, T' * L', W), window-major
    return lift(vis.reshape(vis.shape[0], windows, local, -1).mean(2))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="a TempoSynth folder (vidtempo data synth)")
    ap.add_argument("--reads", choices=READS, default="tokens")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=1.5e-3, help="the stages 2-4 peak lr of the tiny recipe")
    ap.add_argument("--compressor-lr", type=float, help="lr of the compressor and projector (default --lr)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clip-store", default="/tmp/vidtempo_damo_clip_store")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_intermixed_args(argv)  # overrides before or after the flags

    run = build_align_stage("recipes/tiny/damo_synth_align.yaml", args.root, args.seed, args.overrides, 10)
    model = run.model.train()
    collator = train_collator(run.stage, run.tokenizer, args.clip_store)
    train = SynthCaptions(args.root, split="train")
    frames = int(run.stage["data"]["collator"]["num_frames"])
    width = model.compressor.in_dim if args.reads == "features" else model.compressor.width
    lift = torch.nn.Linear(width, 128) if args.reads != "tokens" else torch.nn.Identity()
    count = {"features": frames, "tokens": model.compressor.num_queries,
             "visual_queries": model.compressor.visual_queries.shape[0],
             "streams": -(-frames // model.compressor.temporal_stride)}[args.reads]  # fmt: skip
    probe = FrameSaliencyLoss(128, slots=SHAPES, tokens=count, frames=frames)
    for p in model.parameters():
        p.requires_grad_(True)
    compressor = [p for n, p in model.named_parameters() if n.startswith(("compressor.", "projector."))]
    encoders = [p for n, p in model.named_parameters() if n.startswith(("vision_encoder.", "audio_encoder."))]
    groups = [{"params": compressor, "lr": args.compressor_lr or args.lr}, {"params": encoders, "lr": args.lr},
              {"params": [*probe.parameters(), *lift.parameters()], "lr": args.lr}]  # fmt: skip
    opt = torch.optim.AdamW(groups, weight_decay=0.02)
    rng, losses, t0 = random.Random(args.seed), [], time.time()
    for step in range(1, args.steps + 1):
        batch = collator([train[i] for i in rng.sample(range(len(train)), 16)])
        states = probe_states(model, batch, args.reads, lift)  # (B, N, 128)
        b = states.shape[0]
        assert probe.readout is not None
        scores = probe.head(probe.readout(states, torch.zeros(b, dtype=torch.long), torch.full((b,), count)))
        tags = batch.targets["frame_tags"][..., :SHAPES]  # (B, T, 12), NaN = padded frame
        known = ~torch.isnan(tags)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(scores[known], tags[known])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % 50 == 0:
            print(f"step {step} tag_loss={sum(losses[-50:]) / 50:.4f} s={time.time() - t0:.0f}", flush=True)
    tail = losses[-50:]
    print(f"RESULT reads={args.reads} steps={args.steps} lr={args.lr} compressor_lr={args.compressor_lr or args.lr} "
          f"overrides={','.join(args.overrides) or 'none'} tag_loss_last50={sum(tail) / len(tail):.4f}")


if __name__ == "__main__":
    main()

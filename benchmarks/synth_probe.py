"""TempoSynth grounding probe: is the encoder or the LLM the bottleneck?

Usage::

    python benchmarks/synth_probe.py --root runs/data/temposynth_probe --generate 3000 \\
        [--features pixels|oracle] [--multi-turn] [--steps 600] [--batch-size 16] [--lr 2e-3] \\
        [--recipe recipes/tiny/synth_grounding.yaml] [overrides ...]

A fast, in-process version of ``vidtempo train`` + ``vidtempo eval --benchmark synth`` for grounding only.
Every clip is decoded once (PyAV, the recipe's sampling) and kept in memory. Training is a plain AdamW loop
on the recipe's model, with a warm-up and cosine schedule; there is no Lightning and no DataLoader. Then
greedy answers are scored on held-out test queries in three conditions: normal, time control (frames
shuffled in time) and blind (zero inputs).

``--features oracle`` replaces the vision encoder with the *answer key*. Each frame becomes one token that
is multi-hot over the 12 (colour, shape) objects visible at that frame's time. The hot entries are read from
the generator's event script; the time embedding and everything after it are unchanged. If the model does
not learn grounding from the oracle, the encoder is not the bottleneck; the LLM side is (finding the named
object among the frame tokens and writing its time in digits).

The last line printed is a JSON record of the run (settings and scores), for docs/benchmarks/synth.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from vidtempo.config.load import load_recipe
from vidtempo.data.collate import DecodedVideo, VideoCollator
from vidtempo.data.samples import ConversationSample
from vidtempo.eval.metrics import temporal_iou
from vidtempo.eval.scorers import first_interval
from vidtempo.models.build import build_video_llm
from vidtempo.synth.dataset import SynthConversations
from vidtempo.synth.generate import Manifest, generate
from vidtempo.synth.targets import SynthFrameSlots
from vidtempo.training.auxiliary import FrameSaliencyLoss
from vidtempo.training.build import build_tokenizer

CONDITIONS = ("normal", "time", "blind")
# No roles, no system turn: the question, a newline, then the answer ending in <|im_end|>.
PLAIN_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'assistant' %}{{ m['content'] + '<|im_end|>' }}"
    "{% else %}{{ m['content'] + '\\n' }}{% endif %}{% endfor %}"
)


def rewrite_answers(sample: ConversationSample, answers: str) -> ConversationSample:
    """Training answers in another format: ``whole_seconds`` ("08 - 12 seconds", no decimal digit to guess)
    or ``percent`` of the video, two digits ("08 - 23", VTimeLLM-style relative time)."""
    if answers == "as_is":
        return sample
    messages = [dict(m) for m in sample.messages]
    duration = float(sample.meta["duration"])
    for m in messages:
        interval = first_interval(m["content"]) if m["role"] == "assistant" else None
        if interval is not None:
            a, b = to_answer_units(interval, answers, duration)
            m["content"] = (
                f"{a:02d} - {b:02d} seconds" if answers == "whole_seconds" else f"{a:02d} - {b:02d}"
            )
    return dataclasses.replace(sample, messages=messages)


def to_answer_units(interval: tuple[float, float], answers: str, duration: float) -> tuple[int, int]:
    if answers == "whole_seconds":
        return round(interval[0]), round(interval[1])
    return tuple(min(99, round(100 * x / duration)) for x in interval)  # type: ignore[return-value]


def from_answer_units(interval: tuple[float, float] | None, answers: str, duration: float):
    """A predicted interval back to seconds (``percent`` answers are fractions of the video)."""
    if interval is None or answers != "percent":
        return interval
    return interval[0] * duration / 100, interval[1] * duration / 100


class Clips:
    """Decode each video once with the recipe's sampling; serve pixels or oracle features from memory."""

    def __init__(self, collator: VideoCollator, manifest: Manifest, oracle_dim: int | None) -> None:
        self.collator = collator
        self.scripts = manifest.scripts()
        self.names = sorted({o.name for s in self.scripts.values() for o in s.objects})
        self.oracle_dim = oracle_dim
        self.frames: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def prefetch(self, samples: list[ConversationSample]) -> None:
        for s in samples:
            if s.video not in self.frames:
                v = self.collator.decode(s)  # the collator has no in-memory cache: one decode
                self.frames[s.video] = (v.frames.half(), v.timestamps)  # (T, 3, H, W), (T,)

    def __call__(self, sample: ConversationSample) -> DecodedVideo:
        frames, times = self.frames[sample.video]
        if not self.oracle_dim:
            return DecodedVideo(frames.float(), times, None)
        script = self.scripts[Path(sample.video).stem]
        feats = torch.zeros(len(times), 1, self.oracle_dim)  # (T, P=1, D): multi-hot over object names
        for k, t in enumerate(times.tolist()):
            for o in script.visible_objects(t):
                feats[k, 0, self.names.index(o.name)] = 1.0
        return DecodedVideo(feats, times, None)


def make_collator(tok: Any, cc: dict[str, Any], clips: Clips | None, generation: bool) -> VideoCollator:
    col = VideoCollator(tok, num_frames=cc["num_frames"], frame_size=cc["frame_size"], backend=cc.get("backend", "pyav"),
                        video_position=cc.get("video_position", "keep"), generation=generation,
                        targets=None if generation else {"frame_targets": SynthFrameSlots()})  # fmt: skip
    if clips is not None:
        col.decode = clips  # type: ignore[method-assign]
    return col


def batch_inputs(
    col: VideoCollator,
    samples: list[ConversationSample],
    oracle: bool,
    labels: bool,
    relative_time: bool = False,
    collated: Any = None,
) -> dict:
    batch = collated if collated is not None else col(samples)
    kw = batch.model_inputs(with_labels=labels)
    video = kw["video"]
    if relative_time:  # the time embedding sees % of the video (0-100) instead of seconds
        durations = torch.tensor([float(s.meta["duration"]) for s in samples]).unsqueeze(1)  # (B, 1)
        video = replace(video, timestamps=video.timestamps * 100.0 / durations)
    if oracle:  # the "frames" slots hold (T, 1, D) oracle features
        video = replace(video, features=video.frames, frames=None, grid=(1, 1))
    kw["video"] = video
    return kw


def lm_and_saliency_loss(
    model: Any, head: FrameSaliencyLoss, col: VideoCollator, batch: list[ConversationSample], args: argparse.Namespace
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token loss plus the toolkit's per-frame saliency loss (``vidtempo.training.auxiliary``; slot 0:
    "is the named object here?"). The video must come after the question."""
    b = col(batch)
    kw = batch_inputs(col, batch, args.features == "oracle", True, args.time == "relative", collated=b)
    out = model(**kw, return_hidden=True)  # last_hidden_state (B, L', H)
    sal = head(out.last_hidden_state, kw["input_ids"], kw["attention_mask"], out.num_video_tokens,
               kw["video"].frame_mask, b.targets["frame_targets"][..., :1])  # fmt: skip
    return out.loss, sal


def train(model: Any, col: VideoCollator, data: list[ConversationSample], args: argparse.Namespace) -> dict:
    head = FrameSaliencyLoss(model.llm.hidden_size, slots=1)
    params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    warm = min(30, args.steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * (0.05 + 0.475 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)))
    )  # fmt: skip
    rng, order, ema, curve, start = random.Random(args.seed), [], None, [], time.time()
    model.train()
    for step in range(args.steps):
        if len(order) < args.batch_size:
            order = list(range(len(data)))
            rng.shuffle(order)
        batch = [data[order.pop()] for _ in range(args.batch_size)]
        if args.saliency_weight:
            loss, sal = lm_and_saliency_loss(model, head, col, batch, args)
            (loss + args.saliency_weight * sal).backward()
        else:
            kw = batch_inputs(col, batch, args.features == "oracle", True, args.time == "relative")
            loss = model(**kw).loss
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        sched.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if step % 100 == 0 or step == args.steps - 1:
            curve.append((step, round(ema, 4)))
            print(f"step {step:5d}  loss(ema) {ema:.3f}  {time.time() - start:.0f} s", flush=True)
        if time.time() - start > args.minutes * 60:
            print(f"time box reached at step {step}")
            break
    return {"steps": step + 1, "train_s": round(time.time() - start, 1), "loss_curve": curve}


@torch.no_grad()
def evaluate(model: Any, tok: Any, col: VideoCollator, test: list[ConversationSample], condition: str,
             oracle: bool, args: argparse.Namespace) -> dict[str, float]:  # fmt: skip
    model.eval()
    key = "features" if oracle else "frames"
    scores, end = [], tok.convert_tokens_to_ids("<|im_end|>")
    for i in range(0, len(test), 32):
        chunk = test[i : i + 32]
        kw = batch_inputs(col, chunk, oracle, False, args.time == "relative")
        video = kw["video"]
        if condition == "blind":
            kw["video"] = replace(video, **{key: torch.zeros_like(getattr(video, key))})
        elif condition == "time":
            perm = torch.randperm(getattr(video, key).shape[1], generator=torch.Generator().manual_seed(i))
            kw["video"] = replace(video, **{key: getattr(video, key)[:, perm]})  # content shuffled, times kept
        ids = model.generate(**kw, max_new_tokens=12, pad_token_id=tok.pad_token_id, eos_token_id=end)
        for s, row in zip(chunk, ids):
            text = tok.decode(row, skip_special_tokens=True)
            pred = from_answer_units(first_interval(text), args.answers, float(s.meta["duration"]))
            scores.append(temporal_iou(pred, tuple(s.meta["timestamps"])))
    n = len(scores)
    return {"mIoU": sum(scores) / n, "R1@0.3": sum(x >= 0.3 for x in scores) / n,
            "R1@0.5": sum(x >= 0.5 for x in scores) / n, "n": n}  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", default="runs/data/temposynth_probe", help="TempoSynth folder")
    p.add_argument("--generate", type=int, default=3000, help="videos to generate when --root has none")
    p.add_argument("--max-duration", type=float, default=20.0)
    p.add_argument("--recipe", default="recipes/tiny/synth_grounding.yaml")
    p.add_argument("--features", choices=("pixels", "oracle"), default="pixels")
    p.add_argument("--multi-turn", action="store_true", help="all questions of a video in one conversation")
    p.add_argument(
        "--answers",
        choices=("as_is", "whole_seconds", "percent"),
        default="as_is",
        help="training answer format",
    )
    p.add_argument(
        "--time", choices=("absolute", "relative"), default="absolute", help="time-embedding input"
    )
    p.add_argument("--template", choices=("recipe", "plain"), default="recipe", help="chat template")
    p.add_argument(
        "--saliency-weight",
        type=float,
        default=0.0,
        help="add a per-frame 'is the named object here?' loss (needs video_position=after_text)",
    )
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--minutes", type=float, default=60.0, help="training time box")
    p.add_argument("--eval-n", type=int, default=150, help="test queries per condition")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", help="recipe overrides, e.g. model.llm.hidden_size=256")
    return p.parse_intermixed_args(argv)  # overrides before or after the flags


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    root = Path(args.root)
    if not (root / "manifest.json").is_file():
        generate(root, num_videos=args.generate, seed=1, max_duration=args.max_duration)
    plain = OmegaConf.to_container(load_recipe(args.recipe, args.overrides), resolve=True)
    if args.saliency_weight and (
        args.multi_turn or plain["data"]["collator"].get("video_position") != "after_text"
    ):
        raise SystemExit(
            "--saliency-weight needs single-turn samples and +data.collator.video_position=after_text"
        )
    tok, model = build_tokenizer(plain, args.recipe), build_video_llm(plain["model"])
    if args.template == "plain":
        tok.chat_template = PLAIN_TEMPLATE
    cc = plain["data"]["collator"]
    oracle_dim = plain["model"]["compressor"]["in_dim"] if args.features == "oracle" else None
    clips = Clips(make_collator(tok, cc, None, False), Manifest.load(root), oracle_dim)
    train_set = SynthConversations(
        str(root), "train", tasks=["grounding"], multi_turn=args.multi_turn
    ).samples
    train_set = [rewrite_answers(s, args.answers) for s in train_set]
    test = SynthConversations(str(root), "test", tasks=["grounding"]).samples
    random.Random(1).shuffle(test)
    test = test[: args.eval_n]
    start = time.time()
    clips.prefetch(train_set + test)
    print(
        f"{len(train_set)} training conversations, {len(test)} test queries; decoded in {time.time() - start:.0f} s"
    )
    record: dict[str, Any] = {k: v for k, v in vars(args).items() if k not in ("root", "threads")}
    record |= train(model, make_collator(tok, cc, clips, False), train_set, args)
    gen = make_collator(tok, cc, clips, True)
    record["scores"] = {
        c: evaluate(model, tok, gen, test, c, oracle_dim is not None, args) for c in CONDITIONS
    }
    for c, r in record["scores"].items():
        print(
            f"{c:7s} mIoU {r['mIoU']:.3f}  R1@0.3 {r['R1@0.3']:.3f}  R1@0.5 {r['R1@0.5']:.3f}  (n={r['n']})"
        )
    print(json.dumps(record))
    return record


if __name__ == "__main__":
    main()

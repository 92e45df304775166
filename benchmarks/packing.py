"""Packed vs padded: training tokens/s of one SFT step on a length-skewed batch, and the loss of both.

Usage: ``python benchmarks/packing.py [--repeats 7] [--warmup 2] [--threads 1] [--smoke] [--write]``

A length-skewed batch: one long sample (``--long-frames`` frames) and ``--batch-size - 1`` short ones (2 frames),
with 20-40 text tokens each. Padded, every row is as long as the long sample; packed
(``forward(packing=max_tokens)``, ``vidtempo.models.packed_attention``, the masked path of CPU), the samples
share rows of at most ``max_tokens`` = the long sample's length, attention confined to each sample.

One training step = forward + backward + AdamW step + ``zero_grad``, of two copies of the same model (same
seed, same weights), one stepped padded and one packed, interleaved on the same batch: ``--warmup`` steps each,
then ``--repeats`` rounds. tokens/s = the batch's real LLM tokens (text + video, no padding) / step time; the
ratio packed / padded is computed per round (paired), reported as the median with the min-max spread. The two
copies see the same data and start from the same weights, so their losses agree at every step (the largest
difference is reported).

Cases: ``videollm_pool``, a composed ``VideoLLM`` (tiny SigLIP tower, pool compressor 16 tokens per frame,
4-layer 256-wide Qwen2), and ``qwen25vl``, the native Qwen2.5-VL (tiny ViT, 112x112 frames -> 16 merged tokens
per 2 frames with their 3-D mRoPE positions, 4-layer 256-wide LLM). Random weights and pixels (no download; the
decoder is not part of the step). Ends with one ``RESULT case=...`` line per case. ``--write`` puts the table in
benchmarks/RESULTS.md under "## Packed vs padded".
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from results_md import write_section  # benchmarks/ is on sys.path when run as a script

from vidtempo.models.interfaces import VIDEO_TOKEN_INDEX, VideoInputs

SECTION = "## Packed vs padded"
IGNORE = -100


def build(case: str, smoke: bool) -> tuple[torch.nn.Module, int]:
    """(model, frame side) of a case, seeded."""
    torch.manual_seed(0)
    width, layers = (64, 2) if smoke else (256, 4)
    llm = {"hidden_size": width, "intermediate_size": 2 * width, "num_hidden_layers": layers,
           "num_attention_heads": 4, "num_key_value_heads": 2}  # fmt: skip
    if case == "videollm_pool":
        from vidtempo.models.compressors.pooling import SpatialPoolCompressor
        from vidtempo.models.encoders.presets import tiny_vision_encoder
        from vidtempo.models.llms.presets import tiny_llm
        from vidtempo.models.video_llm import VideoLLM

        enc = tiny_vision_encoder()
        model = VideoLLM(vision_encoder=enc, compressor=SpatialPoolCompressor(enc.out_dim, stride=1), llm=tiny_llm(**llm),
                         trainable={"vision_encoder": True, "llm": True})  # fmt: skip
        return model, 32
    from vidtempo.models.native.qwen2_5_vl import Qwen25VLVideoModel, tiny_qwen2_5_vl

    head_dim = width // 4  # mrope_section covers head_dim / 2
    section = [head_dim // 8, 3 * head_dim // 16, 3 * head_dim // 16]
    backbone = tiny_qwen2_5_vl(**llm, vision_config={"out_hidden_size": width},
                               rope_scaling={"type": "mrope", "mrope_section": section})  # fmt: skip
    model = Qwen25VLVideoModel(llm=backbone, min_pixels=784, max_pixels=112 * 112,
                               trainable={"vision_encoder": True, "projector": True, "llm": True})  # fmt: skip
    return model, 112


def skewed_batch(batch: int, long_frames: int, side: int, seed: int = 0) -> dict[str, Any]:
    """One long sample, the others 2 frames; 20-40 text tokens each with answer labels on the last 8."""
    gen = torch.Generator().manual_seed(seed)
    frames = [long_frames] + [2] * (batch - 1)
    t = max(frames)
    frame_mask = torch.arange(t)[None] < torch.tensor(frames)[:, None]
    text = [int(x) for x in torch.randint(20, 41, (batch,), generator=gen)]
    length = max(text)
    ids = torch.randint(5, 500, (batch, length), generator=gen)
    ids[:, 2] = VIDEO_TOKEN_INDEX
    mask = (torch.arange(length)[None] < torch.tensor(text)[:, None]).long()
    answer = torch.arange(length)[None] >= (torch.tensor(text)[:, None] - 8)
    labels = torch.where(answer & mask.bool(), ids, IGNORE)
    video = VideoInputs(frames=torch.rand(batch, t, 3, side, side, generator=gen) * frame_mask[..., None, None, None],
                        frame_mask=frame_mask, timestamps=(torch.arange(t).float() + 0.5).expand(batch, t) * frame_mask)  # fmt: skip
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "video": video}


def step(model: torch.nn.Module, opt: torch.optim.Optimizer, batch: dict[str, Any], packing: int | None) -> tuple[float, float, int]:
    """(seconds, loss, real LLM tokens) of one training step."""
    start = time.perf_counter()
    out = model(**batch, **({"packing": packing} if packing else {}))
    out.loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - start, float(out.loss.detach()), int(out.attention_mask.sum())


def run_case(case: str, args: argparse.Namespace) -> dict[str, Any]:
    padded, side = build(case, args.smoke)
    packed, _ = build(case, args.smoke)
    packed.load_state_dict(padded.state_dict())
    batch = skewed_batch(args.batch_size, args.long_frames, side)
    with torch.no_grad():  # the row budget: the longest sample (what model.max_length would have to allow)
        lengths = padded(**batch).attention_mask.sum(1)
    max_tokens = int(lengths.max())
    opts = {m: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4) for m in (padded, packed)}
    times: dict[str, list[float]] = {"padded": [], "packed": []}
    ratios, diffs, losses = [], [], []
    tokens = 0
    for i in range(args.warmup + args.repeats):
        (t_pad, l_pad, tokens), (t_pack, l_pack, _) = (step(padded, opts[padded], batch, None),
                                                       step(packed, opts[packed], batch, max_tokens))  # fmt: skip
        diffs.append(abs(l_pad - l_pack))
        if i >= args.warmup:
            times["padded"].append(t_pad)
            times["packed"].append(t_pack)
            ratios.append(t_pad / t_pack)
            losses.append((l_pad, l_pack))
    pad_slots = int(lengths.max()) * len(lengths)
    with torch.no_grad():
        rows = int(packed(**batch, packing=max_tokens).info["packed_rows"])
    return {
        "case": case, "batch": args.batch_size, "tokens": tokens, "padded_slots": pad_slots, "max_tokens": max_tokens,
        "rows": rows, "padded_ms": 1000 * statistics.median(times["padded"]),
        "packed_ms": 1000 * statistics.median(times["packed"]),
        "padded_tps": tokens / statistics.median(times["padded"]), "packed_tps": tokens / statistics.median(times["packed"]),
        "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
        "loss_diff": max(diffs), "first_loss": losses[0][0] if losses else float("nan"),
    }  # fmt: skip


def section(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    rows = "\n".join(
        f"| {r['case']} | {r['batch']} | {r['tokens']} / {r['padded_slots']} | {r['rows']} x <= {r['max_tokens']} | "
        f"{r['padded_tps']:.0f} | {r['packed_tps']:.0f} | **{r['ratio']:.2f}** ({r['ratio_min']:.2f}-{r['ratio_max']:.2f}) "
        f"| {r['loss_diff']:.1e} |"
        for r in results
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{SECTION}\n\n`python benchmarks/packing.py --repeats {args.repeats} --warmup {args.warmup} --threads "
        f"{args.threads} --batch-size {args.batch_size} --long-frames {args.long_frames}`; {platform.machine()} CPU "
        f"shared with other jobs (load average {load:.1f} at the end), {args.threads} torch thread(s), torch "
        f"{torch.__version__}, float32, masked path (4-D block-causal mask, sdpa). One training step (forward + "
        "backward + AdamW) on a length-skewed batch, padded and packed copies of the same model interleaved; "
        "tokens/s counts real tokens only; ratio = packed / padded tokens/s, median of the paired rounds "
        "(min-max); loss diff = the largest |padded - packed| loss over all steps.\n\n"
        "| case | samples | real / padded tokens | packed rows | padded tokens/s | packed tokens/s | ratio (spread) "
        f"| loss diff |\n|---|---:|---:|---:|---:|---:|---:|---:|\n{rows}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--long-frames", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cases", nargs="+", default=["videollm_pool", "qwen25vl"])
    parser.add_argument("--smoke", action="store_true", help="tiny widths, 1 repeat (the test suite runs it)")
    parser.add_argument("--write", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = parser.parse_args()
    if args.smoke:
        args.repeats, args.warmup, args.batch_size, args.long_frames = 1, 0, 4, 6
    torch.set_num_threads(args.threads)
    results = [run_case(case, args) for case in args.cases]
    text = section(results, args)
    print("\n" + text)
    if args.write:
        write_section(SECTION, text, Path(__file__).resolve().parent / "RESULTS.md")
    for r in results:
        print(f"RESULT case={r['case']} padded_tokens_per_s={r['padded_tps']:.1f} packed_tokens_per_s="
              f"{r['packed_tps']:.1f} ratio={r['ratio']:.3f} ratio_min={r['ratio_min']:.3f} ratio_max="
              f"{r['ratio_max']:.3f} loss_diff={r['loss_diff']:.2e} rows={r['rows']} tokens={r['tokens']} "
              f"padded_slots={r['padded_slots']}")  # fmt: skip


if __name__ == "__main__":
    main()

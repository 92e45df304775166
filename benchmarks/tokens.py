"""Tokens per video and compressor wall time vs video length: TDC vs the spatial-pooling baseline.

Usage: ``python benchmarks/tokens.py [--preset reduced|real] [--repeats 1] [--write]``.

Videos of 30 s, 5 min, 20 min and 1 h sampled at 1 fps, each (a) capped at 224 frames by uniform index
selection ``i * T / 224`` (TDC's training/eval cap, methods.md 2.3) and (b) uncapped. Per-frame features are
synthetic, with scene structure (scenes of 2-40 s: one random base per scene + per-frame noise) so that scene
segmentation sees realistic cuts. Token counts do not depend on the widths; wall times do.

* TDC: released-code defaults (24 cut points, chunks of 8, K = 16, newline tokens on a 12x12 grid, avg-pool
  queries, text input), in two forms: no budget guard, and ``max_tokens = 8192 - 16 - 64`` (TDC's
  ``model_max_length - 16 - text_len`` with a 64-token prompt). The audio column is the exact count with
  50 BEATs tokens per static frame (``count_tokens`` on the same chunk layout, guard on); not timed.
* Pooling baseline (``SpatialPoolCompressor``): the same 12x12 features, stride 2 (36 tokens/frame, timed)
  and stride 1 (144 tokens/frame, count only). It has no guard: ``VideoLLM`` raises on overflow.

``--preset real`` uses the real widths (SigLIP-so400m features D=1152, Qwen2-7B H=3584, a BERT-base
Q-Former); ``reduced`` (default, for CPU) uses D=128, H=256 and a 4-layer 128-wide Q-Former. ``--write``
puts the table in benchmarks/RESULTS.md under "## Tokens per video (TDC vs pooling)" (only that section
is replaced or appended).
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from pathlib import Path

import torch
from results_md import write_section  # benchmarks/ is on sys.path when run as a script

from vidtempo.models.compressors.pooling import SpatialPoolCompressor
from vidtempo.models.compressors.tdc import TDCCompressor
from vidtempo.models.interfaces import CompressorInput

GRID = (12, 12)
CAP = 224  # TDC: uniform_sample(num_sample=224)
CONTEXT = 8192
TEXT_TOKENS = 64
BUDGET = CONTEXT - 16 - TEXT_TOKENS  # TDC: model_max_length - 16 - text_len
LENGTHS = {"30 s": 30, "5 min": 300, "20 min": 1200, "1 h": 3600}
PRESETS = {
    "reduced": {"in_dim": 128, "llm_dim": 256,
                "qformer": {"preset": "bert_base", "hidden_size": 128, "num_hidden_layers": 4,
                            "num_attention_heads": 4, "intermediate_size": 512}},
    "real": {"in_dim": 1152, "llm_dim": 3584, "qformer": "bert_base"},
}  # fmt: skip
SECTION = "## Tokens per video (TDC vs pooling)"
QUESTION = "When does the person open the door? Answer with the start and end time in seconds."


def scene_features(seconds: int, dim: int, seed: int) -> torch.Tensor:
    """(T, 144, D) 1-fps features: scenes of 2-40 s, one random base per scene plus per-frame noise."""
    gen = torch.Generator().manual_seed(seed)
    scene_of_frame, scene, t = [], 0, 0
    while t < seconds:
        length = int(torch.randint(2, 41, (1,), generator=gen))
        scene_of_frame += [scene] * length
        scene, t = scene + 1, t + length
    ids = torch.tensor(scene_of_frame[:seconds])
    bases = torch.randn(scene, GRID[0] * GRID[1], dim, generator=gen)
    return bases[ids] + 0.3 * torch.randn(seconds, GRID[0] * GRID[1], dim, generator=gen)


def sample(feats: torch.Tensor, cap: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniformly keep at most ``cap`` frames (TDC: index i * T / cap); return (features, times in s)."""
    t = feats.shape[0]
    idx = torch.arange(t) if cap is None or t <= cap else (torch.arange(cap) * (t / cap)).long()
    return feats[idx], idx.float() + 0.5


def timed(fn, repeats: int) -> tuple[object, float]:
    best, out = math.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def run(preset: str, repeats: int) -> list[dict]:
    cfg = PRESETS[preset]
    torch.manual_seed(0)
    tdc = TDCCompressor(cfg["in_dim"], cfg["llm_dim"], qformer=cfg["qformer"], tokenizer="tiny",
                        qformer_batch=256).eval()  # fmt: skip
    pool = SpatialPoolCompressor(cfg["in_dim"], stride=2, time_embedding=True).eval()
    rows = []
    for name, seconds in LENGTHS.items():
        video = scene_features(seconds, cfg["in_dim"], seed=seconds)
        for cap in (CAP, None):
            feats, times = sample(video, cap)
            inputs = CompressorInput(feats=feats[None], frame_mask=torch.ones(1, len(times), dtype=torch.bool),
                                     timestamps=times[None], grid=GRID, query=[QUESTION])  # fmt: skip
            with torch.no_grad():
                tdc.max_tokens = None
                free, tdc_s = timed(lambda: tdc(inputs), repeats)  # noqa: B023
                tdc.max_tokens = BUDGET
                guarded = tdc(inputs)
                pooled, pool_s = timed(lambda: pool(inputs), repeats)  # noqa: B023
            chunks = [e - s for s, e in tdc.segmenter.segment(feats, times).chunks]
            rows.append({
                "video": name, "cap": "224" if cap else "none", "frames": len(times),
                "chunks": len(chunks), "tdc": int(free.mask.sum()), "tdc_guard": int(guarded.mask.sum()),
                "trimmed": guarded.info["trimmed"], "tdc_audio": tdc.count_tokens(chunks, GRID, audio=True),
                "tdc_s": tdc_s, "pool2": int(pooled.mask.sum()), "pool2_s": pool_s,
                "pool1": len(times) * GRID[0] * GRID[1],
            })  # fmt: skip
            assert rows[-1]["tdc"] == tdc.count_tokens(chunks, GRID, guard=False)
            print(f"done {name} cap={cap}: {rows[-1]}", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    fits = lambda n: "yes" if n + TEXT_TOKENS <= CONTEXT else "**no**"  # noqa: E731
    lines = [
        "| video (1 fps) | cap | frames | chunks | TDC tokens | TDC + guard | trimmed | TDC + audio + guard "
        "| TDC time (s) | pool s2 tokens | pool s2 time (s) | pool s1 tokens | fits 8192: TDC+guard / pool s2 / s1 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['video']} | {r['cap']} | {r['frames']} | {r['chunks']} | {r['tdc']} | {r['tdc_guard']} | "
            f"{r['trimmed']} | {r['tdc_audio']} | {r['tdc_s']:.2f} | {r['pool2']} | {r['pool2_s']:.3f} | "
            f"{r['pool1']} | {fits(r['tdc_guard'])} / {fits(r['pool2'])} / {fits(r['pool1'])} |"
        )
    return "\n".join(lines)


def section(rows: list[dict], preset: str, repeats: int) -> str:
    cfg = PRESETS[preset]
    qf = cfg["qformer"] if isinstance(cfg["qformer"], str) else "4 layers x 128 (BERT layout)"
    return (
        f"{SECTION}\n\n"
        f"`python benchmarks/tokens.py --preset {preset} --repeats {repeats}`; {platform.processor() or platform.machine()}"
        f", {torch.get_num_threads()} torch threads, torch {torch.__version__}, CPU, float32, one video per call, "
        f"best of {repeats}. Widths: D={cfg['in_dim']}, H={cfg['llm_dim']}, Q-Former {qf} "
        f"({'real sizes' if preset == 'real' else 'reduced widths: token counts are those of the real model, times are not'}). "
        f"Synthetic 1-fps features with scenes of 2-40 s on a 12x12 grid. TDC: released defaults (24 cut points, "
        f"chunks of 8, K=16, row newlines, text input); guard = `max_tokens={BUDGET}` (8192 - 16 - {TEXT_TOKENS} "
        f"prompt tokens); audio column = exact count with 50 tokens per static frame, guard on. Pool sN = "
        f"`SpatialPoolCompressor` stride N on the same grid (no guard). Fits = tokens + {TEXT_TOKENS} <= 8192. "
        f"The machine was shared with other jobs: times are indicative. The real widths (D=1152, H=3584, "
        f"BERT-base Q-Former; `--preset real`) were not timed on this 2-core CPU: by a FLOP count, about 3 TFLOP "
        f"per 224-frame video (frame_proj ~1.1, Q-Former cross-attention K/V ~1.9).\n\n{table(rows)}\n"
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="reduced")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--write", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = parser.parse_args()
    rows = run(args.preset, args.repeats)
    text = section(rows, args.preset, args.repeats)
    print(text)
    if args.write:
        write_section(SECTION, text, Path(__file__).resolve().parent / "RESULTS.md")


if __name__ == "__main__":
    main()

"""TEMPO on TempoSynth ordering: SFT only vs curriculum / shuffled-difficulty / single-stage DPO, pre- vs post-SFT.

Usage::

    python benchmarks/tempo_order.py --base runs/demo/run/0_sft/final --data runs/demo/data \
        --pairs runs/tempo_order/pairs.jsonl --out runs/tempo_order [--variants sft_only curriculum_post ...]

Every variant starts from the same base model (``init_from``) and runs the commands of
``recipes/tiny/tempo_synth_order.yaml`` in a subprocess, each in its own ``output_dir`` (re-running skips
finished stages and evaluations). Each result is then evaluated on the TempoSynth test split with the time and
blind controls. The table (markdown, also written to ``<out>/table.md``) has the order accuracy under the three
conditions, how many order answers named one of the options, grounding mIoU, and the wall time of the training.
Pairs come from ``vidtempo prefgen RECIPE --questions`` with the base model (see the recipe's header).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RECIPE = str(Path(__file__).resolve().parents[1] / "recipes" / "tiny" / "tempo_synth_order.yaml")
SHUFFLED = ["curriculum.order=as_listed", "curriculum.levels=[4,16,2,8]"]
VARIANTS: dict[str, tuple[str, list[str]]] = {
    # name: (what it is, the vidtempo command after the recipe)
    "base": ("the base model itself (no extra training)", []),
    "sft_only": ("SFT only: 400 more SFT steps", ["train", RECIPE, "trainer.max_steps=400"]),
    "curriculum_post": ("200 SFT, then curriculum DPO 16>8>4>2 (4 x 50 steps)",
                        ["dpo", RECIPE, "--curriculum", "--post-sft"]),
    "curriculum_pre": ("curriculum DPO 16>8>4>2 (4 x 50 steps), then 200 SFT (pre-SFT alignment)",
                       ["dpo", RECIPE, "--curriculum", "--pre-sft"]),
    "shuffled_post": ("200 SFT, then DPO levels in the order 4>16>2>8 (4 x 50 steps)",
                      ["dpo", RECIPE, "--curriculum", "--post-sft", *SHUFFLED]),
    "single_post": ("200 SFT, then single-stage DPO over all levels (200 steps)", ["dpo", RECIPE, "--post-sft"]),
    "dpo_start": ("the post-SFT runs' starting point: 200 SFT steps (curriculum_post's first stage)", []),
    "curriculum_post_truth": ("as curriculum_post, chosen = the annotated answer (pairs from --truth-pairs)",
                              ["dpo", RECIPE, "--curriculum", "--post-sft"]),
}  # fmt: skip
STAGE_OF = {"dpo_start": ("curriculum_post", "0_sft")}  # rows that evaluate a stage of another run


def vidtempo(args: list[str], env: dict[str, str], log: Path) -> float:
    """Run ``vidtempo ARGS`` in a subprocess (output to ``log``); its wall time in seconds."""
    start = time.perf_counter()
    with log.open("a") as f:
        code = subprocess.call([sys.executable, "-m", "vidtempo.cli.main", *args], env=env, stdout=f,
                               stderr=subprocess.STDOUT)  # fmt: skip
    if code:
        raise SystemExit(f"vidtempo {' '.join(args)} failed ({code}); see {log}")
    return time.perf_counter() - start


def final_checkpoint(run: Path) -> Path:
    """The ``final/`` of the last stage of a (multi-stage) run."""
    stages = sorted(run.glob("*_*/final"), key=lambda p: int(p.parent.name.split("_")[0]))
    if not stages:
        raise SystemExit(f"{run}: no finished stage")
    return stages[-1]


def scores(report: Path) -> dict[str, float]:
    """Order accuracy (normal / time / blind), answered order items and grounding mIoU from a report."""
    r = json.loads(report.read_text())["metrics"]
    order = {c: r[c]["mcq"]["strict"]["per_task"]["order"] for c in ("normal", "time", "blind")}
    return {"order": order["normal"]["accuracy"], "order_time": order["time"]["accuracy"],
            "order_blind": order["blind"]["accuracy"], "answered": order["normal"]["answered"],
            "total": order["normal"]["total"], "grounding": r["normal"]["grounding"]["strict"]["mIoU"]}  # fmt: skip


def run_variant(name: str, args: argparse.Namespace, env: dict[str, str]) -> dict[str, object]:
    out = Path(args.out) / name
    out.mkdir(parents=True, exist_ok=True)
    log, timing = out / "log.txt", out / "train_seconds.json"
    command = list(VARIANTS[name][1])
    if name.endswith("_truth"):
        if not args.truth_pairs:
            raise SystemExit(f"{name} needs --truth-pairs (vidtempo prefgen ... --questions prefgen_answers.chosen=truth)")
        command.append(f"dpo.data.train.path={Path(args.truth_pairs).resolve()}")
    if name in STAGE_OF:
        run, stage = STAGE_OF[name]
        checkpoint, seconds = Path(args.out) / run / "run" / stage / "final", 0.0
    elif not command:
        checkpoint, seconds = Path(args.base), 0.0
    else:
        if not timing.is_file():
            seconds = vidtempo([*command, f"output_dir={out / 'run'}"], env, log)
            timing.write_text(json.dumps(seconds))
        seconds = json.loads(timing.read_text())
        checkpoint = final_checkpoint(out / "run")
    report = out / "eval" / "report.json"
    if not report.is_file():
        vidtempo(["eval", RECIPE, "--checkpoint", str(checkpoint), "--benchmark", "synth", "--annotations",
                  args.data, "--out", str(out / "eval"), "--limit", str(args.limit), "--no-progress"], env, log)  # fmt: skip
    return {"name": name, "what": VARIANTS[name][0], "seconds": seconds, **scores(report)}


def table(rows: list[dict[str, object]]) -> str:
    lines = ["| variant | training | order normal | order time ctl | order blind | order answers naming an option "
             "| grounding mIoU | train wall s |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['what']} | {r['order']:.1f} | {r['order_time']:.1f} | "
                     f"{r['order_blind']:.1f} | {r['answered']}/{r['total']} | {r['grounding']:.1f} | "
                     f"{r['seconds']:.0f} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="base checkpoint (a final/ directory)")
    parser.add_argument("--data", required=True, help="TempoSynth root the base was trained on")
    parser.add_argument("--pairs", required=True, help="answer pairs JSONL (vidtempo prefgen --questions)")
    parser.add_argument("--truth-pairs", help="pairs with chosen = the annotated answer (for *_truth variants)")
    parser.add_argument("--out", default="runs/tempo_order")
    parser.add_argument("--limit", type=int, default=120, help="test items per task")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS),
                        default=[v for v in VARIANTS if not v.endswith("_truth")])
    args = parser.parse_args()
    env = {**os.environ, "VIDTEMPO_BASE": str(Path(args.base).resolve()),
           "VIDTEMPO_DATA": str(Path(args.data).resolve()), "VIDTEMPO_PAIRS": str(Path(args.pairs).resolve())}  # fmt: skip
    rows = []
    for name in args.variants:
        rows.append(run_variant(name, args, env))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    text = table(rows)
    (Path(args.out) / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()

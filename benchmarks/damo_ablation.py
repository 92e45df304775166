"""Tiny DaMO ablation on TempoSynth (#26): the recipe's stages 2-4 trained per variant with the same seed and
steps, then grounding (normal / time / blind), audio-visual accuracy and retrieval on the unseen test split.

Usage: ``python benchmarks/damo_ablation.py --data /tmp/vt_data/temposynth_demo [--out runs/damo_ablation]
[--recipe recipes/tiny/damo_synth.yaml] [key=value ...]
[--variants base alpha0 no_time no_global no_window no_aux stage1] [--steps 100 800 100] [--limit 60] [--jobs 1]
[--stage1 PATH | --align-steps N]``

Every variant starts from ``recipes/tiny/damo_synth.yaml`` and changes one thing:

- ``base``: the recipe's bridge -> temporal -> dialogue stages, stage 1 (align) skipped;
- ``alpha0``: no audio stream (no audio encoder, ``audio_dim: null``: no audio queries, alpha = 0);
- ``no_time``: ``model.compressor.time_embedding: false``;
- ``no_global``: ``model.compressor.global_residual: false``;
- ``no_window``: ``model.compressor.time_window: null`` (every query reads the whole clip);
- ``no_aux``: no auxiliary loss (``objective.aux`` removed);
- ``stage1``: stage 1 on: the stages start from a finished align stage's weights (``--stage1``, a ``final/``
  directory; ``init_from``), or the recipe's align stage is trained first for ``--align-steps`` steps.

``--steps B T D`` sets the three stages' steps (default: the recipe's). Each run is one process on one core
(``OMP_NUM_THREADS=1``, ``trainer.devices=1``); decoded clips are shared through one clip store under
``--out``. ``--jobs`` runs that many variants at once. Each variant's train and eval logs, recipe and reports
stay under ``--out/<variant>``; a finished step (train, eval, retrieval) is not rerun.

Ends with one ``RESULT case=<variant> ...`` line per variant: grounding mIoU (normal, time control, blind),
audio-visual accuracy (normal, blind), multiple-choice accuracy over all tasks, and text-to-video retrieval
R@1/5/10 and median rank on the test videos (all in percent except the rank), plus the wall time of the last
``train`` call (a resumed run counts only what it trained; a shared machine: compare steps, not seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RECIPE = ROOT / "recipes" / "tiny" / "damo_synth.yaml"
SFT_STAGES = ("bridge", "temporal", "dialogue")

VARIANTS: dict[str, str] = {
    "base": "stages 2-4, alpha = 3, time embeddings, global residual, time-local attention, saliency + tag + "
            "encoder tag losses",
    "alpha0": "no audio stream (alpha = 0)",
    "no_time": "no temporal embeddings",
    "no_global": "no global residual",
    "no_window": "no time-local attention (every query reads the whole clip)",
    "no_aux": "no auxiliary loss",
    "stage1": "stage 1 (align) first",
}


def variant_recipe(name: str, steps: tuple[int, int, int] | None, out: Path, clip_store: Path,
                   stage1: str | None, align_steps: int | None, recipe: Path = RECIPE,
                   overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """The recipe of variant ``name`` as a plain dict (interpolations kept), written by :func:`main`."""
    from vidtempo.config import load_recipe

    cfg = OmegaConf.to_container(load_recipe(recipe, list(overrides)), resolve=False)
    assert isinstance(cfg, dict)
    cfg.pop("_recipe_path_", None)
    cfg["name"], cfg["output_dir"] = f"damo_ablation_{name}", str(out / "run")
    cfg["trainer"] = {**cfg["trainer"], "devices": 1, "strategy": "auto"}
    cfg["data"]["collator"]["clip_store"] = str(clip_store)
    stages = [s for s in cfg["stages"] if s["name"] in SFT_STAGES]
    if [s["name"] for s in stages] != list(SFT_STAGES):
        raise SystemExit(f"{recipe}: expected the stages {SFT_STAGES} after align, got {[s['name'] for s in stages]}")
    if steps is not None:
        for stage, n in zip(stages, steps):
            stage["trainer"] = {**stage.get("trainer", {}), "max_steps": n, "max_time": None}
    model, comp = cfg["model"], cfg["model"]["compressor"]
    if name == "alpha0":
        model["audio_encoder"], comp["audio_dim"] = None, None
        model["trainable"] = {**model["trainable"], "audio_encoder": False}
        for stage in stages:
            stage["trainable"] = {**stage["trainable"], "audio_encoder": False}
        cfg["data"]["collator"].update(audio=False, audio_mel=None)
    elif name == "no_time":
        comp["time_embedding"] = False
    elif name == "no_global":
        comp["global_residual"] = False
    elif name == "no_window":
        comp["time_window"] = None
    elif name == "no_aux":
        for stage in stages:
            stage.get("objective", {}).pop("aux", None)
        cfg["data"]["collator"].pop("targets", None)
    elif name == "stage1":
        if stage1:
            cfg["init_from"] = str(Path(stage1).resolve())
        else:
            align = next(s for s in cfg["stages"] if s["name"] == "align")
            if align_steps is not None:
                align["trainer"] = {**align.get("trainer", {}), "max_steps": align_steps, "max_time": None}
            stages = [align, *stages]
    elif name != "base":
        raise SystemExit(f"unknown variant {name!r}; choose from {sorted(VARIANTS)}")
    cfg["stages"] = stages
    return cfg


def vidtempo(args: list[str], log: Path) -> float:
    """Run the CLI in a process of its own on one core; the wall seconds. A failure names its log."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    with log.open("a") as fh:
        fh.write(f"$ vidtempo {' '.join(args)}\n")
        fh.flush()
        proc = subprocess.run([sys.executable, "-m", "vidtempo.cli.main", *args], cwd=ROOT, env=env, stdout=fh,
                              stderr=subprocess.STDOUT)  # fmt: skip
    if proc.returncode:
        raise SystemExit(f"vidtempo {args[0]} failed (exit {proc.returncode}); see {log}")
    return time.perf_counter() - start


def synth_scores(report: Path) -> dict[str, float]:
    """Grounding mIoU and audio-visual / all-task MCQ accuracy (all in percent) per condition from a synth
    ``report.json``."""
    metrics = json.loads(report.read_text())["metrics"]
    out: dict[str, float] = {}
    for cond in ("normal", "time", "blind"):
        m = metrics[cond]
        out[f"miou_{cond}"] = m["grounding"]["strict"]["mIoU"]  # in percent, as the MCQ accuracies
        out[f"av_{cond}"] = m["mcq"]["strict"]["per_task"]["audio_visual"]["accuracy"]
        out[f"mcq_{cond}"] = m["mcq"]["strict"]["accuracy"]
    return out


def retrieval_scores(report: Path) -> dict[str, float]:
    """Text-to-video R@1/5/10 and median rank from a retrieval ``report.json``."""
    t2v = json.loads(report.read_text())["metrics"]["t2v"]
    return {"r1": t2v["R1"], "r5": t2v["R5"], "r10": t2v["R10"], "mdr": t2v["MedianR"]}


def run_variant(name: str, args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out).resolve() / name
    out.mkdir(parents=True, exist_ok=True)
    log, recipe, timing = out / "log.txt", out / "recipe.yaml", out / "train_seconds.json"
    cfg = variant_recipe(name, tuple(args.steps) if args.steps else None, out,
                         Path(args.out).resolve() / "decoded_clips", args.stage1, args.align_steps,
                         Path(args.recipe), tuple(args.overrides))  # fmt: skip
    cfg["data"]["train"]["root"] = str(Path(args.data).resolve())
    recipe.write_text(yaml.safe_dump(cfg, sort_keys=False))
    if not timing.is_file():
        timing.write_text(json.dumps(vidtempo(["train", str(recipe)], log)))
    final = out / "run" / f"{len(cfg['stages']) - 1}_{cfg['stages'][-1]['name']}" / "final"
    synth, ret = out / "eval_synth" / "report.json", out / "eval_retrieval" / "report.json"
    data = str(Path(args.data).resolve())
    if not synth.is_file():
        vidtempo(["eval", str(recipe), "--checkpoint", str(final), "--benchmark", "synth", "--annotations", data,
                  "--out", str(synth.parent), "--limit", str(args.limit), "--no-progress"], log)  # fmt: skip
    if not ret.is_file():
        vidtempo(["eval", str(recipe), "--checkpoint", str(final), "--benchmark", "synth_retrieval",
                  "--annotations", data, "--out", str(ret.parent), "--no-progress"], log)  # fmt: skip
    return {"name": name, "seconds": json.loads(timing.read_text()), **synth_scores(synth), **retrieval_scores(ret)}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| variant | what | grounding mIoU (normal / time / blind) | audio-visual (normal / blind) "
             "| MCQ all tasks | t2v R@1 / R@5 / R@10 / MdR | train s |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {VARIANTS[r['name']]} | {r['miou_normal']:.1f} / {r['miou_time']:.1f} / "
                     f"{r['miou_blind']:.1f} | {r['av_normal']:.1f} / {r['av_blind']:.1f} | {r['mcq_normal']:.1f} "
                     f"| {r['r1']:.1f} / {r['r5']:.1f} / {r['r10']:.1f} / {r['mdr']:.1f} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; recipe overrides may come before, between or after the flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="TempoSynth root (vidtempo data synth)")
    parser.add_argument("--out", default="runs/damo_ablation")
    parser.add_argument("--recipe", default=str(RECIPE), help="a DaMO recipe with align, bridge, temporal, dialogue")
    parser.add_argument("overrides", nargs="*", help="recipe overrides (key=value), applied before each variant's")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--steps", nargs=3, type=int, metavar=("BRIDGE", "TEMPORAL", "DIALOGUE"),
                        help="steps of stages 2-4 (default: the recipe's)")
    parser.add_argument("--limit", type=int, default=60, help="synth test items per task")
    parser.add_argument("--jobs", type=int, default=1, help="variants trained at once (one core each)")
    parser.add_argument("--stage1", help="stage1 variant: a finished align stage's final/ to start from")
    parser.add_argument("--align-steps", type=int, help="stage1 variant without --stage1: align steps")
    return parser.parse_intermixed_args(argv)


def main() -> None:
    args = parse()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        rows = list(pool.map(lambda v: run_variant(v, args), args.variants))
    text = table(rows)
    Path(args.out, "table.md").write_text(text + "\n")
    print(text)
    for r in rows:
        print(f"RESULT case={r['name']} miou={r['miou_normal']:.1f} miou_time={r['miou_time']:.1f} "
              f"miou_blind={r['miou_blind']:.1f} av={r['av_normal']:.1f} av_blind={r['av_blind']:.1f} "
              f"mcq={r['mcq_normal']:.1f} r1={r['r1']:.1f} r5={r['r5']:.1f} r10={r['r10']:.1f} "
              f"mdr={r['mdr']:.1f} train_s={r['seconds']:.0f}")


if __name__ == "__main__":
    main()

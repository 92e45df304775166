"""DPO step vs SFT step: wall time and peak memory of one optimiser step on the same batch.

Usage: ``python benchmarks/dpo_step.py [--repeats 5] [--warmup 2] [--batch-size 4] [--device auto] [--write]``
(``make bench`` runs it with the defaults).

For each model configuration, one real optimiser step (forward + backward + gradient clipping + AdamW step +
``zero_grad``) of :class:`~vidtempo.training.sft.SFTModule` and of :class:`~vidtempo.training.dpo.DPOModule`
with each reference strategy, all on the same pairs: the DPO batch comes from
:class:`~vidtempo.data.preference_collate.PreferenceCollator`, the SFT batch from
:class:`~vidtempo.data.collate.VideoCollator` on the prompt + chosen answer of the same pairs (so DPO scores
twice the text of SFT plus the reference passes). Videos are real H.264 files written by
``vidtempo.data.testing.make_test_video`` (8 s, hard cuts every 2 s); decoding and collation are outside the
timed step. DPO settings are TEMPLE's (sigmoid, beta 0.1, rpo_alpha 1.0).

Configurations: the composed ``VideoLLM`` of ``recipes/tiny/synth_grounding.yaml`` (frame CNN, 16 frames,
4-layer 128-wide Qwen2) and the native tiny Qwen2.5-VL of ``recipes/tiny/tempo_qwen25vl.yaml``, each with a
LoRA plan (adapters on the LLM only, everything else frozen: TEMPLE's DPO plan) and with full fine-tuning
(``adapter_off`` needs the LoRA plan). The default cases are issue 27's, ``*_lora_long``: about 1,000 video
tokens per video (``VideoLLM``: the frame CNN pooled to an 8x8 grid, 16 frames -> 1,024 tokens; Qwen2.5-VL: 32
frames of 224x224 -> 1,024 merged tokens) and answers of at most 32 tokens; the short cases (``videollm_lora``
etc.: 16-64 video tokens, ~100-token answers) are the earlier table's.

DPO objectives are named by their reference; ``<reference>/2fwd`` is the path before issue 27 (chosen and
rejected as two forwards with full (B, L, V) logits, ``loss_head: logits``), measured in the same run as the
default one-forward path (shared prefix, label-position LM head). Ratios to SFT are given from the medians and
per round (each round steps every objective once, so a load spike on a shared machine hits all of them): the
median and the spread [min-max] of the per-round ratios.

* Time: the objectives of one configuration are built side by side (same seed, same weights) and stepped
  interleaved, ``--warmup`` steps each first, then ``--repeats`` rounds; the median per objective is
  reported with its ratio to SFT.
* Memory on CPU: peak RSS growth, measured in a fresh subprocess per (configuration, objective): the model and
  the batches are built first, the kernel's peak-RSS mark is reset to the current RSS
  (``/proc/self/clear_refs`` = 5; where not allowed, the current ``VmRSS`` is the baseline and the mark is
  not reset), then the objective and its optimiser are built (a ``frozen_copy`` reference is counted) and
  ``--warmup`` + 2 steps run; growth = ``VmHWM`` - baseline. It covers every allocation, tensors included
  (``tracemalloc`` does not see torch's allocator). On CUDA: ``torch.cuda.max_memory_allocated`` growth
  over the same baseline.

``--write`` puts the table in benchmarks/RESULTS.md under "## DPO step vs SFT step" (only that section is
replaced or appended).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from results_md import write_section  # benchmarks/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
SECTION = "## DPO step vs SFT step"
RECIPES = {"videollm": REPO / "recipes" / "tiny" / "synth_grounding.yaml",
           "qwen25vl": REPO / "recipes" / "tiny" / "tempo_qwen25vl.yaml"}  # fmt: skip
PLANS: dict[str, dict[str, Any]] = {
    "lora": {"vision_encoder": False, "compressor": False, "projector": False, "llm": "lora"},
    "full": {"vision_encoder": True, "compressor": True, "projector": True, "llm": True},
}
LORA = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"}
CONFIGS: dict[str, tuple[str, str]] = {  # name -> (model, plan); "_long": ~1,000 video tokens, short answers
    "videollm_lora_long": ("videollm", "lora"),
    "qwen25vl_lora_long": ("qwen25vl", "lora"),
    "videollm_lora": ("videollm", "lora"),
    "videollm_full": ("videollm", "full"),
    "qwen25vl_lora": ("qwen25vl", "lora"),
    "qwen25vl_full": ("qwen25vl", "full"),
}
DEFAULT_CONFIGS = ["videollm_lora_long", "qwen25vl_lora_long"]  # the issue-27 case
# Long case (issue 27): 1,024 video tokens per video, answers of <= 32 tokens.
#   videollm: FrameCNN pooled to an 8x8 grid at 64 px, 16 frames, pool stride 1 -> 16 x 64 = 1,024 tokens;
#   qwen25vl: 32 frames of 224x224 -> 16 temporal patches x 8 x 8 merged tokens = 1,024 tokens.
LONG_MODEL = {"videollm": {"vision_encoder": {"_target_": "frame_cnn", "out_dim": 64, "channels": [16, 32, 64],
                                              "image_size": 64, "grid": [8, 8], "pool": "max"},
                           "max_length": 2048},
              "qwen25vl": {"max_pixels": 224 * 224, "max_length": 2048}}  # fmt: skip
LONG_COLLATOR = {"videollm": {"num_frames": 16, "frame_size": 64}, "qwen25vl": {"num_frames": 32, "frame_size": 224}}
# DPO objectives are named by reference; "/2fwd" = the path before issue 27 (two forwards, full logits)
OBJECTIVES = ("sft", "adapter_off", "frozen_copy", "precomputed", "adapter_off/2fwd", "frozen_copy/2fwd",
              "precomputed/2fwd")  # fmt: skip
LONG_OBJECTIVES = ("sft", "adapter_off", "precomputed", "adapter_off/2fwd", "precomputed/2fwd")
DPO_KW = {"beta": 0.1, "loss_type": "sigmoid", "rpo_alpha": 1.0}  # TEMPLE
LR = 1e-4
VIDEO = {"duration": 8.0, "fps": 8, "size": (64, 48), "cuts": (2.0, 4.0, 6.0), "audio": False}
EVENTS = ("a red circle appears in the centre", "the background turns green", "a blue square slides to the right",
          "the square stops and the circle fades out")  # fmt: skip
PROMPT = "<video>\nDescribe the events of this video in the order they happen, with their times."


def objectives_for(config: str, wanted: list[str] | None = None) -> list[str]:
    """SFT and every DPO reference valid for the configuration's plan (adapter_off needs LoRA)."""
    plan = CONFIGS[config][1]
    names = wanted or list(LONG_OBJECTIVES if config.endswith("_long") else OBJECTIVES)
    return [o for o in names if not o.startswith("adapter_off") or plan == "lora"]


# ------------------------------------------------------------------------------------------------- inputs
def make_videos(workdir: Path, n: int) -> list[Path]:
    """``n`` real 8 s H.264 videos with hard cuts (written once into ``workdir``)."""
    from vidtempo.data.testing import make_test_video

    workdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = workdir / f"dpo_bench_{i}.mp4"
        if not path.exists():
            tmp = path.with_suffix(".part.mp4")
            make_test_video(tmp, **VIDEO, beeps=())
            tmp.rename(path)
        paths.append(path)
    return paths


def describe(order: list[int]) -> str:
    """A dense caption telling the events in ``order`` over the 2 s segments."""
    return " ".join(f"From {2 * k}.0 to {2 * k + 2}.0 seconds {EVENTS[e]}." for k, e in enumerate(order))


SHORT_EVENTS = ("circle", "green", "slide", "fade")  # the long case's answers: <= 32 tokens


def pairs_for(videos: list[Path], long: bool = False) -> list[Any]:
    """One output-side pair per video: chosen = true order, rejected = the events reversed (TEMPO)."""
    from vidtempo.data.samples import PreferenceSample

    true = list(range(len(EVENTS)))
    if long:
        chosen, rejected = ", ".join(SHORT_EVENTS), ", ".join(SHORT_EVENTS[::-1])
    else:
        chosen, rejected = describe(true), describe(true[::-1])
    return [PreferenceSample(video=str(v), prompt=[{"role": "user", "content": PROMPT}], chosen=chosen,
                             rejected=rejected, id=f"pair{i}") for i, v in enumerate(videos)]  # fmt: skip


def load_sections(model: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(tokenizer node, model node, collator settings) of the model's tiny recipe."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(RECIPES[model])
    node = OmegaConf.to_container(cfg.model, resolve=True)
    return (OmegaConf.to_container(cfg.tokenizer, resolve=True), node,
            OmegaConf.to_container(cfg.data.collator, resolve=True))  # fmt: skip


@dataclass
class Setup:
    """Everything one configuration needs: tokenizer, model builder, the SFT and DPO batches."""

    build_model: Callable[[], torch.nn.Module]
    sft_batch: Any
    dpo_batch: Any
    device: torch.device

    def describe(self) -> dict[str, Any]:
        """Shapes of the batches (for the report)."""
        c, r = self.dpo_batch.chosen, self.dpo_batch.rejected
        return {"pairs": len(self.dpo_batch), "frames": list(c.frames.shape[1:]),
                "sft_len": int(self.sft_batch.input_ids.shape[1]),
                "dpo_len": [int(c.input_ids.shape[1]), int(r.input_ids.shape[1])],
                "video_tokens": self.video_tokens,
                "answer_tokens": [int((c.labels != -100).sum(1).max()), int((r.labels != -100).sum(1).max())]}  # fmt: skip

    video_tokens: int = 0


def make_setup(config: str, workdir: Path, batch_size: int, device: torch.device) -> Setup:
    """Collate the batches on real videos and compute the precomputed reference log-probs."""
    from vidtempo.config.instantiate import instantiate
    from vidtempo.data.collate import VideoCollator
    from vidtempo.data.preference_collate import REF_CHOSEN_KEY, REF_REJECTED_KEY, PreferenceCollator
    from vidtempo.data.samples import ConversationSample
    from vidtempo.models.build import build_video_llm
    from vidtempo.training.dpo import answer_logps

    model_name, plan = CONFIGS[config]
    long = config.endswith("_long")
    tok_node, node, collator = load_sections(model_name)
    collator = {k: v for k, v in collator.items() if k != "cache_decoded"}  # one batch, decoded once
    tokenizer = instantiate(tok_node, key="tokenizer", recipe=str(RECIPES[model_name]))
    node = {**node, "trainable": PLANS[plan], "lora": LORA}
    if long:
        node = {**node, **LONG_MODEL[model_name]}
        collator = {**collator, **LONG_COLLATOR[model_name]}

    def build_model() -> torch.nn.Module:
        torch.manual_seed(0)
        return build_video_llm(node).to(device).train()

    pairs = pairs_for(make_videos(workdir, batch_size), long)
    sft = VideoCollator(tokenizer, **collator)(
        [ConversationSample(video=p.video, messages=[*p.prompt, {"role": "assistant", "content": p.chosen}],
                            id=p.id) for p in pairs]  # fmt: skip
    )
    prefs = PreferenceCollator(tokenizer, **collator)
    first = prefs(pairs).to(device)
    with torch.no_grad():  # what a precompute pass over the pair file stores: the stage-start model's logps
        ref = build_model().eval()
        chosen, rejected = answer_logps(ref, first.chosen)[0], answer_logps(ref, first.rejected)[0]
        del ref
    for p, c, r in zip(pairs, chosen.tolist(), rejected.tolist()):
        p.meta.update({REF_CHOSEN_KEY: c, REF_REJECTED_KEY: r})
    setup = Setup(build_model, sft.to(device), prefs(pairs).to(device), device)
    with torch.no_grad():
        setup.video_tokens = int(build_model()(**first.chosen.model_inputs()).num_video_tokens.max())
    return setup


# ------------------------------------------------------------------------------------------------- steps
def make_step(objective: str, model: torch.nn.Module, setup: Setup) -> Callable[[], float]:
    """A closure running one full optimiser step of ``objective`` on its batch; returns the loss."""
    from vidtempo.training.dpo import DPOModule
    from vidtempo.training.optim import OptimSettings, build_optimizer
    from vidtempo.training.sft import SFTModule

    settings = OptimSettings(lr=LR, warmup_steps=0, scheduler="constant")
    if objective == "sft":
        module: Any = SFTModule(model, settings)
        batch = setup.sft_batch
    else:
        reference, _, path = objective.partition("/")
        head = {"loss_head": "logits"} if path == "2fwd" else {}
        module = DPOModule(model, settings, reference=reference, **DPO_KW, **head)
        batch = setup.dpo_batch
    module.train()
    optimizer, _ = build_optimizer(model, settings, total_steps=1000)
    params = [p for p in model.parameters() if p.requires_grad]
    cuda = setup.device.type == "cuda"

    def step() -> float:
        out = module(batch)
        loss = out.loss if objective == "sft" else out.loss.loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)  # the Trainer's gradient_clip_val
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        return float(loss.detach())

    return step


def time_config(config: str, setup: Setup, warmup: int, repeats: int,
                objectives: list[str] | None = None) -> dict[str, list[float]]:  # fmt: skip
    """Seconds of each timed step of every objective, stepped interleaved (same weights at the start)."""
    steps = {o: make_step(o, setup.build_model(), setup) for o in objectives_for(config, objectives)}
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {o: [] for o in steps}
    for _ in range(repeats):  # interleaved: load spikes on a shared machine hit every objective alike
        for o, step in steps.items():
            t0 = time.perf_counter()
            loss = step()
            times[o].append(time.perf_counter() - t0)
            if not torch.isfinite(torch.tensor(loss)):
                raise RuntimeError(f"{config}/{o}: non-finite loss {loss}")
    return times


# ------------------------------------------------------------------------------------------------- memory
def _status_kib(field: str) -> int | None:
    status = Path("/proc/self/status")
    if not status.exists():
        return None
    for line in status.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False when not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def memory_child(config: str, objective: str, workdir: Path, batch_size: int, warmup: int, device: str) -> None:
    """Subprocess body: print the peak-memory growth (MiB) of building ``objective`` and stepping it."""
    dev = torch.device(device)
    setup = make_setup(config, workdir, batch_size, dev)
    model = setup.build_model()
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    else:
        reset = _reset_peak_rss()
        base = _status_kib("VmRSS") or 0
    step = make_step(objective, model, setup)
    for _ in range(warmup + 2):
        step()
    if dev.type == "cuda":
        growth, peak = (torch.cuda.max_memory_allocated(dev) - base) / 2**20, torch.cuda.max_memory_allocated(dev)
        out = {"growth_mib": growth, "peak_mib": peak / 2**20, "kind": "cuda max_memory_allocated"}
    else:
        hwm = _status_kib("VmHWM") or 0
        out = {"growth_mib": (hwm - base) / 1024, "peak_mib": hwm / 1024,
               "kind": "VmHWM" if reset else "VmHWM (not reset)"}  # fmt: skip
    print(json.dumps(out))


def measure_memory(config: str, objective: str, args: argparse.Namespace, device: torch.device) -> dict:
    cmd = [sys.executable, __file__, "--mem-child", config, objective, "--workdir", str(args.workdir),
           "--batch-size", str(args.batch_size), "--warmup", str(args.warmup), "--device", str(device)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"memory subprocess {config}/{objective} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------- report
def trainable_counts(setup: Setup) -> tuple[int, int]:
    model = setup.build_model()
    return (sum(p.numel() for p in model.parameters()),
            sum(p.numel() for p in model.parameters() if p.requires_grad))  # fmt: skip


def run(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    rows = []
    for config in args.configs:
        setup = make_setup(config, args.workdir, args.batch_size, device)
        total, trainable = trainable_counts(setup)
        shapes = setup.describe()
        print(f"{config}: {total:,} parameters ({trainable:,} trainable); {shapes}", flush=True)
        times = time_config(config, setup, args.warmup, args.repeats, args.objectives)
        medians = {o: statistics.median(v) for o, v in times.items()}
        none = {"growth_mib": float("nan"), "peak_mib": float("nan"), "kind": "not measured"}
        mem = {o: measure_memory(config, o, args, device) if args.memory else none for o in medians}
        for o, sec in medians.items():
            per_round = [t / s for t, s in zip(times[o], times["sft"])]  # same round: same machine load
            rows.append({"config": config, "objective": o, "seconds": sec, "time_ratio": sec / medians["sft"],
                         "ratio_median": statistics.median(per_round), "ratio_min": min(per_round),
                         "ratio_max": max(per_round), "fastest": min(times[o]),
                         "growth_mib": mem[o]["growth_mib"], "peak_mib": mem[o]["peak_mib"],
                         "mem_ratio": mem[o]["growth_mib"] / mem["sft"]["growth_mib"], "kind": mem[o]["kind"],
                         "params": total, "trainable": trainable, **shapes})  # fmt: skip
            r = rows[-1]
            print(f"  {o:<17} {1000 * sec:9.1f} ms (min {1000 * r['fastest']:.1f})  x{r['time_ratio']:.2f} "
                  f"(per round {r['ratio_min']:.2f}-{r['ratio_max']:.2f})   peak growth "
                  f"{r['growth_mib']:7.1f} MiB  x{r['mem_ratio']:.2f}   ({r['kind']} {r['peak_mib']:.0f} MiB)",
                  flush=True)  # fmt: skip
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model / plan | trainable / total params | step | reference | DPO path | step time, median (min) ms | "
             "x SFT (medians) | x SFT per round: median [min-max] | peak memory growth (MiB) | x SFT | peak total (MiB) |",
             "|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        dpo = r["objective"] != "sft"
        reference, _, path = r["objective"].partition("/")
        path = "-" if not dpo else ("two forwards, full logits" if path == "2fwd" else "one forward, shared prefix")
        lines.append(
            f"| {r['config']} | {r['trainable']:,} / {r['params']:,} | {'DPO' if dpo else 'SFT'} | "
            f"{reference if dpo else '-'} | {path} | {1000 * r['seconds']:.1f} ({1000 * r['fastest']:.1f}) | "
            f"{r['time_ratio']:.2f} | {r['ratio_median']:.2f} [{r['ratio_min']:.2f}-{r['ratio_max']:.2f}] | "
            f"{r['growth_mib']:.1f} | {r['mem_ratio']:.2f} | {r['peak_mib']:.0f} |"
        )
    return "\n".join(lines)


def result_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One ``RESULT`` line per (configuration, objective)."""
    return [f"RESULT case={r['config']} objective={r['objective']} ms={1000 * r['seconds']:.1f} "
            f"ratio_vs_sft={r['time_ratio']:.3f} round_ratio_median={r['ratio_median']:.3f} "
            f"round_ratio_min={r['ratio_min']:.3f} round_ratio_max={r['ratio_max']:.3f} "
            f"mem_growth_mib={r['growth_mib']:.1f} video_tokens={r['video_tokens']} "
            f"answer_tokens={max(r['answer_tokens'])}" for r in rows]  # fmt: skip


def section(rows: list[dict[str, Any]], args: argparse.Namespace, device: torch.device) -> str:
    machine = (f"{os.cpu_count()}-core {platform.machine()} CPU, no GPU" if device.type == "cpu"
               else torch.cuda.get_device_name(device))  # fmt: skip
    mem = ("peak RSS growth (`VmHWM` after the steps minus `VmRSS` before the objective was built, the "
           "high-water mark reset with `/proc/self/clear_refs`; fresh subprocess per row; covers torch's "
           "allocator, which `tracemalloc` does not see)" if device.type == "cpu" else
           "`torch.cuda.max_memory_allocated` growth over the allocation before the objective was built")  # fmt: skip
    shapes = {r["config"]: r for r in rows if r["objective"] == "sft"}
    batch = "; ".join(f"`{c}`: frames {tuple(r['frames'])}, {r['video_tokens']} video tokens, {r['sft_len']} text "
                      f"ids for SFT, {r['dpo_len']} for the DPO sides, answers of {r['answer_tokens']} tokens "
                      f"(chosen, rejected)" for c, r in shapes.items())  # fmt: skip
    return (
        f"{SECTION}\n\n"
        f"`python benchmarks/dpo_step.py --repeats {args.repeats} --warmup {args.warmup} --batch-size "
        f"{args.batch_size}{'' if args.configs == DEFAULT_CONFIGS else ' --configs ' + ' '.join(args.configs)}"
        f"{'' if args.memory else ' --no-memory'}`; {machine}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"float32, load average at the end {os.getloadavg()[0]:.1f}. One step = forward + backward + grad-norm "
        f"clip + AdamW step of `SFTModule` / `DPOModule` (sigmoid, beta 0.1, rpo_alpha 1.0) on "
        f"{args.batch_size} pairs from `PreferenceCollator` (output-side pairs, real 8 s H.264 videos with cuts) "
        f"and, for SFT, the same prompts + chosen answers from `VideoCollator`; decoding is outside the step. "
        f"Time: median of {args.repeats} interleaved steps after {args.warmup} warm-up steps each. Memory: {mem}; "
        f"it includes the optimiser state and, for `frozen_copy`, the copy. Models: `videollm` = the model of "
        f"`recipes/tiny/synth_grounding.yaml`, `qwen25vl` = the native tiny Qwen2.5-VL of "
        f"`recipes/tiny/tempo_qwen25vl.yaml`; plan `lora` = LoRA r 8 on the LLM linears only (TEMPLE's DPO "
        f"plan), `full` = every part trains. Batches: {batch}. The weights are 1-4 MiB here, so the memory ratios "
        f"are activation ratios; at 7B scale a `frozen_copy` adds a whole model (8.29e9 x 2 B = 15.4 GiB in bf16, "
        f"arithmetic, not measured), which `adapter_off` and `precomputed` avoid. DPO path: 'one forward, shared "
        f"prefix' = the default since issue 27 (`vidtempo.models.prefix_share`: one row [prefix | chosen | "
        f"rejected] per pair, the prefix attention on the causal kernel, the LM head at the answer positions only, "
        f"the adapter-off reference reusing the frozen video embeddings); 'two forwards, full logits' = "
        f"`loss_head: logits`, the path before. SFT uses the label-position head too. The machine was shared "
        f"with other jobs: ratios come from one interleaved run.\n\n{table(rows)}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "vidtempo_bench")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4, help="preference pairs per step")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=DEFAULT_CONFIGS)
    parser.add_argument("--objectives", nargs="+", choices=list(OBJECTIVES), default=None,
                        help="default: sft, adapter_off, precomputed and their /2fwd baselines (long cases), "
                             "every objective (the others)")
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip the memory subprocesses")
    parser.add_argument("--write", action="store_true", help="write the table into benchmarks/RESULTS.md")
    parser.add_argument("--mem-child", nargs=2, metavar=("CONFIG", "OBJECTIVE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.mem_child:
        memory_child(*args.mem_child, args.workdir, args.batch_size, args.warmup, args.device)
        return
    device = torch.device(args.device)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, device {device}, "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    rows = run(args, device)
    text = section(rows, args, device)
    print("\n" + text)
    if args.write:
        write_section(SECTION, text, Path(__file__).resolve().parent / "RESULTS.md")
    print("\n".join(result_lines(rows)))


if __name__ == "__main__":
    main()

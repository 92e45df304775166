"""Training throughput of the real recipes at real widths (#27 item 10): tokens/s, samples/s, MFU, peak memory.

Usage::

    python benchmarks/train_throughput.py                  # CPU default: 2 LLM blocks, small inputs, fp32
    python benchmarks/train_throughput.py --device-check   # one GPU: bf16, 8 LLM blocks, recipe-like inputs, < 6 min
    python benchmarks/train_throughput.py --smoke          # tiny inputs, 1 LLM block (the test suite runs it)

Models: the real recipes built by ``benchmarks/real_recipes.py`` (the builders of
``tests/models/test_real_recipes.py``): every width real, reduced depth (``--layers``, default 2 LLM blocks;
1 block per tower), random init, no download, tiny tokenizers. Inputs: real H.264 (+AAC) videos written by
``vidtempo.data.testing.make_test_video``, collated by the recipes' own collators.

Cases (each a baseline and a variant on the same model, stepped interleaved round by round, so a load spike on a
shared machine hits both; the ratio is computed per round and reported as the median with its min-max):

* ``tdc_sft_lora``: ``recipes/tdc_qwen2.yaml``, its LoRA stage (``audio_visual``: LoRA r128 on the LLM, compressor
  and projector trained, audio on), SFT on a length-skewed batch (one long video, the others short, answers of
  different lengths): ``padded`` (baseline) vs ``packed`` (``data.packing.max_tokens`` = the longest sample:
  ``batch.packing``, the masked path on CPU). Their losses at the same weights are compared before the timing.
* ``tempo_dpo``: ``recipes/tempo_qwen2_5_vl_7b.yaml``, its ``dpo`` section (LoRA on the LLM linears, sigmoid,
  beta 0.1, rpo_alpha 1.0, reference ``adapter_off``) on output-side pairs (same video and prompt):
  ``two_forward`` (baseline: ``loss_head: logits``, chosen and rejected as two forwards with full logits, the path
  before issue 27) vs ``shared`` (the default: one row per pair, the prefix computed once, label-position head).

One step = forward + backward + gradient clipping (1.0) + AdamW step + ``zero_grad``; ``--warmup`` steps per
variant are not timed, then ``--repeats`` rounds. On CUDA the device is synchronised before the clock is read.

Figures per variant: tokens/s (LLM tokens, text + video, without padding, both sides of a pair: the counts of
``perf/tokens_per_s``), samples/s (a pair counts once), TFLOPS and MFU from the project's FLOP model
(``vidtempo.training.perf.batch_shapes`` / ``shapes_work``: the model's training FLOPs per sample, so padding is
not counted as work and DPO counts both sides in full, the reference forward not at all) over the device's
bf16 dense peak (``vidtempo.training.perf.PEAK_TFLOPS``, or ``--peak-tflops`` / ``$VIDTEMPO_PEAK_TFLOPS``; on
CPU there is no tabled peak and MFU is printed as nan unless one is given), and peak memory over the variant's
steps (``torch.cuda.max_memory_allocated`` on CUDA; on CPU the process's peak RSS, ``VmHWM`` reset before each
step, so it includes the model). Ends with one ``RESULT case=...`` line per case and variant.

``--device-check`` runs every case on the first CUDA device in bf16 (``bf16-true``: the model in bf16, the
batch through ``KeepFp32HalfPrecision``), plain single-device (no FSDP wrapping), with 8 LLM blocks, the real
vocabulary, the recipes' image sides, Whisper's real 30 s window, TDC's 50 audio tokens per frame and Qwen2.5-VL
frames of 448x448 (32 frames: 4,096 video tokens). ``--write`` puts the table in benchmarks/RESULTS.md under
"## Training throughput".
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # real_recipes, results_md (also when imported)
from real_recipes import ColumnMajorBf16Gemm, Reduction, model_and_plan, recipe_tokenizer, stages_of  # noqa: E402
from results_md import write_section  # noqa: E402

SECTION = "## Training throughput"
DPO_KW = {"beta": 0.1, "loss_type": "sigmoid", "rpo_alpha": 1.0, "reference": "adapter_off"}  # the recipe's
PROMPT = "<video>\nDescribe what happens in this video and when."
CHOSEN = "A red circle appears at 1.0 s, the background turns green at 2.0 s and the square stops at 3.0 s."
REJECTED = "The square stops at 1.0 s, the background turns green at 2.0 s and a red circle appears at 3.0 s."


@dataclass(frozen=True)
class Sizes:
    """Inputs and repetitions of one mode."""

    red: Reduction
    tdc_batch: int  # samples: one long video, the others short
    tdc_long_s: float  # seconds of the long video (sampled at tdc_fps)
    tdc_short_s: float
    tdc_fps: float
    tdc_frame: int  # collator frame side
    pairs: int  # DPO pairs
    dpo_frames: int
    dpo_side: int  # Qwen2.5-VL frame side (min = max pixels = side^2)
    warmup: int
    repeats: int
    text: tuple[str, str, str, str] = (PROMPT, CHOSEN, CHOSEN, REJECTED)  # prompt, SFT answer, DPO chosen, rejected


SHORT = ("<video>\nWhen?", "at 1 s.", "red, green", "green, red")  # the smoke's texts (byte-level tokenizer)
SMOKE = Sizes(Reduction(llm_layers=1), 2, 2.0, 1.0, 1.0, 32, 1, 4, 56, 0, 1, SHORT)
MEDIUM = ("<video>\nWhat happens when?", "A red circle appears at 1 s.", "circle at 1 s, green at 2 s.",
          "green at 1 s, circle at 2 s.")  # the CPU default's texts  # fmt: skip
DEFAULT = Sizes(Reduction(llm_layers=2, qwen_pixels=112 * 112), 4, 8.0, 1.0, 1.0, 32, 1, 8, 112, 1, 3, MEDIUM)
DEVICE = Sizes(Reduction(llm_layers=8, vocab=None, image_size=None, whisper_steps=1500, audio_tokens_per_frame=50,
                         qwen_pixels=448 * 448), 4, 64.0, 8.0, 1.0, 384, 2, 32, 448, 2, 5)  # fmt: skip


# ------------------------------------------------------------------------------------------------- inputs
def make_video(workdir: Path, seconds: float) -> Path:
    """A real H.264 + AAC video of ``seconds`` (64x48, 8 fps, a cut every 2 s, beeps), written once."""
    from vidtempo.data.testing import make_test_video

    path = workdir / f"throughput_{seconds:g}s.mp4"
    if not path.exists():
        tmp = path.with_suffix(".part.mp4")
        cuts = tuple(float(c) for c in range(2, int(seconds), 2))
        make_test_video(tmp, duration=seconds, fps=8, size=(64, 48), cuts=cuts, beeps=((0.5, 880.0),))
        tmp.rename(path)
    return path


def tdc_batch(sizes: Sizes, collator: dict[str, Any], workdir: Path) -> Any:
    """The length-skewed SFT batch: one long video and short ones, answers of 1-4 sentences."""
    from vidtempo.data.collate import VideoCollator
    from vidtempo.data.samples import ConversationSample

    long, short = make_video(workdir, sizes.tdc_long_s), make_video(workdir, sizes.tdc_short_s)
    prompt, answer = sizes.text[:2]
    samples = [ConversationSample(video=str(long if i == 0 else short), id=f"s{i}", messages=[
        {"role": "user", "content": prompt}, {"role": "assistant", "content": " ".join([answer] * (1 + i % 4))}])
        for i in range(sizes.tdc_batch)]  # fmt: skip
    settings = {**collator, "num_frames": None, "fps": sizes.tdc_fps, "max_frames": 224, "frame_size": sizes.tdc_frame}
    keys = ("num_frames", "fps", "max_frames", "frame_size", "audio", "backend")
    return VideoCollator(recipe_tokenizer("tdc_qwen2"), **{k: v for k, v in settings.items() if k in keys})(samples)


def dpo_batch(sizes: Sizes, workdir: Path) -> Any:
    """Output-side pairs (same video and prompt, answers in another order: TEMPO's perturbation)."""
    from vidtempo.data.preference_collate import PreferenceCollator
    from vidtempo.data.samples import PreferenceSample

    video = make_video(workdir, 8.0)
    prompt, _, chosen, rejected = sizes.text
    pairs = [PreferenceSample(video=str(video), prompt=[{"role": "user", "content": prompt}], chosen=chosen,
                              rejected=rejected, id=f"pair{i}") for i in range(sizes.pairs)]  # fmt: skip
    return PreferenceCollator(recipe_tokenizer("tempo_qwen2_5_vl_7b"), num_frames=sizes.dpo_frames,
                              frame_size=sizes.dpo_side)(pairs)  # fmt: skip


# ------------------------------------------------------------------------------------------------- memory
def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


class PeakMemory:
    """Peak memory of one step: ``max_memory_allocated`` on CUDA, the process's ``VmHWM`` on CPU (reset to the
    current RSS before the step where ``/proc/self/clear_refs`` allows it)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.rss = Path("/proc/self/status").exists()

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.rss:
            try:
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass

    def peak_gb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 1e9
        return _status_kib("VmHWM") * 1024 / 1e9 if self.rss else float("nan")

    @property
    def kind(self) -> str:
        return "torch.cuda.max_memory_allocated" if self.device.type == "cuda" else "peak RSS (VmHWM, whole process)"


# ------------------------------------------------------------------------------------------------- steps
@dataclass
class Variant:
    """One way to step a case: the step closure and the batch's work (FLOPs, tokens, samples)."""

    name: str
    step: Callable[[], float]
    flops: float
    tokens: int
    samples: int


def _work(model: Any, batch: Any) -> tuple[float, int]:
    """(training FLOPs, LLM tokens) of a batch by the project's FLOP model (nan FLOPs if it cannot say)."""
    from vidtempo.training.perf import batch_shapes, shapes_work

    shapes = batch_shapes(model, batch)
    if shapes is None:
        return float("nan"), 0
    return shapes_work(model, shapes, {})


def make_step(module: Any, model: Any, batch: Any, device: torch.device, bf16: bool) -> Callable[[], float]:
    """One optimiser step of ``module`` on ``batch``; returns the loss."""
    from vidtempo.training.precision import KeepFp32HalfPrecision

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    precision = KeepFp32HalfPrecision("bf16-true") if bf16 else None
    if precision is not None:
        batch = precision.convert_input(batch)
    cpu_bf16 = bf16 and device.type == "cpu"

    def step() -> float:
        import contextlib

        with contextlib.ExitStack() as stack:
            if precision is not None:
                stack.enter_context(precision.train_step_context())
            if cpu_bf16:
                stack.enter_context(ColumnMajorBf16Gemm())
            out = module(batch)
            loss = out.loss if hasattr(out.loss, "dim") else out.loss.loss
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        value = float(loss.detach())
        if value != value or abs(value) == float("inf"):
            raise RuntimeError(f"non-finite loss {value}")
        return value

    return step


def build_tdc(sizes: Sizes, device: torch.device, dtype: torch.dtype, workdir: Path) -> tuple[list[Variant], dict]:
    from vidtempo.training.sft import SFTModule

    model, stage, collator = model_and_plan("tdc_qwen2", sizes.red, device=device, dtype=dtype)
    model.train()
    batch = tdc_batch(sizes, collator, workdir).to(device)
    module = SFTModule(model, optim=stage["optim"]).train()
    with torch.no_grad():  # same weights, no LoRA dropout: the padded and packed losses must agree
        model.eval()
        padded_out = module(batch)
        lengths = padded_out.attention_mask.sum(1)
        budget = int(lengths.max())  # the row budget: the longest sample (what data.packing.max_tokens must allow)
        packed = copy.copy(batch)
        packed.packing = budget
        packed_out = module(packed)
        loss_pad, loss_pack = float(padded_out.loss), float(packed_out.loss)
        rows = int(packed_out.info.get("packed_rows", 0))
        model.train()
    flops, tokens = _work(model, batch)
    bf16 = dtype == torch.bfloat16
    info = {"tokens": tokens, "padded_slots": int(lengths.numel() * budget), "budget": budget, "rows": rows,
            "loss_diff": abs(loss_pad - loss_pack), "samples": len(batch),
            "frames": [int(x) for x in batch.frame_mask.sum(1)] if batch.frame_mask is not None else []}  # fmt: skip
    return [Variant("padded", make_step(module, model, batch, device, bf16), flops, tokens, len(batch)),
            Variant("packed", make_step(module, model, packed, device, bf16), flops, tokens, len(batch))], info


def build_dpo(sizes: Sizes, device: torch.device, dtype: torch.dtype, workdir: Path) -> tuple[list[Variant], dict]:
    from vidtempo.training.dpo import DPOModule

    plain, stages = stages_of("tempo_qwen2_5_vl_7b", sizes.red)
    stage = {**stages[-1], "trainable": plain["dpo"]["trainable"], "optim": plain["dpo"]["optim"], "lora": None}
    model, _, _ = model_and_plan("tempo_qwen2_5_vl_7b", sizes.red, stage=stage, device=device, dtype=dtype)
    model.train()
    batch = dpo_batch(sizes, workdir).to(device)
    flops, tokens = _work(model, batch)
    bf16 = dtype == torch.bfloat16
    variants = []
    for name, kw in (("two_forward", {"loss_head": "logits"}), ("shared", {"prefix_sharing": "auto"})):
        module = DPOModule(model, stage["optim"], **DPO_KW, **kw).train()
        variants.append(Variant(name, make_step(module, model, batch, device, bf16), flops, tokens, len(batch)))
    c = batch.chosen
    info = {"samples": len(batch), "frames": list(c.frames.shape[1:]), "tokens": tokens,
            "text_ids": [int(c.input_ids.shape[1]), int(batch.rejected.input_ids.shape[1])],
            "answer_tokens": [int((c.labels != -100).sum(1).max()), int((batch.rejected.labels != -100).sum(1).max())]}  # fmt: skip
    return variants, info


CASES: dict[str, Callable[..., tuple[list[Variant], dict]]] = {"tdc_sft_lora": build_tdc, "tempo_dpo": build_dpo}


def run_case(case: str, sizes: Sizes, device: torch.device, dtype: torch.dtype, peak: float | None,
             workdir: Path) -> list[dict[str, Any]]:  # fmt: skip
    """Build, warm up, time interleaved; one row per variant (the first is the baseline)."""
    start = time.perf_counter()
    torch.manual_seed(0)
    variants, info = CASES[case](sizes, device, dtype, workdir)
    built = time.perf_counter() - start
    print(f"{case}: built in {built:.1f} s; {info}", flush=True)
    mem = PeakMemory(device)
    for v in variants:
        for _ in range(sizes.warmup):
            v.step()
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    peaks: dict[str, float] = {v.name: 0.0 for v in variants}
    for _ in range(sizes.repeats):
        for v in variants:
            mem.reset()
            t0 = time.perf_counter()
            v.step()
            times[v.name].append(time.perf_counter() - t0)
            peaks[v.name] = max(peaks[v.name], mem.peak_gb())
    base = variants[0].name
    rows = []
    for v in variants:
        sec = statistics.median(times[v.name])
        per_round = [b / t for b, t in zip(times[base], times[v.name])]  # speed vs baseline, same round
        tflops = v.flops / sec / 1e12
        rows.append({"case": case, "variant": v.name, "baseline": base, "ms": 1000 * sec,
                     "ms_min": 1000 * min(times[v.name]), "ms_max": 1000 * max(times[v.name]),
                     "tokens_per_s": v.tokens / sec, "samples_per_s": v.samples / sec, "tflops": tflops,
                     "mfu": tflops / peak if peak else float("nan"), "peak_mem_gb": peaks[v.name],
                     "ratio": statistics.median(per_round), "ratio_min": min(per_round),
                     "ratio_max": max(per_round), "info": info, "build_s": built})  # fmt: skip
        r = rows[-1]
        print(f"  {v.name:<12} {r['ms']:9.1f} ms ({r['ms_min']:.1f}-{r['ms_max']:.1f})  {r['tokens_per_s']:9.1f} tok/s  "
              f"{r['samples_per_s']:7.3f} samples/s  {tflops:8.3f} TFLOPS  MFU {r['mfu']:.4f}  peak {r['peak_mem_gb']:.2f} GB  "
              f"x{r['ratio']:.2f} vs {base} ({r['ratio_min']:.2f}-{r['ratio_max']:.2f})", flush=True)  # fmt: skip
    print(f"{case}: {time.perf_counter() - start:.1f} s in all", flush=True)
    return rows


# ------------------------------------------------------------------------------------------------- report
def section(rows: list[dict[str, Any]], args: argparse.Namespace, device: torch.device, dtype: torch.dtype,
            sizes: Sizes, peak: float | None) -> str:  # fmt: skip
    if device.type == "cuda":
        machine = torch.cuda.get_device_name(device)
    else:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        machine = (f"{os.cpu_count()}-core {platform.machine()} CPU shared with other jobs (load average {load:.1f} "
                   f"at the end), {torch.get_num_threads()} torch threads, no GPU")  # fmt: skip
    flags = " ".join(sys.argv[1:])
    lines = [f"{SECTION}\n", f"`python benchmarks/train_throughput.py{' ' + flags if flags else ''}`; {machine}; torch "
             f"{torch.__version__}; {str(dtype).removeprefix('torch.')}; {sizes.red.llm_layers} LLM blocks, "
             f"{sizes.warmup} warm-up step(s) per variant, {sizes.repeats} interleaved rounds. Peak: "
             f"{peak if peak else 'none (MFU not meaningful on CPU)'}. Memory: {PeakMemory(device).kind}.\n",
             "| case | variant | step ms, median (min-max) | tokens/s | samples/s | TFLOPS | MFU | peak mem GB | "
             "speed x baseline, per round: median (min-max) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        mfu = f"{r['mfu']:.4f}" if r["mfu"] == r["mfu"] else "-"
        lines.append(f"| {r['case']} | {r['variant']} | {r['ms']:.0f} ({r['ms_min']:.0f}-{r['ms_max']:.0f}) | "
                     f"{r['tokens_per_s']:.1f} | {r['samples_per_s']:.3f} | {r['tflops']:.4f} | {mfu} | "
                     f"{r['peak_mem_gb']:.2f} | {r['ratio']:.2f} ({r['ratio_min']:.2f}-{r['ratio_max']:.2f}) |")  # fmt: skip
    infos = {r["case"]: r["info"] for r in rows}
    lines.append("")
    for case, info in infos.items():
        lines.append(f"- `{case}`: {info}")
    return "\n".join(lines) + "\n"


def result_lines(rows: list[dict[str, Any]]) -> list[str]:
    return [f"RESULT case={r['case']}_{r['variant']} tokens_per_s={r['tokens_per_s']:.3f} "
            f"samples_per_s={r['samples_per_s']:.4f} mfu={r['mfu']:.5f} peak_mem_gb={r['peak_mem_gb']:.3f} "
            f"ratio_vs_baseline={r['ratio']:.3f} ratio_min={r['ratio_min']:.3f} ratio_max={r['ratio_max']:.3f} "
            f"ms={r['ms']:.1f} tflops={r['tflops']:.5f} baseline={r['baseline']}" for r in rows]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true", help="tiny inputs, 1 LLM block (the test suite runs it)")
    mode.add_argument("--device-check", action="store_true", help="every case on one CUDA GPU in bf16, < 6 min")
    parser.add_argument("--layers", type=int, default=None, help="LLM blocks (default: 2; 1 with --smoke, 8 on GPU)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                        help="default: bfloat16 on CUDA, float32 on CPU (AVX2 bf16 GEMMs are ~10x slower there)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (overrides the table)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads on CPU")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "vidtempo_throughput")
    parser.add_argument("--write", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    from vidtempo.training.perf import resolve_peak_tflops

    sizes = SMOKE if args.smoke else DEVICE if args.device_check else DEFAULT
    if args.layers is not None:
        sizes = replace(sizes, red=replace(sizes.red, llm_layers=args.layers))
    sizes = replace(sizes, warmup=sizes.warmup if args.warmup is None else args.warmup,
                    repeats=sizes.repeats if args.repeats is None else args.repeats)  # fmt: skip
    if args.device_check and not torch.cuda.is_available():
        raise SystemExit("--device-check needs a CUDA device (torch.cuda.is_available() is False)")
    device = torch.device("cuda" if args.device_check else "cpu")
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    if args.threads:
        torch.set_num_threads(args.threads)
    peak, source = resolve_peak_tflops(args.peak_tflops, device, "bf16-true" if dtype == torch.bfloat16 else "32-true")
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.machine()}), "
          f"{dtype}, peak {peak} TFLOPS ({source}), sizes {sizes}", flush=True)  # fmt: skip
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for case in args.cases:
        rows += run_case(case, sizes, device, dtype, peak, args.workdir)
    text = section(rows, args, device, dtype, sizes, peak)
    print("\n" + text)
    if args.write:
        write_section(SECTION, text, Path(__file__).resolve().parent / "RESULTS.md")
    for line in result_lines(rows):
        print(line)


if __name__ == "__main__":
    main()

"""Audio on the data side: SFT step time with the waveform vs the collator's log-mel (``audio_mel``).

Usage: ``python benchmarks/audio_step.py [--repeats 7] [--warmup 2] [--batch-size 16] [--seconds 20] [--write]``
(``make bench`` runs it with the defaults).

The model is the one in ``recipes/tiny/synth_av.yaml``: a frame CNN, a log-mel CNN (``mel_cnn``, 40 bins)
and a 4-layer Qwen2. There are two batches of the same real H.264 + AAC videos (``make_test_video``, with
beeps). The baseline batch carries the 16 kHz waveform (B, S), and the model computes the log-mel in every
step. The other carries the log-mel (B, 40, F) from ``VideoCollator(audio_mel=40)``, computed once per clip
on the data side.

- Time: one step is forward + backward + grad-norm clip + AdamW step of ``SFTModule``. The two batches are
  stepped alternately, each warmed up first, and the median is reported. Both models start from the same
  seed.
- Worker cost: the time the collator spends turning one clip's waveform into log-mel. The decoded-clip
  cache (``cache_decoded``) pays it once per clip, not once per step.

``--write`` puts the table in benchmarks/RESULTS.md under "## Audio: log-mel on the data side".
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from results_md import write_section  # benchmarks/ is on sys.path when run as a script

from vidtempo.config.instantiate import instantiate
from vidtempo.config.load import load_recipe
from vidtempo.data.collate import VideoCollator
from vidtempo.data.log_mel import log_mel_spectrogram
from vidtempo.data.samples import ConversationSample
from vidtempo.data.testing import make_test_video
from vidtempo.models.build import build_video_llm
from vidtempo.training.optim import OptimSettings, build_optimizer
from vidtempo.training.sft import SFTModule

SECTION = "## Audio: log-mel on the data side"
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny" / "synth_av.yaml"


def sections() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    cfg = OmegaConf.to_container(load_recipe(RECIPE), resolve=False)
    collator = {k: v for k, v in cfg["data"]["collator"].items()
                if k not in ("cache_decoded", "audio_mel", "targets")}  # fmt: skip
    return cfg["tokenizer"], cfg["model"], collator


def batches(workdir: Path, n: int, seconds: float, tok_node: dict[str, Any], model_node: dict[str, Any],
            collator: dict[str, Any]) -> tuple[Any, Any, int]:
    """(waveform batch, log-mel batch, n_mels) of the same ``n`` real videos."""
    tokenizer = instantiate(tok_node, key="tokenizer", recipe=str(RECIPE))
    turns = [{"role": "user", "content": "<video>\nWhen is the beep?"}, {"role": "assistant", "content": "3 - 4 seconds"}]
    samples = []
    for i in range(n):
        path = workdir / f"av{i}_{seconds:g}.mp4"
        if not path.is_file():
            make_test_video(path, duration=seconds, fps=8, size=(64, 48), beeps=((1.0 + i % 5, 880.0), (seconds / 2, 440.0)))
        samples.append(ConversationSample(str(path), [dict(t) for t in turns], id=f"av{i}"))
    n_mels = int(model_node["audio_encoder"]["n_mels"])
    wave = VideoCollator(tokenizer, **collator)(samples)
    mel = VideoCollator(tokenizer, **collator, audio_mel=n_mels)(samples)
    return wave, mel, n_mels


def make_step(batch: Any, node: dict[str, Any]) -> Any:
    torch.manual_seed(0)
    model = build_video_llm(node).train()
    settings = OptimSettings(lr=1e-3, scheduler="constant")
    module = SFTModule(model, settings)
    optimizer, _ = build_optimizer(model, settings, total_steps=1000)
    params = [p for p in model.parameters() if p.requires_grad]

    def step() -> float:
        loss = module(batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def worker_cost(batch: Any, n_mels: int, repeats: int) -> float:
    """Median seconds to turn one clip's waveform into log-mel (what the collator does once per clip)."""
    one = batch.audio[:1, : int(batch.audio_lengths[0])]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        log_mel_spectrogram(one, n_mels)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(args: argparse.Namespace) -> dict[str, Any]:
    args.workdir.mkdir(parents=True, exist_ok=True)
    tok_node, model_node, collator = sections()
    wave, mel, n_mels = batches(args.workdir, args.batch_size, args.seconds, tok_node, model_node, collator)
    steps = {"waveform": make_step(wave, model_node), "audio_mel": make_step(mel, model_node)}
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(args.repeats):  # alternated: load spikes on a shared machine hit both alike
        for name, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    return {"median": {k: statistics.median(v) for k, v in times.items()},
            "fastest": {k: min(v) for k, v in times.items()},
            "audio": {"waveform": tuple(wave.audio.shape), "audio_mel": tuple(mel.audio.shape)},
            "worker": worker_cost(wave, n_mels, args.repeats)}  # fmt: skip


def section(r: dict[str, Any], args: argparse.Namespace) -> str:
    base = r["median"]["waveform"]
    rows = "\n".join(
        f"| `{k}` | {r['audio'][k]} | {1000 * r['median'][k]:.0f} ({1000 * r['fastest'][k]:.0f}) | {r['median'][k] / base:.2f} |"
        for k in ("waveform", "audio_mel")
    )  # fmt: skip
    return (
        f"{SECTION}\n\n"
        f"`python benchmarks/audio_step.py --repeats {args.repeats} --warmup {args.warmup} --batch-size "
        f"{args.batch_size} --seconds {args.seconds:g}`; {os.cpu_count()}-core {platform.machine()} CPU, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, float32, load average at the end "
        f"{os.getloadavg()[0]:.1f}. The model of `recipes/tiny/synth_av.yaml`; one SFT step (forward + backward "
        f"+ clip + AdamW) on {args.batch_size} real {args.seconds:g}-s videos, median of {args.repeats} "
        f"alternated steps (fastest in brackets). With `audio_mel` the collator turns each clip into log-mel "
        f"once; that costs {1000 * r['worker']:.1f} ms per clip in the DataLoader worker and is cached with "
        f"the frames.\n\n"
        f"| batch.audio | shape | step ms, median (fastest) | x waveform |\n|---|---|---:|---:|\n{rows}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "vidtempo_bench")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0, help="video length (TempoSynth demo: up to 20 s)")
    parser.add_argument("--write", action="store_true", help="write the table into benchmarks/RESULTS.md")
    args = parser.parse_args()
    text = section(run(args), args)
    print("\n" + text)
    if args.write:
        write_section(SECTION, text, Path(__file__).resolve().parent / "RESULTS.md")


if __name__ == "__main__":
    main()

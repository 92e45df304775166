"""Throughput and MFU logging: ``perf/samples_per_s``, ``perf/tokens_per_s``, ``perf/tflops`` and ``perf/mfu``
on every logged training step, from the measured wall time and the FLOP model (``vidtempo.models.flops``).

MFU = the model's training FLOPs of the steps in the window (forward + backward under the ``trainable`` plan,
per sample from its frames and text tokens; a prefix-shared DPO pair counts its video path and prefix once,
``pair_flops``) / the window's wall time / the device's peak. Figures are per
device (this rank's batches); the wall time includes data loading, so they are what the run achieves. The
peak is, in this order: the callback's ``peak_tflops`` argument, the ``VIDTEMPO_PEAK_TFLOPS`` environment
variable, or the bf16 dense peak of the CUDA device from :data:`PEAK_TFLOPS` (only when the trainer's
precision is bf16 or 16). On CPU there is no peak: throughput is logged, MFU only when a peak is given.

Example:
    >>> device_peak_tflops("NVIDIA H100 80GB HBM3"), device_peak_tflops("NVIDIA A100-PCIE-40GB")
    (989.5, 312.0)
    >>> device_peak_tflops("NVIDIA H100 PCIe"), device_peak_tflops("Some CPU") is None
    (756.5, True)
"""

from __future__ import annotations

import os
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from vidtempo.models.flops import model_flops, pair_flops

__all__ = ["PEAK_ENV", "PEAK_TFLOPS", "ThroughputMonitor", "batch_shapes", "device_peak_tflops", "resolve_peak_tflops",
           "shapes_work", "throughput_metrics"]  # fmt: skip

PEAK_ENV = "VIDTEMPO_PEAK_TFLOPS"

# bf16 dense tensor-core peaks in TFLOPS, matched in order against torch.cuda.get_device_name(). The vendor
# datasheets quote bf16 "with sparsity"; dense is half of it.
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200 NVL", 835.5),  # NVIDIA H200 datasheet: H200 NVL bf16 1,671 TFLOPS with sparsity
    ("H200", 989.5),  # NVIDIA H200 datasheet: H200 SXM bf16 1,979 TFLOPS with sparsity
    ("H100 NVL", 835.5),  # NVIDIA H100 datasheet: H100 NVL bf16 1,671 TFLOPS with sparsity
    ("H100 PCIe", 756.5),  # NVIDIA H100 datasheet: H100 PCIe bf16 1,513 TFLOPS with sparsity
    ("H100", 989.5),  # NVIDIA H100 datasheet: H100 SXM bf16 1,979 TFLOPS with sparsity ("H100 80GB HBM3")
    (
        "A100",
        312.0,
    ),  # NVIDIA A100 datasheet: bf16 312 TFLOPS dense (624 sparse), 40 GB and 80 GB, SXM and PCIe
)


def device_peak_tflops(name: str | None) -> float | None:
    """bf16 dense peak of a CUDA device by its name (``torch.cuda.get_device_name()``); None if unknown."""
    if not name:
        return None
    upper = name.upper()
    return next((peak for key, peak in PEAK_TFLOPS if key.upper() in upper), None)


def resolve_peak_tflops(
    override: float | None, device: torch.device, precision: str
) -> tuple[float | None, str]:
    """(peak TFLOPS or None, where it came from): ``override``, then ``$VIDTEMPO_PEAK_TFLOPS``, then the table
    (a CUDA device in bf16/16 precision only).

    Example:
        >>> resolve_peak_tflops(400.0, torch.device("cpu"), "32-true")
        (400.0, 'argument')
        >>> resolve_peak_tflops(None, torch.device("cpu"), "bf16-mixed")[0] is None or bool(os.environ.get(PEAK_ENV))
        True
    """
    if override:
        return float(override), "argument"
    env = os.environ.get(PEAK_ENV)
    if env:
        return float(env), PEAK_ENV
    if device.type != "cuda" or "16" not in str(precision):
        return None, "none"
    name = torch.cuda.get_device_name(device)
    peak = device_peak_tflops(name)
    return peak, (name if peak is not None else "none")


# One batch side as the FLOP model needs it: (frame size or None, cached features, counts still on the batch's
# device, read once per logged step): (B, 3) frames, text tokens, audio seconds (-1 = none) per sample, or for
# prefix-shared preference pairs (B, 5) frames, prompt tokens, chosen and rejected answer tokens, audio seconds.
Shapes = tuple[tuple[int, int] | None, bool, torch.Tensor]


def batch_shapes(model: Any, batch: Any, prefix_shared: bool = False) -> list[Shapes] | None:
    """The per-sample shapes of a training batch, without a host sync: a ``VideoTextBatch``, or a preference
    batch: its ``chosen`` and ``rejected`` sides, each a forward + backward of the policy, or with
    ``prefix_shared`` (the step ran the pairs as shared-prefix rows) one (B, 5) entry of pairs whose video and
    prompt count once; None for batches the FLOP model does not describe (the ``align`` objective's captions)."""
    from vidtempo.models.interfaces import VIDEO_TOKEN_INDEX

    sides = [batch.chosen, batch.rejected] if hasattr(batch, "chosen") else [batch]
    if not all(hasattr(side, "input_ids") and hasattr(side, "frame_mask") for side in sides):
        return None
    out = []
    for side in sides:
        ids, mask = side.input_ids, side.attention_mask.bool()  # (B, L)
        text = (mask & (ids != VIDEO_TOKEN_INDEX)).sum(1)  # (B,)
        frames = side.frame_mask.sum(1) if side.frame_mask is not None else torch.zeros_like(text)
        counts = torch.stack(
            [frames.to(text.device).float(), text.float(), _audio_seconds(model, side, text)], 1
        )
        size = tuple(side.frames.shape[-2:]) if side.frames is not None else None
        out.append((size, side.features is not None, counts))  # counts (B, 3)
    if prefix_shared and len(out) == 2:
        size, cached, chosen = out[0]
        out = [(size, cached, _pair_counts(batch, chosen))]
    return out


def _pair_counts(batch: Any, chosen: torch.Tensor) -> torch.Tensor:
    """(B, 5) frames, prompt tokens (without the placeholder), chosen and rejected answer tokens and audio
    seconds of prefix-shared pairs, from the chosen side's (B, 3) counts."""
    from vidtempo.models.interfaces import VIDEO_TOKEN_INDEX
    from vidtempo.models.prefix_share import text_prefix_lengths

    c, r = batch.chosen.model_inputs(), batch.rejected.model_inputs()
    prefix = text_prefix_lengths(c, r)  # (B,)
    ids, mask = c["input_ids"], c["attention_mask"].bool()
    col = torch.arange(ids.shape[1], device=ids.device)
    prompt = (mask & (ids != VIDEO_TOKEN_INDEX) & (col < prefix[:, None])).sum(1)  # (B,)
    answers = [side["attention_mask"].to(ids.device).sum(1) - prefix for side in (c, r)]
    return torch.stack([chosen[:, 0], prompt.float(), answers[0].float(), answers[1].float(), chosen[:, 2]], 1)


def shapes_work(
    model: Any, pending: list[Shapes], cache: dict[tuple, tuple[float, int]]
) -> tuple[float, int]:
    """(training FLOPs, LLM tokens) of the batch sides in ``pending`` (one host read for all of them)."""
    if not pending:
        return 0.0, 0
    width = max(counts.shape[1] for _, _, counts in pending)
    rows = torch.cat([_pad_counts(counts, width) for _, _, counts in pending]).tolist()  # (sum B, 3 or 5)
    flops, tokens, i = 0.0, 0, 0
    for size, cached, counts in pending:
        k = counts.shape[1]
        for row in rows[i : i + len(counts)]:
            frames, text, audio = int(row[0]), tuple(int(t) for t in row[1 : k - 1]), row[k - 1]
            key = (frames, text, size, None if audio < 0 else round(audio, 2), cached)
            if key not in cache:
                kwargs = {"frame_size": size, "audio_seconds": key[3], "cached_features": cached}
                report = (model_flops(model, frames, text[0], **kwargs) if len(text) == 1
                          else pair_flops(model, frames, *text, **kwargs))  # fmt: skip
                cache[key] = (report.train, report.llm_tokens)
            flops, tokens = flops + cache[key][0], tokens + cache[key][1]
        i += len(counts)
    return flops, tokens


def _pad_counts(counts: torch.Tensor, width: int) -> torch.Tensor:
    """(B, k) counts right-padded with zeros to ``width`` columns (so sides of both kinds go in one read)."""
    return torch.nn.functional.pad(counts, (0, width - counts.shape[1]))


def batch_size(batch: Any) -> int:
    """Samples in a batch: ``len(batch)``, else the rows of its first tensor field (0 if none).

    Example:
        >>> batch_size([1, 2, 3]), batch_size(object())
        (3, 0)
    """
    if hasattr(batch, "__len__"):
        return len(batch)
    tensors = [v for v in getattr(batch, "__dict__", {}).values() if isinstance(v, torch.Tensor) and v.dim()]
    return int(tensors[0].shape[0]) if tensors else 0


def _audio_seconds(model: Any, batch: Any, like: torch.Tensor) -> torch.Tensor:
    """(B,) seconds of audio per sample, -1 without audio (or without an audio encoder)."""
    if batch.audio is None or getattr(model, "audio_encoder", None) is None:
        return torch.full_like(like, -1, dtype=torch.float32)
    if batch.audio.dim() == 3:  # log-mel (B, n_mels, F) at a 10 ms hop
        return torch.full_like(like, batch.audio.shape[-1] * 0.01, dtype=torch.float32)
    rate = float(getattr(model.audio_encoder, "sample_rate", 16000))
    lengths = batch.audio_lengths
    if lengths is None:
        return torch.full_like(like, batch.audio.shape[1] / rate, dtype=torch.float32)
    if batch.clip_index is not None:
        lengths = lengths[batch.clip_index]  # (U,) -> (B,)
    return lengths.to(like.device).float() / rate


class ThroughputMonitor(L.Callback):
    """Logs ``perf/samples_per_s``, ``perf/tokens_per_s`` (LLM tokens: text + video), ``perf/tflops`` and,
    with a known peak, ``perf/mfu`` on every logged training step, averaged over the batches since the last
    logged step. See the module docstring for the peak.

    Args:
        peak_tflops: the device's peak in TFLOPS (overrides ``$VIDTEMPO_PEAK_TFLOPS`` and the device table).

    Example:
        >>> monitor = ThroughputMonitor(peak_tflops=989.5)
        >>> monitor.peak_tflops
        989.5
    """

    def __init__(self, peak_tflops: float | None = None) -> None:
        self.peak_tflops = peak_tflops
        self._peak: float | None = None
        self._cache: dict[tuple, tuple[float, int]] = {}
        self._failed = False
        self._reset(None)

    def _reset(self, start: float | None) -> None:
        self._start, self._samples, self._pending = start, 0, []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._peak, _ = resolve_peak_tflops(self.peak_tflops, pl_module.device, str(trainer.precision))
        self._reset(None)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._start is None:
            self._start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._start is None:
            return
        size = batch_size(batch)
        self._samples += size
        model = getattr(pl_module, "model", None)
        shared = bool(getattr(pl_module, "last_prefix_shared", False))  # set by DPOModule's forward
        shapes = batch_shapes(model, batch, shared) if model is not None and not self._failed else None
        self._failed = self._failed or shapes is None
        self._pending += shapes or []
        if not getattr(trainer._logger_connector, "should_update_logs", True):
            return
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        now = time.perf_counter()
        flops, tokens = self._work(model)
        metrics = throughput_metrics(flops, self._samples, tokens, now - self._start, self._peak)
        if self._failed:  # no FLOP model for this model or objective: samples/s only
            metrics = {"perf/samples_per_s": metrics["perf/samples_per_s"]}
        pl_module.log_dict(metrics, on_step=True, on_epoch=False, batch_size=max(size, 1), sync_dist=False)
        self._reset(now)

    def _work(self, model: Any) -> tuple[float, int]:
        """FLOPs and tokens of the pending batches; on a model the FLOP model cannot describe, one warning."""
        if self._failed:
            return 0.0, 0
        try:
            return shapes_work(model, self._pending, self._cache)
        except (AttributeError, NotImplementedError, TypeError, ValueError) as err:
            rank_zero_warn(f"ThroughputMonitor: no FLOP model for {type(model).__name__} ({err}); "
                           "logging perf/samples_per_s only")  # fmt: skip
            self._failed = True
            return 0.0, 0


def throughput_metrics(
    flops: float, samples: int, tokens: int, seconds: float, peak_tflops: float | None
) -> dict[str, float]:
    """The ``perf/*`` values of a window of ``seconds`` holding ``flops`` training FLOPs.

    Example:
        >>> throughput_metrics(2e12, 8, 4096, 2.0, 100.0)
        {'perf/samples_per_s': 4.0, 'perf/tokens_per_s': 2048.0, 'perf/tflops': 1.0, 'perf/mfu': 0.01}
    """
    seconds = max(seconds, 1e-9)
    out = {"perf/samples_per_s": samples / seconds, "perf/tokens_per_s": tokens / seconds,
           "perf/tflops": flops / seconds / 1e12}  # fmt: skip
    if peak_tflops:
        out["perf/mfu"] = out["perf/tflops"] / peak_tflops
    return out

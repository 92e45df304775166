"""Throughput and MFU logging: ``perf/samples_per_s``, ``perf/tokens_per_s``, ``perf/tflops`` and ``perf/mfu``
on every logged training step, from the measured wall time and the FLOP model (``vidtempo.models.flops``).

MFU = the model's training FLOPs of the steps in the window (forward + backward under the ``trainable`` plan,
per sample from its frames and text tokens) / the window's wall time / the device's peak. Figures are per
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

from vidtempo.models.flops import model_flops

__all__ = ["PEAK_ENV", "PEAK_TFLOPS", "ThroughputMonitor", "device_peak_tflops", "resolve_peak_tflops"]

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


def batch_work(
    model: Any, batch: Any, cache: dict[tuple, tuple[float, int]] | None = None
) -> tuple[float, int] | None:
    """(training FLOPs, LLM tokens) of one training batch: a ``VideoTextBatch`` or a preference batch (its
    ``chosen`` and ``rejected`` sides, each a forward + backward of the policy); None for other batches (the
    ``align`` objective's captions), which the FLOP model does not describe."""
    sides = [batch.chosen, batch.rejected] if hasattr(batch, "chosen") else [batch]
    if not all(hasattr(side, "input_ids") and hasattr(side, "frame_mask") for side in sides):
        return None
    cache = {} if cache is None else cache
    flops, tokens = 0.0, 0
    for side in sides:
        for key in _sample_keys(model, side):
            if key not in cache:
                frames, text, size, audio, cached = key
                report = model_flops(
                    model, frames, text, frame_size=size, audio_seconds=audio, cached_features=cached
                )
                cache[key] = (report.train, report.llm_tokens)
            flops += cache[key][0]
            tokens += cache[key][1]
    return flops, tokens


def _sample_keys(model: Any, batch: Any) -> list[tuple]:
    """One (frames, text tokens, frame size, audio seconds, cached features) key per sample of ``batch``."""
    from vidtempo.models.interfaces import VIDEO_TOKEN_INDEX

    ids, mask = batch.input_ids, batch.attention_mask.bool()
    text = (mask & (ids != VIDEO_TOKEN_INDEX)).sum(1).tolist()  # (B,)
    b = len(text)
    frames = batch.frame_mask.sum(1).tolist() if batch.frame_mask is not None else [0] * b
    size = tuple(batch.frames.shape[-2:]) if batch.frames is not None else None
    audio = _audio_seconds(model, batch, b)
    cached = batch.features is not None
    return [(int(frames[i]), int(text[i]), size, audio[i], cached) for i in range(b)]


def _audio_seconds(model: Any, batch: Any, b: int) -> list[float | None]:
    if batch.audio is None or getattr(model, "audio_encoder", None) is None:
        return [None] * b
    rate = float(getattr(model.audio_encoder, "sample_rate", 16000))
    if batch.audio.dim() == 3:  # log-mel (B, n_mels, F) at a 10 ms hop
        return [batch.audio.shape[-1] * 0.01] * b
    lengths = (
        batch.audio_lengths if batch.audio_lengths is not None else torch.full((b,), batch.audio.shape[1])
    )
    return [float(n) / rate for n in lengths.tolist()]


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
        self._start, self._flops, self._samples, self._tokens = start, 0.0, 0, 0

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
        self._samples += len(batch)
        work = self._work(getattr(pl_module, "model", None), batch)
        if work is not None:
            self._flops, self._tokens = self._flops + work[0], self._tokens + work[1]
        if not getattr(trainer._logger_connector, "should_update_logs", True):
            return
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        now = time.perf_counter()
        metrics = throughput_metrics(self._flops, self._samples, self._tokens, now - self._start, self._peak)
        if self._failed:  # no FLOP model for this model: samples/s only
            metrics = {"perf/samples_per_s": metrics["perf/samples_per_s"]}
        pl_module.log_dict(metrics, on_step=True, on_epoch=False, batch_size=len(batch), sync_dist=False)
        self._reset(now)

    def _work(self, model: Any, batch: Any) -> tuple[float, int] | None:
        """The batch's (FLOPs, tokens); on a model the FLOP model cannot describe, one warning, then None."""
        if self._failed or model is None:
            self._failed = True
            return None
        try:
            work = batch_work(model, batch, self._cache)
        except (AttributeError, NotImplementedError, TypeError, ValueError) as err:
            rank_zero_warn(f"ThroughputMonitor: no FLOP model for {type(model).__name__} ({err}); "
                           "logging perf/samples_per_s only")  # fmt: skip
            work = None
        self._failed = work is None
        return work


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

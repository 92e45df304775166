"""Data transport (#27 item 3): frames leave the collators as uint8 and are normalised on the device; fields that
must stay fp32 (timestamps, audio, reference log-probs) are never cast by a ``bf16-true`` precision plugin."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch

from vidtempo.config.load import load_recipe
from vidtempo.data.collate import VideoCollator
from vidtempo.data.preference_collate import PreferenceCollator
from vidtempo.data.samples import ConversationSample, PreferenceSample
from vidtempo.models.encoders.presets import tiny_vision_encoder
from vidtempo.training.precision import KeepFp32HalfPrecision
from vidtempo.training.run import train
from vidtempo.training.sft import SFTModule

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "tiny" / "sft_pool.yaml"


class DtypeProbeSFT(SFTModule):
    """SFT that records what each training step receives (named in the recipe by dotted path)."""

    seen: ClassVar[list[dict[str, Any]]] = []

    def compute_loss(self, batch: Any, stage: str) -> tuple[torch.Tensor, dict[str, Any]]:
        if stage == "train":
            DtypeProbeSFT.seen.append({
                "frames": batch.frames.dtype, "timestamps": batch.timestamps.dtype, "audio": batch.audio.dtype,
                "params": {p.dtype for p in self.model.parameters()}, "precision": self.trainer.precision,
            })  # fmt: skip
        loss, metrics = super().compute_loss(batch, stage)
        assert torch.isfinite(loss)
        return loss, metrics


def _sample(video_dir: Path, i: int = 0) -> ConversationSample:
    return ConversationSample(video=str(video_dir / f"v{i}.mp4"), id=f"v{i}", messages=[
        {"role": "user", "content": "<video>\nWhen is the beep?"}, {"role": "assistant", "content": "0.5 s"}])  # fmt: skip


def test_collator_hands_over_uint8_frames_and_encoders_normalise_them_exactly(video_dir, tokenizer):
    batch = VideoCollator(tokenizer, num_frames=4, frame_size=32, audio=True)([_sample(video_dir)])
    assert batch.frames.dtype == torch.uint8 and batch.frames.shape == (1, 4, 3, 32, 32)
    assert batch.timestamps.dtype == torch.float32 and batch.audio.dtype == torch.float32
    enc = tiny_vision_encoder().eval()
    pixels = batch.frames[0]
    with torch.no_grad():  # the same fp32 math as the collator's former `.float().div_(255)`
        assert torch.equal(enc.encode(pixels)[0], enc.encode(pixels.float().div_(255.0))[0])


def test_pinned_batches_move_and_keep_every_field(video_dir, tokenizer):
    batch = VideoCollator(tokenizer, num_frames=4, frame_size=32)([_sample(video_dir)])
    moved = batch.to("cpu")
    assert torch.equal(moved.frames, batch.frames) and moved.ids == batch.ids
    if torch.cuda.is_available():  # pragma: no cover - CPU CI
        pinned = batch.pin_memory()
        assert pinned.frames.is_pinned() and torch.equal(pinned.to("cuda").frames.cpu(), batch.frames)


def test_bf16_true_keeps_declared_fields_fp32_in_a_preference_batch(video_dir, tokenizer):
    pair = PreferenceSample(video=str(video_dir / "v0.mp4"), prompt=[{"role": "user", "content": "<video>\nOrder?"}],
                            chosen="red then blue", rejected="blue then red", id="p0",
                            meta={"ref_chosen_logps": -1234.567, "ref_rejected_logps": -1240.125})  # fmt: skip
    batch = PreferenceCollator(tokenizer, num_frames=4, frame_size=32)([pair])
    batch.chosen.features = torch.randn(1, 4, 2, 8)  # a float field that is not declared: cast as Lightning does
    out = KeepFp32HalfPrecision("bf16-true").convert_input(batch)
    assert out.ref_chosen_logps.dtype == torch.float32 and torch.equal(out.ref_chosen_logps, batch.ref_chosen_logps)
    assert float(out.ref_chosen_logps[0].bfloat16()) == -1232.0  # what a plain bf16 cast would have made of it
    assert out.chosen.timestamps.dtype == torch.float32 and out.chosen.frames.dtype == torch.uint8
    assert out.chosen.features.dtype == torch.bfloat16 and batch.chosen.features.dtype == torch.float32


def test_a_bf16_true_lightning_step_gets_uint8_frames_and_fp32_times_and_audio(video_dir, tmp_path):
    """A real `vidtempo train` run (Lightning trainer, bf16-true on CPU) with an audio encoder."""
    DtypeProbeSFT.seen.clear()
    cfg = load_recipe(RECIPE, [f"output_dir={tmp_path / 'run'}", "~data.val", "trainer.val_check_interval=null",
                               "trainer.max_steps=2", "trainer.log_every_n_steps=1", "data.batch_size=2",
                               "trainer.precision=bf16-true", "+data.collator.audio=true"])  # fmt: skip
    cfg.data.train = {"_target_": "conversation", "path": str(video_dir / "train.jsonl"), "video_root": str(video_dir)}
    cfg.model.audio_encoder = {"_target_": "mel_cnn", "out_dim": 32, "n_mels": 40, "channels": [16, 32]}
    cfg.model.compressor.audio_dim = 32
    cfg.objective = {"_target_": f"{__name__}.DtypeProbeSFT"}
    train(cfg)
    assert len(DtypeProbeSFT.seen) == 2
    for step in DtypeProbeSFT.seen:
        assert step["precision"] == "bf16-true" and step["params"] == {torch.bfloat16}
        assert (step["frames"], step["timestamps"], step["audio"]) == (torch.uint8, torch.float32, torch.float32)

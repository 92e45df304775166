"""A run resumed from a mid-epoch checkpoint trains exactly the batches the uninterrupted run trains from that
step on (real Lightning trainer, ModelCheckpoint, the datamodule's own training loader), and the batches the
resumed epoch already trained are skipped without being loaded."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import Dataset

from vidtempo.data.resumable import EpochRandomSampler, ResumableDataLoader
from vidtempo.data.samples import ConversationSample
from vidtempo.training.build import VideoDataModule


class Recorder(L.LightningModule):
    """Records the sample ids of every training batch (and trains a scalar so there is an optimizer step)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[list[int]] = []

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self.seen.append(batch.tolist())
        return (self.w - batch.float().mean()) ** 2

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class Samples(Dataset):
    """Conversation samples of 4 clips (for grouping) whose collated form is their index."""

    def __init__(self, n: int) -> None:
        self.items = [ConversationSample(video=f"clip{i % 4}.mp4", messages=[], id=str(i)) for i in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> ConversationSample:
        return self.items[i]


def collate(samples: list[ConversationSample]) -> torch.Tensor:
    return torch.tensor([int(s.id) for s in samples])


def fit(tmp: Path, max_steps: int, group: int, workers: int, ckpt: Path | None = None) -> list[list[int]]:
    """``group`` > 0: runs of ``group`` per clip; ``group`` < 0: length-grouped batches in windows of -group."""
    data = VideoDataModule(Samples(23), collate, batch_size=4, num_workers=workers, group_by_video=max(group, 0),  # type: ignore[arg-type]
                           seed=7, group_by_length=max(-group, 0))  # fmt: skip
    data._lengths = [10 + (i * 7) % 13 for i in range(23)]  # measured lengths (these samples have no text)
    model = Recorder()
    every = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp, every_n_train_steps=4, save_last=True, save_top_k=-1)
    trainer = L.Trainer(max_steps=max_steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[every], num_sanity_val_steps=0)  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, datamodule=data, ckpt_path=str(ckpt) if ckpt else None)
    assert not [w for w in caught if "not resumable" in str(w.message)], "Lightning found the loader not resumable"
    return model.seen


@pytest.mark.parametrize(("group", "workers"), [(0, 0), (0, 1), (2, 0), (-2, 0)])
def test_resumed_run_trains_the_batches_of_the_uninterrupted_run(tmp_path: Path, group: int, workers: int):
    # 23 samples in batches of 4 (grouped: runs of 2 per clip): 6 batches an epoch; 10 steps stop in epoch 1
    whole = fit(tmp_path / "whole", 17, group, workers)
    first = fit(tmp_path / "cut", 10, group, workers)
    assert first == whole[:10]
    rest = fit(tmp_path / "cut2", 17, group, workers, ckpt=tmp_path / "cut" / "last.ckpt")
    assert first[:8] + rest == whole  # the step-8 checkpoint (epoch 1, batch 2) is the last one saved
    epochs = [sorted(sum(whole[i : i + 6], [])) for i in (0, 6)]
    assert epochs[0] == epochs[1] == list(range(23))  # each epoch trains every sample once
    assert whole[:6] != whole[6:12]  # and the order changes between epochs (grouped too)


class Counting(Dataset):
    def __init__(self, n: int) -> None:
        self.n, self.loaded = n, []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        self.loaded.append(i)
        return i


def test_skipped_batches_are_not_loaded_and_other_epochs_skip_nothing():
    full = [b.tolist() for b in ResumableDataLoader(Counting(10), batch_size=3, sampler=EpochRandomSampler(10, 1))]
    data = Counting(10)
    loader = ResumableDataLoader(data, batch_size=3, sampler=EpochRandomSampler(10, 1))
    loader.load_state_dict({"epoch": 0, "batches": 2})
    assert [b.tolist() for b in loader] == full[2:]
    assert sorted(data.loaded) == sorted(sum(full[2:], []))  # the first two batches were never fetched
    assert loader.state_dict() == {"epoch": 0, "batches": 4}
    assert len(list(loader)) == 4  # the skip applied once

    other = ResumableDataLoader(Counting(10), batch_size=3, sampler=EpochRandomSampler(10, 1))
    other.load_state_dict({"epoch": 3, "batches": 2})
    assert len(list(other)) == 4  # epoch 0 is not the saved epoch 3: nothing skipped


def test_a_malformed_state_names_what_was_expected():
    loader = ResumableDataLoader(list(range(4)), batch_size=2)
    with pytest.raises(ValueError, match="'epoch': int, 'batches': int"):
        loader.load_state_dict({"step": 3})

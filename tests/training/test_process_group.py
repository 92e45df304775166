"""``train`` ends the process group only when the group is its own: a researcher who initialised
``torch.distributed`` before calling ``train`` (their own launcher, an evaluation after training) keeps it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch.distributed as dist

from vidtempo.config.load import load_recipe
from vidtempo.training.run import end_process_group, group_running, train

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "tiny" / "sft_pool.yaml"


@pytest.fixture
def callers_group(tmp_path):
    """A one-rank gloo group, as a caller's own launcher would make it; torn down after the test either way."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def test_end_process_group_destroys_only_when_asked(callers_group):
    end_process_group(destroy=False)
    assert group_running()
    end_process_group()
    assert not group_running()
    end_process_group()  # no group: nothing to do, no error


def test_train_leaves_a_group_the_caller_made(callers_group, video_dir, tmp_path):
    cfg = load_recipe(RECIPE, [f"output_dir={tmp_path / 'run'}", "~data.val", "trainer.val_check_interval=null",
                               "trainer.max_steps=1", "data.batch_size=2"])  # fmt: skip
    cfg.data.train = {"_target_": "conversation", "path": str(video_dir / "train.jsonl"), "video_root": str(video_dir)}
    final = train(cfg)
    assert (final / "model.safetensors").is_file()
    assert group_running()  # still the caller's: a collective on it works
    dist.barrier()

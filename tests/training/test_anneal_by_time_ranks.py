"""``optim.anneal_by: time`` under several processes: each rank's clock differs (start-up, data loading), so the
time fraction that drives the decay is rank 0's, broadcast to every rank; all ranks use the same lr."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.trainer.states import RunningStage

from vidtempo.training.optim import OptimSettings, lr_lambda, time_budget_used

SETTINGS = OptimSettings(lr=1.0, min_lr_ratio=0.0, warmup_steps=0, scheduler="linear", anneal_by="time")
ELAPSED = {0: 50.0, 1: 10.0}  # seconds each rank's own clock says it has trained, of a 100 s budget


def _timer(elapsed: float) -> Timer:
    timer = Timer(duration=timedelta(seconds=100))
    timer._start_time[RunningStage.TRAINING] = time.monotonic() - elapsed  # as if training started then
    return timer


def _lr(rank: int, strategy, world_size: int = 2) -> float:
    trainer = SimpleNamespace(callbacks=[_timer(ELAPSED[rank])], world_size=world_size, strategy=strategy)
    return lr_lambda(SETTINGS, total_steps=10**6, time_used=time_budget_used(trainer))(1)


def test_a_rank_uses_the_fraction_rank_0_broadcasts():
    sent = []

    class RankOne:  # what a strategy's broadcast gives rank 1: rank 0's object
        def broadcast(self, obj, src=0):
            sent.append((obj, src))
            return ELAPSED[0] / 100

    assert _lr(1, RankOne()) == pytest.approx(0.5, abs=1e-3)  # its own clock would give 0.9
    assert sent[0][1] == 0 and sent[0][0] == pytest.approx(0.1, abs=1e-3)
    assert _lr(1, None, world_size=1) == pytest.approx(0.9, abs=1e-3)  # one process: its own clock


def _worker(rank: int, store: str, out: str) -> None:
    import torch.distributed as dist
    from lightning.pytorch.strategies import DDPStrategy

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        lr = _lr(rank, DDPStrategy())  # Lightning's own broadcast over the process group
        Path(f"{out}.{rank}").write_text(json.dumps(lr))
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes (45 s on the shared 2-core machine); the fake-rank test covers the rule
@pytest.mark.distributed
def test_two_gloo_ranks_with_different_clocks_use_the_same_lr(tmp_path):
    out = str(tmp_path / "lr")
    torch.multiprocessing.spawn(_worker, args=(str(tmp_path / "store"), out), nprocs=2)
    lrs = [json.loads(Path(f"{out}.{r}").read_text()) for r in (0, 1)]
    assert lrs[0] == lrs[1] and lrs[0] == pytest.approx(0.5, abs=1e-2)

"""Learning-rate schedule: warm-up, decay by steps, and the time-budgeted decay (``optim.anneal_by: time``)."""

from __future__ import annotations

import time

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from vidtempo.training.optim import OptimSettings, lightning_optimizers, lr_lambda


def test_step_schedule_warms_up_then_decays_to_the_floor() -> None:
    fn = lr_lambda(OptimSettings(warmup_steps=4, min_lr_ratio=0.1), total_steps=104)
    assert [fn(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert fn(4) == pytest.approx(1.0) and fn(54) == pytest.approx(0.55) and fn(104) == pytest.approx(0.1)


def test_time_schedule_follows_whichever_budget_is_further_along() -> None:
    used = [0.0]
    fn = lr_lambda(OptimSettings(warmup_steps=2, min_lr_ratio=0.0), total_steps=102, time_used=lambda: used[0])
    assert fn(0) == 0.5  # warm-up is by steps
    assert fn(52) == pytest.approx(0.5)  # half the steps, no time yet
    used[0] = 1.0
    assert fn(3) == pytest.approx(0.0)  # the time is up: the decay is over
    used[0] = 0.25
    assert fn(77) == pytest.approx(lr_lambda(OptimSettings(warmup_steps=2), 102)(77))  # steps (75 %) lead


def test_wsd_holds_the_peak_then_decays_linearly_by_steps_or_time() -> None:
    settings = OptimSettings(scheduler="wsd", warmup_steps=2, decay_fraction=0.25, min_lr_ratio=0.1)
    fn = lr_lambda(settings, total_steps=102)
    assert fn(0) == 0.5 and fn(2) == 1.0 and fn(77) == 1.0  # warm-up, then flat for 75 % of the steps
    assert fn(89.5) == pytest.approx(0.55) and fn(102) == pytest.approx(0.1)  # linear to the floor
    used = [0.9]
    by_time = lr_lambda(settings, total_steps=102, time_used=lambda: used[0])
    assert by_time(10) == pytest.approx(0.1 + 0.9 * 0.4)  # 90 % of the time gone: 60 % into the decay
    with pytest.raises(ValueError, match="decay_fraction"):
        lr_lambda(OptimSettings(scheduler="wsd", decay_fraction=0.0), total_steps=10)


class _Slow(L.LightningModule):
    """A linear model whose steps take 20 ms, so a 1-s time box ends long before max_steps."""

    def __init__(self, optim: OptimSettings) -> None:
        super().__init__()
        self.layer, self.optim, self.lrs = torch.nn.Linear(2, 1), optim, []

    def training_step(self, batch, _):
        time.sleep(0.02)
        self.lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return lightning_optimizers(self, self.optim, self.trainer)


def _fit(anneal_by: str, max_time: str | None) -> list[float]:
    module = _Slow(OptimSettings(lr=1.0, min_lr_ratio=0.0, anneal_by=anneal_by))
    trainer = L.Trainer(max_steps=100_000, max_time=max_time, accelerator="cpu", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    data = DataLoader(TensorDataset(torch.randn(64, 2)), batch_size=8)
    trainer.fit(module, data)
    return module.lrs


def test_time_boxed_run_ends_its_decay_at_the_time_limit() -> None:
    by_time = _fit("time", "00:00:00:02")
    assert 20 < len(by_time) < 100_000
    assert by_time[0] > 0.99 and by_time[-1] < 0.05  # decayed to the floor as the 2 s ran out
    assert all(a >= b for a, b in zip(by_time, by_time[1:]))


def test_time_schedule_needs_max_time() -> None:
    with pytest.raises(ValueError, match="anneal_by: time needs trainer.max_time"):
        _fit("time", None)
    with pytest.raises(ValueError, match="anneal_by must be steps or time"):
        _fit("wallclock", "00:00:00:01")


def test_lr_multipliers_by_dotted_prefix_take_the_longest_match_and_name_unknown_prefixes() -> None:
    from vidtempo.training.optim import param_groups

    model = torch.nn.ModuleDict({"enc": torch.nn.Linear(2, 2),
                                 "comp": torch.nn.ModuleDict({"text": torch.nn.Linear(2, 2), "video": torch.nn.Linear(2, 2)})})  # fmt: skip
    settings = OptimSettings(lr=1.0, weight_decay=0.1, lr_multipliers={"enc": 10.0, "comp.text": 3.0, "comp.text.bias": 5.0})
    lrs = {g["name"]: (g["lr"], len(g["params"])) for g in param_groups(model, settings)}
    assert lrs == {"comp": (1.0, 1), "comp.no_decay": (1.0, 1), "comp.text": (3.0, 1), "comp.text.bias.no_decay": (5.0, 1),
                   "enc": (10.0, 1), "enc.no_decay": (10.0, 1)}  # fmt: skip
    with pytest.raises(ValueError, match=r"no trainable parameters: \['comp.txt'\]"):
        param_groups(model, OptimSettings(lr_multipliers={"comp.txt": 2.0}))


def test_fused_adamw_is_built_on_request_and_makes_the_same_steps() -> None:
    from vidtempo.training.optim import build_optimizer

    torch.manual_seed(0)
    models = [torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.LayerNorm(5), torch.nn.Linear(5, 1)) for _ in (0, 1)]
    models[1].load_state_dict(models[0].state_dict())
    start = models[0][0].weight.detach().clone()
    opts = [build_optimizer(m, OptimSettings(lr=1e-2, weight_decay=0.1, fused=f), 10)[0] for m, f in zip(models, (False, True), strict=True)]
    assert [o.defaults["fused"] for o in opts] == [None, True]
    x = torch.randn(16, 6)
    for _ in range(5):
        for m, o in zip(models, opts, strict=True):
            m(x).square().mean().backward()
            o.step()
            o.zero_grad()
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert (models[1][0].weight - start).abs().max() > 1e-3  # the fused optimizer did step

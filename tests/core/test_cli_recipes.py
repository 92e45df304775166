"""CLI commands and every recipe under recipes/ (recursive): validate all, run every tiny one briefly."""

from __future__ import annotations

from pathlib import Path

import pytest

from vidtempo.cli.main import main
from vidtempo.config.load import load_recipe

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))
TINY = [p for p in RECIPES if "tiny" in p.parts]


def test_there_are_recipes():
    assert RECIPES and TINY


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_recipe_validates(recipe: Path, capsys):
    assert main(["validate", str(recipe)]) == 0, capsys.readouterr().err


def test_list_compressor_shows_pool(capsys):
    assert main(["list", "compressor"]) == 0
    out = capsys.readouterr().out
    assert "pool" in out and "tdc" in out


def test_print_config_shows_override(capsys):
    assert main(["print-config", str(ROOT / "recipes/tiny/sft_pool.yaml"), "optim.lr=0.5"]) == 0
    assert "lr: 0.5" in capsys.readouterr().out


def test_overrides_may_follow_the_flags_but_unknown_flags_still_fail(capsys):
    from vidtempo.cli.main import build_parser, parse

    argv = ["eval", "r.yaml", "a=1", "--checkpoint", "d", "--benchmark", "synth", "~b", "+c.d=2"]
    assert parse(build_parser(), argv).overrides == ["a=1", "~b", "+c.d=2"]
    with pytest.raises(SystemExit):
        parse(build_parser(), ["eval", "r.yaml", "--checkpoint", "d", "--benchmark", "synth", "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # list has no overrides: a stray key=value is still an error
        parse(build_parser(), ["list", "compressor", "a=1"])


def test_misspelled_key_exits_nonzero_naming_it(capsys):
    assert main(["print-config", str(ROOT / "recipes/tiny/sft_pool.yaml"), "optim.lrr=0.5"]) == 2
    err = capsys.readouterr().err
    assert "optim.lrr" in err and "sft_pool.yaml" in err


def test_time_based_decay_without_a_time_cap_fails_validation(capsys):
    recipe = str(ROOT / "recipes/tiny/synth_av.yaml")  # time-boxed, its lr decay over the time
    assert main(["validate", recipe, "trainer.max_time=null"]) == 2
    err = capsys.readouterr().err
    assert "optim.anneal_by" in err and "max_time" in err
    assert main(["validate", recipe, "trainer.max_time=null", "optim.anneal_by=steps"]) == 0


def test_unknown_alias_in_recipe_fails_before_building(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "recipes/tiny/sft_pool.yaml").read_text().replace("_target_: pool", "_target_: poool"))
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "model.compressor._target_" in err and "pool" in err and str(bad) in err


def test_inspect_counts_parameters_and_tokens(capsys):
    assert main(["inspect", str(ROOT / "recipes/tiny/sft_pool.yaml")]) == 0
    out = capsys.readouterr().out
    assert "vision_encoder" in out and "llm" in out and "video tokens" in out


def _two_step_config(recipe: Path, tmp_path: Path, overrides: tuple[str, ...] | list[str] = ()):
    """A tiny recipe cut to 2 logged steps on a small TempoSynth set under tmp_path."""
    cfg = load_recipe(recipe, [f"output_dir={tmp_path / 'run'}", "trainer.max_steps=2", *overrides])
    cfg.trainer.pop("val_check_interval", None)
    if "max_time" in cfg.trainer:  # kept (optim.anneal_by: time reads it), long enough never to stop 2 steps
        cfg.trainer.max_time = "00:01:00:00"
    cfg.trainer.log_every_n_steps = 1
    devices = cfg.trainer.get("devices", 1)
    if isinstance(devices, int) and devices > 1:  # in this process (DDP would relaunch pytest), same global batch
        cfg.trainer.devices, cfg.trainer.strategy = 1, "auto"
        cfg.data.batch_size = int(cfg.data.batch_size) * devices
    cfg.pop("init_from", None)  # a recipe that continues another run's model starts from scratch here
    for stage in cfg.get("stages") or []:
        if "trainer" in stage:
            stage.trainer.max_steps = 2
    for data in [cfg.data, *(st.data for st in cfg.get("stages") or [] if st.get("data"))]:
        for split in ("train", "val"):  # a small TempoSynth set keeps this test fast (stages' own data too)
            node = data.get(split)
            if node is not None and node.get("_target_") == "synth":
                node.root, node.num_videos, node.max_duration = str(tmp_path / "synth"), 10, 8
    return cfg


@pytest.mark.parametrize("recipe", TINY, ids=lambda p: p.name)
def test_tiny_recipe_runs_a_few_steps(recipe: Path, tmp_path, video_dir):
    from vidtempo.training.run import train

    cfg = _two_step_config(recipe, tmp_path)
    final = train(cfg)
    assert (final / "model.safetensors").is_file()
    logged = (final.parent / "logs" / "metrics.csv").read_text().splitlines()[0].split(",")
    last = (cfg.get("stages") or [{}])[-1].get("objective") or cfg.get("objective") or {}  # the final stage's
    for name in last.get("aux") or {}:  # each auxiliary loss is trained and logged
        assert f"train/{name}_loss" in logged
        assert "train/lm_loss" in logged or last.get("_target_") == "align"  # align has no LM loss (VTC/VTM/VTG)
    if (cfg.model.get("compressor") or {}).get("_target_") == "tdc":  # the budget guard reports what it trimmed
        assert "train/trimmed_tokens" in logged and "train/video_tokens" in logged


def test_logged_trimmed_tokens_are_what_the_budget_guard_cut(tmp_path):
    """Same seed, same batches: with a budget below the recipe's ~90 tokens per video, the tokens kept plus the
    tokens logged as trimmed are the tokens the unguarded run had, step by step."""
    import csv

    from vidtempo.training.run import train

    def logged(name: str, overrides: list[str]) -> list[dict[str, str]]:
        final = train(_two_step_config(ROOT / "recipes/tiny/tdc_synth.yaml", tmp_path / name, overrides))
        rows = csv.DictReader((final.parent / "logs" / "metrics.csv").open())
        return [r for r in rows if r.get("train/video_tokens")]

    free, guarded = logged("free", []), logged("guarded", ["model.compressor.max_tokens=40"])
    assert len(free) == len(guarded) == 2
    for a, b in zip(free, guarded, strict=True):
        assert float(a["train/trimmed_tokens"]) == 0.0
        assert float(b["train/trimmed_tokens"]) > 0 and float(b["train/video_tokens"]) <= 40
        kept_plus_cut = float(b["train/video_tokens"]) + float(b["train/trimmed_tokens"])
        assert kept_plus_cut == pytest.approx(float(a["train/video_tokens"]))


def _demo_report(order: float) -> dict:
    """A ``synth`` report.json with the measures the demo's targets read (percent)."""
    grounding = {"normal": (61.2, 76.7), "time": (14.3, 12.5), "blind": (15.0, 10.0)}
    tasks = {"normal": (order, 94.2), "time": (30.0, 80.0), "blind": (22.5, 22.5)}
    return {"num_items": 300, "conditions": ["normal", "time", "blind"], "metrics": {
        c: {"grounding": {"strict": {"mIoU": grounding[c][0], "R1@0.5": grounding[c][1]}},
            "mcq": {"strict": {"per_task": {"order": {"accuracy": tasks[c][0]},
                                            "audio_visual": {"accuracy": tasks[c][1]}}}}}
        for c in grounding}}  # fmt: skip


def test_demo_trains_fixed_steps_and_says_when_a_time_box_cut_it_short(tmp_path, monkeypatch, capsys):
    """`vidtempo demo` chains data synth -> train (a process of its own: DDP relaunches its command) -> eval,
    trains the recipe's fixed steps under a safety-net time box, then prints each target beside its measure.
    With --minutes the box is the user's, and a run it stopped early says so instead of passing for the demo."""
    import argparse
    import json

    from vidtempo.cli import demo
    from vidtempo.utils.atomic import MARKER

    calls: list[tuple[list[str], bool]] = []
    stop_at: dict[str, int] = {}

    def fake(argv: list[str], separate: bool = False) -> int:
        calls.append((list(argv), separate))
        run = tmp_path / "run" / "0_sft" / "final"
        if argv[0] == "train":
            run.mkdir(parents=True, exist_ok=True)
            planned = int(next(a for a in argv if a.startswith("trainer.max_steps=")).split("=")[1])
            (run / MARKER).write_text(json.dumps({"stage": "sft", "global_step": stop_at.get("step", planned)}))
        if argv[0] == "eval":
            (tmp_path / "eval").mkdir(exist_ok=True)
            (tmp_path / "eval" / "report.json").write_text(json.dumps(_demo_report(order=90.0)))
        return 0

    monkeypatch.setattr(demo, "run_command", fake)
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    assert demo.run(parser.parse_args(["--out", str(tmp_path), "--seed", "3"])) == 0
    assert [(c[0][0], c[1]) for c in calls] == [("data", False), ("train", True), ("eval", False)]
    train = calls[1][0]
    planned = demo.recipe_budget(str(demo.RECIPE))[0]
    assert f"trainer.max_steps={planned}" in train and "seed=3" in train
    assert "trainer.max_time='00:00:30:00'" in train  # the safety net, not a race
    printed = capsys.readouterr().out
    assert "stopped at step" not in printed and "NOT met" not in printed
    assert "grounding mIoU, blind" in printed and ">= 85" in printed and f"steps {planned} of {planned}" in printed

    calls.clear()
    for path in (tmp_path / "run").rglob("*"):  # a fresh run with a 90-second box that stops at step 37
        if path.is_file():
            path.unlink()
    stop_at["step"] = 37
    assert demo.run(parser.parse_args(["--out", str(tmp_path), "--minutes", "1.5", "--steps", "50"])) == 0
    train = calls[1][0]
    assert "trainer.max_time='00:00:01:30'" in train and "trainer.max_steps=50" in train
    assert "trainer.max_steps=50" in calls[2][0]
    printed = capsys.readouterr().out
    assert printed.count("stopped at step 37 of 50: results below are not the demo's") == 2  # above and below

    # an earlier, time-boxed demo recipe keeps its own box (7 minutes), unless --minutes is given
    grounding = str(demo.RECIPE.with_name("synth_grounding.yaml"))
    assert demo.recipe_budget(grounding)[1] == 420.0
    calls.clear()
    assert demo.run(parser.parse_args(["--out", str(tmp_path), "--recipe", grounding])) == 0
    assert "trainer.max_time='00:00:07:00'" in calls[1][0]


def test_demo_marks_a_missed_target():
    from vidtempo.cli import demo

    note, rows, line = demo.summary_lines(_demo_report(order=84.9), {"steps": 2000, "seconds": 400.0}, 2000, 520.0)
    assert note is None
    assert dict((r[0], r[3]) for r in rows)["ordering"] == "NOT met"
    assert sum(r[3] == "met" for r in rows) == len(rows) - 1
    assert "5.00 steps/s" in line and "6 min 40 s" in line and "8 min 40 s" in line


def test_demo_preloads_what_the_evaluation_imports_and_survives_a_missing_module():
    """The evaluation's modules are imported in a background thread while training starts; a module that
    cannot be imported is left for the evaluation to report (the thread does not die on it)."""
    import sys

    from vidtempo.cli import demo

    assert "vidtempo.eval.runner" in demo.EVAL_MODULES and "torch" in demo.EVAL_MODULES
    thread = demo.preload(("vidtempo_no_such_module", "vidtempo.eval.runner"))
    thread.join(timeout=120)
    assert not thread.is_alive() and thread.daemon
    assert "vidtempo.eval.runner" in sys.modules and "vidtempo_no_such_module" not in sys.modules

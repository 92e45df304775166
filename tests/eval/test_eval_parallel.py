"""``eval.processes``: the batches shared among forked CPU processes give the rows one process gives; a failed
or killed process stops the run with an error that names it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vidtempo.eval import generation
from vidtempo.eval.benchmarks import EvalError
from vidtempo.eval.generation import share_of
from vidtempo.eval.runner import EvalSettings, run_eval

NODE = {"_target_": "vidtempo.models.VideoLLM",
        "vision_encoder": {"_target_": "frame_cnn", "out_dim": 32, "channels": [8, 16], "image_size": 32},
        "compressor": {"_target_": "pool", "in_dim": 32, "time_embedding": True}, "llm": {"_target_": "tiny"}}  # fmt: skip
RECIPE = (
    "data:\n  collator: {num_frames: 4, frame_size: 32}\n"
    "eval: {batch_size: 2, num_workers: 0, max_new_tokens: 4, mcq_scoring: likelihood, mcq_answer: text}\n"
)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory, synth_test_split) -> Path:
    """Three short TempoSynth videos, all in the test split (several items each), 2 items per batch."""
    return synth_test_split(tmp_path_factory.mktemp("ts"), num_videos=3, seed=1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer, saved_checkpoint) -> Path:
    return saved_checkpoint(NODE, tmp_path_factory.mktemp("ckpt"), tokenizer)


@pytest.fixture
def recipe(tmp_path) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE)
    return path


def _rows(out: Path) -> dict[tuple[str, str], dict]:
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines() if line.strip()]
    return {(r["condition"], r["id"]): r for r in rows}


def _eval(recipe: Path, checkpoint: Path, root: Path, out: Path, processes: int) -> dict:
    return run_eval(recipe, checkpoint, "synth", annotations=str(root), out_dir=out, progress=False,
                    settings_overrides={"processes": processes}).report  # fmt: skip


def test_two_processes_write_the_rows_of_one(recipe, checkpoint, synth_root, tmp_path):
    """Same rows (generated grounding answers, option log-probabilities, time-control permutations) and the
    same report, from a real checkpoint on real videos; both processes took batches."""
    one = _eval(recipe, checkpoint, synth_root, tmp_path / "one", 1)
    two = _eval(recipe, checkpoint, synth_root, tmp_path / "two", 2)
    rows1, rows2 = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    assert len(rows1) == 3 * one["num_items"] > 40 and rows1 == rows2
    assert any("option_logprobs" in r for r in rows1.values()) and any(r["task"] == "grounding" for r in rows1.values())
    assert one["metrics"] == two["metrics"] and one["counts"] == two["counts"]
    order1 = [line for line in (tmp_path / "one" / "generations.jsonl").read_text().splitlines()]
    order2 = [line for line in (tmp_path / "two" / "generations.jsonl").read_text().splitlines()]
    assert sorted(order1) == sorted(order2)


def test_share_of_splits_batches_not_items():
    items = list(range(7))
    shares = [share_of(items, 2, (k, 3)) for k in range(3)]
    assert shares == [[0, 1, 6], [2, 3], [4, 5]]
    assert sorted(x for s in shares for x in s) == items
    with pytest.raises(ValueError, match="0 <= k < n"):
        share_of(items, 2, (3, 3))


def test_a_failing_process_stops_the_run_and_is_named(recipe, checkpoint, synth_root, tmp_path, monkeypatch):
    def broken(model, tokenizer, batch, max_new_tokens):
        raise RuntimeError("out of luck in generate")

    monkeypatch.setattr(generation, "generate_texts", broken)  # inherited by the forked processes
    with pytest.raises(EvalError, match=r"eval process \d of 2 failed: RuntimeError: out of luck in generate"):
        _eval(recipe, checkpoint, synth_root, tmp_path / "out", 2)


def test_a_killed_process_stops_the_run_and_the_log_resumes(recipe, checkpoint, synth_root, tmp_path,
                                                            monkeypatch):  # fmt: skip
    real, calls = generation.generate_texts, [0]

    def dies(model, tokenizer, batch, max_new_tokens):  # each forked process counts its own calls
        calls[0] += 1
        if calls[0] == 2:
            os._exit(9)  # no Python cleanup: as a process killed for memory, after one batch of rows
        return real(model, tokenizer, batch, max_new_tokens)

    monkeypatch.setattr(generation, "generate_texts", dies)
    out = tmp_path / "out"
    with pytest.raises(EvalError, match=r"eval process \d of 2 exited with code 9"):
        _eval(recipe, checkpoint, synth_root, out, 2)
    monkeypatch.setattr(generation, "generate_texts", real)
    report = _eval(recipe, checkpoint, synth_root, out, 2)  # resumes: the rows written stay
    total = 3 * report["num_items"]
    assert report["counts"]["generated_this_run"] + report["counts"]["resumed"] == total == len(_rows(out))
    assert report["counts"]["resumed"] > 0


def test_processes_are_checked(recipe, checkpoint, synth_root, tmp_path):
    with pytest.raises(EvalError, match="eval.processes"):
        EvalSettings.from_recipe({"eval": {"processes": 0}})
    with pytest.raises(EvalError, match="CPU only"):
        run_eval(recipe, checkpoint, "synth", annotations=str(synth_root), out_dir=tmp_path / "o", progress=False,
                 settings_overrides={"processes": 2, "device": "cuda"})  # fmt: skip
    import argparse

    from vidtempo.cli import eval as cli_eval

    parser = argparse.ArgumentParser()
    cli_eval.add_arguments(parser)
    args = parser.parse_args(["r.yaml", "--checkpoint", "c", "--benchmark", "synth", "--processes", "2"])
    assert cli_eval._settings_overrides(args)["processes"] == 2

"""End-to-end tests of the eval runner: a tiny real checkpoint, a tiny TempoSynth set, real scorers."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import pytest
import torch

from vidtempo.eval import generation, likelihood, runner
from vidtempo.eval.benchmarks import EvalError
from vidtempo.eval.results import results_tables as runner_tables
from vidtempo.eval.runner import EvalSettings, run_eval

NODE = {"_target_": "vidtempo.models.VideoLLM",
        "vision_encoder": {"_target_": "siglip", "config": {
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "image_size": 32, "patch_size": 8}},
        "compressor": {"_target_": "pool", "in_dim": 32}, "llm": {"_target_": "tiny"}}  # fmt: skip
RECIPE = (
    "data:\n  collator: {num_frames: 4, frame_size: 32}\n"
    "eval: {batch_size: 8, num_workers: 0, max_new_tokens: 6}\n"
)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory, synth_test_split) -> Path:
    """Two 6-8 s TempoSynth videos, all in the test split."""
    return synth_test_split(tmp_path_factory.mktemp("ts"), num_videos=2)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer, saved_checkpoint) -> Path:
    return saved_checkpoint(NODE, tmp_path_factory.mktemp("ckpt"), tokenizer)


@pytest.fixture(scope="module")
def loaded(checkpoint):
    """The checkpoint loaded once (generation.load_model is patched to return it: saves seconds per test)."""
    return runner.load_model(str(checkpoint), torch.device("cpu"))


@pytest.fixture
def recipe(tmp_path) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE)
    return path


@pytest.fixture
def fast_model(monkeypatch, loaded):
    monkeypatch.setattr(generation, "load_model", lambda checkpoint, device: loaded)
    return loaded


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines() if line.strip()]


def _truth_text(row_or_item) -> str:
    gt = row_or_item
    return f"{gt[0]:.1f} - {gt[1]:.1f} seconds" if isinstance(gt, list | tuple) else str(gt)


def _oracle(truth: dict[str, object], wrong: bool = False):
    """A stand-in for generate_texts: the ground truth of each batch row (or garbage)."""
    calls = []

    def fake(model, tokenizer, batch, max_new_tokens):
        calls.append(list(batch.ids))
        return ["I cannot tell." if wrong else _truth_text(truth[i]) for i in batch.ids]

    fake.calls = calls
    return fake


def _truth(root: Path, recipe: Path, benchmark: str, **kw) -> dict[str, object]:
    spec = runner.get_benchmark(benchmark)
    settings = EvalSettings.from_recipe({})
    items = spec.load(
        settings.source(benchmark, kw.get("annotations"), kw.get("video_root")), settings.prompts, None
    )
    return {i.id: i.ground_truth() for i in items}


# ------------------------------------------------------------------------------------------------ synth
def test_synth_end_to_end_real_model_controls_and_resume(
    recipe, checkpoint, synth_root, fast_model, monkeypatch, tmp_path
):
    model, _ = fast_model
    seen = []
    real_generate = model.generate

    def recording_generate(**kw):
        seen.append({k: getattr(kw["video"], k).clone() for k in ("frames", "timestamps", "frame_mask")})
        return real_generate(**kw)

    monkeypatch.setattr(model, "generate", recording_generate)
    out = tmp_path / "out"
    res = run_eval(
        recipe,
        checkpoint,
        "synth",
        annotations=str(synth_root),
        limit=1,
        out_dir=out,
        settings_overrides={"num_workers": 1},
        progress=False,
    )
    rep = json.loads((out / "report.json").read_text())
    assert rep == json.loads(json.dumps(res.report, default=str))
    tasks = {"grounding", "order", "count", "audio_visual", "after_cut"}
    assert rep["num_items"] == 5 and rep["conditions"] == ["normal", "time", "blind"]
    assert res.generated == 15 and rep["counts"]["generated_this_run"] == 15
    for cond in rep["conditions"]:
        m = rep["metrics"][cond]
        assert set(m["mcq"]["strict"]["per_task"]) == tasks - {"grounding"}
        assert m["grounding"]["strict"]["n"] == 1 and "mIoU" in m["grounding"]["strict"]
        assert set(m["mcq"]["subsets"]) == {"order_dependent", "order_independent"}
    assert rep["pictures"] == ["timeline.png", "iou_histogram.png"]
    from PIL import Image

    assert all(Image.open(out / name).size[0] > 100 for name in rep["pictures"])  # real PNGs on disk
    assert rep["chance"]["mcq"] == {t: 25.0 for t in tasks - {"grounding"}}
    assert 0 < rep["chance"]["grounding"]["mIoU"] < 50
    assert rep["order_dependent_tasks"] == {
        "order": True,
        "count": False,
        "audio_visual": False,
        "after_cut": True,
    }
    # provenance
    from vidtempo import __version__
    from vidtempo.config.load import load_recipe, to_yaml

    assert rep["recipe_sha256"] == hashlib.sha256(to_yaml(load_recipe(recipe)).encode()).hexdigest()
    assert rep["vidtempo_version"] == __version__ and rep["decoder"] == "pyav"
    assert rep["frames"] == {"num_frames": 4, "frame_size": 32}
    assert rep["prompt_templates"]["synth_mcq"] == "{question}\n{options}\n{instruction}"
    assert rep["checkpoint"] == str(checkpoint.resolve()) and rep["skipped"] == []
    # generations: one row per (condition, item), raw text kept, per-item scores
    rows = _rows(out)
    assert len(rows) == 15 and {(r["condition"], r["task"]) for r in rows} == {
        (c, t) for c in rep["conditions"] for t in tasks
    }
    for r in rows:
        assert {"id", "prompt", "raw", "parsed", "ground_truth", "score"} <= set(r)
        assert r["prompt"].startswith("<video>\n") and isinstance(r["raw"], str)
    mcq = next(r for r in rows if r["task"] == "order")
    assert "A. the" in mcq["prompt"] and mcq["prompt"].endswith("from the given choices directly.")
    # the model saw the same items three ways: shuffled frames at the original timestamps, then blank frames
    assert len(seen) == 3
    normal, shuffled, blind = seen
    assert torch.equal(normal["timestamps"], shuffled["timestamps"]) and torch.equal(
        normal["timestamps"], blind["timestamps"]
    )
    assert not torch.equal(normal["frames"], shuffled["frames"])
    perms = {r["id"]: r["time_permutation"] for r in rows if r["condition"] == "time"}
    ids = [r["id"] for r in rows if r["condition"] == "time"]
    for b, item_id in enumerate(ids):
        assert torch.equal(shuffled["frames"][b], normal["frames"][b, perms[item_id]])
    assert normal["frames"].abs().sum() > 0 and blind["frames"].abs().sum() == 0
    # resume: nothing is regenerated, the model is not even loaded
    monkeypatch.setattr(generation, "load_model", lambda *a: pytest.fail("model loaded on a complete resume"))
    again = run_eval(
        recipe, checkpoint, "synth", annotations=str(synth_root), limit=1, out_dir=out, progress=False
    )
    assert again.generated == 0 and again.report["counts"]["resumed"] == 15
    assert again.report["metrics"] == rep["metrics"] and len(_rows(out)) == 15


def test_synth_scores_go_through_the_real_scorers(
    recipe, checkpoint, synth_root, fast_model, monkeypatch, tmp_path
):
    truth = _truth(synth_root, recipe, "synth", annotations=str(synth_root))
    monkeypatch.setattr(generation, "generate_texts", _oracle(truth))
    rep = run_eval(
        recipe, checkpoint, "synth", annotations=str(synth_root), out_dir=tmp_path / "a", progress=False
    ).report
    n_ground = sum(isinstance(v, list) for v in truth.values())
    for cond in ("normal", "time", "blind"):  # the oracle ignores the video: 100 % everywhere
        assert rep["metrics"][cond]["grounding"]["strict"]["R1@0.7"] == 100.0
        assert rep["metrics"][cond]["grounding"]["strict"]["n"] == n_ground
        assert rep["metrics"][cond]["mcq"]["strict"]["accuracy"] == 100.0
    monkeypatch.setattr(generation, "generate_texts", _oracle(truth, wrong=True))
    rep = run_eval(
        recipe,
        checkpoint,
        "synth",
        annotations=str(synth_root),
        out_dir=tmp_path / "b",
        progress=False,
        settings_overrides={"controls": []},
    ).report
    assert rep["conditions"] == ["normal"]
    g, m = rep["metrics"]["normal"]["grounding"]["strict"], rep["metrics"]["normal"]["mcq"]["strict"]
    assert g["mIoU"] == 0.0 and g["unparsed"] == n_ground  # unparsable = IoU 0, kept in the denominator
    assert m["accuracy"] == 0.0 and m["unparsed"] == m["total"] == m["denominator"] == len(truth) - n_ground


def test_interrupted_run_resumes_where_it_stopped(
    recipe, checkpoint, synth_root, fast_model, monkeypatch, tmp_path
):
    truth = _truth(synth_root, recipe, "synth", annotations=str(synth_root))
    oracle = _oracle(truth)

    def dies_after_first_batch(model, tokenizer, batch, max_new_tokens):
        if oracle.calls:
            raise KeyboardInterrupt
        return oracle(model, tokenizer, batch, max_new_tokens)

    out = tmp_path / "out"
    kw = {
        "annotations": str(synth_root),
        "out_dir": out,
        "progress": False,
        "limit": 1,
        "settings_overrides": {"batch_size": 2, "controls": ["blind"]},
    }
    monkeypatch.setattr(generation, "generate_texts", dies_after_first_batch)
    with pytest.raises(KeyboardInterrupt):
        run_eval(recipe, checkpoint, "synth", **kw)
    assert len(_rows(out)) == 2
    with open(out / "generations.jsonl", "a") as f:
        f.write('{"id": "half-writ')  # a crash mid-line
    second = _oracle(truth)
    monkeypatch.setattr(generation, "generate_texts", second)
    res = run_eval(recipe, checkpoint, "synth", **kw)
    assert res.generated == 8 and res.report["counts"]["resumed"] == 2
    assert sum(len(c) for c in second.calls) == 8 and oracle.calls[0][0] not in second.calls[0]
    assert res.report["metrics"]["normal"]["mcq"]["strict"]["accuracy"] == 100.0


def test_changed_settings_refuse_to_mix_generations(
    recipe, checkpoint, synth_root, fast_model, monkeypatch, tmp_path
):
    monkeypatch.setattr(generation, "generate_texts", _oracle({}, wrong=True))
    kw = {"annotations": str(synth_root), "out_dir": tmp_path / "o", "progress": False, "limit": 1}
    run_eval(recipe, checkpoint, "synth", **kw)
    changed = ["+eval.prompts={synth_grounding: 'Tell me when: {question}'}"]
    with pytest.raises(EvalError, match="prompts changed.*--fresh"):
        run_eval(recipe, checkpoint, "synth", overrides=changed, **kw)
    res = run_eval(recipe, checkpoint, "synth", overrides=changed, fresh=True, **kw)
    assert res.generated == 15
    assert all(
        r["prompt"].startswith("<video>\nTell me when: When is")
        for r in _rows(tmp_path / "o")
        if r["task"] == "grounding"
    )


# -------------------------------------------------------------------------------------- real-format data
def test_charades_end_to_end_with_a_missing_video(
    recipe, checkpoint, synth_root, fast_model, monkeypatch, tmp_path
):
    """Charades-STA lines over generated videos, plus one line whose video does not exist."""
    ann = tmp_path / "charades_sta_test.txt"
    lines = (synth_root / "annotations/test/charades_sta.txt").read_text()
    ann.write_text(lines + "ghost01 1.0 2.0##a ghost walks by.\n")
    durations = synth_root / "annotations/test/durations.csv"
    kw = {
        "annotations": str(ann),
        "video_root": str(synth_root / "videos"),
        "progress": False,
        "overrides": [f"+eval.benchmarks={{charades_sta: {{durations: '{durations}'}}}}"],
    }
    truth = _truth(
        synth_root, recipe, "charades_sta", annotations=str(ann), video_root=str(synth_root / "videos")
    )
    n = len(truth)
    monkeypatch.setattr(generation, "generate_texts", _oracle(truth))
    rep = run_eval(recipe, checkpoint, "charades_sta", out_dir=tmp_path / "a", **kw).report
    expected = 100.0 * (n - 1) / n  # the missing video stays in the denominator as a miss
    assert rep["metrics"]["strict"]["R1@0.7"] == pytest.approx(expected)
    assert rep["metrics"]["official"]["R1@0.5"] == pytest.approx(expected)
    assert rep["metrics"]["official_policy"] == "timechat" and "mIoU" not in rep["metrics"]["official"]
    assert rep["counts"]["skipped"] == 1
    (skip,) = rep["skipped"]
    assert skip["id"].startswith("ghost01") and skip["path"].endswith("ghost01.mp4") and skip["reason"]
    rows = _rows(tmp_path / "a")
    assert len(rows) == n and sum(r["skipped"] is not None for r in rows) == 1
    good = next(r for r in rows if not r["skipped"])
    assert good["parsed"] == good["ground_truth"] and good["score"]["iou"] == pytest.approx(1.0)
    assert good["prompt"].startswith("<video>\nWhen does 'the ") and "visible' happen" in good["prompt"]
    # garbage answers: every query unparsable, all kept in the denominator
    monkeypatch.setattr(generation, "generate_texts", _oracle(truth, wrong=True))
    bad = run_eval(recipe, checkpoint, "charades_sta", out_dir=tmp_path / "b", **kw).report["metrics"]
    assert bad["strict"]["R1@0.3"] == 0.0 and bad["strict"]["unparsed"] == n and bad["strict"]["n"] == n


def test_videomme_strict_and_official_policies(
    recipe, checkpoint, synth_root, fast_model, monkeypatch, tmp_path
):
    """Video-MME layout over generated videos; 'Answer: C' is C for strict but A (of 'Answer') officially."""
    ann = tmp_path / "videomme.json"
    ann.write_text(
        json.dumps(
            [
                {
                    "video_id": "ts000000",
                    "duration": "short",
                    "domain": "synthetic",
                    "questions": [
                        {
                            "question_id": f"q{k}",
                            "task_type": "Counting",
                            "question": "How many?",
                            "options": ["A. 1", "B. 2", "C. 3", "D. 4"],
                            "answer": "C",
                        }
                        for k in range(2)
                    ],
                }
            ]
        )
    )
    monkeypatch.setattr(generation, "generate_texts", lambda m, t, batch, n: ["Answer: C"] * len(batch))
    rep = run_eval(
        recipe,
        checkpoint,
        "videomme",
        annotations=str(ann),
        video_root=str(synth_root / "videos"),
        out_dir=tmp_path / "o",
        progress=False,
    ).report
    assert rep["metrics"]["strict"]["accuracy"] == 100.0 and rep["metrics"]["official"]["accuracy"] == 0.0
    assert rep["policy"]["official"] == "videomme_official"
    rows = _rows(tmp_path / "o")
    assert rows[0]["prompt"] == (
        "<video>\nHow many?\n(A) 1\n(B) 2\n(C) 3\n(D) 4\n"
        "Answer with the option's letter from the given choices directly."
    )
    assert rows[0]["score"] == {
        "correct": True,
        "official_parsed": "A",
        "official_correct": False,
        "official_counted": True,
    }


def test_retrieval_needs_an_alignment_head(recipe, checkpoint, tmp_path):
    with pytest.raises(EvalError, match="alignment head.*VideoLLM only generates text"):
        run_eval(recipe, checkpoint, "msrvtt_retrieval", annotations=str(tmp_path), out_dir=tmp_path / "o")


def test_bad_settings_name_the_key(recipe, checkpoint, synth_root):
    with pytest.raises(EvalError, match="eval: unknown key"):
        EvalSettings.from_recipe({"eval": {"batchsize": 2}})
    with pytest.raises(EvalError, match=r"eval.prompts.synth_mcq: unknown placeholder.*\['query'\]"):
        EvalSettings.from_recipe({"eval": {"prompts": {"synth_mcq": "{query}"}}})
    with pytest.raises(EvalError, match="eval.batch_size: expected a positive integer"):
        EvalSettings.from_recipe({"eval": {"batch_size": 0}})
    with pytest.raises(EvalError, match="needs a charades_sta_test.txt"):
        run_eval(recipe, checkpoint, "charades_sta")
    with pytest.raises(EvalError, match="unknown benchmark 'nope'"):
        run_eval(recipe, checkpoint, "nope")


def test_cli_run(recipe, checkpoint, synth_root, fast_model, monkeypatch, tmp_path, capsys):
    from vidtempo.cli import eval as cli_eval

    monkeypatch.setattr(generation, "generate_texts", lambda m, t, batch, n: ["B"] * len(batch))
    parser = argparse.ArgumentParser()
    cli_eval.add_arguments(parser)
    out = tmp_path / "cli"
    args = parser.parse_args(
        [
            str(recipe),
            "+eval.control_seed=3",
            "--checkpoint",
            str(checkpoint),
            "--benchmark",
            "synth",
            "--annotations",
            str(synth_root),
            "--limit",
            "1",
            "--out",
            str(out),
            "--batch-size",
            "4",
            "--no-progress",
        ]
    )
    assert cli_eval.run(args) == 0
    text = capsys.readouterr().out
    assert "TempoSynth" in text and "blind" in text and "mcq order" in text and "report.json" in text
    rep = json.loads((out / "report.json").read_text())
    assert rep["generation"]["batch_size"] == 4 and rep["controls"]["seed"] == 3
    args = parser.parse_args(
        [
            str(recipe),
            "--checkpoint",
            str(checkpoint),
            "--benchmark",
            "synth",
            "--annotations",
            str(tmp_path / "missing"),
            "--out",
            str(out),
        ]
    )
    assert cli_eval.run(args) == 2
    assert "does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------------------- likelihood multiple choice
def test_likelihood_scoring_picks_the_options_most_likely_answer(recipe, checkpoint, synth_root, fast_model,
                                                                 tmp_path):  # fmt: skip
    """Every MCQ answer is an option, the one with the highest log-probability; the log-probabilities
    equal those of each (prompt, option) conversation scored alone; grounding is still generated."""
    from vidtempo.data.collate import VideoCollator
    from vidtempo.eval.choice_scoring import answer_logprobs, option_samples

    model, tokenizer = fast_model
    out = tmp_path / "lik"
    rep = run_eval(recipe, checkpoint, "synth", annotations=str(synth_root), limit=1, out_dir=out,
                   settings_overrides={"mcq_scoring": "likelihood", "mcq_answer": "text", "controls": ["time"]},
                   progress=False).report  # fmt: skip
    assert rep["generation"]["mcq_scoring"] == "likelihood" and "mcq_scoring" in rep["policy"]
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(*runner_tables(rep))
    assert "multiple choice by option likelihood" in " ".join(console.export_text().split())
    rows = _rows(out)
    assert len(rows) == 10
    items = {i.id: i for i in runner.get_benchmark("synth").load(
        EvalSettings.from_recipe({}).source("synth", str(synth_root), None), EvalSettings.from_recipe({}).prompts,
        None)}  # fmt: skip
    collate = VideoCollator(tokenizer, num_frames=4, frame_size=32)
    for r in rows:
        if r["task"] == "grounding":
            assert "option_logprobs" not in r
            continue
        scores = r["option_logprobs"]
        texts = {o.split(". ", 1)[0]: o.split(". ", 1)[1] for o in items[r["id"]].options}
        assert set(scores) == set(texts) and r["raw"] in texts.values()
        assert r["parsed"] == max(scores, key=scores.get)  # the text maps back to its letter
        if r["condition"] == "normal":  # each option scored alone, in a batch of one
            for sample, letter in zip(option_samples(items[r["id"]], "text"), texts):
                with torch.no_grad():
                    o = model(**collate([sample]).model_inputs())
                assert abs(float(answer_logprobs(o.logits, o.labels)[0]) - scores[letter]) < 1e-3
        else:
            assert "time_permutation" in r


def test_likelihood_scoring_is_scored_against_the_answer_key(recipe, checkpoint, synth_root, fast_model,
                                                             monkeypatch, tmp_path):  # fmt: skip
    """With log-probabilities that favour the true option, every multiple-choice item is right; with ones
    that favour another option, every one is wrong: the picked text is scored as its letter."""
    import vidtempo.eval.choice_scoring as cs

    truth = _truth(synth_root, recipe, "synth", annotations=str(synth_root))
    real_pick, favour = cs.pick_options, {"truth": True}

    def pick(model, chunk, batch, answer):  # real pick_options, with log-probabilities from the answer key
        rows = []
        for item in chunk:
            hit = [float(o.split(". ", 1)[0] == truth[item.id]) for o in item.options]
            rows += hit if favour["truth"] else [1.0 - h for h in hit]
        monkeypatch.setattr(cs, "answer_logprobs", lambda logits, labels: torch.tensor(rows))
        return real_pick(model, chunk, batch, answer)

    monkeypatch.setattr(likelihood, "pick_options", pick)
    for favour["truth"], expected in ((True, 100.0), (False, 0.0)):
        rep = run_eval(recipe, checkpoint, "synth", annotations=str(synth_root), limit=1,
                       out_dir=tmp_path / str(expected), progress=False,
                       settings_overrides={"mcq_scoring": "likelihood", "controls": []}).report  # fmt: skip
        per_task = rep["metrics"]["normal"]["mcq"]["strict"]["per_task"]
        assert {t: v["accuracy"] for t, v in per_task.items()} == {t: expected for t in per_task}


def test_likelihood_settings_are_checked(recipe, checkpoint, synth_root):
    with pytest.raises(EvalError, match="eval.mcq_scoring"):
        EvalSettings.from_recipe({"eval": {"mcq_scoring": "logits"}})
    with pytest.raises(EvalError, match="eval.mcq_answer"):
        EvalSettings.from_recipe({"eval": {"mcq_answer": "words"}})
    with pytest.raises(EvalError, match="lvcot"):
        EvalSettings.from_recipe({"eval": {"mcq_scoring": "likelihood", "lvcot": {"enabled": True, "segments": 2}}})
    from vidtempo.cli import eval as cli_eval

    parser = argparse.ArgumentParser()
    cli_eval.add_arguments(parser)
    args = parser.parse_args([str(recipe), "--checkpoint", "c", "--benchmark", "synth", "--mcq-scoring",
                              "likelihood", "--mcq-answer", "text"])  # fmt: skip
    assert cli_eval._settings_overrides(args) == {"mcq_scoring": "likelihood", "mcq_answer": "text"}

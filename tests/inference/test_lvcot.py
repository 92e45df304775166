"""LVCoT: segment rule, real segment clips seen by a tiny real model, final prompt, `infer --lvcot`, eval."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vidtempo.data.chat import VIDEO_TOKEN_INDEX
from vidtempo.data.collate import VideoCollator
from vidtempo.data.samples import ConversationSample
from vidtempo.data.testing import make_test_video, read_frame_index
from vidtempo.inference.lvcot import (
    DESCRIBE_PROMPT,
    QUESTION_PROMPT,
    LVCoTError,
    LVCoTSettings,
    lvcot_prompt,
    run_lvcot,
    segment_spans,
)

NODE = {"_target_": "vidtempo.models.VideoLLM",
        "vision_encoder": {"_target_": "siglip", "config": {
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "image_size": 32, "patch_size": 8}},
        "compressor": {"_target_": "pool", "in_dim": 32}, "llm": {"_target_": "tiny"}}  # fmt: skip
COLLATOR = {"num_frames": 4, "frame_size": 32}
RECIPE = "data:\n  collator: {num_frames: 4, frame_size: 32}\neval: {batch_size: 8, num_workers: 0, max_new_tokens: 4}\n"
FPS = 1.0  # 1 frame per second, like TDC's sampling: frame index = second


# ------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    """Real 1-fps H.264 files around the Video-MME thresholds (each frame shows its own index)."""
    root = tmp_path_factory.mktemp("long")
    lengths = {"v599": 599, "v650": 650, "v905": 905}
    return {name: make_test_video(root / f"{name}.mp4", duration=d, fps=FPS, size=(32, 32), audio=False)
            for name, d in lengths.items()}  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer) -> Path:
    from vidtempo.models.build import build_video_llm
    from vidtempo.models.checkpoint import save_pretrained

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("ckpt")
    save_pretrained(build_video_llm(NODE), out, model_config=NODE, tokenizer=tokenizer)
    return out


@pytest.fixture(scope="module")
def loaded(checkpoint):
    from vidtempo.models.checkpoint import load_pretrained

    model, tok, _ = load_pretrained(str(checkpoint))
    return model.eval(), tok


class Recorder:
    """Wraps ``model.generate``: keeps each call's inputs (prompt text, frames, timestamps) and outputs."""

    def __init__(self, model, tokenizer) -> None:
        self.model, self.tokenizer, self.real, self.calls = model, tokenizer, model.generate, []

    def __call__(self, **kw):
        out = self.real(**kw)
        texts = [self.tokenizer.decode([t for t in row.tolist() if t >= 0]) for row in kw["input_ids"]]
        video = kw["video"]
        self.calls.append({"texts": texts, "frames": video.frames.clone(), "mask": video.frame_mask.clone(),
                           "timestamps": video.timestamps.clone(),
                           "outputs": [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)],
                           "has_video": [bool((row == VIDEO_TOKEN_INDEX).any()) for row in kw["input_ids"]]})  # fmt: skip
        return out


@pytest.fixture
def recorded(loaded, monkeypatch):
    model, tok = loaded
    rec = Recorder(model, tok)
    monkeypatch.setattr(model, "generate", rec)
    return model, tok, rec


def _flat(spans) -> list[float]:
    return [t for span in spans for t in span]


def _sample(path: Path, question: str = "What happens?", **kw) -> ConversationSample:
    return ConversationSample(video=str(path), messages=[{"role": "user", "content": f"<video>\n{question}"}],
                              id=path.stem, **kw)  # fmt: skip


# --------------------------------------------------------------------------------------- rule + settings
def test_segment_count_rule_around_thresholds() -> None:
    mme, mlvu = LVCoTSettings(), LVCoTSettings.from_dict({"rule": "mlvu"})
    durations = [0.0, 599.99, 600.0, 899.99, 900.0, 3600.0]
    assert [mme.num_segments(d) for d in durations] == [1, 1, 2, 2, 3, 3]
    assert [mlvu.num_segments(d) for d in durations] == [1, 1, 2, 2, 2, 2]
    fixed = LVCoTSettings.from_dict({"segments": 4})
    assert [fixed.num_segments(d) for d in durations] == [4] * 6 and fixed.to_dict()["rule"] is None
    custom = LVCoTSettings.from_dict({"rule": [[10, 2], [20, 4]]})  # sorted longest first
    assert custom.rule == ((20.0, 4), (10.0, 2))
    assert [custom.num_segments(d) for d in (9.9, 10.0, 19.9, 20.0)] == [1, 2, 2, 4]
    assert LVCoTSettings.from_dict(True) == LVCoTSettings() and LVCoTSettings.from_dict(None) is None
    assert LVCoTSettings().to_dict() == {"segments": None, "rule": [[900.0, 3], [600.0, 2]],
                                         "prompt": DESCRIBE_PROMPT, "max_new_tokens": 128}  # fmt: skip
    assert LVCoTSettings.from_dict({"prompt": "question"}).prompt == QUESTION_PROMPT


def test_segment_spans_are_equal_and_contiguous() -> None:
    spans = segment_spans(10.0, 910.0, 3)
    assert spans == [(10.0, 310.0), (310.0, 610.0), (610.0, 910.0)]
    spans = segment_spans(0.0, 649.5, 2)
    assert spans[0][1] == spans[1][0] and spans[1][1] == 649.5
    with pytest.raises(ValueError, match="cannot split"):
        segment_spans(5.0, 5.0, 2)


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"segment": 3}, r"eval.lvcot: unknown key\(s\) \['segment'\]"),
        ({"segments": 3, "rule": "mlvu"}, "eval.lvcot: give either segments"),
        ({"segments": 0}, "eval.lvcot.segments: expected a positive integer"),
        ({"rule": "egoschema"}, "eval.lvcot.rule: unknown preset 'egoschema'"),
        ({"rule": [[600, 0]]}, r"eval.lvcot.rule: expected a preset .* pairs"),
        ({"prompt": "Describe {segment}"}, r"eval.lvcot.prompt: unknown placeholder\(s\) \['segment'\]"),
        ({"max_new_tokens": -1}, "eval.lvcot.max_new_tokens: expected a positive integer"),
        ({"enabled": "yes"}, "eval.lvcot.enabled: expected true or false"),
        ("on", "eval.lvcot: expected true/false or a mapping"),
    ],
)
def test_bad_settings_name_the_key(node, message) -> None:
    with pytest.raises(LVCoTError, match=message):
        LVCoTSettings.from_dict(node, where="eval.lvcot")


def test_final_prompt_puts_thoughts_before_the_question() -> None:
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "<video>\nWhich first?\n(A) x"}]
    out = lvcot_prompt(msgs, ["First a cat.", " Then <video> a dog. "])
    assert out[0] == msgs[0] and msgs[1]["content"] == "<video>\nWhich first?\n(A) x"  # input untouched
    assert out[1]["content"] == "<video>\n<think>First a cat. Then   a dog.</think>Which first?\n(A) x"
    no_placeholder = lvcot_prompt([{"role": "user", "content": "Which first?"}], ["a", "b"])
    assert no_placeholder[0]["content"] == "<think>a b</think>Which first?"


def test_package_import_is_light() -> None:
    code = "import sys, vidtempo.inference; print('torch' in sys.modules or 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------------ real segments
def _frame_indices(frames: torch.Tensor) -> list[int]:
    """(T, 3, H, W) uint8 (as the collator sends them) -> the frame index drawn in each frame."""
    assert frames.dtype == torch.uint8
    arr = frames.permute(0, 2, 3, 1).numpy()  # (T, H, W, 3)
    return [read_frame_index(np.asarray(f)) for f in arr]


def test_segments_are_the_right_time_spans_and_prompts(recorded, videos) -> None:
    """One batched call: 650 s -> 2 segments, 905 s -> 3, 599 s -> answered directly (no segments)."""
    model, tok, rec = recorded
    collate = VideoCollator(tok, **COLLATOR, generation=True)
    samples = [_sample(videos["v650"]), _sample(videos["v599"]), _sample(videos["v905"], "Which colour?")]
    results = run_lvcot(model, tok, collate, samples, LVCoTSettings(max_new_tokens=6))
    assert [len(r.segments) for r in results] == [2, 0, 3]
    assert len(rec.calls) == 1 and len(rec.calls[0]["texts"]) == 5  # every segment in one generate call
    call = rec.calls[0]
    expected = [*segment_spans(0.0, 650.0, 2), *segment_spans(0.0, 905.0, 3)]
    assert _flat(s for r in results for s in r.segments) == pytest.approx(_flat(expected))
    for row, (start, end) in enumerate(expected):
        times = call["timestamps"][row][call["mask"][row]]
        assert len(times) == COLLATOR["num_frames"] and bool(((times >= start) & (times < end)).all())
        shown = _frame_indices(call["frames"][row][call["mask"][row]])  # the pixels, not just the labels
        assert shown == [round(t * FPS) for t in times.tolist()] and start <= min(shown) and max(shown) < end
        assert call["has_video"][row] and call["texts"][row].count(DESCRIBE_PROMPT) == 1
    # summaries = the model's outputs, in segment order; the final prompt carries them before the question
    assert results[0].summaries == call["outputs"][:2] and results[2].summaries == call["outputs"][2:]
    final = results[2].messages[-1]["content"]
    assert final == "<video>\n<think>" + " ".join(call["outputs"][2:]) + "</think>Which colour?"
    assert list(results[0]) == [results[0].messages, results[0].summaries]  # unpacks as (messages, summaries)
    # below 600 s: the plain answer path (messages unchanged, nothing generated for it)
    assert results[1].messages == samples[1].messages and results[1].summaries == []
    assert results[1].duration == pytest.approx(599.0) and results[1].skipped is None


def test_fixed_n_question_prompt_clip_bounds_and_one_call_per_segment(recorded, videos) -> None:
    """Fixed N=3 on a [100, 400) clip, question-conditioned prompt, one segment per generate call."""
    model, tok, rec = recorded
    collate = VideoCollator(tok, **COLLATOR, generation=True)
    settings = LVCoTSettings.from_dict({"segments": 3, "prompt": "question", "max_new_tokens": 3})
    (res,) = run_lvcot(model, tok, collate, [_sample(videos["v599"], "Is it red?", start=100.0, end=400.0)],
                       settings, batch_size=1)  # fmt: skip
    assert res.segments == [(100.0, 200.0), (200.0, 300.0), (300.0, 400.0)] and len(rec.calls) == 3
    for call, (start, end) in zip(rec.calls, res.segments):
        times = call["timestamps"][0][call["mask"][0]]
        assert bool(((times >= start) & (times < end)).all())
        assert QUESTION_PROMPT.format(question="Is it red?") in call["texts"][0]
    assert res.summaries == [c["outputs"][0] for c in rec.calls]


def test_undecodable_video_is_reported_not_raised(recorded, tmp_path) -> None:
    model, tok, rec = recorded
    collate = VideoCollator(tok, **COLLATOR, generation=True)
    (res,) = run_lvcot(model, tok, collate, [_sample(tmp_path / "ghost.mp4")], LVCoTSettings())
    assert res.skipped and "not found" in res.skipped and res.summaries == [] and rec.calls == []


# --------------------------------------------------------------------------------------------- infer
def test_infer_cli_with_lvcot(checkpoint, videos, tmp_path, monkeypatch, capsys) -> None:
    from vidtempo.cli.main import main
    from vidtempo.models import checkpoint as ckpt_module

    real_load = ckpt_module.load_pretrained
    recorders = []

    def load_and_record(path):
        model, tok, extra = real_load(path)
        recorders.append(Recorder(model, tok))
        model.generate = recorders[-1]
        return model, tok, extra

    monkeypatch.setattr(ckpt_module, "load_pretrained", load_and_record)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    base = ["infer", str(recipe), "--checkpoint", str(checkpoint), "--prompt", "Where?", "--max-new-tokens", "3",
            "--lvcot-max-new-tokens", "5"]
    assert main([*base, "--video", str(videos["v905"]), "--lvcot"]) == 0
    out, err = capsys.readouterr()
    (rec,) = recorders
    assert len(rec.calls) == 2 and [len(c["texts"]) for c in rec.calls] == [3, 1]  # N + 1 model rows
    summaries = rec.calls[0]["outputs"]
    assert f"<think>{' '.join(summaries)}</think>Where?" in rec.calls[1]["texts"][0]
    assert rec.calls[1]["timestamps"][0].max() > 600  # the final question sees the whole video
    assert out.strip() == rec.calls[1]["outputs"][0]
    lines = [line.split(": ", 1) for line in err.splitlines()]
    assert [head for head, _ in lines] == ["[lvcot] 0.0-301.7 s", "[lvcot] 301.7-603.3 s", "[lvcot] 603.3-905.0 s"]
    assert [json.loads(text) for _, text in lines] == summaries
    # fixed N via the flag alone; and below the rule's threshold: one plain answer
    assert main([*base, "--video", str(videos["v599"]), "--lvcot-segments", "2"]) == 0
    assert [len(c["texts"]) for c in recorders[-1].calls] == [2, 1]
    assert main([*base, "--video", str(videos["v599"]), "--lvcot"]) == 0
    assert [len(c["texts"]) for c in recorders[-1].calls] == [1] and "<think>" not in recorders[-1].calls[0]["texts"][0]
    assert "answering directly" in capsys.readouterr().err
    assert main([*base, "--video", str(videos["v599"]), "--lvcot-rule", "nope"]) == 2
    assert "lvcot.rule: unknown preset 'nope'" in capsys.readouterr().err
    assert main([*base[:-2], "--video", str(videos["v905"])]) == 0  # no --lvcot flag: the plain answer
    assert [len(c["texts"]) for c in recorders[-1].calls] == [1] and "<think>" not in recorders[-1].calls[0]["texts"][0]
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------------------------------- eval
def test_eval_records_summaries_and_refuses_to_mix(checkpoint, recorded, videos, tmp_path, monkeypatch) -> None:
    from vidtempo.eval import generation, runner
    from vidtempo.eval.benchmarks import EvalError

    model, tok, rec = recorded
    monkeypatch.setattr(generation, "load_model", lambda checkpoint, device: (model, tok))
    ann = tmp_path / "videomme.json"
    ann.write_text(json.dumps([
        {"video_id": name, "duration": "long", "domain": "synthetic",
         "questions": [{"question_id": f"{name}-q", "task_type": "Counting", "question": "How many?",
                        "options": ["A. 1", "B. 2", "C. 3", "D. 4"], "answer": "C"}]}
        for name in ("v905", "v599")]))  # fmt: skip
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    kw = {"annotations": str(ann), "video_root": str(videos["v905"].parent), "progress": False,
          "out_dir": tmp_path / "out"}  # fmt: skip
    on = ["+eval.lvcot={rule: videomme, max_new_tokens: 3}"]
    res = runner.run_eval(recipe, checkpoint, "videomme", overrides=on, **kw)
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "out/generations.jsonl").read_text().splitlines())}
    long, short = rows["v905-q"]["lvcot"], rows["v599-q"]["lvcot"]
    assert len(long["summaries"]) == 3 and all(isinstance(s, str) for s in long["summaries"])
    assert _flat(long["segments"]) == pytest.approx(_flat(segment_spans(0.0, 905.0, 3)))
    assert short["summaries"] == [] and short["segments"] == [] and short["duration"] == pytest.approx(599.0)
    assert rows["v905-q"]["prompt"].startswith("<video>\nHow many?")  # the item's own prompt is kept
    assert len(rec.calls) == 2 and [len(c["texts"]) for c in rec.calls] == [3, 2]  # segments, then answers
    assert rec.calls[0]["outputs"] == long["summaries"]
    think = f"<think>{' '.join(long['summaries'])}</think>How many?\n(A) 1"
    assert think in rec.calls[1]["texts"][0] and "<think>" not in rec.calls[1]["texts"][1]
    rep = json.loads((tmp_path / "out/report.json").read_text())
    assert rep["lvcot"] == {"segments": None, "rule": [[900.0, 3], [600.0, 2]], "prompt": DESCRIBE_PROMPT,
                            "max_new_tokens": 3, "rows_with_segments": 1, "rows_direct": 1}  # fmt: skip
    assert res.generated == 2
    # a complete LVCoT resume regenerates nothing; a plain run into the same folder is refused, and back
    assert runner.run_eval(recipe, checkpoint, "videomme", overrides=on, **kw).generated == 0
    with pytest.raises(EvalError, match="lvcot changed.*--fresh"):
        runner.run_eval(recipe, checkpoint, "videomme", **kw)
    plain = runner.run_eval(recipe, checkpoint, "videomme", fresh=True, **kw)
    assert plain.report["lvcot"] is None and "lvcot" not in _first_row(tmp_path / "out")
    with pytest.raises(EvalError, match="lvcot changed"):
        runner.run_eval(recipe, checkpoint, "videomme", overrides=on, **kw)
    with pytest.raises(EvalError, match="eval.lvcot.rule: unknown preset"):
        runner.run_eval(recipe, checkpoint, "videomme", overrides=["+eval.lvcot={rule: x}"], **kw)


def _first_row(out: Path) -> dict:
    return json.loads((out / "generations.jsonl").read_text().splitlines()[0])


def test_eval_controls_reach_the_segment_descriptions(checkpoint, recorded, tmp_path, monkeypatch) -> None:
    """TempoSynth with the blind control: the segment passes see black frames too (no leak through text)."""
    from vidtempo.eval import generation, runner
    from vidtempo.synth.generate import generate

    model, tok, rec = recorded
    monkeypatch.setattr(generation, "load_model", lambda checkpoint, device: (model, tok))
    root = tmp_path / "ts"
    generate(root, num_videos=1, seed=0, size=32, min_duration=6, max_duration=6, splits=(0.0, 0.0, 1.0),
             progress=False)  # fmt: skip
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    res = runner.run_eval(recipe, checkpoint, "synth", annotations=str(root), limit=1, out_dir=tmp_path / "o",
                          progress=False, overrides=["+eval.lvcot={segments: 2, max_new_tokens: 2}",
                                                     "+eval.controls=[blind]"])  # fmt: skip
    assert res.report["lvcot"]["rows_with_segments"] == res.report["num_items"] * 2
    segment_calls = [c for c in rec.calls if all(DESCRIBE_PROMPT in t for t in c["texts"])]
    answer_calls = [c for c in rec.calls if not any(DESCRIBE_PROMPT in t for t in c["texts"])]
    n_items = res.report["num_items"]  # 5 items -> 10 segments per condition, generated 8 at a time
    assert len(answer_calls) == 2 and len(segment_calls) == 4 and [len(c["texts"]) for c in segment_calls] == [
        8, 2, 8, 2] and n_items == 5  # fmt: skip
    normal, blind = segment_calls[:2], segment_calls[2:]
    assert all(c["frames"].abs().sum() > 0 for c in normal) and all(c["frames"].abs().sum() == 0 for c in blind)
    assert all("<think>" in t for c in answer_calls for t in c["texts"])

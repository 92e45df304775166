"""Self-generated answer pairs (vidtempo.prefgen.answers): perturbed frame orders, pair rules, resuming, and
the ``vidtempo prefgen --questions`` CLI on a tiny checkpoint and real TempoSynth videos."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from vidtempo.prefgen.answers import AnswerPairSettings, answer_pairs, block_order, perturb_transform
from vidtempo.synth.generate import Manifest

NODE = {"_target_": "vidtempo.models.VideoLLM",
        "vision_encoder": {"_target_": "frame_cnn", "out_dim": 16, "channels": [8, 16], "image_size": 32,
                           "grid": [1, 1]},
        "compressor": {"_target_": "pool", "in_dim": 16, "stride": 1, "time_embedding": True},
        "llm": {"_target_": "tiny", "arch": "qwen2"}}  # fmt: skip


def test_block_orders_follow_temple_magnitudes_and_are_seeded() -> None:
    assert block_order(8, "reverse", 4, seed=0, key="q") == [6, 7, 4, 5, 2, 3, 0, 1]
    assert block_order(8, "reverse", 2, seed=0, key="q") == [4, 5, 6, 7, 0, 1, 2, 3]
    a = block_order(16, "shuffle", 8, seed=0, key="q")
    assert a == block_order(16, "shuffle", 8, seed=0, key="q") and sorted(a) == list(range(16))
    assert a != list(range(16)) and all(a[k] + 1 == a[k + 1] for k in range(0, 16, 2))  # blocks of 2 kept
    assert block_order(1, "reverse", 4, seed=0, key="q") is None


def test_perturb_transform_moves_valid_frames_only() -> None:
    from types import SimpleNamespace

    frames = torch.arange(2 * 6, dtype=torch.float32).view(2, 6, 1, 1, 1).expand(2, 6, 3, 2, 2).clone()
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    batch = SimpleNamespace(frames=frames, frame_mask=mask, ids=["a", "b"], audio=None, audio_lengths=None,
                            meta=[{}, {}])  # fmt: skip
    perturb_transform("reverse", 2, seed=0)(batch)
    assert batch.frames[0, :, 0, 0, 0].tolist() == [3, 4, 5, 0, 1, 2]
    assert batch.frames[1, :, 0, 0, 0].tolist() == [8, 9, 6, 7, 10, 11]  # padding frames 10, 11 untouched
    assert batch.meta[1]["time_permutation"] == [2, 3, 0, 1]


def fake_questions(n: int) -> list:
    from vidtempo.data.samples import ConversationSample

    return [ConversationSample(video=f"v{i}.mp4", id=f"q{i}", meta={"task": "order"},
                               messages=[{"role": "user", "content": f"<video>\nquestion {i}"},
                                         {"role": "assistant", "content": "the red circle"}])
            for i in range(n)]  # fmt: skip


def test_pairs_keep_changed_answers_record_difficulty_and_resume(tmp_path: Path) -> None:
    from vidtempo.data.datasets import PreferenceDataset
    from vidtempo.training.curriculum import MagnitudeFilter

    calls: list[tuple[int, bool]] = []

    def generate(questions, transform):  # the intact answer, or a changed one for odd questions
        calls.append((len(questions), transform is not None))
        assert all(q.messages[-1]["role"] == "user" for q in questions)  # the answer is never shown
        return [("changed" if transform is not None and int(q.id[1:]) % 2 else "intact") for q in questions]

    samples, out = fake_questions(6), tmp_path / "pairs.jsonl"
    settings = AnswerPairSettings(magnitudes=[4, 2], perturbations=["reverse"])
    counts = answer_pairs(generate, samples, settings, out, progress=False)
    assert counts == {"pairs": 6, "same": 6, "passes_done": 2}
    assert calls == [(6, False), (6, True), (6, True)]
    ds = PreferenceDataset(out)
    assert {(s.chosen, s.rejected) for s in ds} == {("intact", "changed")}
    assert sorted(s.meta["magnitude"] for s in ds) == [2, 2, 2, 4, 4, 4] and len(MagnitudeFilter(ds, [4])) == 3
    assert ds[0].prompt[-1]["role"] == "user" and ds[0].meta["chosen_source"] == "self"

    calls.clear()  # resumed: only the chosen answers are regenerated
    assert answer_pairs(generate, samples, settings, out, progress=False)["pairs"] == 6 and calls == [(6, False)]
    status = out.with_name("pairs.jsonl.status.json")
    state = json.loads(status.read_text())
    state["passes"] = ["reverse_m4"]  # as if the run stopped before the m2 pass was recorded
    status.write_text(json.dumps(state))
    calls.clear()
    assert answer_pairs(generate, samples, settings, out, progress=False)["pairs"] == 6
    assert calls == [(6, False), (6, True)]  # the m2 rows were dropped and written again, not duplicated

    other = AnswerPairSettings(magnitudes=[4], perturbations=["reverse"])
    with pytest.raises(ValueError, match="other settings or questions.*--fresh"):  # nothing is overwritten
        answer_pairs(generate, samples, other, out, progress=False)
    assert len(PreferenceDataset(out)) == 6
    assert answer_pairs(generate, samples, other, out, progress=False, fresh=True)["pairs"] == 3

    truth = AnswerPairSettings(magnitudes=[4], perturbations=["reverse"], chosen="truth")
    counts = answer_pairs(generate, samples, truth, tmp_path / "truth.jsonl", progress=False)
    assert counts["pairs"] == 6  # every perturbed answer differs from the annotated one
    assert {s.chosen for s in PreferenceDataset(tmp_path / "truth.jsonl")} == {"the red circle"}
    with pytest.raises(ValueError, match="prefgen_answers.chosen"):
        AnswerPairSettings(chosen="best").check()
    with pytest.raises(ValueError, match="prefgen_answers.perturbations"):
        AnswerPairSettings(perturbations=["drop"]).check()


def test_cli_questions_on_real_videos_with_a_tiny_checkpoint(small_set: Manifest, tokenizer, tmp_path: Path):
    from vidtempo.cli import prefgen as cli
    from vidtempo.data.datasets import PreferenceDataset
    from vidtempo.models.build import build_video_llm
    from vidtempo.models.checkpoint import save_pretrained

    torch.manual_seed(0)
    ckpt = tmp_path / "ckpt"
    save_pretrained(build_video_llm(NODE).eval(), ckpt, model_config=NODE, tokenizer=tokenizer)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "data:\n  collator: {num_frames: 8, frame_size: 32, video_position: after_text,\n"
        "             targets: {frame_targets: {_target_: synth_frame_slots}}}\n"
        f"prefgen_answers:\n  data: {{_target_: synth, root: {small_set.root}, split: train, tasks: [order],"
        " mcq_answers: text}\n  magnitudes: [4, 2]\n  chosen: truth\n  max_new_tokens: 4\n"
    )
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    out = tmp_path / "pairs.jsonl"
    argv = [str(recipe), "--checkpoint", str(ckpt), "--questions", "--out", str(out), "--no-progress"]
    assert cli.run(parser.parse_args(argv)) == 0
    ds = PreferenceDataset(out)
    n = len(small_set.splits["train"])
    assert 0 < len(ds) <= 2 * 2 * n  # 2 perturbations x 2 magnitudes x one order question per video
    assert all(s.chosen.startswith("the ") and s.rejected != s.chosen for s in ds)  # the annotated text answer
    assert all(Path(s.video).is_file() for s in ds)
    with pytest.raises(Exception, match="prefgen_answers.data"):
        recipe.write_text("prefgen_answers: {magnitudes: [4]}\n")
        cli.run(parser.parse_args(argv))

"""Bad inputs end in one line naming the file, the key or the record, and what was expected (issue 28, items
8, 9, 12 and 14): wrong recipe types and values, empty annotation files, corrupt checkpoints, an audio
mismatch at ``infer``; and the own-data recipe of docs/data.md validates and trains."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from vidtempo.cli.main import UserError, main

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "recipes/tiny/sft_pool.yaml")
AV = str(ROOT / "recipes/tiny/synth_av.yaml")
DEBUG_HINT = "(run with --debug for the traceback)"


def _error_line(capsys: pytest.CaptureFixture) -> str:
    """The one ``error:`` line of stderr (and the hint after it)."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == DEBUG_HINT and lines[-2] == errors[0], lines
    return errors[0]


# ---- item 8: typed validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recipe", "override", "key", "expected"),
    [
        (TINY, "trainer.max_steps=ten", "trainer.max_steps", "expected int, got str 'ten'"),
        (TINY, "data.batch_size=2.5", "data.batch_size", "expected int, got float 2.5"),
        (TINY, "data.batch_size=0", "data.batch_size", "expected int >= 1, got 0"),
        (TINY, "data.max_skip_fraction=1.5", "data.max_skip_fraction", "in [0.0, 1.0]"),
        (TINY, "+data.shuffle=yes please", "data.shuffle", "expected bool"),
        (TINY, "optim.scheduler=cosin", "optim.scheduler", "Did you mean cosine? Valid values: cosine, linear"),
        (TINY, "+optim.name=adam", "optim.name", "Valid values: adamw, sgd"),
        (TINY, "trainer.precision=33", "trainer.precision", "'32-true'"),
        (TINY, "trainer.log_every_n_steps=often", "trainer.log_every_n_steps", "expected int or None"),
        (TINY, "data.collator.backend=pyavv", "data.collator.backend", "Valid decoder aliases: decord, pyav"),
        (TINY, "data.collator.num_frames=eight", "data.collator.num_frames", "expected int or None"),
        (TINY, "+data.overlong=trunc", "data.overlong", "Did you mean truncate?"),
        (AV, "data.collator.targets.frame_tags._target_=event_tagz", "data.collator.targets.frame_tags._target_",
         "unknown target_builder 'event_tagz'"),
        (AV, "objective.aux.tag._target_=frame_tagz", "objective.aux.tag._target_", "unknown aux_loss"),
    ],
)
def test_validate_rejects_wrong_types_values_and_aliases(recipe, override, key, expected, capsys):
    assert main(["validate", recipe, override]) == 2
    line = _error_line(capsys)
    assert f"recipe {recipe}" in line and f"key '{key}'" in line and expected in line, line


def test_validate_accepts_the_valid_values(capsys):
    good = ["trainer.precision=bf16-mixed", "trainer.max_steps=7", "optim.scheduler=wsd", "+data.overlong=skip",
            "data.collator.backend=vidtempo.data.video.PyAVDecoder", "data.max_skip_fraction=0"]  # fmt: skip
    assert main(["validate", TINY, *good]) == 0, capsys.readouterr().err


# ---- item 14: the own-data recipe of docs/data.md --------------------------------------------------------


def own_data_recipe(tmp_path: Path, records: list[dict] | str, name: str = "train.jsonl") -> Path:
    """docs/data.md's own-data recipe, written to ``tmp_path`` with its paths pointing at tiny test data."""
    from vidtempo.data.testing import make_test_video

    text = (ROOT / "docs/data.md").read_text()
    block = re.search(r"<!-- own-data-recipe.*?-->\n```yaml\n(.*?)```", text, re.S)
    assert block, "docs/data.md lost its own-data recipe"
    videos = tmp_path / "videos"
    videos.mkdir(exist_ok=True)
    for i in range(3):
        make_test_video(videos / f"clip{i}.mp4", duration=2.0, fps=8, size=(32, 32), audio=False)
    train = tmp_path / name
    if isinstance(records, str):
        train.write_text(records)
    else:
        train.write_text("".join(json.dumps(r) + "\n" for r in records))
    recipe = block.group(1).replace("/data/my_videos/train.jsonl", str(train))
    recipe = recipe.replace("/data/my_videos/videos", str(videos)).replace("runs/${name}", str(tmp_path / "run"))
    assert str(train) in recipe and str(videos) in recipe
    path = tmp_path / "my_videos.yaml"
    path.write_text(recipe)
    return path


def _records(n: int = 3) -> list[dict]:
    return [{"id": f"clip{i}-q", "video": f"clip{i}.mp4", "conversations": [
        {"from": "human", "value": "<video>\nWhen does the square move?"},
        {"from": "gpt", "value": f"{0.5 + i * 0.2:.1f} - 1.5 seconds"}]} for i in range(n)]  # fmt: skip


def test_the_own_data_recipe_validates_and_trains(tmp_path, capsys):
    recipe = own_data_recipe(tmp_path, _records())
    assert main(["validate", str(recipe)]) == 0, capsys.readouterr().err
    assert main(["train", str(recipe), "trainer.max_steps=2"]) == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "0_sft" / "final" / "model.safetensors").is_file()


# ---- items 9 and 12: annotation files ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [("train.jsonl", "", "no records"), ("train.json", "", "empty file"), ("train.json", "[]", "no records")],
    ids=["empty-jsonl", "empty-json", "empty-list"],
)
def test_an_empty_annotation_file_is_one_line_naming_it(tmp_path, name, content, expected, capsys):
    recipe = own_data_recipe(tmp_path, content, name)
    assert main(["train", str(recipe)]) == 2
    line = _error_line(capsys)
    assert str(tmp_path / name) in line and expected in line


def test_a_record_without_an_answer_is_rejected_naming_file_and_id(tmp_path, capsys):
    records = _records()
    records[1]["conversations"] = records[1]["conversations"][:1]
    recipe = own_data_recipe(tmp_path, records)
    assert main(["train", str(recipe)]) == 2
    line = _error_line(capsys)
    assert str(tmp_path / "train.jsonl") in line and "id 'clip1-q'" in line and "no assistant turn" in line


def test_debug_shows_the_traceback(tmp_path):
    from vidtempo.data.errors import AnnotationError

    recipe = own_data_recipe(tmp_path, "[]", "train.json")
    with pytest.raises(AnnotationError, match="no records"):
        main(["--debug", "train", str(recipe)])


def test_an_internal_error_names_its_type(monkeypatch, capsys):
    import vidtempo.cli.config_cmds as config_cmds

    def broken(args):
        raise KeyError("boom")

    monkeypatch.setattr(config_cmds, "run", broken)
    assert main(["validate", TINY]) == 2
    assert _error_line(capsys) == "error: KeyError: 'boom'"


# ---- item 12: corrupt checkpoints --------------------------------------------------------------------------


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    from vidtempo.models.build import build_video_llm
    from vidtempo.models.checkpoint import save_pretrained
    from vidtempo.models.tokenizers import tiny_tokenizer

    node = {"_target_": "vidtempo.models.VideoLLM", "vision_encoder": {"_target_": "tiny"},
            "compressor": {"_target_": "pool", "in_dim": 32, "stride": 2}, "llm": {"_target_": "tiny"}}  # fmt: skip
    return save_pretrained(build_video_llm(node), tmp_path / "0_sft" / "final", model_config=node,
                           tokenizer=tiny_tokenizer())  # fmt: skip


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    ("damage", "file", "expected"),
    [
        (lambda d: _truncate(d / "model.safetensors"), "model.safetensors", "damaged or truncated"),
        (lambda d: (d / "vidtempo.json").write_text(""), "vidtempo.json", "empty file; expected the JSON object"),
        (lambda d: (d / "vidtempo.json").write_text("{oops"), "vidtempo.json", "not valid JSON"),
        (lambda d: (d / "vidtempo.json").write_text("[1, 2]"), "vidtempo.json", "no 'model' node"),
        (lambda d: (d / "vidtempo.json").unlink(), "vidtempo.json", "file not found"),
        (lambda d: (d / "tokenizer.json").unlink(), "", "no tokenizer files; expected tokenizer_config.json"),
    ],
    ids=["truncated-weights", "empty-config", "garbage-config", "list-config", "no-config", "no-tokenizer"],
)
@pytest.mark.parametrize("command", ["infer", "eval"])
def test_a_corrupt_checkpoint_is_one_line_naming_the_file(checkpoint, damage, file, expected, command, capsys):
    damage(checkpoint)
    argv = [command, TINY, "--checkpoint", str(checkpoint)]
    argv += ["--video", "v.mp4", "--prompt", "When?"] if command == "infer" else ["--benchmark", "synth"]
    assert main(argv) == 2
    line = _error_line(capsys)
    assert f"{checkpoint / file}".rstrip("/") in line and expected in line, line


def test_eval_help_gives_the_stage_folder(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    assert "runs/NAME/0_sft/final" in capsys.readouterr().out


# ---- item 9: audio mismatch at infer -----------------------------------------------------------------------


def test_infer_refuses_an_audio_model_without_audio_in_the_recipe():
    from vidtempo.cli.infer import check_audio

    model = SimpleNamespace(capabilities=frozenset({"audio"}), audio_encoder=SimpleNamespace(n_mels=40))
    with pytest.raises(UserError, match="ckpt: the model reads audio .* data.collator.audio is false"):
        check_audio(model, {"audio": False}, "ckpt")
    with pytest.raises(UserError, match="reads 40 mel bins but the recipe's data.collator.audio_mel is 80"):
        check_audio(model, {"audio": True, "audio_mel": 80}, "ckpt")
    check_audio(model, {"audio": True, "audio_mel": 40}, "ckpt")


def test_infer_warns_when_the_recipe_decodes_audio_for_a_model_without_it(checkpoint, tmp_path, capsys, caplog):
    from vidtempo.data.testing import make_test_video

    video = make_test_video(tmp_path / "v.mp4", duration=2.0, fps=8, size=(32, 32))
    argv = ["infer", TINY, "+data.collator.audio=true", "--checkpoint", str(checkpoint), "--video", str(video),
            "--prompt", "When?", "--max-new-tokens", "2"]  # fmt: skip
    with caplog.at_level("WARNING", logger="vidtempo"):
        assert main(argv) == 0, capsys.readouterr().err
    assert any("no audio encoder" in r.getMessage() and str(checkpoint) in r.getMessage() for r in caplog.records)


def test_an_error_from_a_loader_worker_is_its_original_line():
    from vidtempo.cli.main import error_line
    from vidtempo.data.overlong import OverlongError

    wrapped = OverlongError("Caught OverlongError in DataLoader worker process 0.\nOriginal Traceback (most recent "
                            "call last):\n  File \"x.py\", line 1, in f\nvidtempo.data.overlong.OverlongError: "
                            "record 'a' of t.jsonl: 90 text + 8 video tokens exceed model.max_length=64")  # fmt: skip
    assert error_line(wrapped) == "record 'a' of t.jsonl: 90 text + 8 video tokens exceed model.max_length=64"

"""The data formats people have (#30 item 5): LLaVA image records, dataset mixtures, ms-swift / TEMPLE preference
files, time values rendered by the timestamp codecs; and the "your own data" recipes of docs/data.md."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from vidtempo.cli.main import main
from vidtempo.data.collate import VideoCollator
from vidtempo.data.datasets import ActivityNetCaptionsDataset, CharadesSTADataset, ConversationDataset
from vidtempo.data.errors import AnnotationError
from vidtempo.data.mixture import MixtureDataset, split_counts
from vidtempo.data.preference_collate import PreferenceCollator
from vidtempo.data.resumable import EpochRandomSampler, ResumableDataLoader
from vidtempo.data.samples import ConversationSample, PreferenceSample
from vidtempo.data.swift import SwiftPreferenceDataset
from vidtempo.data.testing import make_test_video
from vidtempo.data.timestamps import CODECS
from vidtempo.data.video import load_clip
from vidtempo.models.interfaces import VIDEO_TOKEN_INDEX
from vidtempo.models.tokenizers import tiny_tokenizer
from vidtempo.training.skips import SkipTracker

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _image(path: Path, size=(64, 48), left=(255, 0, 0), right=(0, 0, 255)) -> Path:
    """A real image file: left half one colour, right half another (JPEG or PNG by suffix)."""
    img = Image.new("RGB", size, left)
    img.paste(Image.new("RGB", (size[0] // 2, size[1]), right), (size[0] // 2, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, quality=95) if path.suffix == ".jpg" else img.save(path)
    return path


def _llava_image_record(i: int, image: str) -> dict:
    return {"id": f"img{i}", "image": image, "conversations": [
        {"from": "human", "value": "<image>\nWhat colours are in the image?"},
        {"from": "gpt", "value": "Red on the left, blue on the right."}]}  # fmt: skip


def _video_record(i: int) -> dict:
    return {"id": f"clip{i}-q", "video": f"clip{i}.mp4", "conversations": [
        {"from": "human", "value": "<video>\nWhen does the square move?"},
        {"from": "gpt", "value": f"{0.5 + i * 0.2:.1f} - 1.5 seconds"}]}  # fmt: skip


def _write(path: Path, records: list, jsonl: bool | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if jsonl if jsonl is not None else path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records, indent=4))  # TEMPLE's convert_to_swift writes indent=4
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    for i in range(3):
        make_test_video(root / f"clip{i}.mp4", duration=2.0, fps=8, size=(32, 32), audio=False)
    return root


# ---- 1. LLaVA image records -----------------------------------------------------------------------------------


def test_an_image_decodes_as_one_frame_resized_like_video_frames(tmp_path):
    path = _image(tmp_path / "x.jpg")
    clip = load_clip(path, num_frames=8, size=(32, 32))
    assert tuple(clip.frames.shape) == (1, 32, 32, 3) and clip.timestamps.tolist() == [0.0]
    left, right = clip.frames[0, 16, 4].tolist(), clip.frames[0, 16, 28].tolist()
    assert left[0] > 200 and left[2] < 60 and right[2] > 200 and right[0] < 60  # red left, blue right
    assert tuple(load_clip(_image(tmp_path / "y.png"), size=24).frames.shape) == (1, 24, 32, 3)  # short side


def test_llava_image_records_become_one_frame_videos_not_text(tmp_path, videos, tok):
    images = tmp_path / "images"
    _image(images / "coco" / "a.jpg")
    path = _write(tmp_path / "train.json", [_llava_image_record(0, "coco/a.jpg"), _video_record(1)])
    ds = ConversationDataset(path, video_root=images, require_video=True, require_answer=True)
    assert ds[0].video == str(images / "coco" / "a.jpg") and ds[0].meta["media"] == "image"
    assert ds[0].messages[0]["content"].startswith("<video>\n")
    ds[1].video = str(videos / "clip1.mp4")
    batch = VideoCollator(tok, num_frames=4, frame_size=32)([ds[0], ds[1]])
    assert not batch.skipped and tuple(batch.frames.shape) == (2, 4, 3, 32, 32)
    assert batch.frame_mask.tolist() == [[True, False, False, False], [True] * 4]  # the image: one real frame
    assert batch.timestamps[0, 0].item() == 0.0
    assert (batch.input_ids == VIDEO_TOKEN_INDEX).sum(dim=1).tolist() == [1, 1]  # the image is spliced in
    assert batch.frames[0, 0, 0, 16, 4] > 0.8 and batch.frames[0, 0, 2, 16, 28] > 0.8  # red / blue pixels


def test_messages_form_images_and_bad_image_fields(tmp_path):
    rec = {"messages": [{"role": "user", "content": "<image>What is it?"}, {"role": "assistant", "content": "A cat."}],
           "images": ["cat.png"]}  # fmt: skip
    ds = ConversationDataset(_write(tmp_path / "a.jsonl", [rec]), video_root="/imgs")
    assert ds[0].video == "/imgs/cat.png" and ds[0].meta["media"] == "image"
    both = {**_llava_image_record(0, "a.jpg"), "video": "a.mp4"}
    with pytest.raises(AnnotationError, match=r"b.json: record 0: field 'image': a record holds one video or image"):
        ConversationDataset(_write(tmp_path / "b.json", [both]))
    lost = {k: v for k, v in _llava_image_record(0, "a.jpg").items() if k != "image"}
    lost["picture"] = "a.jpg"  # a misspelt key: the placeholder has nothing to show, so the load fails
    with pytest.raises(AnnotationError, match=r"d.json: record 0 \(id 'img0'\): field 'video': the text has a "):
        ConversationDataset(_write(tmp_path / "d.json", [lost]))
    multi = _llava_image_record(0, ["a.jpg", "b.jpg"])
    with pytest.raises(AnnotationError, match=r"c.json: record 0: field 'image': expected one path"):
        ConversationDataset(_write(tmp_path / "c.json", [multi]))


def test_a_missing_image_is_a_counted_skip_logged_in_one_line(tmp_path, tok, caplog):
    images = tmp_path / "images"
    _image(images / "a.jpg")
    path = _write(tmp_path / "train.json", [_llava_image_record(0, "a.jpg"), _llava_image_record(1, "gone.jpg")])
    ds = ConversationDataset(path, video_root=images)
    batch = VideoCollator(tok, num_frames=4, frame_size=32)(list(ds))
    assert len(batch) == 1 and batch.ids == ["img0"]
    assert [(s.id, s.path, s.reason) for s in batch.skipped] == [("img1", str(images / "gone.jpg"),
                                                                    "image file not found")]  # fmt: skip
    tracker = SkipTracker(max_fraction=0.5, min_samples=1)
    with caplog.at_level(logging.WARNING):
        tracker.update(batch)
    assert (tracker.seen, tracker.skipped) == (2, 1)
    assert f"train: skipped sample img1 ({images / 'gone.jpg'}): image file not found" in caplog.messages
    (images / "bad.jpg").write_bytes(b"not an image")
    bad = VideoCollator(tok, num_frames=4, frame_size=32)([ConversationSample(str(images / "bad.jpg"), [], id="b")])
    assert bad.skipped[0].reason.startswith("not a readable image")


# ---- 2. mixtures ---------------------------------------------------------------------------------------------


def test_split_counts_and_default_epoch_length():
    assert split_counts(10, [0.5, 0.3, 0.2]) == [5, 3, 2] and split_counts(7, [1, 1]) == [4, 3]
    mix = MixtureDataset([list(range(100)), list(range(1000, 1010))], weights=[0.5, 0.5])
    assert len(mix) == 200 and mix.counts == [100, 100]  # every child at least once through at its weight
    seen = Counter(mix[i] for i in range(len(mix)))
    assert all(seen[i] == 1 for i in range(100)) and all(seen[1000 + i] == 10 for i in range(10))  # repeated
    with pytest.raises(ValueError, match="2 weights for 3 datasets"):
        MixtureDataset([[1], [2], [3]], weights=[1, 2])
    with pytest.raises(ValueError, match=r"weights\[1\] must be a positive number"):
        MixtureDataset([[1], [2]], weights=[1, 0])
    pair = PreferenceSample(None, [{"role": "user", "content": "q"}], "a", "b")
    with pytest.raises(ValueError, match="preference datasets cannot be mixed"):
        MixtureDataset([[pair], [ConversationSample(None, [])]])


def _real_children(annotations: Path):
    sta = CharadesSTADataset(annotations / "charades_sta" / "charades_sta_train.txt", video_root="/v")
    anet = ActivityNetCaptionsDataset(annotations / "activitynet_captions" / "val_1.json", video_root="/a")
    return sta, anet


def test_mixture_of_real_annotation_sets_draws_in_proportion_and_reproducibly(annotations):
    sta, anet = _real_children(annotations)
    mix = MixtureDataset([sta, anet], weights=[0.7, 0.3], length=2000, seed=3, names=["charades", "anet"])
    assert mix.report() == {"charades": 1400, "anet": 600}
    # what one epoch of the training loader sees, and its first quarter (shuffled: proportions hold there too)
    order = list(EpochRandomSampler(len(mix), seed=0))
    epoch = Counter(mix.source(i) for i in order)
    assert epoch == {"charades": 1400, "anet": 600}
    quarter = Counter(mix.source(i) for i in order[:500])
    assert abs(quarter["charades"] / 500 - 0.7) < 0.06
    items = [mix[i] for i in range(len(mix))]
    assert all(isinstance(s, ConversationSample) for s in items)  # grounding sets in their conversation form
    ids = [s.id for s in items]
    assert len(set(ids)) == 2000  # fewer draws than samples: distinct samples of each set
    again = MixtureDataset(_real_children(annotations), weights=[0.7, 0.3], length=2000, seed=3)
    assert [again[i].id for i in range(2000)] == ids
    other = MixtureDataset([sta, anet], weights=[0.7, 0.3], length=2000, seed=4)
    assert [other[i].id for i in range(2000)] != ids


def test_validate_names_a_bad_mixture_child_by_its_key(tmp_path, capsys):
    recipe = tmp_path / "mix.yaml"
    recipe.write_text(format_recipe("mixture").replace("_target_: charades_sta", "_target_: charades_stb"))
    assert main(["validate", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "key 'data.train.datasets.2._target_': unknown dataset 'charades_stb'. Did you mean 'charades_sta'" in err


def test_a_mixture_resumes_mid_epoch_like_any_dataset():
    mix = MixtureDataset([[f"a{i}" for i in range(30)], [f"b{i}" for i in range(5)]], weights=[2, 1], length=24)

    def loader():
        return ResumableDataLoader(mix, batch_size=4, sampler=EpochRandomSampler(len(mix), seed=1),
                                   collate_fn=list)  # fmt: skip

    full = list(loader())
    first = loader()
    it = iter(first)
    next(it), next(it)
    resumed = loader()
    resumed.load_state_dict(first.state_dict())
    assert list(resumed) == full[2:]


# ---- 3. ms-swift / TEMPLE preference files --------------------------------------------------------------------


def _temple_record(video: str, n: int) -> dict:
    """One record exactly as TEMPLE's convert_to_swift.py writes it."""
    chosen = f"The video opens with a red square, then a blue circle appears ({n})."
    return {"messages": [{"role": "user", "content": "<video>Describe the video in detail."},
                         {"role": "assistant", "content": chosen}],
            "rejected_response": f"The video opens with a blue circle, then a red square appears ({n}).",
            "videos": [video]}  # fmt: skip


def _temple_files(root: Path, videos: Path, levels=(16, 8, 4, 2)) -> list[Path]:
    return [_write(root / f"mymodel_i0_r{m}.json", [_temple_record(str(videos / f"clip{k % 3}.mp4"), k)
                                                    for k in range(4)]) for m in levels]  # fmt: skip


def test_temple_per_magnitude_files_load_as_pairs_with_their_level(tmp_path, videos, tok):
    from vidtempo.training.curriculum import MagnitudeFilter

    ds = SwiftPreferenceDataset(_temple_files(tmp_path / "swift_data", videos))
    assert len(ds) == 16 and Counter(p.meta["magnitude"] for p in ds) == {16: 4, 8: 4, 4: 4, 2: 4}
    first = ds[0]
    assert first.id == "mymodel_i0_r16#0" and first.video == str(videos / "clip0.mp4")
    assert first.prompt == [{"role": "user", "content": "<video>Describe the video in detail."}]
    assert first.chosen.startswith("The video opens with a red") and first.rejected.startswith("The video opens "
                                                                                                "with a blue")  # fmt: skip
    assert len(MagnitudeFilter(ds, [8])) == 4
    batch = PreferenceCollator(tok, num_frames=4, frame_size=32)([ds[0], ds[5]])
    assert len(batch) == 2 and not batch.skipped and tuple(batch.chosen.frames.shape) == (2, 4, 3, 32, 32)
    assert batch.input_side.tolist() == [False, False]


def test_ms_swift_rejected_messages_rejected_videos_and_images(tmp_path, videos):
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "<video>Order?"}]
    records = [
        {"messages": [*prompt, {"role": "assistant", "content": "red then blue"}],
         "rejected_messages": [*prompt, {"role": "assistant", "content": "blue then red"}],
         "videos": ["clip0.mp4"], "rejected_videos": ["clip1.mp4"], "id": "p0"},
        {"messages": [{"role": "user", "content": "<image>Colour?"}, {"role": "assistant", "content": "Red."}],
         "rejected_response": "Green.", "images": ["a.png"]},
    ]  # fmt: skip
    ds = SwiftPreferenceDataset(_write(tmp_path / "pairs.jsonl", records), video_root=videos)
    assert ds[0].id == "p0" and ds[0].rejected == "blue then red" and ds[0].prompt[0]["role"] == "system"
    assert ds[0].rejected_video == str(videos / "clip1.mp4") and "magnitude" not in ds[0].meta
    assert ds[1].video == str(videos / "a.png") and ds[1].rejected == "Green."
    assert SwiftPreferenceDataset(tmp_path / "pairs.jsonl", magnitude=4)[1].meta["magnitude"] == 4


@pytest.mark.parametrize(
    ("record", "field", "expected"),
    [
        ({"messages": [{"role": "user", "content": "q"}], "rejected_response": "b"}, "messages", "the last turn"),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
         "rejected_response", "missing"),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
          "rejected_response": "a", "videos": ["v.mp4"]}, "rejected_response", "not a preference"),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
          "rejected_messages": [{"role": "user", "content": "other"}, {"role": "assistant", "content": "b"}]},
         "rejected_messages", "same prompt"),
        ({"prompt": "q", "chosen": "a", "rejected": "b"}, "messages", "missing"),
    ],
    ids=["no-answer", "no-rejected", "identical", "other-prompt", "not-swift"],
)
def test_bad_swift_records_name_file_record_and_field(tmp_path, record, field, expected):
    with pytest.raises(AnnotationError, match=rf"x_r2.json: record 0: field '{field}': .*{expected}"):
        SwiftPreferenceDataset(_write(tmp_path / "x_r2.json", [record]))


# ---- 4. time values through the codecs ------------------------------------------------------------------------


def _vtimellm_record() -> dict:
    return {"id": "v_abc_0", "video": "v_abc.mp4",
            "conversations": [{"from": "human", "value": "<video>\nWhat happens from <s1> to <e1>?"},
                              {"from": "gpt", "value": "From <s0> to <e0>, a woman counts money."}],
            "meta": {"duration": 54.2, "split": [129.8, 184.0],
                     "token": {"<s0>": 0.0, "<e0>": 9.4, "<s1>": 49.4, "<e1>": 53.2}}}  # fmt: skip


@pytest.mark.parametrize(
    ("codec", "question", "answer"),
    [
        ("relative", "What happens from 91 to 98?", "From 00 to 17, a woman counts money."),
        # meta.token counts from the split's start (129.8 s); the absolute codecs write times in the file
        ("seconds", "What happens from 179.2 to 183.0?", "From 129.8 to 139.2, a woman counts money."),
        ("frame_time", "What happens from 179.2s to 183.0s?", "From 129.8s to 139.2s, a woman counts money."),
    ],
)
def test_vtimellm_placeholders_render_through_each_codec(tmp_path, codec, question, answer):
    ds = ConversationDataset(_write(tmp_path / "stage2.json", [_vtimellm_record()]), answer_time_format=codec)
    s = ds[0]
    assert s.messages[0]["content"] == f"<video>\n{question}" and s.messages[1]["content"] == answer
    assert (s.start, s.end) == (129.8, 184.0)  # meta.split: the clip the times refer to


def test_seconds_intervals_are_rewritten_and_other_numbers_are_not(tmp_path):
    rec = {"video": "a.mp4", "duration": 54.2, "conversations": [
        {"from": "system", "value": "Answer from 1 to 2 seconds style."},
        {"from": "human", "value": "<video>\nBetween 2 and 3 people walk in. When?"},
        {"from": "gpt", "value": "It happens from 3.2 to 7.5 seconds, and again 10s - 12.5 s."}]}  # fmt: skip
    path = _write(tmp_path / "tvg.jsonl", [rec])
    rel = ConversationDataset(path, answer_time_format="relative")[0].messages
    assert rel[0]["content"] == "Answer from 1 to 2 seconds style."  # system turns are kept
    assert rel[1]["content"] == "<video>\nBetween 2 and 3 people walk in. When?"
    assert rel[2]["content"] == "It happens from 06 to 14, and again from 18 to 23."
    sec = ConversationDataset(path, answer_time_format="seconds")[0].messages[2]["content"]
    assert sec == "It happens 3.2 - 7.5 seconds, and again 10.0 - 12.5 seconds."
    assert ConversationDataset(path)[0].messages[2]["content"] == rec["conversations"][2]["value"]  # option off


def test_time_errors_name_the_record(tmp_path):
    rec = _vtimellm_record()
    with pytest.raises(AnnotationError, match=r"record 0 \(id 'v_abc_0'\): field 'conversations': time placeholders"):
        ConversationDataset(_write(tmp_path / "a.json", [rec]))
    del rec["meta"]["token"]["<e1>"]
    with pytest.raises(AnnotationError, match=r"field 'turn 0': placeholder <e1> has no time in meta.token"):
        ConversationDataset(_write(tmp_path / "b.json", [rec]), answer_time_format="seconds")
    rec = {"video": "a.mp4", "conversations": [{"from": "human", "value": "<video>\nWhen?"},
                                               {"from": "gpt", "value": "From 1.0 to 2.0 seconds."}]}  # fmt: skip
    with pytest.raises(AnnotationError, match=r"field 'meta.duration': .*needs the video duration"):
        ConversationDataset(_write(tmp_path / "c.json", [rec]), answer_time_format="relative")


def test_rendered_answers_equal_the_grounding_datasets_codec_on_real_charades_sta(annotations, tmp_path):
    """TimeChat-style answers written from the real Charades-STA test file, rewritten to each codec, equal what
    CharadesSTADataset renders for the same query with that codec."""
    root = annotations / "charades_sta"
    for codec in ("relative", "seconds", "llava_video"):
        sta = CharadesSTADataset(root / "charades_sta_test.txt", codec=codec, durations=root / "Charades_v1_test.csv")
        picked = [s for s in list(sta)[:200] if s.duration and s.end <= s.duration][:50]
        records = [{"id": s.id, "video": s.video, "duration": s.duration, "conversations": [
            {"from": "human", "value": f"<video>\nWhen does '{s.query}' happen?"},
            {"from": "gpt", "value": f"The event happens from {s.start} to {s.end} seconds."}]} for s in picked]  # fmt: skip
        ds = ConversationDataset(_write(tmp_path / f"tvg_{codec}.jsonl", records), answer_time_format=codec)
        for s, sample in zip(picked, ds):
            expected = CODECS[codec].render(s.start, s.end, s.duration)
            assert sample.messages[1]["content"] == f"The event happens {expected}."
            assert CODECS[codec].parse(sample.messages[1]["content"], s.duration) == pytest.approx(
                CODECS[codec].parse(sta.conversation(sta.samples.index(s)).messages[1]["content"], s.duration))


# ---- the "your own data" recipes of docs/data.md ----------------------------------------------------------------


def format_recipe(name: str) -> str:
    text = (ROOT / "docs" / "data.md").read_text()
    block = re.search(rf"<!-- format-recipe: {name} .*?-->\n```yaml\n(.*?)```", text, re.S)
    assert block, f"docs/data.md lost its '{name}' recipe"
    return block.group(1)


def _recipe(tmp_path: Path, name: str, paths: dict[str, Path]) -> Path:
    text = format_recipe(name).replace("runs/${name}", str(tmp_path / "run"))
    for placeholder, real in paths.items():
        assert placeholder in text, placeholder
        text = text.replace(placeholder, str(real))
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def _image_data(root: Path, n: int = 4, missing: int = 0) -> Path:
    for i in range(n):
        _image(root / "images" / f"img{i}.jpg", size=(48 + 8 * i, 40), left=(40 * i, 200, 0))
    records = [_llava_image_record(i, f"img{i}.jpg") for i in range(n)]
    records += [_llava_image_record(n + i, f"gone{i}.jpg") for i in range(missing)]
    return _write(root / "train.json", records)


def test_the_images_recipe_trains_tdc_on_one_frame_videos_and_counts_missing_images(tmp_path, capsys):
    train = _image_data(tmp_path / "my_images", n=4, missing=1)
    recipe = _recipe(tmp_path, "images", {"/data/my_images/train.json": train,
                                          "/data/my_images/images": tmp_path / "my_images" / "images"})
    assert main(["validate", str(recipe)]) == 0, capsys.readouterr().err
    assert main(["train", str(recipe), "trainer.max_steps=3", "data.max_skip_fraction=0.5"]) == 0, \
        capsys.readouterr().err
    assert (tmp_path / "run" / "0_sft" / "final" / "model.safetensors").is_file()


def test_the_mixture_recipe_trains_on_videos_images_and_grounding(tmp_path, videos, capsys):
    my_videos = _write(tmp_path / "my_videos" / "train.jsonl", [_video_record(i) for i in range(3)])
    images = _image_data(tmp_path / "my_images", n=2)
    sta = tmp_path / "charades" / "charades_sta_train.txt"
    sta.parent.mkdir()
    sta.write_text("clip0 0.2 1.0##person opens the door.\nclip1 0.5 1.8##person sits down.\n")
    recipe = _recipe(tmp_path, "mixture", {
        "/data/my_videos/train.jsonl": my_videos, "/data/my_videos/videos": videos,
        "/data/my_images/train.json": images, "/data/my_images/images": tmp_path / "my_images" / "images",
        "/data/charades/charades_sta_train.txt": sta, "/data/charades/videos": videos})  # fmt: skip
    assert main(["validate", str(recipe)]) == 0, capsys.readouterr().err
    assert main(["train", str(recipe), "trainer.max_steps=3"]) == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "0_sft" / "final" / "model.safetensors").is_file()


def test_the_swift_recipe_runs_temples_curriculum_on_its_files(tmp_path, videos, capsys):
    files = _temple_files(tmp_path / "swift_data", videos)
    paths = {f"/data/swift_data/mymodel_i0_r{m}.json": f for m, f in zip((16, 8, 4, 2), files)}
    recipe = _recipe(tmp_path, "swift", {**paths, "/data/swift_data/videos": videos})
    assert main(["dpo", str(recipe), "--curriculum", "--dry-run"]) == 0, capsys.readouterr().err
    plan = capsys.readouterr().out
    assert all(f"dpo_m{m}" in plan for m in (16, 8, 4, 2)), plan
    assert main(["dpo", str(recipe), "--curriculum", "curriculum.per_level=1"]) == 0, capsys.readouterr().err
    done = sorted(p.parent.name for p in (tmp_path / "run").glob("*/final"))
    assert done == ["0_dpo_m16", "1_dpo_m8", "2_dpo_m4", "3_dpo_m2"], done


def test_the_times_recipe_trains_vtimellm_and_timechat_style_data_in_one_format(tmp_path, videos, capsys):
    vt = _vtimellm_record()
    vt.update(video="clip0.mp4", meta={"duration": 2.0, "token": {"<s0>": 0.2, "<e0>": 1.1, "<s1>": 1.0,
                                                                  "<e1>": 1.5}})  # fmt: skip
    stage2 = _write(tmp_path / "vtimellm" / "stage2.json", [vt])
    tvg = _write(tmp_path / "timechat" / "charades_tvg.jsonl", [{**_video_record(i), "duration": 2.0, "conversations": [
        {"from": "human", "value": "<video>\nWhen does the square move?"},
        {"from": "gpt", "value": f"From {0.2 * i:.1f} to 1.5 seconds."}]} for i in range(3)])  # fmt: skip
    recipe = _recipe(tmp_path, "times", {
        "/data/vtimellm/stage2.json": stage2, "/data/vtimellm/videos": videos,
        "/data/timechat/charades_tvg.jsonl": tvg, "/data/timechat/videos": videos})  # fmt: skip
    assert main(["validate", str(recipe)]) == 0, capsys.readouterr().err
    assert main(["train", str(recipe), "trainer.max_steps=2"]) == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "0_sft" / "final" / "model.safetensors").is_file()
    answers = [m["content"] for s in ConversationDataset(tvg, answer_time_format="relative") for m in s.messages
               if m["role"] == "assistant"]  # fmt: skip
    assert answers == ["from 00 to 75.", "from 10 to 75.", "from 20 to 75."]


# ---- time tokens: answer_time_format: time_tokens with tokenizer.time_tokens (#30 item 5) -------------------------


def test_time_token_codec_renders_single_tokens_and_parses_bin_centres(tmp_path):
    codec = CODECS["time_tokens"]
    assert codec.render(3.2, 7.5, 54.2) == "from <t_5> to <t_13>"
    assert codec.render(0.0, 54.2, 54.2) == "from <t_0> to <t_99>"  # the end falls in the last bin
    for start, end in [(0.0, 1.0), (3.2, 7.5), (20.05, 53.9)]:
        back = codec.parse(f"It is {codec.render(start, end, 54.2)}.", 54.2)
        assert abs(back[0] - start) <= 54.2 / 200 + 1e-9 and abs(back[1] - end) <= 54.2 / 200 + 1e-9
    assert codec.parse("<t_10> - <t_19>", 50.0) == (5.25, 9.75)
    assert codec.try_parse("from 05 to 13", 50.0) is None
    rec = _vtimellm_record()
    s = ConversationDataset(_write(tmp_path / "a.json", [rec]), answer_time_format="time_tokens")[0]
    assert s.messages[1]["content"] == "From <t_0> to <t_17>, a woman counts money."  # over the 54.2 s split
    rec = {"video": "a.mp4", "conversations": [{"from": "human", "value": "<video>\nWhen?"},
                                               {"from": "gpt", "value": "From 1.0 to 2.0 seconds."}]}  # fmt: skip
    with pytest.raises(AnnotationError, match=r"field 'meta.duration': .*needs a positive video duration"):
        ConversationDataset(_write(tmp_path / "c.json", [rec]), answer_time_format="time_tokens")


def test_tokenizer_time_tokens_are_one_id_each_and_survive_decoding_and_saving(tmp_path):
    from vidtempo.models.tokenizers import load_tokenizer, time_token_ids

    tok = tiny_tokenizer(time_tokens=100)
    assert len(tok) == len(tiny_tokenizer()) + 100
    ids = tok("<t_17>", add_special_tokens=False)["input_ids"]
    assert ids == [time_token_ids(tok)[17]] and len(time_token_ids(tok)) == 100
    text = "from <t_17> to <t_3>."
    assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text
    tok.save_pretrained(str(tmp_path))
    again = load_tokenizer(str(tmp_path))
    assert len(again) == len(tok) and again(text)["input_ids"] == tok(text)["input_ids"]


def test_the_time_tokens_recipe_trains_reloads_with_the_same_logits_and_parses(tmp_path, videos, capsys):
    import torch

    from vidtempo.eval.parsing import parse_interval
    from vidtempo.models.checkpoint import load_pretrained, read_config
    from vidtempo.models.tokenizers import time_token_ids

    tvg = _write(tmp_path / "timechat" / "charades_tvg.jsonl", [{**_video_record(i), "duration": 2.0, "conversations": [
        {"from": "human", "value": "<video>\nWhen does the square move?"},
        {"from": "gpt", "value": f"From {0.2 * i:.1f} to 1.5 seconds."}]} for i in range(3)])  # fmt: skip
    answers = [s.messages[1]["content"] for s in ConversationDataset(tvg, answer_time_format="time_tokens")]
    assert answers == ["from <t_0> to <t_75>.", "from <t_10> to <t_75>.", "from <t_20> to <t_75>."]
    recipe = _recipe(tmp_path, "time_tokens", {"/data/timechat/charades_tvg.jsonl": tvg,
                                               "/data/timechat/videos": videos})  # fmt: skip
    assert main(["validate", str(recipe)]) == 0, capsys.readouterr().err
    assert main(["train", str(recipe), "trainer.max_steps=2"]) == 0, capsys.readouterr().err
    final = tmp_path / "run" / "0_sft" / "final"
    model, tok, config = load_pretrained(final)
    ids = time_token_ids(tok)
    assert len(ids) == 100 and config["model"]["new_token_ids"] == ids == read_config(final)["model"]["new_token_ids"]
    embed = model.llm.get_input_embeddings()
    assert embed.weight.shape[0] == len(tok) == 612
    # the new rows trained (LoRA + peft trainable_token_indices): they moved off their common start
    rows = embed(torch.tensor(ids[:20]))  # (20, H)
    assert not torch.allclose(rows[0], rows[10])
    x = torch.tensor([tok("from <t_10> to <t_75>.")["input_ids"]])
    again, _, _ = load_pretrained(final)
    with torch.no_grad():
        a, b = model.eval().llm(input_ids=x).logits, again.eval().llm(input_ids=x).logits  # (1, L, 612)
    assert a.shape[-1] == 612 and torch.equal(a, b)
    assert parse_interval(answers[1], time_tokens=100, duration=2.0) == (0.21, 1.51)


def test_time_tokens_are_refused_for_a_model_that_cannot_grow_its_vocabulary():
    from vidtempo.config.errors import RecipeError
    from vidtempo.training.build import model_node_for

    native = {"_target_": "vidtempo.models.native.qwen2_5_vl.Qwen25VLVideoModel",
              "llm": {"_target_": "vidtempo.models.native.qwen2_5_vl.tiny_qwen2_5_vl"}}  # fmt: skip
    with pytest.raises(RecipeError, match=r"tokenizer\.time_tokens.*Qwen25VLVideoModel cannot add embedding rows"):
        model_node_for(native, tiny_tokenizer(time_tokens=10), "r.yaml")
    assert model_node_for(native, tiny_tokenizer(), "r.yaml") is native  # no time tokens: unchanged
    video_llm = {"_target_": "vidtempo.models.VideoLLM"}
    assert model_node_for(video_llm, tiny_tokenizer(time_tokens=3), "r.yaml")["new_token_ids"] == [512, 513, 514]


def test_a_frozen_llm_stage_with_time_tokens_says_their_rows_stay_untrained(tmp_path, videos, capsys, caplog):
    tvg = _write(tmp_path / "tvg.jsonl", [{**_video_record(i), "duration": 2.0} for i in range(2)])
    recipe = _recipe(tmp_path, "time_tokens", {"/data/timechat/charades_tvg.jsonl": tvg,
                                               "/data/timechat/videos": videos})  # fmt: skip
    with caplog.at_level(logging.WARNING):
        assert main(["train", str(recipe), "trainer.max_steps=1", "model.trainable.llm=false"]) == 0, \
            capsys.readouterr().err
    assert any("freezes the LLM: the rows of the 100 tokenizer.time_tokens stay at their start" in m
               for m in caplog.messages), caplog.messages

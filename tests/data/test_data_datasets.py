"""Annotation datasets: real files parse with the published counts; bad records name file/record/field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vidtempo.data.datasets import (
    ActivityNetCaptionsDataset,
    CharadesSTADataset,
    ConversationDataset,
    MSRVTTDataset,
    MultipleChoiceDataset,
    PreferenceDataset,
)
from vidtempo.data.errors import AnnotationError
from vidtempo.data.samples import ConversationSample, GroundingSample
from vidtempo.data.timestamps import CODECS
from vidtempo.registry import get_registry


def _write(path: Path, records, jsonl: bool = False) -> Path:
    text = "\n".join(json.dumps(r) for r in records) if jsonl else json.dumps(records)
    path.write_text(text)
    return path


# ---- real annotation files -------------------------------------------------------------------------


def test_charades_sta_test_counts_and_flags(annotations: Path) -> None:
    root = annotations / "charades_sta"
    ds = CharadesSTADataset(root / "charades_sta_test.txt", video_root="/v",
                            durations=root / "Charades_v1_test.csv")
    rep = ds.report()
    assert len(ds) == 3720 and rep["videos"] == 1334
    assert rep["interval_past_end"] == 562 and "inverted" not in rep  # kept as-is, flagged
    first = ds[0]
    assert isinstance(first, GroundingSample)
    assert (first.video, first.start, first.end, first.query) == ("/v/3MSZA.mp4", 24.3, 30.4, "person turn a light on.")
    past = next(s for s in ds if "interval_past_end" in s.flags)
    assert past.end > past.duration
    conv = ds.conversations()[0]
    assert conv.messages[0]["content"] == "<video>\nWhen does 'person turn a light on' happen in the video?"
    assert conv.messages[1]["content"] == "24.3 - 30.4 seconds"


def test_charades_sta_train_reports_inverted(annotations: Path, caplog) -> None:
    with caplog.at_level("WARNING"):
        ds = CharadesSTADataset(annotations / "charades_sta" / "charades_sta_train.txt", codec="relative")
    assert len(ds) == 12408 and ds.report()["inverted"] == 4
    assert "IOL8Q" in caplog.text
    with pytest.raises(AnnotationError, match="duration"):
        ds.conversation(0)  # the relative codec needs a duration this dataset was not given


def test_activitynet_val1_counts_and_relative_codec(annotations: Path) -> None:
    ds = ActivityNetCaptionsDataset(annotations / "activitynet_captions" / "val_1.json", codec="relative")
    rep = ds.report()
    assert len(ds) == 17505 and rep["videos"] == 4917 and rep["interval_past_end"] == 134
    conv = ds.conversation(0)  # v_uqiMw7tQ1Cc, 55.15 s, [0.28, 55.15]
    assert conv.messages[1]["content"] == "from 01 to 99"
    s, e = CODECS["relative"].parse(conv.messages[1]["content"], ds[0].duration)
    assert abs(s - 0.28) < 0.6 and abs(e - 55.15) < 0.6


def test_msrvtt_test_and_train_csv(annotations: Path, tmp_path: Path) -> None:
    test = MSRVTTDataset(annotations / "msrvtt" / "MSRVTT_JSFUSION_test.csv", video_root="/m")
    assert len(test) == 1000 and len({s.video for s in test}) == 1000
    assert (test[0].video, test[0].caption, test[0].id) == ("/m/video9770.mp4", "a person is connecting something to system", "ret0")
    train_csv = annotations / "msrvtt" / "MSRVTT_train.9k.csv"
    with pytest.raises(AnnotationError, match="captions="):
        MSRVTTDataset(train_csv)
    ids = [line for line in train_csv.read_text().split()[1:]]
    captions = _write(tmp_path / "data.json", {"sentences": [
        {"video_id": v, "caption": f"caption {k} of {v}"} for v in ids for k in range(2)]})
    train = MSRVTTDataset(train_csv, captions=captions)
    assert len(train) == 2 * 9000 and train[1].caption == "caption 1 of video0"


def test_videomme_template(annotations: Path) -> None:
    ds = MultipleChoiceDataset(annotations / "videomme" / "output_test_template.json", video_root="/vm")
    assert len(ds) == 9 and {s.video for s in ds} == {"/vm/001.mp4", "/vm/002.mp4", "/vm/003.mp4"}
    first = ds[0]
    assert first.answer == "C" and first.options[0] == "Apples." and first.task == "Counting Problem"
    prompt = ds.conversation(0).messages[0]["content"]
    assert "(A) Apples.\n(B) Candles." in prompt and prompt.startswith("<video>\n")


def test_egoschema_questions_with_answer_map(annotations: Path, tmp_path: Path) -> None:
    answers = json.loads((annotations / "egoschema" / "subset_answers.json").read_text())
    uids = list(answers)[:3]
    questions = _write(tmp_path / "questions.json", [
        {"q_uid": u, "question": f"q{i}?", **{f"option {k}": f"opt {k}" for k in range(5)}} for i, u in enumerate(uids)])
    ds = MultipleChoiceDataset(questions, answers=annotations / "egoschema" / "subset_answers.json")
    assert [s.answer for s in ds] == ["ABCDE"[answers[u]] for u in uids]
    with pytest.raises(AnnotationError, match="answers="):
        MultipleChoiceDataset(annotations / "egoschema" / "subset_answers.json")


# ---- synthetic records -----------------------------------------------------------------------------


def test_conversation_llava_and_messages_forms(tmp_path: Path) -> None:
    llava = {"id": "a", "video": "a.mp4", "audio": "a.wav", "conversations": [
        {"from": "system", "value": "Be brief."}, {"from": "human", "value": "<image>\nWhat?"},
        {"from": "gpt", "value": "A cat."}]}
    chat = {"messages": [{"role": "user", "content": "<video>Where?"}, {"role": "assistant", "content": "Here."}],
            "videos": ["/abs/b.mp4"]}
    text_only = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}
    for jsonl in (False, True):
        ds = ConversationDataset(_write(tmp_path / ("c.jsonl" if jsonl else "c.json"), [llava, chat, text_only], jsonl),
                                 video_root="/root")
        a, b, c = ds[0], ds[1], ds[2]
        assert isinstance(a, ConversationSample)
        assert (a.video, a.audio, a.id) == ("/root/a.mp4", "/root/a.wav", "a")
        assert [m["role"] for m in a.messages] == ["system", "user", "assistant"]
        assert a.messages[1]["content"] == "<video>\nWhat?"
        assert b.video == "/abs/b.mp4" and b.messages[0]["content"] == "<video>Where?"
        assert c.video is None
        assert ds.conversations()[1] is b and len(ds.conversations()) == 3


@pytest.mark.parametrize(
    ("record", "field", "match"),
    [
        ({"video": "a.mp4"}, "conversations", "missing"),
        ({"video": "a.mp4", "conversations": [{"from": "robot", "value": "x"}]}, "conversations[0].from", "unknown role"),
        ({"video": "a.mp4", "conversations": [{"from": "human", "value": 3}]}, "conversations[0].value", "string"),
        ({"video": 5, "conversations": [{"from": "human", "value": "x"}]}, "video", "path"),
        ({"video": "a.mp4", "conversations": [{"from": "human", "value": "<image><video>"}]}, "conversations",
         "placeholders"),
        ({"messages": [{"role": "user", "content": "x"}], "videos": ["a.mp4", "b.mp4"]}, "videos", "at most one"),
    ],
)
def test_conversation_errors_name_file_record_field(tmp_path: Path, record, field, match) -> None:
    good = {"video": "ok.mp4", "conversations": [{"from": "human", "value": "x"}]}
    path = _write(tmp_path / "bad.json", [good, record])
    with pytest.raises(AnnotationError) as info:
        ConversationDataset(path)
    msg = str(info.value)
    assert str(path) in msg and "record 1" in msg and f"field '{field}'" in msg and match in msg


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"video": "a.mp4"}\n{oops\n')
    with pytest.raises(AnnotationError, match="at line 2"):
        ConversationDataset(path)
    with pytest.raises(AnnotationError, match="not found"):
        ConversationDataset(tmp_path / "nope.json")


def test_charades_bad_line_and_durations_dict(tmp_path: Path) -> None:
    path = tmp_path / "sta.txt"
    path.write_text("AAA 1.0 4.0##a person sits.\nBBB 5.0 2.0##inverted.\n")
    ds = CharadesSTADataset(path, durations={"AAA": 3.0, "BBB": 10.0})
    assert ds[0].flags == ("interval_past_end",) and ds[1].flags == ("inverted",)
    path.write_text("AAA 1.0 4.0##ok\nBBB five 2.0##bad\n")
    with pytest.raises(AnnotationError, match=r"record at line 2: field 'start'"):
        CharadesSTADataset(path)


def test_multiple_choice_flat_and_mvbench(tmp_path: Path) -> None:
    recs = [
        {"video": "x.mp4", "question": "Q1?", "options": ["red", "blue", "green"], "answer": "B", "task": "color"},
        {"video": "y", "question": "Q2?", "candidates": ["left", "right"], "answer": "right"},  # MVBench style
        {"video": "z.mp4", "question": "Q3?", "options": ["(A) one", "(B) two"], "answer": 0},
        {"video": "w.mp4", "question": "Q4?", "options": ["a", "b"]},  # unlabelled (test split)
    ]
    ds = MultipleChoiceDataset(_write(tmp_path / "mc.jsonl", recs, jsonl=True), video_root="/r")
    assert [s.answer for s in ds] == ["B", "B", "A", None]
    assert ds[1].video == "/r/y.mp4" and ds[2].options == ["one", "two"] and ds[0].task == "color"
    assert len(ds.conversation(3).messages) == 1
    bad = [{"video": "x.mp4", "question": "Q?", "options": ["a", "b"], "answer": "E"}]
    with pytest.raises(AnnotationError, match="record 0: field 'answer'"):
        MultipleChoiceDataset(_write(tmp_path / "bad.json", bad))


def test_preference_pairs(tmp_path: Path) -> None:
    recs = [
        {"video": "a.mp4", "prompt": "<video>\nWhen?", "chosen": "1.0 - 2.0 seconds", "rejected": "5.0 - 6.0 seconds"},
        {"video": "a.mp4", "rejected_video": "a_reversed.mp4",
         "prompt": [{"role": "user", "content": "<video>\nWhat order?"}], "chosen": "A then B", "rejected": "A then B"},
    ]
    ds = PreferenceDataset(_write(tmp_path / "p.json", recs), video_root="/r")
    assert ds[0].prompt == [{"role": "user", "content": "<video>\nWhen?"}] and ds[0].rejected_video is None
    assert ds[1].rejected_video == "/r/a_reversed.mp4"
    conv = ds.conversation(0)
    assert conv.messages[-1] == {"role": "assistant", "content": "1.0 - 2.0 seconds"}
    same = [{"video": "a.mp4", "prompt": "x", "chosen": "y", "rejected": "y"}]
    with pytest.raises(AnnotationError, match="record 0: field 'rejected'"):
        PreferenceDataset(_write(tmp_path / "same.json", same))
    ends_with_answer = [{"prompt": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
                         "chosen": "a", "rejected": "b"}]
    with pytest.raises(AnnotationError, match="field 'prompt'"):
        PreferenceDataset(_write(tmp_path / "e.json", ends_with_answer))


def test_missing_videos_and_registry(tmp_path: Path) -> None:
    (tmp_path / "here.mp4").write_bytes(b"x")
    recs = [{"video": v, "conversations": [{"from": "human", "value": "x"}]} for v in ("here.mp4", "gone.mp4")]
    ds = ConversationDataset(_write(tmp_path / "c.json", recs), video_root=tmp_path)
    assert ds.missing_videos() == [str(tmp_path / "gone.mp4")]
    reg = get_registry("dataset")
    for alias, cls in [("conversation", ConversationDataset), ("charades_sta", CharadesSTADataset),
                       ("activitynet_captions", ActivityNetCaptionsDataset), ("msrvtt", MSRVTTDataset),
                       ("multiple_choice", MultipleChoiceDataset), ("preference", PreferenceDataset)]:
        assert reg.resolve(alias) is cls

"""Data problems that used to pass silently (issue 28, items 9, 10, 12): each is counted, logged once, skipped
or rejected with one line naming the file and the record id."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from vidtempo.data.chat import IGNORE_INDEX, VIDEO_TOKEN_INDEX
from vidtempo.data.collate import VideoCollator
from vidtempo.data.datasets import ConversationDataset
from vidtempo.data.errors import AnnotationError
from vidtempo.data.overlong import LengthLimit, OverlongError
from vidtempo.data.preference_collate import PreferenceCollator
from vidtempo.data.samples import ConversationSample, PreferenceSample

LONG_ANSWER = " ".join(["seconds"] * 60)


def _sample(video: Path | str | None, sid: str = "r1", answer: str = "1.0 - 2.0 seconds", **kw) -> ConversationSample:
    messages = [{"role": "user", "content": "<video>\nWhen?"}, {"role": "assistant", "content": answer}]
    return ConversationSample(video=str(video) if video else None, messages=messages, id=sid,
                              meta={"source": "train.jsonl"}, **kw)  # fmt: skip


def _collate_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "vidtempo.data.collate"]


# ---- item 9: no audio track, intervals past the end ------------------------------------------------------


def test_a_video_without_audio_in_an_audio_batch_is_counted_and_warned_once(tokenizer, media, caplog):
    collate = VideoCollator(tokenizer, num_frames=2, frame_size=32, audio=True)
    with caplog.at_level(logging.WARNING, logger="vidtempo"):
        first = collate([_sample(media["silent"], "quiet"), _sample(media["main"], "loud")])
        second = collate([_sample(media["silent"], "quiet2")])
    assert (first.no_audio, second.no_audio) == (1, 1)
    warnings = [m for m in _collate_logs(caplog) if "no audio track" in m]
    assert len(warnings) == 1 and "record 'quiet'" in warnings[0] and "train/no_audio" in warnings[0]
    assert VideoCollator(tokenizer, num_frames=2, frame_size=32)([_sample(media["silent"])]).no_audio == 0


def test_an_interval_past_the_video_end_is_flagged_once_per_record(tokenizer, media, caplog):
    collate = VideoCollator(tokenizer, num_frames=2, frame_size=32)
    late = _sample(media["main"], "late")
    late.meta["timestamps"] = [[5.0, 9.5]]  # the video lasts 6 s
    inside = _sample(media["main"], "inside")
    inside.meta["timestamps"] = [1.0, 2.0]
    with caplog.at_level(logging.WARNING, logger="vidtempo"):
        batch = collate([late, inside])
        again = collate([late])
    assert batch.past_end == ["late"] and again.past_end == ["late"]
    flagged = [m for m in _collate_logs(caplog) if "after the video's end" in m]
    assert len(flagged) == 1 and "record 'late' of train.jsonl" in flagged[0] and "9.50" in flagged[0]


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


def test_records_without_video_or_answer_are_rejected_when_required(tmp_path):
    good = {"id": "ok", "video": "a.mp4", "conversations": [{"from": "human", "value": "When?"},
                                                           {"from": "gpt", "value": "now"}]}  # fmt: skip
    no_video = {"id": "novid", "conversations": good["conversations"]}
    no_answer = {"id": "noans", "video": "b.mp4", "conversations": [{"from": "human", "value": "When?"}]}
    path = _write(tmp_path / "train.jsonl", [good, no_video, no_answer])
    assert len(ConversationDataset(path)) == 3  # by default: a text-only sample and a generation prompt
    with pytest.raises(AnnotationError) as info:
        ConversationDataset(path, require_video=True)
    assert str(path) in str(info.value) and "id 'novid'" in str(info.value) and "field 'video'" in str(info.value)
    with pytest.raises(AnnotationError) as info:
        ConversationDataset(path, require_answer=True)
    msg = str(info.value)
    assert str(path) in msg and "id 'noans'" in msg and "no assistant turn" in msg and "\n" not in msg


@pytest.mark.parametrize(("text", "match"), [("", "empty file"), ("[]", "no records")])
def test_an_empty_annotation_file_names_the_file(tmp_path, text, match):
    path = tmp_path / "train.json"
    path.write_text(text)
    with pytest.raises(AnnotationError, match=match) as info:
        ConversationDataset(path)
    assert str(path) in str(info.value)
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(AnnotationError, match="no records"):
        ConversationDataset(tmp_path / "empty.jsonl")
    assert len(ConversationDataset(tmp_path / "empty.jsonl", allow_empty=True)) == 0


# ---- item 10: over-long samples ---------------------------------------------------------------------------


def test_overlong_error_names_the_record_and_blames_the_text(tokenizer):
    collate = VideoCollator(tokenizer, num_frames=2, frame_size=32, max_length=40, video_tokens=4)
    with pytest.raises(OverlongError) as info:
        collate([_sample(None, "short"), _sample(None, "wordy", answer=LONG_ANSWER)])
    msg = str(info.value)
    assert "record 'wordy' of train.jsonl" in msg and "the text alone is too long" in msg
    assert "sample 1" not in msg and "data.overlong" in msg


def test_overlong_error_blames_the_video_when_the_text_fits(tokenizer, media):
    collate = VideoCollator(tokenizer, num_frames=2, frame_size=32, max_length=40, video_tokens=35)
    with pytest.raises(OverlongError, match="record 'clip'.*the video's 35 tokens make it too long"):
        collate([_sample(media["silent"], "clip")])


def test_overlong_skip_records_the_reason(tokenizer):
    collate = VideoCollator(tokenizer, num_frames=2, frame_size=32, overlong="skip", max_length=40)
    batch = collate([_sample(None, "short"), _sample(None, "wordy", answer=LONG_ANSWER)])
    assert batch.ids == ["short"] and [s.id for s in batch.skipped] == ["wordy"]
    assert batch.skipped[0].reason.startswith("over-long: record 'wordy'")


def test_overlong_truncate_cuts_the_answer_and_says_so_once(tokenizer, caplog):
    collate = VideoCollator(tokenizer, num_frames=2, frame_size=32, overlong="truncate", max_length=40)
    full = VideoCollator(tokenizer, num_frames=2, frame_size=32)([_sample(None, "wordy", answer=LONG_ANSWER)])
    with caplog.at_level(logging.WARNING, logger="vidtempo"):
        batch = collate([_sample(None, "wordy", answer=LONG_ANSWER)])
        collate([_sample(None, "wordy", answer=LONG_ANSWER)])
    kept = batch.input_ids.shape[1]  # 40 text tokens + the video placeholder (no video: it splices to nothing)
    assert kept == 41 < full.input_ids.shape[1] and (batch.input_ids == VIDEO_TOKEN_INDEX).sum() == 1
    assert batch.input_ids[0].tolist() == full.input_ids[0, :kept].tolist()  # the prompt kept, the answer's tail cut
    assert (batch.labels != IGNORE_INDEX).any()
    assert len([m for m in _collate_logs(caplog) if "answer cut" in m and "'wordy'" in m]) == 1


def test_truncate_cannot_cut_a_prompt_and_skips_instead():
    limit = LengthLimit(policy="truncate", max_length=3)
    fit = limit.fit([1, 2, 3, 4, 5], [IGNORE_INDEX] * 4 + [5], has_video=False, record="record 'p'")
    assert fit.reason is not None and "prompt alone" in fit.reason and not fit.truncated


def test_max_text_tokens_follows_the_policy(tokenizer):
    collate = VideoCollator(tokenizer, num_frames=2, frame_size=32, max_text_tokens=10)
    with pytest.raises(OverlongError, match="record 'r1'.*max_text_tokens=10: the text is too long"):
        collate([_sample(None)])


def test_a_sample_within_the_length_is_unchanged(tokenizer):
    plain = VideoCollator(tokenizer, num_frames=2, frame_size=32)([_sample(None)])
    checked = VideoCollator(tokenizer, num_frames=2, frame_size=32, max_length=1024, video_tokens=8)([_sample(None)])
    assert plain.input_ids.tolist() == checked.input_ids.tolist() and not checked.skipped


def test_an_overlong_preference_pair_is_skipped_or_stops(tokenizer):
    pair = PreferenceSample(video=None, prompt=[{"role": "user", "content": "Order?"}], chosen=LONG_ANSWER,
                            rejected="no", id="p7")  # fmt: skip
    batch = PreferenceCollator(tokenizer, num_frames=2, frame_size=32, overlong="truncate", max_length=30)([pair])
    assert len(batch) == 0 and batch.skipped[0].id == "p7" and "pair 'p7' (chosen)" in batch.skipped[0].reason
    with pytest.raises(OverlongError, match="pair 'p7' .chosen."):
        PreferenceCollator(tokenizer, num_frames=2, frame_size=32, max_length=30)([pair])


# ---- item 12: each skip is logged once (by the objective's tracker, not the collator) ------------------------


def test_the_collator_does_not_log_skips(tokenizer, media, caplog):
    collate = VideoCollator(tokenizer, num_frames=2, frame_size=32)
    with caplog.at_level(logging.DEBUG, logger="vidtempo"):
        batch = collate([_sample(media["garbage"], "bad"), _sample(media["main"], "good")])
    assert [s.id for s in batch.skipped] == ["bad"] and batch.ids == ["good"]
    assert not _collate_logs(caplog)

"""The generated files load with the project's real-format loaders (vidtempo.data.datasets)."""

from __future__ import annotations

import json

import pytest

from vidtempo.synth.annotate import MCQ_TASKS
from vidtempo.synth.generate import Manifest

datasets = pytest.importorskip("vidtempo.data.datasets", reason="the data loaders are not available")


def test_loaders_read_every_format(small_set: Manifest) -> None:
    root, videos = small_set.root, small_set.root / "videos"
    for split, ids in small_set.splits.items():
        path = small_set.annotation_path
        scripts = json.loads(path(split, "scripts").read_text())
        n_obj = sum(len(s["objects"]) for s in scripts.values())

        sta = datasets.CharadesSTADataset(path(split, "grounding"), video_root=videos,
                                          durations=path(split, "durations"))
        assert len(sta) == n_obj and all(not s.flags for s in sta)
        assert all(s.duration == scripts[s.id.split("#")[0]]["duration"] for s in sta)

        conv = datasets.ConversationDataset(path(split, "conversations"), video_root=root)
        assert len(conv) == n_obj + (len(MCQ_TASKS) + 1) * len(ids)

        mcq = datasets.MultipleChoiceDataset(path(split, "mcq"), video_root=root)
        assert len(mcq) == len(MCQ_TASKS) * len(ids)
        assert all(len(s.options) == 4 and s.answer in "ABCD" and s.task in MCQ_TASKS for s in mcq)

        anet = datasets.ActivityNetCaptionsDataset(path(split, "dense_captions"), video_root=videos)
        dense = json.loads(path(split, "dense_captions").read_text())
        assert len(anet) == sum(len(d["sentences"]) for d in dense.values())

        ret = datasets.MSRVTTDataset(path(split, "retrieval"), video_root=videos)
        assert len(ret) == len(ids)

        for ds in (sta, conv, mcq, anet, ret):
            missing = {getattr(s, "video", None) for s in ds} - {str(videos / f"{v}.mp4") for v in ids}
            assert not missing, (type(ds).__name__, sorted(missing)[:3])


def test_multi_turn_groups_every_question_of_a_video(small_set: Manifest, tokenizer) -> None:
    from vidtempo.data.chat import ChatEncoder
    from vidtempo.synth.dataset import SynthConversations

    single = SynthConversations(str(small_set.root), "train", tasks=["grounding"])
    multi = SynthConversations(str(small_set.root), "train", tasks=["grounding"], multi_turn=True)
    assert len(multi) == len({s.video for s in single}) < len(single)
    answers = [m["content"] for s in single for m in s.messages if m["role"] == "assistant"]
    merged = [m["content"] for s in multi for m in s.messages if m["role"] == "assistant"]
    assert merged == answers  # every answer kept, in order
    for s in multi:
        users = [m["content"] for m in s.messages if m["role"] == "user"]
        assert users[0].startswith("<video>") and not any("<video>" in u for u in users[1:])
        assert s.meta["turns"] == len(users)
    ids, labels = ChatEncoder(tokenizer).encode(multi[0].messages)
    labelled = tokenizer.decode([t for t in labels if t >= 0])
    assert all(m["content"] in labelled for m in multi[0].messages if m["role"] == "assistant")
    assert "When is" not in labelled  # questions are never trained on

"""Every annotation file parses in its real format, with the expected counts, and agrees with the scripts."""

from __future__ import annotations

import csv
import json
import os
import re
from collections import Counter
from pathlib import Path

import pytest

from vidtempo.synth.annotate import LETTERS, MCQ_TASKS, ORDER_DEPENDENT, balanced_letters, build_split
from vidtempo.synth.generate import Manifest
from vidtempo.synth.script import EventScript, sample_script

CHARADES_LINE = re.compile(r"^(\S+) (\d+\.\d{1,2}) (\d+\.\d{1,2})##(.+)$")
SECONDS = re.compile(r"^(\d+\.\d) - (\d+\.\d) seconds$")


def shared_annotations() -> Path:
    root = Path(os.environ.get("VIDTEMPO_SHARED", Path(__file__).resolve().parents[3] / "shared"))
    return root / "data" / "annotations"


def _split_scripts(m: Manifest, split: str) -> list[EventScript]:
    data = json.loads(m.annotation_path(split, "scripts").read_text())
    return [EventScript.from_dict(data[v]) for v in m.splits[split]]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_charades_grounding_and_durations(small_set: Manifest, split: str) -> None:
    scripts = {s.video_id: s for s in _split_scripts(small_set, split)}
    lines = small_set.annotation_path(split, "grounding").read_text().splitlines()
    assert len(lines) == sum(len(s.objects) for s in scripts.values())
    for line in lines:
        vid, start, end, sentence = CHARADES_LINE.match(line).groups()
        s, e = float(start), float(end)
        d = scripts[vid].duration
        assert small_set.video_path(vid).is_file()
        assert 0 <= s < e <= d and 0.1 * d - 0.05 <= e - s <= 0.3 * d + 0.05
        obj = next(o for o in scripts[vid].objects if sentence == f"the {o.name} is visible.")
        assert (obj.start, obj.end) == (s, e)
    with open(small_set.annotation_path(split, "durations"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == list(scripts)
    assert all(float(r["length"]) == scripts[r["id"]].duration for r in rows)


def test_durations_header_like_charades_csv(small_set: Manifest) -> None:
    real = shared_annotations() / "charades_sta" / "Charades_v1_test.csv"
    if not real.is_file():
        pytest.skip(f"shared annotations not found at {real}")
    ours = small_set.annotation_path("test", "durations").read_text().splitlines()[0].split(",")
    theirs = real.read_text().splitlines()[0].split(",")
    assert ours[0] == theirs[0] == "id" and ours[-1] == theirs[-1] == "length"


def _correct(s: EventScript, rec: dict) -> str:
    """The answer text recomputed from the script, independently of the annotator."""
    opts = [o[3:] for o in rec["options"]]
    by_name = {f"the {o.name}": o for o in s.objects}
    q = rec["question"]
    if rec["task"] == "order":
        key = (lambda n: by_name[n].start) if "first" in q else (lambda n: -by_name[n].start)
        return min(opts, key=key)
    if rec["task"] == "count":
        return str(sum(b.pitch == "high" for b in s.beeps))
    if rec["task"] == "audio_visual":
        low = next(b for b in s.beeps if b.pitch == "low")
        return next(n for n, o in by_name.items() if o.start <= low.time < o.end)
    ordinals = ["first", "second", "third"]
    k = next((i for i, w in enumerate(ordinals) if f"the {w} scene cut" in q), 0)
    cut = s.cuts[k]
    return min((n for n in by_name if by_name[n].start > cut), key=lambda n: by_name[n].start)


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_mcq_records_are_correct(small_set: Manifest, split: str) -> None:
    scripts = {s.video_id: s for s in _split_scripts(small_set, split)}
    recs = _jsonl(small_set.annotation_path(split, "mcq"))
    assert len(recs) == len(MCQ_TASKS) * len(scripts)
    assert Counter(r["task"] for r in recs) == {t: len(scripts) for t in MCQ_TASKS}
    for r in recs:
        assert set(r) >= {"id", "video", "question", "options", "answer", "task", "order_dependent"}
        assert r["video"].startswith("videos/") and (small_set.root / r["video"]).is_file()
        assert [o[:3] for o in r["options"]] == ["A. ", "B. ", "C. ", "D. "]
        assert len({o[3:] for o in r["options"]}) == 4
        assert r["order_dependent"] is ORDER_DEPENDENT[r["task"]]
        s = scripts[Path(r["video"]).stem]
        assert r["options"][LETTERS.index(r["answer"])][3:] == _correct(s, r), r
    assert {r["task"] for r in recs if r["order_dependent"]} == {"order", "after_cut"}


def test_answer_letters_balanced() -> None:
    scripts = [sample_script(1, i, min_duration=6, max_duration=20) for i in range(40)]
    ann = build_split(scripts, seed=1, split="train")
    for task in MCQ_TASKS:
        assert Counter(m.answer for m in ann.mcq if m.task == task) == dict.fromkeys(LETTERS, 10)
    import numpy as np

    for n in (1, 5, 13):
        c = Counter(balanced_letters(n, np.random.default_rng(n)))
        assert sum(c.values()) == n and max(c.values()) - min(c.get(x, 0) for x in LETTERS) <= 1


@pytest.mark.parametrize("split", ["train", "test"])
def test_conversations(small_set: Manifest, split: str) -> None:
    scripts = {s.video_id: s for s in _split_scripts(small_set, split)}
    recs = _jsonl(small_set.annotation_path(split, "conversations"))
    mcq = {r["id"]: r for r in _jsonl(small_set.annotation_path(split, "mcq"))}
    tasks = Counter(r["task"] for r in recs)
    assert tasks["grounding"] == sum(len(s.objects) for s in scripts.values())
    assert tasks["dense_caption"] == len(scripts) and all(tasks[t] == len(scripts) for t in MCQ_TASKS)
    assert len({r["id"] for r in recs}) == len(recs)
    for r in recs:
        human, gpt = r["conversations"]
        assert human["from"] == "human" and gpt["from"] == "gpt" and human["value"].startswith("<video>\n")
        assert r["video"] == f"videos/{r['video'].split('/')[1]}" and (small_set.root / r["video"]).is_file()
        if r["task"] == "grounding":
            s, e = map(float, SECONDS.match(gpt["value"]).groups())
            name = re.match(r"<video>\nWhen is the (.+) visible\?$", human["value"]).group(1)
            obj = next(o for o in scripts[Path(r["video"]).stem].objects if o.name == name)
            assert (s, e) == (obj.start, obj.end) == tuple(r["timestamps"])
        elif r["task"] in MCQ_TASKS:
            assert gpt["value"] == mcq[r["id"]]["answer"]
            assert all(o in human["value"] for o in mcq[r["id"]]["options"])


def test_dense_captions_scene_cuts_retrieval(small_set: Manifest) -> None:
    scripts = small_set.scripts()
    real_anet = shared_annotations() / "activitynet_captions" / "val_1.json"
    for split, ids in small_set.splits.items():
        dense = json.loads(small_set.annotation_path(split, "dense_captions").read_text())
        assert list(dense) == ids
        for vid, d in dense.items():
            s = scripts[vid]
            assert set(d) == {"duration", "timestamps", "sentences"} and d["duration"] == s.duration
            assert len(d["timestamps"]) == len(d["sentences"]) == (
                len(s.scenes) + len(s.gradual) + len(s.objects) + len(s.beeps))
            assert all(0 <= a < b <= s.duration for a, b in d["timestamps"])
            assert d["timestamps"] == sorted(d["timestamps"])
        cuts = json.loads(small_set.annotation_path(split, "scene_cuts").read_text())
        for vid, c in cuts.items():
            assert c["cuts"] == scripts[vid].cuts and len(c["gradual"]) == len(scripts[vid].gradual)
            assert all(not any(g["start"] <= t <= g["end"] for g in c["gradual"]) for t in c["cuts"])
        with open(small_set.annotation_path(split, "retrieval"), newline="") as f:
            rows = list(csv.DictReader(f))
        assert [r["video_id"] for r in rows] == ids and len({r["key"] for r in rows}) == len(rows)
    if real_anet.is_file():  # same structure as the real ActivityNet Captions file
        first = next(iter(json.loads(real_anet.read_text()).values()))
        assert set(first) == {"duration", "timestamps", "sentences"}


def test_retrieval_header_like_msrvtt(small_set: Manifest) -> None:
    real = shared_annotations() / "msrvtt" / "MSRVTT_JSFUSION_test.csv"
    if not real.is_file():
        pytest.skip(f"shared annotations not found at {real}")
    ours = small_set.annotation_path("test", "retrieval").read_text().splitlines()[0]
    assert ours == real.read_text().splitlines()[0] == "key,vid_key,video_id,sentence"

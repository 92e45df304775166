"""Retrieval through embed_video / embed_text: the real MSR-VTT 1k-A CSV parses, the MSVD JSON layout, and
``msrvtt_retrieval`` / ``synth_retrieval`` on a tiny t_fuseformer checkpoint with a few videos write the report,
per-query ranks, the similarity matrix and the rank histogram; the report's metrics equal
``retrieval_metrics`` / ``retrieval_metrics_multi`` on the saved matrix (also after VTM re-ranking)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from vidtempo.eval.benchmarks import EvalError
from vidtempo.eval.items import BenchmarkSource
from vidtempo.eval.metrics import retrieval_metrics, retrieval_metrics_multi
from vidtempo.eval.results import results_tables
from vidtempo.eval.retrieval import group_pairs, load_msrvtt, load_msvd, query_ranks
from vidtempo.eval.runner import run_eval

ROOT = Path(__file__).resolve().parents[2]


def msrvtt_1ka() -> Path:
    """The real MSR-VTT 1k-A test CSV under the workplace's shared/ folder (``VIDTEMPO_SHARED``); the test is
    skipped where it is absent, as the other real-annotation tests are."""
    shared = Path(os.environ.get("VIDTEMPO_SHARED", ROOT.parent / "shared"))
    path = shared / "data" / "annotations" / "msrvtt" / "MSRVTT_JSFUSION_test.csv"
    if not path.is_file():
        pytest.skip(f"shared annotations not found at {path} (set VIDTEMPO_SHARED)")
    return path

COMP = {"_target_": "t_fuseformer", "in_dim": 32, "width": 16, "num_heads": 2, "depth": 1, "visual_queries": 6,
        "audio_queries": 2, "fusion_tokens": 4, "num_queries": 4, "local_grid": [2, 2], "dropout": 0.0,
        "qformer": {"preset": "tiny", "initializer_range": 0.2}, "embed_dim": 16}  # fmt: skip
NODE = {"_target_": "vidtempo.models.VideoLLM", "vision_encoder": {"_target_": "tiny"}, "compressor": COMP,
        "projector": {"_target_": "linear", "in_dim": 32, "out_dim": 64}, "llm": {"_target_": "tiny"}}  # fmt: skip
RECIPE = (
    "data:\n  collator: {num_frames: 3, frame_size: 32}\neval: {batch_size: 2, num_workers: 0, device: cpu}\n"
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer) -> Path:
    from vidtempo.models.build import build_video_llm
    from vidtempo.models.checkpoint import save_pretrained

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("align_ckpt")
    save_pretrained(build_video_llm(NODE), out, model_config=NODE, tokenizer=tokenizer)
    return out


@pytest.fixture(scope="module")
def msrvtt_few(tmp_path_factory) -> tuple[Path, Path]:
    """The first 5 rows of the real 1k-A CSV, with small synthetic videos under their ids."""
    from vidtempo.data.testing import make_test_video

    root = tmp_path_factory.mktemp("msrvtt")
    with msrvtt_1ka().open(newline="") as f:
        rows = list(csv.DictReader(f))[:5]
    for n, row in enumerate(rows):
        make_test_video(root / f"{row['video_id']}.mp4", duration=1.5 + 0.5 * n, fps=4, size=(32, 32),
                        cuts=(0.5,) if n % 2 else ())  # fmt: skip
    ann = root / "few.csv"
    with ann.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["key", "vid_key", "video_id", "sentence"])
        writer.writeheader()
        writer.writerows(rows)
    return ann, root


def test_the_real_msrvtt_1ka_csv_parses_into_a_diagonal_task():
    pairs = load_msrvtt(BenchmarkSource(str(msrvtt_1ka()), "/videos"))
    assert len(pairs.videos) == len(pairs.texts) == 1000 and pairs.text_to_video == list(range(1000))
    assert (
        pairs.videos[0] == "/videos/video9770.mp4"
        and pairs.texts[0] == "a person is connecting something to system"
    )
    assert pairs.text_ids[0] == "ret0"


def test_msvd_json_with_several_captions_per_video(tmp_path: Path):
    path = tmp_path / "msvd.json"
    path.write_text(
        json.dumps([{"video": "a.avi", "caption": ["one", "two"]}, {"video": "b.avi", "caption": "x"}])
    )
    pairs = load_msvd(BenchmarkSource(str(path), str(tmp_path)))
    assert pairs.texts == ["one", "two", "x"] and pairs.text_to_video == [0, 0, 1]
    assert pairs.videos == [str(tmp_path / "a.avi"), str(tmp_path / "b.avi")] and pairs.text_ids[:2] == [
        "a#0",
        "a#1",
    ]
    path.write_text(json.dumps([{"video": "a.avi", "caption": []}]))
    with pytest.raises(EvalError, match="record 0: needs 'video'"):
        load_msvd(BenchmarkSource(str(path), None))
    with pytest.raises(EvalError, match="no annotation file"):
        load_msvd(BenchmarkSource(None, None))


def test_dropping_a_video_drops_its_captions():
    from vidtempo.data.samples import RetrievalSample

    pairs = group_pairs([RetrievalSample("a", "1"), RetrievalSample("b", "2"), RetrievalSample("a", "3"),
                         RetrievalSample("c", "4")])  # fmt: skip
    kept = pairs.without({0})
    assert kept.videos == ["b", "c"] and kept.texts == ["2", "4"] and kept.text_to_video == [0, 1]


@pytest.mark.parametrize("rerank", [0, 2])
def test_msrvtt_retrieval_on_a_tiny_checkpoint_writes_the_report(checkpoint, msrvtt_few, tmp_path, rerank):
    ann, root = msrvtt_few
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    overrides = [f"+eval.benchmarks.msrvtt_retrieval.rerank_k={rerank}"]
    result = run_eval(recipe, checkpoint, "msrvtt_retrieval", annotations=str(ann), video_root=str(root),
                      out_dir=tmp_path / "o", overrides=overrides, progress=False)  # fmt: skip
    out = tmp_path / "o"
    report = json.loads((out / "report.json").read_text())
    assert report == json.loads(json.dumps(result.report))
    assert report["num_items"] == report["num_videos"] == 5 and report["counts"]["skipped"] == 0
    sim = np.load(out / "similarity.npy")
    assert sim.shape == (5, 5)
    key = "reranked" if rerank else "metrics"
    assert report[key]["t2v"] == retrieval_metrics(sim)  # one caption per video: the diagonal
    assert report[key]["v2t"] == retrieval_metrics(sim.T)
    assert report[key] == retrieval_metrics_multi(sim, list(range(5)))
    ranks = [json.loads(line) for line in (out / "ranks.jsonl").read_text().splitlines()]
    assert [r["rank"] for r in ranks] == query_ranks(sim, list(range(5)), "optimistic").tolist()
    assert ranks[0]["id"] == "ret0" and ranks[0]["video"].endswith("video9770.mp4")
    assert (out / "rank_histogram.png").stat().st_size > 0
    if rerank:  # outside each text's top-2 every video scores -100
        assert ((sim == -100.0).sum(axis=1) == 3).all() and "metrics" in report
    assert len(results_tables(report)) == 1


def test_synth_retrieval_and_a_missing_video(checkpoint, tmp_path):
    from vidtempo.synth.generate import generate

    root = tmp_path / "ts"
    generate(root, num_videos=3, seed=0, size=32, min_duration=6, max_duration=7, splits=(0.0, 0.0, 1.0),
             progress=False)  # fmt: skip
    video = root / "videos" / "ts000001.mp4"
    video.write_bytes(b"not a video")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    result = run_eval(recipe, checkpoint, "synth_retrieval", annotations=str(root), out_dir=tmp_path / "o",
                      progress=False)  # fmt: skip
    report = result.report
    assert report["num_videos"] == 2 and report["counts"]["skipped"] == 1
    assert report["skipped_videos"][0]["video"].endswith("ts000001.mp4")
    sim = np.load(tmp_path / "o" / "similarity.npy")
    assert report["metrics"]["t2v"] == retrieval_metrics(sim)


def test_a_model_without_alignment_heads_is_refused(checkpoint, tmp_path, tokenizer):
    from vidtempo.models.build import build_video_llm
    from vidtempo.models.checkpoint import save_pretrained

    node = {**NODE, "compressor": {**COMP, "alignment": False}}
    save_pretrained(build_video_llm(node), tmp_path / "c", model_config=node, tokenizer=tokenizer)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    with pytest.raises(
        EvalError, match="alignment head.*VideoLLM only generates text.*compressor TFuseformerCompressor"
    ):
        run_eval(
            recipe, tmp_path / "c", "msrvtt_retrieval", annotations=str(msrvtt_1ka()), out_dir=tmp_path / "o"
        )
    with pytest.raises(EvalError, match="rerank_k: expected an integer"):
        run_eval(recipe, checkpoint, "msrvtt_retrieval", annotations=str(msrvtt_1ka()), out_dir=tmp_path / "o",
                 overrides=["+eval.benchmarks.msrvtt_retrieval.rerank_k=-1"])  # fmt: skip

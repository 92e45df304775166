"""Text-to-video and video-to-text retrieval through a model's ``embed_video`` / ``embed_text`` capabilities.

Benchmarks (``vidtempo eval --benchmark NAME``):

* ``msrvtt_retrieval``: an MSR-VTT CSV (JSFusion 1k-A ``key,vid_key,video_id,sentence``; or a video list plus
  ``captions: MSRVTT_data.json`` in ``eval.benchmarks.msrvtt_retrieval``), read by ``MSRVTTDataset``.
* ``msvd_retrieval``: a JSON list ``[{"video": "name.avi", "caption": "..." | ["...", ...]}, ...]`` (the LAVIS
  retrieval annotation layout; several captions per video).
* ``synth_retrieval``: TempoSynth's ``annotations/<split>/retrieval.csv`` (one caption per video).

The similarity matrix is ``text_embeddings @ video_embeddings.T`` (cosine of the contrastive head). With
``rerank_k`` (``eval.benchmarks.<name>.rerank_k``) the top-k videos of every text are re-scored as BLIP-2's
retrieval evaluation does: matching-head logit (match) + similarity, every other video at -100. Metrics come
from :func:`vidtempo.eval.metrics.retrieval_metrics_multi` (several captions per video; ``tie``:
``optimistic`` or ``pessimistic``). Written into the output folder:

* ``report.json``: metrics (t2v, v2t; ``reranked`` too with ``rerank_k``), counts, settings, checkpoint, recipe
  hash; ``similarity.npy``: the (T, V) matrix the metrics were computed on (the re-ranked one when re-ranking);
* ``ranks.jsonl``: one row per text query (id, caption, video, 1-based rank of its video);
* ``rank_histogram.png``: how many queries put their video at rank 1, 2-5, 6-10, 11-50, 51+.

A video that cannot be decoded is left out with its captions and counted in ``counts.skipped``.

Example:
    >>> from vidtempo.data.samples import RetrievalSample
    >>> pairs = group_pairs([RetrievalSample("a.mp4", "x"), RetrievalSample("b.mp4", "y"),
    ...                      RetrievalSample("a.mp4", "z")])
    >>> pairs.videos, pairs.text_to_video
    (['a.mp4', 'b.mp4'], [0, 1, 0])
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vidtempo.eval.items import BenchmarkSource, EvalError
from vidtempo.eval.metrics import TIE_POLICIES, ranks_from_scores, retrieval_metrics_multi

RETRIEVAL_BENCHMARKS = ("msrvtt_retrieval", "msvd_retrieval", "synth_retrieval")
RERANK_FLOOR = -100.0  # BLIP-2's score for videos outside a text's top-k
RANK_BINS = ((1, 1), (2, 5), (6, 10), (11, 50), (51, None))


@dataclass
class RetrievalPairs:
    """Texts and the distinct videos they describe.

    Attributes:
        videos: V video paths. texts: T captions. text_ids: T ids. text_to_video: T indices into ``videos``.
    """

    videos: list[str]
    texts: list[str] = field(default_factory=list)
    text_ids: list[str] = field(default_factory=list)
    text_to_video: list[int] = field(default_factory=list)

    def without(self, dropped: set[int]) -> RetrievalPairs:
        """The pairs without the videos of ``dropped`` (indices) and their captions."""
        keep = [v for v in range(len(self.videos)) if v not in dropped]
        new_index = {old: new for new, old in enumerate(keep)}
        rows = [i for i, v in enumerate(self.text_to_video) if v in new_index]
        return RetrievalPairs([self.videos[v] for v in keep], [self.texts[i] for i in rows],
                              [self.text_ids[i] for i in rows], [new_index[self.text_to_video[i]] for i in rows])  # fmt: skip


def group_pairs(samples: Sequence[Any]) -> RetrievalPairs:
    """``RetrievalSample`` pairs -> :class:`RetrievalPairs` (videos in first-seen order)."""
    index: dict[str, int] = {}
    pairs = RetrievalPairs(videos=[])
    for n, sample in enumerate(samples):
        if sample.video not in index:
            index[sample.video] = len(pairs.videos)
            pairs.videos.append(sample.video)
        pairs.texts.append(sample.caption)
        pairs.text_ids.append(sample.id or f"t{n}")
        pairs.text_to_video.append(index[sample.video])
    return pairs


# ------------------------------------------------------------------------------------------------ loaders
def _annotation(src: BenchmarkSource, name: str, what: str) -> Path:
    if not src.annotations:
        raise EvalError(f"{name}: no annotation file: pass --annotations ({what}) or set "
                        f"eval.benchmarks.{name}.annotations")  # fmt: skip
    path = Path(src.annotations)
    if not path.exists():
        raise EvalError(f"{name}: annotation file {path} not found")
    return path


def load_msrvtt(src: BenchmarkSource) -> RetrievalPairs:
    """MSR-VTT pairs (see the module docstring)."""
    from vidtempo.data.datasets import MSRVTTDataset

    path = _annotation(src, "msrvtt_retrieval", "e.g. MSRVTT_JSFUSION_test.csv")
    ds = MSRVTTDataset(path, video_root=src.video_root or "", captions=src.options.get("captions"),
                       video_ext=str(src.options.get("video_ext", ".mp4")))  # fmt: skip
    return group_pairs(ds.samples)


def load_msvd(src: BenchmarkSource) -> RetrievalPairs:
    """MSVD pairs from a JSON list of ``{"video", "caption"}`` records (caption: a string or a list)."""
    from vidtempo.data.samples import RetrievalSample

    path = _annotation(src, "msvd_retrieval", "a JSON list of {video, caption}")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise EvalError(f"msvd_retrieval: {path} is not JSON ({err})") from None
    if not isinstance(records, list):
        raise EvalError(f"msvd_retrieval: {path}: expected a JSON list of {{video, caption}} records")
    root = Path(src.video_root or "")
    samples = []
    for n, rec in enumerate(records):
        video, captions = (rec.get("video"), rec.get("caption")) if isinstance(rec, dict) else (None, None)
        captions = [captions] if isinstance(captions, str) else captions
        if not isinstance(video, str) or not video or not isinstance(captions, list) or not captions:
            raise EvalError(f"msvd_retrieval: {path} record {n}: needs 'video' (a name) and 'caption' "
                            "(a string or a non-empty list)")  # fmt: skip
        for k, caption in enumerate(captions):
            if not isinstance(caption, str) or not caption.strip():
                raise EvalError(f"msvd_retrieval: {path} record {n}: caption {k} is empty or not a string")
            samples.append(RetrievalSample(str(root / video), caption.strip(), f"{Path(video).stem}#{k}"))
    return group_pairs(samples)


def load_synth_retrieval(src: BenchmarkSource) -> RetrievalPairs:
    """TempoSynth caption / retrieval pairs of one split (``eval.benchmarks.synth_retrieval.split``, test)."""
    from vidtempo.data.datasets import MSRVTTDataset
    from vidtempo.eval.benchmarks import synth_folder

    root, split = synth_folder(BenchmarkSource(src.annotations, src.video_root,
                                               {"split": src.options.get("split", "test")}))  # fmt: skip
    path = root / "annotations" / split / "retrieval.csv"
    if not path.is_file():
        raise EvalError(f"synth_retrieval: {path} is missing (regenerate the TempoSynth folder)")
    return group_pairs(MSRVTTDataset(path, video_root=root / "videos").samples)


LOADERS = {
    "msrvtt_retrieval": load_msrvtt,
    "msvd_retrieval": load_msvd,
    "synth_retrieval": load_synth_retrieval,
}


# ------------------------------------------------------------------------------------------------ scoring
@dataclass
class Embeddings:
    """(V, E) video and (T, E) text embeddings, the videos that could not be decoded, and (with re-ranking)
    the fused states of each kept video for the matching head."""

    video: Any
    text: Any
    skipped: list[dict[str, str]]
    kept: list[int]
    fused: list[Any] = field(default_factory=list)


def check_model(model: Any, rerank_k: int) -> None:
    """A one-line :class:`EvalError` when the model cannot embed (or re-rank)."""
    missing = [c for c in ("embed_video", "embed_text") if c not in getattr(model, "capabilities", ())]
    if missing:
        comp = type(getattr(model, "compressor", None)).__name__
        raise EvalError(f"retrieval needs an alignment head: the {' and '.join(missing)} capabilities (a VideoLLM "
                        "whose compressor has contrastive heads, e.g. t_fuseformer trained by the align objective); "
                        f"this checkpoint's {type(model).__name__} only generates text (its compressor {comp} has "
                        "no contrastive heads)")  # fmt: skip
    comp = getattr(model, "compressor", None)
    if rerank_k and not all(hasattr(comp, m) for m in ("fuse", "match_logits", "tokenize")):
        raise EvalError("rerank_k needs a matching head (a compressor with match_logits, e.g. t_fuseformer)")


def embed_pairs(model: Any, collator: Any, pairs: RetrievalPairs, batch_size: int, device: Any,
                keep_fused: bool = False) -> Embeddings:  # fmt: skip
    """Embed every video (decoded by ``collator``, ``batch_size`` at a time) and every caption."""
    import torch

    from vidtempo.data.samples import ConversationSample

    videos, kept, skipped, fused = [], [], [], []
    for start in range(0, len(pairs.videos), batch_size):
        chunk = list(range(start, min(start + batch_size, len(pairs.videos))))
        samples = [ConversationSample(video=pairs.videos[v], messages=[{"role": "user", "content": "<video>"}],
                                      id=str(v)) for v in chunk]  # fmt: skip
        batch = collator(samples)
        skipped += [{"video": r.path, "reason": r.reason} for r in batch.skipped]
        if len(batch) == 0:
            continue
        inputs = batch.video_inputs().to(device)
        with torch.no_grad():
            if keep_fused:  # the matching head reads the fused states: keep them, embed from them
                comp = model.compressor
                state = comp.fuse(model.compressor_input(inputs))
                fused += [(state.states[i].cpu(), state.mask[i].cpu()) for i in range(len(batch))]
                videos.append(comp.video_embedding(comp.query_states(state)).float().cpu())
            else:
                videos.append(model.embed_video(inputs).float().cpu())
        kept += [int(i) for i in batch.ids]
    texts = []
    with torch.no_grad():
        for start in range(0, len(pairs.texts), batch_size):
            texts.append(model.embed_text(pairs.texts[start : start + batch_size]).float().cpu())
    video = torch.cat(videos) if videos else torch.zeros(0, 1)
    return Embeddings(video, torch.cat(texts), skipped, kept, fused)


def rerank(
    model: Any, sim: np.ndarray, texts: list[str], fused: list[Any], k: int, device: Any
) -> np.ndarray:
    """(T, V) scores: for each text its top-``k`` videos get matching logit (match) + similarity, the rest
    :data:`RERANK_FLOOR` (BLIP-2's ``compute_sim_matrix``)."""
    import torch

    from vidtempo.models.compressors.t_fuseformer import FusedVideo

    comp = model.compressor
    out = np.full_like(sim, RERANK_FLOOR)
    k = min(k, sim.shape[1])
    for i, text in enumerate(texts):
        top = np.argsort(-sim[i], kind="stable")[:k]
        states = torch.stack([fused[v][0] for v in top]).to(device)
        masks = torch.stack([fused[v][1] for v in top]).to(device)
        ids, mask = comp.tokenize([text] * len(top))
        with torch.no_grad():
            logits = comp.match_logits(FusedVideo(states, masks, 0), ids, mask)  # (k, 2)
        out[i, top] = logits[:, 1].float().cpu().numpy() + sim[i, top]
    return out


def query_ranks(sim: np.ndarray, text_to_video: Sequence[int], tie: str) -> np.ndarray:
    """(T,) 1-based rank of each text's video among all videos."""
    owner = np.asarray(text_to_video)
    return ranks_from_scores(sim, sim[np.arange(len(owner)), owner], tie=tie)


def rank_histogram_png(ranks: Sequence[int], path: str | Path) -> Path:
    """Bars of how many queries rank their video 1, 2-5, 6-10, 11-50 and 51+ (Pillow only)."""
    from PIL import Image, ImageDraw, ImageFont

    labels = [f"{lo}" if lo == hi else (f"{lo}-{hi}" if hi else f"{lo}+") for lo, hi in RANK_BINS]
    counts = [sum(1 for r in ranks if r >= lo and (hi is None or r <= hi)) for lo, hi in RANK_BINS]
    width, height, left, bottom = 520, 320, 50, 40
    img = Image.new("RGB", (width, height), "white")
    draw, font = ImageDraw.Draw(img), ImageFont.load_default()
    draw.text((left, 8), f"rank of the correct video ({len(ranks)} text queries)", fill="black", font=font)
    plot_h, bar_w, peak = height - bottom - 40, (width - left - 20) // len(counts), max(counts + [1])
    for i, (label, count) in enumerate(zip(labels, counts)):
        x0, h = left + i * bar_w, int(plot_h * count / peak)
        draw.rectangle([x0 + 4, height - bottom - h, x0 + bar_w - 4, height - bottom], fill=(52, 101, 164))
        draw.text((x0 + 6, height - bottom - h - 12), str(count), fill="black", font=font)
        draw.text((x0 + 6, height - bottom + 6), label, fill="black", font=font)
    draw.line([(left, height - bottom), (width - 20, height - bottom)], fill="black")
    out = Path(path)
    img.save(out)
    return out


# ------------------------------------------------------------------------------------------------ the run
def retrieval_options(src: BenchmarkSource) -> tuple[int, str]:
    """(rerank_k, tie) from ``eval.benchmarks.<name>``; one-line errors for bad values."""
    k, tie = src.options.get("rerank_k", 0), src.options.get("tie", "optimistic")
    if not isinstance(k, int) or k < 0:
        raise EvalError(f"eval.benchmarks.<retrieval>.rerank_k: expected an integer >= 0, got {k!r}")
    if tie not in TIE_POLICIES:
        raise EvalError(f"eval.benchmarks.<retrieval>.tie: expected one of {TIE_POLICIES}, got {tie!r}")
    return k, tie


def run_retrieval(benchmark: str, source: BenchmarkSource, settings: Any, checkpoint: Path, out: Path,
                  recipe_digest: str, limit: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Embed, score, rank; write the report and its files into ``out``; return the report."""
    from vidtempo.data.collate import VideoCollator
    from vidtempo.eval.generation import load_model, torch_device
    from vidtempo.eval.report import write_json

    rerank_k, tie = retrieval_options(source)
    device = torch_device(settings.device)
    model, tokenizer = load_model(str(checkpoint), device)
    check_model(model, rerank_k)
    pairs = LOADERS[benchmark](source)
    if limit is not None:
        pairs = pairs.without(set(range(limit, len(pairs.videos))))  # the first N videos and their captions
    collator = VideoCollator(tokenizer, **settings.collator)
    emb = embed_pairs(model, collator, pairs, settings.batch_size, device, keep_fused=rerank_k > 0)
    kept = pairs.without(set(range(len(pairs.videos))) - set(emb.kept))
    if not kept.videos:
        raise EvalError(f"{benchmark}: no video could be decoded (e.g. {emb.skipped[:1]})")
    order = {v: i for i, v in enumerate(emb.kept)}
    video = emb.video[[order[v] for v in sorted(emb.kept)]]  # (V, E) in the kept videos' order
    text = emb.text[[i for i, v in enumerate(pairs.text_to_video) if v in order]]  # (T, E)
    sim = (text @ video.t()).numpy().astype(np.float64)  # (T, V)
    report: dict[str, Any] = {"metrics": retrieval_metrics_multi(sim, kept.text_to_video, tie=tie)}
    final = sim
    if rerank_k:
        fused = [emb.fused[order[v]] for v in sorted(emb.kept)]
        final = rerank(model, sim, kept.texts, fused, rerank_k, device)
        report["reranked"] = retrieval_metrics_multi(final, kept.text_to_video, tie=tie)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "similarity.npy", final)
    ranks = query_ranks(final, kept.text_to_video, tie)
    with (out / "ranks.jsonl").open("w", encoding="utf-8") as f:
        for i, rank in enumerate(ranks.tolist()):
            f.write(json.dumps({"id": kept.text_ids[i], "caption": kept.texts[i],
                                "video": kept.videos[kept.text_to_video[i]], "rank": int(rank)}) + "\n")  # fmt: skip
    rank_histogram_png(ranks.tolist(), out / "rank_histogram.png")
    report.update({
        "benchmark": benchmark, "kind": "retrieval", "num_items": len(kept.texts), "num_videos": len(kept.videos),
        "tie": tie, "rerank_k": rerank_k,
        "similarity": "cosine of the contrastive head's unit embeddings (text @ video)"
                      + ("; top-k re-scored: matching logit + similarity, others -100" if rerank_k else ""),
        "files": {"similarity": "similarity.npy", "ranks": "ranks.jsonl", "histogram": "rank_histogram.png"},
        "checkpoint": str(checkpoint), "recipe_sha256": recipe_digest, "frame_sampling": dict(settings.collator),
        "annotations": source.annotations, "skipped_videos": emb.skipped,
        "counts": {"generated_this_run": len(kept.texts), "resumed": 0, "skipped": len(emb.skipped)},
    })  # fmt: skip
    write_json(out / "report.json", report)
    return report

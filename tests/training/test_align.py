"""The ``align`` objective (DaMO stage 1): each loss decreases on a toy batch and equals a hand computation on
3 pairs; VTM negatives are never the positive (nor another caption of the same video); gradients reach every
trainable part and no frozen one; a batch where some videos have no audio trains; captions generate causally;
the collator's pairs; and the all-gather of VTC negatives over 2 gloo processes."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from vidtempo.models.compressors.t_fuseformer import decoder_attention_bias
from vidtempo.models.interfaces import TrainableParts
from vidtempo.training.align import (
    AlignBatch,
    AlignCollator,
    AlignObjective,
    caption_loss,
    check_weights,
    contrastive_loss,
    matching_loss,
    same_video,
    sample_hard_negatives,
)

COMP = {"_target_": "t_fuseformer", "in_dim": 32, "audio_dim": 32, "width": 16, "num_heads": 2, "depth": 1,
        "visual_queries": 6, "audio_queries": 2, "fusion_tokens": 4, "num_queries": 4, "local_grid": [2, 2],
        "audio_segments": 2, "segment_seconds": None, "audio_local_tokens": 2, "dropout": 0.0,
        "qformer": {"preset": "tiny", "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
                    "initializer_range": 0.2},  # a random tiny Q-Former: larger init, no dropout
        "embed_dim": 16}  # fmt: skip
STAGE1 = {
    "vision_encoder": False,
    "audio_encoder": False,
    "compressor": True,
    "projector": False,
    "llm": False,
}
CAPTIONS = [
    "a red circle then a beep",
    "two blue squares",
    "a green star moves left",
    "three beeps then a cut",
]


def tiny_model(audio: bool = True):
    from vidtempo.models.build import build_video_llm

    torch.manual_seed(0)
    node = {"_target_": "vidtempo.models.VideoLLM", "vision_encoder": {"_target_": "tiny"}, "compressor": COMP,
            "projector": {"_target_": "linear", "in_dim": 32, "out_dim": 64}, "llm": {"_target_": "tiny"},
            "trainable": STAGE1}  # fmt: skip
    if audio:
        node["audio_encoder"] = {"_target_": "tiny"}
    return build_video_llm(node)


def toy_batch(audio_lengths: list[int] | None = None, keys: list[str] | None = None) -> AlignBatch:
    gen = torch.Generator().manual_seed(3)
    b = len(CAPTIONS)
    audio = None if audio_lengths is None else torch.randn(b, 8000, generator=gen) * 0.1
    return AlignBatch(
        captions=list(CAPTIONS), video_keys=keys or [f"v{i}" for i in range(b)],
        frames=torch.rand(b, 4, 3, 32, 32, generator=gen), frame_mask=torch.ones(b, 4, dtype=torch.bool),
        timestamps=torch.arange(4.0).expand(b, 4) + 0.5, audio=audio,
        audio_lengths=None if audio_lengths is None else torch.tensor(audio_lengths),
    )  # fmt: skip


# ------------------------------------------------------------------------------------------- hand computations
def _smoothed_ce(logits: list[float], target: int, eps: float) -> float:
    """Cross-entropy with label smoothing, written out: (1 - eps) * -log p_target + eps * mean_j -log p_j."""
    top = max(logits)
    log_z = top + math.log(sum(math.exp(x - top) for x in logits))
    nll = [log_z - x for x in logits]
    return (1 - eps) * nll[target] + eps * sum(nll) / len(nll)


def test_vtc_equals_a_hand_computation_on_three_pairs():
    v = torch.nn.functional.normalize(torch.tensor([[1.0, 0.2], [0.1, 1.0], [-0.7, 0.4]]), dim=-1)
    t = torch.nn.functional.normalize(torch.tensor([[0.9, -0.1], [0.3, 0.8], [-0.5, 0.5]]), dim=-1)
    temp = 0.07
    sim = [[sum(a * b for a, b in zip(vi.tolist(), tj.tolist())) / temp for tj in t] for vi in v]
    v2t = sum(_smoothed_ce(sim[i], i, 0.1) for i in range(3)) / 3
    t2v = sum(_smoothed_ce([sim[j][i] for j in range(3)], i, 0.1) for i in range(3)) / 3
    got = contrastive_loss(v, t, torch.tensor(temp), label_smoothing=0.1)
    assert float(got) == pytest.approx((v2t + t2v) / 2, rel=1e-5)


def test_vtm_equals_a_hand_computation_on_three_pairs():
    pos = torch.tensor([[0.2, 1.5], [-0.3, 0.4], [1.0, 1.0]])
    neg = torch.tensor([[1.2, -0.5], [0.0, 0.7], [0.3, 0.3], [2.0, 0.1], [-1.0, 0.5], [0.5, 0.6]])
    expected = [_smoothed_ce(r, 1, 0.0) for r in pos.tolist()] + [
        _smoothed_ce(r, 0, 0.0) for r in neg.tolist()
    ]
    assert float(matching_loss(pos, neg)) == pytest.approx(sum(expected) / 9, rel=1e-6)


def test_vtg_equals_a_hand_computation_on_three_captions():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 6, generator=gen)  # (B, L, V)
    ids = torch.tensor([[2, 4, 5, 3], [2, 1, 3, 0], [2, 3, 0, 0]])
    mask = (ids > 0).long()
    terms = [_smoothed_ce(logits[b, i].tolist(), int(ids[b, i + 1]), 0.1)
             for b in range(3) for i in range(3) if mask[b, i + 1]]  # fmt: skip
    assert float(caption_loss(logits, ids, mask, 0.1)) == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def test_the_objective_total_is_the_weighted_sum_of_its_terms():
    model = tiny_model().eval()
    obj = AlignObjective(model, optim={"lr": 1e-3}, weights={"vtc": 1.0, "vtm": 0.0, "vtg": 0.5})
    torch.manual_seed(0)
    total, metrics = obj.compute_loss(toy_batch(), "train")
    assert "vtm_loss" not in metrics
    assert total.item() == pytest.approx(
        float(metrics["vtc_loss"]) + 0.5 * float(metrics["vtg_loss"]), rel=1e-6
    )
    comp = model.compressor  # VTC through the model's retrieval embeddings (embed_video / embed_text)
    batch = toy_batch()
    with torch.no_grad():
        expected = contrastive_loss(model.embed_video(batch.video_inputs()), model.embed_text(batch.captions),
                                    comp.temp.clamp(0.001, 0.5), 0.1)  # fmt: skip
    assert float(metrics["vtc_loss"]) == pytest.approx(float(expected), rel=1e-5)


# ------------------------------------------------------------------------------------------- training behaviour
@pytest.mark.parametrize("term", ["vtc", "vtm", "vtg"])
def test_each_loss_decreases_on_a_toy_batch(term: str):
    model = tiny_model(audio=False).train()
    obj = AlignObjective(
        model, optim={"lr": 1e-3}, weights={k: float(k == term) for k in ("vtc", "vtm", "vtg")}
    )
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    batch, values = toy_batch(), []
    for step in range(20):
        torch.manual_seed(step)  # VTM's negatives are sampled
        loss, _ = obj.compute_loss(batch, "train")
        opt.zero_grad()
        loss.backward()
        opt.step()
        values.append(loss.item())
    assert values[-1] < 0.8 * values[0], values


def _vtm_overfit_curve(steps: int, hide_text: bool = False) -> list[float]:
    """VTM alone on the fixed 4-pair toy batch, through the objective's loss and the optimiser that training
    builds for it (``build_optimizer`` with the objective's trained modules: the matching head included).
    ``hide_text`` is the negative control: the joint pass's text mask is zeroed, so the queries cannot read
    the caption (the bug this test exists to catch)."""
    from vidtempo.training.optim import OptimSettings, build_optimizer

    model = tiny_model(audio=False).train()
    obj = AlignObjective(model, weights={"vtc": 0.0, "vtm": 1.0, "vtg": 0.0})
    comp = model.compressor
    if hide_text:
        see_all = comp.match_logits
        comp.match_logits = lambda fused, ids, mask: see_all(fused, ids, torch.zeros_like(mask))
    settings = OptimSettings(lr=1e-3, scheduler="constant")
    opt, _ = build_optimizer(model, settings, steps, extra=obj.trained_modules())
    assert any(p is comp.itm_head.weight for g in opt.param_groups for p in g["params"])
    batch, values = toy_batch(), []
    for step in range(steps):
        torch.manual_seed(step)  # the hard negatives are sampled
        loss, _ = obj.compute_loss(batch, "train")
        opt.zero_grad()
        loss.backward()
        opt.step()
        values.append(loss.item())
    return values


def test_vtm_alone_overfits_a_tiny_batch_and_cannot_without_the_text():
    """VTM can learn through the real path: on 4 fixed pairs it falls far below 0.637, the loss of a constant
    prediction with 1/3 positives (the value it sat at in every stage-1 run). With the caption hidden from
    the queries it stays near that value, so the test fails on that bug."""
    prior = -(math.log(1 / 3) / 3 + 2 * math.log(2 / 3) / 3)  # 0.6365
    learned = _vtm_overfit_curve(80)
    assert sum(learned[-10:]) / 10 < 0.25 * prior, learned
    blind = _vtm_overfit_curve(80, hide_text=True)
    assert sum(blind[-10:]) / 10 > 0.8 * prior, blind


def test_gradients_reach_every_trainable_part_and_no_frozen_one():
    model = tiny_model().train()
    obj = AlignObjective(model, optim={"lr": 1e-3})
    loss, _ = obj.compute_loss(toy_batch(audio_lengths=[8000, 8000, 4000, 0]), "train")
    loss.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("compressor.") for n in trainable)
    without = sorted(
        n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())
    )
    assert without == []
    frozen_with_grad = [n for n, p in model.named_parameters() if not p.requires_grad and p.grad is not None]
    assert frozen_with_grad == []


def test_the_text_paths_train_only_under_the_align_objective():
    from vidtempo.models.compressors.t_fuseformer import is_text_path

    model = tiny_model()
    text = [p for n, p in model.compressor.named_parameters() if is_text_path(n)]
    assert text and not any(p.requires_grad for p in text)  # an SFT stage: frozen, nothing reads them
    obj = AlignObjective(model, optim={"lr": 1e-3})
    assert all(p.requires_grad for p in text)
    obj.on_fit_end()  # the stage is over: the next stage's freeze plan leaves them frozen again
    assert not any(p.requires_grad for p in text)


def test_a_batch_where_some_videos_have_no_audio_trains():
    model = tiny_model().train()
    obj = AlignObjective(model, optim={"lr": 1e-3})
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for lengths in ([8000, 0, 8000, 0], [0, 0, 0, 0]):
        loss, metrics = obj.compute_loss(toy_batch(audio_lengths=lengths), "train")
        assert torch.isfinite(loss) and metrics["videos_without_audio"] == float(lengths.count(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_vtm_negatives_are_never_the_positive_nor_the_same_video():
    gen = torch.Generator().manual_seed(0)
    keys = ["a", "b", "a", "c", "d"]  # captions 0 and 2 describe the same video
    same = same_video(keys, torch.device("cpu"))
    sim = torch.eye(5) * 50.0 + torch.randn(5, 5, generator=gen)  # the positive is by far the most similar
    sim[0, 2] = sim[2, 0] = 40.0
    drawn = set()
    for _ in range(300):
        rows, cols = sample_hard_negatives(sim, same, gen)
        assert rows.tolist() == [0, 1, 2, 3, 4]
        for r, c in zip(rows.tolist(), cols.tolist()):
            assert r != c and keys[r] != keys[c]
            drawn.add((r, c))
    assert len(drawn) > 5  # sampled, not a fixed argmax
    rows, cols = sample_hard_negatives(torch.zeros(2, 2), same_video(["x", "x"], torch.device("cpu")))
    assert rows.numel() == cols.numel() == 0  # nothing left to draw: no negative


def test_vtm_on_a_batch_with_two_captions_of_one_video_uses_other_videos():
    model = tiny_model(audio=False).eval()
    obj = AlignObjective(model, optim={"lr": 1e-3}, weights={"vtc": 0.0, "vtg": 0.0})
    _, metrics = obj.compute_loss(toy_batch(keys=["v0", "v0", "v2", "v3"]), "train")
    assert metrics["vtm_negatives"] == 8.0  # one per video and one per caption


def test_caption_generation_is_causal_and_queries_never_read_the_caption():
    model = tiny_model(audio=False).eval()
    comp = model.compressor
    with torch.no_grad():
        fused = comp.fuse(model.compressor_input(toy_batch().video_inputs()))
        ids, mask = comp.tokenize(["a red circle then a beep", "a red circle then two cuts"])
        fused2 = type(fused)(fused.states[[0, 0]], fused.mask[[0, 0]], 0)  # one video, two captions
        logits = comp.caption_logits(fused2, ids, mask)
        bias = decoder_attention_bias(comp.num_queries, mask, torch.float32)  # the mask caption_logits uses
        queries = comp._qformer(ids, bias, comp.query_tokens.expand(2, -1, -1), fused2)[:, : comp.num_queries]
        torch.testing.assert_close(queries, comp.query_states(fused2))  # the queries never read the caption
    first_diff = int((ids[0] != ids[1]).nonzero()[0])
    torch.testing.assert_close(logits[0, :first_diff], logits[1, :first_diff])  # the future is never read
    assert not torch.allclose(logits[0, first_diff + 1], logits[1, first_diff + 1])


def test_bad_settings_fail_with_one_line_errors():
    with pytest.raises(ValueError, match="unknown loss weight 'itc'"):
        check_weights({"itc": 1.0})
    with pytest.raises(ValueError, match="every loss weight is 0"):
        check_weights({"vtc": 0, "vtm": 0, "vtg": 0})
    with pytest.raises(ValueError, match="vtm_negatives must be one of local, global, got 'all'"):
        AlignObjective(torch.nn.Linear(2, 2), vtm_negatives="all")
    from vidtempo.training.auxiliary.frame_heads import SaliencyLoss

    with pytest.raises(ValueError, match="auxiliary loss 'saliency' reads hidden_states, token_frames; align runs no"):
        AlignObjective(torch.nn.Linear(2, 2), aux={"saliency": SaliencyLoss()})
    from vidtempo.models.build import build_video_llm

    pool = build_video_llm({"_target_": "vidtempo.models.VideoLLM", "vision_encoder": {"_target_": "tiny"},
                            "compressor": {"_target_": "pool", "in_dim": 32}, "llm": {"_target_": "tiny"}})  # fmt: skip
    with pytest.raises(ValueError, match="no alignment heads"):
        AlignObjective(pool).compute_loss(toy_batch(), "train")


def test_check_recipe_names_the_key():
    from vidtempo.config.errors import RecipeError

    stage = {"objective": {"_target_": "align"}, "model": {"compressor": {"_target_": "pool", "in_dim": 8}}}
    with pytest.raises(RecipeError, match="model.compressor"):
        AlignObjective.check_recipe(stage, "r.yaml", "")
    with pytest.raises(RecipeError, match="objective.weights"):
        AlignObjective.check_recipe({"objective": {"weights": {"vtx": 1}}}, "r.yaml", "")
    with pytest.raises(RecipeError, match="objective.vtm_negatives"):
        AlignObjective.check_recipe({"objective": {"vtm_negatives": "all"}}, "r.yaml", "stages.0.")
    AlignObjective.check_recipe({"objective": {}, "model": {"compressor": COMP}}, "r.yaml", "")


def test_collator_pairs_retrieval_samples_and_conversations(tmp_path: Path):
    from vidtempo.data.samples import ConversationSample, RetrievalSample
    from vidtempo.data.testing import make_test_video
    from vidtempo.models.tokenizers import tiny_tokenizer

    video = str(make_test_video(tmp_path / "v.mp4", duration=2.0))
    collate = AlignCollator(tiny_tokenizer(), num_frames=3, frame_size=32, audio=True)
    conv = ConversationSample(video=video, messages=[{"role": "user", "content": "<video>Describe."},
                                                    {"role": "assistant", "content": " a red circle "}], id="c")  # fmt: skip
    batch = collate([RetrievalSample(video=video, caption="two beeps", id="r"), conv,
                     RetrievalSample(video=str(tmp_path / "missing.mp4"), caption="x", id="gone")])  # fmt: skip
    assert batch.captions == ["two beeps", "a red circle"] and batch.ids == ["r", "c"]
    assert batch.frames.shape == (2, 3, 3, 32, 32) and batch.audio_lengths.tolist()[0] > 0
    assert batch.video_keys[0] == batch.video_keys[1] and [s.id for s in batch.skipped] == ["gone"]
    with pytest.raises(ValueError, match="sample 'nocap' has no caption"):
        collate([ConversationSample(video=video, messages=[{"role": "user", "content": "hi"}], id="nocap")])


def test_encoder_tag_aux_loss_adds_to_the_total_and_trains_the_vision_encoder():
    from vidtempo.training.auxiliary.encoder_tags import EncoderTagLoss

    model = tiny_model()
    model.set_trainable(TrainableParts(**{**STAGE1, "vision_encoder": True}))
    obj = AlignObjective(model, weights={"vtm": 0, "vtg": 0}, aux={"tag": EncoderTagLoss(weight=0.5, slots=2)},
                         targets={"frame_tags": 3})  # fmt: skip
    batch = toy_batch()
    tags = torch.zeros(len(batch), 4, 3)
    tags[0, :2, 0] = tags[1, 2:, 1] = 1.0
    tags[3] = float("nan")  # a pair without events: left out of the tag loss
    batch.targets = {"frame_tags": tags}
    torch.manual_seed(0)
    total, metrics = obj.compute_loss(batch, "train")
    assert torch.allclose(total, metrics["vtc_loss"] + 0.5 * metrics["tag_loss"])
    total.backward()
    head = obj.aux["tag"].scorer.head
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.vision_encoder.parameters() if p.requires_grad)
    assert "aux.tag.scorer.head.weight" in {n for n, p in obj.named_parameters() if p.requires_grad}


def test_check_recipe_takes_encoder_tags_and_refuses_llm_state_losses():
    from vidtempo.config.errors import RecipeError

    tags = {"frame_tags": {"_target_": "event_tags", "labels": ["red circle"]}}
    stage = {"objective": {"_target_": "align", "aux": {"enc": {"_target_": "encoder_tags"}}},
             "model": {"compressor": COMP}, "data": {"collator": {"targets": tags}}}  # fmt: skip
    AlignObjective.check_recipe(stage, "r.yaml", "stages.0.")
    with pytest.raises(RecipeError, match=r"stages\.0\.objective\.aux\.enc.*reads batch target 'frame_tags'"):
        AlignObjective.check_recipe({**stage, "data": {}}, "r.yaml", "stages.0.")
    llm = {**stage, "objective": {"_target_": "align", "aux": {"tag": {"_target_": "frame_tags"}}}}
    with pytest.raises(RecipeError, match=r"objective\.aux\.tag.*reads hidden_states"):
        AlignObjective.check_recipe(llm, "r.yaml", "stages.0.")


def test_collator_builds_tag_targets_from_the_pairs_events(tmp_path: Path):
    from vidtempo.data.samples import RetrievalSample
    from vidtempo.data.testing import make_test_video
    from vidtempo.models.tokenizers import tiny_tokenizer

    video = str(make_test_video(tmp_path / "v.mp4", duration=2.0))
    collate = AlignCollator(tiny_tokenizer(), num_frames=4, frame_size=32,
                            targets={"frame_tags": {"_target_": "event_tags", "labels": ["red circle", "beep"]}})  # fmt: skip
    batch = collate([RetrievalSample(video, "a red circle", "r", meta={"events": [["red circle", 0.0, 1.0]]}),
                     RetrievalSample(video, "no events", "n")])  # fmt: skip
    tags = batch.targets["frame_tags"]  # (2, 4, 2)
    times = batch.timestamps[0]
    assert tags.shape == (2, 4, 2)
    assert tags[0, :, 0].tolist() == [float(t < 1.0) for t in times.tolist()] and tags[0, :, 1].sum() == 0
    assert torch.isnan(tags[1]).all()  # no events: unknown, not "absent"
    assert batch.to("cpu").targets["frame_tags"].shape == (2, 4, 2)


# ------------------------------------------------------------------------------------------- distributed
def _gather_worker(rank: int, init: str, sizes: list[int], out: str) -> None:
    import torch.distributed as dist

    from vidtempo.training.align import contrastive_loss as vtc
    from vidtempo.training.align import gather_with_grad

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    v, t = _pairs(sum(sizes))
    lo = sum(sizes[:rank])
    local_v = v[lo : lo + sizes[rank]].clone().requires_grad_(True)
    local_t = t[lo : lo + sizes[rank]].clone().requires_grad_(True)
    gathered, offset = gather_with_grad(local_v)
    loss = vtc(local_v, local_t, torch.tensor(0.1), 0.1)
    loss.backward()
    torch.save({"gathered": gathered.detach(), "offset": offset, "loss": loss.detach(), "grad": local_v.grad,
                "grad_needs_local": gathered.requires_grad}, f"{out}.{rank}")  # fmt: skip
    dist.destroy_process_group()


def _pairs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    v = torch.nn.functional.normalize(torch.randn(n, 8, generator=gen), dim=-1)
    return v, torch.nn.functional.normalize(v + 0.5 * torch.randn(n, 8, generator=gen), dim=-1)


def test_vtc_negatives_are_all_gathered_over_two_gloo_processes(tmp_path: Path):
    import torch.multiprocessing as mp

    sizes = [3, 1]  # unequal local batches: the gather pads and trims
    out = str(tmp_path / "rank")
    mp.spawn(_gather_worker, args=(f"file://{tmp_path / 'init'}", sizes, out), nprocs=2, join=True)
    v, t = _pairs(4)
    for rank in (0, 1):
        got = torch.load(f"{out}.{rank}")
        torch.testing.assert_close(got["gathered"], v)  # every rank sees all 4 videos in rank order
        assert got["offset"] == sum(sizes[:rank]) and got["grad_needs_local"]
        lo = sum(sizes[:rank])
        local_v = v[lo : lo + sizes[rank]].clone().requires_grad_(True)
        others = torch.cat([v[:lo], local_v, v[lo + sizes[rank] :]])
        sim_v2t = local_v @ t.t() / 0.1
        sim_t2v = t[lo : lo + sizes[rank]] @ others.t() / 0.1
        targets = torch.arange(sizes[rank]) + lo
        ce = torch.nn.functional.cross_entropy
        expected = (ce(sim_v2t, targets, label_smoothing=0.1) + ce(sim_t2v, targets, label_smoothing=0.1)) / 2
        expected.backward()  # the same loss in one process, the other rank's rows as constants
        assert float(got["loss"]) == pytest.approx(expected.item(), rel=1e-5)
        torch.testing.assert_close(got["grad"], local_v.grad)


def _one_pair(i: int, audio: int) -> AlignBatch:
    """Pair i of the toy batch alone, with ``audio`` samples of audio (0 = none: no audio queries at all)."""
    full = toy_batch(audio_lengths=[8000] * len(CAPTIONS))
    return AlignBatch([full.captions[i]], [full.video_keys[i]], full.frames[i : i + 1], full.frame_mask[i : i + 1],
                      full.timestamps[i : i + 1], full.audio[i : i + 1], torch.tensor([audio]))  # fmt: skip


def _vtm_global_worker(rank: int, init: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    model = tiny_model().eval()
    obj = AlignObjective(model, weights={"vtc": 0.0, "vtm": 1.0, "vtg": 0.0}, vtm_negatives="global")
    loss, metrics = obj.compute_loss(_one_pair(rank, 8000 if rank == 0 else 0), "train")
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    torch.save({"loss": loss.detach(), "negatives": metrics["vtm_negatives"], "grads": grads}, f"{out}.{rank}")
    dist.destroy_process_group()


def test_vtm_global_negatives_come_from_the_other_rank_over_two_gloo_processes(tmp_path: Path):
    """One pair per rank: locally there is no negative; with ``vtm_negatives: global`` each rank pairs its
    video with the other rank's caption and its caption with the other rank's video (captions of different
    lengths, one video with audio queries and one without: the gather pads both). Loss and gradients equal
    the same pairs in one process, the other rank's video a constant."""
    import torch.multiprocessing as mp

    out = str(tmp_path / "rank")
    mp.spawn(_vtm_global_worker, args=(f"file://{tmp_path / 'init'}", out), nprocs=2, join=True)
    pairs = [_one_pair(0, 8000), _one_pair(1, 0)]
    for rank in (0, 1):
        model = tiny_model().eval()
        obj = AlignObjective(model, weights={"vtc": 0.0, "vtm": 1.0, "vtg": 0.0})
        comp = model.compressor
        fused = [comp.fuse(model.compressor_input(p.video_inputs())) for p in pairs]
        fused[1 - rank] = type(fused[0])(fused[1 - rank].states.detach(), fused[1 - rank].mask, 0)
        texts = [comp.tokenize(p.captions) for p in pairs]
        other = 1 - rank
        positive = comp.match_logits(fused[rank], *texts[rank])
        negatives = torch.cat([comp.match_logits(fused[rank], *texts[other]),  # my video, the other caption
                               comp.match_logits(fused[other], *texts[rank])])  # the other video, my caption  # fmt: skip
        expected = matching_loss(positive, negatives)
        expected.backward()
        got = torch.load(f"{out}.{rank}")
        assert got["negatives"] == 2.0
        assert float(got["loss"]) == pytest.approx(expected.item(), rel=1e-5)
        want = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        assert got["grads"].keys() == want.keys()
        for name, grad in want.items():
            torch.testing.assert_close(got["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)
        _, local = obj.compute_loss(pairs[rank], "train")
        assert local["vtm_negatives"] == 0.0  # one pair and local negatives: nothing to draw


@pytest.mark.parametrize(
    "plan",
    [
        {"compressor": True, "projector": True, "llm": False},  # bridge
        {"compressor": True, "projector": True, "llm": "lora"},  # temporal / dialogue
    ],
    ids=["bridge", "lora"],
)
def test_sft_stages_train_every_trainable_part_and_no_frozen_one(plan):
    from vidtempo.data.collate import VideoTextBatch
    from vidtempo.models.interfaces import TrainableParts
    from vidtempo.training.sft import SFTModule

    model = tiny_model()
    model.set_trainable(TrainableParts(**plan))
    ids = torch.tensor([[5, -200, 7, 8, 9], [6, -200, 9, 10, 0]])
    mask = (ids != 0).long()
    video = toy_batch(audio_lengths=[8000, 0, 8000, 0])
    batch = VideoTextBatch(input_ids=ids, attention_mask=mask, labels=ids.clamp(min=0) * mask, frames=video.frames[:2],
                           frame_mask=video.frame_mask[:2], timestamps=video.timestamps[:2], audio=video.audio[:2],
                           audio_lengths=video.audio_lengths[:2])  # fmt: skip
    loss, _ = SFTModule(model, optim={"lr": 1e-3}).compute_loss(batch, "train")
    loss.backward()
    from vidtempo.models.compressors.t_fuseformer import is_text_path

    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and not any(
        is_text_path(n.removeprefix("compressor.")) for n in trainable if n.startswith("compressor.")
    )
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []
    assert [n for n, p in model.named_parameters() if not p.requires_grad and p.grad is not None] == []


def test_stage_hand_off_keeps_the_aligned_weights(tmp_path, monkeypatch):
    """Two stages of the tiny recipe (align, then bridge with the compressor frozen): the bridge stage's final
    compressor (text paths included) equals the align stage's, while its projector trained."""
    from safetensors.torch import load_file

    from vidtempo.config.load import load_recipe
    from vidtempo.training.run import train

    monkeypatch.setenv("VIDTEMPO_DATA", str(tmp_path / "data"))
    recipe = Path(__file__).resolve().parents[2] / "recipes" / "tiny" / "damo_synth.yaml"
    cfg = load_recipe(recipe, [f"output_dir={tmp_path / 'run'}", "trainer.max_steps=2", "data.batch_size=4",
                               "data.num_workers=0", "trainer.log_every_n_steps=1"])  # fmt: skip
    cfg.data.train.num_videos, cfg.data.train.max_duration = 10, 8
    cfg.stages = cfg.stages[:2]
    cfg.stages[0].data.batch_size = 4
    cfg.stages[0].trainer.max_steps = 2  # the align stage's own 400 would override the top-level 2
    cfg.stages[1].trainer.max_steps = 2  # and the bridge stage's own 100
    cfg.stages[1].trainable.compressor = False
    cfg.stages[1].optim.lr_multipliers = {}  # the recipe's multiplier names the compressor, frozen here
    train(cfg)
    aligned = load_file(str(tmp_path / "run" / "0_align" / "final" / "model.safetensors"))
    bridged = load_file(str(tmp_path / "run" / "1_bridge" / "final" / "model.safetensors"))
    names = [k for k in aligned if k.startswith("compressor.")]
    assert names and all(torch.equal(aligned[k], bridged[k]) for k in names)
    assert any(not torch.equal(aligned[k], bridged[k]) for k in aligned if k.startswith("projector."))


# ------------------------------------------------------------------------------------------- FSDP2
def _align_recipe(video_dir: Path, tmp_path: Path) -> Path:
    """Stage 1 of the tiny DaMO recipe on the fixture's 4 videos (their answers as captions), SGD, 2 steps."""
    import json

    rows = [json.loads(x) for x in (video_dir / "train.jsonl").read_text().splitlines()]
    for r in rows:
        r["video"] = str(video_dir / r["video"])
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    root = Path(__file__).resolve().parents[2]
    recipe = tmp_path / "align.yaml"
    recipe.write_text(
        f"_base_: {root / 'recipes/tiny/damo_synth.yaml'}\n"
        f"data:\n  train: {{_target_: conversation, path: {tmp_path / 'pairs.jsonl'}}}\n  val: null\n"
        "  shuffle: false\n  batch_size: 2\n  num_workers: 0\n"
        "  collator: {num_frames: 4, cache_decoded: 0}\n"
        "optim: {name: sgd, lr: 0.05, warmup_steps: 0, scheduler: constant}\n"
        "trainer: {max_steps: 2, log_every_n_steps: 1}\n"
        "checkpoint: {every_n_steps: 0}\n"
        "stages:\n  - name: align\n    objective: {_target_: align, weights: {vtc: 1.0, vtm: 1.0, vtg: 1.0}}\n"
        "    trainable: {vision_encoder: true, audio_encoder: true, compressor: true, projector: false, "
        "llm: false}\n"
    )
    return recipe


def _run_align(recipe: Path, out: Path, *overrides: str) -> tuple[dict, list[dict]]:
    import csv
    import subprocess
    import sys

    from safetensors.torch import load_file

    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "-m", "vidtempo.cli.main", "train", str(recipe), f"output_dir={out}", *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(out / "0_align" / "logs" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/vtc_loss")]
    return load_file(str(out / "0_align" / "final" / "model.safetensors")), rows


@pytest.mark.distributed
def test_align_under_fsdp2_trains_like_ddp_with_all_gathered_negatives(video_dir: Path, tmp_path: Path):
    recipe = _align_recipe(video_dir, tmp_path)
    two = ("trainer.devices=2", "data.batch_size=1")
    ddp, ddp_log = _run_align(recipe, tmp_path / "ddp", *two, "trainer.strategy=ddp")
    fsdp, fsdp_log = _run_align(recipe, tmp_path / "fsdp", *two, "trainer.strategy=fsdp")
    # one pair per rank: VTC over the local pair alone would be 0; the other rank's pair is the negative
    assert float(fsdp_log[0]["train/vtc_loss"]) > 0.5
    assert float(fsdp_log[0]["train/vtc_loss"]) == pytest.approx(float(ddp_log[0]["train/vtc_loss"]), rel=1e-4)
    assert ddp.keys() == fsdp.keys()
    moved = [k for k in ddp if k.startswith("compressor.")]
    assert moved
    for key in ddp:
        torch.testing.assert_close(fsdp[key], ddp[key], rtol=1e-4, atol=1e-5, msg=key)


def test_embedding_spread_is_one_for_a_collapsed_batch_and_is_logged():
    from vidtempo.training.align import embedding_spread

    same = torch.nn.functional.normalize(torch.ones(4, 3), dim=-1)
    assert float(embedding_spread(same)) == pytest.approx(1.0)
    assert float(embedding_spread(torch.eye(4))) == pytest.approx(0.0)
    model = tiny_model(audio=False)
    _, metrics = AlignObjective(model, optim={"lr": 1e-3}).compute_loss(toy_batch(), "train")
    with torch.no_grad():
        v = model.embed_video(toy_batch().video_inputs())
    off = (v @ v.t())[~torch.eye(4, dtype=torch.bool)].mean()
    assert float(metrics["video_spread"]) == pytest.approx(float(off), abs=1e-5)
    assert 0.0 <= float(metrics["text_spread"]) <= 1.0


def test_a_checkpoint_with_a_0d_temperature_loads():
    # the temperature became shape (1,) for FSDP2 (fully_shard refuses 0-d parameters); older files hold ()
    model = tiny_model(audio=False)
    state = {k: v.clone() for k, v in model.compressor.state_dict().items()}
    state["temp"] = torch.tensor(0.05)
    model.compressor.load_state_dict(state)
    assert model.compressor.temp.shape == (1,) and float(model.compressor.temp) == pytest.approx(0.05)

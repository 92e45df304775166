"""TDC compressor: token counts vs the methods.md 2.5 formula, layout, budget guard, queries, text and audio
conditioning, gradients, the Q-Former's BERT initialisation, and a tiny TDC VideoLLM end to end."""

from __future__ import annotations

import pytest
import torch

from vidtempo.models.compressors.qformer import QFormer, tiny_qformer_tokenizer
from vidtempo.models.compressors.tdc import TDCCompressor, pool_audio_per_frame
from vidtempo.models.interfaces import AudioFeatures, CompressorInput
from vidtempo.models.projectors import IdentityProjector
from vidtempo.models.segmentation import SceneSegmenter

K = 16


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_qformer_tokenizer()


def _tdc(tokenizer, **kw) -> TDCCompressor:
    torch.manual_seed(0)
    kw.setdefault("qformer", "tiny")
    return TDCCompressor(in_dim=8, llm_dim=16, tokenizer=tokenizer, **kw).eval()


def _scene_feats(cuts: list[int], frames: int, p: int = 4, d: int = 8, seed: int = 0) -> torch.Tensor:
    """(T, P, D): one random base per scene plus small noise, so the segmenter cuts at ``cuts``."""
    gen = torch.Generator().manual_seed(seed)
    bounds = [0, *cuts, frames]
    parts = [
        torch.randn(1, p, d, generator=gen) + 0.05 * torch.randn(e - s, p, d, generator=gen)
        for s, e in zip(bounds[:-1], bounds[1:])
    ]
    return torch.cat(parts)


def _inputs(videos: list[torch.Tensor], grid: tuple[int, int], query=None, audio=None) -> CompressorInput:
    """Right-pad a list of (T_i, P, D) videos into a batch at 1 fps (frames at i + 0.5 s)."""
    t = max(len(v) for v in videos)
    feats = torch.zeros(len(videos), t, *videos[0].shape[1:])
    mask = torch.zeros(len(videos), t, dtype=torch.bool)
    for i, v in enumerate(videos):
        feats[i, : len(v)] = v
        mask[i, : len(v)] = True
    times = torch.arange(t).float().expand(len(videos), t) + 0.5
    return CompressorInput(
        feats=feats, frame_mask=mask, timestamps=times, grid=grid, query=query, audio=audio
    )


def _chunk_lengths(comp: TDCCompressor, video: torch.Tensor) -> list[int]:
    return [e - s for s, e in comp.segmenter.segment(video).chunks]


# ------------------------------------------------------------------------------------------------- counts
def test_count_tokens_follow_the_methods_formula(tokenizer) -> None:
    plain = _tdc(tokenizer, newline=False)
    assert plain.count_tokens([8], (12, 12)) == 144 + 1 + 7 * (16 + 1) == 264  # methods.md 2.5
    assert plain.count_tokens([1], (12, 12)) == 145  # single-frame chunk: [frame; <Sep>]
    layout = [8, 8, 3, 1, 5]
    expected = sum(145 + (n - 1) * 17 for n in layout)
    assert plain.count_tokens(layout, (12, 12)) == expected
    assert plain.count_tokens([8], (12, 12), audio=True) == 264 + 50  # audio tokens only on the static frame
    newline = _tdc(tokenizer, newline=True)
    assert newline.count_tokens([8], (12, 12)) == 12 * (12 + 1) + 1 + 119 == 276
    assert newline.count_tokens([8, 8], (12, 7)) == 2 * (
        12 * 8 + 1 + 119
    )  # 16:9 unpadded width 7: 84 + 1 + 119
    no_static = _tdc(tokenizer, add_static=False, newline=False)
    assert no_static.count_tokens(layout, (12, 12)) == sum(layout) * 17
    k8 = _tdc(tokenizer, num_queries=8, newline=False)
    assert k8.count_tokens([8], (12, 12)) == 145 + 7 * 9


def test_forward_counts_and_layout_match_the_segmentation(tokenizer) -> None:
    comp = _tdc(tokenizer, max_segments=3, newline=True)
    videos = [_scene_feats([7, 19, 30], 40, p=144), _scene_feats([5, 21, 26], 29, p=144, seed=1)]
    out = comp(_inputs(videos, (12, 12), query=["when is the red circle visible?", "how many beeps?"]))
    lengths = [_chunk_lengths(comp, v) for v in videos]
    assert lengths[0] == [7, 8, 4, 8, 3, 8, 2]
    counts = [comp.count_tokens(ls, (12, 12)) for ls in lengths]
    assert out.mask.sum(1).tolist() == counts
    assert out.tokens.shape == (2, max(counts), 16)
    assert not out.mask[1, counts[1] :].any() and out.tokens[1, counts[1] :].abs().sum() == 0
    assert out.info is not None and out.info["chunks_per_video"] == [7, 5] and out.info["trimmed"] == 0
    # chunk 1 of video 0: static frame 0 (12 rows of 12 tokens + newline), <Sep>, then frames 1..6 as K + <Sep>
    with torch.no_grad():
        frame0 = comp.frame_proj(videos[0][0])  # (144, 16)
    tok = out.tokens[0]
    torch.testing.assert_close(tok[:12], frame0[:12])
    torch.testing.assert_close(tok[12], comp.newline.detach())
    torch.testing.assert_close(tok[13:25], frame0[12:24])
    torch.testing.assert_close(tok[156], comp.sep.detach())
    ctx = tok[157 : 157 + K]
    torch.testing.assert_close(ctx.norm(dim=-1), torch.ones(K))  # L2-normalised Q-Former tokens
    torch.testing.assert_close(tok[157 + K], comp.sep.detach())
    second_chunk = 157 + 6 * (K + 1)  # chunk 2 starts with the static frame 7 (first frame after the cut)
    with torch.no_grad():
        torch.testing.assert_close(tok[second_chunk], comp.frame_proj(videos[0][7])[0])


def test_num_tokens_is_exact_or_a_tight_upper_bound(tokenizer) -> None:
    comp = _tdc(tokenizer, newline=False)  # top-k with 24 cut points, chunks of 8
    static, ctx = 25 + 1, K + 1  # 5x5 grid: a static frame costs more than a compressed one
    assert comp.num_tokens(20, (5, 5)) == 20 * static  # T <= 25: every frame is its own scene
    assert comp.num_tokens(0, (5, 5)) == 0
    # T = 40 with the 24 cuts right after frames 0..23: 24 one-frame scenes + a 16-frame scene (2 chunks)
    distinct = torch.randn(24, 25, 8, generator=torch.Generator().manual_seed(3)) * 5
    video = torch.cat([distinct, _scene_feats([], 16, p=25, seed=4)])
    assert comp.segmenter.segment(video).cuts == list(range(1, 25))
    out = comp(_inputs([video], (5, 5)))
    bound = 26 * static + (40 - 26) * ctx  # the most chunks 24 cuts can make
    assert comp.num_tokens(40, (5, 5)) == bound == int(out.mask.sum())
    random_video = torch.randn(40, 25, 8, generator=torch.Generator().manual_seed(5))
    assert int(comp(_inputs([random_video], (5, 5))).mask.sum()) <= bound
    # 2x2 grid: static frames are cheaper than K + 1, so the bound is at the fewest chunks (25 scenes)
    assert comp.num_tokens(40, (2, 2)) == 25 * 5 + 15 * ctx
    flat = _tdc(tokenizer, newline=False, max_segments=0)  # no segmentation: exact chunks of 8
    assert flat.num_tokens(30, (12, 12)) == 3 * 264 + (145 + 5 * 17)
    guarded = _tdc(tokenizer, newline=False, max_segments=0, max_tokens=500)
    # 1022 tokens in chunks of 264, 264, 264, 230: ceil(522 / 4) = 131 off every chunk -> 498 (<= 500)
    assert guarded.num_tokens(30, (12, 12)) == 3 * (264 - 131) + (230 - 131) == 498


# ------------------------------------------------------------------------------------------------- guard
def test_budget_guard_trims_chunk_ends_and_reports(tokenizer) -> None:
    comp = _tdc(tokenizer, newline=False, max_segments=0)  # chunks of 8 frames, 4 + 1 + 7 * 17 = 124 tokens
    assert comp.count_tokens([8, 8], (2, 2)) == 248
    comp.max_tokens = 201  # excess 47 -> ceil(47 / 2) = 24 from the end of both chunks: 100 + 100
    assert comp.count_tokens([8, 8], (2, 2)) == 200
    comp.max_tokens = 100  # [8, 1]: 124 + 5 = 129, excess 29 -> per 15: 109 + 0, then hard-truncated to 100
    assert comp.count_tokens([8, 1], (2, 2)) == 100
    video = torch.randn(16, 4, 8, generator=torch.Generator().manual_seed(1))
    short = torch.randn(9, 4, 8, generator=torch.Generator().manual_seed(2))
    comp.max_tokens = None
    full = comp(_inputs([video, short], (2, 2), query=["what happens?", "what happens?"]))
    comp.max_tokens = 201
    cut = comp(_inputs([video, short], (2, 2), query=["what happens?", "what happens?"]))
    assert cut.mask.sum(1).tolist() == [200, 129]  # the short video (124 + 5) fits and is untouched
    frames = cut.info.pop("token_frames")  # (B, N): the frame each token came from, -1 = padding
    assert cut.info == {"trimmed": 48, "chunks": 4, "trimmed_per_video": [48, 0], "chunks_per_video": [2, 2]}
    assert frames.shape == cut.mask.shape and ((frames >= 0) == cut.mask).all()
    # chunk 1: static frame 0 (4 tokens + <Sep>), then frames 1.. with K + <Sep> each, cut at 100 tokens
    assert frames[0, :5].tolist() == [0] * 5 and frames[0, 5:22].tolist() == [1] * 17
    assert frames[0, 99] == 6 and frames[0, 100] == 8  # the guard removed frame 7; chunk 2 starts at frame 8
    assert frames[1, :129].tolist() == [0] * 5 + sum(([f] * 17 for f in range(1, 8)), []) + [8] * 5
    kept = torch.cat([full.tokens[0, :100], full.tokens[0, 124:224]])  # the end of every chunk is removed
    torch.testing.assert_close(cut.tokens[0, :200], kept)
    torch.testing.assert_close(cut.tokens[1, :129], full.tokens[1, :129])


# ------------------------------------------------------------------------------------------------- conditioning
def test_queries_avg_pool_depend_on_the_static_frame_learned_do_not(tokenizer) -> None:
    video = torch.randn(8, 4, 8, generator=torch.Generator().manual_seed(0))
    changed = video.clone()
    changed[0] += 3.0  # only the static frame differs
    for query_type, depends in (("avg_pool", True), ("learned", False)):
        comp = _tdc(tokenizer, newline=False, max_segments=0, query_type=query_type)
        assert (comp.query_proj is None) == (query_type == "learned")
        assert (comp.learned_queries is None) == (query_type == "avg_pool")
        a = comp(_inputs([video], (2, 2), query=["when?"])).tokens[0, 5 : 5 + K]  # frame 1's K tokens
        b = comp(_inputs([changed], (2, 2), query=["when?"])).tokens[0, 5 : 5 + K]
        assert (not torch.allclose(a, b)) == depends, query_type


def test_qformer_conditions_on_the_instruction_text(tokenizer) -> None:
    comp = _tdc(tokenizer, newline=False, max_segments=0)
    video = torch.randn(8, 4, 8, generator=torch.Generator().manual_seed(0))
    a = comp(_inputs([video, video], (2, 2), query=["when is the red circle visible?", "how many beeps?"]))
    b = comp(
        _inputs([video], (2, 2), query=["<video>\nwhen is the red circle visible?"])
    )  # placeholder stripped
    torch.testing.assert_close(a.tokens[0], b.tokens[0])
    torch.testing.assert_close(a.tokens[0, :5], a.tokens[1, :5])  # static tokens ignore the text
    assert not torch.allclose(a.tokens[0, 5:], a.tokens[1, 5:])  # compressed frames depend on it
    blind = _tdc(tokenizer, newline=False, max_segments=0, text_input=False)
    assert blind.tokenizer is None
    x = blind(_inputs([video], (2, 2), query=["when?"])).tokens
    torch.testing.assert_close(x, blind(_inputs([video], (2, 2), query=["how many beeps?"])).tokens)


def test_add_static_false_compresses_every_frame(tokenizer) -> None:
    comp = _tdc(tokenizer, newline=False, max_segments=0, add_static=False)
    out = comp(_inputs([torch.randn(11, 4, 8)], (2, 2)))
    assert int(out.mask.sum()) == 11 * (K + 1) == comp.num_tokens(11, (2, 2))
    torch.testing.assert_close(out.tokens[0, :K].norm(dim=-1), torch.ones(K))  # frame 0 is compressed too


# ------------------------------------------------------------------------------------------------- audio
def test_pool_audio_per_frame_windows_and_dropped_seconds() -> None:
    times = torch.arange(20) * 0.2 + 0.1  # 5 steps per second over 4 s
    feats = torch.randn(20, 3)
    mask = torch.ones(20, dtype=torch.bool)
    mask[-2:] = False  # padding steps are ignored
    pooled = pool_audio_per_frame(feats, times, mask, torch.tensor([0.5, 2.5]), tokens=4)
    assert pooled.shape == (2, 4, 3)
    pool = torch.nn.AdaptiveAvgPool1d(4)
    # frame 0 (second 0) also takes second 1, whose frame was dropped; frame 1 takes seconds 2-3 (valid part)
    torch.testing.assert_close(pooled[0], pool(feats[:10].T[None])[0].T)
    torch.testing.assert_close(pooled[1], pool(feats[10:18].T[None])[0].T)
    empty = pool_audio_per_frame(
        feats, times, torch.zeros(20, dtype=torch.bool), torch.tensor([0.5]), tokens=4
    )
    assert empty.abs().sum() == 0


def test_audio_tokens_change_counts_and_reach_the_qformer(tokenizer) -> None:
    comp = _tdc(tokenizer, newline=False, max_segments=0, audio_dim=6, audio_tokens_per_frame=5)
    video = torch.randn(8, 4, 8, generator=torch.Generator().manual_seed(0))
    times = (torch.arange(80) * 0.1 + 0.05)[None]  # 10 steps per second over the 8 s
    feats = torch.randn(1, 80, 6, generator=torch.Generator().manual_seed(1))
    audio = AudioFeatures(feats=feats, times=times, mask=torch.ones(1, 80, dtype=torch.bool))
    silent = comp(_inputs([video], (2, 2), query=["beep?"]))
    heard = comp(_inputs([video], (2, 2), query=["beep?"], audio=audio))
    assert int(silent.mask.sum()) == comp.count_tokens([8], (2, 2)) == 124
    assert int(heard.mask.sum()) == comp.count_tokens([8], (2, 2), audio=True) == 124 + 5
    torch.testing.assert_close(heard.tokens[0, :4], silent.tokens[0, :4])  # visual tokens first, then audio
    with torch.no_grad():
        expected = comp.audio_proj(torch.nn.functional.adaptive_avg_pool1d(feats[0, :10].T[None], 5)[0].T)
    torch.testing.assert_close(heard.tokens[0, 4:9], expected)
    louder = AudioFeatures(feats=feats.clone(), times=times, mask=audio.mask)
    louder.feats[0, 30:40] += 2.0  # second 3 = compressed frame 3 only
    other = comp(_inputs([video], (2, 2), query=["beep?"], audio=louder)).tokens[0]
    ctx = slice(10 + 2 * (K + 1), 10 + 2 * (K + 1) + K)  # frame 3's compressed tokens
    assert not torch.allclose(other[ctx], heard.tokens[0, ctx])
    torch.testing.assert_close(other[: 10 + 2 * (K + 1)], heard.tokens[0, : 10 + 2 * (K + 1)])
    with pytest.raises(ValueError, match="audio_dim is not set"):
        _tdc(tokenizer)(_inputs([video], (2, 2), audio=audio))


# ------------------------------------------------------------------------------------------------- gradients
def test_gradients_reach_qformer_queries_and_sep(tokenizer) -> None:
    comp = _tdc(tokenizer, newline=True, max_segments=0, audio_dim=6, audio_tokens_per_frame=2).train()
    audio = AudioFeatures(
        torch.randn(1, 40, 6), torch.arange(40)[None] * 0.25, torch.ones(1, 40, dtype=torch.bool)
    )
    out = comp(
        _inputs([torch.randn(10, 4, 8)], (2, 2), query=["when is the red circle visible?"], audio=audio)
    )
    (out.tokens * torch.randn_like(out.tokens) * out.mask[..., None]).sum().backward()
    named = dict(comp.named_parameters())
    for name in (
        "sep",
        "newline",
        "query_proj.weight",
        "vision_proj.weight",
        "frame_proj.0.weight",
        "audio_proj.weight",
        "qformer.model.encoder.layer.0.crossattention.attention.key.weight",
        "qformer.model.encoder.layer.1.output_query.dense.weight",
        "qformer.model.embeddings.word_embeddings.weight",  # the instruction text takes part
    ):
        grad = named[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_l2_scale_is_a_learnable_norm_of_the_qformer_tokens(tokenizer) -> None:
    inputs = _inputs([torch.randn(10, 4, 8)], (2, 2), query=["which shape appears first?"])
    comp = _tdc(tokenizer, max_segments=0, newline=False, l2_scale=3.0)
    unit = _tdc(tokenizer, max_segments=0, newline=False)  # same seed: the same weights, unit norm
    with torch.no_grad():
        scaled, base = comp(inputs).tokens[0], unit(inputs).tokens[0]
    ctx = slice(5, 5 + K)  # chunk 1: static frame (4 tokens) + <Sep>, then frame 1's K tokens
    torch.testing.assert_close(scaled[ctx].norm(dim=-1), torch.full((K,), 3.0))
    torch.testing.assert_close(scaled[ctx], 3.0 * base[ctx])
    torch.testing.assert_close(scaled[:4], base[:4])  # static tokens are not scaled
    out = comp.train()(inputs)
    (out.tokens * torch.randn_like(out.tokens) * out.mask[..., None]).sum().backward()
    assert comp.l2_scale.grad is not None and comp.l2_scale.grad.abs() > 0
    for bad in ({"l2_scale": 0.0}, {"l2_scale": 2.0, "l2_normalize": False}):
        with pytest.raises(ValueError, match="l2_scale"):
            _tdc(tokenizer, **bad)


# ------------------------------------------------------------------------------------------------- Q-Former
def test_qformer_load_pretrained_from_a_local_bert(tmp_path) -> None:
    from transformers import BertConfig, BertForMaskedLM

    bert = BertForMaskedLM(BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=64))  # fmt: skip
    bert.save_pretrained(tmp_path)
    qf = QFormer(encoder_width=16, preset="tiny", vocab_size=320)
    cross_before = qf.model.encoder.layer[0].crossattention.attention.key.weight.clone()
    qf.load_pretrained(tmp_path)
    src, ours = bert.bert.encoder.layer[1], qf.model.encoder.layer[1]
    torch.testing.assert_close(ours.attention.attention.value.weight, src.attention.self.value.weight)
    torch.testing.assert_close(ours.output_query.dense.weight, src.output.dense.weight)
    torch.testing.assert_close(qf.model.embeddings.layernorm.weight, bert.bert.embeddings.LayerNorm.weight)
    torch.testing.assert_close(
        qf.model.embeddings.word_embeddings.weight[:300], bert.bert.embeddings.word_embeddings.weight
    )
    torch.testing.assert_close(qf.model.encoder.layer[0].crossattention.attention.key.weight, cross_before)
    with pytest.raises(ValueError, match="hidden_size"):
        QFormer(
            encoder_width=16, preset="tiny", config={"hidden_size": 64, "intermediate_size": 64}
        ).load_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="config.json"):
        qf.load_pretrained(tmp_path / "missing")


def test_bad_inputs_raise_clear_errors(tokenizer) -> None:
    comp = _tdc(tokenizer)
    with pytest.raises(ValueError, match="grid"):
        comp(_inputs([torch.randn(3, 4, 8)], (3, 3)))
    with pytest.raises(ValueError, match="in_dim=8"):
        comp(_inputs([torch.randn(3, 4, 5)], (2, 2)))
    with pytest.raises(ValueError, match="query_type"):
        _tdc(tokenizer, query_type="mean")
    with pytest.raises(ValueError, match="preset"):
        _tdc(tokenizer, qformer="bert_huge")


# ------------------------------------------------------------------------------------------------- end to end
def test_tdc_video_llm_forward_backward(tokenizer) -> None:
    from vidtempo.models.encoders.hf_vision import SiglipEncoder
    from vidtempo.models.interfaces import VideoInputs
    from vidtempo.models.llms.presets import tiny_llm
    from vidtempo.models.video_llm import VIDEO_TOKEN_INDEX, VideoLLM

    torch.manual_seed(0)
    enc = SiglipEncoder({"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                         "num_attention_heads": 2, "image_size": 32, "patch_size": 8})  # fmt: skip
    llm = tiny_llm()
    comp = TDCCompressor(in_dim=enc.out_dim, llm_dim=llm.hidden_size, qformer="tiny", tokenizer=tokenizer,
                         segmenter=SceneSegmenter(max_segments=1, chunk_size=4))  # fmt: skip
    model = VideoLLM(
        vision_encoder=enc, compressor=comp, llm=llm, projector=IdentityProjector(llm.hidden_size)
    )
    ids = torch.tensor([[5, VIDEO_TOKEN_INDEX, 7, 8, 9], [5, VIDEO_TOKEN_INDEX, 7, 8, 0]])
    attn = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    frames = torch.rand(2, 7, 3, 32, 32)
    frame_mask = torch.tensor([[True] * 7, [True] * 5 + [False] * 2])
    video = VideoInputs(frames=frames, frame_mask=frame_mask, timestamps=torch.arange(7.0).expand(2, 7) + 0.5,
                        queries=["when is it red?", "how many?"])  # fmt: skip
    out = model(input_ids=ids, attention_mask=attn, labels=ids.clamp(min=0), video=video)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert comp.sep.grad is not None and comp.sep.grad.abs().sum() > 0
    assert comp.query_proj.weight.grad.abs().sum() > 0
    # 7 frames, one cut -> chunks of <= 4 frames; 4x4 grid + newlines = 20 tokens per static frame
    for i, n in enumerate((7, 5)):
        with torch.no_grad():
            feats, _ = enc.encode(frames[i, :n])
        lengths = [e - s for s, e in comp.segmenter.segment(feats).chunks]
        assert int(out.num_video_tokens[i]) == comp.count_tokens(lengths, (4, 4))
    assert out.info["chunks"] == sum(out.info["chunks_per_video"]) >= 4


def test_time_embedding_follows_each_tokens_frame(tokenizer) -> None:
    """With ``time_embedding`` every token gets its own frame's time; padding stays zero."""
    comp = _tdc(tokenizer, newline=False, max_segments=0, time_embedding=True)
    videos = [torch.randn(8, 4, 8), torch.randn(5, 4, 8)]
    inputs = _inputs(videos, (2, 2), query=["when?", "when?"])
    out = comp(inputs)
    with torch.no_grad():
        comp.time_scale.zero_()
    plain = comp(inputs)
    added = out.tokens - plain.tokens  # (B, N, H): the time embedding alone
    frames = out.info["token_frames"]
    assert added[1, ~out.mask[1]].abs().sum() == 0
    same_frame = frames[0] == frames[0, 0]
    torch.testing.assert_close(added[0, same_frame], added[0, :1].expand(int(same_frame.sum()), -1))
    assert (added[0, frames[0] == 1][0] - added[0, 0]).abs().sum() > 0  # another frame, another time
    comp.time_scale.data.fill_(1.0)
    comp(inputs).tokens.sum().backward()
    assert comp.time_scale.grad is not None and comp.time_scale.grad.abs() > 0


_TOKENS_IN_A_NEW_PROCESS = """
import json, sys
from vidtempo.models.compressors.qformer import tiny_qformer_tokenizer
tok = tiny_qformer_tokenizer()
print(json.dumps([len(tok), tok("When is the red circle visible? Which of these appears last?")["input_ids"]]))
"""


def test_tiny_tokenizer_is_the_same_in_every_process(tokenizer) -> None:
    """A TDC model rebuilds its tiny Q-Former tokenizer when it is loaded: an evaluation process must read the
    instruction with the token ids the model was trained with (the tokenizers trainer broke ties differently
    in every process, so it did not)."""
    import json
    import os
    import subprocess
    import sys

    here = [len(tokenizer), tokenizer("When is the red circle visible? Which of these appears last?")["input_ids"]]
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", _TOKENS_IN_A_NEW_PROCESS], capture_output=True, text=True,
                             env=env, check=True).stdout  # fmt: skip
        assert json.loads(out.strip().splitlines()[-1]) == here
    assert tokenizer.convert_ids_to_tokens(here[1])[:4] == ["[CLS]", "when", "is", "the"]


def test_checkpoint_keeps_the_qformer_tokenizer_it_was_trained_with(tmp_path) -> None:
    """The Q-Former's text embeddings belong to the ids of its training tokenizer: a checkpoint stores that
    tokenizer, and a reload (evaluation, a next stage) uses it instead of rebuilding one from the recipe."""
    import json

    from vidtempo.models.build import build_video_llm
    from vidtempo.models.checkpoint import COMPRESSOR_TOKENIZER_DIR, load_pretrained, save_pretrained
    from vidtempo.training.run import load_weights

    node = {"_target_": "vidtempo.models.VideoLLM", "vision_encoder": {"_target_": "tiny"},
            "compressor": {"_target_": "tdc", "in_dim": 32, "llm_dim": 64, "num_queries": 2, "newline": False,
                           "qformer": "tiny", "tokenizer": "tiny"},
            "projector": {"_target_": "identity", "dim": 64}, "llm": {"_target_": "tiny"}}  # fmt: skip
    model = build_video_llm(node)
    save_pretrained(model, tmp_path, model_config=node)
    saved = tmp_path / COMPRESSOR_TOKENIZER_DIR / "tokenizer.json"
    assert saved.is_file()
    # a tokenizer that numbers two words the other way round, as a changed vocabulary would
    spec = json.loads(saved.read_text())
    vocab = spec["model"]["vocab"]
    vocab["red"], vocab["blue"] = vocab["blue"], vocab["red"]
    saved.write_text(json.dumps(spec))
    fresh = build_video_llm(node).compressor.tokenizer
    reloaded = load_pretrained(tmp_path, load_tokenizer=False)[0]
    handed_over = build_video_llm(node)
    load_weights(handed_over, tmp_path)
    for m in (reloaded, handed_over):
        ids = m.compressor.tokenizer("red blue")["input_ids"]
        assert ids[1:3] == [vocab["red"], vocab["blue"]] == fresh("blue red")["input_ids"][1:3]

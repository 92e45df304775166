"""T-Fuseformer (DaMO) compressor: documented defaults, exact token count, the visual path alone when audio is
missing (per video and per batch), temporal embeddings and global residual switches, CLS vs patch-mean global
feature, padding, gradients, input errors, and a tiny VideoLLM built around it."""

from __future__ import annotations

import inspect

import pytest
import torch

from vidtempo.models.compressors.t_fuseformer import (
    TFuseformerCompressor,
    _CrossBlock,
    decoder_attention_bias,
    is_text_path,
    time_locality_bias,
)
from vidtempo.models.interfaces import AudioFeatures, CompressorInput

SMALL = {"in_dim": 8, "audio_dim": 6, "width": 16, "num_heads": 2, "depth": 2, "visual_queries": 6,
         "audio_queries": 2, "fusion_tokens": 4, "num_queries": 5, "local_grid": (2, 2), "audio_segments": 2,
         "segment_seconds": None, "audio_local_tokens": 3, "qformer": "tiny", "dropout": 0.0}  # fmt: skip


def _comp(**kw) -> TFuseformerCompressor:
    torch.manual_seed(0)
    return TFuseformerCompressor(**{**SMALL, **kw}).eval()


def _inputs(
    b: int = 2, t: int = 4, audio: list[bool] | None = None, p: int = 16, seed: int = 0
) -> CompressorInput:
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(b, t, p, 8, generator=gen)
    sound = None
    if audio is not None:
        steps = torch.arange(8).float().expand(b, 8) * 0.5 + 0.25  # 4 s of audio, 2 steps per second
        mask = torch.tensor(audio)[:, None].expand(b, 8).clone()
        sound = AudioFeatures(torch.randn(b, 8, 6, generator=gen), steps, mask)
    return CompressorInput(feats=feats, frame_mask=torch.ones(b, t, dtype=torch.bool),
                           timestamps=torch.arange(t).float().expand(b, t) + 0.5, grid=(4, 4), audio=sound)  # fmt: skip


def _run(comp: TFuseformerCompressor, inputs: CompressorInput) -> torch.Tensor:
    with torch.no_grad():
        return comp(inputs).tokens


def test_defaults_are_the_documented_counts():
    params = inspect.signature(TFuseformerCompressor).parameters
    defaults = {name: params[name].default for name in ("width", "depth", "num_heads", "visual_queries",
                                                       "audio_queries", "fusion_tokens", "num_queries",
                                                       "audio_segments", "segment_seconds", "embed_dim")}  # fmt: skip
    assert defaults == {"width": 768, "depth": 4, "num_heads": 12, "visual_queries": 192, "audio_queries": 64,
                        "fusion_tokens": 128, "num_queries": 32, "audio_segments": 8, "segment_seconds": 30.0,
                        "embed_dim": 256}  # fmt: skip
    assert _comp(visual_queries=6, audio_queries=2).alpha == 3.0
    assert _comp(audio_dim=None).alpha == 0.0


@pytest.mark.parametrize("frames", [1, 3, 4, 7])
@pytest.mark.parametrize("audio", [None, [True, False]])
def test_num_tokens_is_exact(frames: int, audio):
    comp = _comp(out_dim=12)
    out = comp(_inputs(t=frames, audio=audio))
    assert out.tokens.shape == (2, 5, 12) and out.mask.all()
    assert comp.num_tokens(frames, (4, 4), audio is not None) == 5 == int(out.mask[0].sum())
    assert comp.out_dim == 12 and _comp().out_dim == 32  # no out_dim: the Q-Former width


@pytest.mark.parametrize("streams", [False, True])
@pytest.mark.parametrize("window", [None, 0.2])
def test_missing_audio_takes_the_visual_path_alone(streams: bool, window: float | None):
    comp = _comp(qformer_reads_streams=streams, time_window=window)
    mixed = comp(_inputs(audio=[True, False]))
    assert mixed.info == {"videos_without_audio": 1}
    none = comp(_inputs(audio=None))  # the whole batch without audio
    assert none.info == {"videos_without_audio": 2}
    all_silent = comp(_inputs(audio=[False, False]))
    torch.testing.assert_close(mixed.tokens[1], none.tokens[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(all_silent.tokens, none.tokens, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(mixed.tokens[0], none.tokens[0], atol=1e-3)  # audio matters where it exists
    visual_only = _comp(audio_dim=None)
    assert visual_only(_inputs(audio=None)).info == {"videos_without_audio": 2}


def test_audio_windows_cover_the_clip_and_fixed_windows_mask_empty_ones():
    comp = _comp(segment_seconds=30.0)  # 4 s of audio: the second 30-s window is empty and masked
    fused = comp.fuse(_inputs(audio=[True, True]))
    assert fused.mask.all()  # the audio queries of both videos are kept
    tokens, mask, times = comp._audio_stream(_inputs(audio=[True, True]).audio, torch.tensor([True, True]))
    assert tokens.shape == (2, 2 * 3, 16) and mask[:, :3].all() and not mask[:, 3:].any()
    assert torch.equal(times[0], torch.tensor([15.0] * 3 + [45.0] * 3))
    split = _comp()  # segment_seconds None: the 4 s split into 2 windows, both heard (the last one was once
    _, mask, _ = split._audio_stream(_inputs(audio=[True, True]).audio, torch.tensor([True, True]))  # masked)
    assert mask.all()


def test_the_q_former_can_also_read_the_stream_tokens():
    """``qformer_reads_streams``: the fused states gain each modality's stream tokens (visual: 2 windows x 4
    local slots; audio: 2 windows x 3 slots), masked for a video without audio; no new weights, so a checkpoint
    of either setting loads into the other; the token count stays exact."""
    plain, streams = _comp(), _comp(qformer_reads_streams=True)
    assert plain.state_dict().keys() == streams.state_dict().keys()
    streams.load_state_dict(plain.state_dict())
    a, b = plain.fuse(_inputs(audio=[True, False])), streams.fuse(_inputs(audio=[True, False]))
    assert b.states.shape[1] == a.states.shape[1] + 2 * 4 + 2 * 3
    assert b.mask[0].all() and not b.mask[1, -6:].any() and b.mask[1, -14:-6].all()
    torch.testing.assert_close(b.states[:, : a.states.shape[1]], a.states)  # the queries are as before
    assert streams(_inputs(t=3, audio=[True, False])).tokens.shape == (2, 5, 32)
    assert not torch.allclose(_run(plain, _inputs()), _run(streams, _inputs()), atol=1e-4)


def test_anchored_queries_start_from_the_time_code_of_their_part_of_the_clip():
    """``anchored_queries``: visual query k (of 6) gets the shared time code of the instant k / 5 of the way
    from the first to the last real frame; no new weights; refused without time embeddings."""
    plain, anchored = _comp(), _comp(anchored_queries=True)
    assert plain.state_dict().keys() == anchored.state_dict().keys()
    inputs = _inputs(t=4)  # frames at 0.5 .. 3.5 s
    queries = anchored.visual_queries.expand(2, -1, -1)
    got = anchored._anchored(queries, inputs.frame_mask, inputs.timestamps)
    want = queries + anchored._time_code(torch.linspace(0.5, 3.5, 6).expand(2, 6))
    torch.testing.assert_close(got, want)
    assert not torch.allclose(_run(plain, inputs), _run(anchored, inputs), atol=1e-4)
    with pytest.raises(ValueError, match="anchored_queries needs time_embedding"):
        _comp(anchored_queries=True, time_embedding=False)


def test_time_locality_bias_is_a_gaussian_of_the_place_difference():
    nan = float("nan")
    got = time_locality_bias(torch.tensor([[0.0, 0.5]]), torch.tensor([[0.0, 1.0, nan]]), 0.25)
    torch.testing.assert_close(got, torch.tensor([[[0.0, -8.0, 0.0], [-2.0, -2.0, 0.0]]]))
    assert time_locality_bias(torch.zeros(1, 1), torch.ones(1, 1), 1e-6).item() == -50.0  # capped at d = 10


def test_time_window_keeps_a_query_off_the_other_moments_per_video_and_head():
    """The bias reaches each video's rows of every head: with a tiny window the query placed at the start
    takes no gradient from keys placed elsewhere, whatever the batch row (keys in a different order per row)."""
    torch.manual_seed(0)
    block = _CrossBlock(width=8, heads=2, mlp_ratio=2.0, dropout=0.0)
    q, x = torch.randn(2, 2, 8), torch.randn(2, 3, 8, requires_grad=True)
    k_places = torch.tensor([[0.0, 0.5, 1.0], [1.0, 0.0, 0.5]])
    bias = time_locality_bias(torch.tensor([[0.0, 1.0]]).expand(2, 2), k_places, 1e-3)
    block(q, x, torch.ones(2, 3, dtype=torch.bool), bias)[:, 0].sum().backward()
    assert x.grad is not None
    near = (k_places == 0.0)[..., None].expand_as(x.grad)
    assert x.grad[~near].abs().max() < 1e-12 < x.grad[near].abs().min()
    plain = _CrossBlock(width=8, heads=2, mlp_ratio=2.0, dropout=0.0)  # no bias: the default path, unchanged
    plain.load_state_dict(block.state_dict())
    zero = torch.zeros(2, 2, 3)
    torch.testing.assert_close(block(q, x, torch.ones(2, 3, dtype=torch.bool), zero),
                               plain(q, x, torch.ones(2, 3, dtype=torch.bool)))  # fmt: skip


def test_time_window_places_every_fused_state_and_biases_the_q_former():
    """``time_window``: the fused states' places (fusion tokens none, queries spread over the clip, stream tokens
    at their window's place between the first and last real frame) and the Q-Former's (B, 1, K, E) additive
    cross-attention mask; no new weights; refused when not > 0."""
    plain, local = _comp(qformer_reads_streams=True), _comp(qformer_reads_streams=True, time_window=0.2)
    assert plain.state_dict().keys() == local.state_dict().keys()
    assert plain.fuse(_inputs()).positions is None
    fused = local.fuse(_inputs(audio=[True, False]))  # frames 0.5 .. 3.5 s; 2 visual windows at 1 s and 3 s
    pos = fused.positions
    assert pos is not None and pos.shape == fused.mask.shape
    assert pos[:, :4].isnan().all()  # the 4 fusion tokens
    torch.testing.assert_close(pos[:, 4:10], torch.linspace(0, 1, 6).expand(2, 6))  # visual queries
    torch.testing.assert_close(pos[:, 10:12], torch.tensor([0.0, 1.0]).expand(2, 2))  # audio queries
    torch.testing.assert_close(pos[:, 12:20], torch.tensor([1 / 6] * 4 + [5 / 6] * 4).expand(2, 8))  # visual
    centres = (torch.tensor([0.5] * 3 + [1.5] * 3) * (3.75 + 1e-3) / 2 - 0.5) / 3  # audio: 2 windows of 0-3.75 s
    torch.testing.assert_close(pos[0, 20:], centres)
    mask = local._encoder_mask(fused, torch.float32)
    assert mask.shape == (2, 1, 5, 26)
    want = time_locality_bias(torch.linspace(0, 1, 5).expand(2, 5), pos, 0.2)
    torch.testing.assert_close(mask[0, 0], want[0])
    assert (mask[1, 0][:, ~fused.mask[1]] == torch.finfo(torch.float32).min).all()  # no audio: masked out
    assert not torch.allclose(_run(plain, _inputs()), _run(local, _inputs()), atol=1e-4)
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="time_window must be > 0"):
            _comp(time_window=bad)


def test_time_embedding_reads_absolute_seconds_and_can_be_switched_off():
    shifted = _inputs()
    shifted.timestamps = shifted.timestamps + 10.0
    on, off = _comp(), _comp(time_embedding=False)
    assert not torch.allclose(_run(on, _inputs()), _run(on, shifted), atol=1e-4)
    torch.testing.assert_close(_run(off, _inputs()), _run(off, shifted))


def test_global_residual_uses_cls_when_present_else_the_patch_mean():
    comp = _comp(audio_dim=None)
    with_cls = _inputs(p=17)
    other_cls = _inputs(p=17)
    other_cls.feats = other_cls.feats.clone()
    other_cls.feats[:, :, 0] += 5.0  # only the CLS token differs
    assert not torch.allclose(_run(comp, with_cls), _run(comp, other_cls), atol=1e-4)
    no_residual = _comp(audio_dim=None, global_residual=False)
    torch.testing.assert_close(_run(no_residual, with_cls), _run(no_residual, other_cls))
    # without CLS the patch mean is the global feature: a residual-only change (same pooled grid) shows it
    assert not torch.allclose(_run(comp, _inputs()), _run(no_residual, _inputs()), atol=1e-4)


@pytest.mark.parametrize("streams", [False, True])
@pytest.mark.parametrize("anchored", [False, True])
@pytest.mark.parametrize("window", [None, 0.2])
def test_padded_frames_do_not_change_the_tokens(streams: bool, anchored: bool, window: float | None):
    comp = _comp(audio_dim=None, qformer_reads_streams=streams, anchored_queries=anchored, time_window=window)
    a, b = _inputs(t=5), _inputs(t=5)
    a.frame_mask[1, 3:] = False
    b.frame_mask[1, 3:] = False
    b.feats = b.feats.clone()
    b.feats[1, 3:] = 100.0
    torch.testing.assert_close(_run(comp, a), _run(comp, b))


def test_gradients_reach_every_forward_parameter_and_the_text_paths_are_declared_unused():
    comp = _comp(out_dim=12).train()
    comp(_inputs(audio=[True, False])).tokens.pow(2).mean().backward()
    unused = comp.unused_parameter_names()
    assert unused and all(is_text_path(n) for n in unused)
    assert [n for n, p in comp.named_parameters() if p.grad is None and n not in unused] == []
    assert all(
        p.grad is None for n, p in comp.named_parameters() if n in unused
    )  # the token path never reads them
    comp.text_paths_active = True  # what the align objective switches on
    assert comp.unused_parameter_names() == set()


def test_bad_inputs_name_the_problem():
    comp = _comp()
    bad_grid = _inputs()
    bad_grid.grid = (3, 3)
    with pytest.raises(ValueError, match="grid"):
        comp(bad_grid)
    empty = _inputs()
    empty.frame_mask[1] = False
    with pytest.raises(ValueError, match=r"video\(s\) \[1\]"):
        comp(empty)
    with pytest.raises(ValueError, match="audio_dim is not set"):
        _comp(audio_dim=None)(_inputs(audio=[True, True]))
    with pytest.raises(ValueError, match="temporal_groups"):
        _comp(temporal_groups=3)
    with pytest.raises(ValueError, match="visual_queries"):
        _comp(visual_queries=0)


def test_decoder_bias_hides_text_from_queries_and_the_future():
    bias = decoder_attention_bias(3, torch.tensor([[1, 1, 1, 0]]), torch.float32)[0, 0] == 0  # (7, 7) allowed
    assert bias[:3, :3].all() and not bias[:3, 3:].any()  # queries: queries only
    assert bias[3:, :3].all() and torch.equal(bias[3:6, 3:6], torch.ones(3, 3, dtype=torch.bool).tril())
    assert not bias[:, 6].any()  # padding is never read


def test_video_llm_with_t_fuseformer_embeds_videos_and_texts():
    from vidtempo.models.build import build_video_llm
    from vidtempo.models.interfaces import VIDEO_TOKEN_INDEX, VideoInputs

    torch.manual_seed(0)
    node = {"_target_": "vidtempo.models.VideoLLM", "vision_encoder": {"_target_": "tiny"},
            "audio_encoder": {"_target_": "tiny"}, "projector": {"_target_": "linear", "in_dim": 32, "out_dim": 64},
            "compressor": {"_target_": "t_fuseformer", **{**SMALL, "in_dim": 32, "audio_dim": 32}},
            "llm": {"_target_": "tiny"}}  # fmt: skip
    model = build_video_llm(node).eval()
    assert {"embed_video", "embed_text", "audio"} <= set(model.capabilities)
    video = VideoInputs(frames=torch.rand(2, 4, 3, 32, 32), timestamps=torch.arange(4.0).expand(2, 4) + 0.5,
                        audio=torch.randn(2, 8000) * 0.1, audio_lengths=torch.tensor([8000, 0]))  # fmt: skip
    ids = torch.tensor([[5, VIDEO_TOKEN_INDEX, 7], [6, VIDEO_TOKEN_INDEX, 9]])
    with torch.no_grad():
        out = model(ids, torch.ones_like(ids), video=video)
        emb_v, emb_t = model.embed_video(video), model.embed_text(["a red circle", "two beeps"])
    assert out.num_video_tokens.tolist() == [5, 5] == [model.video_tokens(4, True)] * 2
    assert out.info["videos_without_audio"] == 1
    assert emb_v.shape == emb_t.shape == (2, 256)
    torch.testing.assert_close(emb_v.norm(dim=-1), torch.ones(2))
    no_align = build_video_llm({**node, "compressor": {**node["compressor"], "alignment": False}})
    assert not {"embed_video", "embed_text"} & set(no_align.capabilities)


def test_query_tokens_are_not_frames_so_llm_frame_losses_refuse_and_encoder_tags_bind():
    """Q-Former queries each read the whole clip: a VideoLLM around t_fuseformer must not declare
    ``token_frames`` (16 queries for 16 frames would otherwise be read as one token per frame, silently), the
    LLM-side saliency / tag losses refuse it by name, and the encoder-side tag loss still binds."""
    from vidtempo.models.build import build_video_llm
    from vidtempo.training.auxiliary import AuxLossError, EncoderTagLoss, FrameTagLoss, SaliencyLoss, bind_aux

    node = {"_target_": "vidtempo.models.VideoLLM", "vision_encoder": {"_target_": "tiny"},
            "projector": {"_target_": "linear", "in_dim": 32, "out_dim": 64},
            "compressor": {"_target_": "t_fuseformer", **{**SMALL, "in_dim": 32, "audio_dim": None}},
            "llm": {"_target_": "tiny"}}  # fmt: skip
    model = build_video_llm(node)
    assert "token_frames" not in model.capabilities
    assert "frame_features" in model.capabilities
    channels = {"frame_targets": 13, "frame_tags": 14}
    with pytest.raises(AuxLossError, match=r"objective\.aux\.saliency: .*'token_frames'"):
        bind_aux({"saliency": SaliencyLoss(slots=13)}, model, channels)
    with pytest.raises(AuxLossError, match=r"objective\.aux\.tag: .*'token_frames'"):
        bind_aux({"tag": FrameTagLoss()}, model, channels)
    bound = bind_aux({"encoder_tag": EncoderTagLoss(slots=12)}, model, channels)
    assert list(bound) == ["encoder_tag"]
    pooled = build_video_llm({**node, "compressor": {"_target_": "pool", "in_dim": 32},
                              "projector": {"_target_": "linear", "in_dim": 32, "out_dim": 64}})  # fmt: skip
    assert "token_frames" in pooled.capabilities

"""One-forward DPO (issue 27 items 4 and 6): the label-position LM head and the prefix-shared pair forward equal
the full-logits / two-forward paths (losses and gradients, fp32) on a tiny VideoLLM and the native tiny
Qwen2.5-VL, each video is encoded once per pair, and the fall-backs say why."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from vidtempo.data.preference_collate import PreferenceCollator
from vidtempo.data.samples import PreferenceSample
from vidtempo.models.build import build_video_llm
from vidtempo.models.interfaces import VideoInputs
from vidtempo.models.label_head import LabelHead
from vidtempo.models.native.qwen2_5_vl import Qwen25VLVideoModel, tiny_qwen2_5_vl, tiny_qwen2_5_vl_tokenizer
from vidtempo.models.prefix_share import pair_layout
from vidtempo.training.dpo import DPOModule

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}
PROMPT = [{"role": "user", "content": "<video>\nIn which order do the shapes appear?"}]
ANSWERS = [("red then blue", "blue then red, then green"), ("a circle, then a square", "a square")]


def videollm():
    torch.manual_seed(0)
    return build_video_llm({
        "_target_": "vidtempo.models.VideoLLM", "vision_encoder": {"_target_": "tiny"},
        "compressor": {"_target_": "pool", "in_dim": 32, "stride": 2}, "llm": {"_target_": "tiny", "arch": "qwen2"},
        "trainable": {"llm": "lora", "compressor": False, "projector": False}, "lora": LORA,
    })  # fmt: skip


def qwen():
    torch.manual_seed(0)
    return Qwen25VLVideoModel(llm=tiny_qwen2_5_vl(), trainable={"llm": "lora", "projector": False}, lora=LORA)


MODELS = {"videollm": (videollm, 32), "qwen25vl": (qwen, 56)}


def trained(build):
    """The model with non-zero adapters, so that the policy differs from the adapter-off reference."""
    model = build()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    return model.train()


def pair_batch(name, tokenizer, video_dir, input_side=False, ref=False, pairs=None):
    """The pairs of ``ANSWERS`` (``pairs``: only those indices) as a collated batch."""
    keep = range(len(ANSWERS)) if pairs is None else pairs
    pairs = [PreferenceSample(video=str(video_dir / f"v{i}.mp4"), prompt=PROMPT, chosen=c,
                              rejected=c if input_side else r, id=f"p{i}",
                              rejected_video=str(video_dir / f"v{3 - i}.mp4") if input_side else None,
                              meta={"ref_chosen_logps": -40.0 - i, "ref_rejected_logps": -45.0} if ref else {})
             for i, (c, r) in enumerate(ANSWERS) if i in keep]  # fmt: skip
    tok = tiny_qwen2_5_vl_tokenizer() if name == "qwen25vl" else tokenizer
    return PreferenceCollator(tok, num_frames=4, frame_size=MODELS[name][1])(pairs)


def step(model, batch, **kw):
    module = DPOModule(model, beta=0.1, rpo_alpha=1.0, **kw).train()
    out = module(batch)
    out.loss.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


@pytest.mark.parametrize("name", sorted(MODELS))
def test_label_head_loss_and_gradients_equal_the_full_logits(name, video_dir):
    """SFT loss from the label positions in chunks of 2 (and in one block) == cross-entropy of the full logits."""
    model = trained(MODELS[name][0])
    size = MODELS[name][1]
    ids = torch.tensor([[5, -200, 7, 8, 9, 10, 11], [6, -200, 10, 11, 12, 0, 0]])
    mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2])
    labels = torch.tensor([[-100, -100, -100, 8, 9, 10, 11], [-100, -100, -100, 11, 12, -100, -100]])
    video = VideoInputs(frames=torch.rand(2, 4, 3, size, size), timestamps=torch.tensor([[0.5, 1.5, 2.5, 3.5]] * 2))
    results = []
    for head in (None, LabelHead(chunk_size=2), LabelHead(impl="full")):
        model.zero_grad()
        out = model(ids, mask, labels, video, loss_head=head)
        out.loss.backward()
        results.append((out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
        assert (out.logits is None) == (head is not None)
    (base, base_grads), *others = results
    for out, grads in others:
        assert out.loss.item() == pytest.approx(base.loss.item(), abs=1e-6)
        assert grads.keys() == base_grads.keys()
        for n in grads:
            torch.testing.assert_close(grads[n], base_grads[n], atol=1e-6, rtol=0)


def test_liger_head_is_refused_with_a_clear_message_when_absent():
    pytest.importorskip("torch")
    try:
        import liger_kernel  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="liger-kernel package .* not installed"):
            LabelHead(impl="liger")
        with pytest.raises(ImportError, match="liger-kernel"):
            DPOModule(torch.nn.Linear(2, 2), loss_head="liger", reference="precomputed")
    else:  # pragma: no cover - where it is installed: refused off CUDA instead
        head = LabelHead(impl="liger")
        from vidtempo.models.label_head import token_logps

        with pytest.raises(ValueError, match="CUDA only"):
            token_logps(torch.randn(3, 4), torch.nn.Linear(4, 9, bias=False), torch.tensor([1, 2, 3]), head)
    with pytest.raises(ValueError, match="unknown; valid: chunked, liger, full"):
        LabelHead(impl="fused")


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("reference", ["adapter_off", "precomputed"])
@pytest.mark.parametrize("sharing", ["auto", "off"])
def test_one_forward_equals_two_forwards(name, reference, sharing, tokenizer, video_dir):
    """Shared-prefix rows (auto) and the 2B batch (off): loss, log-probs and every gradient equal the two-forward
    full-logits path to 1e-5 (fp32), with the adapter-off reference scored the same way."""
    batch = pair_batch(name, tokenizer, video_dir, ref=reference == "precomputed")
    base, base_grads = step(trained(MODELS[name][0]), batch, reference=reference, loss_head="logits")
    out, grads = step(trained(MODELS[name][0]), batch, reference=reference, prefix_sharing=sharing,
                      loss_chunk_size=3)  # fmt: skip
    assert out.prefix_shared == (sharing == "auto") and not base.prefix_shared
    assert out.loss.loss.item() == pytest.approx(base.loss.loss.item(), abs=1e-5)
    for a, b in [(out.policy_chosen_logps, base.policy_chosen_logps), (out.policy_rejected_logps,
                 base.policy_rejected_logps), (out.ref_chosen_logps, base.ref_chosen_logps),
                 (out.ref_rejected_logps, base.ref_rejected_logps)]:  # fmt: skip
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-6)
    assert grads.keys() == base_grads.keys() and grads
    for n in grads:
        torch.testing.assert_close(grads[n], base_grads[n], atol=1e-5, rtol=0)


def checkpointed(build):
    """``build`` with gradient checkpointing in the LLM blocks (non-reentrant, as the recipes' ``gradient_checkpointing``)."""

    def make():
        model = build()
        hf = model.hf if isinstance(model, Qwen25VLVideoModel) else model.llm.model
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return model

    return make


@pytest.mark.parametrize("name", sorted(MODELS))
def test_shared_prefix_under_gradient_checkpointing_equals_two_forwards(name, tokenizer, video_dir):
    """The real recipes checkpoint their LLM blocks: the blocks are recomputed in the backward pass, after the
    split attention's config switch is undone, so a checkpointed forward takes the dense shared-prefix mask.
    Found by benchmarks/train_throughput.py (before: CheckpointError, a different number of saved tensors)."""
    batch = pair_batch(name, tokenizer, video_dir)
    base, base_grads = step(trained(MODELS[name][0]), batch, reference="adapter_off", loss_head="logits")
    out, grads = step(trained(checkpointed(MODELS[name][0])), batch, reference="adapter_off")
    assert out.prefix_shared
    assert out.loss.loss.item() == pytest.approx(base.loss.loss.item(), abs=1e-5)
    assert grads.keys() == base_grads.keys() and grads
    for n in grads:
        torch.testing.assert_close(grads[n], base_grads[n], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_input_side_pairs_fall_back_with_a_logged_reason(name, tokenizer, video_dir, caplog):
    batch = pair_batch(name, tokenizer, video_dir, input_side=True)
    base, base_grads = step(trained(MODELS[name][0]), batch, reference="adapter_off", loss_head="logits")
    with caplog.at_level(logging.INFO, logger="vidtempo.training.dpo"):
        out, grads = step(trained(MODELS[name][0]), batch, reference="adapter_off")
    assert not out.prefix_shared
    assert "prefix not shared: chosen and rejected sides show different videos" in caplog.text
    assert out.loss.loss.item() == pytest.approx(base.loss.loss.item(), abs=1e-5)
    for n in grads:
        torch.testing.assert_close(grads[n], base_grads[n], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_each_video_is_encoded_once_per_pair_policy_and_reference(name, tokenizer, video_dir):
    """One policy + adapter-off reference step: the vision tower runs once per batch (the reference reuses the
    frozen video embeddings); the two-forward path ran it four times."""
    batch = pair_batch(name, tokenizer, video_dir)
    counts = {}
    for path in ("logits", "chunked"):
        model = trained(MODELS[name][0])
        calls: list[int] = []
        if name == "qwen25vl":
            model.hf.model.visual.register_forward_hook(lambda *a, calls=calls: calls.append(1))
        else:
            encode = model.vision_encoder.encode
            model.vision_encoder.encode = lambda pixels, calls=calls, encode=encode: calls.append(1) or encode(pixels)
        step(model, batch, reference="adapter_off", loss_head=path)
        counts[path] = len(calls)
    assert counts == {"logits": 4, "chunked": 1}


def test_qwen_rejected_answer_positions_equal_its_own_mrope_positions(video_dir):
    """The rejected answer, placed after the chosen one, gets the 3-D positions get_rope_index gives it alone."""
    model = trained(qwen)
    batch = pair_batch("qwen25vl", None, video_dir)
    layout = pair_layout(model, batch.chosen.model_inputs(), batch.rejected.model_inputs())
    alone = model.prepare_inputs(**batch.rejected.model_inputs())
    assert layout.shared and layout.positions.shape[0] == 3
    for b in range(len(batch)):
        n = int(alone["attention_mask"][b].sum())
        answer = int((batch.rejected.labels[b] != -100).sum())
        row = int((layout.mask[b] >= 0).sum())  # the row without its padding
        torch.testing.assert_close(layout.positions[:, b, row - answer : row], alone["position_ids"][:, b, n - answer : n])


def test_prefix_sharing_option_is_checked():
    with pytest.raises(ValueError, match="prefix_sharing must be one of auto, off"):
        DPOModule(torch.nn.Linear(2, 2), reference="precomputed", prefix_sharing="always")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_split_attention_equals_the_dense_shared_prefix_mask(name, tokenizer, video_dir):
    """The default split attention (causal prefix kernel + small answer mask) == one dense 4-D mask."""
    from vidtempo.models.prefix_share import score_layout

    model = trained(MODELS[name][0])
    batch = pair_batch(name, tokenizer, video_dir)
    layout = pair_layout(model, batch.chosen.model_inputs(), batch.rejected.model_inputs())
    split, dense = score_layout(model, layout), score_layout(model, layout, attention="mask")
    for field in ("chosen_logps", "rejected_logps", "chosen_nll"):
        torch.testing.assert_close(getattr(split, field), getattr(dense, field), atol=1e-5, rtol=1e-6)
    assert split.chosen_lengths.tolist() == dense.chosen_lengths.tolist()
    # a layout made without its spans (by hand): the split attention derives them from the segments
    again = score_layout(model, dataclasses.replace(layout, spans=None))
    assert torch.equal(again.chosen_logps, split.chosen_logps) and torch.equal(again.rejected_logps, split.rejected_logps)


def test_pairs_with_different_prompts_fall_back_to_one_2b_forward():
    """Same video, different prompts: no shared prefix (the reason names the pair), still one forward."""
    from vidtempo.models.interfaces import VIDEO_TOKEN_INDEX as V
    from vidtempo.models.prefix_share import score_pairs

    model = trained(videollm)
    video = VideoInputs(frames=torch.rand(1, 2, 3, 32, 32))
    ones = torch.ones(1, 5, dtype=torch.long)
    chosen = {"input_ids": torch.tensor([[5, V, 7, 8, 9]]), "attention_mask": ones,
              "labels": torch.tensor([[-100, -100, -100, 8, 9]]), "video": video}  # fmt: skip
    rejected = {"input_ids": torch.tensor([[6, V, 7, 9, 8]]), "attention_mask": ones,
                "labels": torch.tensor([[-100, -100, -100, 9, 8]]), "video": video}  # fmt: skip
    scores, layout = score_pairs(model, chosen, rejected)
    assert not layout.shared and layout.reason == "pair 0: chosen and rejected prompts differ"
    assert layout.embeds.shape[0] == 2 and scores.rejected_lengths.tolist() == [2]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_pairs_with_different_prefix_lengths_equal_two_forwards(name, tokenizer, video_dir):
    """Three pairs whose prompts (so prefixes) and answers differ in length: the vectorised layout pads the
    prefix block to the longest prefix and gathers each row's answers; losses, log-probs and gradients still
    equal two forwards (adapter-off reference), and the split attention equals the dense mask."""
    from vidtempo.models.prefix_share import score_layout

    prompts = ["<video>\nOrder?", "<video>\nIn which order do the red, blue and green shapes appear in the clip?",
               "<video>\nWhat comes first, and what comes after it?"]  # fmt: skip
    answers = [("red then blue", "blue"), ("a circle", "a square, then a circle, then a triangle"), ("x", "y z")]
    pairs = [PreferenceSample(video=str(video_dir / f"v{i % 2}.mp4"), prompt=[{"role": "user", "content": p}],
                              chosen=c, rejected=r, id=f"p{i}")
             for i, (p, (c, r)) in enumerate(zip(prompts, answers))]  # fmt: skip
    tok = tiny_qwen2_5_vl_tokenizer() if name == "qwen25vl" else tokenizer
    batch = PreferenceCollator(tok, num_frames=4, frame_size=MODELS[name][1])(pairs)
    model = trained(MODELS[name][0])
    layout = pair_layout(model, batch.chosen.model_inputs(), batch.rejected.model_inputs())
    prefixes = (layout.mask == 0).sum(1)
    assert layout.shared and len(set(prefixes.tolist())) == 3, prefixes
    split, dense = score_layout(model, layout), score_layout(model, layout, attention="mask")
    for field in ("chosen_logps", "rejected_logps", "chosen_nll"):
        torch.testing.assert_close(getattr(split, field), getattr(dense, field), atol=1e-5, rtol=1e-6)
    base, base_grads = step(trained(MODELS[name][0]), batch, reference="adapter_off", loss_head="logits")
    out, grads = step(trained(MODELS[name][0]), batch, reference="adapter_off")
    assert out.prefix_shared
    assert out.loss.loss.item() == pytest.approx(base.loss.loss.item(), abs=1e-5)
    for a, b in [(out.policy_chosen_logps, base.policy_chosen_logps), (out.policy_rejected_logps,
                 base.policy_rejected_logps), (out.ref_chosen_logps, base.ref_chosen_logps),
                 (out.ref_rejected_logps, base.ref_rejected_logps)]:  # fmt: skip
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-6)
    assert grads.keys() == base_grads.keys() and grads
    for n in grads:
        torch.testing.assert_close(grads[n], base_grads[n], atol=1e-5, rtol=0)


def _dpo_step_counts(module: DPOModule, batch) -> dict[str, int]:
    """Counted operator calls of one DPO step (policy + adapter-off reference forward, loss, backward)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        module(batch).loss.loss.backward()
    counts = {e.key: e.count for e in prof.key_averages()}
    return {k: counts.get(k, 0) for k in ("aten::copy_", "aten::item", "aten::_local_scalar_dense", "aten::nonzero")}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_prefix_shared_dpo_step_has_no_per_pair_copies_or_host_syncs(name, tokenizer, video_dir):
    """#27 item 7 on the DPO path: the shared layout (prefix lengths, rows, positions, scored tokens) and the
    split attention are built for all pairs at once, so a prefix-shared step's copies and host reads stay
    flat from 2 to 8 pairs (pairs of varied prompt and answer lengths; VideoLLM and the native Qwen2.5-VL, whose
    input preparation is vectorised too). The per-pair loops this replaced added 15 host reads
    (``aten::item``), 3 ``nonzero`` and 24 copies per extra pair to the VideoLLM step."""
    prompts = ["<video>\nOrder?", "<video>\nIn which order do the red, blue and green shapes appear?",
               "<video>\nWhat comes first?"]  # fmt: skip
    answers = [("red then blue", "blue"), ("a circle", "a square, then a circle"), ("x", "y z"), ("one two", "four")]

    def batch(n: int):
        pairs = [PreferenceSample(video=str(video_dir / f"v{i % 2}.mp4"), prompt=[{"role": "user", "content": prompts[i % 3]}],
                                  chosen=answers[i % 4][0], rejected=answers[i % 4][1], id=f"p{i}")
                 for i in range(n)]  # fmt: skip
        tok = tiny_qwen2_5_vl_tokenizer() if name == "qwen25vl" else tokenizer
        return PreferenceCollator(tok, num_frames=4, frame_size=MODELS[name][1])(pairs)

    module = DPOModule(trained(MODELS[name][0]), beta=0.1, rpo_alpha=1.0, reference="adapter_off").train()
    small_batch, large_batch = batch(2), batch(8)
    _dpo_step_counts(module, small_batch)  # warm-up: first-call initialisation is not a per-step cost
    small, large = _dpo_step_counts(module, small_batch), _dpo_step_counts(module, large_batch)
    syncs = ("aten::item", "aten::_local_scalar_dense", "aten::nonzero")
    assert {k: small[k] for k in syncs} == {k: large[k] for k in syncs}, f"2 pairs {small}, 8 pairs {large}"
    # copies: flat up to the kernels' shape-dependent dispatch (a few calls), as in test_vectorised_forward
    assert abs(large["aten::copy_"] - small["aten::copy_"]) <= 4, f"2 pairs {small}, 8 pairs {large}"
    assert small["aten::_local_scalar_dense"] <= 8, small  # a handful of host reads per step, not per pair


@pytest.mark.parametrize("name", sorted(MODELS))
def test_prefix_shared_step_flops_match_flop_counter(name, tokenizer, video_dir):
    """#27 item 8 on the DPO path: the FLOP model of a prefix-shared step (``pair_flops``, through the
    ``perf/*`` monitor's ``batch_shapes`` / ``shapes_work``) counts the video and the prefix once and is within
    5 % of ``FlopCounterMode`` on the policy's forward + backward (precomputed reference, so the policy alone;
    the ``full`` head, which recomputes nothing; attention on the math backend, as in tests/models/test_flops.py).
    One pair per step, as the existing FLOP tests run one sample: padding is executed but is not model FLOPs.
    Counting both sides in full, as before, overstates it about twice."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from vidtempo.training.perf import batch_shapes, shapes_work

    model = trained(MODELS[name][0])
    module = DPOModule(model, beta=0.1, rpo_alpha=1.0, reference="precomputed", loss_head="full").train()
    ratios = []
    for i in range(len(ANSWERS)):
        batch = pair_batch(name, tokenizer, video_dir, ref=True, pairs=[i])
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            module(batch).loss.loss.backward()
        model.zero_grad(set_to_none=True)
        counted = counter.get_total_flops()
        assert module.last_prefix_shared
        predicted, tokens = shapes_work(model, batch_shapes(model, batch, prefix_shared=True), {})
        layout = pair_layout(model, batch.chosen.model_inputs(), batch.rejected.model_inputs())
        assert tokens == int((layout.mask >= 0).sum())  # the LLM tokens of the row: prefix once, both answers
        both_sides, _ = shapes_work(model, batch_shapes(model, batch), {})
        ratios.append((predicted / counted, both_sides / counted))
    print(name, [(round(a, 4), round(b, 4)) for a, b in ratios])
    assert all(abs(shared - 1) < 0.05 for shared, _ in ratios), ratios
    assert all(both > 1.5 for _, both in ratios), ratios  # the overcount this replaced
    # the monitor takes the pair count when the DPO step shared its prefix (DPOModule.last_prefix_shared)
    from types import SimpleNamespace

    from vidtempo.training.perf import ThroughputMonitor

    monitor, trainer = ThroughputMonitor(), SimpleNamespace(_logger_connector=SimpleNamespace(should_update_logs=False))
    monitor.on_train_batch_start(trainer, module, batch, 0)
    monitor.on_train_batch_end(trainer, module, None, batch, 0)
    assert [counts.shape for _, _, counts in monitor._pending] == [(1, 5)]

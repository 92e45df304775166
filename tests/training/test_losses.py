"""DPO-family losses: hand-computed values, log-prob helpers, and an oracle check against TRL 1.16."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vidtempo.training.losses import LOSS_TYPES, DPOLoss, dpo_loss, rpo_nll, sequence_logps


def _softplus(x: float) -> float:
    """-log sigmoid(-x) = log(1 + e^x), in plain floats for hand-computed expectations."""
    return math.log1p(math.exp(x))


# Two pairs. Pair 0: chosen log-ratio +1, rejected log-ratio -1 (delta 2). Pair 1: chosen -0.5, rejected +1.5
# (delta -2). Values are exactly representable, so expectations are exact up to float32 rounding.
PC = torch.tensor([-1.0, -4.5])
PR = torch.tensor([-3.0, -2.5])
RC = torch.tensor([-2.0, -4.0])
RR = torch.tensor([-2.0, -4.0])
DELTAS = (2.0, -2.0)


def _close(actual: torch.Tensor, expected: list[float]) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected), rtol=0, atol=1e-6)


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_sigmoid_matches_hand_computation(beta: float) -> None:
    losses, _, _ = dpo_loss(PC, PR, RC, RR, beta=beta)
    _close(losses, [_softplus(-beta * d) for d in DELTAS])


def test_sigmoid_label_smoothing_is_conservative_dpo() -> None:
    beta, eps = 0.5, 0.2
    losses, _, _ = dpo_loss(PC, PR, RC, RR, beta=beta, label_smoothing=eps)
    expected = [(1 - eps) * _softplus(-beta * d) + eps * _softplus(beta * d) for d in DELTAS]
    _close(losses, expected)


def test_hinge_matches_hand_computation() -> None:
    losses, _, _ = dpo_loss(PC, PR, RC, RR, beta=0.1, loss_type="hinge")
    _close(losses, [0.8, 1.2])  # relu(1 - 0.1 * 2), relu(1 + 0.1 * 2)
    losses, _, _ = dpo_loss(PC, PR, RC, RR, beta=0.75, loss_type="hinge")
    _close(losses, [0.0, 2.5])  # margin 1.5 > 1 gives zero loss


def test_ipo_summed_and_length_averaged() -> None:
    losses, _, _ = dpo_loss(PC, PR, RC, RR, beta=0.5, loss_type="ipo")
    _close(losses, [(2.0 - 1.0) ** 2, (-2.0 - 1.0) ** 2])
    lc, lr = torch.tensor([4, 1]), torch.tensor([2, 3])
    losses, _, _ = dpo_loss(PC, PR, RC, RR, beta=0.5, loss_type="ipo", chosen_lengths=lc, rejected_lengths=lr)
    # pair 0: 1/4 - (-1/2) = 0.75; pair 1: -0.5/1 - 1.5/3 = -1.0
    _close(losses, [(0.75 - 1.0) ** 2, (-1.0 - 1.0) ** 2])


def test_lengths_do_not_change_non_ipo_losses() -> None:
    lc, lr = torch.tensor([4, 1]), torch.tensor([2, 3])
    for loss_type in ("sigmoid", "hinge", "robust"):
        plain, _, _ = dpo_loss(PC, PR, RC, RR, loss_type=loss_type)
        with_len, _, _ = dpo_loss(PC, PR, RC, RR, loss_type=loss_type, chosen_lengths=lc, rejected_lengths=lr)
        torch.testing.assert_close(plain, with_len)


def test_robust_matches_hand_computation_and_reduces_to_sigmoid() -> None:
    beta, eps = 0.5, 0.1
    losses, _, _ = dpo_loss(PC, PR, RC, RR, beta=beta, loss_type="robust", label_smoothing=eps)
    expected = [
        ((1 - eps) * _softplus(-beta * d) - eps * _softplus(beta * d)) / (1 - 2 * eps) for d in DELTAS
    ]
    _close(losses, expected)
    robust0, _, _ = dpo_loss(PC, PR, RC, RR, beta=beta, loss_type="robust")
    sigmoid0, _, _ = dpo_loss(PC, PR, RC, RR, beta=beta)
    torch.testing.assert_close(robust0, sigmoid0)


def test_rewards_are_detached_scaled_log_ratios() -> None:
    pc = PC.clone().requires_grad_(True)
    losses, chosen_rewards, rejected_rewards = dpo_loss(pc, PR, RC, RR, beta=0.5)
    _close(chosen_rewards, [0.5, -0.25])
    _close(rejected_rewards, [-0.5, 0.75])
    assert losses.requires_grad and not chosen_rewards.requires_grad and not rejected_rewards.requires_grad


def test_gradient_raises_chosen_and_lowers_rejected() -> None:
    pc, pr = PC.clone().requires_grad_(True), PR.clone().requires_grad_(True)
    for loss_type in LOSS_TYPES:
        pc.grad = pr.grad = None
        losses, _, _ = dpo_loss(pc, pr, RC, RR, beta=0.1, loss_type=loss_type)
        losses[1].backward()  # pair 1 is mis-ranked: every loss type must push it the right way
        assert pc.grad[1] < 0 < pr.grad[1], loss_type
        assert pc.grad[0] == 0 and pr.grad[0] == 0


def test_reference_free_uses_zero_reference() -> None:
    free, rc, _ = dpo_loss(PC, PR, None, None, beta=0.5, reference_free=True)
    zeros = torch.zeros(2)
    explicit, rc2, _ = dpo_loss(PC, PR, zeros, zeros, beta=0.5)
    torch.testing.assert_close(free, explicit)
    torch.testing.assert_close(rc, rc2)


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown loss_type 'kto'.*sigmoid, hinge, ipo, robust"):
        dpo_loss(PC, PR, RC, RR, loss_type="kto")
    with pytest.raises(ValueError, match="'ref_rejected_logps' has batch size 3"):
        dpo_loss(PC, PR, RC, torch.zeros(3))
    with pytest.raises(ValueError, match=r"'policy_chosen_logps' must be a 1-D tensor"):
        dpo_loss(PC[None], PR, RC, RR)
    with pytest.raises(ValueError, match="label_smoothing.*only defined"):
        dpo_loss(PC, PR, RC, RR, loss_type="hinge", label_smoothing=0.1)
    with pytest.raises(ValueError, match=r"\[0, 0.5\)"):
        dpo_loss(PC, PR, RC, RR, loss_type="robust", label_smoothing=0.5)
    with pytest.raises(ValueError, match="beta must be > 0"):
        dpo_loss(PC, PR, RC, RR, beta=0.0)
    with pytest.raises(ValueError, match="both chosen_lengths and rejected_lengths"):
        dpo_loss(PC, PR, RC, RR, loss_type="ipo", chosen_lengths=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="reference_free=True"):
        dpo_loss(PC, PR, None, None)


def _loop_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[list[float], list[int]]:
    """Reference implementation with explicit loops over positions."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    sums, counts = [], []
    for b in range(labels.shape[0]):
        total, n = 0.0, 0
        for t in range(1, labels.shape[1]):
            if labels[b, t] != -100:
                total += logp[b, t - 1, labels[b, t]].item()
                n += 1
        sums.append(total)
        counts.append(n)
    return sums, counts


def test_sequence_logps_shifts_and_masks() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 6, 11, generator=gen)
    labels = torch.randint(0, 11, (3, 6), generator=gen)
    labels[0, :2] = -100  # prompt
    labels[1, 4:] = -100  # right padding
    labels[2, :] = -100  # nothing to score
    logps, lengths = sequence_logps(logits, labels)
    sums, counts = _loop_logps(logits, labels)
    torch.testing.assert_close(logps, torch.tensor(sums, dtype=torch.float32), rtol=0, atol=1e-5)
    assert lengths.tolist() == counts == [4, 3, 0]
    with pytest.raises(ValueError, match=r"logits \(B, L, V\) and labels \(B, L\)"):
        sequence_logps(logits, labels[:, :-1])


def test_rpo_nll_is_token_mean_over_batch() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 7, generator=gen)
    labels = torch.randint(0, 7, (2, 5), generator=gen)
    labels[0, :3] = -100  # 2 response tokens in row 0, 4 in row 1
    sums, counts = _loop_logps(logits, labels)
    expected = -sum(sums) / sum(counts)  # token mean, not the mean of per-row means
    assert rpo_nll(logits, labels).item() == pytest.approx(expected, abs=1e-5)
    assert rpo_nll(logits, torch.full_like(labels, -100)).item() == 0.0


def test_dpo_loss_module_output_and_rpo_term() -> None:
    nll = torch.tensor(0.7)
    out = DPOLoss(beta=0.5, rpo_alpha=2.0)(PC, PR, RC, RR, chosen_nll=nll)
    pref = sum(_softplus(-0.5 * d) for d in DELTAS) / 2
    assert out.preference_loss.item() == pytest.approx(pref, abs=1e-6)
    assert out.loss.item() == pytest.approx(pref + 2.0 * 0.7, abs=1e-6)
    _close(out.margins, [1.0, -1.0])
    assert out.accuracy.item() == 0.5
    metrics = out.metrics("train/")
    assert metrics["train/rewards/accuracy"] == 0.5 and metrics["train/loss/nll"] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="needs chosen_nll"):
        DPOLoss(rpo_alpha=1.0)(PC, PR, RC, RR)
    with pytest.raises(ValueError, match="unknown loss_type"):
        DPOLoss(loss_type="sigmoid_norm")


def test_dpo_loss_module_from_logits() -> None:
    gen = torch.Generator().manual_seed(2)
    chosen_logits, rejected_logits = torch.randn(2, 6, 9, generator=gen), torch.randn(2, 8, 9, generator=gen)
    chosen_labels, rejected_labels = (
        torch.randint(0, 9, (2, 6), generator=gen),
        torch.randint(0, 9, (2, 8), generator=gen),
    )
    chosen_labels[:, :2] = -100
    rejected_labels[:, :3] = -100
    loss_fn = DPOLoss(beta=0.1, loss_type="ipo", rpo_alpha=1.0)
    out = loss_fn.from_logits(chosen_logits, rejected_logits, chosen_labels, rejected_labels, RC, RR)
    pc, lc = sequence_logps(chosen_logits, chosen_labels)
    pr, lr = sequence_logps(rejected_logits, rejected_labels)
    losses, _, _ = dpo_loss(pc, pr, RC, RR, beta=0.1, loss_type="ipo", chosen_lengths=lc, rejected_lengths=lr)
    expected = losses.mean() + F.cross_entropy(
        chosen_logits[:, :-1].reshape(-1, 9), chosen_labels[:, 1:].reshape(-1)
    )
    torch.testing.assert_close(out.loss, expected)


# ----------------------------------------------------------------------------------------------------------
# Oracle: TRL 1.16 DPOTrainer on a tiny random Qwen2 and a 4-row preference set.
# ----------------------------------------------------------------------------------------------------------

_SENTENCES = [
    "the red ball rolls to the left",
    "then the blue square jumps twice",
    "a green circle appears first",
    "what happens after the ball rolls",
    "the square jumps before the circle appears",
]
_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _tiny_tokenizer():  # noqa: ANN202 - transformers type
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<unk>", "<pad>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_SENTENCES, trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="<|im_end|>"
    )
    hf_tok.chat_template = _CHAT_TEMPLATE
    return hf_tok


def _tiny_qwen2(vocab_size: int, pad_id: int, eos_id: int, seed: int):  # noqa: ANN202
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
        tie_word_embeddings=False,
        initializer_range=0.3,  # large random weights: policy and reference disagree by nats, not millinats
    )
    return Qwen2ForCausalLM(config).eval()


def _preference_rows() -> dict[str, list]:
    def user(text: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": text}]

    def bot(text: str) -> list[dict[str, str]]:
        return [{"role": "assistant", "content": text}]

    return {
        "prompt": [
            user("what happens after the ball rolls"),
            user("what appears first"),
            user("what jumps"),
            user("tell the order"),
        ],
        "chosen": [
            bot("the blue square jumps"),
            bot("a green circle"),
            bot("the square"),
            bot("the ball rolls then the square jumps"),
        ],
        "rejected": [
            bot("a green circle appears"),
            bot("the red ball"),
            bot("the circle jumps first"),
            bot("the square"),
        ],
    }


@pytest.fixture(scope="module")
def trl_setup():  # noqa: ANN201
    pytest.importorskip("trl")
    from datasets import Dataset

    return _tiny_tokenizer(), Dataset.from_dict(_preference_rows())


def _trl_loss_and_batch(trl_setup, tmp_path, loss_type: list[str], **config):  # noqa: ANN001, ANN202
    from trl import DPOConfig, DPOTrainer

    tok, dataset = trl_setup
    # Fresh models per trainer: DPOTrainer patches and prepares the models it is given (a reference model
    # reused by a second trainer gave fused log-probs that no longer matched its own logits).
    policy = _tiny_qwen2(len(tok), tok.pad_token_id, tok.eos_token_id, seed=0)
    ref = _tiny_qwen2(len(tok), tok.pad_token_id, tok.eos_token_id, seed=1)
    args = DPOConfig(
        output_dir=str(tmp_path),
        loss_type=loss_type,
        per_device_train_batch_size=4,
        report_to=[],
        use_cpu=True,
        max_length=None,
        save_strategy="no",
        **config,
    )
    trainer = DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=dataset, processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))  # rows 0..3 chosen, rows 4..7 rejected
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, batch)
    return trl_loss, batch, trainer.model, ref


def _our_logps(model, batch) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
    """(2B,) summed completion log-probs and lengths, with our helper on plain logits."""
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)  # (2B, L)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return sequence_logps(logits, labels)


@pytest.mark.parametrize(
    ("loss_type", "beta", "label_smoothing"),
    [
        ("sigmoid", 0.1, 0.0),
        ("hinge", 0.1, 0.0),
        ("ipo", 0.1, 0.0),
        ("robust", 0.1, 0.2),
        ("sigmoid", 0.5, 0.0),
    ],
)
def test_matches_trl_dpo_trainer(
    trl_setup, tmp_path, loss_type: str, beta: float, label_smoothing: float
) -> None:  # noqa: ANN001
    trl_loss, batch, policy, ref = _trl_loss_and_batch(
        trl_setup, tmp_path, [loss_type], beta=beta, label_smoothing=label_smoothing
    )
    policy_logps, lengths = _our_logps(policy, batch)
    ref_logps, _ = _our_logps(ref, batch)
    pc, pr = policy_logps.chunk(2)
    rc, rr = ref_logps.chunk(2)
    lc, lr = lengths.chunk(2)
    losses, chosen_rewards, rejected_rewards = dpo_loss(
        pc,
        pr,
        rc,
        rr,
        beta=beta,
        loss_type=loss_type,
        label_smoothing=label_smoothing,
        chosen_lengths=lc,
        rejected_lengths=lr,
    )
    # The comparison is not vacuous: the policy and reference really disagree on these responses.
    assert (chosen_rewards - rejected_rewards).abs().max() > 0.05
    assert losses.mean().item() == pytest.approx(trl_loss.item(), abs=1e-5, rel=1e-5)


def test_rpo_term_matches_trl_sft_loss(trl_setup, tmp_path) -> None:  # noqa: ANN001
    """TRL 1.16 expresses rpo_alpha as loss_type=["sigmoid", "sft"] with loss_weights=[1, alpha]."""
    trl_loss, batch, policy, ref = _trl_loss_and_batch(
        trl_setup, tmp_path, ["sigmoid", "sft"], beta=0.1, loss_weights=[1.0, 1.0]
    )
    input_ids, completion = batch["input_ids"], batch["completion_mask"]
    labels = input_ids.masked_fill(completion == 0, -100)
    with torch.no_grad():
        logits = policy(input_ids=input_ids, attention_mask=batch["attention_mask"]).logits  # (2B, L, V)
    ref_logps, _ = _our_logps(ref, batch)
    n = input_ids.shape[0] // 2
    out = DPOLoss(beta=0.1, rpo_alpha=1.0).from_logits(
        logits[:n], logits[n:], labels[:n], labels[n:], *ref_logps.chunk(2)
    )
    assert out.loss.item() == pytest.approx(trl_loss.item(), abs=1e-5, rel=1e-5)
